//! Loaded VCLs (Varnish's `cache_vcl`): compile, link the `vrt` imports,
//! resolve backends, compile regexes and ACLs, bind natives, run
//! `vcl_init`, and keep a pool of warm instances so no request pays for
//! a fresh instance's first touch of memory.

use crate::cache_acl::Acl;
use crate::cache_backend::Backend;
use crate::mgt_param::Params;
use crate::vmod_std::{self, Native};
use crate::vrt::{Data, VrtError};
use crate::vrt_ctx::Task;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use vcl_to_wasm::abi;
use vcl_to_wasm::tir::Metadata;
use vcl_to_wasm::types::{Action, Method};
use wasmtime::{
    Engine, Global, InstancePre, Linker, Memory, Module, Store, StoreLimitsBuilder, TypedFunc, Val,
};

/// Why a VCL could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("VCL compilation failed:\n{0}")]
    Compile(String),
    #[error("{0}")]
    Setup(String),
    #[error("vcl_init failed: {0}")]
    Init(String),
}

/// Why one call into VCL failed (the task then fails with a 503).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("workspace overflow")]
    WsOverflow,
    #[error("VCL exceeded its CPU budget")]
    Timeout,
    #[error("VCL trapped: {0}")]
    Trap(String),
    #[error("VCL failed: {0}")]
    Host(String),
    #[error("bad action code {0}")]
    BadAction(i32),
}

/// State of a loaded VCL shared by all its instances.
pub struct VclShared {
    pub meta: Metadata,
    pub regexes: Vec<pcre2::bytes::Regex>,
    pub acls: Vec<Acl>,
    pub natives: Vec<Native>,
    pub backends: Vec<Arc<Backend>>,
    /// `-s malloc,SIZE` (reported by `storage.*.free_space`).
    pub storage_budget: u64,
    /// `directors` objects by `ObjectId`, created in `vcl_init`.
    pub directors: crate::vmod_directors::Directors,
    /// The component VMODs it imports, in `Binding::vmod` order.
    pub vmods: Vec<Arc<crate::cache_vmod::VclVmod>>,
    /// What `std.fileread()` may read: `fileread_path` at load time.
    pub files: crate::vmod_std::FileReader,
    /// The name it was loaded as (`VCL_trace` names it), once known.
    pub name: std::sync::OnceLock<String>,
}

impl VclShared {
    /// The declared backend behind a BACKEND handle (not a director).
    pub fn backend(&self, h: i32) -> Option<&Arc<Backend>> {
        usize::try_from(h.checked_sub(1)?)
            .ok()
            .and_then(|i| self.backends.get(i))
    }

    /// Whether a BACKEND handle (a backend or a director) is healthy
    /// (false for none), as `std.healthy()` sees it.
    pub fn backend_healthy(&self, h: i32) -> bool {
        crate::vmod_directors::health(self, h).0
    }

    /// A BACKEND handle's name (a backend's or a director's).
    pub fn backend_name(&self, h: i32) -> Option<String> {
        match self.backend(h) {
            Some(b) => Some(b.name.clone()),
            None => self.directors.director(h).map(|d| d.name.clone()),
        }
    }

    /// The BACKEND handle named `name`, 0 (none) if there is none.
    pub fn backend_by_name(&self, name: &str) -> i32 {
        crate::vmod_directors::by_name(self, name)
    }

    /// The backend a fetch of `t` goes to: `h` itself, or what the
    /// director `h` picks now (Varnish's resolve step when the fetch
    /// starts). `Err` says why there is none, as Varnish's FetchError.
    pub fn resolve(&self, h: i32, t: &Task) -> Result<Arc<Backend>, String> {
        crate::vmod_directors::resolve(self, h, t)
    }

    /// The BACKEND handle of a declared backend (0 if it is not this
    /// VCL's).
    pub fn handle_of(&self, be: &Arc<Backend>) -> i32 {
        self.backends
            .iter()
            .position(|b| Arc::ptr_eq(b, be))
            .map_or(0, |i| i as i32 + 1)
    }
}

/// One warm instance with its store.
struct Warm {
    store: Store<Data>,
    /// Its memory limit is a tenant's quota, not the VCL's own.
    capped: bool,
    ws_start: Global,
    heap_base: u32,
    subs: Vec<Option<TypedFunc<(), i32>>>,
}

/// A loaded VCL.
pub struct Vcl {
    pub shared: Arc<VclShared>,
    pub default_backend: i32,
    /// The compiled module, shared by every loaded VCL whose module has
    /// the same bytes (see [`compiled_module`]).
    module: Arc<CachedModule>,
    pool: Mutex<Vec<Warm>>,
    budget_ticks: u64,
    mem_cap: usize,
    /// Its name in the VCL table, set once when it is added there.
    name: OnceLock<String>,
    /// The sources it was compiled from (`vcl.show`): the main file
    /// first, then what it includes.
    pub sources: Vec<Arc<vcl_to_wasm::error::Source>>,
    /// Cold (`vcl.state NAME cold`, or `auto` after `vcl_cooldown`): no
    /// warm instances are kept and its probes are stopped.
    cold: AtomicBool,
    /// Tasks using it now (`vcl.list`'s busy count).
    busy: AtomicUsize,
}

/// A compiled module, cached by the SHA-256 of its bytes so reloading an
/// unchanged VCL costs no machine-code compilation.
struct CachedModule {
    pre: InstancePre<Data>,
}

/// How many module compilations were avoided by the cache and how many
/// were done (for tests and `bench/`).
pub static MODULES_COMPILED: AtomicU64 = AtomicU64::new(0);
pub static MODULES_REUSED: AtomicU64 = AtomicU64::new(0);

/// The compiled module for `wasm`: from the cache when a loaded VCL has
/// the same module, else compiled (Cranelift) and linked. The cache holds
/// modules weakly: a module goes when the last VCL using it is discarded.
fn compiled_module(engine: &Engine, wasm: &[u8]) -> Result<Arc<CachedModule>, String> {
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::sync::Weak;
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], Weak<CachedModule>>>> = OnceLock::new();
    // Custom sections (the metadata: backends, probes, names) do not
    // change the machine code, so VCLs that differ only there share it.
    let mut h = Sha256::new();
    for part in code_sections(wasm) {
        h.update(part);
    }
    let key: [u8; 32] = h.finalize().into();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(m) = cache
        .lock()
        .ok()
        .and_then(|c| c.get(&key).and_then(Weak::upgrade))
    {
        MODULES_REUSED.fetch_add(1, Ordering::Relaxed);
        return Ok(m);
    }
    let module = Module::new(engine, wasm).map_err(|e| format!("{e:#}"))?;
    let pre = linker()?
        .instantiate_pre(&module)
        .map_err(|e| format!("{e:#}"))?;
    MODULES_COMPILED.fetch_add(1, Ordering::Relaxed);
    let m = Arc::new(CachedModule { pre });
    if let Ok(mut c) = cache.lock() {
        c.retain(|_, w| w.strong_count() > 0);
        c.insert(key, Arc::downgrade(&m));
    }
    Ok(m)
}

/// The parts of a module that decide its machine code: everything but
/// its custom sections (or the whole module, if it cannot be walked).
fn code_sections(wasm: &[u8]) -> Vec<&[u8]> {
    fn leb(b: &[u8], at: &mut usize) -> Option<usize> {
        let mut v: usize = 0;
        for shift in (0..35).step_by(7) {
            let byte = *b.get(*at)?;
            *at += 1;
            v |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let walk = || -> Option<Vec<&[u8]>> {
        let mut out = vec![wasm.get(..8)?];
        let mut at = 8;
        while at < wasm.len() {
            let start = at;
            let id = wasm[at];
            at += 1;
            let len = leb(wasm, &mut at)?;
            let end = at.checked_add(len)?;
            let whole = wasm.get(start..end)?;
            if id != 0 {
                out.push(whole);
            }
            at = end;
        }
        Some(out)
    };
    walk().unwrap_or_else(|| vec![wasm])
}

/// A task's hold on a VCL: counted in its busy count while it lives
/// (Varnish's VCL reference of a request or a fetch).
pub struct VclRef(Arc<Vcl>);

impl VclRef {
    /// Holds `vcl` for a task.
    pub fn new(vcl: Arc<Vcl>) -> VclRef {
        vcl.busy.fetch_add(1, Ordering::Relaxed);
        VclRef(vcl)
    }

    /// The VCL held.
    pub fn vcl(&self) -> &Arc<Vcl> {
        &self.0
    }
}

impl Clone for VclRef {
    fn clone(&self) -> Self {
        VclRef::new(self.0.clone())
    }
}

impl Drop for VclRef {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::ops::Deref for VclRef {
    type Target = Arc<Vcl>;
    fn deref(&self) -> &Arc<Vcl> {
        &self.0
    }
}

/// The process-wide engine, with a ticker thread advancing its epoch once
/// per elapsed millisecond so CPU budgets are counted in milliseconds.
pub fn engine() -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let e = crate::sandbox::engine().map_err(|e| format!("{e:#}"))?;
            let ticker = e.clone();
            std::thread::Builder::new()
                .name("shellac-epoch".into())
                .spawn(move || {
                    // Ticks follow the clock, not the number of sleeps: a
                    // sleep overshoots (timer slack, scheduling), and a
                    // budget of 50 ticks should stop a guest after 50 ms.
                    // It wakes every 5 ms (a budget then ends up to 5 ms
                    // late): waking every millisecond cost a cache hit
                    // more than 1 % of its CPU.
                    let start = std::time::Instant::now();
                    let mut ticks: u128 = 0;
                    loop {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        let due = start.elapsed().as_millis();
                        while ticks < due {
                            ticker.increment_epoch();
                            ticks += 1;
                        }
                    }
                })
                .map_err(|e| format!("starting the epoch ticker: {e}"))?;
            Ok(e)
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn linker() -> Result<&'static Linker<Data>, String> {
    static LINKER: OnceLock<Result<Linker<Data>, String>> = OnceLock::new();
    LINKER
        .get_or_init(|| crate::vrt::linker(engine()?).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(Clone::clone)
}

fn method_index(m: Method) -> usize {
    m as usize
}

/// Classifies an error from a call into the module.
/// The epoch deadline of a VCL call passed. Without a `cpu_ms` quota
/// that is the per-call budget: the call is interrupted. Under one, the
/// first deadline starts the CPU clock (see `CpuCall`), and each one
/// says whether the request's CPU time is used up (interrupted) or how
/// much is left (granted, within the per-call budget). So the clock is
/// read only when a call runs long, never on a quick one.
fn cpu_deadline(
    mut c: wasmtime::StoreContextMut<'_, Data>,
) -> wasmtime::Result<wasmtime::UpdateDeadline> {
    let interrupt = || Err(wasmtime::Error::from(wasmtime::Trap::Interrupt));
    let Some(task) = c.data_mut().task.as_deref_mut() else {
        return interrupt();
    };
    let io_wait = task.io_wait;
    let Some(call) = task.cpu_call.as_mut() else {
        return interrupt();
    };
    if call.cpu0.is_none() {
        call.wall0 = call.wall(io_wait);
        call.cpu0 = Some(crate::vrt_ctx::thread_cpu());
    }
    let used = call.used(io_wait);
    if used >= call.left || call.wall_ticks == 0 {
        return interrupt();
    }
    let grant = ((call.left - used).as_millis() as u64 + 1).min(call.wall_ticks);
    call.wall_ticks -= grant;
    Ok(wasmtime::UpdateDeadline::Continue(grant))
}

fn classify(e: wasmtime::Error) -> CallError {
    if let Some(v) = e.downcast_ref::<VrtError>() {
        return match v {
            VrtError::WsOverflow => CallError::WsOverflow,
            VrtError::Host(m) => CallError::Host(m.clone()),
        };
    }
    if let Some(wasmtime::Trap::Interrupt) = e.downcast_ref::<wasmtime::Trap>() {
        return CallError::Timeout;
    }
    CallError::Trap(format!("{e:#}"))
}

/// The compiler's options from the parameters (`vcl_path`,
/// `vcc_err_unref`, `vcc_allow_inline_c`, `vcc_unsafe_path`).
pub fn compile_options(params: &Params) -> vcl_to_wasm::CompileOptions {
    let mut opts = vcl_to_wasm::CompileOptions::new();
    opts.include_path = params
        .text("vcl_path")
        .split(':')
        .filter(|p| !p.is_empty())
        .map(Into::into)
        .collect();
    opts.err_unref = params.flag("vcc_err_unref");
    opts.allow_inline_c = params.flag("vcc_allow_inline_c");
    opts.unsafe_path = params.flag("vcc_unsafe_path");
    opts.vmod_resolver = Some(vcl_to_wasm::VmodResolverRef(Arc::new(
        crate::cache_vmod::Resolver {
            vmod_path: params.text("vmod_path").to_string(),
        },
    )));
    opts
}

impl Vcl {
    /// Compiles and loads a VCL file.
    pub async fn load_file(
        path: &Path,
        params: &Params,
        storage: u64,
    ) -> Result<Arc<Vcl>, LoadError> {
        let opts = compile_options(params);
        let compiled = vcl_to_wasm::compile_file(path, &opts)
            .map_err(|d| LoadError::Compile(d.to_string()))?;
        Self::load_compiled(compiled, params, storage).await
    }

    /// Compiles and loads VCL source text.
    pub async fn load_source(
        name: &str,
        src: &str,
        params: &Params,
        storage: u64,
    ) -> Result<Arc<Vcl>, LoadError> {
        Self::load_source_with_labels(name, src, params, storage, Vec::new()).await
    }

    /// Like [`Vcl::load_source`], where `labels` are the VCL labels that
    /// `return (vcl(label))` may name.
    pub async fn load_source_with_labels(
        name: &str,
        src: &str,
        params: &Params,
        storage: u64,
        labels: Vec<String>,
    ) -> Result<Arc<Vcl>, LoadError> {
        let mut opts = compile_options(params);
        opts.labels = labels;
        let compiled = vcl_to_wasm::compile_source(name, src, None, &opts)
            .map_err(|d| LoadError::Compile(d.to_string()))?;
        Self::load_compiled(compiled, params, storage).await
    }

    /// Compiles and loads a VCL file where `labels` are the VCL labels
    /// that `return (vcl(label))` may name.
    pub async fn load_file_with_labels(
        path: &Path,
        params: &Params,
        storage: u64,
        labels: Vec<String>,
    ) -> Result<Arc<Vcl>, LoadError> {
        let mut opts = compile_options(params);
        opts.labels = labels;
        let compiled = vcl_to_wasm::compile_file(path, &opts)
            .map_err(|d| LoadError::Compile(d.to_string()))?;
        Self::load_compiled(compiled, params, storage).await
    }

    /// Loads what the compiler made, keeping its sources for `vcl.show`.
    pub async fn load_compiled(
        compiled: vcl_to_wasm::Compiled,
        params: &Params,
        storage: u64,
    ) -> Result<Arc<Vcl>, LoadError> {
        Self::load_with_sources(&compiled.wasm, compiled.sources, params, storage).await
    }

    /// Loads a compiled module.
    pub async fn load_wasm(
        wasm: &[u8],
        params: &Params,
        storage: u64,
    ) -> Result<Arc<Vcl>, LoadError> {
        Self::load_with_sources(wasm, Vec::new(), params, storage).await
    }

    async fn load_with_sources(
        wasm: &[u8],
        sources: Vec<Arc<vcl_to_wasm::error::Source>>,
        params: &Params,
        storage: u64,
    ) -> Result<Arc<Vcl>, LoadError> {
        let setup = LoadError::Setup;
        let meta = abi::read_metadata(wasm).map_err(|e| setup(e.to_string()))?;
        let engine = engine().map_err(setup)?;
        let module = compiled_module(engine, wasm).map_err(setup)?;
        crate::vre::configure(params);
        let regexes = meta
            .regexes
            .iter()
            .map(|r| crate::vre::compile(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(setup)?;
        let acls = meta
            .acls
            .iter()
            .map(Acl::build)
            .collect::<Result<Vec<_>, _>>()
            .map_err(setup)?;
        let limits = crate::cache_vmod::VmodLimits {
            budget_ticks: params.num("vcl_cpu_budget_ms").max(1.0) as u64,
            memory: (params.num("vmod_memory_cap") as usize).max(1 << 20),
        };
        let mut vmods = Vec::new();
        for imp in meta.imports.iter().filter(|i| !i.native) {
            let file =
                crate::cache_vmod::locate(&imp.name, imp.path.as_deref(), params.text("vmod_path"))
                    .map_err(|e| setup(e.to_string()))?;
            let lib =
                crate::cache_vmod::load(&imp.name, &file).map_err(|e| setup(e.to_string()))?;
            let limits = crate::cache_vmod::VmodLimits::for_vmod(
                limits,
                &imp.name,
                params.text("vmod_limits"),
            )
            .map_err(setup)?;
            vmods.push(Arc::new(crate::cache_vmod::VclVmod::new(lib, "", limits)));
        }
        let mut natives = Vec::new();
        for f in &meta.natives {
            let component = vmods.iter().position(|v| v.lib.name == f.vmod);
            natives.push(match component {
                Some(vmod) => {
                    let export = vmods[vmod].export_index(&f.func).ok_or_else(|| {
                        setup(format!("VMOD {} has no function {}", f.vmod, f.func))
                    })?;
                    Native::Component(crate::cache_vmod::Binding { vmod, export })
                }
                None => vmod_std::bind(f),
            });
        }
        let mut backends = Vec::new();
        for b in &meta.backends {
            let probe = b.probe.and_then(|p| meta.probes.get(p as usize));
            let be = Arc::new(Backend::build(b, probe, params).await.map_err(setup)?);
            crate::cache_backend_probe::start(&be);
            backends.push(be);
        }
        let default_backend = meta
            .default_backend
            .map_or(abi::BACKEND_NONE, abi::backend_handle);
        let shared = Arc::new(VclShared {
            meta,
            regexes,
            acls,
            natives,
            backends,
            storage_budget: storage,
            directors: Default::default(),
            vmods,
            files: crate::vmod_std::FileReader::new(params.text("fileread_path")),
            name: std::sync::OnceLock::new(),
        });
        let vcl = Arc::new(Vcl {
            shared,
            default_backend,
            module,
            pool: Mutex::new(Vec::new()),
            budget_ticks: params.num("vcl_cpu_budget_ms").max(1.0) as u64,
            mem_cap: 64 << 20,
            name: OnceLock::new(),
            sources,
            cold: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
        });
        let mut task = Box::new(Task::new(
            0,
            [127, 0, 0, 1].into(),
            [127, 0, 0, 1].into(),
            0.0,
        ));
        task.method = Method::Init;
        let ws = params.num("workspace_client") as u32;
        let (mut task, r) = vcl.call(Method::Init, task, ws);
        let warmed: Result<(), LoadError> =
            task.vmods.drain().into_iter().try_for_each(|(vv, inst)| {
                vv.seal(inst).map_err(|e| LoadError::Init(e.to_string()))
            });
        if r.is_ok() {
            warmed?;
        }
        match r {
            Ok(None | Some(Action::Ok)) => Ok(vcl),
            Ok(Some(a)) => Err(LoadError::Init(format!("vcl_init returned {}", a.name()))),
            Err(e) => Err(LoadError::Init(e.to_string())),
        }
    }

    /// Its name in the VCL table ("" before it is added).
    pub fn name(&self) -> &str {
        self.name.get().map_or("", String::as_str)
    }

    /// Names it (once: when the VCL table takes it).
    pub fn set_name(&self, name: &str) {
        let _ = self.name.set(name.to_string());
        // The module's view of it too (`VCL_trace` names it).
        let _ = self.shared.name.set(name.to_string());
    }

    /// Tasks using it now.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    /// Whether it is cold.
    pub fn is_cold(&self) -> bool {
        self.cold.load(Ordering::Relaxed)
    }

    /// Cools it (Varnish's `VCL_EVENT_COLD`): its warm instances and its
    /// VMODs' pooled instances are let go, so their memory returns to
    /// the allocator, and its probes stop; or warms it again
    /// (`VCL_EVENT_WARM`): the probes start over. Requests still running
    /// on a cold VCL finish; new instances are made for them as needed.
    pub fn set_cold(&self, cold: bool) {
        if self.cold.swap(cold, Ordering::AcqRel) == cold {
            return;
        }
        if cold {
            if let Ok(mut p) = self.pool.lock() {
                p.clear();
            }
            for v in &self.shared.vmods {
                v.drain();
            }
            for b in &self.shared.backends {
                crate::cache_backend_probe::stop(b);
            }
        } else {
            for b in &self.shared.backends {
                crate::cache_backend_probe::start(b);
            }
        }
    }

    /// Warm instances kept now.
    pub fn pooled(&self) -> usize {
        self.pool.lock().map(|p| p.len()).unwrap_or(0)
    }

    fn instantiate(&self) -> Result<Warm, CallError> {
        let pre = &self.module.pre;
        let engine = pre.module().engine();
        let data = Data {
            task: None,
            vcl: self.shared.clone(),
            limits: StoreLimitsBuilder::new().memory_size(self.mem_cap).build(),
            mem: None,
            budget_ticks: self.budget_ticks,
        };
        let mut store = Store::new(engine, data);
        store.limiter(|d| &mut d.limits);
        store.epoch_deadline_callback(cpu_deadline);
        store.set_epoch_deadline(self.budget_ticks.saturating_mul(10));
        let inst = pre.instantiate(&mut store).map_err(classify)?;
        let missing = |n: &str| CallError::Trap(format!("module lacks export {n}"));
        let mem: Memory = inst
            .get_memory(&mut store, abi::EXPORT_MEMORY)
            .ok_or_else(|| missing(abi::EXPORT_MEMORY))?;
        let g = |store: &mut Store<Data>, n: &str| {
            inst.get_global(&mut *store, n).ok_or_else(|| missing(n))
        };
        let ws_start = g(&mut store, abi::GLOBAL_WS_START)?;
        let heap = g(&mut store, abi::GLOBAL_HEAP_BASE)?;
        let version = g(&mut store, abi::GLOBAL_ABI_VERSION)?;
        if version.get(&mut store).i32() != Some(abi::ABI_VERSION) {
            return Err(CallError::Trap("module ABI version mismatch".into()));
        }
        let heap_base = heap.get(&mut store).i32().unwrap_or(0) as u32;
        let subs = Method::ALL
            .iter()
            .map(|m| {
                inst.get_typed_func::<(), i32>(&mut store, m.sub_name())
                    .ok()
            })
            .collect();
        let d = store.data_mut();
        d.mem = Some(mem);
        Ok(Warm {
            store,
            capped: false,
            ws_start,
            heap_base,
            subs,
        })
    }

    fn prepare(&self, w: &mut Warm, ws: u32) -> Result<(), CallError> {
        let end = u64::from(w.heap_base) + u64::from(ws);
        let mem = w.store.data().mem.ok_or(CallError::WsOverflow)?;
        let have = mem.data_size(&w.store) as u64;
        if have < end {
            let pages = (end - have).div_ceil(65536);
            mem.grow(&mut w.store, pages)
                .map_err(|_| CallError::WsOverflow)?;
        }
        let set = |store: &mut Store<Data>, g: Global, v: u64| {
            g.set(&mut *store, Val::I32(v as u32 as i32))
                .map_err(|e| CallError::Trap(e.to_string()))
        };
        set(&mut w.store, w.ws_start, u64::from(w.heap_base))?;
        let data = mem.data_mut(&mut w.store);
        let end = u32::try_from(end).map_err(|_| CallError::WsOverflow)?;
        let trace = u32::from(crate::vsl::enabled(vapi::Tag::VCL_trace));
        crate::vrt::set_cell(data, abi::WS_PTR_ADDR, w.heap_base)
            .and_then(|()| crate::vrt::set_cell(data, abi::WS_END_ADDR, end))
            .and_then(|()| crate::vrt::set_cell(data, abi::TRACE_ADDR, trace))
            .ok_or(CallError::WsOverflow)?;
        // +1: the current tick may be about to end.
        w.store.set_epoch_deadline(self.budget_ticks + 1);
        Ok(())
    }

    /// Runs `vcl_<method>` on `task` with a workspace of `ws` bytes and
    /// returns the task and the action (`None`: no `return` executed). On
    /// error the instance is discarded, never reused.
    pub fn call(
        &self,
        method: Method,
        mut task: Box<Task>,
        ws: u32,
    ) -> (Box<Task>, Result<Option<Action>, CallError>) {
        let warm = self.pool.lock().ok().and_then(|mut p| p.pop());
        let mut warm = match warm {
            Some(w) => w,
            None => match self.instantiate() {
                Ok(w) => w,
                Err(e) => return (task, Err(e)),
            },
        };
        let i = method_index(method);
        if !matches!(warm.subs.get(i), Some(Some(_))) {
            self.release(warm);
            return (task, Ok(None));
        }
        // The tenant's quotas: memory the instance may grow to, CPU time
        // left for this request.
        let (mut cpu_ms, mut mem_cap) = task
            .tenant
            .as_deref()
            .map_or((None, None), |t| (t.cpu_ms(), t.wasm_memory()));
        // The error pages (`vcl_synth`, `vcl_backend_error`) run within
        // the VCL's own limits, so a request over its tenant's quota gets
        // its 503 rather than a bare 500.
        if matches!(method, Method::Synth | Method::BackendError) {
            (cpu_ms, mem_cap) = (None, None);
        }
        if mem_cap.is_some() || warm.capped {
            let cap = mem_cap.map_or(self.mem_cap, |m| {
                self.mem_cap.min(usize::try_from(m).unwrap_or(usize::MAX))
            });
            // An instance another tenant's requests grew past this cap is
            // not used for this one: a fresh one starts small.
            if Self::memory_size(&warm) > cap {
                match self.instantiate() {
                    Ok(w) if Self::memory_size(&w) <= cap => warm = w,
                    Ok(_) => {
                        self.release(warm);
                        return (task, Err(CallError::WsOverflow));
                    }
                    Err(e) => {
                        self.release(warm);
                        return (task, Err(e));
                    }
                }
            }
            warm.store.data_mut().limits = StoreLimitsBuilder::new().memory_size(cap).build();
            warm.capped = mem_cap.is_some();
        }
        if let Err(e) = self.prepare(&mut warm, ws) {
            return (task, Err(e));
        }
        // Under a CPU quota the call starts with a short epoch deadline
        // (one tick); when a call runs past it, `cpu_deadline` reads the
        // thread's CPU clock and from then on grants the call the CPU
        // time really left (see `CpuCall`).
        let quota = cpu_ms.map(std::time::Duration::from_millis);
        if let Some(q) = quota {
            let left = q.saturating_sub(task.cpu_spent);
            if left.is_zero() {
                if let Some(t) = task.tenant.as_deref() {
                    t.cpu_503.fetch_add(1, Ordering::Relaxed);
                }
                self.release(warm);
                return (task, Err(CallError::Timeout));
            }
            let first = self.budget_ticks.min(1);
            // +1: the current tick may be about to end.
            warm.store.set_epoch_deadline(first + 1);
            task.cpu_call = Some(crate::vrt_ctx::CpuCall {
                w0: std::time::Instant::now(),
                cpu0: None,
                wall0: std::time::Duration::ZERO,
                left,
                wall_ticks: self.budget_ticks - first,
                io0: task.io_wait,
            });
        }
        task.method = method;
        task.synth = None;
        warm.store.data_mut().task = Some(task);
        // Borrowed, not cloned: a `TypedFunc` clone takes a reference on
        // its type in the engine's registry, a cost on every call.
        let r = match warm.subs.get(i) {
            Some(Some(f)) => f.call(&mut warm.store, ()),
            _ => Ok(0),
        };
        let mut task = match warm.store.data_mut().task.take() {
            Some(t) => t,
            // The task is only ever taken here.
            None => Box::new(Task::new(0, [0, 0, 0, 0].into(), [0, 0, 0, 0].into(), 0.0)),
        };
        let mut r = r;
        if let (Some(q), Some(call)) = (quota, task.cpu_call.take()) {
            task.cpu_spent += call.used(task.io_wait);
            // Host work (a regex over a long string, a VMOD) is not
            // interrupted by the epoch: a call that went over in it
            // fails when it returns.
            if r.is_ok() && task.cpu_spent > q {
                r = Err(wasmtime::Error::from(wasmtime::Trap::Interrupt));
            }
            if matches!(
                r.as_ref().map_err(|e| e.downcast_ref::<wasmtime::Trap>()),
                Err(Some(wasmtime::Trap::Interrupt))
            ) {
                if let Some(t) = task.tenant.as_deref() {
                    t.cpu_503.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        match r {
            Ok(code) => {
                self.release(warm);
                if code == 0 {
                    return (task, Ok(None));
                }
                match Action::from_code(code) {
                    Some(a) => (task, Ok(Some(a))),
                    None => (task, Err(CallError::BadAction(code))),
                }
            }
            Err(e) => (task, Err(classify(e))),
        }
    }

    /// Bytes of linear memory an instance has now.
    fn memory_size(w: &Warm) -> usize {
        w.store.data().mem.map_or(0, |m| m.data_size(&w.store))
    }

    /// Runs `vcl_fini` as the VCL is discarded (its records, like
    /// `vcl_init`'s, go to VXID 0). What it returns cannot stop the
    /// discard: a failure is only logged.
    pub fn fini(&self, ws: u32) {
        let task = Box::new(Task::new(
            0,
            [127, 0, 0, 1].into(),
            [127, 0, 0, 1].into(),
            0.0,
        ));
        let (mut task, r) = self.call(Method::Fini, task, ws);
        if let Err(e) = r {
            task.vsl
                .logf(vapi::Tag::VCL_Error, format_args!("vcl_fini: {e}"));
        }
    }

    fn release(&self, w: Warm) {
        if self.is_cold() {
            return;
        }
        if let Ok(mut p) = self.pool.lock() {
            if p.len() < 256 {
                p.push(w);
            }
        }
    }
}
