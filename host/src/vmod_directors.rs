//! Host-native `directors` (Varnish 7.1's `vmod_directors`): round_robin,
//! fallback, random, hash and (in `vmod_directors_shard`) shard, plus
//! `directors.lookup()`.
//!
//! Directors are backends, as in Varnish: each has a BACKEND handle of its
//! own ([`DIRECTOR_BASE`] + its object id) that can go into
//! `req.backend_hint`, into another director, into `std.healthy()`, and
//! shows in `backend.list`. `.backend()` of round_robin, fallback and
//! random returns the director itself; the choice is made when the fetch
//! starts ([`resolve`], Varnish's `VRT_DirectorResolve`), so it sees the
//! health at that moment. hash's `.backend(key)` picks at call time.
//!
//! Members are kept as handles and looked up through the VCL, so
//! directors nest; a director that (directly or not) contains itself is
//! sick to itself and resolution stops after [`MAX_DEPTH`] levels, where
//! varnishd would recurse until it crashes.

use crate::cache_backend::{Backend, ADMIN_HEALTHY, ADMIN_SICK};
use crate::cache_vcl::VclShared;
use crate::vmod_directors_shard::{ShardDir, ShardParam};
use crate::vmod_std::{Arg, Native, Ret};
use crate::vrt_ctx::Task;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use vcl_to_wasm::abi::Tag;
use vcl_to_wasm::types::Method;

/// BACKEND handles of directors are `DIRECTOR_BASE + object id`, far
/// above any declared backend's (`1..=N`).
pub const DIRECTOR_BASE: i32 = 1 << 24;

/// How deep directors may nest before a loop is assumed.
pub const MAX_DEPTH: u32 = 16;

/// The BACKEND handle of the director that is VCL object `obj`.
pub fn director_handle(obj: usize) -> i32 {
    i32::try_from(obj)
        .ok()
        .and_then(|o| DIRECTOR_BASE.checked_add(o))
        .unwrap_or(0)
}

/// The VCL object behind a director's BACKEND handle.
pub fn object_of(h: i32) -> Option<usize> {
    if h >= DIRECTOR_BASE {
        usize::try_from(h - DIRECTOR_BASE).ok()
    } else {
        None
    }
}

/// Varnish's `VRT_HashStrands32`: SHA-256 over the strings (empty ones
/// contribute nothing), read as a little-endian `u32` from the last four
/// bytes of the digest. hash and shard use it so the same key picks the
/// same backend as on varnishd.
pub fn hash_strands32(parts: &[&[u8]]) -> u32 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let d: [u8; 32] = h.finalize().into();
    u32::from_le_bytes([d[28], d[29], d[30], d[31]])
}

/// A random number in `[0, 1)`.
pub(crate) fn random_unit() -> f64 {
    (crate::vmod_std::random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// The weight of the healthy members (Varnish's `vd->total_weight`).
fn healthy_weight(members: &[Member], healthy: &[bool]) -> f64 {
    members
        .iter()
        .zip(healthy)
        .filter(|(_, ok)| **ok)
        .map(|(m, _)| m.w)
        .sum()
}

/// `printf("%W.Pf", x)` as C prints it, NaN (an empty director's share)
/// included: `-nan`, as glibc shows 0.0/0.0.
pub(crate) fn c_float(x: f64, width: usize, prec: usize) -> String {
    if x.is_nan() {
        format!("{:>width$}", "-nan")
    } else {
        format!("{x:>width$.prec$}")
    }
}

/// A JSON string as Varnish's `VCLI_JSON_str` writes it.
pub(crate) fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Which object a constructor makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    RoundRobin,
    Fallback,
    Random,
    Hash,
    Shard,
    ShardParam,
}

impl Kind {
    fn of(class: &str) -> Option<Kind> {
        Some(match class {
            "round_robin" => Kind::RoundRobin,
            "fallback" => Kind::Fallback,
            "random" => Kind::Random,
            "hash" => Kind::Hash,
            "shard" => Kind::Shard,
            "shard_param" => Kind::ShardParam,
            _ => return None,
        })
    }

    /// The type shown by Varnish (`vdi_methods.type`).
    fn type_name(self) -> &'static str {
        match self {
            Kind::RoundRobin => "round-robin",
            Kind::Fallback => "fallback",
            Kind::Random => "random",
            Kind::Hash => "hash",
            Kind::Shard => "shard",
            Kind::ShardParam => "shard_param",
        }
    }
}

/// A method of a director object, bound at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    AddBackend,
    RemoveBackend,
    Backend,
    Clear,
    Reconfigure,
    SetWarmup,
    SetRampup,
    Associate,
    Key,
    Debug,
    Set,
    GetBy,
    GetKey,
    GetAlt,
    GetWarmup,
    GetRampup,
    GetHealthy,
    Use,
}

impl Call {
    fn of(m: &str) -> Option<Call> {
        Some(match m {
            "add_backend" => Call::AddBackend,
            "remove_backend" => Call::RemoveBackend,
            "backend" => Call::Backend,
            "clear" => Call::Clear,
            "reconfigure" => Call::Reconfigure,
            "set_warmup" => Call::SetWarmup,
            "set_rampup" => Call::SetRampup,
            "associate" => Call::Associate,
            "key" => Call::Key,
            "debug" => Call::Debug,
            "set" => Call::Set,
            "get_by" => Call::GetBy,
            "get_key" => Call::GetKey,
            "get_alt" => Call::GetAlt,
            "get_warmup" => Call::GetWarmup,
            "get_rampup" => Call::GetRampup,
            "get_healthy" => Call::GetHealthy,
            "use" => Call::Use,
            _ => return None,
        })
    }
}

/// Binds a `directors` native (`round_robin`, `shard.backend`, `lookup`).
pub fn bind(func: &str) -> Option<Native> {
    if func == "lookup" {
        return Some(Native::DirectorLookup);
    }
    match func.split_once('.') {
        None => Kind::of(func).map(Native::DirectorNew),
        Some((class, m)) => Some(Native::DirectorMethod(Kind::of(class)?, Call::of(m)?)),
    }
}

/// One member of a round_robin/fallback/random/hash director.
#[derive(Clone, Copy, Debug)]
struct Member {
    h: i32,
    w: f64,
}

/// The directors built on Varnish's `vdir`: a list of weighted members.
#[derive(Debug)]
pub struct Vdir {
    kind: Kind,
    sticky: bool,
    members: RwLock<Arc<Vec<Member>>>,
    /// round_robin's next member, fallback's current one.
    cur: AtomicUsize,
}

impl Vdir {
    fn new(kind: Kind, sticky: bool) -> Vdir {
        Vdir {
            kind,
            sticky,
            members: RwLock::new(Arc::new(Vec::new())),
            cur: AtomicUsize::new(0),
        }
    }

    /// A snapshot of the members: health checks of nested directors run
    /// without any lock held, so a director inside itself cannot deadlock.
    fn members(&self) -> Arc<Vec<Member>> {
        match self.members.read() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn edit(&self, f: impl FnOnce(&mut Vec<Member>)) {
        let mut g = match self.members.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(Arc::make_mut(&mut g));
    }

    fn add(&self, name: &str, h: i32, w: f64) -> Result<(), String> {
        if h == 0 {
            return Err(format!("{name}: None backend cannot be added"));
        }
        self.edit(|m| m.push(Member { h, w }));
        Ok(())
    }

    fn remove(&self, name: &str, h: i32) -> Result<(), String> {
        if h == 0 {
            return Err(format!("{name}: None backend cannot be removed"));
        }
        let fallback = self.kind == Kind::Fallback;
        let cur = &self.cur;
        self.edit(|m| {
            let Some(u) = m.iter().position(|x| x.h == h) else {
                return;
            };
            m.remove(u);
            if fallback {
                // Keep pointing at the same member, as Varnish does.
                let n = m.len();
                let _ = cur.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                    Some(if u < c {
                        c - 1
                    } else if c >= n {
                        0
                    } else {
                        c
                    })
                });
            }
        });
        Ok(())
    }

    /// Varnish's `vdir_pick_be`: the member where `r` (in `[0, 1)`) falls
    /// on the line of the healthy members' weights.
    fn pick_by_weight(&self, vcl: &VclShared, r: f64) -> Option<i32> {
        let members = self.members();
        let healthy: Vec<&Member> = members.iter().filter(|m| health(vcl, m.h).0).collect();
        let total: f64 = healthy.iter().map(|m| m.w).sum();
        if total.is_nan() || total <= 0.0 {
            return None;
        }
        let target = r * total;
        let mut acc = 0.0;
        for m in &healthy {
            acc += m.w;
            if target < acc {
                return Some(m.h);
            }
        }
        healthy.last().map(|m| m.h)
    }

    /// One resolve step (`vdi_resolve_f`): the member to use now.
    fn resolve(&self, vcl: &VclShared) -> Option<i32> {
        let members = self.members();
        let n = members.len();
        match self.kind {
            Kind::RoundRobin => {
                if n == 0 {
                    return None;
                }
                let mut nxt = self.cur.load(Ordering::Acquire) % n;
                let mut found = None;
                for _ in 0..n {
                    let m = members[nxt];
                    nxt = (nxt + 1) % n;
                    if health(vcl, m.h).0 {
                        found = Some(m.h);
                        break;
                    }
                }
                self.cur.store(nxt, Ordering::Release);
                found
            }
            Kind::Fallback => {
                if n == 0 {
                    return None;
                }
                let mut cur = if self.sticky {
                    self.cur.load(Ordering::Acquire) % n
                } else {
                    0
                };
                let mut found = None;
                for _ in 0..n {
                    let m = members[cur];
                    if health(vcl, m.h).0 {
                        found = Some(m.h);
                        break;
                    }
                    cur = (cur + 1) % n;
                }
                self.cur.store(cur, Ordering::Release);
                found
            }
            Kind::Random => self.pick_by_weight(vcl, random_unit()),
            // hash has no resolve method: only `.backend(key)` picks.
            _ => None,
        }
    }
}

/// The implementation behind a director.
#[derive(Debug)]
pub enum Imp {
    Vdir(Vdir),
    Shard(ShardDir),
}

/// A director object: a backend with a name, an admin health and a way
/// to pick one of its members.
#[derive(Debug)]
pub struct Director {
    /// The VCL name (`vdir` in `new vdir = …`).
    pub name: String,
    pub kind: Kind,
    /// Its BACKEND handle.
    pub handle: i32,
    /// `backend.set_health`, as for backends.
    pub admin_health: AtomicU8,
    /// When its admin health last changed (or when it was made).
    changed: AtomicU64,
    pub imp: Imp,
}

impl Director {
    /// When its health was last changed by the admin, or its creation.
    pub fn changed(&self) -> f64 {
        f64::from_bits(self.changed.load(Ordering::Relaxed))
    }

    /// `backend.set_health` on this director.
    pub fn set_admin_health(&self, v: u8) {
        if self.admin_health.swap(v, Ordering::Relaxed) != v {
            self.changed
                .store(crate::vrt_ctx::now().to_bits(), Ordering::Relaxed);
        }
    }

    /// The Admin column of `backend.list`: a director with a health
    /// method is "probe" when not overridden, hash is always "healthy".
    pub fn admin_label(&self) -> &'static str {
        match self.admin_health.load(Ordering::Relaxed) {
            ADMIN_HEALTHY => "healthy",
            ADMIN_SICK => "sick",
            _ if self.kind == Kind::Hash => "healthy",
            _ => "probe",
        }
    }

    /// The Probe and Health columns of `backend.list`: healthy members
    /// of all, and whether any is healthy (hash lists none: "0/0",
    /// "healthy"). The admin's health is in the Admin column only.
    pub fn probe_label(&self, vcl: &VclShared) -> (String, &'static str) {
        if self.kind == Kind::Hash {
            return ("0/0".into(), "healthy");
        }
        let hs = self.member_handles();
        let nh = hs.iter().filter(|&&h| health(vcl, h).0).count();
        let health = if nh > 0 { "healthy" } else { "sick" };
        (format!("{nh}/{}", hs.len()), health)
    }

    /// Varnish's `vdi_methods.type`, for `backend.list -j`.
    pub fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }

    /// `backend.list -p`: what the director's `list` method adds (hash
    /// has none), tab-separated for the CLI's table layout, as Varnish's
    /// `vdir_list`, `vmod_fallback_list` and `vmod_shard_list` write it.
    pub fn details(&self, vcl: &VclShared) -> Option<String> {
        let name = |h: i32| vcl.backend_name(h).unwrap_or_default();
        let label = |ok: bool| if ok { "healthy" } else { "sick" };
        let v = match &self.imp {
            Imp::Shard(s) => return Some(s.details(vcl)),
            Imp::Vdir(_) if self.kind == Kind::Hash => return None,
            Imp::Vdir(v) => v,
        };
        let members = v.members();
        let healthy: Vec<bool> = members.iter().map(|m| health(vcl, m.h).0).collect();
        let mut out = String::new();
        if self.kind == Kind::Fallback {
            out.push_str("\n\n\tBackend\tCurrent\tHealth\n");
            let cur = v.cur.load(Ordering::Relaxed);
            for (u, (m, ok)) in members.iter().zip(&healthy).enumerate() {
                let mark = if u == cur { "\t*\t" } else { "\t\t" };
                out.push_str(&format!("\t{}{mark}{}\n", name(m.h), label(*ok)));
            }
        } else {
            out.push_str("\n\n\tBackend\tWeight\tHealth\n");
            let total = healthy_weight(&members, &healthy);
            for (m, ok) in members.iter().zip(&healthy) {
                let w = if self.kind == Kind::Random {
                    let w = if *ok { m.w } else { 0.0 };
                    format!("\t{}%\t", c_float(100.0 * w / total, 6, 2))
                } else {
                    "\t-\t".into()
                };
                out.push_str(&format!("\t{}{w}{}\n", name(m.h), label(*ok)));
            }
        }
        Some(out)
    }

    /// `backend.list -j -p`: the same as JSON, for a value that starts
    /// at indentation `indent` (ends with `},` and a newline).
    pub fn details_json(&self, vcl: &VclShared, indent: usize) -> Option<String> {
        let v = match &self.imp {
            Imp::Shard(s) => return Some(s.details_json(vcl, indent)),
            Imp::Vdir(_) if self.kind == Kind::Hash => return None,
            Imp::Vdir(v) => v,
        };
        let p1 = " ".repeat(indent + 2);
        let p2 = " ".repeat(indent + 4);
        let p3 = " ".repeat(indent + 6);
        let members = v.members();
        let healthy: Vec<bool> = members.iter().map(|m| health(vcl, m.h).0).collect();
        let mut out = String::from("{\n");
        match self.kind {
            Kind::Fallback => out.push_str(&format!("{p1}\"sticky\": {},\n", v.sticky)),
            Kind::Random => out.push_str(&format!(
                "{p1}\"total_weight\": {:.6},\n",
                healthy_weight(&members, &healthy)
            )),
            _ => {}
        }
        out.push_str(&format!("{p1}\"backends\": {{\n"));
        let cur = v.cur.load(Ordering::Relaxed);
        let rows: Vec<String> = members
            .iter()
            .zip(&healthy)
            .enumerate()
            .map(|(u, (m, ok))| {
                let mut r = format!(
                    "{p2}{}: {{\n",
                    json_str(&vcl.backend_name(m.h).unwrap_or_default())
                );
                match self.kind {
                    Kind::Fallback => r.push_str(&format!("{p3}\"current\": {},\n", u == cur)),
                    Kind::Random => r.push_str(&format!(
                        "{p3}\"weight\": {:.6},\n",
                        if *ok { m.w } else { 0.0 }
                    )),
                    _ => {}
                }
                r.push_str(&format!(
                    "{p3}\"health\": \"{}\"\n{p2}}}",
                    if *ok { "healthy" } else { "sick" }
                ));
                r
            })
            .collect();
        out.push_str(&rows.join(",\n"));
        out.push_str(&format!("\n{p1}}}\n{}}},\n", " ".repeat(indent)));
        Some(out)
    }

    fn member_handles(&self) -> Vec<i32> {
        match &self.imp {
            Imp::Vdir(v) => v.members().iter().map(|m| m.h).collect(),
            Imp::Shard(s) => s.member_handles(),
        }
    }
}

/// A VCL object of `directors`.
#[derive(Clone, Debug)]
pub enum Obj {
    Dir(Arc<Director>),
    Param(Arc<ShardParam>),
}

/// The `directors` objects of one VCL, by object id.
#[derive(Debug, Default)]
pub struct Directors {
    objs: RwLock<Vec<Option<Obj>>>,
}

impl Directors {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Option<Obj>>> {
        match self.objs.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn insert(&self, id: usize, obj: Obj) {
        let mut g = match self.objs.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if g.len() <= id {
            g.resize_with(id + 1, || None);
        }
        g[id] = Some(obj);
    }

    /// The object with id `id`.
    pub fn get(&self, id: usize) -> Option<Obj> {
        self.read().get(id).cloned().flatten()
    }

    /// The director behind BACKEND handle `h`.
    pub fn director(&self, h: i32) -> Option<Arc<Director>> {
        match self.get(object_of(h)?)? {
            Obj::Dir(d) => Some(d),
            Obj::Param(_) => None,
        }
    }

    /// The shard_param object with id `id`.
    pub fn param(&self, id: usize) -> Option<Arc<ShardParam>> {
        match self.get(id)? {
            Obj::Param(p) => Some(p),
            Obj::Dir(_) => None,
        }
    }

    /// Every director, in the order they were made.
    pub fn all(&self) -> Vec<Arc<Director>> {
        self.read()
            .iter()
            .filter_map(|o| match o {
                Some(Obj::Dir(d)) => Some(d.clone()),
                _ => None,
            })
            .collect()
    }
}

/// How many directors one health check may visit: a wide and deep
/// nesting is cut off instead of taking exponential time.
const MAX_VISITS: u32 = 10_000;

thread_local! {
    /// The directors whose health is being computed on this thread (to
    /// catch a director inside itself) and the visits so far.
    static WALK: std::cell::RefCell<(Vec<i32>, u32)> = const { std::cell::RefCell::new((Vec::new(), 0)) };
}

/// Leaves a director's health check (pops it off [`WALK`]).
struct Visit;

impl Visit {
    /// Enters director `h`, unless that loops, nests too deep or takes
    /// too long.
    fn enter(h: i32) -> Option<Visit> {
        WALK.with(|w| {
            let mut w = w.borrow_mut();
            if w.0.is_empty() {
                w.1 = 0;
            }
            if w.0.contains(&h) || w.0.len() >= MAX_DEPTH as usize || w.1 >= MAX_VISITS {
                return None;
            }
            w.0.push(h);
            w.1 += 1;
            Some(Visit)
        })
    }
}

impl Drop for Visit {
    fn drop(&mut self) {
        WALK.with(|w| {
            w.borrow_mut().0.pop();
        });
    }
}

/// Varnish's `VRT_Healthy`: whether BACKEND `h` is healthy, and when its
/// health last changed. A director is healthy when any member is (hash,
/// which has no health method, always is), unless the admin says
/// otherwise. A director that contains itself is sick to itself.
pub fn health(vcl: &VclShared, h: i32) -> (bool, f64) {
    if h == 0 {
        return (false, 0.0);
    }
    if let Some(be) = vcl.backend(h) {
        // `backend x none;` is Varnish's NULL backend: never healthy.
        return (be.addr.is_some() && be.is_healthy(), be.changed());
    }
    let Some(d) = vcl.directors.director(h) else {
        return (false, 0.0);
    };
    match d.admin_health.load(Ordering::Relaxed) {
        ADMIN_HEALTHY => return (true, d.changed()),
        ADMIN_SICK => return (false, d.changed()),
        _ => {}
    }
    if d.kind == Kind::Hash {
        return (true, d.changed());
    }
    let Some(_visit) = Visit::enter(h) else {
        tracing::warn!(director = %d.name, "directors loop or nest too deep: taken as sick");
        return (false, 0.0);
    };
    let mut changed = 0.0f64;
    for m in d.member_handles() {
        let (ok, c) = health(vcl, m);
        changed = changed.max(c);
        if ok {
            return (true, changed);
        }
    }
    (false, changed)
}

/// Varnish's `VRT_DirectorResolve`: follows directors from `h` down to
/// a declared backend's handle, if they pick one. `t` is the task it
/// runs in (shard reads its parameters and key from it).
pub fn resolve_handle(vcl: &VclShared, h: i32, t: &Task) -> Option<i32> {
    let mut cur = h;
    for _ in 0..MAX_DEPTH {
        if cur == 0 || vcl.backend(cur).is_some() {
            return (cur != 0).then_some(cur);
        }
        let d = vcl.directors.director(cur)?;
        cur = match &d.imp {
            Imp::Vdir(v) => v.resolve(vcl)?,
            Imp::Shard(s) => s.resolve(vcl, &d, t)?,
        };
    }
    tracing::warn!("directors nest too deep (a loop?): no backend");
    None
}

/// Varnish's `VDI_Resolve`: the backend a fetch of `t` from `h` goes to,
/// picked as the fetch starts; `Err` is Varnish's FetchError text.
pub fn resolve(vcl: &VclShared, h: i32, t: &Task) -> Result<Arc<Backend>, String> {
    if h == 0 {
        return Err("No backend".into());
    }
    match resolve_handle(vcl, h, t).and_then(|b| vcl.backend(b)) {
        Some(be) => Ok(be.clone()),
        None => Err(format!(
            "Director {} returned no backend",
            vcl.backend_name(h).unwrap_or_default()
        )),
    }
}

/// The BACKEND named `name` (a backend or a director), 0 if none.
pub fn by_name(vcl: &VclShared, name: &str) -> i32 {
    if let Some(i) = vcl.backends.iter().position(|b| b.name == name) {
        return i as i32 + 1;
    }
    vcl.directors
        .all()
        .iter()
        .find(|d| d.name == name)
        .map_or(0, |d| d.handle)
}

fn handle(args: &[Arg], i: usize) -> i32 {
    match args.get(i) {
        Some(Arg::Handle(h)) => *h,
        _ => 0,
    }
}

fn real(args: &[Arg], i: usize) -> Option<f64> {
    match args.get(i) {
        Some(Arg::Real(x)) => Some(*x),
        Some(Arg::Int(n)) => Some(*n as f64),
        _ => None,
    }
}

/// The text of a STRING/STRANDS argument (NULL is empty).
pub(crate) fn text(args: &[Arg], i: usize) -> &str {
    match args.get(i) {
        Some(Arg::Str(Some(s))) => s,
        _ => "",
    }
}

/// Whether `m` is `vcl_init` or `vcl_fini` (Varnish's `VCL_MET_TASK_H`).
pub(crate) fn housekeeping(m: Method) -> bool {
    matches!(m, Method::Init | Method::Fini)
}

/// Calls a `directors` native: a constructor, a method or `lookup()`.
/// `Err` fails the task (`VRT_fail`).
pub fn call(
    native: &Native,
    object: i32,
    args: &[Arg],
    task: &mut Task,
    vcl: &VclShared,
) -> Result<Ret, String> {
    // `backend x none;` is no backend at all to a director (Varnish's NULL).
    let none =
        |a: &Arg| matches!(a, Arg::Handle(h) if vcl.backend(*h).is_some_and(|b| b.addr.is_none()));
    let owned: Vec<Arg>;
    let args = if args.iter().any(none) {
        owned = args
            .iter()
            .map(|a| if none(a) { Arg::Handle(0) } else { a.clone() })
            .collect();
        owned.as_slice()
    } else {
        args
    };
    match native {
        Native::DirectorLookup => {
            if !housekeeping(task.method) {
                return Err("lookup() may only be called from vcl_init / vcl_fini".into());
            }
            Ok(Ret::Handle(Tag::Backend, by_name(vcl, text(args, 0))))
        }
        Native::DirectorNew(kind) => {
            let id =
                usize::try_from(object).map_err(|_| "constructor without object".to_string())?;
            let name = vcl
                .meta
                .objects
                .get(id)
                .map_or_else(|| format!("director{id}"), |o| o.name.clone());
            let obj = match kind {
                Kind::ShardParam => Obj::Param(Arc::new(ShardParam::new(name, id))),
                k => {
                    let imp = match k {
                        Kind::Shard => Imp::Shard(ShardDir::new(id)),
                        Kind::Fallback => {
                            Imp::Vdir(Vdir::new(*k, matches!(args.first(), Some(Arg::Bool(true)))))
                        }
                        _ => Imp::Vdir(Vdir::new(*k, false)),
                    };
                    Obj::Dir(Arc::new(Director {
                        name,
                        kind: *k,
                        handle: director_handle(id),
                        admin_health: AtomicU8::new(crate::cache_backend::ADMIN_AUTO),
                        changed: AtomicU64::new(crate::vrt_ctx::now().to_bits()),
                        imp,
                    }))
                }
            };
            vcl.directors.insert(id, obj);
            Ok(Ret::Void)
        }
        Native::DirectorMethod(kind, m) => {
            let obj = usize::try_from(object)
                .ok()
                .and_then(|id| vcl.directors.get(id))
                .ok_or_else(|| format!("directors: no {} object {object}", kind.type_name()))?;
            match obj {
                Obj::Param(p) => crate::vmod_directors_shard::param_call(&p, *m, args, task, vcl),
                Obj::Dir(d) => match &d.imp {
                    Imp::Shard(s) => crate::vmod_directors_shard::call(&d, s, *m, args, task, vcl),
                    Imp::Vdir(v) => vdir_call(&d, v, *m, args, vcl),
                },
            }
        }
        _ => Err("directors: not a directors function".into()),
    }
}

fn vdir_call(
    d: &Director,
    v: &Vdir,
    m: Call,
    args: &[Arg],
    vcl: &VclShared,
) -> Result<Ret, String> {
    match m {
        Call::AddBackend => {
            // round_robin and fallback have no weight (Varnish stores 0).
            let w = match v.kind {
                Kind::Random | Kind::Hash => real(args, 1).unwrap_or(1.0),
                _ => 0.0,
            };
            v.add(&d.name, handle(args, 0), w)?;
            Ok(Ret::Void)
        }
        Call::RemoveBackend => {
            v.remove(&d.name, handle(args, 0))?;
            Ok(Ret::Void)
        }
        Call::Backend if v.kind == Kind::Hash => {
            let key = text(args, 0);
            let r = f64::from(hash_strands32(&[key.as_bytes()])) / 4_294_967_296.0;
            Ok(Ret::Handle(
                Tag::Backend,
                v.pick_by_weight(vcl, r).unwrap_or(0),
            ))
        }
        Call::Backend => Ok(Ret::Handle(Tag::Backend, d.handle)),
        m => Err(format!(
            "directors: {}.{m:?}() does not exist",
            d.kind.type_name()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_strands32_matches_varnish() {
        // SHA-256("") ends in …b8 55: little-endian 0x55b8_52.. read from
        // the last four bytes e4 64 9b 93 4c a4 95 99 1b 78 52 b8 55.
        assert_eq!(
            hash_strands32(&[b""]),
            u32::from_le_bytes([0x78, 0x52, 0xb8, 0x55])
        );
        // Strands hash as their concatenation.
        assert_eq!(hash_strands32(&[b"ab", b"c"]), hash_strands32(&[b"abc"]));
    }

    #[test]
    fn handles() {
        assert_eq!(object_of(director_handle(3)), Some(3));
        assert_eq!(object_of(5), None);
        assert!(bind("shard.backend").is_some());
        assert!(bind("shard_param.get_by").is_some());
        assert!(bind("nosuch.backend").is_none());
        assert!(matches!(bind("lookup"), Some(Native::DirectorLookup)));
    }
}
