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

/// Serves the admin HTTP API on `listener` until the process ends.
pub async fn serve(child: Arc<Child>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                tokio::spawn(conn(child.clone(), s));
            }
            Err(e) => {
                tracing::warn!("admin http accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// A parsed request line.
struct Request {
    method: String,
    path: String,
    query: String,
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
            Ok(Some((r, _))) => {
                let target = r.msg.url.as_str();
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                return Some(Request {
                    method: r.msg.method.clone(),
                    path: path.to_string(),
                    query: query.to_string(),
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

async fn conn(child: Arc<Child>, mut s: TcpStream) {
    let Some(req) = read_head(&mut s).await else {
        return;
    };
    if req.method != "GET" && req.method != "HEAD" {
        return respond(&mut s, "405 Method Not Allowed", "text/plain", "GET only\n").await;
    }
    match req.path.as_str() {
        "/metrics" => {
            let body = crate::vsc::to_prometheus(&crate::vsc::snapshot(child.ctx()));
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
