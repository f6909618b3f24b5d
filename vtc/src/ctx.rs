//! The shared state of one running test: its log, macro table, barriers,
//! child processes, and the abort flag every thread polls.
//!
//! varnishtest stops a test at the first fatal error in any thread (a
//! client, a server, the top-level script). Rust threads cannot be
//! cancelled, so every blocking wait in this crate (socket reads, accepts,
//! barriers, delays, CLI answers) waits in short slices and gives up as soon
//! as [`Ctx::stopped`] turns true. That also implements `-t` (the runner
//! sets the flag when a test runs too long) and `server -break`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::barrier::Barrier;
use crate::macros::Macros;

thread_local! {
    /// A per-thread stop flag (a server's `-break`), checked by
    /// [`Ctx::stopped`] in addition to the test-wide one.
    static THREAD_CANCEL: std::cell::RefCell<Option<Arc<AtomicBool>>> =
        const { std::cell::RefCell::new(None) };
}

/// Makes [`Ctx::stopped`] on this thread also honour `flag` (used by
/// server threads so `server sN -break` interrupts delays and barriers).
pub fn set_thread_cancel(flag: Option<Arc<AtomicBool>>) {
    THREAD_CANCEL.with(|c| *c.borrow_mut() = flag);
}

/// How long one blocking wait lasts before re-checking the abort flag.
pub const SLICE: Duration = Duration::from_millis(50);

/// Marker error: the test (or this thread) must stop. The reason, if it is
/// a failure, has already been recorded with [`Ctx::fatal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abort;

/// Result type of everything that runs test commands.
pub type R<T> = Result<T, Abort>;

/// Final state of a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every command ran and nothing failed.
    Passed,
    /// A fatal error (or a timeout).
    Failed,
    /// A `feature` (or an unsupported command) said the test cannot run.
    Skipped,
}

/// The test log: varnishtest-style lines, kept in memory and printed when
/// the test fails or `-v` is given.
#[derive(Debug)]
pub struct Log {
    start: Instant,
    lines: Mutex<Vec<String>>,
}

impl Log {
    fn new() -> Log {
        Log {
            start: Instant::now(),
            lines: Mutex::new(Vec::new()),
        }
    }

    /// Adds a line. `lvl` 0 is an error, 1–4 are varnishtest's verbosity
    /// levels (shown as that many stars).
    pub fn log(&self, lvl: i32, id: &str, msg: &str) {
        let stars = match lvl {
            i32::MIN..=0 => "----",
            1 => "*   ",
            2 => "**  ",
            3 => "*** ",
            _ => "****",
        };
        let t = self.start.elapsed().as_secs_f64();
        let mut lines = lock(&self.lines);
        for (i, l) in msg.split('\n').enumerate() {
            if i > 0 && l.is_empty() {
                continue;
            }
            lines.push(format!("{stars} {id:<4} {t:>4.1} {l}"));
        }
    }

    /// Logs bytes the way varnishtest dumps protocol data: `pfx|` and the
    /// text with non-printable bytes escaped, one log line per line.
    pub fn dump(&self, lvl: i32, id: &str, pfx: &str, data: &[u8]) {
        let mut out = String::new();
        let mut first = true;
        let mut cur = String::new();
        let limit = 8192;
        for (n, &b) in data.iter().enumerate() {
            if n >= limit {
                cur.push_str("[...]");
                break;
            }
            match b {
                b'\n' => {
                    cur.push_str("\\n");
                    if !first {
                        out.push('\n');
                    }
                    out.push_str(&format!("{pfx}|{cur}"));
                    first = false;
                    cur.clear();
                }
                b'\r' => cur.push_str("\\r"),
                b'\t' => cur.push_str("\\t"),
                b'\\' => cur.push_str("\\\\"),
                0x20..=0x7e => cur.push(b as char),
                _ => cur.push_str(&format!("\\x{b:02x}")),
            }
        }
        if !cur.is_empty() || first {
            if !first {
                out.push('\n');
            }
            out.push_str(&format!("{pfx}|{cur}"));
        }
        self.log(lvl, id, &out);
    }

    /// All lines so far.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.lines).clone()
    }
}

/// Locks a mutex, ignoring poisoning (a panicking test thread must not take
/// the runner down with it).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Settings a test needs from the command line.
#[derive(Debug, Clone)]
pub struct TestConfig {
    /// `-t`: the test's time limit; sessions time out after half of it,
    /// as in varnishtest.
    pub max_duration: Duration,
    /// The varnishd to run for `varnish vN` (`--varnishd`), or `None` to
    /// run `shellac serve`.
    pub varnishd: Option<PathBuf>,
    /// The `shellac` binary for `serve` when `varnishd` is `None`.
    pub shellac: PathBuf,
    /// `-D name=val` macros.
    pub defines: Vec<(String, String)>,
}

/// Shared state of one test.
#[derive(Debug)]
pub struct Ctx {
    /// The log.
    pub log: Log,
    /// The macro table, shared by all threads of the test.
    pub macros: Mutex<Macros>,
    stop: AtomicBool,
    failure: Mutex<Option<String>>,
    skipped: AtomicBool,
    /// Barriers by name.
    pub barriers: Mutex<HashMap<String, Arc<Barrier>>>,
    /// Process-group ids of child processes, killed when the test aborts.
    pub pgids: Mutex<Vec<i32>>,
    /// This test's temporary directory (`${tmpdir}`).
    pub tmpdir: PathBuf,
    /// Command-line settings.
    pub config: TestConfig,
}

impl Ctx {
    /// A fresh context.
    pub fn new(macros: Macros, tmpdir: PathBuf, config: TestConfig) -> Ctx {
        Ctx {
            log: Log::new(),
            macros: Mutex::new(macros),
            stop: AtomicBool::new(false),
            failure: Mutex::new(None),
            skipped: AtomicBool::new(false),
            barriers: Mutex::new(HashMap::new()),
            pgids: Mutex::new(Vec::new()),
            tmpdir,
            config,
        }
    }

    /// Whether every thread of the test must stop now.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
            || THREAD_CANCEL.with(|c| {
                c.borrow()
                    .as_ref()
                    .is_some_and(|f| f.load(Ordering::SeqCst))
            })
    }

    /// Records a fatal error (the first one is the test's reason), logs it
    /// and stops the test. Returns [`Abort`] for `?`/`return Err`.
    pub fn fatal(&self, id: &str, msg: impl AsRef<str>) -> Abort {
        let msg = msg.as_ref();
        if THREAD_CANCEL.with(|c| {
            c.borrow()
                .as_ref()
                .is_some_and(|f| f.load(Ordering::SeqCst))
        }) {
            // This thread is being stopped (`-break`, end of test), as a
            // cancelled thread in varnishtest: what it hits now is no
            // failure.
            self.log.log(3, id, &format!("{msg} (ignored: stopping)"));
            return Abort;
        }
        self.log.log(0, id, msg);
        let mut f = lock(&self.failure);
        if f.is_none() && !self.skipped.load(Ordering::SeqCst) {
            *f = Some(format!("{id}: {msg}"));
        }
        drop(f);
        self.stop.store(true, Ordering::SeqCst);
        Abort
    }

    /// Stops the test as skipped (lacking feature, unsupported command).
    pub fn skip(&self, id: &str, msg: &str) -> Abort {
        self.log.log(1, id, msg);
        if lock(&self.failure).is_none() {
            self.skipped.store(true, Ordering::SeqCst);
        }
        self.stop.store(true, Ordering::SeqCst);
        Abort
    }

    /// Stops all threads without recording a failure (end of test).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// The outcome as it stands.
    pub fn outcome(&self) -> Outcome {
        if lock(&self.failure).is_some() {
            Outcome::Failed
        } else if self.skipped.load(Ordering::SeqCst) {
            Outcome::Skipped
        } else {
            Outcome::Passed
        }
    }

    /// The first failure message.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// Sleeps `d`, in slices; [`Abort`] if the test stops meanwhile.
    pub fn sleep(&self, d: Duration) -> R<()> {
        let end = Instant::now() + d;
        loop {
            if self.stopped() {
                return Err(Abort);
            }
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(SLICE));
        }
    }

    /// Expands macros in `text` with the current table.
    pub fn expand(&self, id: &str, text: &str, line: u32) -> R<String> {
        let m = lock(&self.macros);
        m.expand_str(text, line)
            .map_err(|e| self.fatal(id, e.to_string()))
    }

    /// Defines `<instance>_<name>`.
    pub fn define(&self, instance: &str, name: &str, value: impl Into<String>) {
        let value = value.into();
        self.log
            .log(4, instance, &format!("macro def {instance}_{name}={value}"));
        lock(&self.macros).define_instance(instance, name, value);
    }

    /// Session timeout: half the test's time limit, as varnishtest.
    pub fn session_timeout(&self) -> Duration {
        self.config.max_duration / 2
    }

    /// Kills every registered child process group (abort path).
    pub fn kill_children(&self) {
        for &pg in lock(&self.pgids).iter() {
            // SAFETY: kill(2) with a negative pid signals a process group
            // we created; it has no memory-safety preconditions.
            unsafe {
                libc::kill(-pg, libc::SIGKILL);
            }
        }
    }
}
