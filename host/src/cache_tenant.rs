//! Tenants: the namespaces requests run in. A tenant owns a cache index
//! (its objects, bans, purges and cache tags), the namespace of its
//! VMODs' shared state, and its quotas, so one tenant can never hit, ban
//! or purge another's objects, and a tenant over its quota degrades
//! alone. Requests use the default tenant (Varnish's one cache) unless
//! they reach their VCL through `return (vcl(LABEL))` and LABEL was
//! declared a tenant: then they are in LABEL's (see `docs/tenancy.md`).

use crate::cache_hash::{Cache, Storage};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The name of the tenant every request uses unless a label routes it
/// elsewhere (Varnish's one shared cache). Not a valid VCL name, so no
/// label can take it.
pub const DEFAULT: &str = "*";

/// Limits on one tenant; `None`: no limit of the tenant's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    /// Bytes its cached objects may hold; past it, its own least recently
    /// used objects are evicted.
    pub cache_bytes: Option<u64>,
    /// CPU milliseconds of VCL code one request may use in all; past it,
    /// the request fails with a 503.
    pub cpu_ms: Option<u64>,
    /// Bytes of linear memory a VCL instance may grow to while it runs
    /// one of the tenant's requests.
    pub wasm_memory: Option<u64>,
    /// Backend connections its fetches may hold at once; one more fails
    /// (503), like a backend's `.max_connections`.
    pub backend_conns: Option<u32>,
    /// Client requests it may have in progress at once (from the moment
    /// the request enters the tenant until its response is ready to
    /// send); more wait in its queue.
    pub requests: Option<u32>,
    /// Requests that may wait for one of `requests` (or for their turn
    /// under `request_rate`); one more gets a 503 at once, before any of
    /// the tenant's VCL runs. `None`: no bound.
    pub request_queue: Option<u32>,
    /// Client requests per second that may enter the tenant (bursts of a
    /// tenth of a second's worth pass at once); faster ones wait in the
    /// queue for their turn.
    pub request_rate: Option<u32>,
}

/// The quota keys, in the order `tenant.quota` shows them.
pub const KEYS: [&str; 7] = [
    "cache_bytes",
    "cpu_ms",
    "wasm_memory",
    "backend_conns",
    "requests",
    "request_queue",
    "request_rate",
];

impl Quota {
    /// Sets `key` from `value` (`none` or `0` lifts the limit); sizes take
    /// Varnish's suffixes (`k`, `m`, `g`, ...).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let none = value == "none" || value == "0";
        let bytes = || {
            crate::mgt_param::parse_bytes(value)
                .filter(|b| *b >= 0.0)
                .map(|b| b as u64)
                .ok_or_else(|| format!("{key}={value}: not a size"))
        };
        let int = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{key}={value}: not a whole number"))
        };
        let count = |v: u64| u32::try_from(v).map_err(|_| format!("{key}={value}: too large"));
        match key {
            "cache_bytes" => self.cache_bytes = if none { None } else { Some(bytes()?) },
            "wasm_memory" => self.wasm_memory = if none { None } else { Some(bytes()?) },
            "cpu_ms" => self.cpu_ms = if none { None } else { Some(int()?) },
            "backend_conns" => self.backend_conns = if none { None } else { Some(count(int()?)?) },
            "requests" => self.requests = if none { None } else { Some(count(int()?)?) },
            "request_rate" => self.request_rate = if none { None } else { Some(count(int()?)?) },
            // A queue of 0 is a limit (nobody waits); `none` lifts it.
            "request_queue" => {
                self.request_queue = if value == "none" {
                    None
                } else {
                    Some(count(int()?)?)
                }
            }
            _ => return Err(format!("Unknown quota {key} (one of {})", KEYS.join(", "))),
        }
        Ok(())
    }

    /// One key's value as `tenant.quota` shows it.
    pub fn show(&self, key: &str) -> String {
        let v = match key {
            "cache_bytes" => self.cache_bytes,
            "cpu_ms" => self.cpu_ms,
            "wasm_memory" => self.wasm_memory,
            "backend_conns" => self.backend_conns.map(u64::from),
            "requests" => self.requests.map(u64::from),
            "request_queue" => self.request_queue.map(u64::from),
            "request_rate" => self.request_rate.map(u64::from),
            _ => None,
        };
        v.map_or_else(|| "none".to_string(), |v| v.to_string())
    }
}

/// Nanoseconds since the first call: the clock of `request_rate`.
fn clock() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

/// A tenant.
pub struct Tenant {
    pub name: String,
    /// Its objects, bans and cache tags.
    pub cache: Arc<Cache>,
    quota: RwLock<Quota>,
    /// The quota's CPU and memory limits, read on hot paths without a
    /// lock (`u64::MAX`: none).
    cpu_ms: AtomicU64,
    wasm_memory: AtomicU64,
    max_conns: AtomicU32,
    /// `-s malloc,SIZE`: the budget when the quota sets none.
    storage: u64,
    /// Backend connections its fetches hold now.
    conns: AtomicU32,
    /// Requests failed for its CPU quota, and fetches refused for its
    /// connection quota (`tenant.list`).
    pub cpu_503: AtomicU64,
    pub conns_refused: AtomicU64,
    /// The `requests` quota (`u32::MAX`: none), read once per request
    /// that enters the tenant; the rest of admission runs only when set.
    max_requests: AtomicU32,
    /// The `request_queue` quota (`u32::MAX`: no bound).
    max_queue: AtomicU32,
    /// Whether `requests` or `request_rate` is set: the one load on the
    /// path of a request that enters a tenant without them.
    admission: AtomicBool,
    /// `request_rate` as nanoseconds between requests (0: none), and the
    /// theoretical arrival time of the next request (nanoseconds since
    /// [`clock`]'s start; the generic cell rate algorithm).
    rate_interval: AtomicU64,
    rate_tat: AtomicU64,
    /// Requests in progress under the `requests` quota, and waiting.
    requests: AtomicU32,
    waiting: AtomicU32,
    /// Wakes a waiting request when one in progress ends.
    wake: tokio::sync::Notify,
    /// Requests that had to wait for the `requests` quota, and requests
    /// refused because its queue was full (`tenant.list`).
    pub requests_queued: AtomicU64,
    pub requests_refused: AtomicU64,
}

/// A request's place under its tenant's `requests` quota, given up when
/// dropped (the request's response is ready, or it left the tenant).
pub struct RequestSlot(Arc<Tenant>);

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
        self.0.wake.notify_one();
    }
}

/// Counts a request waiting in a tenant's queue while it waits (also
/// when the wait is abandoned).
struct Waiting<'a>(&'a Tenant);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request the `requests` quota turned away: its queue was full.
#[derive(Debug, Clone, Copy)]
pub struct QueueFull {
    pub in_progress: u32,
    pub waiting: u32,
}

/// A fetch's claim on one of its tenant's backend connections.
pub struct TenantConn(Arc<Tenant>);

impl Drop for TenantConn {
    fn drop(&mut self) {
        self.0.conns.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for TenantConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TenantConn({})", self.0.name)
    }
}

impl Tenant {
    /// A tenant over `cache`, without quotas.
    pub fn new(name: &str, cache: Arc<Cache>) -> Tenant {
        let storage = cache.budget();
        Tenant {
            name: name.to_string(),
            cache,
            quota: RwLock::new(Quota::default()),
            cpu_ms: AtomicU64::new(u64::MAX),
            wasm_memory: AtomicU64::new(u64::MAX),
            max_conns: AtomicU32::new(u32::MAX),
            storage,
            conns: AtomicU32::new(0),
            cpu_503: AtomicU64::new(0),
            conns_refused: AtomicU64::new(0),
            max_requests: AtomicU32::new(u32::MAX),
            max_queue: AtomicU32::new(u32::MAX),
            admission: AtomicBool::new(false),
            rate_interval: AtomicU64::new(0),
            rate_tat: AtomicU64::new(0),
            requests: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
            wake: tokio::sync::Notify::new(),
            requests_queued: AtomicU64::new(0),
            requests_refused: AtomicU64::new(0),
        }
    }

    /// Its quota now.
    pub fn quota(&self) -> Quota {
        *self.quota.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces its quota; a smaller cache budget evicts at once.
    pub fn set_quota(&self, q: Quota) {
        *self.quota.write().unwrap_or_else(|p| p.into_inner()) = q;
        self.cpu_ms
            .store(q.cpu_ms.unwrap_or(u64::MAX), Ordering::Relaxed);
        self.wasm_memory
            .store(q.wasm_memory.unwrap_or(u64::MAX), Ordering::Relaxed);
        self.max_conns
            .store(q.backend_conns.unwrap_or(u32::MAX), Ordering::Relaxed);
        self.cache.set_budget(q.cache_bytes.unwrap_or(self.storage));
        self.max_queue
            .store(q.request_queue.unwrap_or(u32::MAX), Ordering::Relaxed);
        // `requests=0` would let nothing in: it means no limit, as 0
        // does for the other keys.
        self.max_requests.store(
            q.requests.filter(|&n| n > 0).unwrap_or(u32::MAX),
            Ordering::Release,
        );
        self.rate_interval.store(
            q.request_rate
                .filter(|&r| r > 0)
                .map_or(0, |r| 1_000_000_000 / u64::from(r)),
            Ordering::Relaxed,
        );
        self.admission.store(
            q.requests.is_some_and(|n| n > 0) || q.request_rate.is_some_and(|r| r > 0),
            Ordering::Release,
        );
        // Waiters recheck against the new limit.
        self.wake.notify_waiters();
    }

    /// Under `request_rate`: the wait before this request's turn (with
    /// its place in the queue), `None` when it may go at once, `Err`
    /// when it would have to wait and the queue is full.
    fn pace(&self) -> Result<Option<(std::time::Duration, Waiting<'_>)>, QueueFull> {
        let interval = self.rate_interval.load(Ordering::Relaxed);
        if interval == 0 {
            return Ok(None);
        }
        // A tenth of a second's worth passes at once.
        let tolerance = (100_000_000 / interval).max(1) * interval;
        let now = clock();
        loop {
            let tat = self.rate_tat.load(Ordering::Acquire);
            let next = tat.max(now) + interval;
            let early = (next - now).saturating_sub(tolerance);
            let waiting = if early == 0 {
                None
            } else {
                let queue = self.max_queue.load(Ordering::Relaxed);
                let before = self.waiting.fetch_add(1, Ordering::AcqRel);
                let w = Waiting(self);
                if before >= queue {
                    self.requests_refused.fetch_add(1, Ordering::Relaxed);
                    return Err(QueueFull {
                        in_progress: self.requests.load(Ordering::Relaxed),
                        waiting: before,
                    });
                }
                Some(w)
            };
            if self
                .rate_tat
                .compare_exchange(tat, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(waiting.map(|w| {
                    self.requests_queued.fetch_add(1, Ordering::Relaxed);
                    (std::time::Duration::from_nanos(early), w)
                }));
            }
        }
    }

    /// Admits a client request to the tenant under its `request_rate`
    /// and `requests` quotas: `Ok(None)` at once when it has neither (the
    /// usual case: one atomic load); else after its turn under the rate,
    /// with a slot under `requests` if set, perhaps after waiting in the
    /// tenant's queue; `Err` when the queue is full.
    pub async fn admit(self: &Arc<Self>) -> Result<Option<RequestSlot>, QueueFull> {
        if !self.admission.load(Ordering::Relaxed) {
            return Ok(None);
        }
        if let Some((wait, _waiting)) = self.pace()? {
            tokio::time::sleep(wait).await;
        }
        if self.max_requests.load(Ordering::Relaxed) == u32::MAX {
            return Ok(None);
        }
        self.admit_limited().await
    }

    /// Takes one of `max` places, if one is free.
    fn claim(self: &Arc<Self>, max: u32) -> Option<RequestSlot> {
        self.requests
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| RequestSlot(self.clone()))
    }

    async fn admit_limited(self: &Arc<Self>) -> Result<Option<RequestSlot>, QueueFull> {
        let max = self.max_requests.load(Ordering::Acquire);
        // Nobody jumps the queue: a free place goes to a newcomer only
        // when no one waits.
        if self.waiting.load(Ordering::Acquire) == 0 {
            if let Some(s) = self.claim(max) {
                return Ok(Some(s));
            }
        }
        let queue = self.max_queue.load(Ordering::Relaxed);
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(self);
        if before >= queue {
            self.requests_refused.fetch_add(1, Ordering::Relaxed);
            return Err(QueueFull {
                in_progress: self.requests.load(Ordering::Relaxed),
                waiting: before,
            });
        }
        self.requests_queued.fetch_add(1, Ordering::Relaxed);
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let max = self.max_requests.load(Ordering::Acquire);
            if max == u32::MAX {
                return Ok(None);
            }
            if let Some(s) = self.claim(max) {
                // Another waiter may fit too (the limit was raised).
                if self.requests.load(Ordering::Relaxed) < max {
                    self.wake.notify_one();
                }
                return Ok(Some(s));
            }
            notified.await;
        }
    }

    /// Client requests in progress under its `requests` quota, and
    /// waiting for one.
    pub fn requests(&self) -> (u32, u32) {
        (
            self.requests.load(Ordering::Relaxed),
            self.waiting.load(Ordering::Relaxed),
        )
    }

    /// The CPU quota per request in milliseconds, if any.
    pub fn cpu_ms(&self) -> Option<u64> {
        Some(self.cpu_ms.load(Ordering::Relaxed)).filter(|&v| v != u64::MAX)
    }

    /// The memory cap of VCL and VMOD instances serving it, if any.
    pub fn wasm_memory(&self) -> Option<u64> {
        Some(self.wasm_memory.load(Ordering::Relaxed)).filter(|&v| v != u64::MAX)
    }

    /// Claims a backend connection under the quota; `None` when the
    /// tenant holds all it may.
    pub fn claim_conn(self: &Arc<Self>) -> Option<TenantConn> {
        let max = self.max_conns.load(Ordering::Relaxed);
        match self
            .conns
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            }) {
            Ok(_) => Some(TenantConn(self.clone())),
            Err(_) => {
                self.conns_refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Backend connections held now.
    pub fn conns(&self) -> u32 {
        self.conns.load(Ordering::Relaxed)
    }
}

/// The tenants by name: the default one and those declared (by
/// `tenant.add`, `tenant.quota` or the `--tenants` file), each for the
/// label of its name, whether that label exists yet or not.
pub struct Tenants {
    default: Arc<Tenant>,
    /// `-s malloc,SIZE`: a tenant's budget unless its quota sets one.
    storage_budget: u64,
    /// The storage all tenants' caches share.
    storage: Arc<Storage>,
    map: RwLock<HashMap<String, Arc<Tenant>>>,
}

impl Tenants {
    /// The registry around `default`; new tenants' caches share
    /// `storage` and may each hold `storage_budget` bytes unless their
    /// quota says otherwise.
    pub fn new(default: Arc<Tenant>, storage_budget: u64, storage: Arc<Storage>) -> Tenants {
        Tenants {
            default,
            storage_budget,
            storage,
            map: RwLock::new(HashMap::new()),
        }
    }

    /// The default tenant.
    pub fn default_tenant(&self) -> &Arc<Tenant> {
        &self.default
    }

    /// Tenant `name` (made, empty, if it does not exist).
    pub fn get_or_make(&self, name: &str) -> Arc<Tenant> {
        if name == DEFAULT {
            return self.default.clone();
        }
        if let Some(t) = self.map.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            return t.clone();
        }
        let mut g = self.map.write().unwrap_or_else(|p| p.into_inner());
        g.entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Tenant::new(
                    name,
                    Cache::in_storage(self.storage_budget, &self.storage),
                ))
            })
            .clone()
    }

    /// Tenant `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<Tenant>> {
        if name == DEFAULT {
            return Some(self.default.clone());
        }
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Drops tenant `name`'s objects (its label was discarded).
    pub fn clear(&self, name: &str) {
        if let Some(t) = self.get(name).filter(|t| t.name != DEFAULT) {
            t.cache.clear();
        }
    }

    /// Forgets tenant `name`: its objects go, its label's requests join
    /// the default tenant. False if there was no such tenant.
    pub fn remove(&self, name: &str) -> bool {
        let mut g = self.map.write().unwrap_or_else(|p| p.into_inner());
        match g.remove(name) {
            Some(t) => {
                t.cache.clear();
                true
            }
            None => false,
        }
    }

    /// Every tenant, the default one first, then by name.
    pub fn all(&self) -> Vec<Arc<Tenant>> {
        let g = self.map.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<Arc<Tenant>> = g.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v.insert(0, self.default.clone());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_keys_parse_and_show() {
        let mut q = Quota::default();
        q.set("cache_bytes", "1m").expect("bytes");
        q.set("cpu_ms", "50").expect("cpu");
        q.set("backend_conns", "3").expect("conns");
        assert_eq!(q.cache_bytes, Some(1 << 20));
        assert_eq!(q.show("cpu_ms"), "50");
        assert_eq!(q.show("wasm_memory"), "none");
        q.set("cpu_ms", "none").expect("lift");
        assert_eq!(q.cpu_ms, None);
        assert!(q.set("cpu_ms", "fast").is_err());
        assert!(q.set("colour", "1").is_err());
        assert!(q.set("backend_conns", "99999999999").is_err());
    }

    #[tokio::test]
    async fn request_rate_paces_then_refuses_past_the_queue() {
        let t = Arc::new(Tenant::new("a", Arc::new(Cache::default())));
        // 10 a second: one every 100 ms, one at once; nobody waits.
        t.set_quota(Quota {
            request_rate: Some(10),
            request_queue: Some(0),
            ..Default::default()
        });
        assert!(t.admit().await.is_ok());
        assert!(t.admit().await.is_err());
        assert_eq!(t.requests_refused.load(Ordering::Relaxed), 1);
        // With a queue the next waits for its turn.
        t.set_quota(Quota {
            request_rate: Some(10),
            ..Default::default()
        });
        let t0 = std::time::Instant::now();
        assert!(t.admit().await.is_ok());
        assert!(t0.elapsed() >= std::time::Duration::from_millis(50));
        assert_eq!(t.requests_queued.load(Ordering::Relaxed), 1);
        // Lifted: no wait, no refusal.
        t.set_quota(Quota::default());
        for _ in 0..100 {
            assert!(t.admit().await.is_ok());
        }
        assert_eq!(t.requests(), (0, 0));
    }

    #[test]
    fn connection_quota_refuses_past_the_limit() {
        let t = Arc::new(Tenant::new("a", Arc::new(Cache::default())));
        t.set_quota(Quota {
            backend_conns: Some(1),
            ..Default::default()
        });
        let one = t.claim_conn();
        assert!(one.is_some());
        assert!(t.claim_conn().is_none());
        drop(one);
        assert!(t.claim_conn().is_some());
    }
}
