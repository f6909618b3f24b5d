//! The runner end to end: the HTTP engine with a server spec and a client
//! spec talking to each other in-process, malformed traffic, failures, and
//! the .vtc files under tests/vtc/ run through `run_all`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use vtc::ctx::{Ctx, Outcome, TestConfig};
use vtc::http::{Listener, Session, Stream};
use vtc::{tokenize, Macros, RunOptions};

fn config(secs: u64) -> TestConfig {
    TestConfig {
        max_duration: Duration::from_secs(secs),
        varnishd: None,
        shellac: PathBuf::from("/nonexistent/shellac"),
        defines: Vec::new(),
    }
}

fn ctx() -> Arc<Ctx> {
    let mut m = Macros::new();
    m.define("localhost", "127.0.0.1");
    Arc::new(Ctx::new(m, std::env::temp_dir(), config(10)))
}

/// Runs `server` and `client` specs against each other; returns the
/// context for inspection.
fn converse(server: &str, client: &str) -> Arc<Ctx> {
    let ctx = ctx();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let scmds = tokenize(server.as_bytes(), 1).unwrap();
    let ccmds = tokenize(client.as_bytes(), 1).unwrap();
    let c2 = ctx.clone();
    let srv = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let l = Listener::Tcp(l);
        let mut sess = Session::new(&c2, "s1", Stream::Tcp(s), Some(&l), None);
        let _ = sess.process(&scmds);
    });
    let s = TcpStream::connect(addr).unwrap();
    let mut sess = Session::new(&ctx, "c1", Stream::Tcp(s), None, None);
    let _ = sess.process(&ccmds);
    drop(sess);
    srv.join().unwrap();
    ctx
}

#[test]
fn request_and_response_round_trip() {
    let ctx = converse(
        r#"
        rxreq
        expect req.url == /x
        expect req.http.host == 127.0.0.1
        expect req.bodylen == 3
        txresp -status 404 -hdr "A: b" -body "nope"
        "#,
        r#"
        txreq -url /x -body abc
        rxresp
        expect resp.status == 404
        expect resp.http.a == b
        expect resp.body == nope
        expect resp.http.nothere == <undef>
        "#,
    );
    assert_eq!(ctx.outcome(), Outcome::Passed, "{:?}", ctx.failure());
}

#[test]
fn malformed_traffic_is_sent_verbatim() {
    let ctx = converse(
        r#"
        recv 14
        send "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
        "#,
        r#"
        send "BROKEN REQUEST"
        rxresp
        expect resp.body == hi
        "#,
    );
    assert_eq!(ctx.outcome(), Outcome::Passed, "{:?}", ctx.failure());
}

#[test]
fn failed_expect_fails_and_names_the_values() {
    let ctx = converse(
        "rxreq\ntxresp -status 500\n",
        "txreq\nrxresp\nexpect resp.status == 200\n",
    );
    assert_eq!(ctx.outcome(), Outcome::Failed);
    let f = ctx.failure().unwrap();
    assert!(
        f.contains("EXPECT resp.status (500) == \"200\" failed"),
        "{f}"
    );
}

#[test]
fn non_fatal_keeps_going_after_errors() {
    let ctx = converse(
        "rxreq\nsend \"HTTP/1.1 200 OK\\r\\n\"\n",
        "txreq\nnon_fatal\nrxresp\nexpect resp.status == 200\n",
    );
    assert_eq!(ctx.outcome(), Outcome::Passed, "{:?}", ctx.failure());
}

#[test]
fn vtc_files_run_through_the_runner() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vtc");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "vtc"))
        .collect();
    files.sort();
    assert!(files.len() >= 2);
    let opts = RunOptions {
        verbose: false,
        quiet: false,
        jobs: 2,
        keep_going: true,
        config: config(30),
    };
    let mut out = Vec::new();
    let sum = vtc::run_all(&files, &opts, &mut out);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(sum.failed, 0, "{text}");
    assert_eq!(sum.passed, files.len(), "{text}");
    assert!(text
        .trim_end()
        .ends_with(&format!("{} passed, 0 failed, 0 skipped", files.len())));
}

#[test]
fn bad_input_and_timeouts_fail_the_test() {
    let dir = std::env::temp_dir().join(format!("vtc-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.vtc");
    std::fs::write(&bad, "varnishtest \"x\"\nserver s1 {\n rxreq\n").unwrap();
    let hang = dir.join("hang.vtc");
    std::fs::write(
        &hang,
        "varnishtest \"x\"\nserver s1 { rxreq } -start\ndelay 30\n",
    )
    .unwrap();
    let skip = dir.join("skip.vtc");
    std::fs::write(
        &skip,
        "varnishtest \"x\"\nfeature cmd false\nthis is not a command\n",
    )
    .unwrap();
    let r = vtc::run_test(&bad, &config(5));
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(r.failure.unwrap().contains("line 2"));
    let r = vtc::run_test(&hang, &config(1));
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(r.failure.unwrap().contains("TIMED OUT"));
    let r = vtc::run_test(&skip, &config(5));
    assert_eq!(r.outcome, Outcome::Skipped);
    let _ = std::fs::remove_dir_all(&dir);
}
