//! `barrier bN cond N [-cyclic]` / `barrier bN sync`: thread rendezvous
//! points shared by the top-level script, clients and servers.
//!
//! Semantics (varnishtest 7.1): the N-th `sync` wakes all waiters; a
//! non-cyclic barrier that has fired refuses further `sync`s ("more waiters
//! than expected"), a cyclic one starts over. Waiting gives up when the
//! test stops.

use std::io::{ErrorKind, Read};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::ctx::{lock, Abort, Ctx, R, SLICE};

/// One barrier.
#[derive(Debug)]
pub struct Barrier {
    name: String,
    state: Arc<Mutex<State>>,
    cond: Condvar,
    /// Set at the end of the test: a socket barrier's thread stops.
    done: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct State {
    expected: u32,
    waiters: u32,
    cycle: u64,
    cyclic: bool,
    initialized: bool,
    /// For `sock` barriers: the address peers connect to.
    sock: Option<String>,
}

impl Barrier {
    fn new(name: &str) -> Barrier {
        Barrier {
            name: name.to_string(),
            state: Arc::new(Mutex::new(State::default())),
            cond: Condvar::new(),
            done: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Ends a socket barrier's accept thread (end of test).
    pub fn finish(&self) {
        self.done.store(true, Ordering::SeqCst);
    }

    /// Socket barrier (`barrier bN sock N`): peers — including other
    /// processes, through `${bN_sock}` — connect; when the N-th arrives all
    /// connections are closed, which releases everyone.
    fn start_sock(&self, ctx: &Ctx, id: &str) -> R<()> {
        let l = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| ctx.fatal(id, format!("Barrier({}) listen fails: {e}", self.name)))?;
        let addr = l
            .local_addr()
            .map_err(|e| ctx.fatal(id, format!("Barrier({}) getsockname: {e}", self.name)))?;
        let _ = l.set_nonblocking(true);
        ctx.define(&self.name, "addr", addr.ip().to_string());
        ctx.define(&self.name, "port", addr.port().to_string());
        ctx.define(&self.name, "sock", addr.to_string());
        lock(&self.state).sock = Some(addr.to_string());
        let (state, done) = (self.state.clone(), self.done.clone());
        let spawned = std::thread::Builder::new().spawn(move || {
            let mut conns = Vec::new();
            while !done.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        conns.push(c);
                        let mut st = lock(&state);
                        st.waiters += 1;
                        if st.waiters >= st.expected {
                            conns.clear();
                            if st.cyclic {
                                st.waiters = 0;
                            } else {
                                break;
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
        });
        spawned.map_err(|e| ctx.fatal(id, format!("Barrier({}) thread: {e}", self.name)))?;
        Ok(())
    }

    fn sock_sync(&self, ctx: &Ctx, id: &str, addr: &str) -> R<()> {
        let mut c = TcpStream::connect(addr)
            .map_err(|e| ctx.fatal(id, format!("Barrier({}) connection failed: {e}", self.name)))?;
        let _ = c.set_read_timeout(Some(SLICE));
        let mut buf = [0u8; 32];
        loop {
            if ctx.stopped() {
                return Err(Abort);
            }
            match c.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    return Err(
                        ctx.fatal(id, format!("Barrier({}) unexpected data ({n}B)", self.name))
                    )
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => {
                    return Err(ctx.fatal(id, format!("Barrier({}) read failed: {e}", self.name)))
                }
            }
        }
    }

    /// Waits until `expected` threads have called `sync`.
    pub fn sync(&self, ctx: &Ctx, id: &str) -> R<()> {
        let sock = lock(&self.state).sock.clone();
        if let Some(addr) = sock {
            return self.sock_sync(ctx, id, &addr);
        }
        let mut st = lock(&self.state);
        if !st.initialized {
            drop(st);
            return Err(ctx.fatal(
                id,
                format!("Barrier({}) use error: not initialized", self.name),
            ));
        }
        if st.waiters >= st.expected {
            let e = st.expected;
            drop(st);
            return Err(ctx.fatal(
                id,
                format!(
                    "Barrier({}) use error: more waiters than the {e} expected",
                    self.name
                ),
            ));
        }
        st.waiters += 1;
        if st.waiters == st.expected {
            ctx.log.log(
                4,
                id,
                &format!("Barrier({}) wake {}", self.name, st.expected),
            );
            st.cycle += 1;
            if st.cyclic {
                st.waiters = 0;
            }
            self.cond.notify_all();
            return Ok(());
        }
        ctx.log.log(
            4,
            id,
            &format!(
                "Barrier({}) wait {} of {}",
                self.name, st.waiters, st.expected
            ),
        );
        let c = st.cycle;
        while st.cycle == c {
            if ctx.stopped() {
                return Err(Abort);
            }
            st = self
                .cond
                .wait_timeout(st, SLICE)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        Ok(())
    }
}

/// Runs a `barrier` command (`args` are the tokens after `barrier`).
pub fn cmd_barrier(ctx: &Ctx, id: &str, args: &[String]) -> R<()> {
    let Some(name) = args.first() else {
        return Err(ctx.fatal(id, "barrier: missing name"));
    };
    if !name.starts_with('b') {
        return Err(ctx.fatal(id, format!("Barrier name must start with 'b' ({name})")));
    }
    let b = {
        let mut map = lock(&ctx.barriers);
        map.entry(name.clone())
            .or_insert_with(|| Arc::new(Barrier::new(name)))
            .clone()
    };
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            kind @ ("cond" | "sock") => {
                let n = args
                    .get(i + 1)
                    .and_then(|s| s.trim().parse::<u32>().ok())
                    .filter(|&n| n > 0);
                let Some(n) = n else {
                    return Err(ctx.fatal(id, format!("Barrier({name}) bad count")));
                };
                let mut st = lock(&b.state);
                if st.initialized {
                    drop(st);
                    return Err(ctx.fatal(id, format!("Barrier({name}) already initialized")));
                }
                st.initialized = true;
                st.expected = n;
                drop(st);
                if kind == "sock" {
                    b.start_sock(ctx, id)?;
                }
                i += 2;
            }
            "-cyclic" => {
                let mut st = lock(&b.state);
                if st.waiters != 0 {
                    drop(st);
                    return Err(ctx.fatal(id, format!("Barrier({name}) use error: already in use")));
                }
                st.cyclic = true;
                i += 1;
            }
            "sync" => {
                b.sync(ctx, id)?;
                i += 1;
            }
            other => {
                return Err(ctx.fatal(id, format!("Unknown barrier argument: {other}")));
            }
        }
    }
    Ok(())
}
