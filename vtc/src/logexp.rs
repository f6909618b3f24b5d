//! `logexpect`: reads the cache's transaction log and checks records
//! against a list of expectations, as varnishtest does.
//!
//! ```text
//! logexpect lN -v vN [-g grouping] [-d 0|1] [-q query] [-m] [-err]
//!     [-i/-x taglist] [-I/-X [taglist:]regex] [-C] [-b] [-c] [-T s] [-L n] {
//!         expect SKIP VXID TAG [REGEX]
//!         fail add VXID TAG [REGEX]
//!         fail clear
//! } [-start|-wait|-run]
//! ```
//!
//! The log comes from Shellac's admin HTTP listener (its address is in
//! the instance directory, `${tmpdir}/vN/_.admin`): the reader is placed
//! at the tail (or, with `-d 1`, the head) of the ring before `-start`
//! returns, so records of what the test does next are never missed. With
//! `--varnishd` the runner reads `varnishlog -n DIR -g raw` instead (no
//! such placement signal: the tail is taken when varnishlog starts).
//! Either way the records go through the same grouping, query and filter
//! code as `shellac log` ([`vapi`]).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pcre2::bytes::Regex;
use vapi::stream::Next;
use vapi::{Dispatcher, Filter, Grouping, Item, Kind, Query, Record, Tag};

use crate::ctx::{Abort, Ctx, R};
use crate::token::{tokenize, Token};

/// `skip` of an expectation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Skip {
    /// Up to this many records may be skipped.
    Max(u32),
    /// `*`: any number.
    Any,
    /// `?`: one of a block of alternatives, in any order.
    Alt,
    /// An alternative already matched.
    Seen,
    /// `fail add`.
    Fail,
    /// `fail clear`.
    Clear,
}

/// A VXID or tag to match: a value, anything (`*`) or the last matched
/// (`=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want<T> {
    Any,
    Last,
    Is(T),
}

#[derive(Debug)]
struct Test {
    skip: Skip,
    vxid: Want<u64>,
    tag: Want<Tag>,
    re: Option<Regex>,
    text: String,
}

/// How one record fared against a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum M {
    Ok,
    Skip,
    Fail,
}

/// The matching state of a running logexpect.
struct Matcher {
    name: String,
    tests: Vec<Test>,
    cur: Option<usize>,
    started: bool,
    skip_cnt: u32,
    vxid_last: Option<u64>,
    tag_last: Option<Tag>,
    fail: Vec<usize>,
    m_arg: bool,
}

impl Matcher {
    fn log(&self, ctx: &Ctx, lvl: i32, msg: &str) {
        ctx.log.log(lvl, &self.name, msg);
    }

    /// Moves to the next expectation (varnishtest's `logexp_next`).
    fn next(&mut self, ctx: &Ctx) {
        loop {
            match self.cur {
                Some(i) if self.tests[i].skip == Skip::Alt => {}
                Some(i) => self.cur = (i + 1 < self.tests.len()).then_some(i + 1),
                None if !self.started => {
                    self.started = true;
                    for t in &mut self.tests {
                        if t.skip == Skip::Seen {
                            t.skip = Skip::Alt;
                        }
                    }
                    self.fail.clear();
                    self.cur = (!self.tests.is_empty()).then_some(0);
                }
                None => return,
            }
            let Some(i) = self.cur else { return };
            match self.tests[i].skip {
                Skip::Seen => continue,
                Skip::Clear => {
                    self.log(ctx, 3, "cond | fail clear");
                    self.fail.clear();
                    continue;
                }
                Skip::Fail => {
                    self.log(ctx, 3, &format!("cond | {}", self.tests[i].text));
                    self.fail.push(i);
                    continue;
                }
                _ => {
                    self.log(ctx, 3, &format!("test | {}", self.tests[i].text));
                    return;
                }
            }
        }
    }

    /// The next alternative after `i` not matched yet.
    fn alt(&self, i: usize) -> Option<usize> {
        let mut j = i + 1;
        while j < self.tests.len() && self.tests[j].skip == Skip::Seen {
            j += 1;
        }
        (j < self.tests.len() && self.tests[j].skip == Skip::Alt).then_some(j)
    }

    /// `logexp_match`: whether record `r` meets test `i`.
    fn matches(&mut self, ctx: &Ctx, i: usize, r: &Record) -> M {
        let t = &self.tests[i];
        let mut ok = true;
        let mut vxid_ok = false;
        match t.vxid {
            Want::Last => {
                ok &= self.vxid_last == Some(r.vxid);
                vxid_ok = ok;
            }
            Want::Is(v) => {
                ok &= v == r.vxid;
                vxid_ok = ok;
            }
            Want::Any => {}
        }
        match t.tag {
            Want::Last => ok &= self.tag_last == Some(r.tag),
            Want::Is(tag) => ok &= tag == r.tag,
            Want::Any => {}
        }
        if let (Some(re), Want::Is(tag)) = (&t.re, t.tag) {
            if tag == r.tag && !re.is_match(&r.data).unwrap_or(false) {
                ok = false;
            }
        }
        let alt = t.skip == Skip::Alt;
        let mut fail = t.skip == Skip::Fail;
        let mut skip = !ok
            && !alt
            && match t.skip {
                Skip::Any => true,
                Skip::Max(n) => n > self.skip_cnt,
                _ => false,
            };
        if skip && vxid_ok && r.tag == Tag::End {
            fail = true;
        }
        let legend = if fail {
            if ok {
                Some("fail")
            } else if skip {
                skip = false;
                Some("end")
            } else if self.m_arg {
                Some("fmiss")
            } else {
                None
            }
        } else if ok {
            Some("match")
        } else if skip && self.m_arg {
            Some("miss")
        } else if skip || alt {
            None
        } else {
            Some("err")
        };
        if let Some(l) = legend {
            self.log(
                ctx,
                4,
                &format!(
                    "{l:<5}| {:>10} {:<15} {} {}",
                    r.vxid,
                    r.tag.name(),
                    r.kind.letter(),
                    r.text()
                ),
            );
        }
        if ok {
            if alt {
                self.tests[i].skip = Skip::Seen;
            }
            return M::Ok;
        }
        if alt {
            let Some(j) = self.alt(i) else {
                return M::Fail;
            };
            self.log(ctx, 3, &format!("alt  | {}", self.tests[j].text));
            return self.matches(ctx, j, r);
        }
        if skip {
            M::Skip
        } else {
            M::Fail
        }
    }

    fn done(&self) -> bool {
        self.fail.is_empty() && self.cur.is_none() && self.started
    }

    /// Takes one record: `Err(())` when the expectations failed.
    fn record(&mut self, ctx: &Ctx, r: &Record) -> Result<(), ()> {
        for k in 0..self.fail.len() {
            let i = self.fail[k];
            if self.matches(ctx, i, r) == M::Ok {
                return Err(());
            }
        }
        let Some(i) = self.cur else {
            return Ok(());
        };
        match self.matches(ctx, i, r) {
            M::Fail => Err(()),
            M::Skip => {
                self.skip_cnt += 1;
                Ok(())
            }
            M::Ok => {
                self.vxid_last = Some(r.vxid);
                self.tag_last = Some(r.tag);
                self.skip_cnt = 0;
                self.next(ctx);
                Ok(())
            }
        }
    }
}

/// Where the records come from.
enum Source {
    Shellac(vapi::stream::Source),
    /// varnishlog and its output's lines (read by a thread of their own,
    /// so waiting for one can time out).
    Varnishlog(Child, std::sync::mpsc::Receiver<String>),
}

impl Source {
    /// The next record, `Ok(None)` when none came for a while, `Err` at
    /// the end of the log.
    fn next(&mut self) -> Result<Option<Record>, String> {
        match self {
            Source::Shellac(s) => match s.read() {
                Ok(Next::Item(Item::Record(r))) => Ok(Some(r)),
                Ok(Next::Item(Item::Lost(_))) | Ok(Next::Idle) => Ok(None),
                Ok(Next::Eof) => Err("the log ended".into()),
                Err(e) => Err(e.to_string()),
            },
            Source::Varnishlog(_, rx) => match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => Ok(parse_raw_line(&l)),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(None),
                Err(_) => Err("varnishlog ended".into()),
            },
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Source::Varnishlog(c, _) = self {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A line of `varnishlog -g raw`: `VXID TAG KIND DATA`.
pub fn parse_raw_line(l: &str) -> Option<Record> {
    let l = l.trim_start();
    let (vxid, rest) = l.split_once(' ')?;
    let vxid = vxid.parse().ok()?;
    let rest = rest.trim_start();
    let (tag, rest) = rest.split_once(' ')?;
    let tag = Tag::lookup(tag).ok()?;
    let rest = rest.trim_start();
    let mut ch = rest.chars();
    let kind = match ch.next()? {
        'c' => Kind::Client,
        'b' => Kind::Backend,
        _ => Kind::None,
    };
    let data = ch.as_str().strip_prefix(' ').unwrap_or(ch.as_str());
    Some(Record {
        vxid,
        tag,
        kind,
        data: data.as_bytes().to_vec(),
    })
}

/// A declared logexpect.
pub struct Logexp {
    name: String,
    vname: String,
    d_arg: bool,
    grouping: Grouping,
    query: Option<String>,
    filter: Filter,
    m_arg: bool,
    err_arg: bool,
    timeout: Option<f64>,
    limit: Option<usize>,
    tests: Vec<(Skip, String, String, Option<String>)>,
    running: Option<JoinHandle<bool>>,
}

impl Logexp {
    /// A logexpect on varnish `vname`.
    pub fn new(name: &str, vname: &str) -> Logexp {
        Logexp {
            name: name.to_string(),
            vname: vname.to_string(),
            d_arg: false,
            grouping: Grouping::Vxid,
            query: None,
            filter: Filter::new(),
            m_arg: false,
            err_arg: false,
            timeout: None,
            limit: None,
            tests: Vec::new(),
            running: None,
        }
    }

    /// The logexpect's name (`l1`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The varnish it reads (`v1`).
    pub fn vname(&self) -> &str {
        &self.vname
    }

    /// Runs the arguments of one `logexpect` command, left to right. `v`
    /// is the varnish it reads (with `--varnishd`, its CLI places a
    /// marker in the log so the reader knows it is attached).
    pub fn command(
        &mut self,
        ctx: &Arc<Ctx>,
        args: &[Token],
        mut v: Option<&mut crate::varnish::Varnish>,
    ) -> R<()> {
        let mut i = 0;
        while i < args.len() {
            if ctx.stopped() {
                return Err(Abort);
            }
            let a = args[i].text().into_owned();
            let me = self.name.clone();
            let at = i;
            let val = |k: usize| -> R<String> {
                args.get(at + k)
                    .map(|t| t.text().into_owned())
                    .ok_or_else(|| ctx.fatal(&me, format!("Missing {a} argument")))
            };
            if a == "-wait" {
                if self.running.is_none() {
                    return Err(ctx.fatal(&self.name, format!("logexp not -started '{a}'")));
                }
                self.wait(ctx)?;
                i += 1;
                continue;
            }
            // Changing a running logexpect waits for it first.
            if self.running.is_some() {
                self.wait(ctx)?;
            }
            match a.as_str() {
                "-v" => {
                    if val(1)? != self.vname {
                        return Err(ctx.fatal(&self.name, "-v argument cannot change"));
                    }
                    i += 1;
                }
                "-d" => {
                    self.d_arg = crate::expect::strtoul(&val(1)?) != 0;
                    i += 1;
                }
                "-g" => {
                    let g = val(1)?;
                    self.grouping = Grouping::parse(&g)
                        .ok_or_else(|| ctx.fatal(&self.name, format!("Unknown grouping '{g}'")))?;
                    i += 1;
                }
                "-q" => {
                    self.query = Some(val(1)?);
                    i += 1;
                }
                "-m" => self.m_arg = !self.m_arg,
                "-err" => self.err_arg = !self.err_arg,
                "-start" => self.start(ctx, v.as_deref_mut())?,
                "-run" => {
                    self.start(ctx, v.as_deref_mut())?;
                    self.wait(ctx)?;
                }
                "-T" => {
                    self.timeout = val(1)?.trim().parse().ok();
                    i += 1;
                }
                "-L" => {
                    self.limit = val(1)?.trim().parse().ok();
                    i += 1;
                }
                o if o.starts_with('-') && o.len() == 2 => {
                    // As varnishtest: every VSL option takes the next
                    // argument, even those that ignore it (-b -c -C).
                    let c = o.chars().nth(1).unwrap_or('?');
                    let v = val(1)?;
                    i += 1;
                    self.filter
                        .arg(c, &v)
                        .map_err(|e| ctx.fatal(&self.name, e))?;
                }
                o if o.starts_with('-') => {
                    return Err(ctx.fatal(&self.name, format!("Unknown logexp argument: {o}")));
                }
                _ => self.spec(ctx, &args[i])?,
            }
            i += 1;
        }
        Ok(())
    }

    /// Reads the expectations of a spec.
    fn spec(&mut self, ctx: &Ctx, spec: &Token) -> R<()> {
        self.tests.clear();
        let cmds =
            tokenize(&spec.bytes, spec.line).map_err(|e| ctx.fatal(&self.name, e.to_string()))?;
        for c in cmds {
            let av: Vec<String> = c.tokens.iter().map(|t| t.text().into_owned()).collect();
            let syntax = || ctx.fatal(&self.name, "Syntax error");
            match av[0].as_str() {
                "expect" => {
                    if av.len() < 4 || av.len() > 5 {
                        return Err(syntax());
                    }
                    let skip = match av[1].as_str() {
                        "*" => Skip::Any,
                        "?" => Skip::Alt,
                        n => Skip::Max(n.parse().map_err(|_| {
                            ctx.fatal(&self.name, format!("Not a positive integer: '{n}'"))
                        })?),
                    };
                    self.tests
                        .push((skip, av[2].clone(), av[3].clone(), av.get(4).cloned()));
                }
                "fail" => match av.get(1).map(String::as_str) {
                    Some("clear") => {
                        self.tests
                            .push((Skip::Clear, String::new(), String::new(), None))
                    }
                    Some("add") => {
                        if av.len() < 4 || av.len() > 5 {
                            return Err(syntax());
                        }
                        self.tests.push((
                            Skip::Fail,
                            av[2].clone(),
                            av[3].clone(),
                            av.get(4).cloned(),
                        ));
                    }
                    Some(x) => {
                        return Err(ctx.fatal(&self.name, format!("Unknown fail argument '{x}'")))
                    }
                    None => return Err(syntax()),
                },
                "abort" => return Err(ctx.fatal(&self.name, "abort")),
                other => return Err(ctx.fatal(&self.name, format!("Unknown command: \"{other}\""))),
            }
        }
        Ok(())
    }

    /// Compiles the expectations (errors are the test's).
    fn compile(&self, ctx: &Ctx) -> R<Vec<Test>> {
        let mut out = Vec::new();
        for (skip, vxid, tag, re) in &self.tests {
            if *skip == Skip::Clear {
                out.push(Test {
                    skip: *skip,
                    vxid: Want::Any,
                    tag: Want::Any,
                    re: None,
                    text: "fail clear".into(),
                });
                continue;
            }
            let vx = match vxid.as_str() {
                "*" => Want::Any,
                "=" => Want::Last,
                n => Want::Is(n.parse().map_err(|_| {
                    ctx.fatal(&self.name, format!("Not a positive integer: '{n}'"))
                })?),
            };
            let tg = match tag.as_str() {
                "*" => Want::Any,
                "=" => Want::Last,
                t => Want::Is(
                    Tag::lookup(t)
                        .map_err(|_| ctx.fatal(&self.name, format!("Unknown tag name: '{t}'")))?,
                ),
            };
            let rx = match re {
                Some(r) => Some(
                    Regex::new(r)
                        .map_err(|e| ctx.fatal(&self.name, format!("Regex error ({e}): '{r}'")))?,
                ),
                None => None,
            };
            let head = match skip {
                Skip::Fail => "fail add".to_string(),
                Skip::Any => "expect *".to_string(),
                Skip::Alt => "expect ?".to_string(),
                Skip::Max(n) => format!("expect {n}"),
                _ => "expect".to_string(),
            };
            let text = match re {
                Some(r) => format!("{head} {vxid} {tag} \"{r}\""),
                None => format!("{head} {vxid} {tag} "),
            };
            out.push(Test {
                skip: *skip,
                vxid: vx,
                tag: tg,
                re: rx,
                text,
            });
        }
        Ok(out)
    }

    /// Opens the log at its tail (or head) and starts matching in a
    /// thread.
    fn start(&mut self, ctx: &Arc<Ctx>, v: Option<&mut crate::varnish::Varnish>) -> R<()> {
        let tests = self.compile(ctx)?;
        let query = match &self.query {
            Some(q) => Some(
                Query::new(q, self.filter.caseless)
                    .map_err(|e| ctx.fatal(&self.name, format!("VSLQ_New: {e}")))?,
            ),
            None => None,
        };
        let workdir = ctx.tmpdir.join(&self.vname);
        let src = self.open(ctx, &workdir, v)?;
        let mut d = Dispatcher::new(self.grouping);
        if let Some(t) = self.timeout {
            d.timeout = Duration::from_secs_f64(t.max(0.0));
        }
        if let Some(l) = self.limit {
            d.limit = l.max(1);
        }
        let m = Matcher {
            name: self.name.clone(),
            tests,
            cur: None,
            started: false,
            skip_cnt: 0,
            vxid_last: None,
            tag_last: None,
            fail: Vec::new(),
            m_arg: self.m_arg,
        };
        let (ctx2, filter, err_arg, name, qtext) = (
            ctx.clone(),
            self.filter.clone(),
            self.err_arg,
            self.name.clone(),
            self.query.clone(),
        );
        let h = std::thread::Builder::new()
            .name(self.name.clone())
            .spawn(move || run(&ctx2, &name, src, d, (query, qtext), filter, m, err_arg))
            .map_err(|e| ctx.fatal(&self.name, format!("cannot start thread: {e}")))?;
        self.running = Some(h);
        Ok(())
    }

    fn open(
        &self,
        ctx: &Ctx,
        workdir: &std::path::Path,
        v: Option<&mut crate::varnish::Varnish>,
    ) -> R<Source> {
        if ctx.config.varnishd.is_some() {
            let mut cmd = Command::new("varnishlog");
            cmd.arg("-n").arg(workdir).args(["-g", "raw"]);
            let mut child = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| ctx.fatal(&self.name, format!("cannot run varnishlog: {e}")))?;
            let out = child
                .stdout
                .take()
                .ok_or_else(|| ctx.fatal(&self.name, "varnishlog has no output"))?;
            let (tx, rx) = std::sync::mpsc::channel();
            let _ = std::thread::Builder::new().spawn(move || {
                for l in BufReader::new(out).lines() {
                    let Ok(l) = l else { break };
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
            let mut src = Source::Varnishlog(child, rx);
            let marker = self.attached(ctx, &mut src, v)?;
            if self.d_arg {
                // varnishtest's `-d 1` reads from the head and goes on
                // following; varnishlog does one or the other. The head
                // (`varnishlog -d`) up to the marker the follower started
                // after, then what the follower reads.
                let head = Command::new("varnishlog")
                    .arg("-n")
                    .arg(workdir)
                    .args(["-g", "raw", "-d"])
                    .stderr(Stdio::null())
                    .output()
                    .map_err(|e| ctx.fatal(&self.name, format!("cannot run varnishlog: {e}")))?;
                let (tx, rx) = std::sync::mpsc::channel();
                let Source::Varnishlog(_, follower) = &mut src else {
                    return Err(Abort);
                };
                let tail = std::mem::replace(follower, rx);
                for l in String::from_utf8_lossy(&head.stdout).lines() {
                    if parse_raw_line(l).is_some_and(|r| r.tag == Tag::CLI && r.text() == marker) {
                        break;
                    }
                    let _ = tx.send(l.to_string());
                }
                let _ = std::thread::Builder::new().spawn(move || {
                    while let Ok(l) = tail.recv() {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                });
            }
            return Ok(src);
        }
        // The instance directory tells where the log is once serve is up.
        let admin: PathBuf = workdir.join("_.admin");
        let deadline = Instant::now() + ctx.config.max_duration / 3;
        let (addr, shm, token) = loop {
            let text = std::fs::read_to_string(&admin).unwrap_or_default();
            if let Some(a) = text.lines().find_map(|l| l.strip_prefix("H ")) {
                let shm = text
                    .lines()
                    .find_map(|l| l.strip_prefix("V "))
                    .map(PathBuf::from);
                // With -S the admin HTTP API wants its bearer token.
                let token = text
                    .lines()
                    .find_map(|l| l.strip_prefix("S "))
                    .and_then(|f| std::fs::read(f).ok())
                    .map(|secret| crate::cli::http_token(&secret));
                break (a.to_string(), shm, token);
            }
            if Instant::now() > deadline {
                return Err(ctx.fatal(
                    &self.name,
                    format!("VSM_Attach: no log at {}", workdir.display()),
                ));
            }
            ctx.sleep(Duration::from_millis(50))?;
        };
        let mut s = vapi::stream::Source::open(
            shm.as_deref(),
            Some(&addr),
            token.as_deref(),
            self.d_arg,
            true,
        )
        .map_err(|e| ctx.fatal(&self.name, format!("VSL_CursorVSM: {e}")))?;
        s.set_timeout(Duration::from_millis(100))
            .map_err(|e| ctx.fatal(&self.name, e.to_string()))?;
        Ok(Source::Shellac(s))
    }

    /// varnishlog says nothing when it has attached: a CLI command the
    /// cache logs (`backend.list MARKER`, as `CLI Rd backend.list
    /// MARKER`, a new marker each time) is sent until one shows, and
    /// what came before is dropped (it was logged before `-start`).
    /// Returns the record's text.
    fn attached(
        &self,
        ctx: &Ctx,
        src: &mut Source,
        mut v: Option<&mut crate::varnish::Varnish>,
    ) -> R<String> {
        let Source::Varnishlog(_, rx) = src else {
            return Ok(String::new());
        };
        let mut sent = 0u32;
        let deadline = Instant::now() + ctx.config.max_duration / 3;
        // Sent again every half second until it shows.
        let mut last = Instant::now() - Duration::from_secs(1);
        loop {
            if ctx.stopped() || Instant::now() > deadline {
                return Err(ctx.fatal(&self.name, "varnishlog did not attach"));
            }
            if last.elapsed() >= Duration::from_millis(500) {
                if let Some(v) = v.as_deref_mut() {
                    sent += 1;
                    v.ask(ctx, &format!("backend.list {}-attached-{sent}", self.name))?;
                }
                last = Instant::now();
            }
            let l = match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => l,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(_) => return Err(ctx.fatal(&self.name, "varnishlog ended")),
            };
            if let Some(rec) = parse_raw_line(&l) {
                let marker = format!("Rd backend.list {}-attached-", self.name);
                if rec.tag == Tag::CLI && rec.text().starts_with(&marker) {
                    return Ok(rec.text().into_owned());
                }
            }
        }
    }

    /// Waits for the thread; its failure is the test's.
    pub fn wait(&mut self, ctx: &Ctx) -> R<()> {
        let Some(h) = self.running.take() else {
            return Ok(());
        };
        ctx.log.log(2, &self.name, "Waiting for logexp");
        match h.join() {
            Ok(true) => Ok(()),
            Ok(false) => Err(Abort),
            Err(_) => Err(ctx.fatal(&self.name, "logexpect thread panicked")),
        }
    }

    /// Whether its thread runs.
    pub fn running(&self) -> bool {
        self.running.is_some()
    }

    /// End of test: a running logexpect is stopped (its thread sees the
    /// test stop).
    pub fn reset(&mut self) {
        if let Some(h) = self.running.take() {
            let _ = h.join();
        }
    }
}

/// The logexpect thread: records → groups → query → filter → matcher.
/// Returns whether it succeeded.
#[allow(clippy::too_many_arguments)]
fn run(
    ctx: &Ctx,
    name: &str,
    mut src: Source,
    mut d: Dispatcher,
    (query, qtext): (Option<Query>, Option<String>),
    filter: Filter,
    mut m: Matcher,
    err_arg: bool,
) -> bool {
    ctx.log.log(4, name, "begin|");
    if let Some(q) = &qtext {
        ctx.log.log(4, name, &format!("qry  | {q}"));
    }
    m.next(ctx);
    // A debugging aid: `VTC_LOG_DUMP=1` shows every record the
    // expectations see (they show only those they match).
    let dump = std::env::var_os("VTC_LOG_DUMP").is_some();
    let mut last_expire = Instant::now();
    let failed = |ctx: &Ctx| {
        if err_arg {
            ctx.log.log(4, name, "done | failed as expected");
            true
        } else {
            ctx.fatal(name, "bad  | expectation failed");
            false
        }
    };
    while !m.done() {
        if ctx.stopped() {
            return false;
        }
        let groups = match src.next() {
            Ok(Some(r)) => d.feed(r),
            Ok(None) => Vec::new(),
            Err(e) => {
                ctx.fatal(name, format!("bad  | dispatch failed ({e})"));
                return false;
            }
        };
        let mut groups = groups;
        if last_expire.elapsed() >= Duration::from_millis(500) {
            last_expire = Instant::now();
            groups.extend(d.expire());
        }
        for g in groups {
            if query.as_ref().is_some_and(|q| !q.matches(&g)) {
                continue;
            }
            for t in &g {
                for r in &t.records {
                    if !filter.matches(r) {
                        continue;
                    }
                    if dump {
                        ctx.log.log(
                            4,
                            name,
                            &format!(
                                "vsl  | {:>10} {:<15} {} {}",
                                r.vxid,
                                r.tag.name(),
                                r.kind.letter(),
                                r.text()
                            ),
                        );
                    }
                    if m.record(ctx, r).is_err() {
                        return failed(ctx);
                    }
                    if m.done() {
                        break;
                    }
                }
                if m.done() {
                    break;
                }
            }
            if m.done() {
                break;
            }
        }
    }
    ctx.log.log(4, name, "done |");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_lines() {
        let r = parse_raw_line("      1002 ReqURL         c /x y").unwrap();
        assert_eq!((r.vxid, r.tag, r.kind), (1002, Tag::ReqURL, Kind::Client));
        assert_eq!(r.data, b"/x y");
        let r = parse_raw_line("         0 CLI            - Rd ping").unwrap();
        assert_eq!(
            (r.vxid, r.kind, r.text().as_ref()),
            (0, Kind::None, "Rd ping")
        );
        let r = parse_raw_line("      1002 End            c ").unwrap();
        assert!(r.data.is_empty());
        assert!(parse_raw_line("garbage").is_none());
    }
}
