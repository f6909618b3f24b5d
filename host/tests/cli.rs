//! `shellac serve` as a process: varnishd's flags.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_shellac");

#[test]
fn bad_parameters_are_refused() {
    for (p, msg) in [
        ("nosuch=1", "Unknown parameter \"nosuch\""),
        ("default_ttl=abc", "not a valid duration"),
        ("http_gzip_support=maybe", "not a boolean"),
    ] {
        let out = Command::new(BIN)
            .args(["serve", "-a", "127.0.0.1:0", "-b", "127.0.0.1:9", "-p", p])
            .output()
            .expect("run shellac");
        assert!(!out.status.success(), "{p} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(msg), "{p}: {err}");
    }
}

/// Kills the child on drop, so a failing test leaves no process behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_with_backend_flag_and_instance_dir() {
    let origin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let oport = origin.local_addr().expect("addr").port();
    // A one-shot origin thread answering one request.
    let t = std::thread::spawn(move || {
        if let Ok((mut s, _)) = origin.accept() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nCache-Control: max-age=60\r\n\r\nhello",
            );
        }
    });
    let dir = std::env::temp_dir().join(format!("shellac-cli-{}", std::process::id()));
    std::fs::write(dir.with_extension("secret"), b"s3cret\n").expect("secret");
    let mut child = Child(
        Command::new(BIN)
            .args([
                "serve",
                "-F",
                "-a",
                "127.0.0.1:0",
                "-s",
                "malloc,64m",
                "-p",
                "default_ttl=30s",
            ])
            .args(["-b", &format!("127.0.0.1:{oport}")])
            .arg("-n")
            .arg(&dir)
            .args(["-T", "127.0.0.1:0", "-S"])
            .arg(dir.with_extension("secret"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shellac"),
    );
    let stderr = child.0.stderr.take().expect("stderr");
    let mut r = BufReader::new(stderr);
    // Start-up prints both addresses, admin first.
    let (mut addr, mut admin) = (None, None);
    while addr.is_none() || admin.is_none() {
        let mut line = String::new();
        assert!(r.read_line(&mut line).expect("read") > 0, "shellac exited");
        let last = line.trim().rsplit(' ').next().map(str::to_string);
        if line.contains("listening on") {
            addr = last;
        } else if line.contains("admin CLI on") {
            admin = last;
        }
    }
    let (addr, admin) = (addr.unwrap_or_default(), admin.unwrap_or_default());
    let out = Command::new(BIN)
        .args(["adm", "-T", &admin, "-S"])
        .arg(dir.with_extension("secret"))
        .args(["param.show", "default_ttl"])
        .output()
        .expect("shellac adm");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("30.000 [seconds]"));
    let written = std::fs::read_to_string(dir.join("listen")).expect("-n DIR/listen");
    assert_eq!(written.trim(), addr);
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("hello"));
    // adm, stat and the admin HTTP listener, found by -n.
    let out = Command::new(BIN)
        .args(["adm", "-n"])
        .arg(&dir)
        .args(["param.show", "default_ttl"])
        .output()
        .expect("shellac adm -n");
    assert!(String::from_utf8_lossy(&out.stdout).contains("30.000 [seconds]"));
    let out = Command::new(BIN)
        .args([
            "stat",
            "-1",
            "-f",
            "MAIN.client_req",
            "-f",
            "MAIN.cache_miss",
            "-n",
        ])
        .arg(&dir)
        .output()
        .expect("shellac stat");
    let stat = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stat.lines().collect();
    assert_eq!(lines.len(), 2, "{stat}");
    assert!(lines[0].starts_with("MAIN.client_req "), "{stat}");
    assert!(lines[0].contains(" 1 ") && lines[0].ends_with("Good client requests received"));
    assert!(lines[1].starts_with("MAIN.cache_miss "), "{stat}");
    // `log -d`: the default output (printed in place from the ring's
    // bytes) is the grouping path's (forced here by a filter that hides
    // nothing: Debug is masked), packed records written out as text.
    let log = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["log", "-d", "-n"])
            .arg(&dir)
            .args(extra)
            .output()
            .expect("shellac log");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (fast, slow) = (log(&[]), log(&["-x", "Debug"]));
    assert_eq!(fast, slow);
    for want in [
        "*   << Request  >> 1002      \n-   Begin          req 1001 rxreq\n",
        "*   << BeReq    >> 1003      \n-   Begin          bereq 1002 fetch\n",
        "-   ReqHeader      Host: x\n",
        "-   BerespHeader   Content-Length: 5\n",
        "-   RespStatus     200\n",
        "-   Timestamp      Resp: ",
        "-   ReqAcct        ",
    ] {
        assert!(fast.contains(want), "{want:?} in\n{fast}");
    }
    let inst = std::fs::read_to_string(dir.join("_.admin")).expect("_.admin");
    let http = inst
        .lines()
        .find_map(|l| l.strip_prefix("H "))
        .expect("admin HTTP address");
    // /metrics wants the token -S gives (`shellac stat` above sent it).
    let metrics = |token: &str| {
        let mut s = TcpStream::connect(http).expect("connect admin http");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .expect("write");
        let mut metrics = String::new();
        s.read_to_string(&mut metrics).expect("read");
        metrics
    };
    assert!(metrics("wrong").starts_with("HTTP/1.1 401"));
    let secret = std::fs::read(dir.with_extension("secret")).expect("secret");
    let metrics = metrics(&shellac::mgt_auth::http_token(&secret));
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains(
        "# TYPE varnish_main_client_req_total counter\nvarnish_main_client_req_total 1\n"
    ));
    assert!(metrics.contains("varnish_backend_req_total{backend=\"default\",vcl=\"boot\"} 1\n"));
    let _ = t.join();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("secret"));
}
