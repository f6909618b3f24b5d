//! Runs .vtc files: the top-level command loop of one test, and the driver
//! that runs many tests (`-j` in parallel) and prints varnishtest-style
//! results.
//!
//! Each test gets its own temporary directory, its own [`Ctx`] and
//! ephemeral ports, so tests never see each other's state. A test that
//! runs longer than `-t` is stopped (its threads give up, its processes
//! are killed) and counted as failed. Without `-k`, no new test starts
//! after the first failure, as in varnishtest.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::ctx::{lock, Abort, Ctx, Outcome, TestConfig, R};
use crate::macros::Macros;
use crate::script::{TopCommand, TopKind};
use crate::server::Server;
use crate::token::{tokenize, Command};
use crate::varnish::Varnish;

/// Options of `shellac test`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `-v`: print every test's log.
    pub verbose: bool,
    /// `-q`: print only failures and the summary.
    pub quiet: bool,
    /// `-j`: tests run in parallel.
    pub jobs: usize,
    /// `-k`: keep going after a failure.
    pub keep_going: bool,
    /// Per-test settings.
    pub config: TestConfig,
}

/// The result of one test.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// The file as given.
    pub file: PathBuf,
    /// Passed, failed or skipped.
    pub outcome: Outcome,
    /// Wall time.
    pub duration: Duration,
    /// The first failure.
    pub failure: Option<String>,
    /// The whole log.
    pub log: Vec<String>,
}

/// Totals of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed.
    pub failed: usize,
    /// Tests that were skipped.
    pub skipped: usize,
}

/// Reads a list file (`-f`): one path per line, `#` comments and blank
/// lines ignored. Relative paths are resolved against the list's
/// directory, or its `tests/` subdirectory when the file is there (the
/// conformance lists name files of `tests/`).
pub fn read_list(list: &Path) -> std::io::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(list)?;
    let dir = list.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for l in text.lines() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let p = Path::new(l);
        if p.is_absolute() {
            out.push(p.to_path_buf());
        } else if dir.join(p).exists() {
            out.push(dir.join(p));
        } else if dir.join("tests").join(p).exists() {
            out.push(dir.join("tests").join(p));
        } else {
            out.push(dir.join(p));
        }
    }
    Ok(out)
}

/// `${bad_backend}`: an address bound but never listening, kept for the
/// process's lifetime, so connecting to it is refused at once.
fn bad_backend() -> String {
    static BAD: OnceLock<String> = OnceLock::new();
    BAD.get_or_init(|| {
        // SAFETY: plain socket calls on a fresh descriptor and a zeroed
        // sockaddr_in of the right size; the fd is intentionally leaked.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return "127.0.0.1:9".into();
            }
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            if libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len) != 0 {
                return "127.0.0.1:9".into();
            }
            let mut out: libc::sockaddr_in = std::mem::zeroed();
            let mut l = len;
            if libc::getsockname(fd, &mut out as *mut _ as *mut libc::sockaddr, &mut l) != 0 {
                return "127.0.0.1:9".into();
            }
            format!("127.0.0.1:{}", u16::from_be(out.sin_port))
        }
    })
    .clone()
}

fn new_tmpdir() -> std::io::Result<PathBuf> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("vtc.{}.{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// The instances of a running test.
struct State {
    ctx: Arc<Ctx>,
    servers: Vec<Server>,
    clients: Vec<Client>,
    varnishes: Vec<Varnish>,
    logexps: Vec<crate::logexp::Logexp>,
}

impl State {
    fn backends(&self) -> String {
        let mut s = String::new();
        for srv in &self.servers {
            s.push_str(&srv.backend_decl());
        }
        s
    }

    fn run(&mut self, cmds: &[Command]) -> R<()> {
        for c in cmds {
            if self.ctx.stopped() {
                return Err(Abort);
            }
            let ex = {
                let m = lock(&self.ctx.macros);
                c.expand(&m)
            };
            let ex = ex.map_err(|e| self.ctx.fatal("top", e.to_string()))?;
            let tc = TopCommand::classify(ex).map_err(|e| self.ctx.fatal("top", e.to_string()))?;
            self.ctx.log.log(
                2,
                "top",
                &format!("=== {} (line {})", tc.name().text(), tc.line()),
            );
            self.one(&tc)?;
        }
        Ok(())
    }

    fn one(&mut self, tc: &TopCommand) -> R<()> {
        let ctx = self.ctx.clone();
        let rest = tc.command.tokens.get(2..).unwrap_or(&[]);
        let inst = tc
            .instance_name()
            .map(|s| s.into_owned())
            .unwrap_or_default();
        match tc.kind {
            TopKind::Varnishtest | TopKind::Vtest => {
                let d = tc
                    .description()
                    .map(|t| t.text().into_owned())
                    .unwrap_or_default();
                ctx.log.log(1, "top", &format!("TEST {d}"));
                Ok(())
            }
            TopKind::Feature => self.feature(tc),
            TopKind::Server => {
                if !inst.starts_with('s') {
                    return Err(ctx.fatal(
                        "top",
                        format!("Server name must start with 's' (is: {inst})"),
                    ));
                }
                let idx = match self.servers.iter().position(|s| s.name == inst) {
                    Some(i) => i,
                    None => {
                        self.servers.push(Server::new(&ctx, &inst));
                        self.servers.len() - 1
                    }
                };
                self.servers[idx].command(&ctx, rest)
            }
            TopKind::Client => {
                if !inst.starts_with('c') {
                    return Err(ctx.fatal(
                        "top",
                        format!("Client name must start with 'c' (is: {inst})"),
                    ));
                }
                let idx = match self.clients.iter().position(|c| c.name() == inst) {
                    Some(i) => i,
                    None => {
                        self.clients.push(Client::new(&inst));
                        self.clients.len() - 1
                    }
                };
                self.clients[idx].command(&ctx, rest)
            }
            TopKind::Varnish => {
                if !inst.starts_with('v') {
                    return Err(ctx.fatal(
                        "top",
                        format!("Varnish name must start with 'v' (is: {inst})"),
                    ));
                }
                let backends = self.backends();
                let idx = match self.varnishes.iter().position(|v| v.name() == inst) {
                    Some(i) => i,
                    None => {
                        self.varnishes.push(Varnish::new(&ctx, &inst));
                        self.varnishes.len() - 1
                    }
                };
                self.varnishes[idx].command(&ctx, rest, &|| backends.clone())
            }
            TopKind::Barrier | TopKind::Delay | TopKind::Shell => {
                let args: Vec<String> = tc
                    .command
                    .tokens
                    .iter()
                    .map(|t| t.text().into_owned())
                    .collect();
                crate::misc::global_cmd(&ctx, "top", &args).unwrap_or(Ok(()))
            }
            TopKind::Loop => {
                let toks = &tc.command.tokens;
                let n = toks.get(1).map_or(0, |t| crate::expect::strtoul(&t.text()));
                let Some(spec) = toks.get(2) else {
                    return Err(ctx.fatal("top", "loop: missing spec"));
                };
                let inner = tokenize(&spec.bytes, spec.line)
                    .map_err(|e| ctx.fatal("top", e.to_string()))?;
                for i in 0..n {
                    ctx.log.log(4, "top", &format!("Loop #{i}"));
                    self.run(&inner)?;
                }
                Ok(())
            }
            TopKind::Logexpect => {
                if !inst.starts_with('l') {
                    return Err(ctx.fatal(
                        "top",
                        format!("Logexpect name must start with 'l' (is: {inst})"),
                    ));
                }
                let idx = match self.logexps.iter().position(|l| l.name() == inst) {
                    Some(i) => i,
                    None => {
                        let (Some(v), Some(vname)) = (rest.first(), rest.get(1)) else {
                            return Err(ctx.fatal("top", "new logexp lacks -v"));
                        };
                        if !v.is("-v") {
                            return Err(ctx.fatal("top", "new logexp lacks -v"));
                        }
                        let vname = vname.text().into_owned();
                        // The varnish must exist (its log is opened at
                        // -start).
                        if !self.varnishes.iter().any(|v| v.name() == vname) {
                            return Err(
                                ctx.fatal("top", format!("-v argument error: no varnish {vname}"))
                            );
                        }
                        self.logexps.push(crate::logexp::Logexp::new(&inst, &vname));
                        self.logexps.len() - 1
                    }
                };
                let vname = self.logexps[idx].vname().to_string();
                let v = self.varnishes.iter_mut().find(|v| v.name() == vname);
                self.logexps[idx].command(&ctx, rest, v)
            }
            TopKind::Process
            | TopKind::Setenv
            | TopKind::Syslog
            | TopKind::Tunnel
            | TopKind::Haproxy => Err(ctx.skip(
                "top",
                &format!("'{}' is not supported; skipping test", tc.name().text()),
            )),
            TopKind::Unknown => {
                Err(ctx.fatal("top", format!("Unknown command: \"{}\"", tc.name().text())))
            }
        }
    }

    fn feature(&mut self, tc: &TopCommand) -> R<()> {
        let ctx = self.ctx.clone();
        let toks = &tc.command.tokens;
        let mut i = 1;
        while i < toks.len() {
            let raw = toks[i].text().into_owned();
            let (neg, f) = match raw.strip_prefix('!') {
                Some(f) => (true, f.to_string()),
                None => (false, raw.clone()),
            };
            let have = match f.as_str() {
                "cmd" => {
                    i += 1;
                    let Some(c) = toks.get(i) else {
                        return Err(ctx.fatal("top", "Missing the command-line"));
                    };
                    std::process::Command::new("/bin/sh")
                        .arg("-c")
                        .arg(c.text().as_ref())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status()
                        .map(|s| s.success())
                        .unwrap_or(false)
                }
                "ignore_unknown_macro" => {
                    lock(&ctx.macros).set_ignore_unknown(true);
                    i += 1;
                    continue;
                }
                "ipv4" => std::net::TcpListener::bind("127.0.0.1:0").is_ok(),
                "ipv6" => std::net::TcpListener::bind("[::1]:0").is_ok(),
                "64bit" => cfg!(target_pointer_width = "64"),
                // SAFETY: geteuid has no preconditions.
                "root" => unsafe { libc::geteuid() == 0 },
                "user_varnish" => user_exists("varnish"),
                "user_vcache" => user_exists("vcache"),
                "group_varnish" => group_exists("varnish"),
                "disable_aslr" | "dns" | "topbuild" | "persistent_storage" | "coverage"
                | "asan" | "msan" | "tsan" | "ubsan" | "sanitizer" | "workspace_emulator" => false,
                _ => return Err(ctx.fatal("top", format!("FAIL test, unknown feature: {f}"))),
            };
            if have == neg {
                let why = if neg { "conflicting" } else { "lacking" };
                return Err(ctx.skip("top", &format!("SKIPPING test, {why} feature: {f}")));
            }
            i += 1;
        }
        Ok(())
    }

    /// End of test: wait for clients, stop servers, stop varnishes.
    fn reset(&mut self) {
        let ctx = self.ctx.clone();
        for c in &mut self.clients {
            c.wait(&ctx);
        }
        // A logexpect still running at the end gives up: its thread sees
        // the test stop.
        if self.logexps.iter().any(|l| l.running()) {
            ctx.request_stop();
        }
        for l in &mut self.logexps {
            l.reset();
        }
        for s in &mut self.servers {
            s.stop(&ctx);
        }
        for v in &mut self.varnishes {
            if ctx.stopped() || !v.launched() {
                v.cleanup(&ctx);
            } else {
                let _ = v.wait(&ctx);
            }
        }
        for b in lock(&ctx.barriers).values() {
            b.finish();
        }
    }
}

fn user_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: c is a valid NUL-terminated string; the result is only
    // compared with NULL.
    unsafe { !libc::getpwnam(c.as_ptr()).is_null() }
}

fn group_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: as in user_exists.
    unsafe { !libc::getgrnam(c.as_ptr()).is_null() }
}

/// Runs one test file to completion (or its time limit).
pub fn run_test(file: &Path, config: &TestConfig) -> TestResult {
    let start = Instant::now();
    let fail = |msg: String| TestResult {
        file: file.to_path_buf(),
        outcome: Outcome::Failed,
        duration: start.elapsed(),
        failure: Some(msg.clone()),
        log: vec![format!("---- top  {msg}")],
    };
    let src = match std::fs::read(file) {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot read {}: {e}", file.display())),
    };
    let tmpdir = match new_tmpdir() {
        Ok(d) => d,
        Err(e) => return fail(format!("cannot create temporary directory: {e}")),
    };
    let mut m = Macros::new();
    let testdir = file
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .and_then(|p| std::fs::canonicalize(p).ok())
        .unwrap_or_else(|| PathBuf::from("."));
    m.define("localhost", "127.0.0.1");
    m.define("bad_backend", bad_backend());
    m.define("bad_ip", "192.0.2.255");
    m.define("listen_addr", "127.0.0.1:0");
    m.define("tmpdir", tmpdir.display().to_string());
    m.define("testdir", testdir.display().to_string());
    m.define(
        "pwd",
        std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| ".".into()),
    );
    m.define("topbuild", "/nonexistent");
    for (k, v) in &config.defines {
        m.define(k.clone(), v.clone());
    }
    let ctx = Arc::new(Ctx::new(m, tmpdir.clone(), config.clone()));
    ctx.log
        .log(1, "top", &format!("TEST {} starting", file.display()));
    let (tx, rx) = mpsc::channel();
    let ctx2 = ctx.clone();
    let spawned = std::thread::Builder::new()
        .name("vtc-top".into())
        .spawn(move || {
            let mut st = State {
                ctx: ctx2.clone(),
                servers: Vec::new(),
                clients: Vec::new(),
                varnishes: Vec::new(),
                logexps: Vec::new(),
            };
            match tokenize(&src, 1) {
                Ok(cmds) => {
                    let _ = st.run(&cmds);
                }
                Err(e) => {
                    ctx2.fatal("top", e.to_string());
                }
            }
            st.reset();
            let _ = tx.send(());
        });
    if let Err(e) = spawned {
        return fail(format!("cannot start test thread: {e}"));
    }
    if rx.recv_timeout(config.max_duration).is_err() {
        ctx.fatal(
            "top",
            format!(
                "TEST TIMED OUT (> {:.0} s)",
                config.max_duration.as_secs_f64()
            ),
        );
        ctx.kill_children();
        let _ = rx.recv_timeout(Duration::from_secs(10));
    }
    ctx.kill_children();
    let _ = std::fs::remove_dir_all(&tmpdir);
    let outcome = ctx.outcome();
    ctx.log
        .log(1, "top", &format!("RESETTING after {}", file.display()));
    TestResult {
        file: file.to_path_buf(),
        outcome,
        duration: start.elapsed(),
        failure: ctx.failure(),
        log: ctx.log.lines(),
    }
}

/// Runs `files` with `opts`, printing to `out` as results arrive; returns
/// the totals. The last line printed is `N passed, N failed, N skipped`.
pub fn run_all(files: &[PathBuf], opts: &RunOptions, out: &mut dyn Write) -> Summary {
    let next = Arc::new(AtomicUsize::new(0));
    let halt = Arc::new(AtomicBool::new(false));
    let files: Arc<Vec<PathBuf>> = Arc::new(files.to_vec());
    let (tx, rx) = mpsc::channel::<TestResult>();
    let mut workers = Vec::new();
    for _ in 0..opts.jobs.max(1) {
        let (next, halt, files, tx, cfg) = (
            next.clone(),
            halt.clone(),
            files.clone(),
            tx.clone(),
            opts.config.clone(),
        );
        let keep = opts.keep_going;
        workers.push(std::thread::spawn(move || loop {
            if halt.load(Ordering::SeqCst) {
                break;
            }
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(f) = files.get(i) else { break };
            let r = run_test(f, &cfg);
            if r.outcome == Outcome::Failed && !keep {
                halt.store(true, Ordering::SeqCst);
            }
            if tx.send(r).is_err() {
                break;
            }
        }));
    }
    drop(tx);
    let mut sum = Summary::default();
    for r in rx {
        let name = r.file.display();
        let t = r.duration.as_secs_f64();
        match r.outcome {
            Outcome::Passed => {
                sum.passed += 1;
                if opts.verbose {
                    for l in &r.log {
                        let _ = writeln!(out, "{l}");
                    }
                }
                if !opts.quiet {
                    let _ = writeln!(out, "#    top  TEST {name} passed ({t:.3})");
                }
            }
            Outcome::Skipped => {
                sum.skipped += 1;
                if opts.verbose {
                    for l in &r.log {
                        let _ = writeln!(out, "{l}");
                    }
                }
                if !opts.quiet {
                    let _ = writeln!(out, "#    top  TEST {name} skipped ({t:.3})");
                }
            }
            Outcome::Failed => {
                sum.failed += 1;
                for l in &r.log {
                    let _ = writeln!(out, "{l}");
                }
                let why = r.failure.as_deref().unwrap_or("");
                let _ = writeln!(out, "#    top  TEST {name} FAILED ({t:.3}) {why}");
            }
        }
        let _ = out.flush();
    }
    for w in workers {
        let _ = w.join();
    }
    let _ = writeln!(
        out,
        "{} passed, {} failed, {} skipped",
        sum.passed, sum.failed, sum.skipped
    );
    sum
}
