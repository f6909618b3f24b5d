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
