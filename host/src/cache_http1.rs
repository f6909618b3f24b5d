//! The HTTP/1 client side (Varnish's `cache_http1_*`): listeners, hyper
//! connections, and the translation between hyper's types and the task's.

use crate::cache_deliver::RespBody;
use crate::cache_req_fsm::ReplyBody;
use crate::cache_req_fsm::{handle, Ctx, Reply};
use crate::vrt_ctx::ReqMsg;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The largest request body accepted while bodies are buffered.
const MAX_REQ_BODY: usize = 64 << 20;

/// A request head over `http_req_size`: the service fails, so hyper
/// closes the connection without a response, as Varnish does.
#[derive(Debug, thiserror::Error)]
#[error("request head exceeds http_req_size")]
pub struct HeadOverflow;

/// How much response hyper may buffer before it writes (see `serve`).
const WRITE_QUEUE: usize = 1 << 20;

/// Binds every `-a` address (before anything is served, so a bad address
/// fails start-up) and returns the listeners with their local addresses.
pub async fn bind(addrs: &[String]) -> std::io::Result<Vec<(TcpListener, SocketAddr)>> {
    let mut out = Vec::new();
    for a in addrs {
        let l = TcpListener::bind(a.as_str()).await?;
        let local = l.local_addr()?;
        out.push((l, local));
    }
    Ok(out)
}

/// Serves connections from `listener` forever.
pub async fn serve(ctx: Arc<Ctx>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // The session has its own XID, as in Varnish: the first request
        // on a connection is the session's XID + 1.
        let _session_xid = ctx.next_xid();
        let local = stream.local_addr().unwrap_or(peer);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let idle = crate::vrt_ctx::secs(ctx.params().num("timeout_idle").max(0.001));
            // hyper's one buffer limit bounds both reading the request
            // head and queueing the response: at `http_req_size` (32k) a
            // 100 KiB hit went out in four writes. Queue up to WRITE_QUEUE
            // and check the head against `http_req_size` in on_request.
            let max_buf = (ctx.params().num("http_req_size") as usize).max(WRITE_QUEUE);
            let max_hdr = ctx.params().num("http_max_hdr") as usize;
            let svc_ctx = ctx.clone();
            let svc = service_fn(move |req: hyper::Request<Incoming>| {
                let ctx = svc_ctx.clone();
                async move { on_request(ctx, req, peer, local).await }
            });
            let r = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(idle)
                .max_buf_size(max_buf)
                .max_headers(max_hdr)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            if let Err(e) = r {
                tracing::debug!(%peer, "connection: {e}");
            }
        });
    }
}

async fn on_request(
    ctx: Arc<Ctx>,
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<hyper::Response<RespBody>, HeadOverflow> {
    let (parts, body) = req.into_parts();
    // The request head within `http_req_size`, as Varnish counts it: the
    // request line and every header line with their CRLFs.
    let head_len = parts.method.as_str().len()
        + parts.uri.to_string().len()
        + 12
        + parts
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>()
        + 2;
    if head_len > ctx.params().num("http_req_size") as usize {
        // Varnish closes such a connection without an answer.
        return Err(HeadOverflow);
    }
    let mut headers = Vec::with_capacity(parts.headers.len());
    for (n, v) in &parts.headers {
        headers.push((
            n.as_str().to_string(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        ));
    }
    let url = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.to_string(), |p| p.as_str().to_string());
    // An absolute URL names the host (RFC 2616 5.2): it replaces `Host`.
    if let Some(auth) = parts.uri.authority() {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case("host"));
        headers.push(("host".to_string(), auth.as_str().to_string()));
    }
    let proto = match parts.version {
        hyper::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    // Varnish refuses what it cannot honour before any VCL runs: an
    // `Expect` other than 100-continue (417), and an HTTP/1.0 POST or PUT
    // without a length (400).
    if parts
        .headers
        .get(hyper::header::EXPECT)
        .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        return Ok(plain(417, "Expectation Failed", true));
    }
    if parts.version == hyper::Version::HTTP_10
        && (parts.method == hyper::Method::POST || parts.method == hyper::Method::PUT)
        && !parts.headers.contains_key(hyper::header::CONTENT_LENGTH)
    {
        return Ok(plain(400, "Bad Request", true));
    }
    // Request bodies are buffered whole for now: bound them.
    let body = match http_body_util::Limited::new(body, MAX_REQ_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(plain(413, "Content Too Large", true))
        }
        Err(_) => return Ok(plain(400, "Bad Request", true)),
    };
    let msg = ReqMsg {
        method: parts.method.as_str().to_string(),
        url,
        proto: proto.to_string(),
        headers,
    };
    let reply = handle(ctx, msg, body, peer.ip(), local.ip()).await;
    Ok(to_hyper(reply))
}

fn plain(status: u16, msg: &str, close: bool) -> hyper::Response<RespBody> {
    to_hyper(Reply {
        status,
        reason: msg.to_string(),
        headers: vec![("Content-Type".into(), "text/plain".into())],
        body: ReplyBody::Bytes(Bytes::from(format!("{msg}\n"))),
        close,
        head_length: None,
    })
}

fn to_hyper(r: Reply) -> hyper::Response<RespBody> {
    let mut resp = hyper::Response::new(match r.body {
        ReplyBody::Bytes(b) => RespBody::full(b),
        ReplyBody::Object(o) => RespBody::object(o),
        b @ ReplyBody::Gunzip(_) => {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                crate::cache_esi::send_body(b, &tx).await;
            });
            RespBody::Channel(rx)
        }
        ReplyBody::Esi(job) => {
            // Assembled by its own task, so includes run as the client
            // reads; a full channel holds the task back.
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            tokio::spawn(async move {
                crate::cache_esi::deliver(*job, &tx).await;
            });
            RespBody::Channel(rx)
        }
    });
    // hyper cannot send a 1xx as the final response: refuse it as 503.
    *resp.status_mut() = hyper::StatusCode::from_u16(r.status)
        .ok()
        .filter(|s| !s.is_informational())
        .unwrap_or(hyper::StatusCode::SERVICE_UNAVAILABLE);
    let canonical = resp.status().canonical_reason().unwrap_or("");
    if !r.reason.is_empty() && r.reason != canonical {
        if let Ok(rp) = hyper::ext::ReasonPhrase::try_from(r.reason.into_bytes()) {
            resp.extensions_mut().insert(rp);
        }
    }
    let h = resp.headers_mut();
    for (n, v) in &r.headers {
        if n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding") {
            continue;
        }
        match (
            hyper::header::HeaderName::from_bytes(n.as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            (Ok(n), Ok(v)) => {
                h.append(n, v);
            }
            _ => tracing::debug!("dropping invalid response header {n}"),
        }
    }
    if let Some(n) = r.head_length {
        h.insert(
            hyper::header::CONTENT_LENGTH,
            hyper::header::HeaderValue::from(n),
        );
    }
    if r.close {
        h.insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    resp
}
