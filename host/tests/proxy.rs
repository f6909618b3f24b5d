//! The proxy over real sockets, with an in-process origin.

mod common;

use common::{get, origin, proxy, raw};
use std::sync::atomic::Ordering;

const BASIC: &str = r#"vcl 4.1;
backend default { .host = "127.0.0.1"; .port = "${port}"; }
"#;

#[tokio::test]
async fn miss_then_hit() {
    let o = origin().await;
    let p = proxy(BASIC, o.addr.port(), &[]).await;
    let a = get(p, "/", &[]).await;
    assert_eq!(a.status, 200);
    let xa = a.header("x-varnish").expect("x-varnish");
    assert_eq!(xa.split(' ').count(), 1, "miss has one XID: {xa}");
    let b = get(p, "/", &[]).await;
    assert_eq!(b.status, 200);
    let xb = b.header("x-varnish").expect("x-varnish");
    assert_eq!(xb.split(' ').count(), 2, "hit has two XIDs: {xb}");
    assert!(b.header("age").is_some());
    assert!(b.header("via").is_some_and(|v| v.starts_with("1.1 ")));
    assert_eq!(a.body, b.body);
    assert_eq!(o.hits.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn cookie_passes() {
    let o = origin().await;
    let p = proxy(BASIC, o.addr.port(), &[]).await;
    get(p, "/", &[("Cookie", "a=1")]).await;
    let r = get(p, "/", &[("Cookie", "a=1")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-varnish").map(|x| x.split(' ').count()), Some(1));
    assert_eq!(o.hits.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn synth_from_recv() {
    let o = origin().await;
    let vcl = format!(
        "{BASIC}sub vcl_recv {{ if (req.url == \"/teapot\") {{ return (synth(418, \"Short and stout\")); }} }}\n"
    );
    let p = proxy(&vcl, o.addr.port(), &[]).await;
    let r = get(p, "/teapot", &[]).await;
    assert_eq!(r.status, 418);
    assert!(r.body.contains("Short and stout"), "{}", r.body);
    let xid = r.header("x-varnish").expect("xid");
    assert!(r.body.contains(&format!("XID: {xid}")));
    assert_eq!(o.hits.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn header_edits_visible() {
    let o = origin().await;
    let vcl = format!(
        "{BASIC}sub vcl_recv {{ set req.http.x-test = \"from-recv\"; }}\nsub vcl_deliver {{ set resp.http.x-hits = obj.hits; unset resp.http.x-origin-count; }}\n"
    );
    let p = proxy(&vcl, o.addr.port(), &[]).await;
    let r = get(p, "/echo", &[]).await;
    assert!(r.body.contains("x-test=from-recv"), "{}", r.body);
    assert_eq!(r.header("x-hits"), Some("0"));
    assert!(r.header("x-origin-count").is_none());
    let r = get(p, "/echo", &[]).await;
    assert_eq!(r.header("x-hits"), Some("1"));
}

#[tokio::test]
async fn trapping_vcl_fails_one_request() {
    let o = origin().await;
    let vcl = format!(
        "{BASIC}sub vcl_recv {{ if (req.url == \"/loop\") {{ set req.http.x = \"a\"; }} if (req.url == \"/div\") {{ set req.http.y = 1 / (req.restarts - req.restarts); }} }}\n"
    );
    let p = proxy(&vcl, o.addr.port(), &[]).await;
    let r = get(p, "/div", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("VCL failed"), "{}", r.body);
    let xid = r.header("x-varnish").expect("xid");
    assert!(r.body.contains(xid));
    let r = get(p, "/", &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn workspace_overflow_fails_one_request() {
    let o = origin().await;
    let vcl = format!(
        "{BASIC}sub vcl_recv {{ if (req.url == \"/big\") {{ set req.http.a = req.url + req.url; set req.http.a = req.http.a + req.http.a + req.http.a + req.http.a; set req.http.a = req.http.a + req.http.a + req.http.a + req.http.a; set req.http.a = req.http.a + req.http.a + req.http.a + req.http.a; set req.http.a = req.http.a + req.http.a + req.http.a + req.http.a; set req.http.a = req.http.a + req.http.a + req.http.a + req.http.a; set req.http.a = req.http.a + req.http.a + req.http.a + req.http.a; }} }}\n"
    );
    let p = proxy(&vcl, o.addr.port(), &["workspace_client=10k"]).await;
    let r = get(p, "/big", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("VCL failed"), "{}", r.body);
    let r = get(p, "/", &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn backend_down_gives_503() {
    // Bind and drop to get a port nobody listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    let p = proxy(BASIC, port, &["connect_timeout=1s"]).await;
    let r = get(p, "/", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("Backend fetch failed"), "{}", r.body);
}

#[tokio::test]
async fn malformed_request_gets_400() {
    let o = origin().await;
    let p = proxy(BASIC, o.addr.port(), &[]).await;
    let r = raw(p, b"GARBAGE\x01 / HTTP/1.1\r\n\r\n").await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn purge_removes_object() {
    let o = origin().await;
    let vcl =
        format!("{BASIC}sub vcl_recv {{ if (req.method == \"PURGE\") {{ return (purge); }} }}\n");
    let p = proxy(&vcl, o.addr.port(), &[]).await;
    get(p, "/", &[]).await;
    let r = raw(
        p,
        b"PURGE / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let r = get(p, "/", &[]).await;
    assert_eq!(r.header("x-varnish").map(|x| x.split(' ').count()), Some(1));
    assert_eq!(o.hits.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn coalesces_concurrent_misses() {
    let o = origin().await;
    let p = proxy(BASIC, o.addr.port(), &[]).await;
    let reqs: Vec<_> = (0..5)
        .map(|_| tokio::spawn(async move { get(p, "/slow", &[]).await }))
        .collect();
    for r in reqs {
        assert_eq!(r.await.expect("join").status, 200);
    }
    assert_eq!(o.hits.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn cpu_budget_fails_one_request() {
    let o = origin().await;
    let calls = "call heavy;\n".repeat(400);
    let vcl = format!(
        "{BASIC}sub heavy {{ set req.http.y = regsuball(req.http.x, \"(a)\", \"\\1\\1\"); }}\nsub vcl_recv {{ if (req.url == \"/spin\") {{ {calls} }} }}\n"
    );
    let p = proxy(
        &vcl,
        o.addr.port(),
        &["vcl_cpu_budget_ms=5", "workspace_client=8m"],
    )
    .await;
    let x = "a".repeat(4000);
    // The same work within a generous budget succeeds.
    let roomy = proxy(
        &vcl,
        o.addr.port(),
        &["vcl_cpu_budget_ms=60000", "workspace_client=8m"],
    )
    .await;
    assert_eq!(
        get(roomy, "/spin", &[("x", &x)]).await.status,
        404,
        "the origin answers"
    );
    let r = get(p, "/spin", &[("x", &x)]).await;
    assert_eq!(r.status, 503, "{:?}", r.headers);
    assert!(r.body.contains("VCL failed"));
    let r = get(p, "/", &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn synth_reason_phrase_on_the_wire() {
    let o = origin().await;
    let vcl = format!("{BASIC}sub vcl_recv {{ return (synth(404, \"Nothing here\")); }}\n");
    let p = proxy(&vcl, o.addr.port(), &[]).await;
    let mut s = tokio::net::TcpStream::connect(p).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    assert!(buf.starts_with(b"HTTP/1.1 404 Nothing here\r\n"));
}

#[tokio::test]
async fn private_is_hit_for_miss() {
    let o = origin().await;
    let p = proxy(BASIC, o.addr.port(), &[]).await;
    let a = get(p, "/private", &[]).await;
    let b = get(p, "/private", &[]).await;
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(b.header("x-varnish").map(|x| x.split(' ').count()), Some(1));
    assert_eq!(o.hits.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn stale_object_served_in_grace() {
    let o = origin().await;
    let vcl = format!(
        "{BASIC}sub vcl_backend_response {{ set beresp.ttl = 0.05s; set beresp.grace = 1h; }}\n"
    );
    let p = proxy(&vcl, o.addr.port(), &[]).await;
    let a = get(p, "/", &[]).await;
    // Let the object go stale (time itself is what is tested here).
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let b = get(p, "/", &[]).await;
    assert_eq!(b.status, 200);
    assert_eq!(b.body, a.body, "stale copy served");
    assert_eq!(b.header("x-varnish").map(|x| x.split(' ').count()), Some(2));
}

#[tokio::test]
async fn restart_and_max_restarts() {
    let o = origin().await;
    let vcl = format!(
        "{BASIC}sub vcl_deliver {{ if (req.url == \"/always\" || req.restarts == 0) {{ return (restart); }} set resp.http.x-restarts = req.restarts; }}\n"
    );
    let p = proxy(&vcl, o.addr.port(), &["max_restarts=2"]).await;
    let r = get(p, "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-restarts"), Some("1"));
    let r = get(p, "/always", &[]).await;
    assert_eq!(r.status, 503);
}

#[tokio::test]
async fn vary_keeps_variants() {
    let o = origin().await;
    let vcl = format!("{BASIC}sub vcl_backend_response {{ set beresp.http.Vary = \"X-Test\"; }}\n");
    let p = proxy(&vcl, o.addr.port(), &[]).await;
    let a = get(p, "/echo", &[("X-Test", "one")]).await;
    let b = get(p, "/echo", &[("X-Test", "two")]).await;
    let c = get(p, "/echo", &[("X-Test", "one")]).await;
    assert!(a.body.contains("x-test=one"));
    assert!(b.body.contains("x-test=two"));
    assert_eq!(c.body, a.body);
    assert_eq!(o.hits.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn conditional_requests_get_304() {
    let o = origin().await;
    let p = proxy(BASIC, o.addr.port(), &[]).await;
    let full = get(p, "/static/app.css", &[]).await;
    assert_eq!(full.status, 200);
    let r = get(p, "/static/app.css", &[("If-None-Match", "\"css-1\"")]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = get(p, "/static/app.css", &[("If-None-Match", "\"other\"")]).await;
    assert_eq!(r.status, 200);
    let r = get(
        p,
        "/static/app.css",
        &[("If-Modified-Since", "Mon, 07 Nov 1994 08:49:37 GMT")],
    )
    .await;
    assert_eq!(r.status, 304);
}

#[tokio::test]
async fn round_robin_director_alternates() {
    let a = origin().await;
    let b = origin().await;
    let vcl = format!(
        r#"vcl 4.1;
import directors;
backend a {{ .host = "127.0.0.1"; .port = "${{port}}"; }}
backend b {{ .host = "127.0.0.1"; .port = "{}"; }}
sub vcl_init {{ new rr = directors.round_robin(); rr.add_backend(a); rr.add_backend(b); }}
sub vcl_recv {{ set req.backend_hint = rr.backend(); return (pass); }}
"#,
        b.addr.port()
    );
    let p = proxy(&vcl, a.addr.port(), &[]).await;
    for _ in 0..4 {
        assert_eq!(get(p, "/", &[]).await.status, 200);
    }
    assert_eq!(a.hits.load(Ordering::Relaxed), 2);
    assert_eq!(b.hits.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn too_many_headers_refused() {
    let o = origin().await;
    let p = proxy(BASIC, o.addr.port(), &["http_max_hdr=32"]).await;
    let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..40 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let r = raw(p, req.as_bytes()).await;
    assert!(r.status == 431 || r.status == 400, "{}", r.status);
    assert_eq!(o.hits.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn hit_for_pass() {
    let o = origin().await;
    let vcl = format!("{BASIC}sub vcl_backend_response {{ return (pass(10s)); }}\n");
    let p = proxy(&vcl, o.addr.port(), &[]).await;
    get(p, "/", &[]).await;
    let r = get(p, "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-varnish").map(|x| x.split(' ').count()), Some(1));
    assert_eq!(o.hits.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn retry_and_max_retries() {
    let o = origin().await;
    let vcl = format!(
        "{BASIC}sub vcl_backend_response {{ if (bereq.url == \"/always\" || bereq.retries < 2) {{ return (retry); }} set beresp.http.x-retries = bereq.retries; }}\n"
    );
    let p = proxy(&vcl, o.addr.port(), &["max_retries=3"]).await;
    let r = get(p, "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-retries"), Some("2"));
    assert_eq!(o.hits.load(Ordering::Relaxed), 3);
    let r = get(p, "/always", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(o.hits.load(Ordering::Relaxed), 3 + 4);
}

#[tokio::test]
async fn bans_at_lookup() {
    let o = origin().await;
    let vcl = format!(
        r#"{BASIC}import std;
sub vcl_recv {{
    if (req.method == "BAN") {{
        ban("req.url ~ " + req.url);
        return (synth(200, "Banned"));
    }}
    if (req.method == "STDBAN") {{
        if (std.ban(req.http.x-ban)) {{ return (synth(200, "Banned")); }}
        return (synth(400, std.ban_error()));
    }}
}}
"#
    );
    let p = proxy(&vcl, o.addr.port(), &[]).await;
    get(p, "/echo", &[]).await;
    get(p, "/", &[]).await;
    assert_eq!(o.hits.load(Ordering::Relaxed), 2);
    let r = raw(
        p,
        b"BAN /ech HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let r = get(p, "/", &[]).await;
    assert_eq!(
        r.header("x-varnish").map(|x| x.split(' ').count()),
        Some(2),
        "/ not banned"
    );
    let r = get(p, "/echo", &[]).await;
    assert_eq!(
        r.header("x-varnish").map(|x| x.split(' ').count()),
        Some(1),
        "/echo banned"
    );
    assert_eq!(o.hits.load(Ordering::Relaxed), 3);
    // std.ban on an object header, and a refused expression.
    let r = raw(p, b"STDBAN / HTTP/1.1\r\nHost: test\r\nX-Ban: obj.http.content-type ~ html\r\nConnection: close\r\n\r\n").await;
    assert_eq!(r.status, 200);
    let r = get(p, "/", &[]).await;
    assert_eq!(r.header("x-varnish").map(|x| x.split(' ').count()), Some(1));
    let r = raw(
        p,
        b"STDBAN / HTTP/1.1\r\nHost: test\r\nX-Ban: foo.bar == 1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn probes_flip_health_and_fallback_skips_sick() {
    let up = origin().await;
    // A port nobody listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let down = l.local_addr().expect("addr").port();
    drop(l);
    let vcl = format!(
        r#"vcl 4.1;
import std;
import directors;
probe p {{ .url = "/"; .interval = 0.02s; .timeout = 0.5s; .window = 3; .threshold = 2; .initial = 2; }}
backend dead {{ .host = "127.0.0.1"; .port = "{down}"; .probe = p; }}
backend live {{ .host = "127.0.0.1"; .port = "${{port}}"; .probe = p; }}
sub vcl_init {{ new fb = directors.fallback(); fb.add_backend(dead); fb.add_backend(live); }}
sub vcl_recv {{
    if (req.url == "/health") {{
        return (synth(200, "dead=" + std.healthy(dead) + " live=" + std.healthy(live)));
    }}
    set req.backend_hint = fb.backend();
    return (pass);
}}
"#
    );
    let p = proxy(&vcl, up.addr.port(), &[]).await;
    // Both start healthy (.initial = threshold); poll until the probe of
    // the dead one has failed twice.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut s = tokio::net::TcpStream::connect(p).await.expect("connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        if String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200 dead=false live=true") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "probe never flipped");
        tokio::task::yield_now().await;
    }
    let r = get(p, "/", &[]).await;
    assert_eq!(r.status, 200, "fallback skipped the sick backend");
}

#[tokio::test]
async fn kept_object_revalidated_with_304() {
    let o = origin().await;
    let vcl = format!(
        "{BASIC}sub vcl_backend_response {{ set beresp.ttl = 0.05s; set beresp.grace = 0s; set beresp.keep = 1h; set beresp.http.x-was-304 = beresp.was_304; }}\n"
    );
    let p = proxy(&vcl, o.addr.port(), &[]).await;
    let a = get(p, "/static/app.css", &[]).await;
    assert_eq!(a.header("x-was-304"), Some("false"));
    // Let the object go past ttl + grace (time itself is what is tested).
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let b = get(p, "/static/app.css", &[]).await;
    assert_eq!(b.status, 200);
    assert_eq!(b.header("x-was-304"), Some("true"));
    assert_eq!(b.body, a.body);
    assert_eq!(o.hits.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn storage_budget_evicts_oldest() {
    let o = origin().await;
    let p = common::proxy_with_storage(BASIC, o.addr.port(), &[], 2000).await;
    for i in 0..10 {
        assert_eq!(get(p, &format!("/a{i}"), &[]).await.status, 404);
    }
    let newest = get(p, "/a9", &[]).await;
    assert_eq!(
        newest.header("x-varnish").map(|x| x.split(' ').count()),
        Some(2)
    );
    let oldest = get(p, "/a0", &[]).await;
    assert_eq!(
        oldest.header("x-varnish").map(|x| x.split(' ').count()),
        Some(1),
        "evicted"
    );
}

/// An origin that answers every connection with `reply` and closes.
async fn raw_origin(reply: &'static [u8]) -> u16 {
    raw_origin_counted(reply).await.0
}

/// Like [`raw_origin`], also counting the connections it served.
async fn raw_origin_counted(
    reply: &'static [u8],
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let c2 = count.clone();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = l.accept().await {
            c2.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(reply).await;
        }
    });
    (port, count)
}

#[tokio::test]
async fn garbage_and_truncated_backends_give_503_and_are_not_cached() {
    let garbage = raw_origin(b"THIS IS NOT HTTP\r\n\r\n").await;
    let p = proxy(BASIC, garbage, &[]).await;
    assert_eq!(get(p, "/", &[]).await.status, 503);
    let (short, fetches) = raw_origin_counted(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nCache-Control: max-age=60\r\n\r\nonly part",
    )
    .await;
    let p = proxy(BASIC, short, &[]).await;
    // Streamed: the client's connection is closed before the body's end
    // (before the head, too, when the body broke before the head went out).
    let r = get(p, "/", &[]).await;
    assert!(
        r.status == 503 || r.status == 0 || (r.status == 200 && !r.complete),
        "{}",
        r.status
    );
    // Not cached as complete: the next request fetches (and fails) again.
    let r = get(p, "/", &[]).await;
    assert!(
        r.status == 503 || r.status == 0 || (r.status == 200 && !r.complete),
        "{}",
        r.status
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 2, "fetched again");
}

#[tokio::test]
async fn admin_cli_auth_ping_ban() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let o = origin().await;
    let mut params = shellac::mgt_param::Params::default();
    params.set("default_ttl", "60").expect("param");
    let src = BASIC.replace("${port}", &o.addr.port().to_string());
    let vcl = shellac::cache_vcl::Vcl::load_source("t.vcl", &src, &params, u64::MAX)
        .await
        .expect("vcl");
    let ctx = std::sync::Arc::new(shellac::cache_req_fsm::Ctx::new(params, vcl));
    let listens = shellac::mgt_child::bind(&["127.0.0.1:0".to_string()]).expect("bind -a");
    let p = listens[0].addr;
    let child = std::sync::Arc::new(shellac::mgt_child::Child::new(ctx.clone(), listens));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(shellac::mgt_cli::serve(
        child.clone(),
        l,
        Some(b"sekrit\n".to_vec()),
    ));
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    // Reads one framed answer: "STATUS LENGTH\n" then LENGTH bytes and "\n".
    async fn answer(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> (u16, String) {
        use tokio::io::AsyncReadExt;
        let mut head = String::new();
        r.read_line(&mut head).await.expect("head");
        let mut it = head.split_whitespace();
        let status = it.next().and_then(|s| s.parse().ok()).expect("status");
        let len: usize = it.next().and_then(|s| s.parse().ok()).expect("len");
        let mut body = vec![0u8; len + 1];
        r.read_exact(&mut body).await.expect("body");
        (status, String::from_utf8_lossy(&body[..len]).into_owned())
    }
    let (st, body) = answer(&mut r).await;
    assert_eq!(st, 107);
    let challenge = body.lines().next().expect("challenge").to_string();
    let resp = shellac::mgt_cli::auth_response(&challenge, b"sekrit\n");
    w.write_all(format!("auth {resp}\n").as_bytes())
        .await
        .expect("auth");
    assert_eq!(answer(&mut r).await.0, 200);
    w.write_all(b"ping\n").await.expect("ping");
    let (st, body) = answer(&mut r).await;
    assert_eq!(st, 200);
    assert!(body.starts_with("PONG "));
    w.write_all(b"ban req.url ~ ^/\n").await.expect("ban");
    assert_eq!(answer(&mut r).await.0, 200);
    w.write_all(b"ban.list\n").await.expect("ban.list");
    let (_, body) = answer(&mut r).await;
    assert!(body.contains("req.url ~ ^/"), "{body}");
    w.write_all(b"param.show default_ttl\n")
        .await
        .expect("param.show");
    let (_, body) = answer(&mut r).await;
    assert!(body.contains("60.000 [seconds]"), "{body}");
    w.write_all(b"vcl.nope\n").await.expect("unknown");
    assert_eq!(answer(&mut r).await.0, 101);
    // vcl.inline / vcl.use: a broken VCL is refused and the running one
    // stays in service; a good one takes over after vcl.use.
    w.write_all(b"status\n").await.expect("status");
    assert_eq!(answer(&mut r).await.1, "Child in state stopped");
    w.write_all(b"start\n").await.expect("start");
    assert_eq!(answer(&mut r).await.0, 200);
    w.write_all(b"status\n").await.expect("status");
    assert_eq!(answer(&mut r).await.1, "Child in state running");
    w.write_all(b"debug.listen_address\n")
        .await
        .expect("listen");
    let (_, body) = answer(&mut r).await;
    assert_eq!(body, format!("a0 127.0.0.1 {}", p.port()));
    w.write_all(b"vcl.inline bad << EOF\nvcl 4.1;\nsub vcl_recv { nonsense }\nEOF\n")
        .await
        .expect("bad");
    assert_eq!(answer(&mut r).await.0, 106);
    assert_eq!(get(p, "/", &[]).await.status, 200);
    let good = format!(
        "vcl.inline v2 \"vcl 4.1; backend b {{ .host = \\\"127.0.0.1\\\"; .port = \\\"{}\\\"; }} sub vcl_recv {{ return (synth(299, \\\"v2\\\")); }}\"\n",
        o.addr.port()
    );
    w.write_all(good.as_bytes()).await.expect("good");
    assert_eq!(answer(&mut r).await.0, 200);
    assert_eq!(get(p, "/", &[]).await.status, 200);
    w.write_all(b"vcl.use v2\n").await.expect("use");
    assert_eq!(answer(&mut r).await.0, 200);
    assert_eq!(get(p, "/", &[]).await.status, 299);
    w.write_all(b"vcl.list\n").await.expect("list");
    let (_, body) = answer(&mut r).await;
    assert!(body.contains("active") && body.contains("v2"), "{body}");
    w.write_all(b"vcl.discard v2\n").await.expect("discard");
    assert_eq!(
        answer(&mut r).await.0,
        300,
        "active VCL cannot be discarded"
    );
    w.write_all(b"param.set default_ttl 7\n")
        .await
        .expect("set");
    assert_eq!(answer(&mut r).await.0, 200);
    assert_eq!(ctx.params().num("default_ttl"), 7.0);
    w.write_all(b"param.set no_such 7\n").await.expect("set");
    assert_eq!(answer(&mut r).await.0, 106);
    w.write_all(b"stop\n").await.expect("stop");
    assert_eq!(answer(&mut r).await.0, 200);
    w.write_all(b"status\n").await.expect("status");
    assert_eq!(answer(&mut r).await.1, "Child in state stopped");
}

/// Reads from `s` into `buf` until `needle` has arrived.
async fn read_until(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>, needle: &[u8]) {
    use tokio::io::AsyncReadExt;
    while !buf.windows(needle.len()).any(|w| w == needle) {
        let mut b = [0u8; 4096];
        let n = s.read(&mut b).await.expect("read");
        assert!(n > 0, "closed before {:?}", String::from_utf8_lossy(needle));
        buf.extend_from_slice(&b[..n]);
    }
}

#[tokio::test]
async fn bodies_stream_to_every_client_while_fetched() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The origin sends half a body, then waits for the test's go-ahead.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    let go2 = go.clone();
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let f2 = fetches.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            f2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nCache-Control: max-age=60\r\n\r\nhello")
                .await;
            go2.notified().await;
            let _ = s.write_all(b"world").await;
        }
    });
    let p = proxy(BASIC, port, &[]).await;
    let req = b"GET /s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    let mut a = tokio::net::TcpStream::connect(p).await.expect("connect");
    a.write_all(req).await.expect("write");
    let mut abuf = Vec::new();
    read_until(&mut a, &mut abuf, b"hello").await;
    // A second client finds the object while it is still arriving.
    let mut b = tokio::net::TcpStream::connect(p).await.expect("connect");
    b.write_all(req).await.expect("write");
    let mut bbuf = Vec::new();
    read_until(&mut b, &mut bbuf, b"hello").await;
    go.notify_one();
    a.read_to_end(&mut abuf).await.expect("read a");
    b.read_to_end(&mut bbuf).await.expect("read b");
    for buf in [abuf, bbuf] {
        let r = common::parse(&buf);
        assert_eq!(r.status, 200);
        assert!(r.complete);
        assert_eq!(r.body, "helloworld");
    }
    assert_eq!(
        fetches.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one fetch"
    );
    // Complete now: a hit with a Content-Length.
    let r = get(p, "/s", &[]).await;
    assert_eq!(r.body, "helloworld", "{:?}", r.headers);
    assert_eq!(r.header("content-length"), Some("10"));
}

/// An origin answering by path from `pages` (path, body), counting fetches.
async fn page_origin(
    pages: &'static [(&'static str, &'static str)],
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let c2 = count.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let c3 = c2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut b = [0u8; 4096];
                    let Ok(n) = s.read(&mut b).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&b[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        c3.fetch_add(1, Ordering::SeqCst);
                        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                        let body = pages
                            .iter()
                            .find(|(p, _)| *p == path)
                            .map_or("missing", |(_, b)| *b);
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nCache-Control: max-age=60\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, count)
}

#[tokio::test]
async fn nested_esi_with_cached_and_passed_fragments() {
    const PAGES: &[(&str, &str)] = &[
        ("/", "<html><esi:include src=\"/cached\"/>|<esi:include src=\"pass\"/><esi:remove>gone</esi:remove></html>"),
        ("/cached", "<c><esi:include src=\"/leaf\"/></c>"),
        ("/pass", "<p>passed</p>"),
        ("/leaf", "leaf"),
    ];
    let (port, fetches) = page_origin(PAGES).await;
    let vcl = r#"vcl 4.1;
backend default { .host = "127.0.0.1"; .port = "${port}"; }
sub vcl_recv { if (req.url == "/pass") { return (pass); } }
sub vcl_backend_response { set beresp.do_esi = true; }
sub vcl_deliver { set resp.http.level = req.esi_level; }
"#;
    let p = proxy(vcl, port, &[]).await;
    let want = "<html><c>leaf</c>|<p>passed</p></html>";
    let r = get(p, "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, want);
    assert_eq!(r.header("level"), Some("0"));
    assert_eq!(fetches.load(Ordering::SeqCst), 4);
    // Again: the page and the cacheable fragments are hits, the passed
    // fragment is fetched anew.
    let r = get(p, "/", &[]).await;
    assert_eq!(r.body, want);
    assert_eq!(fetches.load(Ordering::SeqCst), 5);
    // max_esi_depth=1: the second level of includes is left out.
    let p = proxy(vcl, port, &["max_esi_depth=1"]).await;
    assert_eq!(
        get(p, "/", &[]).await.body,
        "<html><c></c>|<p>passed</p></html>"
    );
}

#[tokio::test]
async fn gzipped_objects_serve_gzip_and_plain_clients() {
    const PAGES: &[(&str, &str)] = &[("/z", "hello, compressible hello")];
    let (port, fetches) = page_origin(PAGES).await;
    let vcl = r#"vcl 4.1;
backend default { .host = "127.0.0.1"; .port = "${port}"; }
sub vcl_backend_response { set beresp.do_gzip = true; }
"#;
    let p = proxy(vcl, port, &[]).await;
    let z = get(p, "/z", &[("Accept-Encoding", "gzip, deflate")]).await;
    assert_eq!(z.status, 200);
    assert_eq!(z.header("content-encoding"), Some("gzip"));
    assert!(z
        .header("vary")
        .is_some_and(|v| v.contains("Accept-Encoding")));
    // With http_gzip_support `Vary: Accept-Encoding` does not split the
    // object (varnishd skips it when matching): the plain client gets the
    // same gzipped object, gunzipped on delivery (with its length).
    for _ in 0..2 {
        let plain = get(p, "/z", &[("Accept-Encoding", "br")]).await;
        assert_eq!(plain.header("content-encoding"), None);
        assert_eq!(plain.header("content-length"), Some("25"));
        assert_eq!(plain.body, "hello, compressible hello");
        assert_eq!(
            plain.header("x-varnish").map(|x| x.split(' ').count()),
            Some(2)
        );
    }
    let z = get(p, "/z", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(z.header("x-varnish").map(|x| x.split(' ').count()), Some(2));
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn ranges_on_cached_objects() {
    const PAGES: &[(&str, &str)] = &[("/r", "0123456789")];
    let (port, _) = page_origin(PAGES).await;
    let p = proxy(BASIC, port, &[]).await;
    assert_eq!(get(p, "/r", &[]).await.body, "0123456789");
    let r = get(p, "/r", &[("Range", "bytes=2-4")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, "234");
    assert_eq!(r.header("content-range"), Some("bytes 2-4/10"));
    let r = get(p, "/r", &[("Range", "bytes=-3")]).await;
    assert_eq!((r.status, r.body.as_str()), (206, "789"));
    let r = get(p, "/r", &[("Range", "bytes=10-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */10"));
    // Several ranges, or a malformed one: 416, as varnishd answers.
    for bad in ["bytes=0-1,3-4", "bytes = 0-1", "bytes=-0", "lines=1-2"] {
        let r = get(p, "/r", &[("Range", bad)]).await;
        assert_eq!(
            (r.status, r.header("content-range")),
            (416, Some("bytes */10"))
        );
    }
    // A range the object cannot be known to cover yet is not one either:
    // past the end is cut to the end.
    let r = get(p, "/r", &[("Range", "bytes=8-100")]).await;
    assert_eq!((r.status, r.body.as_str()), (206, "89"));
}

/// `feature=+esi_include_onerror`: a fragment whose fetch breaks off
/// while it streams aborts the page (the connection closes without the
/// rest), unless its include says `onerror="continue"`.
#[tokio::test]
async fn esi_include_onerror_aborts_or_continues() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    let go2 = go.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let go3 = go2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut b = [0u8; 4096];
                    let Ok(n) = s.read(&mut b).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&b[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let page = match path.as_str() {
                        "/abort" => "<p><esi:include src=\"/broken\"/>|after</p>",
                        "/cont" => {
                            "<p><esi:include src=\"/broken\" onerror=\"continue\"/>|after</p>"
                        }
                        _ => {
                            // Part of a body, then (when told) nothing more.
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nCache-Control: max-age=0\r\n\r\nhel")
                                .await;
                            go3.notified().await;
                            return;
                        }
                    };
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{page}",
                        page.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let vcl = r#"vcl 4.1;
backend default { .host = "127.0.0.1"; .port = "${port}"; }
sub vcl_backend_response { if (bereq.url != "/broken") { set beresp.do_esi = true; } }
"#;
    let p = proxy(vcl, port, &["feature=+esi_include_onerror"]).await;
    for (url, whole) in [("/abort", false), ("/cont", true)] {
        let mut c = tokio::net::TcpStream::connect(p).await.expect("connect");
        c.write_all(
            format!("GET {url} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut buf = Vec::new();
        read_until(&mut c, &mut buf, b"hel").await;
        go.notify_one();
        let _ = c.read_to_end(&mut buf).await;
        let r = common::parse(&buf);
        assert_eq!(r.status, 200);
        assert_eq!(r.complete, whole, "{url}: {:?}", r.body);
        assert_eq!(r.body.contains("|after</p>"), whole, "{url}: {:?}", r.body);
    }
}
