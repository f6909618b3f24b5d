//! Backend fetches (Varnish's `cache_fetch`): the backend state machine
//! `vcl_backend_fetch` → fetch → `vcl_backend_response` |
//! `vcl_backend_error`, with retries, and the object it produces.

use crate::cache_expire::rfc2616_ttl;
use crate::cache_http1_fetch::{fetch_head, BodyReader, Limits};
use crate::cache_obj::Body;
use crate::cache_obj::{hdr_get, Headers, ObjKind, Object};
use crate::cache_req_fsm::{vcl_call, Ctx};
use crate::cache_vcl::Vcl;
use crate::vrt_ctx::{now, RespMsg, Task};
use bytes::Bytes;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use vcl_to_wasm::types::{Action, Method};

/// What a fetch produced for the client.
pub struct Fetched {
    /// The object to deliver.
    pub obj: Arc<Object>,
    /// What to insert into the cache (the object, or a hit-for-miss /
    /// hit-for-pass marker), if anything.
    pub insert: Option<Arc<Object>>,
    /// The body still to read into `obj`, if it comes from the backend.
    pub pump: Option<Pump>,
    /// `beresp.do_stream`: deliver while the body arrives.
    pub stream: bool,
    /// The backend request's log, ended when the body is in.
    pub vsl: crate::vsl::Buf,
}

/// The fetch was abandoned (`abandon`, `fail`, or an error with no
/// response): the client gets a 503.
#[derive(Debug, thiserror::Error)]
#[error("fetch abandoned: {0}")]
pub struct Abandoned(pub String);

/// Response headers that describe one hop, not the object.
/// `Connection` and its kin stay visible to `vcl_backend_response` (as in
/// Varnish) and are dropped when an object is delivered.
const HOP_BY_HOP: &[&str] = &["transfer-encoding", "content-length"];

async fn send(
    ctx: &Ctx,
    vcl: &Vcl,
    bo: &mut Task,
    body: &Bytes,
) -> Result<(RespMsg, Pump), String> {
    let be = vcl
        .shared
        .backend(bo.bereq_backend)
        .cloned()
        .ok_or_else(|| "no backend".to_string())?;
    let addr = be
        .addr
        .ok_or_else(|| format!("backend {} is none", be.name))?;
    if !be.is_healthy() {
        crate::vsc::backend_unhealthy(&be.conns.vsc);
        return Err(format!("backend {}: unhealthy", be.name));
    }
    let slot = be.claim().ok_or_else(|| {
        crate::vsc::backend_busy(&be.conns.vsc);
        format!("backend {}: busy (max_connections reached)", be.name)
    })?;
    let params = ctx.params();
    let pick = |task: Option<f64>, backend: Option<f64>, param: &str| {
        task.or(backend).unwrap_or_else(|| params.num(param))
    };
    let limits = Limits {
        connect_timeout: pick(bo.connect_timeout, be.connect_timeout, "connect_timeout"),
        first_byte_timeout: pick(
            bo.first_byte_timeout,
            be.first_byte_timeout,
            "first_byte_timeout",
        ),
        between_bytes_timeout: pick(
            bo.between_bytes_timeout,
            be.between_bytes_timeout,
            "between_bytes_timeout",
        ),
        max_head: (params.num("http_resp_size") as usize).max(1024),
        max_headers: (params.num("http_max_hdr") as usize).max(1),
        local_holddown: params.num("backend_local_error_holddown"),
        remote_holddown: params.num("backend_remote_error_holddown"),
    };
    let (mut resp, reader) = fetch_head(
        &be.conns,
        addr,
        &bo.bereq,
        body,
        be.host_header.as_deref(),
        &limits,
    )
    .await
    .map_err(|e| crate::vsl::fetch_error(&be.name, &e))?;
    crate::vsl::backend_open(&mut bo.vsl, &be, &reader, &resp);
    // A pass of HEAD keeps the backend's length for the client.
    let keep_length = bo.bereq.method == "HEAD";
    resp.headers.retain(|(n, _)| {
        (keep_length && n.eq_ignore_ascii_case("content-length"))
            || !HOP_BY_HOP.iter().any(|h| n.eq_ignore_ascii_case(h))
    });
    crate::cache_http::collect(&mut resp.headers, "cache-control");
    crate::cache_http::collect(&mut resp.headers, "vary");
    let max = vcl.shared.storage_budget.min(1 << 30);
    Ok((
        resp,
        Pump {
            reader,
            backend: be,
            max,
            _slot: slot,
        },
    ))
}

/// The backend body still to be read into an object: the second half of a
/// fetch, run after `vcl_backend_response` while clients may already be
/// delivering the object (streaming).
pub struct Pump {
    reader: BodyReader,
    backend: Arc<crate::cache_backend::Backend>,
    max: u64,
    /// Held until the body is read: the connection is in use till then.
    _slot: crate::cache_backend::ConnSlot,
}

impl Pump {
    /// Whether the backend sent no body at all.
    pub fn is_empty(&self) -> bool {
        self.reader.is_empty()
    }

    /// Reads the body into `body`, returning why it failed (timeout, reset,
    /// oversize). The caller then ends the body with [`Body::finish`],
    /// after taking a failed object out of the cache, so a partial body is
    /// never found as complete.
    pub async fn run(mut self, body: &crate::cache_obj::Body) -> Result<(), String> {
        loop {
            match self.reader.next_chunk(&self.backend.conns).await {
                Ok(None) => return Ok(()),
                Ok(Some(d)) => {
                    self.backend.conns.vsc.beresp_bodybytes.add(d.len() as u64);
                    body.push(d);
                    if body.len() > self.max {
                        return Err("backend body too large".into());
                    }
                }
                Err(e) => return Err(crate::vsl::fetch_error(&self.backend.name, &e)),
            }
        }
    }
}

fn vary_of(beresp: &Headers, req: &Headers) -> Vec<(String, Option<String>)> {
    let Some(v) = hdr_get(beresp, "vary") else {
        return Vec::new();
    };
    v.split(',')
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .map(|n| {
            let val = hdr_get(req, &n).map(str::to_string);
            (n, val)
        })
        .collect()
}

fn object(
    bo: &Task,
    kind: ObjKind,
    body: Body,
    t_origin: f64,
    vary: Vec<(String, Option<String>)>,
) -> Arc<Object> {
    Arc::new(Object {
        kind,
        status: bo.beresp.status,
        reason: bo.beresp.reason.clone(),
        proto: bo.beresp.proto.clone(),
        headers: bo.beresp.headers.clone(),
        body,
        xid: bo.xid,
        t_origin,
        t_insert: now(),
        ttl: bo.ttl,
        grace: bo.grace,
        keep: bo.keep,
        vary,
        hits: AtomicU64::new(0),
        charged: AtomicU64::new(0),
        esi: bo.do_esi && kind == ObjKind::Normal,
        esi_parsed: std::sync::OnceLock::new(),
        tags: object_tags(bo),
        soft_purged: AtomicU64::new(0),
        ban_mark: AtomicU64::new(0),
        live: crate::vsc::ObjLive::new(kind == ObjKind::Normal),
    })
}

/// The object's cache tags: tokens of `xkey` and `X-HashTwo` (as vmod_xkey
/// reads them: separated by blanks or commas) and the task's added tags.
fn object_tags(bo: &Task) -> Vec<String> {
    let mut tags: Vec<String> = bo
        .beresp
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("xkey") || n.eq_ignore_ascii_case("x-hashtwo"))
        .flat_map(|(_, v)| v.split(|c: char| c.is_ascii_whitespace() || c == ','))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .chain(bo.tags.iter().cloned())
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

/// Runs the backend state machine for `bo` (whose `bereq` is set up) and
/// returns what to deliver and insert. `req_headers` are the client's, for
/// `Vary`.
pub async fn fetch(
    ctx: &Ctx,
    vcl: &Arc<Vcl>,
    mut bo: Box<Task>,
    body: Bytes,
    req_headers: &Headers,
) -> Result<Fetched, Abandoned> {
    let ws = ctx.params().num("workspace_backend") as u32;
    let max_retries = ctx.params().num("max_retries") as u32;
    crate::vsl::bereq_begin(&mut bo, &ctx.active_name());
    // A body that failed after `vcl_backend_response` (without
    // streaming) takes the next round straight to `vcl_backend_error`.
    let mut body_failed: Option<String> = None;
    loop {
        let r = if body_failed.is_some() {
            Ok(None)
        } else {
            let (b, r) = vcl_call(ctx, vcl, Method::BackendFetch, bo, ws);
            bo = b;
            r
        };
        let mut error = match r {
            Ok(_) if body_failed.is_some() => {
                crate::vsc::MAIN.fetch_failed.inc();
                body_failed.take()
            }
            Ok(None | Some(Action::Fetch)) => None,
            Ok(Some(Action::Abandon)) => {
                return Err(Abandoned("abandon in vcl_backend_fetch".into()))
            }
            Ok(Some(Action::Error)) => Some("error in vcl_backend_fetch".to_string()),
            Ok(Some(a)) => return Err(Abandoned(format!("{} in vcl_backend_fetch", a.name()))),
            Err(e) => {
                tracing::warn!(xid = bo.xid, "vcl_backend_fetch: {e}");
                return Err(Abandoned(e.to_string()));
            }
        };
        let t_fetch = now();
        bo.vsl.ts("Fetch", t_fetch);
        let mut fetched_body = None;
        let mut pump = None;
        if error.is_none() {
            match send(ctx, vcl, &mut bo, &body).await {
                Ok((resp, p)) => {
                    bo.beresp = resp;
                    pump = Some(p);
                    if bo.beresp.status == 304 {
                        if let Some(stale) = bo.stale_obj.clone() {
                            // Merge the 304's headers into the stale
                            // object's and reuse its body.
                            // Every header the 304 names replaces the
                            // stale object's of that name (all of them).
                            let mut headers = stale.headers.clone();
                            headers.retain(|(n, _)| {
                                !bo.beresp
                                    .headers
                                    .iter()
                                    .any(|(m, _)| m.eq_ignore_ascii_case(n))
                            });
                            headers.extend(bo.beresp.headers.iter().cloned());
                            bo.beresp.status = stale.status;
                            bo.beresp.reason = stale.reason.clone();
                            bo.beresp.headers = headers;
                            pump = None;
                            fetched_body = Some(stale.body.collect().await.unwrap_or_default());
                            bo.was_304 = true;
                        }
                    }
                }
                Err(e) => {
                    crate::vsc::MAIN.fetch_failed.inc();
                    bo.vsl.log(vapi::Tag::FetchError, &e);
                    error = Some(e)
                }
            }
        }
        let lt = if error.is_none() {
            rfc2616_ttl(
                bo.beresp.status,
                &bo.beresp.headers,
                t_fetch,
                ctx.params().num("default_ttl"),
                ctx.params().num("default_grace"),
                ctx.params().num("default_keep"),
            )
        } else {
            crate::cache_expire::Lifetime {
                t_origin: t_fetch,
                age: 0.0,
                ttl: 0.0,
                grace: 0.0,
                keep: 0.0,
            }
        };
        bo.ttl = lt.ttl;
        bo.grace = lt.grace;
        bo.keep = lt.keep;
        bo.beresp_age = lt.age;
        bo.beresp_time = t_fetch;
        bo.uncacheable = bo.bereq_uncacheable;
        bo.pass_ttl = None;
        if error.is_none() {
            crate::vsl::ttl_rfc(&mut bo, &lt, t_fetch);
        }
        if let Some(why) = error {
            tracing::warn!(xid = bo.xid, "FetchError: {why}");
            bo.beresp = RespMsg {
                status: 503,
                reason: "Backend fetch failed".into(),
                proto: "HTTP/1.1".into(),
                headers: vec![("Date".into(), crate::cache_expire::http_date(t_fetch))],
            };
            bo.vsl.ts("Error", now());
            bo.vsl.http_resp(crate::vsl::Http::Beresp, &bo.beresp);
            bo.synth_body.clear();
            let (b, r) = vcl_call(ctx, vcl, Method::BackendError, bo, ws);
            bo = b;
            match r {
                Ok(None | Some(Action::Deliver)) => {
                    crate::vsc::beresp_storage(
                        bo.uncacheable,
                        bo.ttl + bo.grace + bo.keep,
                        ctx.params().num("shortlived"),
                    );
                    let body = Bytes::from(std::mem::take(&mut bo.synth_body));
                    let obj = object(
                        &bo,
                        ObjKind::Normal,
                        Body::complete(body),
                        t_fetch,
                        Vec::new(),
                    );
                    let insert = (bo.ttl > 0.0 && !bo.bereq_uncacheable).then(|| obj.clone());
                    return Ok(Fetched {
                        obj,
                        insert,
                        pump: None,
                        stream: true,
                        vsl: std::mem::take(&mut bo.vsl),
                    });
                }
                Ok(Some(Action::Retry)) if bo.retries < max_retries => {
                    bo.retries += 1;
                    continue;
                }
                Ok(Some(a)) => return Err(Abandoned(format!("{} in vcl_backend_error", a.name()))),
                Err(e) => return Err(Abandoned(e.to_string())),
            }
        }
        let (b, r) = vcl_call(ctx, vcl, Method::BackendResponse, bo, ws);
        bo = b;
        bo.vsl.ts("Process", now());
        let body_of = |fetched: Option<Bytes>, pump: &Option<Pump>| match (fetched, pump) {
            (Some(b), _) => Body::complete(b),
            (None, Some(_)) => Body::streaming(),
            (None, None) => Body::complete(Bytes::new()),
        };
        match r {
            Ok(None | Some(Action::Deliver)) => {}
            Ok(Some(Action::Pass)) => {
                crate::vsc::MAIN.beresp_uncacheable.inc();
                // Hit-for-pass for pass_ttl.
                let mut marker = object(
                    &bo,
                    ObjKind::HitPass,
                    Body::complete(Bytes::new()),
                    t_fetch,
                    vary_of(&bo.beresp.headers, req_headers),
                );
                if let Some(m) = Arc::get_mut(&mut marker) {
                    m.ttl = bo.pass_ttl.unwrap_or(bo.ttl);
                    m.grace = 0.0;
                    m.keep = 0.0;
                }
                let obj = object(
                    &bo,
                    ObjKind::Normal,
                    body_of(fetched_body, &pump),
                    lt.t_origin,
                    Vec::new(),
                );
                let insert = (!bo.bereq_uncacheable).then_some(marker);
                return Ok(Fetched {
                    obj,
                    insert,
                    pump,
                    stream: bo.do_stream,
                    vsl: std::mem::take(&mut bo.vsl),
                });
            }
            Ok(Some(Action::Retry)) if bo.retries < max_retries => {
                bo.retries += 1;
                continue;
            }
            Ok(Some(Action::Retry)) => return Err(Abandoned("too many retries".into())),
            Ok(Some(a)) => return Err(Abandoned(format!("{} in vcl_backend_response", a.name()))),
            Err(e) => {
                tracing::warn!(xid = bo.xid, "vcl_backend_response: {e}");
                return Err(Abandoned(e.to_string()));
            }
        }
        // do_gzip / do_gunzip: the whole body is transformed here.
        let compress = if bo.do_gzip && !crate::cache_gzip::is_gzip(&bo.beresp.headers) {
            Some(true)
        } else if bo.do_gunzip && crate::cache_gzip::is_gzip(&bo.beresp.headers) {
            Some(false)
        } else {
            None
        };
        if let Some(compress) = compress {
            let raw = match (fetched_body.take(), pump.take()) {
                (Some(b), _) => b,
                (None, Some(p)) => {
                    let tmp = Body::streaming();
                    if let Err(e) = p.run(&tmp).await {
                        body_failed = Some(e);
                        continue;
                    }
                    tmp.finish(true);
                    tmp.collect().await.unwrap_or_default()
                }
                (None, None) => Bytes::new(),
            };
            let out = if compress {
                crate::vsc::MAIN.n_gzip.inc();
                crate::cache_gzip::gzip(&raw, ctx.params().num("gzip_level") as u32)
            } else {
                crate::vsc::gunzip(&raw)
            };
            match out {
                Ok(b) => fetched_body = Some(b),
                Err(e) => {
                    body_failed = Some(e);
                    continue;
                }
            }
            let h = &mut bo.beresp.headers;
            if compress {
                crate::cache_obj::hdr_set(h, "Content-Encoding", "gzip");
                crate::cache_gzip::vary_ae(h);
            } else {
                crate::cache_obj::hdr_unset(h, "content-encoding");
            }
            crate::cache_gzip::weaken_etag(h);
        }
        let vary = vary_of(&bo.beresp.headers, req_headers);
        crate::vsc::beresp_storage(
            bo.uncacheable || bo.bereq_uncacheable,
            bo.ttl + bo.grace + bo.keep,
            ctx.params().num("shortlived"),
        );
        let obj = object(
            &bo,
            ObjKind::Normal,
            body_of(fetched_body, &pump),
            lt.t_origin,
            vary.clone(),
        );
        let insert = if bo.bereq_uncacheable {
            None
        } else if bo.uncacheable {
            let mut m = object(
                &bo,
                ObjKind::HitMiss,
                Body::complete(Bytes::new()),
                lt.t_origin,
                vary,
            );
            if let Some(mm) = Arc::get_mut(&mut m) {
                mm.grace = 0.0;
                mm.keep = 0.0;
            }
            Some(m)
        } else if bo.ttl + bo.grace + bo.keep > 0.0 {
            Some(obj.clone())
        } else {
            None
        };
        // Without streaming the body is read here, so that a broken one
        // still reaches vcl_backend_error (and may be retried).
        let mut pump = pump;
        if !bo.do_stream {
            if let Some(p) = pump.take() {
                if let Err(e) = p.run(&obj.body).await {
                    obj.body.finish(false);
                    body_failed = Some(e);
                    continue;
                }
                obj.body.finish(true);
                // A gzipped body is checked as Varnish's testgunzip does:
                // corrupt gzip is a fetch error, not a cached object.
                if ctx.params().flag("http_gzip_support")
                    && crate::cache_gzip::is_gzip(&obj.headers)
                {
                    let whole = obj.body.collect().await.unwrap_or_default();
                    crate::vsc::MAIN.n_test_gunzip.inc();
                    if let Err(e) = crate::cache_gzip::gunzip(&whole) {
                        body_failed = Some(e);
                        continue;
                    }
                }
            }
        }
        return Ok(Fetched {
            obj,
            insert,
            pump,
            stream: bo.do_stream,
            vsl: std::mem::take(&mut bo.vsl),
        });
    }
}
