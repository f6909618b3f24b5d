//! The cache index (Varnish's `cache_hash`): objects by the SHA-256 of
//! their `hash_data` inputs, with `Vary` variants, busy markers for the
//! fetches under way so one fetch serves every waiting client (request
//! coalescing), each with the `Vary` it is predicted to have, and purge.

use crate::cache_obj::{Headers, ObjKind, Object};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::watch;

type Digest = [u8; 32];

/// An object by its hash, without keeping it alive.
type ObjRef = (Digest, Weak<Object>);

/// The request header values an object varies on (`Vary`).
pub type Vary = Vec<(String, Option<String>)>;

/// Whether `req` has the header values `vary` names (trailing blanks
/// ignored, as Varnish's `VRY_Match`).
pub fn vary_match(vary: &Vary, req: &Headers) -> bool {
    vary.iter().all(|(name, v)| {
        crate::cache_obj::hdr_get(req, name).map(|h| h.trim_end_matches([' ', '\t']))
            == v.as_deref()
    })
}

/// A fetch under way for a hash.
struct Busy {
    id: u64,
    /// Dropped when the fetch ends, which wakes its waiting list.
    tx: watch::Sender<()>,
    /// Predictive Vary: the values of the request that started the fetch
    /// for the headers the objects already cached vary on. A request
    /// that differs in them does not wait for this fetch.
    vary: Option<Vary>,
}

#[derive(Default)]
struct Objhead {
    /// Newest first.
    variants: Vec<Arc<Object>>,
    /// Fetches under way, newest first.
    busy: Vec<Busy>,
}

/// What a lookup is for: the request's side of Varnish's `HSH_Lookup`.
pub struct LookupReq<'a> {
    pub hash: Digest,
    pub url: &'a str,
    pub headers: &'a Headers,
    /// The request's start (`t_req`): freshness is judged against it,
    /// also after waiting for a busy fetch.
    pub t_req: f64,
    /// `req.hash_always_miss`: fetch anew without looking (and without
    /// waiting for other fetches).
    pub always_miss: bool,
    /// `req.hash_ignore_busy`: do not wait for fetches under way.
    pub ignore_busy: bool,
    /// `req.hash_ignore_vary`: any variant will do.
    pub ignore_vary: bool,
    /// `req.ttl` and `req.grace`: caps on the objects' own.
    pub ttl: Option<f64>,
    pub grace: Option<f64>,
}

const SHARDS: usize = 64;

/// The index.
pub struct Cache {
    shards: Vec<Mutex<HashMap<Digest, Objhead>>>,
    /// The ban list, tested at lookup.
    pub bans: crate::cache_ban::BanList,
    /// `-s malloc,SIZE` (or the tenant's `cache_bytes` quota): bytes of
    /// bodies and headers the cache may hold; `u64::MAX`: no limit.
    budget: AtomicU64,
    /// Objects evicted to fit the budget (a tenant's own `n_lru_nuked`).
    nuked: AtomicU64,
    /// Bytes held now.
    used: AtomicU64,
    /// The LRU list, least recently used first, with each object's hit
    /// count when it was queued: eviction takes from the front, and an
    /// object hit since it was queued goes to the back instead (a second
    /// chance, so hits cost no lock, as Varnish's `lru_interval` spares
    /// them most list moves).
    order: Mutex<VecDeque<(Digest, Weak<Object>, u64)>>,
    /// Objects by cache tag (`xkey`), for tag purges.
    tags: Mutex<HashMap<String, Vec<ObjRef>>>,
    /// Numbers busy markers.
    busy_ids: AtomicU64,
    /// Every inserted object by when it dies (ttl + grace + keep), for
    /// the expiry task ([`Cache::expire_due`]). Its `ExpKill` records
    /// are Varnish's (`EXP_When` on insert, `EXP_expire` per look at the
    /// soonest, `EXP_Expired`), with 0 for the objcore flags Shellac
    /// does not have.
    expiry: Mutex<BinaryHeap<Due>>,
    /// Objects inserted since the expiry task last looked (Varnish's
    /// expiry inbox): the request path only queues them and wakes it.
    inbox: Mutex<Vec<Due>>,
    /// Wakes the expiry task.
    pub expiry_wake: tokio::sync::Notify,
    /// The storage all tenants' caches share (`-s malloc,SIZE`), if this
    /// cache is one of several.
    storage: Option<Arc<Storage>>,
}

/// The storage several caches (one per tenant) share: `-s malloc,SIZE`
/// stays a limit on all of them together. When the caches hold more than
/// that, the one holding the most gives up its least recently used
/// objects first, so a tenant that floods the cache evicts its own
/// objects before anyone else's.
pub struct Storage {
    budget: u64,
    used: AtomicU64,
    caches: Mutex<Vec<Weak<Cache>>>,
}

impl Storage {
    /// A storage of `budget` bytes (`u64::MAX`: unlimited).
    pub fn new(budget: u64) -> Arc<Storage> {
        Arc::new(Storage {
            budget,
            used: AtomicU64::new(0),
            caches: Mutex::new(Vec::new()),
        })
    }

    /// Bytes all its caches hold.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Evicts from the largest cache until everything fits.
    fn evict(&self) {
        while self.used() > self.budget {
            let largest = {
                let Ok(mut g) = self.caches.lock() else {
                    return;
                };
                g.retain(|w| w.strong_count() > 0);
                g.iter().filter_map(Weak::upgrade).max_by_key(|c| c.used())
            };
            match largest {
                Some(c) if c.evict_one() => {}
                _ => return,
            }
        }
    }
}

/// An object and when it dies, ordered soonest first in the heap.
struct Due {
    when: f64,
    hash: Digest,
    obj: Weak<Object>,
}

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        self.when.total_cmp(&o.when).is_eq()
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Due {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Reversed: BinaryHeap pops the greatest, the soonest here.
        o.when.total_cmp(&self.when)
    }
}

/// What an object costs against the storage budget.
fn cost(o: &Object) -> u64 {
    let h: usize = o.headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    o.body.len() + (h + 256) as u64
}

/// Held by the one task fetching an object; dropping it clears its busy
/// marker and wakes the waiting list.
pub struct BusyGuard {
    cache: Arc<Cache>,
    hash: Digest,
    id: u64,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if let Ok(mut s) = self.cache.shard(&self.hash).lock() {
            if let Some(oh) = s.get_mut(&self.hash) {
                oh.busy.retain(|b| b.id != self.id);
                if oh.variants.is_empty() && oh.busy.is_empty() {
                    s.remove(&self.hash);
                }
            }
        }
    }
}

/// What a lookup found.
pub enum Lookup {
    /// A fresh object.
    Hit(Arc<Object>),
    /// A stale object in grace; the guard is for its background refresh
    /// (`None` when another fetch is already under way).
    Grace(Arc<Object>, Option<BusyGuard>),
    /// A hit-for-pass marker.
    HitPass(Arc<Object>),
    /// A hit-for-miss marker: fetch without coalescing.
    HitMiss(Arc<Object>),
    /// Nothing usable: this task fetches, holding the busy marker; with
    /// the stale object (kept past grace by `keep`) to revalidate, if any.
    Miss(BusyGuard, Option<Arc<Object>>),
    /// Nothing usable: wait for the busy fetch, then look up again.
    Wait(watch::Receiver<()>),
}

impl Default for Cache {
    fn default() -> Self {
        Cache::with_budget(u64::MAX)
    }
}

impl Cache {
    /// A cache holding at most `budget` bytes.
    pub fn with_budget(budget: u64) -> Cache {
        Cache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            bans: Default::default(),
            budget: AtomicU64::new(budget),
            nuked: AtomicU64::new(0),
            used: AtomicU64::new(0),
            order: Mutex::new(VecDeque::new()),
            tags: Mutex::new(HashMap::new()),
            busy_ids: AtomicU64::new(0),
            expiry: Mutex::new(BinaryHeap::new()),
            inbox: Mutex::new(Vec::new()),
            expiry_wake: tokio::sync::Notify::new(),
            storage: None,
        }
    }

    /// A cache of at most `budget` bytes that also shares `storage` with
    /// other caches.
    pub fn in_storage(budget: u64, storage: &Arc<Storage>) -> Arc<Cache> {
        let c = Arc::new(Cache {
            storage: Some(storage.clone()),
            ..Cache::with_budget(budget)
        });
        if let Ok(mut g) = storage.caches.lock() {
            g.push(Arc::downgrade(&c));
        }
        c
    }

    /// Counts `n` more (or, `grow` false, fewer) bytes held, here and in
    /// the shared storage.
    fn charge(&self, n: u64, grow: bool) {
        if grow {
            self.used.fetch_add(n, Ordering::Relaxed);
        } else {
            self.used.fetch_sub(n.min(self.used()), Ordering::Relaxed);
        }
        if let Some(st) = &self.storage {
            if grow {
                st.used.fetch_add(n, Ordering::Relaxed);
            } else {
                st.used.fetch_sub(n.min(st.used()), Ordering::Relaxed);
            }
        }
    }

    /// Removes the objects whose time is up at `now` (Varnish's expiry
    /// thread: `n_expired`) and returns when the next one is due.
    pub fn expire_due(&self, now: f64) -> Option<f64> {
        let new = self
            .inbox
            .lock()
            .map(|mut i| std::mem::take(&mut *i))
            .unwrap_or_default();
        if !new.is_empty() {
            let log = crate::vsl::enabled(vapi::Tag::ExpKill);
            if let Ok(mut h) = self.expiry.lock() {
                // Objects removed otherwise (evicted, purged, banned)
                // leave their entries here until due; when those are
                // most of the heap, it keeps only the living.
                if h.len() >= 1024 && h.len() > 2 * crate::vsc::MAIN.n_objectcore.get() as usize {
                    h.retain(|d| d.obj.strong_count() > 0);
                }
                for d in new {
                    if log {
                        crate::vsl::log0(
                            vapi::Tag::ExpKill,
                            format_args!("EXP_When p={:p} e={:.6} f=0x0", d.obj.as_ptr(), d.when),
                        );
                    }
                    h.push(d);
                }
            }
        }
        loop {
            let due = {
                let Ok(mut h) = self.expiry.lock() else {
                    return None;
                };
                let d = h.peek()?;
                if crate::vsl::enabled(vapi::Tag::ExpKill) {
                    crate::vsl::log0(
                        vapi::Tag::ExpKill,
                        format_args!(
                            "EXP_expire p={:p} e={:.6} f=0x0",
                            d.obj.as_ptr(),
                            d.when - now
                        ),
                    );
                }
                if d.when > now {
                    return Some(d.when);
                }
                h.pop()?
            };
            let Some(obj) = due.obj.upgrade() else {
                continue;
            };
            if !obj.expired(now) {
                // Its life changed since.
                if let Ok(mut h) = self.expiry.lock() {
                    h.push(Due {
                        when: obj.fresh_until() + obj.grace + obj.keep,
                        ..due
                    });
                }
                continue;
            }
            let mut gone = false;
            if let Ok(mut s) = self.shard(&due.hash).lock() {
                if let Some(oh) = s.get_mut(&due.hash) {
                    let mut variants = std::mem::take(&mut oh.variants);
                    self.retain(&mut variants, |o| {
                        let d = std::ptr::eq(o, &*obj);
                        gone |= d;
                        d
                    });
                    oh.variants = variants;
                    if oh.variants.is_empty() && oh.busy.is_empty() {
                        s.remove(&due.hash);
                    }
                }
            }
            if gone {
                crate::vsc::MAIN.n_expired.inc();
                if crate::vsl::enabled(vapi::Tag::ExpKill) {
                    crate::vsl::log0(
                        vapi::Tag::ExpKill,
                        format_args!("EXP_Expired x={} t={:.0}", obj.xid, obj.fresh_until() - now),
                    );
                }
            }
        }
    }

    /// Queues an inserted object for the expiry task.
    fn push_due(&self, hash: Digest, obj: &Arc<Object>) {
        let when = obj.fresh_until() + obj.grace + obj.keep;
        if !when.is_finite() {
            return;
        }
        if let Ok(mut i) = self.inbox.lock() {
            i.push(Due {
                when,
                hash,
                obj: Arc::downgrade(obj),
            });
        }
        self.expiry_wake.notify_one();
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The budget in bytes (`u64::MAX`: none).
    pub fn budget(&self) -> u64 {
        self.budget.load(Ordering::Relaxed)
    }

    /// Objects evicted so far to fit the budget.
    pub fn nuked(&self) -> u64 {
        self.nuked.load(Ordering::Relaxed)
    }

    /// Changes the budget (a tenant's quota set at run time) and evicts
    /// to fit it. Objects inserted while there was no budget join the
    /// LRU list now, oldest first as far as the index knows.
    pub fn set_budget(&self, budget: u64) {
        let before = self.budget.swap(budget, Ordering::Relaxed);
        if before == u64::MAX && budget != u64::MAX {
            let mut objs = self.objects();
            objs.sort_by(|a, b| a.1.t_origin.total_cmp(&b.1.t_origin));
            if let Ok(mut q) = self.order.lock() {
                q.clear();
                q.extend(
                    objs.into_iter()
                        .map(|(h, o)| (h, Arc::downgrade(&o), o.hits.load(Ordering::Relaxed))),
                );
            }
        }
        self.evict();
    }

    /// How many objects the index holds.
    pub fn objects_held(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .map(|g| g.values().map(|oh| oh.variants.len()).sum())
                    .unwrap_or(0)
            })
            .sum()
    }

    fn release(&self, o: &Object) {
        let c = o.charged.swap(0, Ordering::Relaxed);
        self.charge(c, false);
        crate::vsc::sma_free(&crate::vsc::SMA_S0, &o.live, c);
    }

    /// Charges what `o` costs now beyond what it was charged (a streamed
    /// body that completed), then evicts to fit.
    /// An object that is not charged (never inserted: a pass; or
    /// already evicted) stays uncharged.
    pub fn account(&self, o: &Object) {
        let now = cost(o);
        let Ok(before) = o
            .charged
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b > 0).then_some(now)
            })
        else {
            return;
        };
        if now > before {
            self.charge(now - before, true);
            crate::vsc::sma_grow(&crate::vsc::SMA_S0, &o.live, now - before);
            self.evict();
        }
    }

    /// Removes `obj` from `hash` (its body failed while streaming).
    pub fn remove(&self, hash: Digest, obj: &Arc<Object>) {
        if let Ok(mut s) = self.shard(&hash).lock() {
            if let Some(oh) = s.get_mut(&hash) {
                let mut variants = std::mem::take(&mut oh.variants);
                self.retain(&mut variants, |o| std::ptr::eq(o, &**obj));
                oh.variants = variants;
                if oh.variants.is_empty() && oh.busy.is_empty() {
                    s.remove(&hash);
                }
            }
        }
    }

    /// Removes variants for which `drop` is true, releasing their bytes.
    fn retain(&self, v: &mut Vec<Arc<Object>>, mut drop: impl FnMut(&Object) -> bool) {
        v.retain(|o| {
            let d = drop(o);
            if d {
                self.release(o);
            }
            !d
        });
    }

    /// Evicts the oldest objects until the cache fits its budget, then
    /// until the storage it shares fits its own.
    fn evict(&self) {
        while self.used() > self.budget() {
            if !self.evict_one() {
                break;
            }
        }
        if let Some(st) = &self.storage {
            st.evict();
        }
    }

    /// Evicts the least recently used object; false if there is none to
    /// evict.
    fn evict_one(&self) -> bool {
        loop {
            let Ok(mut q) = self.order.lock() else {
                return false;
            };
            let Some((hash, weak, hits)) = q.pop_front() else {
                return false;
            };
            let Some(obj) = weak.upgrade() else { continue };
            let now_hits = obj.hits.load(Ordering::Relaxed);
            if now_hits > hits {
                // (Counted in n_lru_moved when the hit touched it.)
                q.push_back((hash, weak, now_hits));
                continue;
            }
            drop(q);
            crate::vsc::MAIN.n_lru_nuked.inc();
            self.nuked.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut s) = self.shard(&hash).lock() {
                if let Some(oh) = s.get_mut(&hash) {
                    self.retain(&mut oh.variants, |o| std::ptr::eq(o, &*obj));
                }
            }
            return true;
        }
    }

    fn shard(&self, h: &Digest) -> &Mutex<HashMap<Digest, Objhead>> {
        &self.shards[usize::from(h[0]) % SHARDS]
    }

    /// Looks an object up for a request (Varnish's `HSH_Lookup`): the
    /// newest fresh variant that matches, else a fetch of its own (with
    /// the newest expired variant to serve in grace or revalidate), else
    /// a fetch under way to wait for. Objects whose TTL was set to zero
    /// or less are never found.
    pub fn lookup(self: &Arc<Self>, r: &LookupReq<'_>) -> Lookup {
        let hash = r.hash;
        let busy = |c: &Arc<Cache>, oh: &mut Objhead, vary: Option<Vary>| {
            let id = c.busy_ids.fetch_add(1, Ordering::Relaxed);
            let (tx, _) = watch::channel(());
            oh.busy.insert(0, Busy { id, tx, vary });
            BusyGuard {
                cache: c.clone(),
                hash,
                id,
            }
        };
        let Ok(mut s) = self.shard(&hash).lock() else {
            let id = self.busy_ids.fetch_add(1, Ordering::Relaxed);
            return Lookup::Miss(
                BusyGuard {
                    cache: self.clone(),
                    hash,
                    id,
                },
                None,
            );
        };
        let oh = s.entry(hash).or_default();
        let bans = &self.bans;
        let mut variants = std::mem::take(&mut oh.variants);
        self.retain(&mut variants, |o| {
            if o.expired(r.t_req) {
                crate::vsc::MAIN.n_expired.inc();
                return true;
            }
            bans.banned(o, r.url, r.headers, r.t_req)
        });
        oh.variants = variants;
        if r.always_miss {
            return Lookup::Miss(busy(self, oh, None), None);
        }
        let waiting = if r.ignore_busy {
            None
        } else {
            oh.busy
                .iter()
                .find(|b| r.ignore_vary || b.vary.as_ref().is_none_or(|v| vary_match(v, r.headers)))
                .map(|b| b.tx.subscribe())
        };
        // The request's values for every header a cached variant varies
        // on: the Vary predicted for a fetch this request starts.
        let mut predicted: Vary = Vec::new();
        let mut hit = None;
        let mut expired: Option<&Arc<Object>> = None;
        for o in &oh.variants {
            if o.ttl <= 0.0 {
                continue;
            }
            if !r.ignore_vary && !o.vary.is_empty() {
                for (name, _) in &o.vary {
                    if !predicted.iter().any(|(n, _)| n == name) {
                        let v = crate::cache_obj::hdr_get(r.headers, name)
                            .map(|h| h.trim_end_matches([' ', '\t']).to_string());
                        predicted.push((name.clone(), v));
                    }
                }
                if !o.vary_matches(r.headers) {
                    continue;
                }
            }
            if o.ttl_end(r.ttl) > r.t_req {
                hit = Some(o.clone());
                break;
            }
            if o.fresh_until() < r.t_req && expired.is_none_or(|e| o.t_origin > e.t_origin) {
                expired = Some(o);
            }
        }
        if let Some(o) = hit {
            return match o.kind {
                ObjKind::Normal => Lookup::Hit(o),
                ObjKind::HitPass => Lookup::HitPass(o),
                ObjKind::HitMiss => Lookup::HitMiss(o),
            };
        }
        let expired = expired.cloned();
        if let Some(e) = &expired {
            // An expired marker still makes this a hit-for-miss.
            if e.kind != ObjKind::Normal {
                return Lookup::HitMiss(e.clone());
            }
        }
        let in_grace = |e: &Arc<Object>| e.grace_end(r.ttl, r.grace) >= r.t_req;
        match (waiting, expired) {
            (None, e) => {
                let vary = (!predicted.is_empty()).then_some(predicted);
                let g = busy(self, oh, vary);
                match e {
                    Some(e) if in_grace(&e) => Lookup::Grace(e, Some(g)),
                    e => Lookup::Miss(g, e),
                }
            }
            (Some(_), Some(e)) if in_grace(&e) => Lookup::Grace(e, None),
            (Some(rx), _) => Lookup::Wait(rx),
        }
    }

    /// Inserts a new object in front of the others (older objects stay
    /// until they expire, are purged or banned, or a fetch that refreshed
    /// one of them removes it, as in Varnish; lookups find the newest).
    pub fn insert(&self, hash: Digest, obj: Arc<Object>) {
        if let Ok(mut s) = self.shard(&hash).lock() {
            let oh = s.entry(hash).or_default();
            let mut variants = std::mem::take(&mut oh.variants);
            let c = cost(&obj);
            obj.charged.store(c, Ordering::Relaxed);
            self.charge(c, true);
            crate::vsc::sma_alloc(&crate::vsc::SMA_S0, &obj, c);
            if self.budget() != u64::MAX {
                if let Ok(mut q) = self.order.lock() {
                    q.push_back((hash, Arc::downgrade(&obj), 0));
                    if q.len() >= 1024 && q.len().is_power_of_two() {
                        q.retain(|(_, w, _)| w.strong_count() > 0);
                    }
                }
            }
            if !obj.tags.is_empty() {
                if let Ok(mut t) = self.tags.lock() {
                    for tag in &obj.tags {
                        let v = t.entry(tag.clone()).or_default();
                        v.retain(|(_, w)| w.strong_count() > 0);
                        v.push((hash, Arc::downgrade(&obj)));
                    }
                }
            }
            self.push_due(hash, &obj);
            // Most hashes only ever hold one object: room for exactly
            // that (a push would make room for four).
            variants.reserve_exact(1);
            variants.insert(0, obj);
            oh.variants = variants;
        }
        self.evict();
    }

    /// Removes (or with `soft`, expires keeping grace and keep) every object
    /// tagged with one of `tags`; returns how many objects.
    pub fn purge_tags(&self, tags: &[String], soft: bool, now: f64) -> usize {
        let mut victims: Vec<(Digest, Arc<Object>)> = Vec::new();
        if let Ok(mut t) = self.tags.lock() {
            for tag in tags {
                let Some(v) = t.get_mut(tag) else { continue };
                v.retain(|(_, w)| w.strong_count() > 0);
                for (h, w) in v.iter() {
                    if let Some(o) = w.upgrade() {
                        if !victims.iter().any(|(_, x)| Arc::ptr_eq(x, &o)) {
                            victims.push((*h, o));
                        }
                    }
                }
                if v.is_empty() || !soft {
                    t.remove(tag);
                }
            }
        }
        for (h, o) in &victims {
            if soft {
                o.soft_purge(now);
            } else {
                self.remove(*h, o);
            }
        }
        victims.len()
    }

    /// Removes every variant of `hash` (`return (purge)`); returns how many.
    pub fn purge(&self, hash: Digest) -> usize {
        let Ok(mut s) = self.shard(&hash).lock() else {
            return 0;
        };
        match s.get_mut(&hash) {
            Some(oh) => {
                let n = oh.variants.len();
                let mut variants = std::mem::take(&mut oh.variants);
                self.retain(&mut variants, |_| true);
                if oh.busy.is_empty() {
                    s.remove(&hash);
                }
                n
            }
            None => 0,
        }
    }

    /// Every object in the index, with its hash.
    fn objects(&self) -> Vec<(Digest, Arc<Object>)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            if let Ok(s) = shard.lock() {
                for (h, oh) in s.iter() {
                    out.extend(oh.variants.iter().map(|o| (*h, o.clone())));
                }
            }
        }
        out
    }

    /// `ban.list`: the bans with how many objects point at each.
    pub fn ban_list(&self) -> Vec<crate::cache_ban::BanEntry> {
        let checks: Vec<f64> = self
            .objects()
            .iter()
            .map(|(_, o)| o.ban_checked())
            .collect();
        self.bans.list(&checks)
    }

    /// One pass of the ban lurker (Varnish's `cache_ban_lurker`): tests
    /// every object against the obj-only bans older than `age` seconds,
    /// removes those that match, marks those bans completed, and trims the
    /// bans no object needs any more. Returns how many objects it removed.
    pub fn ban_lurk(&self, now: f64, age: f64) -> usize {
        use crate::cache_ban::BanList;
        let bans = self.bans.lurkable(now, age);
        // Nothing to test and nothing to trim (the newest ban always
        // stays): no walk over every object, which with a full cache cost
        // more than the requests did.
        if bans.is_empty() && self.bans.len() <= 1 {
            return 0;
        }
        let mut removed = 0;
        let mut oldest = f64::INFINITY;
        let newest_lurked = bans.iter().map(|b| b.time).fold(f64::MIN, f64::max);
        for (h, o) in self.objects() {
            if !bans.is_empty() {
                if BanList::lurk_hit(&bans, &o, now) {
                    self.remove(h, &o);
                    removed += 1;
                    continue;
                }
                if !self.bans.req_pending_after(o.ban_checked()) {
                    o.set_ban_checked(newest_lurked);
                }
            }
            oldest = oldest.min(o.ban_checked());
        }
        BanList::complete(&bans);
        self.bans.trim(oldest);
        removed
    }

    /// How many hashes have an entry (`MAIN.n_objecthead`).
    pub fn heads(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|g| g.len()).unwrap_or(0))
            .sum()
    }

    /// Drops every object (a stopped child loses its `malloc` storage).
    pub fn clear(&self) {
        for shard in &self.shards {
            if let Ok(mut s) = shard.lock() {
                for oh in s.values_mut() {
                    let mut variants = std::mem::take(&mut oh.variants);
                    self.retain(&mut variants, |_| true);
                }
                s.retain(|_, oh| !oh.busy.is_empty());
            }
        }
    }
}
