//! Per-request cost of the compiled VCL alone: the subroutines a cache hit
//! runs (`vcl_recv`, `vcl_hash`, `vcl_hit`, `vcl_deliver`), called in a loop
//! on one warm instance with a typical request, without sockets or the
//! cache. This is the wasm share of a hit that bench/hit.sh measures end to
//! end.
//!
//! Usage: cargo run --release --example vcl_call -- FILE.vcl [REQUESTS]
//! (`VCL_CALL_BUDGET_MS` raises the CPU budget, for valgrind.)

use shellac::cache_vcl::Vcl;
use shellac::mgt_param::Params;
use shellac::vrt_ctx::Task;
use std::time::Instant;
use vcl_to_wasm::types::Method;

fn request(xid: u64) -> Box<Task> {
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let mut t = Box::new(Task::new(xid, ip, ip, 1.0e9));
    t.req.method = "GET".into();
    t.req.url = "/heavy/bytes/1024?utm_source=news&id=42&fbclid=abc".into();
    t.req.proto = "HTTP/1.1".into();
    t.req.headers = vec![
        ("Host".into(), "www.example.com".into()),
        (
            "User-Agent".into(),
            "Mozilla/5.0 (X11; Linux x86_64)".into(),
        ),
        ("Accept".into(), "text/html,application/xhtml+xml".into()),
        ("Accept-Encoding".into(), "gzip, deflate, br".into()),
        ("Accept-Language".into(), "en-GB,en;q=0.9".into()),
        (
            "Cookie".into(),
            "session=abc123; _ga=GA1.2.3; lang=en; tracking=xyz".into(),
        ),
    ];
    t
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "bench/hit.vcl".into());
    let n: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let mut params = Params::default();
    if let Ok(ms) = std::env::var("VCL_CALL_BUDGET_MS") {
        // A larger CPU budget, for valgrind.
        params.set("vcl_cpu_budget_ms", &ms)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let vcl = rt
        .block_on(Vcl::load_file(
            std::path::Path::new(&path),
            &params,
            64 << 20,
        ))
        .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let ws = 64 << 10;
    let one = |xid: u64| -> anyhow::Result<()> {
        let mut t = request(xid);
        for m in [Method::Recv, Method::Hash, Method::Hit, Method::Deliver] {
            if m == Method::Hash {
                t.hash_start();
            }
            if m == Method::Deliver {
                t.resp.status = 200;
                t.resp.reason = "OK".into();
                t.resp.proto = "HTTP/1.1".into();
                t.resp.headers = vec![
                    ("Content-Type".into(), "text/html".into()),
                    ("Cache-Control".into(), "public, max-age=3600".into()),
                    ("Content-Length".into(), "1024".into()),
                ];
            }
            let (back, r) = vcl.call(m, t, ws);
            t = back;
            if m == Method::Hash {
                t.hash_finish();
            }
            r.map_err(|e| anyhow::anyhow!("vcl_{m:?}: {e}"))?;
        }
        Ok(())
    };
    for i in 0..10_000 {
        one(i)?;
    }
    let start = Instant::now();
    for i in 0..n {
        one(i)?;
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "{path}: {:.2} us per request (vcl_recv + vcl_hash + vcl_hit + vcl_deliver, {n} requests)",
        ns / 1000.0
    );
    Ok(())
}
