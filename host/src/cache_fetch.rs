//! Backend fetches (Varnish's `cache_fetch`): the backend state machine
//! `vcl_backend_fetch` → fetch → `vcl_backend_response` |
//! `vcl_backend_error`, with retries, and the object it produces.

use crate::cache_expire::rfc2616_ttl;
use crate::cache_http1_fetch::{fetch_head, BodyReader, Limits};
use crate::cache_obj::Body;
use crate::cache_obj::{hdr_get, Headers, ObjKind, Object};
use crate::cache_req_body::BereqBody;
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
    /// Whether the fetch, once complete, replaces the stale object it
    /// was started for: always, but for a `vcl_backend_error` object
    /// without a TTL.
    pub replaces_stale: bool,
    /// The backend request's log, ended when the body is in.
    pub vsl: crate::vsl::Buf,
    /// The object is `vcl_backend_error`'s: no body was received (and
    /// no `Timestamp BerespBody` is logged, as in Varnish).
    pub from_error: bool,
}

/// The fetch was abandoned (`abandon`, `fail`, or an error with no
/// response): the client gets a 503.
#[derive(Debug, thiserror::Error)]
#[error("fetch abandoned: {0}")]
pub struct Abandoned(pub String);

/// Response headers that describe one hop, not the object.
/// `Connection` and its kin stay visible to `vcl_backend_response` (as in
/// Varnish) and are dropped when an object is delivered. `Content-Length`
/// stays when it frames the body (it is the object's length; the fetch
/// filters drop it when they change the body).
const HOP_BY_HOP: &[&str] = &["transfer-encoding", "content-length"];

async fn send(
    ctx: &Ctx,
    vcl: &Vcl,
    bo: &mut Task,
    body: &mut BereqBody,
) -> Result<(RespMsg, Pump), String> {
    // A director picks its backend now (Varnish's resolve step).
    let be = vcl.shared.resolve(bo.bereq_backend, bo)?;
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
    // The tenant's connection quota: one more than it may hold fails this
    // fetch alone (503), as a busy backend does.
    let tenant_slot = match bo.tenant.as_ref() {
        Some(t) => Some(t.claim_conn().ok_or_else(|| {
            format!(
                "backend {}: tenant {} holds its backend_conns quota",
                be.name, t.name
            )
        })?),
        None => None,
    };
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
        max_head: params.num("http_resp_size") as usize,
        max_hdr_len: params.num("http_resp_hdr_len") as usize,
        max_headers: params.num("http_max_hdr") as usize,
        local_holddown: params.num("backend_local_error_holddown"),
        remote_holddown: params.num("backend_remote_error_holddown"),
    };
    let body = body.attempt().map_err(|e| e.to_string())?;
    let (mut resp, reader) = fetch_head(
        &be.conns,
        addr,
        &bo.bereq,
        body,
        be.host_header.as_deref(),
        be.preamble.as_deref(),
        &limits,
    )
    .await
    .map_err(|e| crate::vsl::fetch_error(&be.name, &e))?;
    crate::vsl::backend_open(&mut bo.vsl, &be, &reader, &resp);
    bo.vsl.bereq_acct_add([
        reader.req_hdr_bytes,
        reader.req_body_bytes,
        reader.hdr_bytes,
        0,
    ]);
    // Content-Length stays unless the body is framed otherwise (chunked,
    // or up to the close): then it would not be the body's length.
    let framed_otherwise = !reader.is_empty() && reader.content_length().is_none();
    resp.headers.retain(|(n, _)| {
        (!framed_otherwise && n.eq_ignore_ascii_case("content-length"))
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
            nap: params.debug("vtc_mode"),
            _slot: slot,
            _tenant_slot: tenant_slot,
            vfps: None,
        },
    ))
}

/// A body read to its end. The fetch is done after [`Pumped::nap`].
#[derive(Debug)]
pub struct Pumped {
    nap: bool,
}

impl Pumped {
    /// With `debug=+vtc_mode`, a fetch that gave its connection back to
    /// the pool waits 10 ms before it is done, as Varnish's VCP_Recycle
    /// naps in varnishtest so the connection is reused predictably (an
    /// object that is not streamed becomes visible only then).
    pub async fn nap(self) {
        if self.nap {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// The backend body still to be read into an object: the second half of a
/// fetch, run after `vcl_backend_response` while clients may already be
/// delivering the object (streaming).
pub struct Pump {
    reader: BodyReader,
    backend: Arc<crate::cache_backend::Backend>,
    max: u64,
    /// `debug=+vtc_mode` (see [`Pumped::nap`]).
    nap: bool,
    /// Held until the body is read: the connection is in use till then.
    _slot: crate::cache_backend::ConnSlot,
    /// The tenant's claim on one of its `backend_conns`, as long.
    _tenant_slot: Option<crate::cache_tenant::TenantConn>,
    /// The fetch filters the body goes through (`beresp.filters`).
    vfps: Option<crate::cache_fetch_proc::Vfps>,
}

impl Pump {
    /// Whether the backend sent no body at all.
    pub fn is_empty(&self) -> bool {
        self.reader.is_empty()
    }

    /// The connection closes after this fetch instead of going back to
    /// the pool.
    pub fn forbid_reuse(&mut self) {
        self.reader.forbid_reuse();
    }

    /// Reads the body into `body`, returning why it failed (timeout, reset,
    /// oversize). The caller then ends the body with [`Body::finish`],
    /// after taking a failed object out of the cache, so a partial body is
    /// never found as complete. What the filters logged (`ESI_xmlerror`,
    /// `Gzip`) and how the connection ended (`BackendClose`) go to `vsl`.
    pub async fn run(
        mut self,
        body: &crate::cache_obj::Body,
        vsl: &mut crate::vsl::Buf,
    ) -> Result<Pumped, String> {
        let r = self.pump(body).await;
        vsl.bereq_acct_add([0, 0, 0, self.reader.body_wire_bytes()]);
        if let Some(v) = self.vfps.as_mut() {
            v.close();
            for (tag, m) in v.log.drain(..) {
                vsl.log(tag, &m);
            }
        }
        let (fd, name) = (self.reader.fd, &self.backend.name);
        if self.reader.recycled() {
            vsl.logf(vapi::Tag::BackendClose, format_args!("{fd} {name} recycle"));
        } else {
            vsl.logf(
                vapi::Tag::BackendClose,
                format_args!(
                    "{fd} {name} close {}",
                    if r.is_ok() {
                        "Backend/VCL requested close"
                    } else {
                        "Failure receiving req.body"
                    }
                ),
            );
        }
        r
    }

    /// `Fetch_Body STATUS NAME stream|-`: how the body is read (Varnish's
    /// body status of the response) and whether it is streamed.
    pub fn fetch_body(&self, vsl: &mut crate::vsl::Buf, stream: bool) {
        let (n, name) = self.reader.body_status();
        vsl.logf(
            vapi::Tag::Fetch_Body,
            format_args!("{n} {name} {}", if stream { "stream" } else { "-" }),
        );
    }

    async fn pump(&mut self, body: &crate::cache_obj::Body) -> Result<Pumped, String> {
        let mut out = Vec::new();
        loop {
            match self.reader.next_chunk(&self.backend.conns).await {
                Ok(None) => {
                    if let Some(v) = self.vfps.as_mut() {
                        let attrs = v.finish(&mut out)?;
                        for b in out.drain(..) {
                            body.push(b);
                        }
                        body.set_attrs(attrs);
                    }
                    return Ok(Pumped {
                        nap: self.nap && self.reader.recycled(),
                    });
                }
                Ok(Some(d)) => {
                    self.backend.conns.vsc.beresp_bodybytes.add(d.len() as u64);
                    match self.vfps.as_mut() {
                        Some(v) => {
                            v.push(d, &mut out)?;
                            for b in out.drain(..) {
                                body.push(b);
                            }
                        }
                        None => body.push(d),
                    }
                    if body.len() > self.max {
                        return Err("backend body too large".into());
                    }
                }
                Err(e) => return Err(crate::vsl::fetch_error(&self.backend.name, &e)),
            }
        }
    }
}

/// A fetch done with a response that had no body to read (a 304 merged
/// into a stale object, a retry, an error) gives its connection back to
/// the pool; one with a body left unread closes it.
impl Drop for Pump {
    fn drop(&mut self) {
        self.reader.release_unread(&self.backend.conns);
    }
}

/// The `Vary` instructions of `beresp` (Varnish's `VRY_Create`): each
/// named header with the backend request's value (trailing blanks
/// trimmed), or `Err` for a malformed `Vary` (a name followed by anything
/// but a comma, or a name over 127 bytes), which makes the object
/// uncacheable. With `http_gzip_support` Accept-Encoding does not count:
/// every client gets the gzip object, gunzipped as needed.
fn vary_of(
    beresp: &Headers,
    bereq: &Headers,
    gzip_support: bool,
) -> Result<Vec<(String, Option<String>)>, ()> {
    let Some(v) = hdr_get(beresp, "vary") else {
        return Ok(Vec::new());
    };
    let blank = |c: u8| c == b' ' || c == b'\t';
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut p = 0;
    while p < b.len() {
        if blank(b[p]) {
            p += 1;
            continue;
        }
        let mut q = p;
        while q < b.len() && !blank(b[q]) && b[q] != b',' {
            q += 1;
        }
        if q - p > 127 {
            return Err(());
        }
        let name = v[p..q].to_ascii_lowercase();
        let val = hdr_get(bereq, &name).map(|v| v.trim_end_matches([' ', '\t']).to_string());
        if !(gzip_support && name == "accept-encoding") {
            out.push((name, val));
        }
        while q < b.len() && blank(b[q]) {
            q += 1;
        }
        if q == b.len() {
            break;
        }
        if b[q] != b',' {
            return Err(());
        }
        p = q + 1;
    }
    Ok(out)
}

/// The object's gzip flags (OF_GZIPED, OF_CHGCE) as the fetch filters
/// (or the stale object a 304 refreshed) left them.
#[derive(Clone, Copy, Default)]
struct GzFlags {
    gzipped: bool,
    chgce: bool,
}

fn object(
    bo: &Task,
    kind: ObjKind,
    body: Body,
    t_origin: f64,
    vary: Vec<(String, Option<String>)>,
    gz: GzFlags,
) -> Arc<Object> {
    Arc::new(Object {
        kind,
        // The object keeps the status the wire gets.
        status: bo.beresp.status % 1000,
        headers: crate::cache_http::filter_obj_headers(
            &bo.beresp.proto,
            &bo.beresp.reason,
            &bo.beresp.headers,
            bo.uncacheable || kind != ObjKind::Normal,
        ),
        body,
        xid: bo.xid,
        t_origin,
        t_insert: now(),
        ttl: bo.ttl,
        grace: bo.grace,
        keep: bo.keep,
        uncacheable: bo.uncacheable,
        vary,
        hits: AtomicU64::new(0),
        last_lru: AtomicU64::new(now().to_bits()),
        charged: AtomicU64::new(0),
        gzipped: gz.gzipped,
        chgce: gz.chgce,
        private: bo.bereq_uncacheable,
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

/// The status and reason of `return (error(…))`, if it gave any.
fn error_args(bo: &mut Task) -> Option<(u16, Option<String>)> {
    let (st, reason) = bo.synth.take()?;
    let st = u16::try_from(st).ok().filter(|s| *s % 1000 >= 100)?;
    Some((st, reason))
}

/// Runs the backend state machine for `bo` (whose `bereq` is set up) and
/// returns what to deliver and insert. `Vary` is matched against the
/// backend request (as Varnish's `VRY_Create`: a cacheable fetch asked
/// for gzip, so its object matches gzip clients); `_req_headers` are the
/// client's.
pub async fn fetch(
    ctx: &Ctx,
    vcl: &Arc<Vcl>,
    mut bo: Box<Task>,
    mut body: BereqBody,
    _req_headers: &Headers,
) -> Result<Fetched, Abandoned> {
    let ws = ctx.params().num("workspace_backend") as u32;
    let max_retries = ctx.params().num("max_retries") as u32;
    // The VCL the request runs on (after a `return (vcl(label))`, the
    // labelled one).
    let vname = match vcl.name() {
        "" => ctx.active_name(),
        n => n.to_string(),
    };
    crate::vsl::bereq_begin(&mut bo, &vname);
    // A body that failed after `vcl_backend_response` (without
    // streaming) takes the next round straight to `vcl_backend_error`.
    let mut body_failed: Option<String> = None;
    // `return (error(STATUS, REASON))`: the status and reason the error
    // response starts with (Varnish's bo->err_code/err_reason).
    let mut err_code: Option<(u16, Option<String>)> = None;
    // `body_failed` is VCL's `return (error)` from vcl_backend_response.
    let mut vcl_error = false;
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
                // Varnish counts every way into vcl_backend_error but
                // VCL's own `return (error)`.
                if !std::mem::take(&mut vcl_error) {
                    crate::vsc::MAIN.fetch_failed.inc();
                }
                body_failed.take()
            }
            Ok(None | Some(Action::Fetch)) => None,
            Ok(Some(Action::Abandon)) => {
                return Err(Abandoned("abandon in vcl_backend_fetch".into()))
            }
            Ok(Some(Action::Error)) => {
                err_code = error_args(&mut bo);
                Some("error in vcl_backend_fetch".to_string())
            }
            Ok(Some(a)) => return Err(Abandoned(format!("{} in vcl_backend_fetch", a.name()))),
            Err(e) => {
                tracing::warn!(xid = bo.xid, "vcl_backend_fetch: {e}");
                return Err(Abandoned(e.to_string()));
            }
        };
        bo.vsl.ts("Fetch", now());
        let mut fetched_body = None;
        let mut pump = None;
        if error.is_none() {
            match send(ctx, vcl, &mut bo, &mut body).await {
                Ok((resp, p)) => {
                    bo.beresp = resp;
                    bo.beresp_backend = vcl.shared.handle_of(&p.backend);
                    bo.beresp_backend_name = Some(p.backend.name.clone());
                    // A response without a Date gets one (RFC 9110 6.6.1),
                    // before VCL sees it, as in Varnish.
                    if hdr_get(&bo.beresp.headers, "date").is_none() {
                        if bo.beresp.headers.len() < bo.max_hdr {
                            let date = crate::cache_expire::http_date(now());
                            bo.vsl.header(crate::vsl::Http::Beresp, "Date", &date);
                            bo.beresp.headers.push(("Date".into(), date));
                        } else {
                            tracing::warn!(xid = bo.xid, "LostHeader: Date");
                        }
                    }
                    bo.beresp_has_body = !p.is_empty();
                    pump = Some(p);
                    if bo.beresp.status == 304 {
                        if let Some(stale) = bo.stale_obj.clone() {
                            // A body whose encoding a filter changed keeps
                            // it; the new ETag then is a weak one.
                            if stale.chgce {
                                crate::cache_gzip::weaken_etag(&mut bo.beresp.headers);
                            }
                            crate::cache_obj::hdr_unset(&mut bo.beresp.headers, "content-encoding");
                            crate::cache_obj::hdr_unset(&mut bo.beresp.headers, "content-length");
                            // Merge the 304's headers into the stale
                            // object's and reuse its body.
                            // Every header the 304 names replaces the
                            // stale object's of that name (all of them).
                            crate::cache_obj::hdr_unset(&mut bo.beresp.headers, "content-length");
                            crate::cache_obj::hdr_unset(&mut bo.beresp.headers, "content-encoding");
                            let mut headers = stale.headers.to_vec_without(
                                |n| {
                                    bo.beresp
                                        .headers
                                        .iter()
                                        .any(|(m, _)| m.eq_ignore_ascii_case(n))
                                },
                                bo.beresp.headers.len(),
                            );
                            headers.extend(bo.beresp.headers.iter().cloned());
                            bo.beresp.status = stale.status;
                            bo.beresp.reason = stale.headers.reason().to_string();
                            bo.beresp.headers = headers;
                            pump = None;
                            // A stale object still arriving is waited for;
                            // if its body fails, so does this fetch (no
                            // vcl_backend_error: Varnish's "Template
                            // object failed").
                            match stale.body.collect().await {
                                Some(b) => fetched_body = Some(b),
                                None => {
                                    crate::vsc::MAIN.fetch_failed.inc();
                                    return Err(Abandoned("Template object failed".into()));
                                }
                            }
                            bo.beresp_has_body = !stale.body.is_empty();
                            bo.was_304 = true;
                        }
                    }
                }
                Err(e) => {
                    crate::vsc::MAIN.fetch_failed.inc();
                    bo.vsl.log(vapi::Tag::FetchError, &e);
                    // Varnish stamps the (missing) response too.
                    bo.vsl.ts("Beresp", now());
                    error = Some(e)
                }
            }
        }
        // Objects are born when their headers arrive (Varnish's t_origin
        // is taken after the response head).
        let t_fetch = now();
        let mut lt = if error.is_none() {
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
        if bo.bereq_uncacheable {
            // A pass: the object is private and expires at once, keeping
            // only its origin for `Age` (Varnish's RFC2616_Ttl).
            lt.ttl = -1.0;
            lt.grace = 0.0;
            lt.keep = 0.0;
        }
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
            let (status, reason) = match err_code.take() {
                Some((st, r)) => (
                    st,
                    r.unwrap_or_else(|| crate::cache_http::status_reason(st % 1000).to_string()),
                ),
                None => (503, "Backend fetch failed".to_string()),
            };
            bo.beresp = RespMsg {
                status,
                reason,
                proto: "HTTP/1.1".into(),
                headers: vec![
                    ("Date".into(), crate::cache_expire::http_date(t_fetch)),
                    ("Server".into(), "Varnish".into()),
                ],
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
                        GzFlags::default(),
                    );
                    let insert = (bo.ttl > 0.0 && !bo.bereq_uncacheable).then(|| obj.clone());
                    crate::vsl::storage(&mut bo.vsl, &obj, insert.as_ref());
                    return Ok(Fetched {
                        obj,
                        insert,
                        pump: None,
                        stream: true,
                        replaces_stale: bo.ttl > 0.0,
                        vsl: std::mem::take(&mut bo.vsl),
                        from_error: true,
                    });
                }
                Ok(Some(Action::Retry)) if bo.retries < max_retries => {
                    if let Some(why) = body.no_retry() {
                        return Err(Abandoned(format!("Retry not possible, {why}")));
                    }
                    bo.retries += 1;
                    bo.xid = ctx.next_xid();
                    crate::vsl::bereq_retry(&mut bo);
                    continue;
                }
                Ok(Some(a)) => return Err(Abandoned(format!("{} in vcl_backend_error", a.name()))),
                Err(e) => return Err(Abandoned(e.to_string())),
            }
        }
        let (b, r) = vcl_call(ctx, vcl, Method::BackendResponse, bo, ws);
        bo = b;
        let stale_attrs = bo.stale_obj.as_ref().filter(|_| bo.was_304).map(|s| {
            (
                s.body.attrs().cloned(),
                GzFlags {
                    gzipped: s.gzipped,
                    chgce: s.chgce,
                },
            )
        });
        bo.vsl.ts("Process", now());
        let body_of = |fetched: Option<Bytes>, pump: &Option<Pump>| match (fetched, pump) {
            (Some(b), _) => Body::complete_with(b, stale_attrs.clone().and_then(|(a, _)| a)),
            (None, Some(_)) => Body::streaming(),
            (None, None) => Body::complete(Bytes::new()),
        };
        let is_pass = match r {
            Ok(None | Some(Action::Deliver)) => false,
            Ok(Some(Action::Pass)) => true,
            Ok(Some(Action::Retry)) if bo.retries < max_retries => {
                if let Some(why) = body.no_retry() {
                    return Err(Abandoned(format!("Retry not possible, {why}")));
                }
                bo.retries += 1;
                bo.xid = ctx.next_xid();
                crate::vsl::bereq_retry(&mut bo);
                continue;
            }
            Ok(Some(Action::Retry)) => return Err(Abandoned("too many retries".into())),
            Ok(Some(Action::Error)) => {
                // The backend connection closes; vcl_backend_error next.
                if let Some(p) = pump.as_mut() {
                    p.forbid_reuse();
                }
                drop(pump);
                err_code = error_args(&mut bo);
                vcl_error = true;
                body_failed = Some("error in vcl_backend_response".into());
                continue;
            }
            Ok(Some(a)) => return Err(Abandoned(format!("{} in vcl_backend_response", a.name()))),
            Err(e) => {
                tracing::warn!(xid = bo.xid, "vcl_backend_response: {e}");
                return Err(Abandoned(e.to_string()));
            }
        };
        // `Connection: close` in the response as VCL left it closes the
        // backend connection after the body (Varnish's SC_RESP_CLOSE).
        if hdr_get(&bo.beresp.headers, "connection")
            .is_some_and(|c| c.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
        {
            if let Some(p) = pump.as_mut() {
                p.forbid_reuse();
            }
        }
        if std::mem::take(&mut bo.bereq_rolled_back) {
            // std.rollback(bereq) in vcl_backend_response let go of the
            // backend connection: no body to fetch (Varnish's "No
            // backend connection (rollback?)"), so vcl_backend_error.
            drop(pump);
            body_failed = Some("No backend connection (rollback?)".into());
            continue;
        }
        // ESI is parsed whole before delivery (Varnish 7.1 does not
        // stream it), so a broken body can still be retried.
        if bo.do_esi {
            bo.do_stream = false;
        }
        // The fetch filters (beresp.filters), opened on the response.
        let mut gz = GzFlags::default();
        if let Some((_, f)) = stale_attrs {
            gz = f;
        } else if !bo.beresp_has_body {
            bo.vsl.unset(
                crate::vsl::Http::Beresp,
                &bo.beresp.headers,
                "content-encoding",
            );
            crate::cache_obj::hdr_unset(&mut bo.beresp.headers, "content-encoding");
            bo.do_stream = false;
            bo.vsl.log(vapi::Tag::Filters, "");
        } else if let Some(p) = pump.as_mut() {
            let params = ctx.params();
            let list = bo.vfp_filters.clone().unwrap_or_else(|| {
                crate::cache_fetch_proc::default_list(&crate::cache_fetch_proc::Want {
                    do_esi: bo.do_esi,
                    do_gzip: bo.do_gzip,
                    do_gunzip: bo.do_gunzip,
                    has_body: bo.beresp_has_body,
                    gzip_support: params.flag("http_gzip_support"),
                    beresp: &bo.beresp.headers,
                })
            });
            bo.vsl.log(vapi::Tag::Filters, &list);
            let opened = crate::cache_fetch_proc::parse_list(&list).and_then(|l| {
                crate::cache_fetch_proc::Vfps::open(
                    &l,
                    bo.beresp.status,
                    &mut bo.beresp.headers,
                    &bo.bereq.url,
                    &params,
                    Some(&mut bo.vsl),
                )
            });
            match opened {
                Ok(v) => {
                    gz = GzFlags {
                        gzipped: v.gzipped,
                        chgce: v.chgce,
                    };
                    p.vfps = Some(v);
                }
                Err(e) => {
                    body_failed = Some(e);
                    continue;
                }
            }
        }
        if is_pass {
            crate::vsc::MAIN.beresp_uncacheable.inc();
            // Hit-for-pass for pass_ttl.
            let mut marker = object(
                &bo,
                ObjKind::HitPass,
                Body::complete(Bytes::new()),
                t_fetch,
                vary_of(&bo.beresp.headers, &bo.bereq.headers, bo.gzip_support).unwrap_or_default(),
                GzFlags::default(),
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
                gz,
            );
            let insert = (!bo.bereq_uncacheable).then_some(marker);
            crate::vsl::storage(&mut bo.vsl, &obj, insert.as_ref());
            if let Some(p) = pump.as_ref() {
                p.fetch_body(&mut bo.vsl, bo.do_stream);
            }
            let mut pump = pump;
            if !bo.do_stream {
                if let Some(p) = pump.take() {
                    if let Err(e) = p.run(&obj.body, &mut bo.vsl).await {
                        obj.body.finish(false);
                        body_failed = Some(e);
                        continue;
                    }
                    obj.body.finish(true);
                }
            }
            return Ok(Fetched {
                obj,
                insert,
                pump,
                stream: bo.do_stream,
                replaces_stale: true,
                vsl: std::mem::take(&mut bo.vsl),
                from_error: false,
            });
        }
        let vary = match vary_of(&bo.beresp.headers, &bo.bereq.headers, bo.gzip_support) {
            Ok(v) => v,
            Err(()) => {
                tracing::warn!(
                    xid = bo.xid,
                    "Illegal 'Vary' header from backend, making this a pass."
                );
                bo.uncacheable = true;
                Vec::new()
            }
        };
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
            gz,
        );
        let insert = if bo.bereq_uncacheable {
            None
        } else if bo.uncacheable {
            // The marker keeps the response's grace and keep, as
            // Varnish's does: an expired one still makes a hit-for-miss.
            Some(object(
                &bo,
                ObjKind::HitMiss,
                Body::complete(Bytes::new()),
                lt.t_origin,
                vary,
                GzFlags::default(),
            ))
        } else if bo.ttl + bo.grace + bo.keep > 0.0 {
            Some(obj.clone())
        } else {
            None
        };
        crate::vsl::storage(&mut bo.vsl, &obj, insert.as_ref());
        if let Some(p) = pump.as_ref() {
            p.fetch_body(&mut bo.vsl, bo.do_stream);
        }
        // Without streaming the body is read here, so that a broken one
        // still reaches vcl_backend_error (and may be retried).
        let mut pump = pump;
        if !bo.do_stream {
            if let Some(p) = pump.take() {
                match p.run(&obj.body, &mut bo.vsl).await {
                    Ok(done) => done.nap().await,
                    Err(e) => {
                        obj.body.finish(false);
                        body_failed = Some(e);
                        continue;
                    }
                }
                obj.body.finish(true);
            }
        }
        // No body: nothing to stream, the object is there when the
        // fetch is done (Varnish's vbf_stp_fetch turns do_stream off).
        let stream = bo.do_stream && !pump.as_ref().is_some_and(Pump::is_empty);
        return Ok(Fetched {
            obj,
            insert,
            pump,
            stream,
            replaces_stale: true,
            vsl: std::mem::take(&mut bo.vsl),
            from_error: false,
        });
    }
}
