//! `varnish vN …`: start and drive a cache instance through its admin CLI.
//!
//! The instance is either the real `varnishd` (`--varnishd PATH`, used to
//! validate this runner against Debian's varnishtest) or `shellac serve`;
//! both get the same flags (`-n -a -T -S -f '' -p …`), and everything after
//! the launch goes through the CLI protocol ([`crate::cli`]), so Shellac
//! passes these tests once its `serve` speaks that CLI.
//!
//! Launch: the admin port is chosen here (bind port 0, read it, release
//! it) because the CLI must be reached before the cache tells anything;
//! the command line runs through `/bin/sh -c`, like varnishtest, so
//! `-arg` strings keep their shell quoting. The process is its own process
//! group so an aborted test can kill it with all its children.
//!
//! VCLs are loaded as `vcl.inline vclN` (numbered per instance) with a
//! here-document, then `vcl.use vclN`; `-vcl+backend` prepends a
//! `backend sN` for every server declared so far; `-syntax` applies to
//! the rest of its `varnish` line only.
//!
//! What `shellac serve` must do for these tests to run against it (the
//! same as varnishd in this setup):
//!
//! * accept `-n DIR -S FILE -T 127.0.0.1:PORT -a ADDR -p NAME=VALUE…` and
//!   `-f ''` (start without VCL, wait for the CLI); the `-p` names are
//!   varnishtest's (`auto_restart`, `debug=+vtc_mode`, `thread_pool_min`,
//!   `vsl_mask`, `h2_*`, `syslog_cli_traffic`) plus whatever tests pass;
//! * on the `-T` port: the 107 challenge and `auth`, then `vcl.inline NAME
//!   << TOKEN` (here-document), `vcl.use`, `start`, `stop`, `status`
//!   (answering exactly `Child in state running` / `Child in state
//!   stopped`), `debug.listen_address` (lines `NAME ADDRESS PORT`),
//!   `backend.list`, `panic.show` (status 300 when there is no panic),
//!   `param.set`, and the verbs tests use with `-cli*`;
//!   `debug.xid` may fail;
//! * exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command as Proc, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::{status, Cli};
use crate::ctx::{lock, Abort, Ctx, R};
use crate::token::Token;

/// Terminator of the here-documents carrying VCL.
const HEREDOC: &str = "%VTC-SHELLAC-EOF%";

/// A declared varnish instance.
#[derive(Debug)]
pub struct Varnish {
    name: String,
    workdir: PathBuf,
    args: String,
    has_a_arg: bool,
    proto: Option<String>,
    child: Option<Child>,
    cli: Option<Cli>,
    vcl_nbr: u32,
    syntax: f64,
    shared: Arc<Ctx>,
}

impl Varnish {
    /// A new instance (not launched yet); its working directory is
    /// `${tmpdir}/vN`.
    pub fn new(ctx: &Arc<Ctx>, name: &str) -> Varnish {
        let workdir = ctx.tmpdir.join(name);
        let _ = std::fs::remove_dir_all(&workdir);
        let _ = std::fs::create_dir_all(&workdir);
        Varnish {
            name: name.to_string(),
            workdir,
            args: String::new(),
            has_a_arg: false,
            proto: None,
            child: None,
            cli: None,
            vcl_nbr: 0,
            syntax: 4.1,
            shared: ctx.clone(),
        }
    }

    /// The instance's name (`v1`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the process runs (its CLI is open).
    pub fn launched(&self) -> bool {
        self.cli.is_some()
    }

    fn fatal(&self, ctx: &Ctx, msg: impl AsRef<str>) -> Abort {
        ctx.fatal(&self.name, msg)
    }

    fn launch(&mut self, ctx: &Ctx) -> R<()> {
        if self.cli.is_some() {
            return Ok(());
        }
        ctx.log.log(2, &self.name, "Launch");
        // The admin port is picked free, then handed to the instance: in
        // between another process may take it, and the instance exits at
        // once. Then another port, a few times.
        let mut attempt = 0;
        let (secret, stream) = loop {
            attempt += 1;
            match self.launch_once(ctx)? {
                Some(ok) => break ok,
                None if attempt < 3 => {
                    ctx.log.log(
                        2,
                        &self.name,
                        "Launch again (it exited at once: its admin port may have been taken)",
                    );
                }
                None => return Err(self.fatal(ctx, "FAIL varnishd exited before its CLI answered")),
            }
        };
        let mut cli = Cli::new(stream, ctx.config.max_duration);
        match cli.authenticate(ctx, secret.as_bytes())? {
            Ok(()) => {}
            Err(e) => return Err(self.fatal(ctx, e)),
        }
        self.cli = Some(cli);
        Ok(())
    }

    /// One launch: the instance started and its admin port answering
    /// (secret, connection), or `None` when it exited before that.
    fn launch_once(&mut self, ctx: &Ctx) -> R<Option<(String, TcpStream)>> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| self.fatal(ctx, format!("Create CLI listen socket failed: {e}")))?
            .port();
        let secret_path = self.workdir.join("_.secret");
        let secret = format!(
            "{:x}{:x}\n",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        std::fs::write(&secret_path, &secret)
            .map_err(|e| self.fatal(ctx, format!("cannot write secret: {e}")))?;
        let wd = self.workdir.display().to_string();
        let listen = lock(&ctx.macros)
            .get("listen_addr")
            .unwrap_or("127.0.0.1:0")
            .to_string();
        let mut cmd = String::from("cd ${pwd} && exec ");
        let common = format!(
            " -n {wd} -S {wd}/_.secret -T 127.0.0.1:{port} -p auto_restart=off -p syslog_cli_traffic=off -p thread_pool_min=10 -p debug=+vtc_mode -p vsl_mask=+Debug -p h2_initial_window_size=1m -p h2_rx_window_low_water=64k"
        );
        match &ctx.config.varnishd {
            Some(vd) => {
                // `-d` as varnishtest: the management process waits for a
                // `start` on the CLI (even with `-b`), and ends when its
                // standard input closes.
                cmd.push_str(&format!(
                    "{} -d -l 2m{common} -P {wd}/varnishd.pid",
                    vd.display()
                ));
            }
            None => {
                // `serve` has no debug mode: `-f ''` says "no VCL yet,
                // wait for the CLI", unless the test gives -b or -f.
                let has_vcl = self
                    .args
                    .split_whitespace()
                    .any(|a| a.starts_with("-b") || a.starts_with("-f"));
                cmd.push_str(&format!(
                    "{} serve{common}{}",
                    ctx.config.shellac.display(),
                    if has_vcl { "" } else { " -f ''" }
                ));
            }
        }
        if !self.has_a_arg {
            cmd.push_str(&format!(" -a '{listen}"));
            if let Some(p) = &self.proto {
                cmd.push_str(&format!(",{p}"));
            }
            cmd.push('\'');
        }
        cmd.push(' ');
        cmd.push_str(&self.args);
        let cmd = ctx.expand(&self.name, &cmd, 0)?;
        ctx.log.log(3, &self.name, &format!("CMD: {cmd}"));
        let mut child = Proc::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| self.fatal(ctx, format!("cannot start {cmd}: {e}")))?;
        let pid = child.id() as i32;
        lock(&ctx.pgids).push(pid);
        ctx.log.log(3, &self.name, &format!("PID: {pid}"));
        ctx.define(&self.name, "pid", pid.to_string());
        ctx.define(&self.name, "name", wd.clone());
        for out in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let ctx2 = self.shared.clone();
            let name = self.name.clone();
            let _ = std::thread::Builder::new().spawn(move || {
                for line in BufReader::new(out).lines() {
                    match line {
                        Ok(l) => ctx2.log.log(3, &name, &format!("debug|{l}")),
                        Err(_) => break,
                    }
                }
            });
        }
        self.child = Some(child);
        // Wait for the admin port.
        let deadline = Instant::now() + ctx.config.max_duration / 3;
        let stream = loop {
            if ctx.stopped() {
                return Err(Abort);
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    ctx.log.log(
                        3,
                        &self.name,
                        &format!("exited before its CLI answered ({st})"),
                    );
                    self.child = None;
                    return Ok(None);
                }
            }
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => {
                    return Err(
                        self.fatal(ctx, format!("FAIL timeout waiting for CLI connection: {e}"))
                    )
                }
            }
        };
        Ok(Some((secret, stream)))
    }

    /// Sends one CLI request; a broken connection is fatal.
    pub fn ask(&mut self, ctx: &Ctx, cmd: &str) -> R<(u32, String)> {
        self.launch(ctx)?;
        ctx.log.dump(4, &self.name, "CLI TX", cmd.as_bytes());
        let Some(cli) = self.cli.as_mut() else {
            return Err(Abort);
        };
        match cli.ask(ctx, cmd)? {
            Ok((st, body)) => {
                ctx.log.log(3, &self.name, &format!("CLI RX  {st}"));
                ctx.log.dump(4, &self.name, "CLI RX", body.as_bytes());
                Ok((st, body))
            }
            Err(e) => Err(self.fatal(ctx, format!("CLI failed ({cmd}): {e}"))),
        }
    }

    fn wait_status(&mut self, ctx: &Ctx, want: &str, bad: Option<&str>) -> R<()> {
        loop {
            let (st, r) = self.ask(ctx, "status")?;
            if st != status::OK {
                return Err(self.fatal(ctx, format!("CLI status command failed: {st} {r}")));
            }
            if r == want {
                return Ok(());
            }
            if Some(r.as_str()) == bad {
                return Err(self.fatal(ctx, format!("Child stopped before running: {st} {r}")));
            }
            ctx.sleep(Duration::from_millis(200))?;
        }
    }

    fn start(&mut self, ctx: &Ctx) -> R<()> {
        self.launch(ctx)?;
        ctx.log.log(2, &self.name, "Start");
        let (st, r) = self.ask(ctx, "start")?;
        if st != status::OK {
            return Err(self.fatal(ctx, format!("CLI start command failed: {st} {r}")));
        }
        self.wait_status(
            ctx,
            "Child in state running",
            Some("Child in state stopped"),
        )?;
        let _ = self.ask(ctx, "debug.xid 999")?;
        let (st, r) = self.ask(ctx, "debug.listen_address")?;
        if st != status::OK {
            return Err(self.fatal(
                ctx,
                format!("CLI debug.listen_address command failed: {st} {r}"),
            ));
        }
        self.listen_macros(ctx, &r);
        Ok(())
    }

    /// Defines `vN_addr/port/sock` (first listener) and
    /// `vN_<name>_addr/port/sock` from `debug.listen_address` lines
    /// (`name address port`).
    fn listen_macros(&self, ctx: &Ctx, r: &str) {
        let mut first = true;
        let mut last = String::new();
        for line in r.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 3 {
                continue;
            }
            let (n, mut a, mut p) = (f[0], f[1].to_string(), f[2].to_string());
            let s = if p.starts_with('-') {
                let s = a.clone();
                a = "0.0.0.0".into();
                p = "0".into();
                s
            } else if a.contains(':') {
                format!("[{a}]:{p}")
            } else {
                format!("{a}:{p}")
            };
            if first {
                ctx.log.log(2, &self.name, &format!("Listen on {a} {p}"));
                ctx.define(&self.name, "addr", a.clone());
                ctx.define(&self.name, "port", p.clone());
                ctx.define(&self.name, "sock", s.clone());
                first = false;
            }
            if n == last {
                continue;
            }
            ctx.define(&self.name, &format!("{n}_addr"), a.clone());
            ctx.define(&self.name, &format!("{n}_port"), p.clone());
            ctx.define(&self.name, &format!("{n}_sock"), s);
            last = n.to_string();
        }
    }

    fn stop(&mut self, ctx: &Ctx) -> R<()> {
        self.launch(ctx)?;
        ctx.log.log(2, &self.name, "Stop");
        let _ = self.ask(ctx, "stop")?;
        self.wait_status(ctx, "Child in state stopped", None)
    }

    /// Stops the child, checks for panics and ends the process (`-wait`,
    /// end of test).
    pub fn wait(&mut self, ctx: &Ctx) -> R<()> {
        if self.cli.is_none() {
            return Ok(());
        }
        ctx.log.log(2, &self.name, "Wait");
        let r = (|| {
            let _ = self.ask(ctx, "backend.list")?;
            self.stop(ctx)?;
            let (st, _) = self.ask(ctx, "panic.show")?;
            if st != status::CANT {
                return Err(self.fatal(ctx, "Unexpected panic"));
            }
            Ok(())
        })();
        self.cleanup(ctx);
        r
    }

    /// Ends the process: SIGTERM, then SIGKILL of its group after a grace
    /// period.
    pub fn cleanup(&mut self, ctx: &Ctx) {
        self.cli = None;
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Closing standard input ends a varnishd started with -d.
        drop(child.stdin.take());
        let pid = child.id() as i32;
        // SAFETY: signalling our own child process; no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => break,
            }
        }
        // SAFETY: as above, for the whole process group we created.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = child.wait();
        lock(&ctx.pgids).retain(|&p| p != pid);
    }

    fn load_vcl(&mut self, ctx: &Ctx, text: &str) -> R<(u32, String)> {
        self.vcl_nbr += 1;
        let n = self.vcl_nbr;
        let (st, r) = self.ask(
            ctx,
            &format!("vcl.inline vcl{n} << {HEREDOC}\n{text}\n{HEREDOC}"),
        )?;
        if st != status::OK {
            return Ok((st, r));
        }
        let (st2, r2) = self.ask(ctx, &format!("vcl.use vcl{n}"))?;
        Ok((st2, if st2 == status::OK { r } else { r2 }))
    }

    /// Every counter of the instance, through its stat tool.
    fn counters(&self) -> Result<Vec<(String, u64)>, String> {
        match &self.shared.config.varnishd {
            Some(_) => crate::vsc::read(std::path::Path::new("varnishstat"), false, &self.workdir),
            None => crate::vsc::read(&self.shared.config.shellac, true, &self.workdir),
        }
    }

    /// `-expect NAME OP VALUE` (or `-expect !NAME` when `cmp` is
    /// `None`): retried every 0.1 s, 50 times, as varnishtest does.
    fn expect_counter(&mut self, ctx: &Ctx, lhs: &str, cmp: Option<(&str, &str)>) -> R<()> {
        self.launch(ctx)?;
        let rhs_num = cmp.and_then(|(_, r)| {
            let r = r.trim();
            let ok = !r.is_empty()
                && if let Some(h) = r.strip_prefix("0x").or_else(|| r.strip_prefix("0X")) {
                    !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit())
                } else {
                    r.chars().all(|c| c.is_ascii_digit())
                };
            ok.then(|| crate::expect::strtoul(r))
        });
        let mut last: Result<Vec<(String, u64)>, String> = Ok(Vec::new());
        let mut vals = (None, None);
        for attempt in 0..50 {
            if attempt > 0 {
                ctx.sleep(Duration::from_millis(100))?;
            }
            last = self.counters();
            let Ok(points) = &last else { continue };
            let l = crate::vsc::find(points, lhs);
            let Some((op, rhs)) = cmp else {
                if l.is_some() {
                    return Err(self.fatal(ctx, format!("Found (not expected): {lhs}")));
                }
                ctx.log
                    .log(2, &self.name, &format!("not found (as expected): {lhs}"));
                return Ok(());
            };
            let r = rhs_num.or_else(|| crate::vsc::find(points, rhs));
            vals = (l, r);
            let (Some(a), Some(b)) = (l, r) else { continue };
            let good = match op {
                "==" => a == b,
                "!=" => a != b,
                ">" => a > b,
                "<" => a < b,
                ">=" => a >= b,
                "<=" => a <= b,
                _ => return Err(self.fatal(ctx, format!("comparison {op} unknown"))),
            };
            if good {
                ctx.log.log(
                    2,
                    &self.name,
                    &format!("as expected: {lhs} ({a}) {op} {rhs} ({b})"),
                );
                return Ok(());
            }
        }
        if let Err(e) = last {
            return Err(self.fatal(ctx, format!("VSM error: {e}")));
        }
        let Some((op, rhs)) = cmp else {
            return Ok(());
        };
        match vals {
            (Some(a), Some(b)) => {
                Err(self.fatal(ctx, format!("Not true: {lhs} ({a}) {op} {rhs} ({b})")))
            }
            (None, _) => Err(self.fatal(ctx, format!("stats field {lhs} unknown"))),
            (_, None) => Err(self.fatal(ctx, format!("stats field {rhs} unknown"))),
        }
    }

    /// Runs the arguments of one `varnish` command, left to right.
    /// `backends` produces the `-vcl+backend` declarations.
    pub fn command(
        &mut self,
        ctx: &Arc<Ctx>,
        args: &[Token],
        backends: &dyn Fn() -> String,
    ) -> R<()> {
        self.syntax = 4.1;
        let mut i = 0;
        while i < args.len() {
            if ctx.stopped() {
                return Err(Abort);
            }
            let a = args[i].text().into_owned();
            let val = |k: usize| -> R<String> {
                args.get(i + k)
                    .map(|t| t.text().into_owned())
                    .ok_or_else(|| ctx.fatal(&self.name, format!("Missing argument to {a}")))
            };
            match a.as_str() {
                "-arg" => {
                    let v = val(1)?;
                    if v.starts_with("-a") {
                        self.has_a_arg = true;
                    }
                    self.args.push(' ');
                    self.args.push_str(&v);
                    i += 1;
                }
                "-proto" => {
                    self.proto = Some(val(1)?);
                    i += 1;
                }
                "-jail" => i += 1,
                "-expectexit" => i += 1,
                "-cleanup" => self.cleanup(ctx),
                "-cli" | "-cliok" => {
                    let c = val(1)?;
                    let (st, _) = self.ask(ctx, &c)?;
                    ctx.log.log(2, &self.name, &format!("CLI {st:03} <{c}>"));
                    if a == "-cliok" && st != status::OK {
                        return Err(self.fatal(
                            ctx,
                            format!("FAIL CLI response {st} expected {}", status::OK),
                        ));
                    }
                    i += 1;
                }
                "-clierr" => {
                    let want = crate::expect::strtoul(&val(1)?) as u32;
                    let c = val(2)?;
                    let (st, _) = self.ask(ctx, &c)?;
                    ctx.log.log(2, &self.name, &format!("CLI {st:03} <{c}>"));
                    if want != 0 && st != want {
                        return Err(
                            self.fatal(ctx, format!("FAIL CLI response {st} expected {want}"))
                        );
                    }
                    i += 2;
                }
                "-cliexpect" => {
                    let re = val(1)?;
                    let c = val(2)?;
                    let rx = pcre2::bytes::RegexBuilder::new()
                        .build(&re)
                        .map_err(|e| self.fatal(ctx, format!("Illegal regexp: {e}")))?;
                    let (st, r) = self.ask(ctx, &c)?;
                    ctx.log.log(2, &self.name, &format!("CLI {st:03} <{c}>"));
                    if !rx.is_match(r.as_bytes()).unwrap_or(false) {
                        return Err(self.fatal(ctx, format!("Expect failed ({re})")));
                    }
                    i += 2;
                }
                "-clijson" => {
                    let c = val(1)?;
                    let (st, _) = self.ask(ctx, &c)?;
                    if st != status::OK {
                        return Err(self.fatal(ctx, format!("FAIL CLI response {st} expected 200")));
                    }
                    i += 1;
                }
                "-errvcl" => {
                    let want = val(1)?;
                    let vcl = val(2)?;
                    let (st, r) = self.load_vcl(ctx, &format!("vcl {:.1};\n{vcl}", self.syntax))?;
                    if st == status::OK {
                        return Err(self.fatal(ctx, "VCL compilation succeeded expected failure"));
                    }
                    ctx.log
                        .log(2, &self.name, "VCL compilation failed (as expected)");
                    if !r.contains(&want) {
                        return Err(
                            self.fatal(ctx, format!("Did not find expected string: (\"{want}\")"))
                        );
                    }
                    i += 2;
                }
                "-vsl_catchup" => {}
                "-wait-stopped" => self.wait_status(ctx, "Child in state stopped", None)?,
                "-wait-running" => self.wait_status(
                    ctx,
                    "Child in state running",
                    Some("Child in state stopped"),
                )?,
                "-expect" => {
                    let lhs = val(1)?;
                    if let Some(name) = lhs.strip_prefix('!') {
                        self.expect_counter(ctx, name, None)?;
                    } else {
                        let op = val(2)?;
                        let rhs = val(3)?;
                        self.expect_counter(ctx, &lhs, Some((&op, &rhs)))?;
                        i += 2;
                    }
                    i += 1;
                }
                "-vsc" => {
                    let pat = val(1)?;
                    self.launch(ctx)?;
                    let points = self.counters().map_err(|e| self.fatal(ctx, e))?;
                    for (n, v) in points.iter().filter(|(n, _)| crate::vsc::fnmatch(&pat, n)) {
                        ctx.log.log(4, &self.name, &format!("VSC {n} {v}"));
                    }
                    i += 1;
                }
                "-start" => self.start(ctx)?,
                "-stop" => self.stop(ctx)?,
                "-wait" => self.wait(ctx)?,
                "-syntax" => {
                    self.syntax = val(1)?.trim().parse::<f64>().unwrap_or(0.0);
                    i += 1;
                }
                "-vcl" => {
                    let vcl = val(1)?;
                    let (st, _) = self.load_vcl(ctx, &format!("vcl {:.1};\n{vcl}", self.syntax))?;
                    if st != status::OK {
                        return Err(self.fatal(ctx, "VCL compilation failed expected success"));
                    }
                    i += 1;
                }
                "-vcl+backend" => {
                    let vcl = val(1)?;
                    let text = format!("vcl {:.1};\n{}\n{vcl}", self.syntax, backends());
                    let (st, _) = self.load_vcl(ctx, &text)?;
                    if st != status::OK {
                        return Err(self.fatal(ctx, "FAIL VCL does not compile"));
                    }
                    i += 1;
                }
                other => {
                    return Err(self.fatal(ctx, format!("Unknown varnish argument: {other}")));
                }
            }
            i += 1;
        }
        Ok(())
    }
}
