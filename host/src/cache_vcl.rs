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
    ws_start: Global,
    heap_base: u32,
    subs: Vec<Option<TypedFunc<(), i32>>>,
}

/// A loaded VCL.
pub struct Vcl {
    pub shared: Arc<VclShared>,
    pub default_backend: i32,
    pre: InstancePre<Data>,
    pool: Mutex<Vec<Warm>>,
    budget_ticks: u64,
    mem_cap: usize,
}

/// The process-wide engine, with a ticker thread advancing its epoch every
/// millisecond so CPU budgets are counted in milliseconds.
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
                    let start = std::time::Instant::now();
                    let mut ticks: u128 = 0;
                    loop {
                        std::thread::sleep(std::time::Duration::from_millis(1));
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
        Self::load_wasm(&compiled.wasm, params, storage).await
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
        Self::load_wasm(&compiled.wasm, params, storage).await
    }

    /// Loads a compiled module.
    pub async fn load_wasm(
        wasm: &[u8],
        params: &Params,
        storage: u64,
    ) -> Result<Arc<Vcl>, LoadError> {
        let setup = LoadError::Setup;
        let meta = abi::read_metadata(wasm).map_err(|e| setup(e.to_string()))?;
        let engine = engine().map_err(setup)?;
        let module = Module::new(engine, wasm).map_err(|e| setup(format!("{e:#}")))?;
        let pre = linker()
            .map_err(setup)?
            .instantiate_pre(&module)
            .map_err(|e| setup(format!("{e:#}")))?;
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
            vmods.push(Arc::new(crate::cache_vmod::VclVmod::new(
                lib, "default", limits,
            )));
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
            pre,
            pool: Mutex::new(Vec::new()),
            budget_ticks: params.num("vcl_cpu_budget_ms").max(1.0) as u64,
            mem_cap: 64 << 20,
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

    fn instantiate(&self) -> Result<Warm, CallError> {
        let engine = self.pre.module().engine();
        let data = Data {
            task: None,
            vcl: self.shared.clone(),
            limits: StoreLimitsBuilder::new().memory_size(self.mem_cap).build(),
            mem: None,
            budget_ticks: self.budget_ticks,
        };
        let mut store = Store::new(engine, data);
        store.limiter(|d| &mut d.limits);
        store.set_epoch_deadline(self.budget_ticks.saturating_mul(10));
        let inst = self.pre.instantiate(&mut store).map_err(classify)?;
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
        let Some(f) = warm.subs.get(method_index(method)).cloned().flatten() else {
            self.release(warm);
            return (task, Ok(None));
        };
        if let Err(e) = self.prepare(&mut warm, ws) {
            return (task, Err(e));
        }
        task.method = method;
        task.synth = None;
        warm.store.data_mut().task = Some(task);
        let r = f.call(&mut warm.store, ());
        let task = match warm.store.data_mut().task.take() {
            Some(t) => t,
            // The task is only ever taken here.
            None => Box::new(Task::new(0, [0, 0, 0, 0].into(), [0, 0, 0, 0].into(), 0.0)),
        };
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
        if let Ok(mut p) = self.pool.lock() {
            if p.len() < 256 {
                p.push(w);
            }
        }
    }
}
