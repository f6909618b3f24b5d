//! The admin HTTP listener (Shellac's; varnishd has the VSM instead):
//! loopback-only by default, it serves what Varnish's tools read from
//! shared memory.
//!
//! * `GET /metrics`: the counters in Prometheus' text format.
//! * `GET /stats`: the counters as JSON, for `shellac stat` (and through
//!   it varnishtest's `-expect`).
//! * `GET /log`: the transaction log as a stream of records (the wire
//!   form of [`vapi::record`]) for `shellac log` and `logexpect`:
//!   `from=head` starts at the oldest record the ring holds (default: the
//!   next one written), `follow=0` ends the stream at the newest record
//!   (default: it goes on until the reader closes). A reader that falls
//!   behind the ring gets a "lost N records" marker, never slows writers.
//!
//! * `POST /cli`: the admin CLI's commands over HTTP/JSON. The body is
//!   `{"command": "vcl.list"}` (a CLI line, with the CLI's quoting) or
//!   `{"argv": ["vcl.inline", "name", "vcl 4.1; ..."]}`; the answer is
//!   `{"status": 200, "text": "..."}` with the CLI's status code. With
//!   `-S`, it needs `Authorization: Bearer TOKEN`, TOKEN being
//!   [`crate::mgt_auth::http_token`] of the secret file; a wrong or
//!   missing token gets 401 and nothing else, and an address that keeps
//!   failing is locked out for a while (429). Without `-S` it answers
//!   loopback clients only.
//!
//! The readers' paths (`/metrics`, `/stats`, `/log`) need the same
//! token (or loopback without `-S`) unless `serve
//! --admin-http-open-reads` opens them; `shellac stat` and `shellac log`
//! send it, computed from the secret file the instance directory names.
//!
//! `shellac serve` writes this listener's address to its instance
//! directory (`-n DIR`, file `_.admin`, line `H ADDR:PORT`), so the tools
//! given the same `-n` find it.

use crate::mgt_child::Child;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The largest request head accepted.
const MAX_HEAD: usize = 8192;
/// The largest `/cli` body accepted (a `vcl.inline` carries a VCL).
const MAX_BODY: usize = 4 << 20;

/// What every connection shares: the bearer token (none without `-S`),
/// whether the readers' paths need it, and the failure limiter.
struct Auth {
    token: Option<String>,
    open_reads: bool,
    limiter: crate::mgt_auth::Limiter,
}

/// Serves the admin HTTP API on `listener` until the process ends;
/// `secret` is the `-S` file's content. Every path needs the token (or,
/// without `-S`, a loopback client), `/metrics`, `/stats` and `/log`
/// too unless `open_reads` (`serve --admin-http-open-reads`: counters
/// and the log readable by anyone who reaches the listener).
pub async fn serve(
    child: Arc<Child>,
    listener: TcpListener,
    secret: Option<Vec<u8>>,
    open_reads: bool,
) {
    let auth = Arc::new(Auth {
        token: secret.map(|s| crate::mgt_auth::http_token(&s)),
        open_reads,
        limiter: Default::default(),
    });
    loop {
        match listener.accept().await {
            Ok((s, peer)) => {
                tokio::spawn(conn(child.clone(), s, peer.ip(), auth.clone()));
            }
            Err(e) => {
                tracing::warn!("admin http accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// A parsed request head, and the bytes read after it.
struct Request {
    method: String,
    path: String,
    query: String,
    headers: crate::cache_obj::Headers,
    rest: Vec<u8>,
}

async fn read_head(s: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    // The client side's own head parser, with small limits.
    let lim = crate::cache_http1_proto::HeadLimits {
        req_size: MAX_HEAD,
        hdr_len: MAX_HEAD,
        max_hdr: 64,
    };
    loop {
        match crate::cache_http1_proto::dissect(&buf, &lim) {
            Ok(Some((r, n))) => {
                let target = r.msg.url.as_str();
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                return Some(Request {
                    method: r.msg.method.clone(),
                    path: path.to_string(),
                    query: query.to_string(),
                    headers: r.msg.headers.clone(),
                    rest: buf.get(n..).unwrap_or_default().to_vec(),
                });
            }
            Ok(None) if buf.len() < MAX_HEAD => {}
            _ => return None,
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn respond(s: &mut TcpStream, status: &str, ctype: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body.as_bytes()).await;
    let _ = s.shutdown().await;
}

async fn conn(child: Arc<Child>, mut s: TcpStream, peer: std::net::IpAddr, auth: Arc<Auth>) {
    let Some(req) = read_head(&mut s).await else {
        return;
    };
    if req.path == "/cli" {
        return cli(&child, s, req, peer, &auth).await;
    }
    if !auth.open_reads && !authorized(&mut s, &req, peer, &auth).await {
        return;
    }
    if req.method != "GET" && req.method != "HEAD" {
        return respond(&mut s, "405 Method Not Allowed", "text/plain", "GET only\n").await;
    }
    match req.path.as_str() {
        "/metrics" => {
            let mut body = crate::vsc::to_prometheus(&crate::vsc::snapshot(child.ctx()));
            body.push_str(&crate::mgt_tenant::prometheus(child.ctx()));
            respond(&mut s, "200 OK", "text/plain; version=0.0.4", &body).await
        }
        "/stats" => {
            let body = crate::vsc::to_json(&crate::vsc::snapshot(child.ctx()));
            respond(&mut s, "200 OK", "application/json", &body).await
        }
        "/log" => log(s, &req.query).await,
        _ => respond(&mut s, "404 Not Found", "text/plain", "not found\n").await,
    }
}

fn json_error(why: &str) -> String {
    serde_json::json!({ "error": why }).to_string()
}

/// Whether `req` may be served: the right token with `-S` (failures
/// counted and rate limited), a loopback client without. Answers the
/// client itself when not.
async fn authorized(s: &mut TcpStream, req: &Request, peer: std::net::IpAddr, auth: &Auth) -> bool {
    const JSON: &str = "application/json";
    if let Some(token) = &auth.token {
        let now = crate::vrt_ctx::now();
        if !auth.limiter.allowed(peer, now) {
            respond(
                s,
                "429 Too Many Requests",
                JSON,
                &json_error("too many failed authentications; try later"),
            )
            .await;
            return false;
        }
        let given = crate::cache_obj::hdr_get(&req.headers, "authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if !crate::mgt_auth::same(given.as_bytes(), token.as_bytes()) {
            auth.limiter.failed(peer, now);
            respond(
                s,
                "401 Unauthorized\r\nWWW-Authenticate: Bearer",
                JSON,
                &json_error("authentication required"),
            )
            .await;
            return false;
        }
        auth.limiter.succeeded(peer);
    } else if !peer.is_loopback() {
        // Without -S there is no token: only this machine may use the
        // API, wherever the listener is bound.
        respond(
            s,
            "401 Unauthorized",
            JSON,
            &json_error("authentication required (serve -S SECRETFILE for remote use)"),
        )
        .await;
        return false;
    }
    true
}

/// `POST /cli` (see the module's doc).
async fn cli(child: &Child, mut s: TcpStream, req: Request, peer: std::net::IpAddr, auth: &Auth) {
    const JSON: &str = "application/json";
    if !authorized(&mut s, &req, peer, auth).await {
        return;
    }
    if req.method != "POST" {
        return respond(
            &mut s,
            "405 Method Not Allowed",
            JSON,
            &json_error("POST only"),
        )
        .await;
    }
    let len = crate::cache_obj::hdr_get(&req.headers, "content-length")
        .and_then(|v| v.trim().parse::<usize>().ok());
    let Some(len) = len.filter(|&l| l <= MAX_BODY) else {
        return respond(
            &mut s,
            "411 Length Required",
            JSON,
            &json_error("a Content-Length of at most 4 MiB"),
        )
        .await;
    };
    let mut body = req.rest;
    body.truncate(len);
    let mut chunk = vec![0u8; 16 << 10];
    while body.len() < len {
        let n = match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return,
        };
        body.extend_from_slice(&chunk[..n.min(len - body.len())]);
    }
    let words = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => match (v.get("command").and_then(|c| c.as_str()), v.get("argv")) {
            (Some(line), None) => crate::mgt_cli::split_words(line),
            (None, Some(serde_json::Value::Array(a))) => a
                .iter()
                .map(|w| {
                    w.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| "argv: strings only".to_string())
                })
                .collect(),
            _ => Err("give \"command\" (a CLI line) or \"argv\" (its words)".into()),
        },
        Err(e) => Err(format!("bad JSON: {e}")),
    };
    let words = match words {
        Ok(w) if !w.is_empty() => w,
        Ok(_) => {
            return respond(
                &mut s,
                "400 Bad Request",
                JSON,
                &json_error("empty command"),
            )
            .await
        }
        Err(e) => return respond(&mut s, "400 Bad Request", JSON, &json_error(&e)).await,
    };
    let (status, text) = crate::mgt_cli::execute(child, &words).await;
    let out = serde_json::json!({ "status": status, "text": text }).to_string();
    respond(&mut s, "200 OK", JSON, &out).await
}

/// Streams the log to `s` (see the module's doc).
async fn log(mut s: TcpStream, query: &str) {
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
    };
    let head = param("from") == Some("head");
    let follow = param("follow") != Some("0");
    let mut cur = if head {
        crate::vsl::Cursor::head()
    } else {
        crate::vsl::Cursor::tail()
    };
    // The cursor is placed before the answer goes out: a reader that has
    // the head of the answer sees everything logged after it.
    if s.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
    )
    .await
    .is_err()
    {
        return;
    }
    let (mut rd, mut wr) = s.into_split();
    let mut scratch = [0u8; 64];
    let mut buf = Vec::with_capacity(64 << 10);
    loop {
        buf.clear();
        let lost = cur.read(32 << 10, &mut buf);
        if lost > 0 {
            let mut m = Vec::new();
            vapi::record::encode_lost(&mut m, lost);
            if wr.write_all(&m).await.is_err() {
                return;
            }
        }
        if buf.is_empty() {
            if !follow {
                let _ = wr.shutdown().await;
                return;
            }
            tokio::select! {
                _ = cur.wait() => {}
                r = rd.read(&mut scratch) => {
                    // The reader closed (or sent something it should not).
                    if !matches!(r, Ok(n) if n > 0) {
                        return;
                    }
                }
            }
            continue;
        }
        if wr.write_all(&buf).await.is_err() {
            return;
        }
    }
}
