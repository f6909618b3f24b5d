//! VMODs as WebAssembly components (Varnish's `cache_vrt_vmod.c`): finding
//! them in `vmod_path`, reading their signatures for the compiler, and
//! calling them from VCL with a CPU budget and a memory cap.
//!
//! A VMOD implements the `shellac:vmod/vmod` world of `wit/vmod.wit`; its own
//! functions and object types are the one other interface it exports. The
//! contract for authors is `wit/README.md`; in short:
//!
//! - Instances are pooled per loaded VCL. A task checks one out at its
//!   first call into the VMOD, keeps it for the rest of the task (so
//!   task-scoped state, Varnish's `PRIV_TASK`, lives in instance memory) and
//!   returns it after `end-task`, which resets the instance's arena.
//! - What `vcl_init` does with a VMOD (constructors, method calls) is
//!   recorded and replayed on every new instance before `warm`, so every
//!   instance starts each task from the image `vcl_init` built.
//! - A trap, an exhausted CPU budget or memory cap fails the one request
//!   (the caller turns it into a 503) and the instance is dropped, never
//!   reused.

use crate::cache_vmod_core::{CoreArg, CoreInst, CoreOut, CorePlan, CoreSig, PKind, RKind};
use crate::vrt_ctx::Task;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use vcl_to_wasm::types::{Method, MethodSet, Type as VclType};
use vcl_to_wasm::vmods::{Arg as VmodArg, Func as VmodFunc, Object as VmodObject, Vmod};
use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};
use wasmtime::component::{
    Component, ComponentExportIndex, Func, HasSelf, Instance, InstancePre, Linker, ResourceAny,
    TypedFunc, Val, WasmStr,
};
use wasmtime::{Engine, Store};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "shellac:vmod/imports",
});

use shellac::vmod::types::{Event, Http};

/// The interface every VMOD exports besides its own.
const LIFECYCLE: &str = "shellac:vmod/lifecycle@0.1.0";

/// Why a VMOD could not be found, loaded or called.
#[derive(Debug, thiserror::Error)]
pub enum VmodError {
    #[error("Could not find VMOD {0}")]
    NotFound(String),
    #[error("Could not open VMOD {name}: {path}: {why}")]
    Unreadable {
        name: String,
        path: String,
        why: String,
    },
    #[error("VMOD {name} ({path}) is not a usable component: {why}")]
    Invalid {
        name: String,
        path: String,
        why: String,
    },
    #[error("vmod {vmod}: {func}: {why}")]
    Call {
        vmod: String,
        func: String,
        why: String,
    },
}

/// One exported callable of a VMOD, with the VCL signature it was given.
#[derive(Clone, Debug)]
struct Export {
    /// `hello`, `greeter` (constructor) or `greeter.greet` (method), as the
    /// compiler's `NativeFn::func` names it.
    vcl_name: String,
    /// The function's name in the VMOD's interface (`[method]greeter.greet`).
    wit_name: String,
    index: ComponentExportIndex,
    /// The component parameter types (for a method, without `self`).
    params: Vec<Type>,
    /// The VCL type of each parameter (inside `option<T>`), worked out
    /// once here rather than on every call.
    kinds: Vec<Option<VclType>>,
    result: Option<Type>,
    kind: ExportKind,
    /// Functions of up to two `string`s returning nothing, a `string` or
    /// an `option<string>`, the commonest VMOD calls, go through a typed
    /// function: no `Val` boxing, no per-call type check, no host copy of
    /// the arguments.
    str_call: Option<StrSig>,
}

/// The signature of a function called by the typed string path.
#[derive(Clone, Copy, Debug, PartialEq)]
struct StrSig {
    /// How many `string` parameters (0 to [`MAX_STR_ARGS`]).
    args: usize,
    result: StrResult,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum StrResult {
    Void,
    Str,
    OptStr,
}

/// The most `string` arguments the typed string path takes.
pub const MAX_STR_ARGS: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq)]
enum ExportKind {
    Function,
    Constructor,
    Method,
}

/// A VMOD component, compiled once and shared by every VCL that imports it
/// (cached by content hash).
pub struct VmodLib {
    pub name: String,
    pub path: PathBuf,
    /// The signatures the compiler checks calls against.
    pub sig: Vmod,
    pre: InstancePre<VmodData>,
    exports: Vec<Export>,
    on_event: ComponentExportIndex,
    end_task: ComponentExportIndex,
    /// The VMOD's own interface (`vmod:hello/hello`).
    iface: String,
    /// The core fast path (`cache_vmod_core`), when the component has a
    /// shape it runs: the plan and each export's signature, by export index.
    core: Option<(CorePlan, CoreExports)>,
}

impl std::fmt::Debug for VmodLib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmodLib")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish()
    }
}

/// The store data of a VMOD instance: the task it is serving right now.
pub struct VmodData {
    pub task: Option<Box<Task>>,
    /// The VMOD's name: its shared state lives in `tenant/vmod`, the
    /// tenant being the current task's (the default one in `vcl_init`).
    namespace: String,
    /// `*/vmod`: the default tenant's namespace, made once.
    default_ns: String,
    limits: MemoryCap,
    memory_cap: usize,
    regexes: HashMap<String, Result<pcre2::bytes::Regex, String>>,
    /// Memory, allocator and handles of an instance run by the core fast
    /// path.
    pub(crate) core: Option<crate::cache_vmod_core::CoreCtx>,
}

/// The store's memory limiter: refuses growth past the cap and remembers
/// that it did, so a trap that follows is reported as out of memory.
struct MemoryCap {
    bytes: usize,
    refused: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.bytes;
        self.refused |= !ok;
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        4
    }
}

/// Limits applied to every VMOD instance.
#[derive(Clone, Copy, Debug)]
pub struct VmodLimits {
    /// CPU budget per call, in epoch ticks (milliseconds).
    pub budget_ticks: u64,
    /// Linear memory cap per instance, in bytes.
    pub memory: usize,
}

impl VmodLimits {
    /// `base` with the override for VMOD `name` from the `vmod_limits`
    /// parameter (`name=CPU_MS/MEMORY,...`, either half may be empty),
    /// so one untrusted VMOD can get a tighter budget than the rest.
    pub fn for_vmod(base: VmodLimits, name: &str, spec: &str) -> Result<VmodLimits, String> {
        let mut out = base;
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || format!("vmod_limits: {item:?} is not name=CPU_MS/MEMORY");
            let (who, limits) = item.split_once('=').ok_or_else(bad)?;
            if who.trim() != name {
                continue;
            }
            let (cpu, mem) = limits.split_once('/').unwrap_or((limits, ""));
            if !cpu.trim().is_empty() {
                let ms: u64 = cpu.trim().parse().map_err(|_| bad())?;
                out.budget_ticks = ms.max(1);
            }
            if !mem.trim().is_empty() {
                let bytes = crate::mgt_param::parse_bytes(mem.trim()).ok_or_else(bad)?;
                out.memory = (bytes as usize).max(1 << 20);
            }
        }
        Ok(out)
    }
}

/// The directory of the VMODs built with Shellac (`scripts/build-wasm`
/// writes them to `target/vmods/`, next to `target/debug/`): searched before
/// `vmod_path`, so `import cookie;` finds the bundled one.
pub fn bundled_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // `target/<profile>/shellac`, or `target/<profile>/examples/…`.
    exe.ancestors()
        .skip(2)
        .take(2)
        .map(|d| d.join("vmods"))
        .find(|d| d.is_dir())
}

/// Where `import name [from "path"];` finds its file.
pub fn locate(name: &str, from: Option<&str>, vmod_path: &str) -> Result<PathBuf, VmodError> {
    let mut dirs: Vec<PathBuf> = bundled_dir().into_iter().collect();
    dirs.extend(
        vmod_path
            .split(':')
            .filter(|d| !d.is_empty())
            .map(PathBuf::from),
    );
    let file = format!("{name}.wasm");
    if let Some(p) = from {
        let p = Path::new(p);
        let candidates: Vec<PathBuf> = if p.is_absolute() {
            vec![p.to_path_buf()]
        } else {
            std::iter::once(p.to_path_buf())
                .chain(dirs.iter().map(|d| d.join(p)))
                .collect()
        };
        for c in candidates {
            if c.is_dir() && c.join(&file).is_file() {
                return Ok(c.join(&file));
            }
            if c.is_file() {
                return Ok(c);
            }
        }
        return Err(VmodError::NotFound(format!(
            "{name} in \"{}\"",
            p.display()
        )));
    }
    dirs.iter()
        .map(|d| d.join(&file))
        .find(|p| p.is_file())
        .ok_or_else(|| VmodError::NotFound(name.to_string()))
}

fn linker(engine: &Engine) -> Result<&'static Linker<VmodData>, String> {
    static LINKER: OnceLock<Result<Linker<VmodData>, String>> = OnceLock::new();
    LINKER
        .get_or_init(|| {
            let mut l = Linker::new(engine);
            Imports::add_to_linker::<VmodData, HasSelf<VmodData>>(&mut l, |d| d)
                .map_err(|e| format!("{e:#}"))?;
            Ok(l)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Loads (or finds in the cache) the component at `path` as VMOD `name`.
pub fn load(name: &str, path: &Path) -> Result<Arc<VmodLib>, VmodError> {
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], Arc<VmodLib>>>> = OnceLock::new();
    let bytes = std::fs::read(path).map_err(|e| VmodError::Unreadable {
        name: name.into(),
        path: path.display().to_string(),
        why: e.to_string(),
    })?;
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0]);
    h.update(&bytes);
    let key: [u8; 32] = h.finalize().into();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(lib) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(lib);
    }
    let lib = Arc::new(compile(
        name,
        path,
        &bytes,
        crate::cache_vmod_core::enabled(),
    )?);
    if let Ok(mut c) = cache.lock() {
        c.insert(key, lib.clone());
    }
    Ok(lib)
}

/// Compiles the component `bytes` (from `path`) as VMOD `name`, with the
/// core fast path if `core` and the component's shape allows it.
fn compile(name: &str, path: &Path, bytes: &[u8], core: bool) -> Result<VmodLib, VmodError> {
    let invalid = |why: String| VmodError::Invalid {
        name: name.into(),
        path: path.display().to_string(),
        why,
    };
    let engine = crate::cache_vcl::engine().map_err(invalid)?;
    let component = Component::new(engine, bytes).map_err(|e| invalid(format!("{e:#}")))?;
    let pre = linker(engine)
        .map_err(invalid)?
        .instantiate_pre(&component)
        .map_err(|e| invalid(format!("{e:#}")))?;
    let mut lib = describe(name, path, &component, engine, pre).map_err(invalid)?;
    if core {
        match core_plan(&lib, engine, bytes) {
            Ok(plan) => lib.core = Some(plan),
            Err(why) => tracing::debug!(vmod = %name, "component path: {why}"),
        }
    }
    Ok(lib)
}

/// The core fast path's plan for `lib`, if every export has a shape it
/// runs; otherwise why not (the component path serves the VMOD).
type CoreExports = Vec<(String, String, CoreSig)>;
fn core_plan(
    lib: &VmodLib,
    engine: &Engine,
    bytes: &[u8],
) -> Result<(CorePlan, CoreExports), String> {
    let why = |why: String| Err(why);
    let plan = CorePlan::new(engine, bytes)?;
    let mut sigs = Vec::with_capacity(lib.exports.len());
    for e in &lib.exports {
        let Some(sig) = core_sig(e) else {
            return why(format!(
                "{}: a signature the fast path does not lower",
                e.wit_name
            ));
        };
        if !plan.has(&lib.iface, &e.wit_name) {
            return why(format!("{} is not a plain lift", e.wit_name));
        }
        sigs.push((lib.iface.clone(), e.wit_name.clone(), sig));
    }
    if !plan.has(LIFECYCLE, "on-event") || !plan.has(LIFECYCLE, "end-task") {
        return why("the lifecycle is not a plain lift".into());
    }
    // Wire it once now, so that a graph this module misreads falls back
    // here rather than failing every request.
    let mut store = Store::new(engine, VmodData::new(String::new(), 64 << 20));
    store.limiter(|d| &mut d.limits);
    store.set_epoch_deadline(1000);
    plan.instantiate(&mut store, LIFECYCLE, &sigs)
        .map_err(|e| format!("instantiating its core modules: {e:#}"))?;
    Ok((plan, sigs))
}

/// The flat kind of the one-field records VCL passes: `regex` (a
/// string), `duration` and `time` (an `f64`).
fn record_kind(t: &Type) -> Option<PKind> {
    match vcl_type(t)?.0 {
        VclType::Regex if matches!(t, Type::Record(_)) => Some(PKind::Str),
        VclType::Duration | VclType::Time if matches!(t, Type::Record(_)) => Some(PKind::F64),
        _ => None,
    }
}

/// An export's signature for the core fast path, if it has one.
fn core_sig(e: &Export) -> Option<CoreSig> {
    let params = e
        .params
        .iter()
        .map(|t| match t {
            Type::String => Some(PKind::Str),
            Type::S64 => Some(PKind::S64),
            Type::Float64 => Some(PKind::F64),
            Type::Bool => Some(PKind::Bool),
            Type::Option(o) if o.ty() == Type::Bool => Some(PKind::OptBool),
            Type::Option(o) if record_kind(&o.ty()) == Some(PKind::F64) => Some(PKind::OptF64),
            t => record_kind(t),
        })
        .collect::<Option<Vec<_>>>()?;
    let result = match (e.kind, &e.result) {
        (ExportKind::Constructor, Some(Type::Own(_))) => RKind::Own,
        (ExportKind::Constructor, _) => return None,
        (_, None) => RKind::Void,
        (_, Some(Type::String)) => RKind::Str,
        (_, Some(Type::Option(o))) if o.ty() == Type::String => RKind::OptStr,
        (_, Some(Type::S64)) => RKind::S64,
        (_, Some(Type::Float64)) => RKind::F64,
        (_, Some(t)) if record_kind(t) == Some(PKind::F64) => RKind::F64,
        (_, Some(Type::Bool)) => RKind::Bool,
        (_, Some(Type::Result(r))) if r.ok().is_none() && r.err() == Some(Type::String) => {
            RKind::UnitOrStr
        }
        (_, Some(Type::Result(r)))
            if r.err() == Some(Type::String)
                && matches!(r.ok(), Some(Type::Option(o)) if o.ty() == Type::String) =>
        {
            RKind::OptStrOrStr
        }
        _ => return None,
    };
    Some(CoreSig {
        method: e.kind == ExportKind::Method,
        params,
        result,
    })
}

/// `kebab-case` → `snake_case`.
fn vcl_ident(s: &str) -> String {
    s.replace('-', "_")
}

/// The VCL type of a component type, with ENUM values; `None` if VCL has
/// no counterpart.
fn vcl_type(t: &Type) -> Option<(VclType, Vec<String>)> {
    Some(match t {
        Type::String => (VclType::String, Vec::new()),
        Type::S64 => (VclType::Int, Vec::new()),
        Type::Float64 => (VclType::Real, Vec::new()),
        Type::Bool => (VclType::Bool, Vec::new()),
        Type::List(l) if l.ty() == Type::U8 => (VclType::Blob, Vec::new()),
        Type::Enum(e) => {
            let mut values = Vec::new();
            for n in e.names() {
                let v = vcl_ident(n);
                values.push(v.to_ascii_uppercase());
                values.push(v);
            }
            values.dedup();
            (VclType::Enum, values)
        }
        Type::Record(r) => {
            let names: Vec<&str> = r.fields().map(|f| f.name).collect();
            let ty = match names.as_slice() {
                ["seconds"] => VclType::Duration,
                ["epoch-seconds"] => VclType::Time,
                ["count"] => VclType::Bytes,
                ["address", "port"] => VclType::Ip,
                ["part", "name"] => VclType::Header,
                ["name"] => VclType::Backend,
                ["pattern"] => VclType::Regex,
                _ => return None,
            };
            (ty, Vec::new())
        }
        _ => return None,
    })
}

/// What a result type gives VCL: `T`, `option<T>` and `result<T, string>`
/// all give `T`.
fn vcl_result(t: Option<&Type>) -> Option<VclType> {
    match t {
        None => Some(VclType::Void),
        Some(Type::Option(o)) => vcl_type(&o.ty()).map(|t| t.0),
        Some(Type::Result(r)) => match r.ok() {
            None => Some(VclType::Void),
            Some(ok) => vcl_result(Some(&ok)),
        },
        Some(t) => vcl_type(t).map(|t| t.0),
    }
}

fn describe(
    name: &str,
    path: &Path,
    component: &Component,
    engine: &Engine,
    pre: InstancePre<VmodData>,
) -> Result<VmodLib, String> {
    let ty = component.component_type();
    let mut iface = None;
    let mut saw_lifecycle = false;
    for (export, item) in ty.exports(engine) {
        if export == LIFECYCLE {
            saw_lifecycle = true;
            continue;
        }
        if let ComponentItem::ComponentInstance(inst) = item.ty {
            if iface.is_some() {
                return Err("it exports more than one VMOD interface".into());
            }
            iface = Some((export.to_string(), inst));
        }
    }
    if !saw_lifecycle {
        return Err(format!(
            "it does not export {LIFECYCLE} (not built for the shellac:vmod world?)"
        ));
    }
    let Some((iface_name, inst)) = iface else {
        return Err("it exports no VMOD interface".into());
    };
    // `vmod:cookie/cookie@1.0.0` → `cookie`.
    let short = iface_name
        .rsplit('/')
        .next()
        .unwrap_or(&iface_name)
        .split('@')
        .next()
        .unwrap_or("");
    if vcl_ident(short) != name {
        return Err(format!(
            "its interface is {iface_name}, not the VMOD {name} (Wrong file for VMOD {name})"
        ));
    }
    let iface_idx = component
        .get_export_index(None, iface_name.as_str())
        .ok_or("its interface cannot be looked up")?;
    let lc = component
        .get_export_index(None, LIFECYCLE)
        .ok_or("its lifecycle interface cannot be looked up")?;
    let on_event = component
        .get_export_index(Some(&lc), "on-event")
        .ok_or("it lacks lifecycle.on-event")?;
    let end_task = component
        .get_export_index(Some(&lc), "end-task")
        .ok_or("it lacks lifecycle.end-task")?;

    let mut sig = Vmod {
        name: name.to_string(),
        functions: Vec::new(),
        objects: Vec::new(),
    };
    let mut exports = Vec::new();
    let mut funcs: Vec<(String, ComponentFunc)> = Vec::new();
    for (fname, item) in inst.exports(engine) {
        if let ComponentItem::ComponentFunc(f) = item.ty {
            funcs.push((fname.to_string(), f));
        }
    }
    // Constructors first, so methods find their object.
    funcs.sort_by_key(|(n, _)| !n.starts_with("[constructor]"));
    for (fname, f) in funcs {
        let (kind, vcl_name, skip) = if let Some(class) = fname.strip_prefix("[constructor]") {
            (ExportKind::Constructor, vcl_ident(class), 0)
        } else if let Some(m) = fname.strip_prefix("[method]") {
            let (class, method) = m.split_once('.').ok_or("bad method name")?;
            (
                ExportKind::Method,
                format!("{}.{}", vcl_ident(class), vcl_ident(method)),
                1,
            )
        } else if fname.starts_with('[') {
            // Static functions have no VCL spelling.
            continue;
        } else {
            (ExportKind::Function, vcl_ident(&fname), 0)
        };
        let mut args = Vec::new();
        let mut params = Vec::new();
        for (pname, pty) in f.params().skip(skip) {
            let (inner, optional) = match &pty {
                Type::Option(o) => (o.ty(), true),
                t => (t.clone(), false),
            };
            let (ty, enum_values) = vcl_type(&inner)
                .ok_or_else(|| format!("{fname}: parameter {pname} has a type VCL cannot pass"))?;
            args.push(VmodArg {
                name: vcl_ident(pname),
                ty,
                default: None,
                optional,
                enum_values,
            });
            params.push(pty);
        }
        let result = f.results().next();
        let ret = match (&kind, result.as_ref()) {
            // A constructor returns its resource; VCL names it with `new`.
            (ExportKind::Constructor, Some(Type::Own(_))) => VclType::Void,
            _ => vcl_result(result.as_ref())
                .ok_or_else(|| format!("{fname}: its result has a type VCL cannot take"))?,
        };
        let index = component
            .get_export_index(Some(&iface_idx), fname.as_str())
            .ok_or_else(|| format!("{fname} cannot be looked up"))?;
        match kind {
            ExportKind::Function => sig.functions.push(VmodFunc {
                name: vcl_name.clone(),
                ret,
                args,
                restrict: MethodSet::ALL,
                privs: Vec::new(),
            }),
            ExportKind::Constructor => sig.objects.push(VmodObject {
                name: vcl_name.clone(),
                ctor_args: args,
                methods: Vec::new(),
            }),
            ExportKind::Method => {
                let (class, method) = vcl_name.split_once('.').unwrap_or(("", ""));
                let Some(obj) = sig.objects.iter_mut().find(|o| o.name == class) else {
                    // A resource without a constructor cannot be made in VCL.
                    continue;
                };
                obj.methods.push(VmodFunc {
                    name: method.to_string(),
                    ret,
                    args,
                    restrict: MethodSet::ALL,
                    privs: Vec::new(),
                });
            }
        }
        let str_result = match &result {
            None => Some(StrResult::Void),
            Some(Type::String) => Some(StrResult::Str),
            Some(Type::Option(o)) if o.ty() == Type::String => Some(StrResult::OptStr),
            _ => None,
        };
        let str_call = match str_result {
            Some(result)
                if kind == ExportKind::Function
                    && params.len() <= MAX_STR_ARGS
                    && params.iter().all(|p| *p == Type::String) =>
            {
                Some(StrSig {
                    args: params.len(),
                    result,
                })
            }
            _ => None,
        };
        let kinds = params
            .iter()
            .map(|t| match t {
                Type::Option(o) => vcl_type(&o.ty()).map(|t| t.0),
                t => vcl_type(t).map(|t| t.0),
            })
            .collect();
        exports.push(Export {
            vcl_name,
            wit_name: fname.clone(),
            index,
            params,
            kinds,
            result,
            kind,
            str_call,
        });
    }
    Ok(VmodLib {
        name: name.to_string(),
        path: path.to_path_buf(),
        sig,
        pre,
        exports,
        on_event,
        end_task,
        iface: iface_name.clone(),
        core: None,
    })
}

/// The compiler's view of the VMODs in `vmod_path`.
pub struct Resolver {
    pub vmod_path: String,
}

impl vcl_to_wasm::VmodResolver for Resolver {
    fn resolve(&self, name: &str, path: Option<&str>) -> Result<Vmod, String> {
        let file = locate(name, path, &self.vmod_path).map_err(|e| e.to_string())?;
        load(name, &file)
            .map(|lib| lib.sig.clone())
            .map_err(|e| e.to_string())
    }
}

/// One argument as the VCL module passed it, converted by the caller.
#[derive(Clone, Debug)]
pub enum VclValue {
    None,
    Str(Option<String>),
    Blob(Option<Vec<u8>>),
    Int(i64),
    Real(f64),
    Bool(bool),
    /// A HEADER: where (`HttpWhere` code) and name.
    Header(i32, String),
    /// An IP (already resolved from its handle).
    Ip(std::net::IpAddr),
    /// A BACKEND by name.
    Backend(String),
    /// A REGEX by pattern text.
    Regex(String),
}

/// A VMOD's result for VCL.
#[derive(Clone, Debug, PartialEq)]
pub enum VclResult {
    Void,
    Str(Option<String>),
    Blob(Option<Vec<u8>>),
    Int(i64),
    Real(f64),
    Bool(bool),
    Ip(Option<std::net::IpAddr>),
    Backend(Option<String>),
}

/// A VMOD bound to one loaded VCL: its instance pool and the record of
/// what `vcl_init` did with it.
pub struct VclVmod {
    pub lib: Arc<VmodLib>,
    namespace: String,
    limits: VmodLimits,
    /// Boxed: an instance moves between the pool, a task and a call by
    /// pointer, not by a copy of the whole struct.
    #[allow(clippy::vec_box)]
    pool: Mutex<Vec<Box<VmodInstance>>>,
    /// Calls made in `vcl_init`, replayed on each new instance.
    init_log: Mutex<Vec<Recorded>>,
    /// `VMOD.<vcl>.<vmod>.*`: calls and how they failed.
    pub vsc: crate::vsc::VmodStats,
}

#[derive(Clone)]
struct Recorded {
    export: usize,
    object: Option<u32>,
    args: Vec<VclValue>,
}

/// An export of [`StrSig`]: the arguments are lowered from borrowed
/// `&str`s (for VCL, straight from the VCL module's memory) and a string
/// result is read in place from the VMOD's memory (copied once, by the
/// caller), so a call allocates nothing on the host. (`TypedFunc` is
/// covariant in its parameters: shorter-lived `&str`s are accepted.)
#[derive(Clone, Copy)]
enum StrFn {
    V0(TypedFunc<(), ()>),
    S0(TypedFunc<(), (WasmStr,)>),
    O0(TypedFunc<(), (Option<WasmStr>,)>),
    V1(TypedFunc<(&'static str,), ()>),
    S1(TypedFunc<(&'static str,), (WasmStr,)>),
    O1(TypedFunc<(&'static str,), (Option<WasmStr>,)>),
    V2(TypedFunc<(&'static str, &'static str), ()>),
    S2(TypedFunc<(&'static str, &'static str), (WasmStr,)>),
    O2(TypedFunc<(&'static str, &'static str), (Option<WasmStr>,)>),
}

/// What a [`StrFn`] returned: nothing, or a string (`None`:
/// `option::none`) still in the instance's memory.
pub enum StrOut {
    Void,
    Str(Option<WasmStr>),
    /// From the core fast path: (ptr, len) in the instance's memory.
    Core(Option<(u32, u32)>),
}

/// A live instance serving (at most) one task at a time.
pub struct VmodInstance {
    store: Store<VmodData>,
    /// The component instance, or (`core`) the core fast path's.
    instance: Option<Instance>,
    core: Option<Box<CoreInst>>,
    /// VCL objects (`new x = …`) by `ObjectId`.
    objects: HashMap<u32, ResourceAny>,
    /// Exports looked up so far, by export index (a lookup walks the
    /// instance's export map; a call should not).
    funcs: Vec<Option<Func>>,
    str_fns: Vec<Option<StrFn>>,
    /// Which `VclVmod` of the VCL it belongs to.
    pub vmod: usize,
}

impl VclVmod {
    pub fn new(lib: Arc<VmodLib>, tenant: &str, limits: VmodLimits) -> VclVmod {
        VclVmod {
            namespace: if tenant.is_empty() {
                lib.name.clone()
            } else {
                format!("{tenant}/{}", lib.name)
            },
            lib,
            limits,
            pool: Mutex::new(Vec::new()),
            init_log: Mutex::new(Vec::new()),
            vsc: Default::default(),
        }
    }

    fn err(&self, func: &str, why: impl Into<String>) -> VmodError {
        VmodError::Call {
            vmod: self.lib.name.clone(),
            func: func.to_string(),
            why: why.into(),
        }
    }

    /// A fresh instance: `load`, then `vcl_init`'s calls replayed (unless
    /// `replay` is false: `vcl_init` itself is running).
    fn instantiate(&self, id: usize, replay: bool) -> Result<Box<VmodInstance>, VmodError> {
        let engine = self.lib.pre.engine();
        let data = VmodData::new(self.namespace.clone(), self.limits.memory);
        let mut store = Store::new(engine, data);
        store.limiter(|d| &mut d.limits);
        store.set_epoch_deadline(self.limits.budget_ticks + 1);
        let (instance, core) = match &self.lib.core {
            Some((plan, sigs)) => {
                let core = plan
                    .instantiate(&mut store, LIFECYCLE, sigs)
                    .map_err(|e| self.err("instantiate", format!("{e:#}")))?;
                (None, Some(Box::new(core)))
            }
            None => {
                let i = self
                    .lib
                    .pre
                    .instantiate(&mut store)
                    .map_err(|e| self.err("instantiate", format!("{e:#}")))?;
                (Some(i), None)
            }
        };
        let n = self.lib.exports.len();
        let mut inst = Box::new(VmodInstance {
            store,
            instance,
            core,
            objects: HashMap::new(),
            funcs: vec![None; n],
            str_fns: vec![None; n],
            vmod: id,
        });
        self.event(&mut inst, Event::Load)?;
        if replay {
            let log = self.init_log.lock().map(|l| l.clone()).unwrap_or_default();
            for r in log {
                self.invoke(&mut inst, r.export, r.object, r.args)?;
            }
            self.event(&mut inst, Event::Warm)?;
        }
        Ok(inst)
    }

    fn event(&self, inst: &mut VmodInstance, ev: Event) -> Result<(), VmodError> {
        if let Some(core) = inst.core.as_deref() {
            let code = match ev {
                Event::Load => 0,
                Event::Warm => 1,
                Event::Cold => 2,
                Event::Discard => 3,
            };
            inst.store.set_epoch_deadline(self.limits.budget_ticks + 1);
            let r = core
                .on_event(&mut inst.store, code)
                .map_err(|e| self.err("on-event", trap_text(&e)))?;
            return r.map_err(|m| self.err("on-event", m));
        }
        let instance = inst
            .instance
            .ok_or_else(|| self.err("on-event", "no instance"))?;
        let f = instance
            .get_typed_func::<(Event,), (Result<(), String>,)>(&mut inst.store, self.lib.on_event)
            .map_err(|e| self.err("on-event", format!("{e:#}")))?;
        inst.store.set_epoch_deadline(self.limits.budget_ticks + 1);
        let (r,) = f
            .call(&mut inst.store, (ev,))
            .map_err(|e| self.err("on-event", trap_text(&e)))?;
        r.map_err(|m| self.err("on-event", m))
    }

    /// Lets go of every pooled instance (the VCL went cold).
    pub fn drain(&self) {
        if let Ok(mut p) = self.pool.lock() {
            p.clear();
        }
    }

    /// Checks out an instance for a task.
    pub fn checkout(&self, id: usize) -> Result<Box<VmodInstance>, VmodError> {
        if let Some(i) = self.pool.lock().ok().and_then(|mut p| p.pop()) {
            return Ok(i);
        }
        self.instantiate(id, true)
    }

    /// A task is done with `inst`: `end-task`, then back to the pool.
    pub fn release(&self, mut inst: Box<VmodInstance>) {
        inst.store.data_mut().task = None;
        inst.store.set_epoch_deadline(self.limits.budget_ticks + 1);
        if let Some(core) = inst.core.as_deref() {
            if core.end_task(&mut inst.store).is_err() {
                return;
            }
        } else {
            let Some(Ok(f)) = inst
                .instance
                .map(|i| i.get_typed_func::<(), ()>(&mut inst.store, self.lib.end_task))
            else {
                return;
            };
            if f.call(&mut inst.store, ()).is_err() {
                return;
            }
        }
        if let Ok(mut p) = self.pool.lock() {
            if p.len() < 256 {
                p.push(inst);
            }
        }
    }

    /// `vcl_init` finished: the instance that ran it gets `warm` and joins
    /// the pool.
    pub fn seal(&self, mut inst: Box<VmodInstance>) -> Result<(), VmodError> {
        inst.store.data_mut().task = None;
        self.event(&mut inst, Event::Warm)?;
        if let Ok(mut p) = self.pool.lock() {
            p.push(inst);
        }
        Ok(())
    }

    /// A new instance for `vcl_init` (no replay; its calls are recorded).
    pub fn for_init(&self, id: usize) -> Result<Box<VmodInstance>, VmodError> {
        self.instantiate(id, false)
    }

    /// Finds the export the compiler named `func`.
    pub fn export_index(&self, func: &str) -> Option<usize> {
        self.lib.exports.iter().position(|e| e.vcl_name == func)
    }

    /// Calls export `export` (for objects: `object` is the `ObjectId`).
    /// In `vcl_init` the call is recorded for replay.
    pub fn call(
        &self,
        inst: &mut VmodInstance,
        export: usize,
        object: Option<u32>,
        args: Vec<VclValue>,
    ) -> Result<VclResult, VmodError> {
        self.vsc.calls.inc();
        let in_init = inst
            .store
            .data()
            .task
            .as_ref()
            .is_some_and(|t| t.method == Method::Init);
        if !in_init {
            return self
                .invoke(inst, export, object, args)
                .inspect_err(|_| self.vsc.failed.inc());
        }
        let r = self
            .invoke(inst, export, object, args.clone())
            .inspect_err(|_| self.vsc.failed.inc())?;
        if let Ok(mut log) = self.init_log.lock() {
            log.push(Recorded {
                export,
                object,
                args,
            });
        }
        Ok(r)
    }

    fn invoke(
        &self,
        inst: &mut VmodInstance,
        export: usize,
        object: Option<u32>,
        args: Vec<VclValue>,
    ) -> Result<VclResult, VmodError> {
        let e = self
            .lib
            .exports
            .get(export)
            .ok_or_else(|| self.err("?", "bad export index"))?;
        let name = e.vcl_name.as_str();
        if e.str_call.is_some() {
            let args: Vec<String> = args
                .into_iter()
                .map(|a| match a {
                    VclValue::Str(s) => s.unwrap_or_default(),
                    _ => String::new(),
                })
                .collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = match self.call_str(inst, export, &args)? {
                StrOut::Void => return Ok(VclResult::Void),
                StrOut::Str(None) | StrOut::Core(None) => return Ok(VclResult::Str(None)),
                StrOut::Core(Some(span)) => {
                    let core = inst
                        .core
                        .as_deref()
                        .ok_or_else(|| self.err(name, "no core"))?;
                    let s = core
                        .str(&inst.store, span)
                        .map_err(|err| self.err(name, format!("{err:#}")))?;
                    return Ok(VclResult::Str(Some(s.to_string())));
                }
                StrOut::Str(Some(out)) => out,
            };
            let s = out
                .to_str(&inst.store)
                .map_err(|err| self.err(name, format!("{err:#}")))?;
            return Ok(VclResult::Str(Some(s.into_owned())));
        }
        if inst.core.is_some() {
            return self.invoke_core(inst, e, export, object, &args);
        }
        let mut params = Vec::with_capacity(e.params.len() + 1);
        if e.kind == ExportKind::Method {
            let o = object
                .and_then(|o| inst.objects.get(&o))
                .ok_or_else(|| self.err(name, "object not created in vcl_init"))?;
            params.push(Val::Resource(*o));
        }
        for (i, ty) in e.params.iter().enumerate() {
            let a = args.get(i).unwrap_or(&VclValue::None);
            params.push(to_val(a, ty).map_err(|m| self.err(name, m))?);
        }
        let func = match inst.funcs.get(export).copied().flatten() {
            Some(f) => f,
            None => {
                let f = inst
                    .instance
                    .and_then(|i| i.get_func(&mut inst.store, e.index))
                    .ok_or_else(|| self.err(name, "export missing in instance"))?;
                if let Some(slot) = inst.funcs.get_mut(export) {
                    *slot = Some(f);
                }
                f
            }
        };
        let mut results = vec![Val::Bool(false); usize::from(e.result.is_some())];
        inst.store.set_epoch_deadline(self.limits.budget_ticks + 1);
        inst.store.data_mut().limits.refused = false;
        func.call(&mut inst.store, &params, &mut results)
            .map_err(|err| self.call_error(inst, name, &err))?;
        let out = results.pop();
        if e.kind == ExportKind::Constructor {
            if let (Some(Val::Resource(r)), Some(o)) = (&out, object) {
                inst.objects.insert(o, *r);
            }
            return Ok(VclResult::Void);
        }
        from_val(out).map_err(|m| self.err(name, m))
    }

    /// [`Self::invoke`] on an instance of the core fast path: the same
    /// argument conversions as `to_val`, the same results as `from_val`.
    fn invoke_core(
        &self,
        inst: &mut VmodInstance,
        e: &Export,
        export: usize,
        object: Option<u32>,
        args: &[VclValue],
    ) -> Result<VclResult, VmodError> {
        let name = e.vcl_name.as_str();
        let Some(core) = inst.core.as_deref_mut() else {
            return Err(self.err(name, "no core instance"));
        };
        let rep = if e.kind == ExportKind::Method {
            let o = object
                .and_then(|o| core.objects.get(&o))
                .ok_or_else(|| self.err(name, "object not created in vcl_init"))?;
            Some(*o)
        } else {
            None
        };
        let mut cargs = Vec::with_capacity(e.params.len());
        for (i, ty) in e.params.iter().enumerate() {
            let a = args.get(i).unwrap_or(&VclValue::None);
            let record = record_kind(ty).map(|_| vcl_type(ty).map(|t| t.0));
            let opt = match ty {
                Type::Option(o) => Some(o.ty()),
                _ => None,
            };
            cargs.push(match (ty, a) {
                (Type::Record(_), VclValue::Regex(p)) if record == Some(Some(VclType::Regex)) => {
                    CoreArg::Str(p)
                }
                (Type::Record(_), VclValue::Real(x))
                    if matches!(record, Some(Some(VclType::Duration | VclType::Time))) =>
                {
                    CoreArg::F64(*x)
                }
                (Type::Option(_), VclValue::None) if opt == Some(Type::Bool) => {
                    CoreArg::OptBool(None)
                }
                (Type::Option(_), VclValue::Bool(b)) if opt == Some(Type::Bool) => {
                    CoreArg::OptBool(Some(*b))
                }
                (Type::Option(_), VclValue::None) => CoreArg::OptF64(None),
                (Type::Option(o), VclValue::Real(x))
                    if matches!(
                        vcl_type(&o.ty()).map(|t| t.0),
                        Some(VclType::Duration | VclType::Time)
                    ) =>
                {
                    CoreArg::OptF64(Some(*x))
                }
                (Type::String, VclValue::Str(s)) => CoreArg::Str(s.as_deref().unwrap_or_default()),
                (Type::String, VclValue::None) => CoreArg::Str(""),
                (Type::S64, VclValue::Int(n)) => CoreArg::S64(*n),
                (Type::S64, VclValue::None) => CoreArg::S64(0),
                (Type::Float64, VclValue::Real(x)) => CoreArg::F64(*x),
                (Type::Bool, VclValue::Bool(b)) => CoreArg::Bool(*b),
                _ => {
                    return Err(self.err(name, format!("argument {a:?} does not fit {ty:?}")));
                }
            });
        }
        inst.store.set_epoch_deadline(self.limits.budget_ticks + 1);
        inst.store.data_mut().limits.refused = false;
        let out = match core.call(&mut inst.store, export, rep, &cargs) {
            Ok(o) => o,
            Err(err) => return Err(self.call_error(inst, name, &err)),
        };
        let text = |span| {
            core.str(&inst.store, span)
                .map(str::to_string)
                .map_err(|err| self.err(name, format!("{err:#}")))
        };
        Ok(match out {
            CoreOut::Void | CoreOut::UnitOrStr(Ok(())) => VclResult::Void,
            CoreOut::Str(None) => VclResult::Str(None),
            CoreOut::Str(Some(span)) => VclResult::Str(Some(text(span)?)),
            CoreOut::S64(n) => VclResult::Int(n),
            CoreOut::F64(x) => VclResult::Real(x),
            CoreOut::Bool(b) => VclResult::Bool(b),
            CoreOut::UnitOrStr(Err(span)) | CoreOut::OptStrOrStr(Err(span)) => {
                return Err(self.err(name, text(span)?))
            }
            CoreOut::OptStrOrStr(Ok(None)) => VclResult::Str(None),
            CoreOut::OptStrOrStr(Ok(Some(span))) => VclResult::Str(Some(text(span)?)),
            CoreOut::Own(rep) => {
                if let Some(o) = object {
                    core.objects.insert(o, rep);
                }
                VclResult::Void
            }
        })
    }
}

impl VclVmod {
    /// How many `string` arguments export `export` takes if VCL calls it
    /// through [`StrCall`] (up to two `string`s, returning nothing, a
    /// `string` or an `option<string>`); `None` for other signatures.
    pub fn str_call_args(&self, export: usize) -> Option<usize> {
        self.lib.exports.get(export)?.str_call.map(|s| s.args)
    }

    /// Calls the [`StrSig`] export `export` with `args` (missing ones are
    /// empty strings); a string result stays in the instance's memory.
    fn call_str(
        &self,
        inst: &mut VmodInstance,
        export: usize,
        args: &[&str],
    ) -> Result<StrOut, VmodError> {
        let e = self
            .lib
            .exports
            .get(export)
            .ok_or_else(|| self.err("?", "bad export index"))?;
        if let Some(core) = inst.core.as_deref() {
            let Some(sig) = e.str_call else {
                return Err(self.err(&e.vcl_name, "not a string function"));
            };
            let mut cargs = [CoreArg::Str(""); MAX_STR_ARGS];
            for (c, a) in cargs.iter_mut().zip(args) {
                *c = CoreArg::Str(a);
            }
            let st = &mut inst.store;
            st.set_epoch_deadline(self.limits.budget_ticks + 1);
            st.data_mut().limits.refused = false;
            return match core.call(st, export, None, &cargs[..sig.args]) {
                Ok(CoreOut::Void) => Ok(StrOut::Void),
                Ok(CoreOut::Str(s)) => Ok(StrOut::Core(s)),
                Ok(_) => Err(self.err(&e.vcl_name, "unexpected result")),
                Err(err) => Err(self.call_error(inst, &e.vcl_name, &err)),
            };
        }
        let Some(instance) = inst.instance else {
            return Err(self.err(&e.vcl_name, "no instance"));
        };
        let f = match inst.str_fns.get(export).copied().flatten() {
            Some(f) => f,
            None => {
                let Some(sig) = e.str_call else {
                    return Err(self.err(&e.vcl_name, "not a string function"));
                };
                let (store, i) = (&mut inst.store, e.index);
                let inst_ = instance;
                let typed = match (sig.args, sig.result) {
                    (0, StrResult::Void) => inst_.get_typed_func(store, i).map(StrFn::V0),
                    (0, StrResult::Str) => inst_.get_typed_func(store, i).map(StrFn::S0),
                    (0, StrResult::OptStr) => inst_.get_typed_func(store, i).map(StrFn::O0),
                    (1, StrResult::Void) => inst_.get_typed_func(store, i).map(StrFn::V1),
                    (1, StrResult::Str) => inst_.get_typed_func(store, i).map(StrFn::S1),
                    (1, StrResult::OptStr) => inst_.get_typed_func(store, i).map(StrFn::O1),
                    (2, StrResult::Void) => inst_.get_typed_func(store, i).map(StrFn::V2),
                    (2, StrResult::Str) => inst_.get_typed_func(store, i).map(StrFn::S2),
                    (2, StrResult::OptStr) => inst_.get_typed_func(store, i).map(StrFn::O2),
                    _ => return Err(self.err(&e.vcl_name, "not a string function")),
                };
                let f = typed.map_err(|err| self.err(&e.vcl_name, format!("{err:#}")))?;
                if let Some(slot) = inst.str_fns.get_mut(export) {
                    *slot = Some(f);
                }
                f
            }
        };
        let a = |n: usize| args.get(n).copied().unwrap_or_default();
        let st = &mut inst.store;
        st.set_epoch_deadline(self.limits.budget_ticks + 1);
        st.data_mut().limits.refused = false;
        let r = match f {
            StrFn::V0(f) => f.call(st, ()).map(|()| StrOut::Void),
            StrFn::S0(f) => f.call(st, ()).map(|(o,)| StrOut::Str(Some(o))),
            StrFn::O0(f) => f.call(st, ()).map(|(o,)| StrOut::Str(o)),
            StrFn::V1(f) => f.call(st, (a(0),)).map(|()| StrOut::Void),
            StrFn::S1(f) => f.call(st, (a(0),)).map(|(o,)| StrOut::Str(Some(o))),
            StrFn::O1(f) => f.call(st, (a(0),)).map(|(o,)| StrOut::Str(o)),
            StrFn::V2(f) => f.call(st, (a(0), a(1))).map(|()| StrOut::Void),
            StrFn::S2(f) => f.call(st, (a(0), a(1))).map(|(o,)| StrOut::Str(Some(o))),
            StrFn::O2(f) => f.call(st, (a(0), a(1))).map(|(o,)| StrOut::Str(o)),
        };
        r.map_err(|err| self.call_error(inst, &e.vcl_name, &err))
    }
}

impl VclVmod {
    /// The error for a failed call of `func`.
    fn call_error(&self, inst: &VmodInstance, func: &str, err: &wasmtime::Error) -> VmodError {
        let cap = &inst.store.data().limits;
        crate::vsc::vmod_failed(&self.vsc, cap.refused, err);
        if cap.refused {
            // The guest's allocator traps when memory cannot grow: name
            // the cause rather than the `unreachable`.
            let why = format!("out of memory (instance cap {} bytes)", cap.bytes);
            return self.err(func, why);
        }
        self.err(func, trap_text(err))
    }
}

/// What a failed call says: the trap, or "CPU budget exhausted".
fn trap_text(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => "exceeded its CPU budget".to_string(),
        Some(t) => format!("trapped: {t}"),
        None => format!("{e:#}"),
    }
}

/// The WIT `http` enum (which message a header call is about) from its
/// discriminant; the core fast path reads it the same way.
pub(crate) fn http_of(w: i32) -> Result<Http, String> {
    Ok(match w {
        0 => Http::Req,
        1 => Http::ReqTop,
        2 => Http::Bereq,
        3 => Http::Beresp,
        4 => Http::Resp,
        5 => Http::Obj,
        _ => return Err(format!("bad header location {w}")),
    })
}

fn http_name(h: Http) -> &'static str {
    match h {
        Http::Req => "req",
        Http::ReqTop => "req-top",
        Http::Bereq => "bereq",
        Http::Beresp => "beresp",
        Http::Resp => "resp",
        Http::Obj => "obj",
    }
}

fn to_val(a: &VclValue, ty: &Type) -> Result<Val, String> {
    if let Type::Option(o) = ty {
        return Ok(match a {
            VclValue::None => Val::Option(None),
            a => Val::Option(Some(Box::new(to_val(a, &o.ty())?))),
        });
    }
    let bad = || format!("argument {a:?} does not fit {ty:?}");
    Ok(match (ty, a) {
        (Type::String, VclValue::Str(s)) => Val::String(s.clone().unwrap_or_default()),
        (Type::String, VclValue::None) => Val::String(String::new()),
        (Type::S64, VclValue::Int(n)) => Val::S64(*n),
        (Type::S64, VclValue::None) => Val::S64(0),
        (Type::Float64, VclValue::Real(x)) => Val::Float64(*x),
        (Type::Bool, VclValue::Bool(b)) => Val::Bool(*b),
        (Type::List(_), VclValue::Blob(b)) => Val::List(
            b.as_deref()
                .unwrap_or_default()
                .iter()
                .map(|&x| Val::U8(x))
                .collect(),
        ),
        (Type::List(_), VclValue::Str(s)) => Val::List(
            s.as_deref()
                .unwrap_or_default()
                .bytes()
                .map(Val::U8)
                .collect(),
        ),
        (Type::Enum(e), VclValue::Str(Some(s))) => {
            let want = s.to_ascii_lowercase().replace('_', "-");
            let case = e
                .names()
                .find(|n| *n == want)
                .ok_or_else(|| format!("{s} is not one of its values"))?;
            Val::Enum(case.to_string())
        }
        (Type::Record(_), a) => {
            let (ty, _) = vcl_type(ty).ok_or_else(bad)?;
            let fields = match (ty, a) {
                (VclType::Duration, VclValue::Real(x)) => vec![("seconds", Val::Float64(*x))],
                (VclType::Time, VclValue::Real(x)) => vec![("epoch-seconds", Val::Float64(*x))],
                (VclType::Bytes, VclValue::Int(n)) => {
                    vec![("count", Val::U64(u64::try_from(*n).unwrap_or(0)))]
                }
                (VclType::Ip, VclValue::Ip(ip)) => vec![
                    ("address", Val::String(ip.to_string())),
                    ("port", Val::U16(0)),
                ],
                (VclType::Header, VclValue::Header(w, n)) => vec![
                    ("part", Val::Enum(http_name(http_of(*w)?).to_string())),
                    ("name", Val::String(n.clone())),
                ],
                (VclType::Backend, VclValue::Backend(n)) => vec![("name", Val::String(n.clone()))],
                (VclType::Regex, VclValue::Regex(p)) => vec![("pattern", Val::String(p.clone()))],
                _ => return Err(bad()),
            };
            Val::Record(
                fields
                    .into_iter()
                    .map(|(n, v)| (n.to_string(), v))
                    .collect(),
            )
        }
        _ => return Err(bad()),
    })
}

fn from_val(v: Option<Val>) -> Result<VclResult, String> {
    let Some(v) = v else {
        return Ok(VclResult::Void);
    };
    Ok(match v {
        Val::String(s) => VclResult::Str(Some(s)),
        Val::S64(n) => VclResult::Int(n),
        Val::Float64(x) => VclResult::Real(x),
        Val::Bool(b) => VclResult::Bool(b),
        Val::Enum(e) => VclResult::Str(Some(vcl_ident(&e))),
        Val::List(l) => VclResult::Blob(Some(
            l.into_iter()
                .map(|x| match x {
                    Val::U8(b) => b,
                    _ => 0,
                })
                .collect(),
        )),
        Val::Option(None) => VclResult::Str(None),
        Val::Option(Some(v)) => from_val(Some(*v))?,
        Val::Result(Ok(v)) => from_val(v.map(|b| *b))?,
        Val::Result(Err(e)) => {
            return Err(match e.map(|b| *b) {
                Some(Val::String(m)) => m,
                _ => "failed".to_string(),
            })
        }
        Val::Record(fields) => {
            let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            match (get("seconds"), get("epoch-seconds"), get("count")) {
                (Some(Val::Float64(x)), _, _) | (_, Some(Val::Float64(x)), _) => VclResult::Real(x),
                (_, _, Some(Val::U64(n))) => VclResult::Int(i64::try_from(n).unwrap_or(i64::MAX)),
                _ => match (get("address"), get("name"), get("pattern")) {
                    (Some(Val::String(a)), _, _) => VclResult::Ip(a.parse().ok()),
                    (_, Some(Val::String(n)), _) => VclResult::Backend(Some(n)),
                    (_, _, Some(Val::String(p))) => VclResult::Str(Some(p)),
                    _ => return Err("unexpected record result".into()),
                },
            }
        }
        other => return Err(format!("unexpected result {other:?}")),
    })
}

// ---- the host side of the imports ----

impl VmodData {
    fn new(namespace: String, memory: usize) -> VmodData {
        VmodData {
            task: None,
            default_ns: format!("{}/{}", crate::cache_tenant::DEFAULT, namespace),
            namespace,
            limits: MemoryCap {
                bytes: memory,
                refused: false,
            },
            memory_cap: memory,
            regexes: HashMap::new(),
            core: None,
        }
    }

    fn task(&self) -> Option<&Task> {
        self.task.as_deref()
    }

    /// The namespace of shared state: the task's tenant's, then the VMOD.
    fn shared_ns(&self) -> std::borrow::Cow<'_, str> {
        match self.task().and_then(|t| t.tenant.as_deref()) {
            Some(t) if t.name != crate::cache_tenant::DEFAULT => {
                format!("{}/{}", t.name, self.namespace).into()
            }
            _ => self.default_ns.as_str().into(),
        }
    }

    fn regex(&mut self, pattern: &str) -> Result<&pcre2::bytes::Regex, String> {
        self.regexes
            .entry(pattern.to_string())
            .or_insert_with(|| crate::vre::compile(pattern))
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Whether the subroutine running may write `part` (Varnish's variable
/// rules for `req.http.*`, `bereq.http.*`, `beresp.http.*`, `resp.http.*`).
fn writable(m: Method, part: Http) -> bool {
    let client = MethodSet::CLIENT.contains(m);
    match part {
        Http::Req => client,
        Http::Bereq => matches!(
            m,
            Method::Pipe | Method::BackendFetch | Method::BackendResponse | Method::BackendError
        ),
        Http::Beresp => matches!(m, Method::BackendResponse | Method::BackendError),
        Http::Resp => matches!(m, Method::Deliver | Method::Synth),
        Http::ReqTop | Http::Obj => false,
    }
}

/// The headers of `part`, read in place (a message's list or the
/// object's packed block).
fn headers(t: &Task, part: Http) -> Option<impl Iterator<Item = (&str, &str)>> {
    let (list, obj) = match part {
        Http::Req => (Some(&t.req.headers), None),
        Http::ReqTop => (
            Some(&t.req_top.as_ref().map_or(&t.req, |x| &x.0).headers),
            None,
        ),
        Http::Bereq => (Some(&t.bereq.headers), None),
        Http::Beresp => (Some(&t.beresp.headers), None),
        Http::Resp => (Some(&t.resp.headers), None),
        Http::Obj => (None, Some(&t.obj.as_ref()?.headers)),
    };
    let list = list
        .into_iter()
        .flatten()
        .map(|(n, v)| (n.as_str(), v.as_str()));
    Some(list.chain(obj.into_iter().flat_map(|o| o.iter())))
}

impl VmodData {
    fn headers_mut(
        &mut self,
        part: Http,
        name: &str,
    ) -> Result<&mut crate::cache_obj::Headers, String> {
        let Some(t) = self.task.as_deref_mut() else {
            return Err("no task".into());
        };
        if !writable(t.method, part) {
            return Err(format!(
                "{}.http.{name} is not writable in {}",
                http_name(part).replace('-', "_"),
                t.method.sub_name()
            ));
        }
        Ok(match part {
            Http::Req => &mut t.req.headers,
            Http::Bereq => &mut t.bereq.headers,
            Http::Beresp => &mut t.beresp.headers,
            Http::Resp => &mut t.resp.headers,
            Http::ReqTop | Http::Obj => return Err("read only".into()),
        })
    }
}

impl shellac::vmod::types::Host for VmodData {}

impl shellac::vmod::task::Host for VmodData {
    fn get_header(&mut self, part: Http, name: String) -> Option<String> {
        headers(self.task()?, part)?
            .find(|(n, _)| n.eq_ignore_ascii_case(&name))
            .map(|(_, v)| v.to_string())
    }

    fn get_all(&mut self, part: Http, name: String) -> Vec<String> {
        self.task()
            .and_then(|t| headers(t, part))
            .map(|h| {
                h.filter(|(n, _)| n.eq_ignore_ascii_case(&name))
                    .map(|(_, v)| v.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn headers(&mut self, part: Http) -> Vec<(String, String)> {
        self.task()
            .and_then(|t| headers(t, part))
            .map(|h| h.map(|(n, v)| (n.to_string(), v.to_string())).collect())
            .unwrap_or_default()
    }

    fn set_header(&mut self, part: Http, name: String, value: String) -> Result<(), String> {
        let h = self.headers_mut(part, &name)?;
        h.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        h.push((name, value));
        Ok(())
    }

    fn add_header(&mut self, part: Http, name: String, value: String) -> Result<(), String> {
        self.headers_mut(part, &name)?.push((name, value));
        Ok(())
    }

    fn unset_header(&mut self, part: Http, name: String) -> Result<(), String> {
        self.headers_mut(part, &name)?
            .retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        Ok(())
    }

    fn method(&mut self) -> String {
        self.task()
            .map(|t| {
                if MethodSet::BACKEND.contains(t.method) {
                    t.bereq.method.clone()
                } else {
                    t.req.method.clone()
                }
            })
            .unwrap_or_default()
    }

    fn url(&mut self) -> String {
        self.task()
            .map(|t| {
                if MethodSet::BACKEND.contains(t.method) {
                    t.bereq.url.clone()
                } else {
                    t.req.url.clone()
                }
            })
            .unwrap_or_default()
    }

    fn client_ip(&mut self) -> String {
        self.task()
            .map(|t| t.client_ip.to_string())
            .unwrap_or_default()
    }

    fn xid(&mut self) -> u64 {
        self.task().map_or(0, |t| t.xid)
    }

    fn subroutine(&mut self) -> String {
        self.task()
            .map(|t| t.method.sub_name().to_string())
            .unwrap_or_default()
    }

    fn workspace_free(&mut self) -> u64 {
        // A VMOD's arena is bounded by its instance's memory cap.
        self.memory_cap as u64
    }
}

impl shellac::vmod::host::Host for VmodData {
    fn log(&mut self, message: String) {
        if let Some(t) = self.task.as_deref_mut() {
            t.vsl.log(vapi::Tag::VCL_Log, &message);
        }
    }

    fn error(&mut self, message: String) {
        let xid = self.task().map_or(0, |t| t.xid);
        tracing::warn!(xid, "VCL_Error: {message}");
        if let Some(t) = self.task.as_deref_mut() {
            t.vsl.log(vapi::Tag::VCL_Error, &message);
        }
    }

    fn now(&mut self) -> f64 {
        crate::vrt_ctx::now()
    }

    fn random(&mut self) -> u64 {
        crate::vmod_std::random_u64()
    }

    fn regex_match(&mut self, pattern: String, subject: String) -> Result<bool, String> {
        let re = self.regex(&pattern)?;
        re.is_match(subject.as_bytes()).map_err(|e| e.to_string())
    }

    fn regex_sub(
        &mut self,
        pattern: String,
        subject: String,
        replacement: String,
        all: bool,
    ) -> Result<String, String> {
        let re = self.regex(&pattern)?;
        let out = crate::vre::regsub(re, all, subject.as_bytes(), replacement.as_bytes())?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

impl shellac::vmod::shared::Host for VmodData {
    fn get(&mut self, key: String) -> Option<String> {
        crate::cache_shared::get(&self.shared_ns(), &key)
    }

    fn set(&mut self, key: String, value: String, ttl: Option<f64>) {
        crate::cache_shared::set(&self.shared_ns(), &key, value, ttl)
    }

    fn incr(&mut self, key: String, delta: i64, ttl: Option<f64>) -> i64 {
        crate::cache_shared::incr(&self.shared_ns(), &key, delta, ttl)
    }

    fn swap(
        &mut self,
        key: String,
        expected: Option<String>,
        value: String,
        ttl: Option<f64>,
    ) -> bool {
        crate::cache_shared::swap(&self.shared_ns(), &key, expected.as_deref(), value, ttl)
    }

    fn delete(&mut self, key: String) -> bool {
        crate::cache_shared::delete(&self.shared_ns(), &key)
    }

    fn ttl(&mut self, key: String) -> Option<f64> {
        crate::cache_shared::ttl(&self.shared_ns(), &key)
    }
}

impl shellac::vmod::cache::Host for VmodData {
    fn add_tags(&mut self, tags: Vec<String>) -> Result<(), String> {
        let Some(t) = self.task.as_deref_mut() else {
            return Err("no task".into());
        };
        if t.method != Method::BackendResponse {
            return Err(format!(
                "tags can only be added in vcl_backend_response, not {}",
                t.method.sub_name()
            ));
        }
        t.tags.extend(tags);
        Ok(())
    }

    fn purge_tags(&mut self, tags: Vec<String>, soft: bool) -> u32 {
        let Some(cache) = self.task().and_then(|t| t.cache.clone()) else {
            return 0;
        };
        let n = cache.purge_tags(&tags, soft, crate::vrt_ctx::now());
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn ban(&mut self, expression: String) -> Result<(), String> {
        let Some(t) = self.task.as_deref_mut() else {
            return Err("no task".into());
        };
        let b = crate::cache_ban::parse(&expression, crate::vrt_ctx::now())?;
        t.new_bans.push(b);
        Ok(())
    }
}

/// Hands `task` to `inst` for a call, with the memory cap of the task's
/// tenant (its `wasm_memory` quota) if that is below the VMOD's own.
fn enter(inst: &mut VmodInstance, task: Box<Task>) {
    let tenant_cap = task
        .tenant
        .as_ref()
        .and_then(|t| t.wasm_memory())
        .map_or(usize::MAX, |b| usize::try_from(b).unwrap_or(usize::MAX));
    let d = inst.store.data_mut();
    d.limits.bytes = d.memory_cap.min(tenant_cap);
    d.task = Some(task);
}

/// The VMOD instances one task holds, returned (after `end-task`) to their
/// pools when the task is dropped.
#[derive(Default)]
pub struct TaskVmods(Vec<(Arc<VclVmod>, Box<VmodInstance>)>);

impl TaskVmods {
    fn take(&mut self, vv: &Arc<VclVmod>) -> Option<Box<VmodInstance>> {
        self.take_pair(vv).map(|(_, i)| i)
    }

    fn take_pair(&mut self, vv: &Arc<VclVmod>) -> Option<(Arc<VclVmod>, Box<VmodInstance>)> {
        let i = self.0.iter().position(|(v, _)| Arc::ptr_eq(v, vv))?;
        Some(self.0.swap_remove(i))
    }

    /// The instances that ran `vcl_init`, for [`VclVmod::seal`].
    pub fn drain(&mut self) -> Vec<(Arc<VclVmod>, Box<VmodInstance>)> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for TaskVmods {
    fn drop(&mut self) {
        for (vv, inst) in self.0.drain(..) {
            vv.release(inst);
        }
    }
}

/// How a native call into a component VMOD is bound at load time.
#[derive(Clone, Debug)]
pub struct Binding {
    pub vmod: usize,
    pub export: usize,
}

/// Runs a VCL call of a component VMOD function on `task`, converting the
/// arguments by the export's types. The task moves into the VMOD's store
/// for the call (its imports read and write the task's messages) and back.
pub fn call_from_vcl(
    vcl: &crate::cache_vcl::VclShared,
    b: &Binding,
    object: i32,
    args: Vec<crate::vmod_std::Arg>,
    mut task: Box<Task>,
) -> (Box<Task>, Result<VclResult, VmodError>) {
    use crate::vmod_std::Arg;
    let Some(vv) = vcl.vmods.get(b.vmod).cloned() else {
        return (task, Err(VmodError::NotFound(format!("#{}", b.vmod))));
    };
    let Some(e) = vv.lib.exports.get(b.export) else {
        return (task, Err(vv.err("?", "bad export index")));
    };
    let mut vals = Vec::with_capacity(args.len());
    for (i, a) in args.into_iter().enumerate() {
        let kind = e.kinds.get(i).copied().flatten();
        vals.push(match (a, kind) {
            (Arg::None, _) => VclValue::None,
            (Arg::Str(s), Some(VclType::Blob)) => VclValue::Blob(s.map(String::into_bytes)),
            (Arg::Blob(b), Some(VclType::Blob) | None) => VclValue::Blob(b),
            (Arg::Blob(b), _) => VclValue::Str(b.map(|b| String::from_utf8_lossy(&b).into_owned())),
            (Arg::Str(s), _) => VclValue::Str(s),
            (Arg::Header(w, n), _) => VclValue::Header(w, n),
            (Arg::Int(n), _) => VclValue::Int(n),
            (Arg::Real(x), _) => VclValue::Real(x),
            (Arg::Bool(x), _) => VclValue::Bool(x),
            (Arg::Handle(h), Some(VclType::Ip)) => match task.ip(h) {
                Some(ip) => VclValue::Ip(ip),
                None => VclValue::None,
            },
            (Arg::Handle(h), Some(VclType::Backend)) => {
                VclValue::Backend(vcl.backend_name(h).unwrap_or_default())
            }
            (Arg::Handle(h), Some(VclType::Regex)) => usize::try_from(h)
                .ok()
                .and_then(|i| vcl.meta.regexes.get(i))
                .map_or(VclValue::None, |p| VclValue::Regex(p.clone())),
            (Arg::Handle(_), _) => VclValue::None,
        });
    }
    let object = u32::try_from(object).ok();
    let inst = match task.vmods.take(&vv) {
        Some(i) => Ok(i),
        None if task.method == Method::Init => vv.for_init(b.vmod),
        None => vv.checkout(b.vmod),
    };
    let mut inst = match inst {
        Ok(i) => i,
        Err(e) => return (task, Err(e)),
    };
    enter(&mut inst, task);
    let r = vv.call(&mut inst, b.export, object, vals);
    let Some(mut task) = inst.store.data_mut().task.take() else {
        // The task only moves in and out here.
        return (
            Box::new(Task::new(0, [0, 0, 0, 0].into(), [0, 0, 0, 0].into(), 0.0)),
            Err(vv.err("?", "task lost")),
        );
    };
    if r.is_ok() {
        task.vmods.0.push((vv, inst));
    }
    // On error the instance is dropped: its state may be anything now.
    (task, r)
}

/// The result of a [`StrCall`] for VCL.
pub enum StrValue<'a> {
    /// The function returns nothing.
    Void,
    /// `option::none`: VCL's NULL string.
    Null,
    Bytes(std::borrow::Cow<'a, [u8]>),
}

/// A call from VCL of a function of up to two `string`s returning
/// nothing, a `string` or an `option<string>`, the commonest VMOD calls,
/// without
/// the conversions of [`call_from_vcl`]: the caller lends the argument
/// (borrowed from the VCL module's memory), then copies the result from the
/// VMOD's memory into the workspace, then ends the call.
///
/// [`StrCall::begin`] moves the task into the VMOD's store (its imports
/// read and write the task) and [`StrCall::finish`] gives it back.
pub struct StrCall {
    vv: Arc<VclVmod>,
    inst: Box<VmodInstance>,
    export: usize,
    out: Option<StrOut>,
}

impl StrCall {
    /// Takes the task's instance of the VMOD (or checks one out). On
    /// failure the task comes back with the error.
    pub fn begin(
        vcl: &crate::cache_vcl::VclShared,
        b: &Binding,
        mut task: Box<Task>,
    ) -> Result<StrCall, (Box<Task>, VmodError)> {
        let Some(vv) = vcl.vmods.get(b.vmod) else {
            return Err((task, VmodError::NotFound(format!("#{}", b.vmod))));
        };
        let (vv, mut inst) = match task.vmods.take_pair(vv) {
            Some(pair) => pair,
            None => match vv.checkout(b.vmod) {
                Ok(i) => (vv.clone(), i),
                Err(e) => return Err((task, e)),
            },
        };
        enter(&mut inst, task);
        Ok(StrCall {
            vv,
            inst,
            export: b.export,
            out: None,
        })
    }

    /// Runs the function on `args`.
    pub fn invoke(&mut self, args: &[&str]) -> Result<(), VmodError> {
        self.vv.vsc.calls.inc();
        let out = self
            .vv
            .call_str(&mut self.inst, self.export, args)
            .inspect_err(|_| self.vv.vsc.failed.inc())?;
        self.out = Some(out);
        Ok(())
    }

    /// The result, its bytes still in the VMOD's memory (validated UTF-8).
    pub fn result(&self) -> Result<StrValue<'_>, VmodError> {
        let out = match &self.out {
            None => return Err(self.vv.err("?", "no result")),
            Some(StrOut::Void) => return Ok(StrValue::Void),
            Some(StrOut::Str(None) | StrOut::Core(None)) => return Ok(StrValue::Null),
            Some(StrOut::Core(Some(span))) => {
                let core = self
                    .inst
                    .core
                    .as_deref()
                    .ok_or_else(|| self.vv.err("?", "no core"))?;
                return match core.str(&self.inst.store, *span) {
                    Ok(s) => Ok(StrValue::Bytes(std::borrow::Cow::Borrowed(s.as_bytes()))),
                    Err(e) => Err(self.vv.err(self.func_name(), format!("{e:#}"))),
                };
            }
            Some(StrOut::Str(Some(out))) => out,
        };
        match out.to_str(&self.inst.store) {
            Ok(std::borrow::Cow::Borrowed(s)) => {
                Ok(StrValue::Bytes(std::borrow::Cow::Borrowed(s.as_bytes())))
            }
            Ok(std::borrow::Cow::Owned(s)) => {
                Ok(StrValue::Bytes(std::borrow::Cow::Owned(s.into_bytes())))
            }
            Err(e) => {
                let name = self
                    .vv
                    .lib
                    .exports
                    .get(self.export)
                    .map_or("?", |e| &e.vcl_name);
                Err(self.vv.err(name, format!("{e:#}")))
            }
        }
    }

    fn func_name(&self) -> &str {
        self.vv
            .lib
            .exports
            .get(self.export)
            .map_or("?", |e| &e.vcl_name)
    }

    /// Ends the call and gives the task back. The instance stays with the
    /// task if `ok`; after a failure it is dropped (its state may be
    /// anything now).
    /// (`None` cannot happen: the task only moves in and out here.)
    pub fn finish(mut self, ok: bool) -> Option<Box<Task>> {
        let mut task = self.inst.store.data_mut().task.take()?;
        if ok {
            task.vmods.0.push((self.vv, self.inst));
        }
        Some(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name` from `target/<dir>/<name>.wasm` (built by scripts/build-wasm),
    /// on the core fast path or the component path.
    fn lib(dir: &str, name: &str, core: bool) -> Arc<VmodLib> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target")
            .join(dir)
            .join(format!("{name}.wasm"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build-wasm)", path.display()));
        let lib = compile(name, &path, &bytes, core).unwrap();
        if core {
            let engine = crate::cache_vcl::engine().unwrap();
            if let Err(why) = core_plan(&lib, engine, &bytes) {
                panic!("{name}: no fast path: {why}");
            }
        }
        assert_eq!(lib.core.is_some(), core, "{name}: fast path taken");
        Arc::new(lib)
    }

    type Call<'a> = (&'a str, Option<u32>, Vec<VclValue>);

    /// Runs `calls` in order on one instance (each with a fresh `vcl_recv`
    /// task), then ends the task; the results and error texts.
    fn run(lib: Arc<VmodLib>, calls: &[Call<'_>]) -> Vec<Result<VclResult, String>> {
        // 200 ms: enough for `alloc` to reach the memory cap first on a
        // loaded machine; `spin` still ends by the budget.
        let limits = VmodLimits {
            budget_ticks: 200,
            memory: 16 << 20,
        };
        let vv = VclVmod::new(lib, "", limits);
        let mut inst = vv.for_init(0).unwrap();
        let mut out = Vec::new();
        for (func, object, args) in calls {
            let export = vv.export_index(func).unwrap();
            let task = Task::new(1, [127, 0, 0, 1].into(), [127, 0, 0, 1].into(), 0.0);
            enter(&mut inst, Box::new(task));
            let r = vv.call(&mut inst, export, *object, args.clone());
            inst.store.data_mut().task = None;
            let failed = r.is_err();
            out.push(r.map_err(|e| e.to_string()));
            if failed {
                // As after a failed call from VCL: a fresh instance.
                inst = vv.for_init(0).unwrap();
            }
        }
        vv.release(inst);
        out
    }

    fn s(x: &str) -> VclValue {
        VclValue::Str(Some(x.to_string()))
    }

    #[test]
    fn core_fast_path_equals_component_path_for_hello() {
        let calls: Vec<Call<'_>> = vec![
            ("lower", None, vec![s("Hello-World-AbC")]),
            ("lower", None, vec![s("ÄÖÜ-Straße")]),
            ("lower", None, vec![VclValue::Str(None)]),
            ("lower", None, vec![]),
            ("hello", None, vec![s("World")]),
            ("greeter", Some(7), vec![s("Howdy")]),
            ("greeter.greet", Some(7), vec![s("World")]),
            ("greeter.greet", Some(8), vec![s("nobody")]),
            ("lower", None, vec![s(&"X".repeat(100_000))]),
            // Around the fused adapter's stage (4,080 bytes): a result
            // that fits, one that does not (its slow path), an argument
            // that just fits.
            ("hello", None, vec![s(&"x".repeat(4072))]),
            ("hello", None, vec![s(&"x".repeat(4073))]),
            ("lower", None, vec![s(&"Y".repeat(4080))]),
        ];
        let fast = run(lib("samples", "hello", true), &calls);
        let slow = run(lib("samples", "hello", false), &calls);
        assert_eq!(fast, slow);
        assert_eq!(fast[0], Ok(VclResult::Str(Some("hello-world-abc".into()))));
        assert_eq!(fast[6], Ok(VclResult::Str(Some("Howdy, World!".into()))));
        assert!(fast[7].is_err());
        let hello = |n: usize| Ok(VclResult::Str(Some(format!("Hello, {}!", "x".repeat(n)))));
        assert_eq!(fast[9], hello(4072));
        assert_eq!(fast[10], hello(4073));
        assert_eq!(fast[11], Ok(VclResult::Str(Some("y".repeat(4080)))));
    }

    #[test]
    fn bundled_vmods_of_supported_shapes_take_the_core_fast_path() {
        for name in ["cookie", "urlcode", "vsthrottle", "xkey"] {
            lib("vmods", name, true);
        }
        // Signatures or imports the fast path does not do (lists, IPs,
        // enums, options of those): wasmtime's component path.
        for name in ["blob", "header", "querystring", "var"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/vmods")
                .join(format!("{name}.wasm"));
            let bytes = std::fs::read(&path).unwrap();
            let lib = compile(name, &path, &bytes, true).unwrap();
            assert!(lib.core.is_none(), "{name}");
        }
    }

    #[test]
    fn core_fast_path_equals_component_path_for_hostile() {
        let calls: Vec<Call<'_>> = vec![
            ("ok", None, vec![s("fine")]),
            ("crash", None, vec![]),
            ("ok", None, vec![s("after a crash")]),
            ("recurse", None, vec![VclValue::Int(1 << 40)]),
            ("recurse", None, vec![VclValue::Int(10)]),
            ("big", None, vec![VclValue::Int(100 << 20)]),
            ("big", None, vec![VclValue::Int(3)]),
            ("alloc", None, vec![]),
            ("alloc_str", None, vec![s("x")]),
            ("spin", None, vec![]),
            ("spin_str", None, vec![s("x")]),
            ("bad_header", None, vec![]),
            ("ok", None, vec![s("still here")]),
        ];
        let fast = run(lib("samples", "hostile", true), &calls);
        let slow = run(lib("samples", "hostile", false), &calls);
        assert_eq!(fast, slow);
        assert_eq!(fast[2], Ok(VclResult::Str(Some("after a crash".into()))));
        assert!(
            fast[9].as_ref().is_err_and(|e| e.contains("CPU budget")),
            "{fast:?}"
        );
        assert!(
            fast[7].as_ref().is_err_and(|e| e.contains("out of memory")),
            "{fast:?}"
        );
    }

    #[test]
    fn vmod_limits_override_only_the_named_vmod() {
        let base = VmodLimits {
            budget_ticks: 100,
            memory: 64 << 20,
        };
        let spec = "hostile=20/16m, xkey=/2m";
        let h = VmodLimits::for_vmod(base, "hostile", spec).unwrap();
        assert_eq!((h.budget_ticks, h.memory), (20, 16 << 20));
        let x = VmodLimits::for_vmod(base, "xkey", spec).unwrap();
        assert_eq!((x.budget_ticks, x.memory), (100, 2 << 20));
        let c = VmodLimits::for_vmod(base, "cookie", spec).unwrap();
        assert_eq!((c.budget_ticks, c.memory), (100, 64 << 20));
        assert!(VmodLimits::for_vmod(base, "cookie", "hostile").is_err());
        assert!(VmodLimits::for_vmod(base, "hostile", "hostile=fast").is_err());
    }
}
