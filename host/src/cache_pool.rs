//! Worker accounting in Varnish's terms (its `cache_pool` and
//! `cache_wrk`). Varnish serves each session on a worker thread from a
//! pool: `thread_pools` pools of `thread_pool_min` to `thread_pool_max`
//! threads, more bred when all are busy, idle ones above the minimum
//! retired after `thread_pool_timeout`. Shellac serves sessions as tasks
//! on a few runtime threads, so its "workers" are the session slots
//! Varnish would hold: `MAIN.threads` follows the pools' sizing and the
//! sessions being served, with the `WorkThread` records and
//! `threads_created`/`threads_destroyed`/`threads_limited` counters an
//! operator watches for pool pressure.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Sessions being served now.
static BUSY: AtomicU64 = AtomicU64::new(0);

/// Counts a session as busy while it lives.
pub struct Busy(());

impl Busy {
    pub fn new() -> Busy {
        BUSY.fetch_add(1, Relaxed);
        Busy(())
    }
}

impl Default for Busy {
    fn default() -> Self {
        Busy::new()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.fetch_sub(1, Relaxed);
    }
}

/// The pools' workers, by name, newest last.
struct Pool {
    workers: Vec<u64>,
    next_id: u64,
    /// When a worker was last started or retired (idle ones above the
    /// minimum go one per `thread_pool_timeout`).
    changed: Instant,
    limited: bool,
}

impl Pool {
    fn start(&mut self) {
        self.next_id += 1;
        let id = 0x7f00_0000_0000 + self.next_id * 0x1000;
        self.workers.push(id);
        crate::vsc::MAIN.threads_created.inc();
        crate::vsl::log0(vapi::Tag::WorkThread, format_args!("0x{id:x} start"));
    }

    fn retire(&mut self) {
        if let Some(id) = self.workers.pop() {
            crate::vsc::MAIN.threads_destroyed.inc();
            crate::vsl::log0(vapi::Tag::WorkThread, format_args!("0x{id:x} end"));
        }
    }

    /// One look at the parameters and the load.
    fn herd(&mut self, p: &crate::mgt_param::Params, now: Instant) {
        let pools = p.num("thread_pools").max(1.0) as usize;
        let max = pools * p.num("thread_pool_max").max(1.0) as usize;
        let min = (pools * p.num("thread_pool_min").max(0.0) as usize).min(max);
        let timeout = Duration::from_secs_f64(p.num("thread_pool_timeout").max(0.0));
        let busy = BUSY.load(Relaxed) as usize;
        let want = busy.max(min);
        if want > max && !self.limited {
            crate::vsc::MAIN.threads_limited.inc();
        }
        self.limited = want > max;
        let want = want.min(max);
        let before = self.workers.len();
        while self.workers.len() < want {
            self.start();
        }
        while self.workers.len() > max {
            self.retire();
        }
        if self.workers.len() > want && now.duration_since(self.changed) >= timeout {
            self.retire();
        }
        if self.workers.len() != before {
            self.changed = now;
        }
        crate::vsc::MAIN.pools.set(pools as u64);
        crate::vsc::MAIN.threads.set(self.workers.len() as u64);
    }
}

/// The herder (Varnish's `pool_herder`): sizes the pools every 100 ms;
/// ends when the context is gone.
pub async fn herder(ctx: std::sync::Weak<crate::cache_req_fsm::Ctx>) {
    let mut pool = Pool {
        workers: Vec::new(),
        next_id: 0,
        changed: Instant::now(),
        limited: false,
    };
    loop {
        {
            let Some(ctx) = ctx.upgrade() else { return };
            pool.herd(&ctx.params(), Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
