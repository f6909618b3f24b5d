//! `barrier bN cond N [-cyclic]` / `barrier bN sync`: thread rendezvous
//! points shared by the top-level script, clients and servers.
//!
//! Semantics (varnishtest 7.1): the N-th `sync` wakes all waiters; a
//! non-cyclic barrier that has fired refuses further `sync`s ("more waiters
//! than expected"), a cyclic one starts over. Waiting gives up when the
//! test stops.

use std::sync::{Arc, Condvar, Mutex};

use crate::ctx::{lock, Abort, Ctx, R, SLICE};

/// One barrier.
#[derive(Debug)]
pub struct Barrier {
    name: String,
    state: Mutex<State>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct State {
    expected: u32,
    waiters: u32,
    cycle: u64,
    cyclic: bool,
    initialized: bool,
}

impl Barrier {
    fn new(name: &str) -> Barrier {
        Barrier {
            name: name.to_string(),
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
        }
    }

    /// Waits until `expected` threads have called `sync`.
    pub fn sync(&self, ctx: &Ctx, id: &str) -> R<()> {
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
            ctx.log
                .log(4, id, &format!("Barrier({}) wake {}", self.name, st.expected));
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
            &format!("Barrier({}) wait {} of {}", self.name, st.waiters, st.expected),
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
            "cond" | "sock" => {
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
                i += 2;
            }
            "-cyclic" => {
                let mut st = lock(&b.state);
                if st.waiters != 0 {
                    drop(st);
                    return Err(ctx.fatal(
                        id,
                        format!("Barrier({name}) use error: already in use"),
                    ));
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
