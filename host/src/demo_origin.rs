//! A small origin server for demos and tests: a few pages with
//! `Cache-Control`, a counter so a test can tell a hit from a miss, and
//! pages that set cookies, vary, or answer slowly.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves the demo pages on `listener` forever; `hits` counts requests.
pub async fn serve(listener: TcpListener, hits: Arc<AtomicU64>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let hits = hits.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<Incoming>| {
                let n = hits.fetch_add(1, Ordering::Relaxed) + 1;
                async move { Ok::<_, Infallible>(page(&req, n).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn page(req: &hyper::Request<Incoming>, n: u64) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path();
    let echo = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    if path == "/static/app.css" && echo("if-none-match") == "\"css-1\"" {
        let mut resp = hyper::Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = hyper::StatusCode::NOT_MODIFIED;
        resp.headers_mut().insert(
            hyper::header::ETAG,
            hyper::header::HeaderValue::from_static("\"css-1\""),
        );
        return resp;
    }
    // `/gzip/N`: N bytes of text-like content, gzipped (at most 16 MiB).
    if let Some(len) = path
        .strip_prefix("/gzip/")
        .and_then(|l| l.parse::<usize>().ok())
    {
        if len <= 16 << 20 {
            let body = crate::cache_gzip::gzip(&text(len), 6).unwrap_or_default();
            let mut resp = hyper::Response::new(Full::new(body));
            let h = resp.headers_mut();
            h.insert(
                hyper::header::CACHE_CONTROL,
                hyper::header::HeaderValue::from_static("public, max-age=3600"),
            );
            h.insert(
                hyper::header::CONTENT_ENCODING,
                hyper::header::HeaderValue::from_static("gzip"),
            );
            return resp;
        }
    }
    let (status, cc, body) = match path {
        "/" => (
            200,
            "public, max-age=60",
            format!("<h1>Shellac demo origin</h1><p>request {n}</p>\n"),
        ),
        "/static/app.css" => (
            200,
            "public, max-age=3600",
            "body { font-family: sans-serif }\n".to_string(),
        ),
        "/private" => (200, "private", format!("private {n}\n")),
        "/nocache" => (200, "no-store, max-age=0", format!("nocache {n}\n")),
        "/echo" => (
            200,
            "max-age=60",
            format!("x-test={} n={n}\n", echo("x-test")),
        ),
        "/slow" => {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            (200, "max-age=60", format!("slow {n}\n"))
        }
        // `/bytes/N`: N bytes (at most 16 MiB), for benchmarks.
        p if p.starts_with("/bytes/") => match p["/bytes/".len()..].parse::<usize>() {
            Ok(len) if len <= 16 << 20 => (200, "public, max-age=3600", "x".repeat(len)),
            _ => (404, "max-age=10", format!("not found {n}\n")),
        },
        // `/esi/page/N` (and `/esi/gzpage/N`): a page of N ESI includes
        // of `/esi/frag/I`, each a 1 KiB fragment, for benchmarks.
        p if p.starts_with("/esi/page/") || p.starts_with("/esi/gzpage/") => {
            match p.rsplit('/').next().and_then(|c| c.parse::<usize>().ok()) {
                Some(c) if c <= 1000 => {
                    let mut b = String::from("<html><body>\n");
                    for i in 0..c {
                        b.push_str(&format!(
                            "<div class=\"f\"><esi:include src=\"/esi/frag/{i}\"/></div>\n"
                        ));
                    }
                    b.push_str("</body></html>\n");
                    (200, "public, max-age=3600", b)
                }
                _ => (404, "max-age=10", format!("not found {n}\n")),
            }
        }
        p if p.starts_with("/esi/frag/") => (
            200,
            "public, max-age=3600",
            String::from_utf8_lossy(&text(1024)).into_owned(),
        ),
        _ => (404, "max-age=10", format!("not found {n}\n")),
    };
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    let h = resp.headers_mut();
    if let Ok(v) = hyper::header::HeaderValue::from_str(cc) {
        h.insert(hyper::header::CACHE_CONTROL, v);
    }
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if path == "/static/app.css" {
        h.insert(
            hyper::header::ETAG,
            hyper::header::HeaderValue::from_static("\"css-1\""),
        );
        h.insert(
            hyper::header::LAST_MODIFIED,
            hyper::header::HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
    }
    if let Ok(v) = hyper::header::HeaderValue::from_str(&n.to_string()) {
        h.insert("x-origin-count", v);
    }
    resp
}

/// `len` bytes of text that compresses about as well as HTML does.
fn text(len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "cache", "object", "varnish", "shellac", "request", "backend", "<p>", "</p>", "header",
        "delivery", "fragment", "gzip", "range", "stream", "client", "the",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut x: u32 = 12345;
    while out.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        out.extend_from_slice(WORDS[(x >> 16) as usize % WORDS.len()].as_bytes());
        out.push(if x.is_multiple_of(7) { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}
