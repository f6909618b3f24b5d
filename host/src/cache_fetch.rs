//! Backend fetches (Varnish's `cache_fetch`): the backend state machine
//! `vcl_backend_fetch` → fetch → `vcl_backend_response` |
//! `vcl_backend_error`, with retries, and the object it produces.

use crate::cache_expire::rfc2616_ttl;
use crate::cache_obj::Body;
use crate::cache_obj::{hdr_get, Headers, ObjKind, Object};
use crate::cache_req_fsm::{vcl_call, Ctx};
use crate::cache_vcl::Vcl;
use crate::vrt_ctx::{now, RespMsg, Task};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
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
}

/// The fetch was abandoned (`abandon`, `fail`, or an error with no
/// response): the client gets a 503.
#[derive(Debug, thiserror::Error)]
#[error("fetch abandoned: {0}")]
pub struct Abandoned(pub String);

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

async fn send(vcl: &Vcl, bo: &Task, body: &Bytes) -> Result<(RespMsg, Pump), String> {
    let be = vcl
        .shared
        .backend(bo.bereq_backend)
        .ok_or_else(|| "no backend".to_string())?;
    let addr = be
        .addr
        .ok_or_else(|| format!("backend {} is none", be.name))?;
    if !be.is_healthy() {
        return Err(format!("backend {}: unhealthy", be.name));
    }
    let uri = format!("http://{addr}{}", bo.bereq.url);
    let mut rb = hyper::Request::builder()
        .method(bo.bereq.method.as_str())
        .uri(uri);
    let mut has_host = false;
    for (n, v) in &bo.bereq.headers {
        if HOP_BY_HOP.contains(&n.to_ascii_lowercase().as_str()) {
            continue;
        }
        has_host |= n.eq_ignore_ascii_case("host");
        rb = rb.header(n.as_str(), v.as_str());
    }
    if !has_host {
        if let Some(h) = &be.host_header {
            rb = rb.header("host", h.as_str());
        }
    }
    let req = rb
        .body(Full::new(body.clone()))
        .map_err(|e| format!("bad backend request: {e}"))?;
    let fbt = bo.first_byte_timeout.unwrap_or(be.first_byte_timeout);
    let bbt = bo.between_bytes_timeout.unwrap_or(be.between_bytes_timeout);
    let resp = tokio::time::timeout(crate::vrt_ctx::secs(fbt.max(0.001)), be.pool.request(req))
        .await
        .map_err(|_| format!("first byte timeout ({fbt:.3}s) from {}", be.name))?
        .map_err(|e| format!("backend {} fetch failed: {e}", be.name))?;
    let (parts, incoming) = resp.into_parts();
    let mut headers = Headers::with_capacity(parts.headers.len());
    for (n, v) in &parts.headers {
        if HOP_BY_HOP.contains(&n.as_str()) {
            continue;
        }
        headers.push((
            n.as_str().to_string(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        ));
    }
    Ok((
        RespMsg {
            status: parts.status.as_u16(),
            reason: parts.status.canonical_reason().unwrap_or("").to_string(),
            proto: "HTTP/1.1".into(),
            headers,
        },
        Pump {
            incoming,
            between_bytes_timeout: bbt,
            max: vcl.shared.storage_budget.min(1 << 30),
            backend: be.name.clone(),
        },
    ))
}

/// The backend body still to be read into an object: the second half of a
/// fetch, run after `vcl_backend_response` while clients may already be
/// delivering the object (streaming).
pub struct Pump {
    incoming: hyper::body::Incoming,
    between_bytes_timeout: f64,
    max: u64,
    backend: String,
}

impl Pump {
    /// Reads the body into `body`, returning why it failed (timeout, reset,
    /// oversize). The caller then ends the body with [`Body::finish`],
    /// after taking a failed object out of the cache, so a partial body is
    /// never found as complete.
    pub async fn run(mut self, body: &crate::cache_obj::Body) -> Result<(), String> {
        let bbt = crate::vrt_ctx::secs(self.between_bytes_timeout.max(0.001));
        let r = loop {
            let frame = match tokio::time::timeout(bbt, self.incoming.frame()).await {
                Ok(f) => f,
                Err(_) => {
                    break Err(format!(
                        "between bytes timeout ({:.3}s) from {}",
                        self.between_bytes_timeout, self.backend
                    ))
                }
            };
            match frame {
                None => break Ok(()),
                Some(Err(e)) => break Err(format!("backend {} body failed: {e}", self.backend)),
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        body.push(d);
                        if body.len() > self.max {
                            break Err("backend body too large".into());
                        }
                    }
                }
            }
        };
        r
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
    })
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
    loop {
        let (b, r) = vcl_call(ctx, vcl, Method::BackendFetch, bo, ws);
        bo = b;
        let mut error = match r {
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
        let mut fetched_body = None;
        let mut pump = None;
        if error.is_none() {
            match send(vcl, &bo, &body).await {
                Ok((resp, p)) => {
                    bo.beresp = resp;
                    pump = Some(p);
                    if bo.beresp.status == 304 {
                        if let Some(stale) = bo.stale_obj.clone() {
                            // Merge the 304's headers into the stale
                            // object's and reuse its body.
                            let mut headers = stale.headers.clone();
                            for (n, v) in &bo.beresp.headers {
                                crate::cache_obj::hdr_set(&mut headers, n, v);
                            }
                            bo.beresp.status = stale.status;
                            bo.beresp.reason = stale.reason.clone();
                            bo.beresp.headers = headers;
                            pump = None;
                            fetched_body = Some(stale.body.collect().await.unwrap_or_default());
                            bo.was_304 = true;
                        }
                    }
                }
                Err(e) => error = Some(e),
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
        if let Some(why) = error {
            tracing::warn!(xid = bo.xid, "FetchError: {why}");
            bo.beresp = RespMsg {
                status: 503,
                reason: "Backend fetch failed".into(),
                proto: "HTTP/1.1".into(),
                headers: vec![("Date".into(), crate::cache_expire::http_date(t_fetch))],
            };
            bo.synth_body.clear();
            let (b, r) = vcl_call(ctx, vcl, Method::BackendError, bo, ws);
            bo = b;
            match r {
                Ok(None | Some(Action::Deliver)) => {
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
        let body_of = |fetched: Option<Bytes>, pump: &Option<Pump>| match (fetched, pump) {
            (Some(b), _) => Body::complete(b),
            (None, Some(_)) => Body::streaming(),
            (None, None) => Body::complete(Bytes::new()),
        };
        match r {
            Ok(None | Some(Action::Deliver)) => {}
            Ok(Some(Action::Pass)) => {
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
        let vary = vary_of(&bo.beresp.headers, req_headers);
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
        return Ok(Fetched {
            obj,
            insert,
            pump,
            stream: bo.do_stream,
        });
    }
}
