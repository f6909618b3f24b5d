//! Helpers for the integration tests: an in-process origin, an in-process
//! proxy on 127.0.0.1:0, and a raw HTTP/1.1 client.

#![allow(dead_code)]

use shellac::cache_req_fsm::Ctx;
use shellac::cache_vcl::Vcl;
use shellac::mgt_param::Params;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running demo origin and its request counter.
pub struct Origin {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
}

pub async fn origin() -> Origin {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = l.local_addr().expect("origin addr");
    let hits = Arc::new(AtomicU64::new(0));
    tokio::spawn(shellac::demo_origin::serve(l, hits.clone()));
    Origin { addr, hits }
}

/// Starts the proxy on `vcl` (where `${port}` is replaced by `port`) and
/// returns its address.
pub async fn proxy(vcl: &str, port: u16, params: &[&str]) -> SocketAddr {
    proxy_with_storage(vcl, port, params, u64::MAX).await
}

/// Like [`proxy`], with a `-s malloc,SIZE` budget.
pub async fn proxy_with_storage(vcl: &str, port: u16, params: &[&str], storage: u64) -> SocketAddr {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHELLAC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let mut p = Params::default();
    for a in params {
        p.set_arg(a).expect("param");
    }
    let src = vcl.replace("${port}", &port.to_string());
    let vcl = Vcl::load_source("test.vcl", &src, &p, storage)
        .await
        .expect("load VCL");
    let mut ls = shellac::cache_http1::bind(&["127.0.0.1:0".to_string()])
        .await
        .expect("bind proxy");
    let (l, addr) = ls.pop().expect("one listener");
    tokio::spawn(shellac::cache_http1::serve(
        Arc::new(Ctx::new(p, vcl)),
        l,
        "a0".into(),
    ));
    addr
}

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The body arrived whole (the chunked end, or Content-Length bytes).
    pub complete: bool,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends raw bytes, reads until the server closes, parses one response.
pub async fn raw(addr: SocketAddr, req: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(req).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    parse(&buf)
}

pub fn parse(buf: &[u8]) -> Resp {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let (body, complete) = if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(body)
    } else if let Some(cl) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        (body.to_string(), body.len() >= cl)
    } else {
        (body.to_string(), true)
    };
    Resp {
        status,
        headers,
        body,
        complete,
    }
}

/// Decodes a chunked body: the data, and whether the last chunk came.
fn dechunk(mut rest: &str) -> (String, bool) {
    let mut out = String::new();
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return (out, false);
        };
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            return (out, false);
        };
        if n == 0 {
            return (out, true);
        }
        if after.len() < n {
            out.push_str(after);
            return (out, false);
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
}

/// A GET with extra header lines.
pub async fn get(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Resp {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (n, v) in extra {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw(addr, req.as_bytes()).await
}
