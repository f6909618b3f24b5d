//! The shard director and `shard_param` (Varnish 7.1's
//! `vmod_directors_shard*.c`), written from its documentation and
//! behaviour so that a key picks the same backend as on varnishd:
//!
//! - The ring: for each backend, `replicas` (× weight) points
//!   `hash_strands32(ident, n)` for n in `0..replicas`, sorted.
//! - Keys: `by=HASH` is the first four bytes (big-endian) of the object
//!   hash on the backend side and in `vcl_pipe`, else
//!   `hash_strands32(url)`; `by=URL` is `hash_strands32(url)`; `by=KEY`
//!   and `by=BLOB` come from the arguments.
//! - Lookup is Varnish's binary search (including its quirk: a key above
//!   the last point takes the last point), then a walk along the ring
//!   for `alt`, health, rampup and warmup.
//!
//! Backend changes (`add_backend`, `remove_backend`, `clear`) are
//! collected per task and take effect on `.reconfigure()` or when the
//! task ends ([`TaskPriv`]'s drop), as in Varnish. Parameters follow
//! Varnish's layering: arguments of `.backend()`, then the associated
//! `shard_param` (its per-task copy on the backend side), then the
//! built-in defaults.

use crate::vmod_directors::{health, housekeeping, random_unit, Call, Director};
use crate::vmod_std::{Arg, Ret};
use crate::vrt_ctx::Task;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use vcl_to_wasm::abi::Tag;
use vcl_to_wasm::types::Method;

use crate::cache_vcl::VclShared;

/// The most ring points one shard may have (Varnish has no limit but
/// memory; a runaway `weight` or `replicas` fails instead).
const MAX_POINTS: u64 = 1 << 24;

/// The replicas `.reconfigure()` uses when the task ends.
const DEFAULT_REPLICAS: i64 = 67;

const A_BY: u32 = 1;
const A_KEY: u32 = 1 << 1;
const A_KEY_BLOB: u32 = 1 << 2;
const A_ALT: u32 = 1 << 3;
const A_WARMUP: u32 = 1 << 4;
const A_RAMPUP: u32 = 1 << 5;
const A_HEALTHY: u32 = 1 << 6;
const A_PARAM: u32 = 1 << 7;
const A_RESOLVE: u32 = 1 << 8;
/// What `shard_param.set()` takes.
const MASK_SET: u32 = A_PARAM - 1;
/// What a parameter set holds (the key travels with `by`).
const MASK_PARAM: u32 = MASK_SET & !A_KEY & !A_KEY_BLOB;

/// The prefix of the BLOB `shard_param.use()` returns.
const PARAM_BLOB: &[u8] = b"vmod_directors.shard_param:";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum By {
    Hash,
    Url,
    Key,
    Blob,
}

impl By {
    fn of(s: &str) -> Option<By> {
        Some(match s {
            "HASH" => By::Hash,
            "URL" => By::Url,
            "KEY" => By::Key,
            "BLOB" => By::Blob,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            By::Hash => "HASH",
            By::Url => "URL",
            By::Key => "KEY",
            By::Blob => "BLOB",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Healthy {
    Chosen,
    Ignore,
    All,
}

impl Healthy {
    fn of(s: &str) -> Option<Healthy> {
        Some(match s {
            "CHOSEN" => Healthy::Chosen,
            "IGNORE" => Healthy::Ignore,
            "ALL" => Healthy::All,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Healthy::Chosen => "CHOSEN",
            Healthy::Ignore => "IGNORE",
            Healthy::All => "ALL",
        }
    }
}

/// Where a parameter set takes what it does not set itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PRef {
    /// The built-in defaults (HASH, alt 0, warmup -1, rampup, CHOSEN).
    Builtin,
    /// A `shard_param` object as `vcl_init` left it.
    Vcl(usize),
    /// The task's copy of an object's parameters, by object id.
    Task(usize),
}

/// A parameter set; `mask` says which fields it sets.
#[derive(Clone, Copy, Debug)]
struct Params {
    mask: u32,
    by: Option<By>,
    key: u32,
    healthy: Option<Healthy>,
    rampup: bool,
    alt: i64,
    warmup: f64,
    defaults: PRef,
}

impl Params {
    /// An empty set (Varnish's zeroed object) on top of `defaults`.
    fn over(defaults: PRef) -> Params {
        Params {
            mask: 0,
            by: None,
            key: 0,
            healthy: None,
            rampup: false,
            alt: 0,
            warmup: 0.0,
            defaults,
        }
    }
}

const BUILTIN: Params = Params {
    mask: MASK_PARAM,
    by: None,
    key: 0,
    healthy: None,
    rampup: true,
    alt: 0,
    warmup: -1.0,
    defaults: PRef::Builtin,
};

/// A `directors.shard_param()` object.
#[derive(Debug)]
pub struct ShardParam {
    name: String,
    id: usize,
    p: Mutex<Params>,
}

impl ShardParam {
    pub fn new(name: String, id: usize) -> ShardParam {
        ShardParam {
            name,
            id,
            p: Mutex::new(Params::over(PRef::Builtin)),
        }
    }

    fn get(&self) -> Params {
        match self.p.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        }
    }

    fn put(&self, v: Params) {
        match self.p.lock() {
            Ok(mut g) => *g = v,
            Err(p) => *p.into_inner() = v,
        }
    }
}

/// One backend change queued in a task.
#[derive(Clone, Debug)]
enum Change {
    Clear,
    Add(ShardBackend, f64),
    Remove { h: i32, ident: Option<String> },
}

/// The task's state of the `directors` VMOD (Varnish's PRIV_TASK uses):
/// per-task parameter sets and queued shard changes. Dropping it (the
/// task ended) reconfigures every shard with changes left, as Varnish's
/// task fini does.
#[derive(Debug, Default)]
pub struct TaskPriv {
    params: HashMap<usize, Params>,
    changes: Vec<(Arc<Director>, Vec<Change>)>,
}

impl TaskPriv {
    fn changes_of(&mut self, d: &Arc<Director>) -> &mut Vec<Change> {
        let i = match self.changes.iter().position(|(x, _)| Arc::ptr_eq(x, d)) {
            Some(i) => i,
            None => {
                self.changes.push((d.clone(), Vec::new()));
                self.changes.len() - 1
            }
        };
        &mut self.changes[i].1
    }

    fn take_changes(&mut self, d: &Arc<Director>) -> Vec<Change> {
        match self.changes.iter().position(|(x, _)| Arc::ptr_eq(x, d)) {
            Some(i) => self.changes.swap_remove(i).1,
            None => Vec::new(),
        }
    }
}

impl Drop for TaskPriv {
    fn drop(&mut self) {
        for (d, changes) in self.changes.drain(..) {
            if let crate::vmod_directors::Imp::Shard(s) = &d.imp {
                s.reconfigure(&d.name, changes, DEFAULT_REPLICAS);
            }
        }
    }
}

/// A backend of a shard director.
#[derive(Clone, Debug)]
struct ShardBackend {
    h: i32,
    /// The backend's VCL name, the ident unless one is given.
    name: String,
    ident: Option<String>,
    /// Its own rampup, else the director's.
    rampup: Option<f64>,
    replicas: u32,
}

impl ShardBackend {
    fn ident(&self) -> &str {
        self.ident.as_deref().unwrap_or(&self.name)
    }

    /// Varnish's `shardcfg_backend_cmp`: the same backend instance.
    fn same(&self, other: &ShardBackend) -> bool {
        if self.ident.is_none() && other.ident.is_none() {
            return self.h == other.h;
        }
        self.ident() == other.ident()
    }
}

#[derive(Clone, Copy, Debug)]
struct Point {
    point: u32,
    host: u32,
}

/// The configuration in force: backends and the hash ring.
#[derive(Debug, Default)]
struct Ring {
    backends: Vec<ShardBackend>,
    circle: Vec<Point>,
}

/// A `directors.shard()` object.
#[derive(Debug)]
pub struct ShardDir {
    id: usize,
    ring: RwLock<Arc<Ring>>,
    warmup: AtomicU64,
    rampup: AtomicU64,
    param: Mutex<PRef>,
}

fn log_error(name: &str, msg: &str) {
    tracing::warn!("Error: vmod_directors: shard {name}: {msg}");
}

fn log_notice(name: &str, msg: &str) {
    tracing::info!("Notice: vmod_directors: shard {name}: {msg}");
}

fn fail(name: &str, msg: &str) -> String {
    format!("vmod_directors: shard {name}: {msg}")
}

/// Client subroutines other than `vcl_pipe` (Varnish's
/// `SHARD_VCL_TASK_REQ`).
fn client_ctx(m: Method) -> bool {
    !housekeeping(m) && !bereq_ctx(m)
}

/// Backend subroutines and `vcl_pipe` (`SHARD_VCL_TASK_BEREQ`).
fn bereq_ctx(m: Method) -> bool {
    matches!(
        m,
        Method::BackendFetch | Method::BackendResponse | Method::BackendError | Method::Pipe
    )
}

/// Varnish's `shard_lookup`, step for step: the first point not below
/// `key`, or the last point when `key` is above all of them.
fn lookup(circle: &[Point], key: u32) -> usize {
    let n = circle.len();
    if n <= 1 {
        return 0;
    }
    let (mut low, mut high) = (0usize, n);
    // The search halves the range each round; 64 rounds is a safe cap.
    for _ in 0..64 {
        let i = (high + low) / 2;
        let p = circle[i].point;
        if p == key {
            return i;
        } else if i == n - 1 {
            return n - 1;
        } else if p < key && circle[i + 1].point >= key {
            return i + 1;
        } else if p > key {
            if i == 0 {
                return 0;
            }
            high = i;
        } else {
            low = i;
        }
    }
    n - 1
}

/// Where a walk along the ring stands (Varnish's `shard_state`).
struct Walk<'a> {
    vcl: &'a VclShared,
    ring: &'a Ring,
    idx: usize,
    picked: Vec<bool>,
    pickcount: usize,
    /// (host, health changed)
    previous: Option<(usize, f64)>,
    last: Option<(usize, f64)>,
}

impl Walk<'_> {
    /// Varnish's `shard_next`: skips `skip` backends (healthy ones, or
    /// any when `healthy` is false) and returns the next.
    fn next(&mut self, skip: i64, healthy: bool) -> Option<usize> {
        let n = self.ring.backends.len();
        let npoints = self.ring.circle.len();
        let mut skip = skip;
        let mut chosen = None;
        while self.pickcount < n && skip >= 0 {
            let c = self.ring.circle[self.idx].host as usize;
            if c < n && !self.picked[c] {
                self.picked[c] = true;
                self.pickcount += 1;
                let (ok, changed) = health(self.vcl, self.ring.backends[c].h);
                let mut to_last = false;
                let mut to_prev = false;
                if ok {
                    if skip == 0 {
                        chosen = Some(c);
                        to_last = true;
                    } else {
                        to_prev = true;
                    }
                    skip -= 1;
                } else if !healthy {
                    if skip == 0 {
                        chosen = Some(c);
                        to_last = true;
                    }
                    skip -= 1;
                }
                if to_last {
                    if self.last.is_some() {
                        self.previous = self.last;
                    }
                    self.last = Some((c, changed));
                } else if to_prev {
                    self.previous = Some((c, changed));
                }
                if chosen.is_some() {
                    break;
                }
            }
            self.idx += 1;
            if self.idx >= npoints {
                self.idx = 0;
            }
        }
        chosen
    }
}

impl ShardDir {
    pub fn new(id: usize) -> ShardDir {
        ShardDir {
            id,
            ring: RwLock::new(Arc::new(Ring::default())),
            warmup: AtomicU64::new(0f64.to_bits()),
            rampup: AtomicU64::new(0f64.to_bits()),
            param: Mutex::new(PRef::Builtin),
        }
    }

    fn ring(&self) -> Arc<Ring> {
        match self.ring.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn param_ref(&self) -> PRef {
        match self.param.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        }
    }

    fn set_param_ref(&self, r: PRef) {
        match self.param.lock() {
            Ok(mut g) => *g = r,
            Err(p) => *p.into_inner() = r,
        }
    }

    /// `backend.list -p`: each backend with its ident, health and rampup.
    pub fn details(&self, vcl: &VclShared) -> String {
        let mut out = String::from("\n\n\tBackend\tIdent\tHealth\tRampup  Remaining\n");
        for (b, ok, p, left) in self.rampup_rows(vcl) {
            out.push_str(&format!(
                "\t{}\t{}\t{}\t{}% {:8.3}s\n",
                b.name,
                b.ident(),
                if ok { "healthy" } else { "sick" },
                crate::vmod_directors::c_float(p * 100.0, 6, 2),
                left
            ));
        }
        out
    }

    /// `backend.list -j -p` for a value starting at indentation `indent`.
    pub fn details_json(&self, vcl: &VclShared, indent: usize) -> String {
        let p1 = " ".repeat(indent + 2);
        let p2 = " ".repeat(indent + 4);
        let p3 = " ".repeat(indent + 6);
        let mut out = format!(
            "{{\n{p1}\"warmup\": {:.6},\n{p1}\"rampup_duration\": {:.6},\n{p1}\"backends\": {{\n",
            f64::from_bits(self.warmup.load(Ordering::Relaxed)),
            f64::from_bits(self.rampup.load(Ordering::Relaxed)),
        );
        let rows: Vec<String> = self
            .rampup_rows(vcl)
            .into_iter()
            .map(|(b, ok, p, left)| {
                format!(
                    "{p2}{}: {{\n{p3}\"ident\": {},\n{p3}\"health\": \"{}\",\n{p3}\"rampup\": {:.6},\n{p3}\"rampup_remaining\": {:.3}\n{p2}}}",
                    crate::vmod_directors::json_str(&b.name),
                    crate::vmod_directors::json_str(b.ident()),
                    if ok { "healthy" } else { "sick" },
                    p,
                    left
                )
            })
            .collect();
        out.push_str(&rows.join(",\n"));
        out.push_str(&format!("\n{p1}}}\n{}}},\n", " ".repeat(indent)));
        out
    }

    /// Each backend with its health, rampup share and time left, as
    /// `vmod_shard_list` computes them.
    fn rampup_rows(&self, vcl: &VclShared) -> Vec<(ShardBackend, bool, f64, f64)> {
        let ring = self.ring();
        let now = crate::vrt_ctx::now();
        ring.backends
            .iter()
            .map(|b| {
                let (ok, changed) = health(vcl, b.h);
                let d = now - changed;
                let r = b
                    .rampup
                    .unwrap_or_else(|| f64::from_bits(self.rampup.load(Ordering::Relaxed)));
                let (p, left) = if !ok {
                    (0.0, 0.0)
                } else if d < r {
                    (d / r, r - d)
                } else {
                    (1.0, 0.0)
                };
                (b.clone(), ok, p, left)
            })
            .collect()
    }

    /// The backends' handles, for health and `backend.list`.
    pub fn member_handles(&self) -> Vec<i32> {
        self.ring().backends.iter().map(|b| b.h).collect()
    }

    /// Applies queued changes and rebuilds the ring (Varnish's
    /// `change_reconfigure`). False (and an Error record) when no
    /// backend is left.
    fn reconfigure(&self, name: &str, changes: Vec<Change>, replicas: i64) -> bool {
        if changes.is_empty() {
            return true;
        }
        let mut g = match self.ring.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut slots: Vec<Option<ShardBackend>> = g.backends.iter().cloned().map(Some).collect();
        let start = match changes.iter().rposition(|c| matches!(c, Change::Clear)) {
            Some(i) => {
                slots.clear();
                i + 1
            }
            None => 0,
        };
        for ch in &changes[start..] {
            match ch {
                Change::Clear => {}
                Change::Add(b, weight) => {
                    if let Some(old) = slots.iter().flatten().find(|x| b.same(x)) {
                        let ident = old.ident.as_deref().map(|i| format!("/{i}"));
                        log_notice(
                            name,
                            &format!(
                                "backend {}{} already exists - skipping",
                                old.name,
                                ident.unwrap_or_default()
                            ),
                        );
                        continue;
                    }
                    let r = replicas as f64 * weight;
                    let mut b = b.clone();
                    b.replicas = if r > f64::from(u32::MAX) {
                        u32::MAX
                    } else {
                        r as u32
                    };
                    match slots.iter().position(Option::is_none) {
                        Some(hole) => slots[hole] = Some(b),
                        None => slots.push(Some(b)),
                    }
                }
                Change::Remove { h, ident } => {
                    for s in slots.iter_mut() {
                        let hit = match (s.as_ref(), ident) {
                            (None, _) => false,
                            (Some(x), None) => x.h == *h,
                            (Some(x), Some(i)) => x.ident() == i,
                        };
                        if hit {
                            *s = None;
                        }
                    }
                    while matches!(slots.last(), Some(None)) {
                        slots.pop();
                    }
                }
            }
        }
        // Fill holes from the end, as Varnish compacts its array.
        loop {
            while matches!(slots.last(), Some(None)) {
                slots.pop();
            }
            let Some(hole) = slots.iter().position(Option::is_none) else {
                break;
            };
            slots.swap_remove(hole);
        }
        let backends: Vec<ShardBackend> = slots.into_iter().flatten().collect();
        if backends.is_empty() {
            *g = Arc::new(Ring::default());
            log_error(name, ".reconfigure() no backends");
            return false;
        }
        let rmax = (u32::MAX - 1) / backends.len() as u32;
        let total: u64 = backends
            .iter()
            .map(|b| u64::from(b.replicas.min(rmax)))
            .sum();
        if total > MAX_POINTS {
            log_error(
                name,
                &format!(".reconfigure() {total} ring points are too many"),
            );
            return false;
        }
        let mut circle = Vec::with_capacity(total as usize);
        for (host, b) in backends.iter().enumerate() {
            let ident = b.ident().as_bytes();
            for j in 0..b.replicas.min(rmax) {
                let n = j.to_string();
                circle.push(Point {
                    point: crate::vmod_directors::hash_strands32(&[ident, n.as_bytes()]),
                    host: host as u32,
                });
            }
        }
        circle.sort_by_key(|p| p.point);
        *g = Arc::new(Ring { backends, circle });
        true
    }

    /// Varnish's `sharddir_pick_be`.
    #[allow(clippy::too_many_arguments)]
    fn pick(
        &self,
        vcl: &VclShared,
        name: &str,
        key: u32,
        alt: i64,
        warmup: f64,
        rampup: bool,
        healthy: Healthy,
    ) -> Option<i32> {
        let ring = self.ring();
        let n = ring.backends.len();
        if n == 0 || ring.circle.is_empty() {
            log_error(name, "no backends");
            return None;
        }
        let alt_max = n as i64 - 1;
        let alt = if alt < 0 {
            log_error(
                name,
                &format!("invalid negative parameter alt={alt}, set to 0"),
            );
            0
        } else if alt > alt_max {
            log_error(name, &format!("parameter alt={alt} limited to {alt_max}"));
            alt_max
        } else {
            alt
        };
        let mut w = Walk {
            vcl,
            ring: &ring,
            idx: lookup(&ring.circle, key),
            picked: vec![false; n],
            pickcount: 0,
            previous: None,
            last: None,
        };
        let be = |host: usize| ring.backends[host].h;
        if alt > 0 && w.next(alt - 1, healthy == Healthy::All).is_none() {
            return w.previous.map(|(h, _)| be(h));
        }
        if w.next(0, healthy != Healthy::Ignore).is_none() {
            return w.previous.map(|(h, _)| be(h));
        }
        let (chosen, _) = w.last?;
        let warmup = if warmup == -1.0 {
            f64::from_bits(self.warmup.load(Ordering::Relaxed))
        } else {
            warmup
        };
        if alt > 0
            || healthy == Healthy::Ignore
            || (!rampup && warmup == 0.0)
            || w.next(0, true).is_none()
        {
            return Some(be(chosen));
        }
        let (Some((prev, prev_changed)), Some((last, last_changed))) = (w.previous, w.last) else {
            return Some(be(chosen));
        };
        let rampup_of = |host: usize| {
            ring.backends[host]
                .rampup
                .unwrap_or_else(|| f64::from_bits(self.rampup.load(Ordering::Relaxed)))
        };
        let (chosen_r, alt_r) = (rampup_of(prev), rampup_of(last));
        let now = crate::vrt_ctx::now();
        if now - prev_changed < chosen_r {
            // The chosen backend is ramping up: it keeps the request with
            // a probability growing over the rampup period.
            if !rampup
                || now - last_changed < alt_r
                || random_unit() * chosen_r < now - prev_changed
            {
                return Some(be(prev));
            }
        } else if warmup == 0.0 || random_unit() > warmup {
            return Some(be(prev));
        }
        Some(be(last))
    }

    /// Resolution (Varnish's `vmod_shard_resolve`): when the fetch
    /// starts, with the backend task's parameters and object hash; from
    /// `.resolve()` on the client side, with the VCL's parameters and the
    /// URL.
    pub fn resolve(&self, vcl: &VclShared, d: &Director, t: &Task) -> Option<i32> {
        let bo = bereq_ctx(t.method);
        let p = if bo {
            task_r(t, self.id, self.param_ref())
        } else {
            self.param_ref()
        };
        let mut pp = Params::over(p);
        merge(&mut pp, p, t, vcl);
        let key = shard_key(t, &pp, bo);
        self.pick(
            vcl,
            &d.name,
            key,
            pp.alt,
            pp.warmup,
            pp.rampup,
            pp.healthy.unwrap_or(Healthy::Chosen),
        )
    }
}

/// The parameter set `r` points at.
fn get(r: PRef, t: &Task, vcl: &VclShared) -> Params {
    match r {
        PRef::Builtin => BUILTIN,
        PRef::Vcl(id) => vcl.directors.param(id).map_or(BUILTIN, |p| p.get()),
        PRef::Task(id) => t.directors.params.get(&id).copied().unwrap_or(BUILTIN),
    }
}

/// Varnish's `shard_param_task_r`: the task's copy for `id` if there is
/// one, else (for a `shard_param` default) that object's task copy, else
/// `pa` itself.
fn task_r(t: &Task, id: usize, pa: PRef) -> PRef {
    if t.directors.params.contains_key(&id) {
        return PRef::Task(id);
    }
    match pa {
        PRef::Vcl(pid) if pid != id && t.directors.params.contains_key(&pid) => PRef::Task(pid),
        _ => pa,
    }
}

/// Varnish's `shard_param_task_l`: the task's copy for `id`, made on
/// first use on top of `pa` (or of `pa`'s own task copy).
fn task_l(t: &mut Task, id: usize, pa: PRef) -> PRef {
    if t.directors.params.contains_key(&id) {
        return PRef::Task(id);
    }
    let defaults = match pa {
        PRef::Vcl(pid) if pid != id => task_l(t, pid, pa),
        _ => pa,
    };
    t.directors.params.insert(id, Params::over(defaults));
    PRef::Task(id)
}

/// Varnish's `shard_param_merge`: fills what `to` does not set from
/// `from` and its defaults.
fn merge(to: &mut Params, from: PRef, t: &Task, vcl: &VclShared) {
    let mut from = from;
    for _ in 0..8 {
        if to.mask == MASK_PARAM {
            return;
        }
        let f = get(from, t, vcl);
        if to.mask & A_BY == 0 && f.mask & A_BY != 0 {
            to.by = f.by;
            if matches!(f.by, Some(By::Key | By::Blob)) {
                to.key = f.key;
            }
        }
        if to.mask & A_HEALTHY == 0 && f.mask & A_HEALTHY != 0 {
            to.healthy = f.healthy;
        }
        if to.mask & A_RAMPUP == 0 && f.mask & A_RAMPUP != 0 {
            to.rampup = f.rampup;
        }
        if to.mask & A_ALT == 0 && f.mask & A_ALT != 0 {
            to.alt = f.alt;
        }
        if to.mask & A_WARMUP == 0 && f.mask & A_WARMUP != 0 {
            to.warmup = f.warmup;
        }
        to.mask |= f.mask;
        from = f.defaults;
    }
    // A chain that never ends (cannot happen): the built-in defaults.
    merge_builtin(to);
}

fn merge_builtin(to: &mut Params) {
    if to.mask & A_BY == 0 {
        to.by = None;
    }
    if to.mask & A_HEALTHY == 0 {
        to.healthy = None;
    }
    if to.mask & A_RAMPUP == 0 {
        to.rampup = true;
    }
    if to.mask & A_ALT == 0 {
        to.alt = 0;
    }
    if to.mask & A_WARMUP == 0 {
        to.warmup = -1.0;
    }
    to.mask = MASK_PARAM;
}

/// Varnish's `shard_get_key`. `bo`: a backend request exists (backend
/// subroutines, `vcl_pipe`, resolution at fetch time).
fn shard_key(t: &Task, p: &Params, bo: bool) -> u32 {
    match p.by.unwrap_or(By::Hash) {
        By::Key | By::Blob => p.key,
        By::Hash if bo => u32::from_be_bytes([t.hash[0], t.hash[1], t.hash[2], t.hash[3]]),
        By::Hash | By::Url => {
            // The client's URL where a client request is at hand.
            let url = if t.method == Method::Pipe || client_ctx(t.method) {
                &t.req.url
            } else {
                &t.bereq.url
            };
            crate::vmod_directors::hash_strands32(&[url.as_bytes()])
        }
    }
}

/// Whether the current subroutine has a backend request for keys.
fn has_bo(m: Method) -> bool {
    bereq_ctx(m)
}

/// The first four bytes of a key BLOB, big-endian, left-padded.
fn blob_key(b: &[u8]) -> u32 {
    let mut k = [0u8; 4];
    let n = b.len().min(4);
    k[4 - n..].copy_from_slice(&b[..n]);
    u32::from_be_bytes(k)
}

/// The arguments of `.backend()` / `shard_param.set()`.
struct SetArgs<'a> {
    mask: u32,
    by: Option<&'a str>,
    key: i64,
    key_blob: Option<&'a [u8]>,
    alt: i64,
    warmup: f64,
    rampup: bool,
    healthy: Option<&'a str>,
}

/// Reads arguments 0..7 (by, key, key_blob, alt, warmup, rampup,
/// healthy) as `.backend()` and `.set()` share them; "given" is what the
/// VCL wrote.
fn set_args(args: &[Arg]) -> SetArgs<'_> {
    let given = |i: usize| !matches!(args.get(i), None | Some(Arg::None));
    let bits = [
        A_BY, A_KEY, A_KEY_BLOB, A_ALT, A_WARMUP, A_RAMPUP, A_HEALTHY,
    ];
    let mask = bits
        .iter()
        .enumerate()
        .filter(|(i, _)| given(*i))
        .fold(0, |m, (_, b)| m | b);
    let s = |i: usize| match args.get(i) {
        Some(Arg::Str(Some(s))) => Some(s.as_str()),
        _ => None,
    };
    let int = |i: usize| match args.get(i) {
        Some(Arg::Int(n)) => *n,
        _ => 0,
    };
    SetArgs {
        mask,
        by: s(0),
        key: int(1),
        key_blob: match args.get(2) {
            Some(Arg::Blob(Some(b))) => Some(b.as_slice()),
            Some(Arg::Str(Some(s))) => Some(s.as_bytes()),
            _ => None,
        },
        alt: int(3),
        warmup: match args.get(4) {
            Some(Arg::Real(x)) => *x,
            Some(Arg::Int(n)) => *n as f64,
            _ => 0.0,
        },
        rampup: matches!(args.get(5), Some(Arg::Bool(true))),
        healthy: s(6),
    }
}

/// Varnish's `shard_param_args`: checks the arguments and stores them in
/// `p`, whose mask becomes what was given.
fn param_args(p: &mut Params, name: &str, func: &str, a: &SetArgs<'_>) -> Result<(), String> {
    let by = if a.mask & A_BY != 0 {
        a.by.and_then(By::of).unwrap_or(By::Hash)
    } else {
        By::Hash
    };
    match by {
        By::Key => {
            if a.mask & A_KEY == 0 {
                return Err(fail(
                    name,
                    &format!("{func} missing key argument with by=KEY"),
                ));
            }
            let key = u32::try_from(a.key).map_err(|_| {
                fail(
                    name,
                    &format!("{func} invalid key argument {} with by=KEY", a.key),
                )
            })?;
            p.key = key;
        }
        By::Blob => {
            if a.mask & A_KEY_BLOB == 0 {
                return Err(fail(
                    name,
                    &format!("{func} missing key_blob argument with by=BLOB"),
                ));
            }
            match a.key_blob {
                Some(b) if !b.is_empty() => p.key = blob_key(b),
                _ => {
                    log_error(
                        name,
                        &format!("{func} by=BLOB but no or empty key_blob - using key 0"),
                    );
                    p.key = 0;
                }
            }
        }
        By::Hash | By::Url => {
            if a.mask & (A_KEY | A_KEY_BLOB) != 0 {
                return Err(fail(
                    name,
                    &format!(
                        "{func} key and key_blob arguments are invalid with by={}",
                        by.name()
                    ),
                ));
            }
        }
    }
    p.by = Some(by);
    if a.mask & A_ALT != 0 {
        if a.alt < 0 {
            return Err(fail(
                name,
                &format!("{func} invalid alt argument {}", a.alt),
            ));
        }
        p.alt = a.alt;
    }
    if a.mask & A_WARMUP != 0 {
        if (a.warmup < 0.0 && a.warmup != -1.0) || a.warmup > 1.0 || a.warmup.is_nan() {
            return Err(fail(
                name,
                &format!("{func} invalid warmup argument {:.6}", a.warmup),
            ));
        }
        p.warmup = a.warmup;
    }
    if a.mask & A_RAMPUP != 0 {
        p.rampup = a.rampup;
    }
    if a.mask & A_HEALTHY != 0 {
        p.healthy = a.healthy.and_then(Healthy::of);
    }
    p.mask = a.mask & MASK_PARAM;
    Ok(())
}

/// The `shard_param` object a `.use()` BLOB names.
fn param_of_blob(vcl: &VclShared, b: Option<&[u8]>) -> Option<usize> {
    let id = std::str::from_utf8(b?.strip_prefix(PARAM_BLOB)?)
        .ok()?
        .parse::<usize>()
        .ok()?;
    vcl.directors.param(id).map(|_| id)
}

fn blob_arg(args: &[Arg], i: usize) -> Option<&[u8]> {
    match args.get(i) {
        Some(Arg::Blob(Some(b))) => Some(b.as_slice()),
        Some(Arg::Str(Some(s))) => Some(s.as_bytes()),
        _ => None,
    }
}

fn given(args: &[Arg], i: usize) -> bool {
    !matches!(args.get(i), None | Some(Arg::None))
}

/// A method of a shard director.
pub fn call(
    d: &Arc<Director>,
    s: &ShardDir,
    m: Call,
    args: &[Arg],
    t: &mut Task,
    vcl: &VclShared,
) -> Result<Ret, String> {
    let name = d.name.as_str();
    match m {
        Call::SetWarmup => {
            let p = match args.first() {
                Some(Arg::Real(x)) => *x,
                _ => 0.0,
            };
            if !(0.0..1.0).contains(&p) {
                log_notice(name, &format!(".set_warmup({p:.6}) ignored"));
            } else {
                s.warmup.store(p.to_bits(), Ordering::Relaxed);
            }
            Ok(Ret::Void)
        }
        Call::SetRampup => {
            let r = match args.first() {
                Some(Arg::Real(x)) if *x >= 0.0 => *x,
                _ => 0.0,
            };
            s.rampup.store(r.to_bits(), Ordering::Relaxed);
            Ok(Ret::Void)
        }
        Call::Associate => {
            let b = blob_arg(args, 0);
            if b.is_none() {
                s.set_param_ref(PRef::Builtin);
                return Ok(Ret::Void);
            }
            let id = param_of_blob(vcl, b)
                .ok_or_else(|| fail(name, "shard .associate param invalid"))?;
            s.set_param_ref(PRef::Vcl(id));
            Ok(Ret::Void)
        }
        Call::AddBackend => {
            let h = match args.first() {
                Some(Arg::Handle(h)) => *h,
                _ => 0,
            };
            if h == 0 {
                return Err(fail(name, "None backend cannot be added"));
            }
            let mut weight = 1.0;
            if let Some(Arg::Real(w)) = args.get(3) {
                if *w >= 1.0 {
                    weight = *w;
                } else {
                    log_notice(name, &format!(".add_backend(weight={w:.6}) ignored"));
                }
            }
            let ident = match args.get(1) {
                Some(Arg::Str(Some(i))) if !i.is_empty() => Some(i.clone()),
                _ => None,
            };
            let rampup = match args.get(2) {
                Some(Arg::Real(r)) => Some(*r),
                _ => None,
            };
            let b = ShardBackend {
                h,
                name: vcl.backend_name(h).unwrap_or_default(),
                ident,
                rampup,
                replicas: 0,
            };
            t.directors.changes_of(d).push(Change::Add(b, weight));
            Ok(Ret::Bool(true))
        }
        Call::RemoveBackend => {
            let h = match args.first() {
                Some(Arg::Handle(h)) => *h,
                _ => 0,
            };
            let ident = match args.get(1) {
                Some(Arg::Str(Some(i))) if !i.is_empty() => Some(i.clone()),
                _ => None,
            };
            if h == 0 && ident.is_none() {
                return Err(fail(
                    name,
                    ".remove_backend(): either backend or ident are required",
                ));
            }
            t.directors.changes_of(d).push(Change::Remove { h, ident });
            Ok(Ret::Bool(true))
        }
        Call::Clear => {
            t.directors.changes_of(d).push(Change::Clear);
            Ok(Ret::Bool(true))
        }
        Call::Reconfigure => {
            let replicas = match args.first() {
                Some(Arg::Int(n)) => *n,
                _ => DEFAULT_REPLICAS,
            };
            if replicas <= 0 {
                log_error(
                    name,
                    &format!(".reconfigure() invalid replicas argument {replicas}"),
                );
                return Ok(Ret::Bool(false));
            }
            let changes = t.directors.take_changes(d);
            Ok(Ret::Bool(s.reconfigure(name, changes, replicas)))
        }
        Call::Key => Ok(Ret::Int(i64::from(crate::vmod_directors::hash_strands32(
            &[crate::vmod_directors::text(args, 0).as_bytes()],
        )))),
        // Varnish's debug flags only add log records.
        Call::Debug => Ok(Ret::Void),
        Call::Backend => shard_backend(d, s, args, t, vcl),
        m => Err(format!("directors: shard.{m:?}() does not exist")),
    }
}

/// `shard.backend(by, key, key_blob, alt, warmup, rampup, healthy, param,
/// resolve)` (Varnish's `vmod_shard_backend`).
fn shard_backend(
    d: &Arc<Director>,
    s: &ShardDir,
    args: &[Arg],
    t: &mut Task,
    vcl: &VclShared,
) -> Result<Ret, String> {
    let name = d.name.as_str();
    let mut a = set_args(args);
    if given(args, 7) {
        a.mask |= A_PARAM;
    }
    if given(args, 8) {
        a.mask |= A_RESOLVE;
    }
    let lazy = match args.get(8) {
        Some(Arg::Str(Some(r))) => r == "LAZY",
        _ => housekeeping(t.method),
    };
    let mut p = if lazy {
        if a.mask & !A_RESOLVE == 0 {
            return Ok(Ret::Handle(Tag::Backend, d.handle));
        }
        if !bereq_ctx(t.method) {
            return Err(fail(
                name,
                ".backend(resolve=LAZY) with other parameters can only be used in backend/pipe context",
            ));
        }
        let r = task_l(t, s.id, s.param_ref());
        get(r, t, vcl)
    } else {
        if housekeeping(t.method) {
            return Err(fail(
                name,
                ".backend(resolve=NOW) can not be used in vcl_init{}/vcl_fini{}",
            ));
        }
        Params::over(task_r(t, s.id, s.param_ref()))
    };
    if a.mask & A_PARAM != 0 {
        let id = param_of_blob(vcl, blob_arg(args, 7))
            .ok_or_else(|| fail(name, ".backend(key_blob) param invalid"))?;
        p.defaults = PRef::Vcl(id);
    }
    a.mask &= MASK_SET;
    param_args(&mut p, name, "shard.backend()", &a)?;
    if lazy {
        t.directors.params.insert(s.id, p);
        return Ok(Ret::Handle(Tag::Backend, d.handle));
    }
    let defaults = p.defaults;
    merge(&mut p, defaults, t, vcl);
    let key = shard_key(t, &p, has_bo(t.method));
    let be = s.pick(
        vcl,
        name,
        key,
        p.alt,
        p.warmup,
        p.rampup,
        p.healthy.unwrap_or(Healthy::Chosen),
    );
    Ok(Ret::Handle(Tag::Backend, be.unwrap_or(0)))
}

/// A method of a `shard_param` object.
pub fn param_call(
    sp: &Arc<ShardParam>,
    m: Call,
    args: &[Arg],
    t: &mut Task,
    vcl: &VclShared,
) -> Result<Ret, String> {
    let name = sp.name.as_str();
    match m {
        Call::Set | Call::Clear => {
            let func = if m == Call::Set {
                "shard_param.set()"
            } else {
                "shard_param.clear()"
            };
            if client_ctx(t.method) {
                return Err(fail(
                    name,
                    &format!("{func} may only be used in vcl_init and in backend/pipe context"),
                ));
            }
            let task_copy = bereq_ctx(t.method);
            let mut p = if task_copy {
                let r = task_l(t, sp.id, PRef::Vcl(sp.id));
                get(r, t, vcl)
            } else {
                sp.get()
            };
            let r = if m == Call::Set {
                let mut a = set_args(args);
                a.mask &= MASK_SET;
                param_args(&mut p, name, func, &a)
            } else {
                p.mask = 0;
                Ok(())
            };
            if task_copy {
                t.directors.params.insert(sp.id, p);
            } else {
                sp.put(p);
            }
            r.map(|()| Ret::Void)
        }
        Call::Use => {
            let mut b = PARAM_BLOB.to_vec();
            b.extend_from_slice(sp.id.to_string().as_bytes());
            Ok(Ret::Blob(Some(b)))
        }
        Call::GetBy
        | Call::GetKey
        | Call::GetAlt
        | Call::GetWarmup
        | Call::GetRampup
        | Call::GetHealthy => {
            // Varnish's `vmod_shard_param_read`: the task's copy on the
            // backend side, the VCL's object elsewhere.
            let r = if bereq_ctx(t.method) {
                task_r(t, sp.id, PRef::Vcl(sp.id))
            } else {
                PRef::Vcl(sp.id)
            };
            let mut p = Params::over(r);
            merge(&mut p, r, t, vcl);
            Ok(match m {
                Call::GetBy => Ret::Str(Some(p.by.unwrap_or(By::Hash).name().into())),
                Call::GetKey => Ret::Int(i64::from(shard_key(t, &p, has_bo(t.method)))),
                Call::GetAlt => Ret::Int(p.alt),
                Call::GetWarmup => Ret::Real(p.warmup),
                Call::GetRampup => Ret::Bool(p.rampup),
                _ => Ret::Str(Some(p.healthy.unwrap_or(Healthy::Chosen).name().into())),
            })
        }
        m => Err(format!("directors: shard_param.{m:?}() does not exist")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circle(points: &[u32]) -> Vec<Point> {
        points
            .iter()
            .map(|&point| Point { point, host: 0 })
            .collect()
    }

    #[test]
    fn lookup_is_varnish_search() {
        let c = circle(&[10, 20, 30, 40]);
        assert_eq!(lookup(&c, 5), 0);
        assert_eq!(lookup(&c, 10), 0);
        assert_eq!(lookup(&c, 11), 1);
        assert_eq!(lookup(&c, 35), 3);
        // Above the last point: the last point, not the first.
        assert_eq!(lookup(&c, 50), 3);
        // Two points: Varnish's search lands on the last one at once.
        assert_eq!(lookup(&circle(&[10, 20]), 5), 1);
    }

    #[test]
    fn blob_keys_pad_left() {
        assert_eq!(blob_key(&[1]), 1);
        assert_eq!(blob_key(&[1, 2]), 0x0102);
        assert_eq!(blob_key(&[1, 2, 3, 4, 5]), 0x0102_0304);
    }
}
