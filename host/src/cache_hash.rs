//! The cache index (Varnish's `cache_hash`): objects by the SHA-256 of
//! their `hash_data` inputs, with `Vary` variants, a busy marker per hash
//! so one fetch serves every waiting client (request coalescing), and
//! purge.

use crate::cache_obj::{Headers, ObjKind, Object};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::watch;

type Digest = [u8; 32];

/// An object by its hash, without keeping it alive.
type ObjRef = (Digest, Weak<Object>);

#[derive(Default)]
struct Objhead {
    /// Newest first.
    variants: Vec<Arc<Object>>,
    busy: Option<watch::Sender<()>>,
}

const SHARDS: usize = 64;

/// The index.
pub struct Cache {
    shards: Vec<Mutex<HashMap<Digest, Objhead>>>,
    /// The ban list, tested at lookup.
    pub bans: crate::cache_ban::BanList,
    /// `-s malloc,SIZE`: bytes of bodies and headers the cache may hold.
    budget: u64,
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
}

/// What an object costs against the storage budget.
fn cost(o: &Object) -> u64 {
    let h: usize = o.headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    o.body.len() + (h + 256) as u64
}

/// Held by the one task fetching an object; dropping it clears the busy
/// marker and wakes the waiting list.
pub struct BusyGuard {
    cache: Arc<Cache>,
    hash: Digest,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if let Ok(mut s) = self.cache.shard(&self.hash).lock() {
            if let Some(oh) = s.get_mut(&self.hash) {
                oh.busy = None;
                if oh.variants.is_empty() {
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
            budget,
            used: AtomicU64::new(0),
            order: Mutex::new(VecDeque::new()),
            tags: Mutex::new(HashMap::new()),
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn release(&self, o: &Object) {
        let c = o.charged.swap(0, Ordering::Relaxed);
        self.used.fetch_sub(c.min(self.used()), Ordering::Relaxed);
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
            self.used.fetch_add(now - before, Ordering::Relaxed);
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
                if oh.variants.is_empty() && oh.busy.is_none() {
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

    /// Evicts the oldest objects until the cache fits its budget.
    fn evict(&self) {
        while self.used() > self.budget {
            let Ok(mut q) = self.order.lock() else { return };
            let Some((hash, weak, hits)) = q.pop_front() else {
                return;
            };
            let Some(obj) = weak.upgrade() else { continue };
            let now_hits = obj.hits.load(Ordering::Relaxed);
            if now_hits > hits {
                q.push_back((hash, weak, now_hits));
                crate::vsc::MAIN.n_lru_moved.inc();
                continue;
            }
            drop(q);
            crate::vsc::MAIN.n_lru_nuked.inc();
            if let Ok(mut s) = self.shard(&hash).lock() {
                if let Some(oh) = s.get_mut(&hash) {
                    self.retain(&mut oh.variants, |o| std::ptr::eq(o, &*obj));
                }
            }
        }
    }

    fn shard(&self, h: &Digest) -> &Mutex<HashMap<Digest, Objhead>> {
        &self.shards[usize::from(h[0]) % SHARDS]
    }

    /// Looks `hash` up for a request with headers `req`.
    pub fn lookup(
        self: &Arc<Self>,
        hash: Digest,
        url: &str,
        req: &Headers,
        now: f64,
        always_miss: bool,
        ignore_busy: bool,
    ) -> Lookup {
        let guard = |c: &Arc<Cache>| BusyGuard {
            cache: c.clone(),
            hash,
        };
        let Ok(mut s) = self.shard(&hash).lock() else {
            return Lookup::Miss(guard(self), None);
        };
        let oh = s.entry(hash).or_default();
        let bans = &self.bans;
        let mut variants = std::mem::take(&mut oh.variants);
        self.retain(&mut variants, |o| {
            if o.expired(now) {
                crate::vsc::MAIN.n_expired.inc();
                return true;
            }
            bans.banned(o, url, req, now)
        });
        oh.variants = variants;
        let found = if always_miss {
            None
        } else {
            oh.variants.iter().find(|o| o.vary_matches(req)).cloned()
        };
        if let Some(o) = &found {
            if o.fresh(now) {
                match o.kind {
                    ObjKind::Normal => return Lookup::Hit(o.clone()),
                    ObjKind::HitPass => return Lookup::HitPass(o.clone()),
                    ObjKind::HitMiss => return Lookup::HitMiss(o.clone()),
                }
            }
        }
        let stale = found.filter(|o| o.kind == ObjKind::Normal);
        let graced = stale.clone().filter(|o| o.in_grace(now));
        if let Some(busy) = &oh.busy {
            if let Some(o) = graced {
                return Lookup::Grace(o, None);
            }
            if !ignore_busy {
                return Lookup::Wait(busy.subscribe());
            }
            return Lookup::Miss(guard(self), None);
        }
        let (tx, _) = watch::channel(());
        oh.busy = Some(tx);
        match graced {
            Some(o) => Lookup::Grace(o, Some(guard(self))),
            None => Lookup::Miss(guard(self), stale),
        }
    }

    /// Inserts a new object, replacing the variant with the same `Vary`
    /// values.
    pub fn insert(&self, hash: Digest, obj: Arc<Object>) {
        if let Ok(mut s) = self.shard(&hash).lock() {
            let oh = s.entry(hash).or_default();
            let mut variants = std::mem::take(&mut oh.variants);
            self.retain(&mut variants, |o| o.vary == obj.vary);
            let c = cost(&obj);
            obj.charged.store(c, Ordering::Relaxed);
            self.used.fetch_add(c, Ordering::Relaxed);
            crate::vsc::sma_alloc(&crate::vsc::SMA_S0, &obj, c);
            if self.budget != u64::MAX {
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
                if oh.busy.is_none() {
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
                s.retain(|_, oh| oh.busy.is_some());
            }
        }
    }
}
