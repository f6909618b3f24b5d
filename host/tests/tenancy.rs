//! Several VCLs in one process: reloads under way, VCL states, tenants
//! and their isolation, quotas, the admin interfaces. The proxy runs
//! in-process with its admin CLI on a real socket; requests go over real
//! sockets to an in-process origin.

mod common;

use common::{get, origin};
use shellac::cache_req_fsm::Ctx;
use shellac::cache_vcl::Vcl;
use shellac::mgt_child::Child;
use shellac::mgt_param::Params;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Tests that count compilations (process-wide counters) run alone; the
/// others share this lock and may run together.
static COMPILES: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A proxy with its admin CLI.
struct Proxy {
    ctx: Arc<Ctx>,
    addr: SocketAddr,
    cli: SocketAddr,
}

/// Starts a proxy on `vcl` (`${port}` is the origin's port) with
/// parameters `params` and a `-s malloc` budget of `storage` bytes.
async fn proxy(vcl: &str, port: u16, params: &[&str], storage: u64) -> Proxy {
    let mut p = Params::default();
    for a in params {
        p.set_arg(a).expect("param");
    }
    let src = vcl.replace("${port}", &port.to_string());
    let vcl = Vcl::load_source("boot.vcl", &src, &p, storage)
        .await
        .expect("load VCL");
    let ctx = Arc::new(Ctx::new(p, vcl));
    let listens = shellac::mgt_child::bind(&["127.0.0.1:0".to_string()]).expect("bind -a");
    let addr = listens[0].addr;
    let child = Arc::new(Child::new(ctx.clone(), listens));
    child.start().expect("start");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind cli");
    let cli = l.local_addr().expect("cli addr");
    tokio::spawn(shellac::mgt_cli::serve(child, l, None));
    Proxy { ctx, addr, cli }
}

impl Proxy {
    /// Runs one CLI command on a fresh connection: (status, body).
    async fn cli(&self, cmd: &str) -> (u16, String) {
        let s = tokio::net::TcpStream::connect(self.cli)
            .await
            .expect("connect cli");
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let _banner = answer(&mut r).await;
        w.write_all(cmd.as_bytes()).await.expect("write");
        w.write_all(b"\n").await.expect("write");
        answer(&mut r).await
    }

    /// A CLI command that must succeed; its body.
    async fn ok(&self, cmd: &str) -> String {
        let (st, body) = self.cli(cmd).await;
        assert_eq!(st, 200, "{cmd}: {body}");
        body
    }
}

async fn answer(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> (u16, String) {
    let mut head = String::new();
    r.read_line(&mut head).await.expect("head");
    let mut it = head.split_whitespace();
    let status = it.next().and_then(|s| s.parse().ok()).expect("status");
    let len: usize = it.next().and_then(|s| s.parse().ok()).expect("len");
    let mut body = vec![0u8; len + 1];
    r.read_exact(&mut body).await.expect("body");
    (status, String::from_utf8_lossy(&body[..len]).into_owned())
}

/// A VCL naming itself in `X-Vcl`, in front of the origin.
fn vcl_named(me: &str, port: u16) -> String {
    format!(
        "vcl 4.1; backend o {{ .host = \"127.0.0.1\"; .port = \"{port}\"; }} \
         sub vcl_deliver {{ set resp.http.X-Vcl = \"{me}\"; }}"
    )
}

/// The busy count `vcl.list` shows for `name`.
async fn busy(p: &Proxy, name: &str) -> usize {
    let list = p.ok("vcl.list").await;
    list.lines()
        .find(|l| l.split_whitespace().nth(4) == Some(name))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|b| b.parse().ok())
        .unwrap_or(usize::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vcl_use_swaps_while_requests_finish_on_their_vcl() {
    let _shared = COMPILES.read().await;
    let o = origin().await;
    let port = o.addr.port();
    let p = proxy(&vcl_named("one", port), port, &[], u64::MAX).await;
    p.ok(&format!(
        "vcl.inline two \"{}\"",
        vcl_named("two", port).replace('"', "\\\"")
    ))
    .await;
    // A slow request starts on boot ...
    let addr = p.addr;
    let slow = tokio::spawn(async move { get(addr, "/slow", &[]).await });
    // ... and holds it until it is done (vcl.list's busy count).
    let mut tries = 0;
    while busy(&p, "boot").await == 0 {
        tries += 1;
        assert!(tries < 200, "the slow request never held boot");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(p.ok("vcl.use two").await, "VCL 'two' now active");
    // New requests run on two at once.
    let r = get(p.addr, "/echo", &[]).await;
    assert_eq!(r.header("x-vcl"), Some("two"));
    // The request in flight finishes on the VCL it began with.
    let r = slow.await.expect("slow request");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-vcl"), Some("one"));
    // Its fetch lets go of it when it is done too.
    let mut tries = 0;
    while busy(&p, "boot").await != 0 {
        tries += 1;
        assert!(tries < 200, "boot stays busy");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_unchanged_vcl_compiles_nothing_and_keeps_the_cache() {
    let _alone = COMPILES.write().await;
    use shellac::cache_vcl::{MODULES_COMPILED, MODULES_REUSED};
    let o = origin().await;
    let port = o.addr.port();
    let src = vcl_named("one", port);
    let p = proxy(&src, port, &[], u64::MAX).await;
    let r = get(p.addr, "/", &[]).await;
    assert_eq!(r.status, 200);
    let fetched = o.hits.load(Ordering::Relaxed);
    let (compiled, reused) = (
        MODULES_COMPILED.load(Ordering::Relaxed),
        MODULES_REUSED.load(Ordering::Relaxed),
    );
    // The same VCL again, under another name: no machine code compiled.
    p.ok(&format!(
        "vcl.inline again \"{}\"",
        src.replace('"', "\\\"")
    ))
    .await;
    assert_eq!(MODULES_COMPILED.load(Ordering::Relaxed), compiled);
    assert_eq!(MODULES_REUSED.load(Ordering::Relaxed), reused + 1);
    p.ok("vcl.use again").await;
    // The cache survives the reload: a hit, the origin not asked again.
    let r = get(p.addr, "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-varnish").map(|x| x.split(' ').count()),
        Some(2),
        "not a hit after the reload"
    );
    assert_eq!(o.hits.load(Ordering::Relaxed), fetched);
    // A changed VCL is compiled.
    p.ok(&format!(
        "vcl.inline changed \"{}\"",
        vcl_named("two", port).replace('"', "\\\"")
    ))
    .await;
    assert_eq!(MODULES_COMPILED.load(Ordering::Relaxed), compiled + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_vcl_lets_go_of_instances_and_stops_probing() {
    let _shared = COMPILES.read().await;
    let o = origin().await;
    let port = o.addr.port();
    let p = proxy(&vcl_named("one", port), port, &[], u64::MAX).await;
    let probed = format!(
        "vcl 4.1; backend o {{ .host = \"127.0.0.1\"; .port = \"{port}\"; \
         .probe = {{ .url = \"/nocache\"; .interval = 20ms; .initial = 3; }} }}"
    );
    p.ok(&format!(
        "vcl.inline probed \"{}\"",
        probed.replace('"', "\\\"")
    ))
    .await;
    p.ok("vcl.use probed").await;
    assert_eq!(get(p.addr, "/echo", &[]).await.status, 200);
    let v = p.ctx.vcl_named("probed").expect("probed is loaded");
    assert!(v.pooled() > 0, "no warm instance kept");
    // Probes are running: the origin sees them.
    let h0 = o.hits.load(Ordering::Relaxed);
    let mut tries = 0;
    while o.hits.load(Ordering::Relaxed) < h0 + 3 {
        tries += 1;
        assert!(tries < 200, "no probes");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    p.ok("vcl.use boot").await;
    p.ok("vcl.state probed cold").await;
    assert!(v.is_cold());
    assert_eq!(v.pooled(), 0, "a cold VCL keeps no instances");
    let list = p.ok("vcl.list").await;
    let row: Vec<&str> = list
        .lines()
        .find(|l| l.contains("probed"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(row.get(1..3), Some(&["cold", "cold"][..]), "{list}");
    // A probe under way may still finish; then none start.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let h1 = o.hits.load(Ordering::Relaxed);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        o.hits.load(Ordering::Relaxed),
        h1,
        "a cold VCL still probes"
    );
    // Warm again: probes start over, and it can serve.
    p.ok("vcl.state probed warm").await;
    let mut tries = 0;
    while o.hits.load(Ordering::Relaxed) < h1 + 2 {
        tries += 1;
        assert!(tries < 200, "no probes after warming");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    p.ok("vcl.use probed").await;
    assert_eq!(get(p.addr, "/echo", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_load_leaves_everything_in_service() {
    let _shared = COMPILES.read().await;
    let o = origin().await;
    let port = o.addr.port();
    let p = proxy(&vcl_named("one", port), port, &[], u64::MAX).await;
    let (st, body) = p
        .cli("vcl.inline broken \"vcl 4.1; backend b none; sub vcl_recv { nonsense; }\"")
        .await;
    assert_eq!(st, 106);
    assert!(body.contains("Symbol not found: 'nonsense'"), "{body}");
    assert!(body.contains("VCL compilation failed"), "{body}");
    // A vcl_init that fails: explained, not loaded.
    let (st, body) = p
        .cli("vcl.inline badinit \"vcl 4.1; backend b none; sub vcl_init { return (fail); }\"")
        .await;
    assert_eq!(st, 106, "{body}");
    assert!(!p.ok("vcl.list").await.contains("badinit"));
    assert!(!p.ok("vcl.list").await.contains("broken"));
    let r = get(p.addr, "/echo", &[]).await;
    assert_eq!(r.header("x-vcl"), Some("one"));
    // Active or labelled VCLs are not discarded.
    assert_eq!(p.cli("vcl.discard boot").await.0, 300);
    p.ok(&format!(
        "vcl.inline two \"{}\"",
        vcl_named("two", port).replace('"', "\\\"")
    ))
    .await;
    p.ok("vcl.label lab two").await;
    let (st, body) = p.cli("vcl.discard two").await;
    assert_eq!(st, 300);
    assert!(
        body.contains("Cannot discard labeled VCL program two"),
        "{body}"
    );
}

/// A tenant VCL (purge and ban by method) behind a router that sends
/// `Host: a…` to label `la`, `Host: b…` to label `lb` (both naming the
/// same program and declared tenants, so only the tenant tells them
/// apart), anything else to the default tenant.
async fn tenants(port: u16) -> Proxy {
    tenants_in(port, u64::MAX).await
}

/// [`tenants`] with a `-s malloc` budget of `storage` bytes.
async fn tenants_in(port: u16, storage: u64) -> Proxy {
    let tenant_vcl = format!(
        "vcl 4.1; import std; backend o {{ .host = \"127.0.0.1\"; .port = \"{port}\"; }} \
         sub vcl_recv {{ \
           if (req.method == \"POST\") {{ std.cache_req_body(1MB); }} \
           if (req.method == \"PURGE\") {{ return (purge); }} \
           if (req.method == \"BAN\") {{ ban(\"req.url == \" + req.url); return (synth(200, \"banned\")); }} \
           if (req.http.x-burn) {{ \
             if (req.http.x-burn ~ \"(*NO_START_OPT)(*NO_JIT)a*a*a*c\") {{ }} \
           }} \
         }} \
         sub vcl_deliver {{ set resp.http.X-Hit = obj.hits; }}"
    );
    // The CPU quota test's regex backtracks for milliseconds: more
    // steps than Varnish's default pcre2_match_limit allows.
    let p = proxy(&tenant_vcl, port, &["pcre2_match_limit=10000000"], storage).await;
    p.ok("vcl.label la boot").await;
    p.ok("vcl.label lb boot").await;
    p.ok("tenant.add la").await;
    p.ok("tenant.add lb").await;
    let router = format!(
        "vcl 4.1; backend o {{ .host = \"127.0.0.1\"; .port = \"{port}\"; }} \
         sub vcl_recv {{ \
           if (req.http.host ~ \"^a\") {{ return (vcl(la)); }} \
           if (req.http.host ~ \"^b\") {{ return (vcl(lb)); }} \
         }}"
    );
    p.ok(&format!(
        "vcl.inline router \"{}\"",
        router.replace('"', "\\\"")
    ))
    .await;
    p.ok("vcl.use router").await;
    p
}

/// A request with method `method` and `Host: host`.
async fn req(p: &Proxy, method: &str, host: &str, path: &str) -> common::Resp {
    let r = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    common::raw(p.addr, r.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_with_identical_urls_never_share_objects() {
    let _shared = COMPILES.read().await;
    let o = origin().await;
    let p = tenants(o.addr.port()).await;
    let a1 = req(&p, "GET", "a.example", "/echo").await;
    let b1 = req(&p, "GET", "b.example", "/echo").await;
    let d1 = req(&p, "GET", "c.example", "/echo").await;
    // Three tenants, three fetches of the same URL.
    assert_eq!(o.hits.load(Ordering::Relaxed), 3);
    assert_ne!(a1.body, b1.body);
    assert_ne!(b1.body, d1.body);
    assert_eq!(a1.header("x-hit"), Some("0"));
    assert_eq!(b1.header("x-hit"), Some("0"));
    // Each hits its own object.
    let a2 = req(&p, "GET", "a.example", "/echo").await;
    let b2 = req(&p, "GET", "b.example", "/echo").await;
    let d2 = req(&p, "GET", "c.example", "/echo").await;
    assert_eq!((a2.header("x-hit"), &a2.body), (Some("1"), &a1.body));
    assert_eq!((b2.header("x-hit"), &b2.body), (Some("1"), &b1.body));
    assert_eq!(d2.body, d1.body);
    assert_eq!(o.hits.load(Ordering::Relaxed), 3);
    let list = p.ok("tenant.list").await;
    assert!(list.contains("la->boot"), "{list}");
    let json: serde_json::Value =
        serde_json::from_str(&p.ok("tenant.list -j").await).expect("tenant.list -j is JSON");
    let objects = |name: &str| {
        json.as_array()
            .and_then(|a| a.iter().find(|t| t["name"] == name))
            .map(|t| t["objects"].as_u64().unwrap_or(0))
    };
    assert_eq!(objects("la"), Some(1));
    assert_eq!(objects("lb"), Some(1));
    assert_eq!(objects("*"), Some(1));
    // Reloading one tenant: its label moves to a new VCL, its cache stays.
    let port = o.addr.port();
    let v2 = format!(
        "vcl 4.1; backend o {{ .host = \"127.0.0.1\"; .port = \"{port}\"; }} \
         sub vcl_deliver {{ set resp.http.X-Hit = obj.hits; set resp.http.X-V = \"2\"; }}"
    );
    p.ok(&format!("vcl.inline v2 \"{}\"", v2.replace('"', "\\\"")))
        .await;
    p.ok("vcl.label la v2").await;
    let a3 = req(&p, "GET", "a.example", "/echo").await;
    assert_eq!(a3.header("x-v"), Some("2"));
    assert_eq!((a3.header("x-hit"), &a3.body), (Some("2"), &a1.body));
    assert_eq!(o.hits.load(Ordering::Relaxed), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_and_purge_in_one_tenant_leave_the_others_objects() {
    let _shared = COMPILES.read().await;
    let o = origin().await;
    let p = tenants(o.addr.port()).await;
    for h in ["a", "b", "c"] {
        assert_eq!(req(&p, "GET", h, "/echo").await.status, 200);
        assert_eq!(req(&p, "GET", h, "/").await.status, 200);
    }
    let fetched = o.hits.load(Ordering::Relaxed);
    // A purge in a: a fetches /echo again, b and the default tenant hit.
    assert_eq!(req(&p, "PURGE", "a", "/echo").await.status, 200);
    assert_eq!(
        req(&p, "GET", "b", "/echo").await.header("x-hit"),
        Some("1")
    );
    assert_eq!(req(&p, "GET", "c", "/echo").await.status, 200);
    assert_eq!(o.hits.load(Ordering::Relaxed), fetched);
    assert_eq!(
        req(&p, "GET", "a", "/echo").await.header("x-hit"),
        Some("0")
    );
    assert_eq!(o.hits.load(Ordering::Relaxed), fetched + 1);
    // A ban from b's VCL: b's / goes, a's stays.
    assert_eq!(req(&p, "BAN", "b", "/").await.status, 200);
    assert_eq!(req(&p, "GET", "a", "/").await.header("x-hit"), Some("1"));
    assert_eq!(req(&p, "GET", "b", "/").await.header("x-hit"), Some("0"));
    assert_eq!(o.hits.load(Ordering::Relaxed), fetched + 2);
    // A ban from the CLI into one tenant; `ban` itself reaches every
    // tenant (the operator owns the whole cache).
    p.ok("tenant.ban la req.url ~ /echo").await;
    assert_eq!(
        req(&p, "GET", "b", "/echo").await.header("x-hit"),
        Some("2")
    );
    assert_eq!(
        req(&p, "GET", "a", "/echo").await.header("x-hit"),
        Some("0")
    );
    p.ok("ban req.url ~ ^/$").await;
    let fetched = o.hits.load(Ordering::Relaxed);
    for h in ["a", "b"] {
        assert_eq!(req(&p, "GET", h, "/").await.header("x-hit"), Some("0"));
    }
    assert_eq!(req(&p, "GET", "c", "/").await.status, 200);
    assert_eq!(o.hits.load(Ordering::Relaxed), fetched + 3);
    assert_eq!(req(&p, "GET", "a", "/").await.header("x-hit"), Some("1"));
    // Objects the ban does not match stay, in every tenant.
    assert_eq!(
        req(&p, "GET", "b", "/echo").await.header("x-hit"),
        Some("3")
    );
    assert_eq!(o.hits.load(Ordering::Relaxed), fetched + 3);
    // Each tenant lists the CLI's ban.
    for t in p.ctx.tenants.all() {
        let bans = t.cache.ban_list();
        assert!(bans.iter().any(|b| b.text == "req.url ~ ^/$"), "{}", t.name);
    }
    assert_eq!(p.cli("tenant.ban nosuch req.url ~ /").await.0, 106);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_flooding_its_quota_evicts_only_its_own_objects() {
    let _shared = COMPILES.read().await;
    let o = origin().await;
    let p = tenants(o.addr.port()).await;
    p.ok("tenant.quota la cache_bytes=64k").await;
    assert!(p.ok("tenant.quota la").await.contains("cache_bytes=65536"));
    // b and the default tenant cache something first.
    assert_eq!(req(&p, "GET", "b", "/bytes/5000").await.status, 200);
    assert_eq!(req(&p, "GET", "c", "/bytes/5000").await.status, 200);
    // a floods: 100 objects of 2-3 KB, four times its quota.
    for i in 0..100 {
        let r = req(&p, "GET", "a", &format!("/bytes/{}", 2000 + i)).await;
        assert_eq!(r.status, 200);
    }
    let la = p.ctx.tenants.get("la").expect("la is a tenant");
    let lb = p.ctx.tenants.get("lb").expect("lb is a tenant");
    assert!(la.cache.used() <= 64 << 10, "{} bytes", la.cache.used());
    assert!(la.cache.nuked() > 50, "{} evictions", la.cache.nuked());
    assert_eq!(lb.cache.nuked(), 0);
    assert_eq!(p.ctx.default_tenant.cache.nuked(), 0);
    // The others' objects are still there.
    assert_eq!(
        req(&p, "GET", "b", "/bytes/5000").await.header("x-hit"),
        Some("1")
    );
    assert_eq!(req(&p, "GET", "c", "/bytes/5000").await.status, 200);
    assert_eq!(p.ctx.default_tenant.cache.objects_held(), 1);
    // a's newest objects are there, its oldest went.
    assert_eq!(
        req(&p, "GET", "a", "/bytes/2099").await.header("x-hit"),
        Some("1")
    );
    assert_eq!(
        req(&p, "GET", "a", "/bytes/2000").await.header("x-hit"),
        Some("0")
    );
    // Bad quotas are refused with a reason.
    let (st, body) = p.cli("tenant.quota la cache_bytes=lots").await;
    assert_eq!(st, 106, "{body}");
    assert_eq!(p.cli("tenant.quota la colour=blue").await.0, 106);
    assert_eq!(p.cli("tenant.quota 9bad cpu_ms=1").await.0, 106);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_and_connection_quotas_fail_only_their_tenant() {
    let _shared = COMPILES.read().await;
    let o = origin().await;
    let p = tenants(o.addr.port()).await;
    p.ok("tenant.quota la cpu_ms=5 backend_conns=1").await;
    // Regex backtracking over a long header: well over the 5 ms quota,
    // well under the 100 ms per call every VCL has.
    let burn = format!(
        "GET /echo HTTP/1.1\r\nHost: {{}}\r\nX-Burn: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(150)
    );
    let burn_in = |h: &str| burn.replace("{}", h);
    let r = common::raw(p.addr, burn_in("a").as_bytes()).await;
    assert_eq!(r.status, 503);
    let r = common::raw(p.addr, burn_in("b").as_bytes()).await;
    assert_eq!(r.status, 200);
    let la = p.ctx.tenants.get("la").expect("la");
    assert!(la.cpu_503.load(Ordering::Relaxed) >= 1);
    assert_eq!(
        p.ctx
            .tenants
            .get("lb")
            .map(|t| t.cpu_503.load(Ordering::Relaxed)),
        Some(0)
    );
    // Waiting for a slow client's body is not CPU time.
    let mut s = tokio::net::TcpStream::connect(p.addr)
        .await
        .expect("connect");
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    s.write_all(b"hello").await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    assert_eq!(common::parse(&out).status, 200);
    // One backend connection for a: a second fetch while a slow one
    // holds it fails; b fetches meanwhile.
    let addr = p.addr;
    let slow = tokio::spawn(async move {
        common::raw(
            addr,
            b"GET /slow?1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await
    });
    let mut tries = 0;
    while la.conns() == 0 {
        tries += 1;
        assert!(tries < 200, "the slow fetch never held a connection");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert_eq!(req(&p, "GET", "a", "/slow?2").await.status, 503);
    assert_eq!(req(&p, "GET", "b", "/slow?3").await.status, 200);
    assert_eq!(slow.await.expect("slow").status, 200);
    assert!(la.conns_refused.load(Ordering::Relaxed) >= 1);
}

/// One HTTP request to `addr`: (status, body).
async fn http(addr: SocketAddr, req: String) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let r = common::parse(&out);
    (r.status, r.body)
}

/// Another admin interface on `p`'s cache: a child of its own and a
/// listener with its address, for the test to serve a protocol on.
async fn admin_listener(p: &Proxy) -> (Arc<Child>, tokio::net::TcpListener, SocketAddr) {
    let listens = shellac::mgt_child::bind(&["127.0.0.1:0".to_string()]).expect("bind");
    let child = Arc::new(Child::new(p.ctx.clone(), listens));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    (child, l, addr)
}

fn post_cli(body: &str, token: Option<&str>) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "POST /cli HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_admin_api_runs_cli_verbs_behind_the_token() {
    let _shared = COMPILES.read().await;
    let o = origin().await;
    let p = proxy(
        &vcl_named("one", o.addr.port()),
        o.addr.port(),
        &[],
        u64::MAX,
    )
    .await;
    let (child, l, admin) = admin_listener(&p).await;
    let secret = b"the secret\n".to_vec();
    tokio::spawn(shellac::mgt_http::serve(
        child,
        l,
        Some(secret.clone()),
        false,
    ));
    let token = shellac::mgt_auth::http_token(&secret);
    // The token works; the answer is the CLI's.
    let (st, body) = http(admin, post_cli(r#"{"command": "vcl.list"}"#, Some(&token))).await;
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["status"], 200);
    assert!(v["text"].as_str().unwrap_or("").contains("boot"), "{body}");
    // Same verbs as the CLI, with its refusals.
    let vcl = vcl_named("two", o.addr.port());
    let argv = serde_json::json!({ "argv": ["vcl.inline", "two", vcl] }).to_string();
    let (_, body) = http(admin, post_cli(&argv, Some(&token))).await;
    assert!(body.contains("\"status\":200"), "{body}");
    let (_, body) = http(
        admin,
        post_cli(r#"{"command":"vcl.use nosuch"}"#, Some(&token)),
    )
    .await;
    assert!(body.contains("\"status\":106"), "{body}");
    let (_, body) = http(
        admin,
        post_cli(r#"{"command":"vcl.use two"}"#, Some(&token)),
    )
    .await;
    assert!(body.contains("\"status\":200"), "{body}");
    assert_eq!(get(p.addr, "/echo", &[]).await.header("x-vcl"), Some("two"));
    // The tenants' numbers are in /metrics, behind the token too, as
    // are /stats and /log.
    let read = |path: &str, token: Option<&str>| {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")
    };
    let (st, body) = http(admin, read("/metrics", Some(&token))).await;
    assert_eq!(st, 200);
    assert!(
        body.contains("shellac_tenant_objects{tenant=\"*\"} "),
        "{body}"
    );
    for path in ["/metrics", "/stats", "/log?follow=0"] {
        let (st, body) = http(admin, read(path, None)).await;
        assert_eq!(
            (st, body.as_str()),
            (401, r#"{"error":"authentication required"}"#),
            "{path}"
        );
    }
    // The right token clears those failures.
    let (st, _) = http(admin, read("/stats", Some(&token))).await;
    assert_eq!(st, 200);
    // The operator may open the readers' paths (never /cli).
    let (child, l, open) = admin_listener(&p).await;
    tokio::spawn(shellac::mgt_http::serve(
        child,
        l,
        Some(secret.clone()),
        true,
    ));
    let (st, body) = http(open, read("/metrics", None)).await;
    assert_eq!(st, 200);
    assert!(body.contains("shellac_tenant_objects"), "{body}");
    let (st, _) = http(open, post_cli(r#"{"command":"ping"}"#, None)).await;
    assert_eq!(st, 401);
    // Wrong or missing credentials: only the auth error, nothing run.
    let (st, body) = http(admin, post_cli(r#"{"command":"vcl.use boot"}"#, None)).await;
    assert_eq!(
        (st, body.as_str()),
        (401, r#"{"error":"authentication required"}"#)
    );
    for _ in 0..4 {
        let (st, _) = http(
            admin,
            post_cli(r#"{"command":"vcl.use boot"}"#, Some("guess")),
        )
        .await;
        assert_eq!(st, 401);
    }
    assert_eq!(get(p.addr, "/echo", &[]).await.header("x-vcl"), Some("two"));
    // Past five failures the address is locked out, right token or not.
    let (st, _) = http(admin, post_cli(r#"{"command":"ping"}"#, Some("guess"))).await;
    assert_eq!(st, 401);
    let (st, body) = http(admin, post_cli(r#"{"command":"ping"}"#, Some(&token))).await;
    assert_eq!(st, 429, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_auth_failures_are_rate_limited() {
    let _shared = COMPILES.read().await;
    let o = origin().await;
    let p = proxy(
        &vcl_named("one", o.addr.port()),
        o.addr.port(),
        &[],
        u64::MAX,
    )
    .await;
    let (child, l, cli) = admin_listener(&p).await;
    let secret = b"s\n".to_vec();
    tokio::spawn(shellac::mgt_cli::serve(child, l, Some(secret.clone())));
    // One session: (status of the banner, status after `auth`).
    let attempt = |right: bool| {
        let secret = secret.clone();
        async move {
            let s = tokio::net::TcpStream::connect(cli).await.expect("connect");
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            let (st, banner) = answer(&mut r).await;
            assert_eq!(st, 107);
            let ch = banner.lines().next().unwrap_or("").to_string();
            let resp = if right {
                shellac::mgt_cli::auth_response(&ch, &secret)
            } else {
                "0".repeat(64)
            };
            w.write_all(format!("auth {resp}\nping\n").as_bytes())
                .await
                .expect("write");
            answer(&mut r).await.0
        }
    };
    assert_eq!(attempt(true).await, 200);
    for _ in 0..6 {
        assert_eq!(attempt(false).await, 300);
    }
    // Locked out: the right answer is refused too, for now.
    assert_eq!(attempt(true).await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_quota_fails_only_its_tenant() {
    let _shared = COMPILES.read().await;
    let o = origin().await;
    let p = tenants(o.addr.port()).await;
    assert_eq!(req(&p, "GET", "a", "/echo").await.status, 200);
    // Less than one wasm page: no VCL instance fits.
    p.ok("tenant.quota la wasm_memory=1k").await;
    assert_eq!(req(&p, "GET", "a", "/echo").await.status, 503);
    assert_eq!(req(&p, "GET", "b", "/echo").await.status, 200);
    assert_eq!(req(&p, "GET", "c", "/echo").await.status, 200);
    // Room enough: served again, from the same instances.
    p.ok("tenant.quota la wasm_memory=64m").await;
    assert_eq!(req(&p, "GET", "a", "/echo").await.status, 200);
    p.ok("tenant.quota la wasm_memory=none").await;
    assert_eq!(req(&p, "GET", "a", "/echo").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quotas_the_flooding_tenant_pays_for_the_shared_storage() {
    let _shared = COMPILES.read().await;
    let o = origin().await;
    // -s malloc,64k for all tenants together, no quotas.
    let p = tenants_in(o.addr.port(), 64 << 10).await;
    assert_eq!(req(&p, "GET", "b", "/bytes/5000").await.status, 200);
    assert_eq!(req(&p, "GET", "c", "/bytes/5000").await.status, 200);
    for i in 0..100 {
        assert_eq!(
            req(&p, "GET", "a", &format!("/bytes/{}", 2000 + i))
                .await
                .status,
            200
        );
    }
    let la = p.ctx.tenants.get("la").expect("la");
    let lb = p.ctx.tenants.get("lb").expect("lb");
    let total: u64 = p.ctx.tenants.all().iter().map(|t| t.cache.used()).sum();
    assert!(total <= 64 << 10, "{total} bytes in all");
    assert!(la.cache.nuked() > 50, "{} evictions", la.cache.nuked());
    assert_eq!(lb.cache.nuked(), 0);
    assert_eq!(p.ctx.default_tenant.cache.nuked(), 0);
    assert_eq!(
        req(&p, "GET", "b", "/bytes/5000").await.header("x-hit"),
        Some("1")
    );
    assert_eq!(p.ctx.default_tenant.cache.objects_held(), 1);
}

/// An origin that answers `/gate…` only once `open` is notified (one
/// response per notification) and anything else at once.
async fn gated_origin() -> (SocketAddr, Arc<tokio::sync::Semaphore>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let open = Arc::new(tokio::sync::Semaphore::new(0));
    let gate = open.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let gate = gate.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(s);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let gated = line.contains(" /gate");
                    while line != "\r\n" {
                        line.clear();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                    }
                    if gated {
                        match gate.acquire().await {
                            Ok(p) => p.forget(),
                            Err(_) => return,
                        }
                    }
                    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nCache-Control: max-age=0\r\n\r\nok\n";
                    if r.get_mut().write_all(resp).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, open)
}

/// Polls `f` until it holds (5 s at most).
async fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("never: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_quota_queues_then_refuses_only_its_tenant() {
    let _shared = COMPILES.read().await;
    let (port, gate) = {
        let (a, g) = gated_origin().await;
        (a.port(), g)
    };
    let p = tenants(port).await;
    p.ok("tenant.quota la requests=1 request_queue=1").await;
    let q = p.ok("tenant.quota la").await;
    assert!(q.contains("requests=1\nrequest_queue=1"), "{q}");
    let la = p.ctx.tenants.get("la").expect("la");
    let addr = p.addr;
    let get_a = |path: &'static str| {
        tokio::spawn(async move {
            let r = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
            common::raw(addr, r.as_bytes()).await
        })
    };
    // One request of a in progress (its fetch waits at the gate) ...
    let first = get_a("/gate/1");
    until("a's first request in progress", || la.requests() == (1, 0)).await;
    // ... the next waits in a's queue ...
    let second = get_a("/gate/2");
    until("a's second request queued", || la.requests() == (1, 1)).await;
    // ... and one more is refused at once, before any of a's VCL.
    let third = req(&p, "GET", "a", "/echo").await;
    assert_eq!(third.status, 503);
    assert_eq!(third.header("retry-after"), Some("1"));
    assert_eq!(la.requests_refused.load(Ordering::Relaxed), 1);
    // b and the default tenant are not held up.
    assert_eq!(req(&p, "GET", "b", "/echo").await.status, 200);
    assert_eq!(req(&p, "GET", "c", "/echo").await.status, 200);
    assert!(!first.is_finished() && !second.is_finished());
    // The first ends; the waiting one goes on.
    gate.add_permits(1);
    assert_eq!(first.await.expect("first").status, 200);
    until("the queued request in progress", || la.requests() == (1, 0)).await;
    gate.add_permits(1);
    assert_eq!(second.await.expect("second").status, 200);
    until("a idle", || la.requests() == (0, 0)).await;
    assert_eq!(la.requests_queued.load(Ordering::Relaxed), 1);
    let list = p.ok("tenant.list -j").await;
    assert!(list.contains("\"requests_refused\": 1"), "{list}");
    // Lifting the quota lets waiting requests go at once.
    let held = get_a("/gate/3");
    until("a's request in progress", || la.requests() == (1, 0)).await;
    let waiting = get_a("/gate/4");
    until("a's request queued", || la.requests() == (1, 1)).await;
    p.ok("tenant.quota la requests=none").await;
    until("the queue emptied", || la.requests().1 == 0).await;
    gate.add_permits(2);
    assert_eq!(held.await.expect("held").status, 200);
    assert_eq!(waiting.await.expect("waiting").status, 200);
    assert_eq!(p.cli("tenant.quota la requests=many").await.0, 106);
    // A request rate: one a second, nobody waits: the second at once
    // is refused, b's are not.
    p.ok("tenant.quota la request_rate=1 request_queue=0").await;
    let refused = la.requests_refused.load(Ordering::Relaxed);
    assert_eq!(req(&p, "GET", "a", "/echo").await.status, 200);
    assert_eq!(req(&p, "GET", "a", "/echo").await.status, 503);
    for _ in 0..3 {
        assert_eq!(req(&p, "GET", "b", "/echo").await.status, 200);
    }
    assert_eq!(la.requests_refused.load(Ordering::Relaxed), refused + 1);
}
