//! The fast path for VMOD calls: a VMOD component run as its core modules.
//!
//! wasmtime 48's component entry costs ~250 ns per string call before the
//! guest does anything (re-deriving the export's core function, three
//! entries into wasm with their bookkeeping). A core wasm call costs
//! 12–15 ns. So for components of a shape this module understands — what
//! `wit-bindgen` + `wit-component` produce for the `shellac:vmod` world —
//! Shellac instantiates the component's core modules itself, wires them the
//! way the component's core-instance graph says (the main module,
//! wit-component's shim and fixup modules with their indirect-call table,
//! `canon lower`ed imports, `canon resource.*` intrinsics), and does the
//! canonical ABI of the calls by hand: a string argument is written into
//! guest memory through the guest's `cabi_realloc`, a string result is
//! read as `(ptr, len)` at the returned pointer, then the export's
//! `cabi_post_*` runs, exactly the steps wasmtime's component entry takes.
//!
//! The same `Store` carries the instance, so the CPU budget (epoch
//! deadline), the memory cap (the store's limiter), traps and the task
//! that imports see are what the component path has. Anything of another
//! shape (an import this module does not implement, a parameter or result
//! type it does not lower, async options, a start function) is refused by
//! [`CorePlan::new`] and the VMOD keeps using wasmtime's component path
//! (`cache_vmod`). `SHELLAC_VMOD_CORE=0` in the environment forces that
//! path for every VMOD.

use crate::cache_vmod::shellac::vmod::{
    cache::Host as _, host::Host as _, shared::Host as _, task::Host as _, types::Http,
};
use crate::cache_vmod::VmodData;
use crate::cache_vmod_adapter as adapter;
use std::collections::HashMap;
use wasmparser::{
    CanonicalFunction, CanonicalOption, ComponentAlias, ComponentExternalKind,
    ComponentInstance as CInstance, ComponentOuterAliasKind, ComponentType, ComponentTypeRef,
    ExternalKind, Instance as CoreInstance, Parser, Payload,
};
use wasmtime::{Caller, Engine, Extern, Func, Memory, Module, Store, TypedFunc};

type R<T> = wasmtime::Result<T>;

/// Whether the core fast path may be used (`SHELLAC_VMOD_CORE=0`: never).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SHELLAC_VMOD_CORE").map_or(true, |v| v != "0"))
}

/// A parameter of an export, as the fast path lowers it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PKind {
    /// `string`, or a record of one `string` (`regex`).
    Str,
    S64,
    /// `f64`, or a record of one `f64` (`duration`, `time`).
    F64,
    Bool,
    /// `option<duration>`.
    OptF64,
    OptBool,
}

/// A result of an export, as the fast path lifts it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RKind {
    Void,
    Str,
    OptStr,
    S64,
    F64,
    Bool,
    /// `result<_, string>`.
    UnitOrStr,
    /// `result<option<string>, string>`.
    OptStrOrStr,
    /// A constructor's `own<T>`.
    Own,
}

/// An export's signature for the fast path.
#[derive(Clone, Debug, PartialEq)]
pub struct CoreSig {
    /// A method: its first core parameter is the object's representation.
    pub method: bool,
    pub params: Vec<PKind>,
    pub result: RKind,
}

impl CoreSig {
    fn flat_params(&self) -> usize {
        usize::from(self.method)
            + self
                .params
                .iter()
                .map(|p| match p {
                    PKind::Str | PKind::OptF64 | PKind::OptBool => 2,
                    _ => 1,
                })
                .sum::<usize>()
    }
}

/// A core item as the component's index spaces define it.
#[derive(Clone, Debug)]
enum CoreFuncDef {
    /// An export of core instance `.0`.
    Alias(u32, String),
    /// A `canon lower` of a host import.
    Lower(HostFn),
    ResourceNew(u32),
    ResourceDrop(u32),
    ResourceRep(u32),
}

#[derive(Clone, Debug)]
enum CoreInstDef {
    Instantiate {
        module: u32,
        args: Vec<(String, u32)>,
    },
    FromExports(Vec<(String, ExternalKind, u32)>),
}

/// A component-level function: an import's export or a lift.
#[derive(Clone, Debug)]
enum CompFunc {
    Import(String, String),
    Lift(Lift),
    Other,
}

/// A lifted export: the main instance's core export names.
#[derive(Clone, Debug)]
struct Lift {
    func: String,
    post: Option<String>,
}

/// The host imports the fast path implements, by their WIT names.
#[derive(Clone, Copy, Debug, PartialEq)]
enum HostFn {
    GetHeader,
    SetHeader,
    AddHeader,
    UnsetHeader,
    Method,
    Url,
    ClientIp,
    Xid,
    Subroutine,
    WorkspaceFree,
    Log,
    Error,
    Now,
    Random,
    RegexMatch,
    SharedGet,
    SharedSet,
    SharedIncr,
    SharedSwap,
    SharedDelete,
    SharedTtl,
    AddTags,
    PurgeTags,
    Ban,
}

fn host_fn(iface: &str, name: &str) -> Option<HostFn> {
    let iface = iface.strip_suffix("@0.1.0")?;
    Some(match (iface, name) {
        ("shellac:vmod/task", "get-header") => HostFn::GetHeader,
        ("shellac:vmod/task", "set-header") => HostFn::SetHeader,
        ("shellac:vmod/task", "add-header") => HostFn::AddHeader,
        ("shellac:vmod/task", "unset-header") => HostFn::UnsetHeader,
        ("shellac:vmod/task", "method") => HostFn::Method,
        ("shellac:vmod/task", "url") => HostFn::Url,
        ("shellac:vmod/task", "client-ip") => HostFn::ClientIp,
        ("shellac:vmod/task", "xid") => HostFn::Xid,
        ("shellac:vmod/task", "subroutine") => HostFn::Subroutine,
        ("shellac:vmod/task", "workspace-free") => HostFn::WorkspaceFree,
        ("shellac:vmod/host", "log") => HostFn::Log,
        ("shellac:vmod/host", "error") => HostFn::Error,
        ("shellac:vmod/host", "now") => HostFn::Now,
        ("shellac:vmod/host", "random") => HostFn::Random,
        ("shellac:vmod/host", "regex-match") => HostFn::RegexMatch,
        ("shellac:vmod/shared", "get") => HostFn::SharedGet,
        ("shellac:vmod/shared", "set") => HostFn::SharedSet,
        ("shellac:vmod/shared", "incr") => HostFn::SharedIncr,
        ("shellac:vmod/shared", "swap") => HostFn::SharedSwap,
        ("shellac:vmod/shared", "delete") => HostFn::SharedDelete,
        ("shellac:vmod/shared", "ttl") => HostFn::SharedTtl,
        ("shellac:vmod/cache", "add-tags") => HostFn::AddTags,
        ("shellac:vmod/cache", "purge-tags") => HostFn::PurgeTags,
        ("shellac:vmod/cache", "ban") => HostFn::Ban,
        _ => return None,
    })
}

/// How to build a VMOD's core instances, worked out once per component.
pub struct CorePlan {
    modules: Vec<Module>,
    instances: Vec<CoreInstDef>,
    funcs: Vec<CoreFuncDef>,
    /// Tables, memories and globals: exports of core instances.
    tables: Vec<(u32, String)>,
    memories: Vec<(u32, String)>,
    globals: Vec<(u32, String)>,
    /// The core instance whose memory and `cabi_realloc` every lift and
    /// lower uses (the main module's).
    main: u32,
    memory: String,
    realloc: Option<String>,
    /// Lifts by (exported interface, function name).
    lifts: HashMap<(String, String), Lift>,
    /// Resource types (component type index) and their destructors.
    dtors: HashMap<u32, Option<u32>>,
    /// The fused adapter for this VMOD's string functions (built at the
    /// first instantiation: the exports are the same for every one).
    adapter: std::sync::OnceLock<Option<Module>>,
}

impl std::fmt::Debug for CorePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorePlan")
            .field("modules", &self.modules.len())
            .field("main", &self.main)
            .finish()
    }
}

/// Parses state of one nested component (wit-component's per-interface
/// "shim" components that only re-export their imported functions with
/// type ascriptions): which import each exported function is.
#[derive(Default)]
struct Nested {
    funcs: Vec<Option<String>>,
    exports: HashMap<String, String>,
}

impl CorePlan {
    /// The plan for `bytes`, or why the component is not of a shape the
    /// fast path runs (then the component path is used).
    pub fn new(engine: &Engine, bytes: &[u8]) -> Result<CorePlan, String> {
        let mut modules = Vec::new();
        let mut instances = Vec::new();
        let mut funcs: Vec<CoreFuncDef> = Vec::new();
        let mut tables = Vec::new();
        let mut memories = Vec::new();
        let mut globals = Vec::new();
        // Component index spaces.
        let mut comp_funcs: Vec<CompFunc> = Vec::new();
        let mut comp_insts: Vec<Option<String>> = Vec::new(); // imported name
        let mut comp_inst_exports: Vec<HashMap<String, u32>> = Vec::new();
        let mut components: Vec<HashMap<String, String>> = Vec::new();
        let mut types = 0u32;
        let mut dtors = HashMap::new();
        let mut exported: Vec<(String, u32)> = Vec::new();
        // Lifts still to be checked: (func index, memory, realloc, post).
        let mut lift_opts: Vec<(u32, Option<u32>, Option<u32>)> = Vec::new();
        let mut lower_opts: Vec<(Option<u32>, Option<u32>)> = Vec::new();
        let mut depth = 0usize;
        let mut nested: Option<Nested> = None;
        // Whether the item being skipped (depth 1) is a component.
        let mut in_component = false;
        let e = |e: wasmparser::BinaryReaderError| e.to_string();
        for payload in Parser::new(0).parse_all(bytes) {
            let payload = payload.map_err(e)?;
            if depth > 0 {
                match payload {
                    Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => {
                        depth += 1;
                        if nested.take().is_some() {
                            return Err("a nested component nests more".into());
                        }
                    }
                    Payload::End(_) => {
                        depth -= 1;
                        if depth == 0 && in_component {
                            components.push(nested.take().map(|n| n.exports).unwrap_or_default());
                        }
                    }
                    Payload::InstanceSection(_)
                    | Payload::ComponentCanonicalSection(_)
                    | Payload::ComponentInstanceSection(_)
                    | Payload::ComponentStartSection { .. }
                        if nested.is_some() =>
                    {
                        return Err("a nested component does more than re-export".into());
                    }
                    Payload::ComponentImportSection(r) => {
                        if let Some(n) = nested.as_mut() {
                            for i in r {
                                let i = i.map_err(e)?;
                                if let ComponentTypeRef::Func(_) = i.ty {
                                    n.funcs.push(Some(i.name.name.to_string()));
                                }
                            }
                        }
                    }
                    Payload::ComponentAliasSection(r) => {
                        if let Some(n) = nested.as_mut() {
                            for a in r {
                                if let ComponentAlias::InstanceExport {
                                    kind: ComponentExternalKind::Func,
                                    ..
                                } = a.map_err(e)?
                                {
                                    n.funcs.push(None);
                                }
                            }
                        }
                    }
                    Payload::ComponentExportSection(r) => {
                        if let Some(n) = nested.as_mut() {
                            for x in r {
                                let x = x.map_err(e)?;
                                if x.kind == ComponentExternalKind::Func {
                                    let of = n.funcs.get(x.index as usize).cloned().flatten();
                                    if let Some(import) = &of {
                                        n.exports.insert(x.name.name.to_string(), import.clone());
                                    }
                                    n.funcs.push(of);
                                }
                            }
                        }
                    }
                    _ => {}
                }
                continue;
            }
            match payload {
                Payload::Version { .. } | Payload::CustomSection(_) | Payload::End(_) => {}
                Payload::CoreTypeSection(_) => {}
                Payload::ModuleSection {
                    unchecked_range, ..
                } => {
                    let m = bytes.get(unchecked_range).ok_or("module out of range")?;
                    modules.push(Module::new(engine, m).map_err(|e| format!("{e:#}"))?);
                    depth = 1;
                    in_component = false;
                }
                Payload::ComponentSection { .. } => {
                    depth = 1;
                    in_component = true;
                    nested = Some(Nested::default());
                }
                Payload::ComponentImportSection(r) => {
                    for i in r {
                        let i = i.map_err(e)?;
                        match i.ty {
                            ComponentTypeRef::Instance(_) => {
                                comp_insts.push(Some(i.name.name.to_string()));
                                comp_inst_exports.push(HashMap::new());
                            }
                            ComponentTypeRef::Type(_) => types += 1,
                            ComponentTypeRef::Func(_) => comp_funcs.push(CompFunc::Other),
                            _ => return Err("it imports a module, value or component".into()),
                        }
                    }
                }
                Payload::ComponentTypeSection(r) => {
                    for t in r {
                        if let ComponentType::Resource { dtor, .. } = t.map_err(e)? {
                            dtors.insert(types, dtor);
                        }
                        types += 1;
                    }
                }
                Payload::InstanceSection(r) => {
                    for i in r {
                        instances.push(match i.map_err(e)? {
                            CoreInstance::Instantiate { module_index, args } => {
                                CoreInstDef::Instantiate {
                                    module: module_index,
                                    args: args
                                        .iter()
                                        .map(|a| (a.name.to_string(), a.index))
                                        .collect(),
                                }
                            }
                            CoreInstance::FromExports(x) => CoreInstDef::FromExports(
                                x.iter()
                                    .map(|x| (x.name.to_string(), x.kind, x.index))
                                    .collect(),
                            ),
                        });
                    }
                }
                Payload::ComponentAliasSection(r) => {
                    for a in r {
                        match a.map_err(e)? {
                            ComponentAlias::InstanceExport {
                                kind,
                                instance_index,
                                name,
                            } => match kind {
                                ComponentExternalKind::Func => {
                                    let of =
                                        comp_insts.get(instance_index as usize).cloned().flatten();
                                    comp_funcs.push(match of {
                                        Some(i) => CompFunc::Import(i, name.to_string()),
                                        None => CompFunc::Other,
                                    });
                                }
                                ComponentExternalKind::Type => types += 1,
                                ComponentExternalKind::Instance => {
                                    comp_insts.push(None);
                                    comp_inst_exports.push(HashMap::new());
                                }
                                _ => return Err("an alias of a module or component".into()),
                            },
                            ComponentAlias::CoreInstanceExport {
                                kind,
                                instance_index,
                                name,
                            } => {
                                let item = (instance_index, name.to_string());
                                match kind {
                                    ExternalKind::Func => {
                                        funcs.push(CoreFuncDef::Alias(item.0, item.1))
                                    }
                                    ExternalKind::Table => tables.push(item),
                                    ExternalKind::Memory => memories.push(item),
                                    ExternalKind::Global => globals.push(item),
                                    _ => return Err("an alias of a core tag".into()),
                                }
                            }
                            ComponentAlias::Outer { kind, .. } => match kind {
                                ComponentOuterAliasKind::Type => types += 1,
                                ComponentOuterAliasKind::CoreType => {}
                                _ => return Err("an outer alias of a module or component".into()),
                            },
                        }
                    }
                }
                Payload::ComponentCanonicalSection(r) => {
                    for c in r {
                        match c.map_err(e)? {
                            CanonicalFunction::Lift {
                                core_func_index,
                                options,
                                ..
                            } => {
                                let o = options_of(&options)?;
                                let func = core_alias(&funcs, core_func_index)?;
                                let post = o.post.map(|p| core_alias(&funcs, p)).transpose()?;
                                lift_opts.push((func.0, o.memory, o.realloc));
                                if let Some(p) = &post {
                                    lift_opts.push((p.0, o.memory, o.realloc));
                                }
                                comp_funcs.push(CompFunc::Lift(Lift {
                                    func: func.1,
                                    post: post.map(|p| p.1),
                                }));
                            }
                            CanonicalFunction::Lower {
                                func_index,
                                options,
                            } => {
                                let o = options_of(&options)?;
                                let Some(CompFunc::Import(iface, name)) =
                                    comp_funcs.get(func_index as usize)
                                else {
                                    return Err("it lowers a function that is not an import".into());
                                };
                                let h = host_fn(iface, name).ok_or_else(|| {
                                    format!("the fast path lacks the import {iface}.{name}")
                                })?;
                                lower_opts.push((o.memory, o.realloc));
                                funcs.push(CoreFuncDef::Lower(h));
                            }
                            CanonicalFunction::ResourceNew { resource } => {
                                funcs.push(CoreFuncDef::ResourceNew(resource))
                            }
                            CanonicalFunction::ResourceDrop { resource } => {
                                funcs.push(CoreFuncDef::ResourceDrop(resource))
                            }
                            CanonicalFunction::ResourceRep { resource } => {
                                funcs.push(CoreFuncDef::ResourceRep(resource))
                            }
                            other => return Err(format!("it uses {other:?}")),
                        }
                    }
                }
                Payload::ComponentInstanceSection(r) => {
                    for i in r {
                        let mut map = HashMap::new();
                        match i.map_err(e)? {
                            CInstance::Instantiate {
                                component_index,
                                args,
                            } => {
                                let shim = components
                                    .get(component_index as usize)
                                    .ok_or("instance of an unknown component")?;
                                for a in args.iter() {
                                    if a.kind != ComponentExternalKind::Func {
                                        continue;
                                    }
                                    for (export, import) in shim {
                                        if import == a.name {
                                            map.insert(export.clone(), a.index);
                                        }
                                    }
                                }
                            }
                            CInstance::FromExports(x) => {
                                for x in x.iter() {
                                    if x.kind == ComponentExternalKind::Func {
                                        map.insert(x.name.name.to_string(), x.index);
                                    }
                                }
                            }
                        }
                        comp_insts.push(None);
                        comp_inst_exports.push(map);
                    }
                }
                Payload::ComponentExportSection(r) => {
                    for x in r {
                        let x = x.map_err(e)?;
                        match x.kind {
                            ComponentExternalKind::Instance => {
                                exported.push((x.name.name.to_string(), x.index));
                                let m = comp_inst_exports
                                    .get(x.index as usize)
                                    .cloned()
                                    .unwrap_or_default();
                                comp_insts.push(None);
                                comp_inst_exports.push(m);
                            }
                            ComponentExternalKind::Type => types += 1,
                            ComponentExternalKind::Func => comp_funcs.push(CompFunc::Other),
                            _ => return Err("it exports a module or component".into()),
                        }
                    }
                }
                Payload::ComponentStartSection { .. } => return Err("it has a start".into()),
                _ => return Err("it has a section the fast path does not know".into()),
            }
        }
        // Every lift and lower must use one memory and one realloc, both of
        // one core instance (the main module's).
        let mut mem_ref: Option<(u32, String)> = None;
        let mut realloc_ref: Option<(u32, String)> = None;
        let mut main: Option<u32> = None;
        let opts = lift_opts
            .iter()
            .map(|(_, m, r)| (*m, *r))
            .chain(lower_opts.iter().copied());
        for (m, r) in opts {
            if let Some(m) = m {
                let mm = memories
                    .get(m as usize)
                    .cloned()
                    .ok_or("bad memory index")?;
                if mem_ref.get_or_insert_with(|| mm.clone()) != &mm {
                    return Err("more than one memory".into());
                }
            }
            if let Some(r) = r {
                let rr = core_alias(&funcs, r)?;
                if realloc_ref.get_or_insert_with(|| rr.clone()) != &rr {
                    return Err("more than one realloc".into());
                }
            }
        }
        for (inst, _, _) in &lift_opts {
            if main.get_or_insert(*inst) != inst {
                return Err("lifts from more than one core instance".into());
            }
        }
        let main = main.ok_or("it lifts nothing")?;
        let (mem_inst, memory) = mem_ref.ok_or("it uses no memory")?;
        if mem_inst != main || realloc_ref.as_ref().is_some_and(|r| r.0 != main) {
            return Err("its memory or realloc is not the main module's".into());
        }
        if modules.len() > 4 {
            // The store's limiter allows 4 instances.
            return Err("more than 4 core modules".into());
        }
        let mut lifts = HashMap::new();
        for (name, idx) in &exported {
            let Some(m) = comp_inst_exports.get(*idx as usize) else {
                continue;
            };
            for (f, ci) in m {
                if let Some(CompFunc::Lift(l)) = comp_funcs.get(*ci as usize) {
                    lifts.insert((name.clone(), f.clone()), l.clone());
                }
            }
        }
        Ok(CorePlan {
            modules,
            instances,
            funcs,
            tables,
            memories,
            globals,
            main,
            memory,
            realloc: realloc_ref.map(|r| r.1),
            lifts,
            dtors,
            adapter: std::sync::OnceLock::new(),
        })
    }

    /// Whether (interface, function) is lifted from the main instance.
    pub fn has(&self, iface: &str, func: &str) -> bool {
        self.lifts
            .contains_key(&(iface.to_string(), func.to_string()))
    }

    /// Instantiates the core modules in `store` and looks up `exports`
    /// ((interface, function, signature) per VMOD export index) and the
    /// lifecycle functions.
    pub fn instantiate(
        &self,
        store: &mut Store<VmodData>,
        lifecycle: &str,
        exports: &[(String, String, CoreSig)],
    ) -> R<CoreInst> {
        let mut insts: Vec<Inst> = Vec::with_capacity(self.instances.len());
        let mut func_cache: Vec<Option<Func>> = vec![None; self.funcs.len()];
        for def in &self.instances {
            let inst = match def {
                CoreInstDef::Instantiate { module, args } => {
                    let m = self
                        .modules
                        .get(*module as usize)
                        .ok_or_else(|| wasmtime::Error::msg("bad module index"))?;
                    let mut imports = Vec::new();
                    for imp in m.imports() {
                        let (_, from) = args
                            .iter()
                            .find(|(n, _)| n == imp.module())
                            .ok_or_else(|| wasmtime::Error::msg("import not provided"))?;
                        let ext = match insts.get(*from as usize) {
                            Some(Inst::Real(i)) => i.get_export(&mut *store, imp.name()),
                            Some(Inst::Bag(b)) => b.get(imp.name()).cloned(),
                            None => None,
                        }
                        .ok_or_else(|| {
                            wasmtime::Error::msg(format!(
                                "import {}.{} not found",
                                imp.module(),
                                imp.name()
                            ))
                        })?;
                        imports.push(ext);
                    }
                    Inst::Real(wasmtime::Instance::new(&mut *store, m, &imports)?)
                }
                CoreInstDef::FromExports(items) => {
                    let mut bag = HashMap::new();
                    for (name, kind, idx) in items {
                        let ext = match kind {
                            ExternalKind::Func => {
                                Extern::Func(self.func(store, &insts, &mut func_cache, *idx)?)
                            }
                            ExternalKind::Table => {
                                alias(store, &insts, self.tables.get(*idx as usize))?
                            }
                            ExternalKind::Memory => {
                                alias(store, &insts, self.memories.get(*idx as usize))?
                            }
                            ExternalKind::Global => {
                                alias(store, &insts, self.globals.get(*idx as usize))?
                            }
                            _ => return Err(wasmtime::Error::msg("a core tag export")),
                        };
                        bag.insert(name.clone(), ext);
                    }
                    Inst::Bag(bag)
                }
            };
            insts.push(inst);
            // Once the main module exists, imports may use its memory.
            if insts.len() == self.main as usize + 1 {
                self.set_ctx(store, &insts)?;
            }
        }
        let Some(Inst::Real(main)) = insts.get(self.main as usize) else {
            return Err(wasmtime::Error::msg("no main instance"));
        };
        let main = *main;
        let get = |store: &mut Store<VmodData>, iface: &str, f: &str| -> R<(Func, Option<Func>)> {
            let l = self
                .lifts
                .get(&(iface.to_string(), f.to_string()))
                .ok_or_else(|| wasmtime::Error::msg(format!("{f} is not lifted")))?;
            let func = main
                .get_func(&mut *store, &l.func)
                .ok_or_else(|| wasmtime::Error::msg(format!("{} missing", l.func)))?;
            let post = match &l.post {
                Some(p) => Some(
                    main.get_func(&mut *store, p)
                        .ok_or_else(|| wasmtime::Error::msg(format!("{p} missing")))?,
                ),
                None => None,
            };
            Ok((func, post))
        };
        let (ev, ev_post) = get(store, lifecycle, "on-event")?;
        let (end, _) = get(store, lifecycle, "end-task")?;
        let mut fns = Vec::with_capacity(exports.len());
        for (iface, f, sig) in exports {
            let (func, post) = get(store, iface, f)?;
            fns.push(CoreFn::new(store, func, post, sig.clone())?);
        }
        let (memory, realloc) = store
            .data()
            .core
            .as_ref()
            .map(|c| (c.memory, c.realloc.clone()))
            .ok_or_else(|| wasmtime::Error::msg("no memory"))?;
        let (fused, stage) = match &realloc {
            Some(r) => self.fuse(store, memory, r, &fns)?,
            None => (Vec::new(), 0),
        };
        Ok(CoreInst {
            memory,
            realloc,
            fused,
            stage,
            on_event: ev.typed(&*store)?,
            on_event_post: ev_post.map(|p| p.typed(&*store)).transpose()?,
            end_task: end.typed(&*store)?,
            fns,
            objects: HashMap::new(),
        })
    }

    /// Instantiates the fused adapter over `fns` (those of a shape it
    /// takes) and allocates its stage: per export, the adapter's function.
    /// Nothing fused (and a stage of 0) when no export has such a shape.
    fn fuse(
        &self,
        store: &mut Store<VmodData>,
        memory: Memory,
        realloc: &TypedFunc<(i32, i32, i32, i32), i32>,
        fns: &[CoreFn],
    ) -> R<(Vec<Option<AdapterFn>>, u32)> {
        let shapes: Vec<(usize, adapter::Shape)> = fns
            .iter()
            .enumerate()
            .filter_map(|(k, f)| Some((k, f.shape()?)))
            .collect();
        if shapes.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let module = self.adapter.get_or_init(|| {
            let list: Vec<adapter::Shape> = shapes.iter().map(|(_, s)| *s).collect();
            Module::new(store.engine(), adapter::module(&list))
                .inspect_err(|e| tracing::debug!("no fused adapter: {e:#}"))
                .ok()
        });
        let Some(module) = module else {
            return Ok((Vec::new(), 0));
        };
        let mut imports: Vec<Extern> = vec![memory.into(), (*realloc.func()).into()];
        for (k, s) in &shapes {
            let f = &fns[*k];
            imports.push(f.func.into());
            if s.post {
                let p = f
                    .post
                    .ok_or_else(|| wasmtime::Error::msg("no post-return"))?;
                imports.push(p.into());
            }
        }
        let inst = wasmtime::Instance::new(&mut *store, module, &imports)?;
        let mut fused = vec![None; fns.len()];
        for (n, (k, _)) in shapes.iter().enumerate() {
            fused[*k] = Some(inst.get_typed_func(&mut *store, &n.to_string())?);
        }
        // Permanent (allocated before `load`, so below the task arena).
        let stage = realloc.call(&mut *store, (0, 0, 8, adapter::STAGE as i32))?;
        let end = (stage as u32 as usize).saturating_add(adapter::STAGE as usize);
        if stage == 0 || end > memory.data_size(&*store) {
            return Err(wasmtime::Error::msg("realloc return: beyond end of memory"));
        }
        Ok((fused, stage as u32))
    }

    fn set_ctx(&self, store: &mut Store<VmodData>, insts: &[Inst]) -> R<()> {
        let Some(Inst::Real(main)) = insts.get(self.main as usize) else {
            return Err(wasmtime::Error::msg("the main instance is not a module"));
        };
        let memory = main
            .get_memory(&mut *store, &self.memory)
            .ok_or_else(|| wasmtime::Error::msg("no memory export"))?;
        let realloc = match &self.realloc {
            Some(r) => Some(main.get_typed_func::<(i32, i32, i32, i32), i32>(&mut *store, r)?),
            None => None,
        };
        store.data_mut().core = Some(CoreCtx {
            memory,
            realloc,
            handles: Vec::new(),
        });
        Ok(())
    }

    fn func(
        &self,
        store: &mut Store<VmodData>,
        insts: &[Inst],
        cache: &mut [Option<Func>],
        idx: u32,
    ) -> R<Func> {
        if let Some(Some(f)) = cache.get(idx as usize) {
            return Ok(*f);
        }
        let def = self
            .funcs
            .get(idx as usize)
            .ok_or_else(|| wasmtime::Error::msg("bad core func index"))?;
        let f = match def {
            CoreFuncDef::Alias(i, name) => match insts.get(*i as usize) {
                Some(Inst::Real(inst)) => inst.get_func(&mut *store, name),
                Some(Inst::Bag(b)) => b.get(name).and_then(|e| e.clone().into_func()),
                None => None,
            }
            .ok_or_else(|| wasmtime::Error::msg(format!("core func {name} not found")))?,
            CoreFuncDef::Lower(h) => lower(store, *h),
            CoreFuncDef::ResourceNew(ty) => {
                let ty = *ty;
                Func::wrap(
                    &mut *store,
                    move |mut c: Caller<'_, VmodData>, rep: i32| -> R<i32> {
                        let ctx = ctx_mut(&mut c)?;
                        let h = match ctx.handles.iter().position(Option::is_none) {
                            Some(i) => i,
                            None => {
                                ctx.handles.push(None);
                                ctx.handles.len() - 1
                            }
                        };
                        if let Some(slot) = ctx.handles.get_mut(h) {
                            *slot = Some((ty, rep));
                        }
                        Ok(i32::try_from(h + 1)?)
                    },
                )
            }
            CoreFuncDef::ResourceRep(ty) => {
                let ty = *ty;
                Func::wrap(
                    &mut *store,
                    move |mut c: Caller<'_, VmodData>, h: i32| -> R<i32> {
                        let ctx = ctx_mut(&mut c)?;
                        handle(ctx, ty, h, false)
                    },
                )
            }
            CoreFuncDef::ResourceDrop(ty) => {
                let ty = *ty;
                let dtor = match self.dtors.get(&ty).copied().flatten() {
                    Some(d) => Some(self.func(store, insts, cache, d)?),
                    None => None,
                };
                Func::wrap(
                    &mut *store,
                    move |mut c: Caller<'_, VmodData>, h: i32| -> R<()> {
                        let rep = handle(ctx_mut(&mut c)?, ty, h, true)?;
                        if let Some(d) = dtor {
                            d.typed::<i32, ()>(&c)?.call(&mut c, rep)?;
                        }
                        Ok(())
                    },
                )
            }
        };
        if let Some(slot) = cache.get_mut(idx as usize) {
            *slot = Some(f);
        }
        Ok(f)
    }
}

enum Inst {
    Real(wasmtime::Instance),
    Bag(HashMap<String, Extern>),
}

fn alias(store: &mut Store<VmodData>, insts: &[Inst], item: Option<&(u32, String)>) -> R<Extern> {
    let (i, name) = item.ok_or_else(|| wasmtime::Error::msg("bad core item index"))?;
    match insts.get(*i as usize) {
        Some(Inst::Real(inst)) => inst.get_export(&mut *store, name),
        Some(Inst::Bag(b)) => b.get(name).cloned(),
        None => None,
    }
    .ok_or_else(|| wasmtime::Error::msg(format!("core export {name} not found")))
}

struct Opts {
    memory: Option<u32>,
    realloc: Option<u32>,
    post: Option<u32>,
}

fn options_of(o: &[CanonicalOption]) -> Result<Opts, String> {
    let mut out = Opts {
        memory: None,
        realloc: None,
        post: None,
    };
    for o in o {
        match o {
            CanonicalOption::UTF8 => {}
            CanonicalOption::Memory(m) => out.memory = Some(*m),
            CanonicalOption::Realloc(r) => out.realloc = Some(*r),
            CanonicalOption::PostReturn(p) => out.post = Some(*p),
            other => return Err(format!("canonical option {other:?}")),
        }
    }
    Ok(out)
}

fn core_alias(funcs: &[CoreFuncDef], idx: u32) -> Result<(u32, String), String> {
    match funcs.get(idx as usize) {
        Some(CoreFuncDef::Alias(i, n)) => Ok((*i, n.clone())),
        _ => Err("a lifted function is not a core export".into()),
    }
}

/// Per-store state of a core-run VMOD: its memory and allocator (for the
/// imports' lowering) and its resource handle table.
pub struct CoreCtx {
    memory: Memory,
    realloc: Option<TypedFunc<(i32, i32, i32, i32), i32>>,
    /// Handle `i + 1` → (resource type, representation).
    handles: Vec<Option<(u32, i32)>>,
}

fn ctx_mut<'a>(c: &'a mut Caller<'_, VmodData>) -> R<&'a mut CoreCtx> {
    c.data_mut()
        .core
        .as_mut()
        .ok_or_else(|| wasmtime::Error::msg("no core context"))
}

fn handle(ctx: &mut CoreCtx, ty: u32, h: i32, take: bool) -> R<i32> {
    let slot = usize::try_from(h)
        .ok()
        .and_then(|h| h.checked_sub(1))
        .and_then(|i| ctx.handles.get_mut(i));
    match slot {
        Some(s @ Some(_)) if s.is_some_and(|(t, _)| t == ty) => {
            let rep = s.map_or(0, |(_, r)| r);
            if take {
                *s = None;
            }
            Ok(rep)
        }
        _ => Err(wasmtime::Error::msg(format!("unknown handle index {h}"))),
    }
}

// ---- guest memory helpers (the canonical ABI by hand) ----

fn bytes_at(data: &[u8], ptr: u32, len: u32) -> R<&[u8]> {
    let (p, l) = (ptr as usize, len as usize);
    p.checked_add(l)
        .and_then(|end| data.get(p..end))
        .ok_or_else(|| wasmtime::Error::msg("string pointer/length out of bounds of memory"))
}

fn u32_at(data: &[u8], at: usize) -> R<u32> {
    let b = data
        .get(at..at.saturating_add(4))
        .ok_or_else(|| wasmtime::Error::msg("pointer out of bounds of memory"))?;
    let mut v = [0u8; 4];
    v.copy_from_slice(b);
    Ok(u32::from_le_bytes(v))
}

/// Checks that a return area of `size` bytes at `ptr` is aligned to
/// `align` and within memory.
fn area(data: &[u8], ptr: i32, size: usize, align: usize) -> R<usize> {
    let p = ptr as u32 as usize;
    if !p.is_multiple_of(align) {
        return Err(wasmtime::Error::msg("pointer not aligned"));
    }
    if p.checked_add(size).is_none_or(|end| end > data.len()) {
        return Err(wasmtime::Error::msg("pointer out of bounds of memory"));
    }
    Ok(p)
}

/// A string argument of an import.
fn read_str(c: &Caller<'_, VmodData>, ptr: i32, len: i32) -> R<String> {
    let mem = c
        .data()
        .core
        .as_ref()
        .map(|x| x.memory)
        .ok_or_else(|| wasmtime::Error::msg("no memory"))?;
    let b = bytes_at(mem.data(c), ptr as u32, len as u32)?;
    Ok(crate::vrt::utf8(b)
        .map_err(|e| wasmtime::Error::msg(format!("invalid utf-8: {e}")))?
        .to_string())
}

/// A `list<string>` argument of an import: `len` (ptr, len) pairs at `ptr`.
fn read_list(c: &Caller<'_, VmodData>, ptr: i32, len: i32) -> R<Vec<String>> {
    let mem = c
        .data()
        .core
        .as_ref()
        .map(|x| x.memory)
        .ok_or_else(|| wasmtime::Error::msg("no memory"))?;
    let data = mem.data(c);
    let n = len as u32 as usize;
    let at = area(data, ptr, n.saturating_mul(8), 4)?;
    let mut out = Vec::with_capacity(n.min(1024));
    for i in 0..n {
        let (p, l) = (u32_at(data, at + i * 8)?, u32_at(data, at + i * 8 + 4)?);
        let b = bytes_at(data, p, l)?;
        out.push(
            crate::vrt::utf8(b)
                .map_err(|e| wasmtime::Error::msg(format!("invalid utf-8: {e}")))?
                .to_string(),
        );
    }
    Ok(out)
}

fn write(c: &mut Caller<'_, VmodData>, at: usize, bytes: &[u8]) -> R<()> {
    let mem = c
        .data()
        .core
        .as_ref()
        .map(|x| x.memory)
        .ok_or_else(|| wasmtime::Error::msg("no memory"))?;
    mem.data_mut(&mut *c)
        .get_mut(at..at.saturating_add(bytes.len()))
        .ok_or_else(|| wasmtime::Error::msg("pointer out of bounds of memory"))?
        .copy_from_slice(bytes);
    Ok(())
}

/// Lowers `s` into guest memory through its `cabi_realloc`.
fn lower_str(c: &mut Caller<'_, VmodData>, s: &str) -> R<(u32, u32)> {
    let realloc = c
        .data()
        .core
        .as_ref()
        .and_then(|x| x.realloc.clone())
        .ok_or_else(|| wasmtime::Error::msg("no realloc"))?;
    let len = i32::try_from(s.len())?;
    let ptr = realloc.call(&mut *c, (0, 0, 1, len))? as u32;
    write(c, ptr as usize, s.as_bytes())?;
    Ok((ptr, len as u32))
}

/// The return area of an import: checked, then written.
fn ret_area(c: &Caller<'_, VmodData>, ptr: i32, size: usize, align: usize) -> R<usize> {
    let mem = c
        .data()
        .core
        .as_ref()
        .map(|x| x.memory)
        .ok_or_else(|| wasmtime::Error::msg("no memory"))?;
    area(mem.data(c), ptr, size, align)
}

/// Writes `option<string>` / `result<_, string>`-shaped values: a
/// discriminant byte, then (for `Some(s)`) the string at offset 4.
fn ret_disc_str(c: &mut Caller<'_, VmodData>, ret: i32, disc: u8, s: Option<&str>) -> R<()> {
    let at = ret_area(c, ret, 12, 4)?;
    let (p, l) = match s {
        Some(s) => lower_str(c, s)?,
        None => (0, 0),
    };
    write(c, at, &[disc])?;
    if s.is_some() {
        write(c, at + 4, &p.to_le_bytes())?;
        write(c, at + 8, &l.to_le_bytes())?;
    }
    Ok(())
}

fn ret_str(c: &mut Caller<'_, VmodData>, ret: i32, s: &str) -> R<()> {
    let at = ret_area(c, ret, 8, 4)?;
    let (p, l) = lower_str(c, s)?;
    write(c, at, &p.to_le_bytes())?;
    write(c, at + 4, &l.to_le_bytes())
}

fn ret_unit_or_str(c: &mut Caller<'_, VmodData>, ret: i32, r: Result<(), String>) -> R<()> {
    match r {
        Ok(()) => ret_disc_str(c, ret, 0, None),
        Err(m) => ret_disc_str(c, ret, 1, Some(&m)),
    }
}

/// The `http` enum's discriminant, as the component path reads it.
fn http(part: i32) -> R<Http> {
    crate::cache_vmod::http_of(part).map_err(wasmtime::Error::msg)
}

fn opt_f64(disc: i32, v: f64) -> R<Option<f64>> {
    match disc {
        0 => Ok(None),
        1 => Ok(Some(v)),
        _ => Err(wasmtime::Error::msg("invalid option discriminant")),
    }
}

type C<'a> = Caller<'a, VmodData>;

/// A host import as a core function of its flattened signature, calling
/// the same `Host` implementation the component path's bindings call.
fn lower(store: &mut Store<VmodData>, h: HostFn) -> Func {
    let s = &mut *store;
    match h {
        HostFn::GetHeader => {
            Func::wrap(s, |mut c: C<'_>, part: i32, np: i32, nl: i32, ret: i32| {
                let (part, name) = (http(part)?, read_str(&c, np, nl)?);
                match c.data_mut().get_header(part, name) {
                    Some(v) => ret_disc_str(&mut c, ret, 1, Some(&v)),
                    None => ret_disc_str(&mut c, ret, 0, None),
                }
            })
        }
        HostFn::SetHeader | HostFn::AddHeader => Func::wrap(
            s,
            move |mut c: C<'_>, part: i32, np: i32, nl: i32, vp: i32, vl: i32, ret: i32| {
                let (part, name) = (http(part)?, read_str(&c, np, nl)?);
                let value = read_str(&c, vp, vl)?;
                let r = if h == HostFn::SetHeader {
                    c.data_mut().set_header(part, name, value)
                } else {
                    c.data_mut().add_header(part, name, value)
                };
                ret_unit_or_str(&mut c, ret, r)
            },
        ),
        HostFn::UnsetHeader => {
            Func::wrap(s, |mut c: C<'_>, part: i32, np: i32, nl: i32, ret: i32| {
                let (part, name) = (http(part)?, read_str(&c, np, nl)?);
                let r = c.data_mut().unset_header(part, name);
                ret_unit_or_str(&mut c, ret, r)
            })
        }
        HostFn::Method | HostFn::Url | HostFn::ClientIp | HostFn::Subroutine => {
            Func::wrap(s, move |mut c: C<'_>, ret: i32| {
                let d = c.data_mut();
                let v = match h {
                    HostFn::Method => d.method(),
                    HostFn::Url => d.url(),
                    HostFn::ClientIp => d.client_ip(),
                    _ => d.subroutine(),
                };
                ret_str(&mut c, ret, &v)
            })
        }
        HostFn::Xid => Func::wrap(s, |mut c: C<'_>| c.data_mut().xid() as i64),
        HostFn::WorkspaceFree => Func::wrap(s, |mut c: C<'_>| c.data_mut().workspace_free() as i64),
        HostFn::Log | HostFn::Error => {
            Func::wrap(s, move |mut c: C<'_>, p: i32, l: i32| -> R<()> {
                let m = read_str(&c, p, l)?;
                if h == HostFn::Log {
                    c.data_mut().log(m);
                } else {
                    c.data_mut().error(m);
                }
                Ok(())
            })
        }
        HostFn::Now => Func::wrap(s, |mut c: C<'_>| c.data_mut().now()),
        HostFn::Random => Func::wrap(s, |mut c: C<'_>| c.data_mut().random() as i64),
        HostFn::RegexMatch => Func::wrap(
            s,
            |mut c: C<'_>, pp: i32, pl: i32, sp: i32, sl: i32, ret: i32| -> R<()> {
                let (p, subj) = (read_str(&c, pp, pl)?, read_str(&c, sp, sl)?);
                let r = c.data_mut().regex_match(p, subj);
                match r {
                    Ok(b) => {
                        let at = ret_area(&c, ret, 12, 4)?;
                        write(&mut c, at, &[0])?;
                        write(&mut c, at + 4, &[u8::from(b)])
                    }
                    Err(m) => ret_disc_str(&mut c, ret, 1, Some(&m)),
                }
            },
        ),
        HostFn::SharedGet => Func::wrap(s, |mut c: C<'_>, kp: i32, kl: i32, ret: i32| {
            let k = read_str(&c, kp, kl)?;
            match c.data_mut().get(k) {
                Some(v) => ret_disc_str(&mut c, ret, 1, Some(&v)),
                None => ret_disc_str(&mut c, ret, 0, None),
            }
        }),
        HostFn::SharedSet => Func::wrap(
            s,
            |mut c: C<'_>, kp: i32, kl: i32, vp: i32, vl: i32, td: i32, tv: f64| -> R<()> {
                let (k, v) = (read_str(&c, kp, kl)?, read_str(&c, vp, vl)?);
                let ttl = opt_f64(td, tv)?;
                c.data_mut().set(k, v, ttl);
                Ok(())
            },
        ),
        HostFn::SharedIncr => Func::wrap(
            s,
            |mut c: C<'_>, kp: i32, kl: i32, delta: i64, td: i32, tv: f64| -> R<i64> {
                let k = read_str(&c, kp, kl)?;
                let ttl = opt_f64(td, tv)?;
                Ok(c.data_mut().incr(k, delta, ttl))
            },
        ),
        HostFn::SharedSwap => Func::wrap(
            s,
            |mut c: C<'_>,
             kp: i32,
             kl: i32,
             ed: i32,
             ep: i32,
             el: i32,
             vp: i32,
             vl: i32,
             td: i32,
             tv: f64|
             -> R<i32> {
                let k = read_str(&c, kp, kl)?;
                let expected = match ed {
                    0 => None,
                    1 => Some(read_str(&c, ep, el)?),
                    _ => return Err(wasmtime::Error::msg("invalid option discriminant")),
                };
                let v = read_str(&c, vp, vl)?;
                let ttl = opt_f64(td, tv)?;
                Ok(i32::from(c.data_mut().swap(k, expected, v, ttl)))
            },
        ),
        HostFn::SharedDelete => Func::wrap(s, |mut c: C<'_>, kp: i32, kl: i32| -> R<i32> {
            let k = read_str(&c, kp, kl)?;
            Ok(i32::from(c.data_mut().delete(k)))
        }),
        HostFn::SharedTtl => Func::wrap(s, |mut c: C<'_>, kp: i32, kl: i32, ret: i32| -> R<()> {
            let k = read_str(&c, kp, kl)?;
            let t = c.data_mut().ttl(k);
            let at = ret_area(&c, ret, 16, 8)?;
            match t {
                Some(x) => {
                    write(&mut c, at, &[1])?;
                    write(&mut c, at + 8, &x.to_le_bytes())
                }
                None => write(&mut c, at, &[0]),
            }
        }),
        HostFn::AddTags => Func::wrap(s, |mut c: C<'_>, p: i32, l: i32, ret: i32| -> R<()> {
            let tags = read_list(&c, p, l)?;
            let r = c.data_mut().add_tags(tags);
            ret_unit_or_str(&mut c, ret, r)
        }),
        HostFn::PurgeTags => Func::wrap(s, |mut c: C<'_>, p: i32, l: i32, soft: i32| -> R<i32> {
            let tags = read_list(&c, p, l)?;
            Ok(c.data_mut().purge_tags(tags, soft != 0) as i32)
        }),
        HostFn::Ban => Func::wrap(s, |mut c: C<'_>, p: i32, l: i32, ret: i32| -> R<()> {
            let e = read_str(&c, p, l)?;
            let r = c.data_mut().ban(e);
            ret_unit_or_str(&mut c, ret, r)
        }),
    }
}

// ---- calling exports ----

/// An argument of an export call.
#[derive(Clone, Copy, Debug)]
pub enum CoreArg<'a> {
    Str(&'a str),
    S64(i64),
    F64(f64),
    Bool(bool),
    OptF64(Option<f64>),
    OptBool(Option<bool>),
}

/// A lifted result; strings stay in guest memory as (ptr, len), bounds
/// checked (UTF-8 is checked when read, as wasmtime's `WasmStr` does).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CoreOut {
    Void,
    Str(Option<(u32, u32)>),
    S64(i64),
    F64(f64),
    Bool(bool),
    /// `result<_, string>`: `Err` carries the message's span.
    UnitOrStr(Result<(), (u32, u32)>),
    /// `result<option<string>, string>`.
    OptStrOrStr(Result<Option<(u32, u32)>, (u32, u32)>),
    /// A constructor's object: its representation.
    Own(i32),
}

/// The typed core function for the commonest shapes.
enum Typed {
    V0(TypedFunc<(), ()>),
    R0(TypedFunc<(), i32>),
    V1(TypedFunc<(i32, i32), ()>),
    R1(TypedFunc<(i32, i32), i32>),
    V2(TypedFunc<(i32, i32, i32, i32), ()>),
    R2(TypedFunc<(i32, i32, i32, i32), i32>),
    M1(TypedFunc<(i32, i32, i32), i32>),
}

/// One export, ready to call.
pub struct CoreFn {
    func: Func,
    typed: Option<Typed>,
    post: Option<Func>,
    post_i32: Option<TypedFunc<i32, ()>>,
    sig: CoreSig,
}

impl CoreFn {
    /// The fused adapter's shape for this export, if it takes it.
    fn shape(&self) -> Option<adapter::Shape> {
        let s = &self.sig;
        if s.method || s.params.len() > 2 || s.params.iter().any(|p| *p != PKind::Str) {
            return None;
        }
        let ret = match s.result {
            RKind::Void if self.post.is_none() => adapter::Ret::Void,
            RKind::Str => adapter::Ret::Str,
            RKind::OptStr => adapter::Ret::OptStr,
            _ => return None,
        };
        if self.post.is_some() && self.post_i32.is_none() {
            return None;
        }
        Some(adapter::Shape {
            args: s.params.len() as u8,
            ret,
            post: self.post.is_some(),
        })
    }

    fn new(store: &mut Store<VmodData>, func: Func, post: Option<Func>, sig: CoreSig) -> R<CoreFn> {
        if sig.flat_params() > 16 {
            return Err(wasmtime::Error::msg("too many parameters"));
        }
        let strs = sig.params.iter().all(|p| *p == PKind::Str);
        let ret_ptr = matches!(
            sig.result,
            RKind::Str | RKind::OptStr | RKind::UnitOrStr | RKind::OptStrOrStr
        );
        let st = &*store;
        let typed = match (sig.method, strs, sig.params.len(), sig.result) {
            (false, true, 0, RKind::Void) => Some(Typed::V0(func.typed(st)?)),
            (false, true, 1, RKind::Void) => Some(Typed::V1(func.typed(st)?)),
            (false, true, 2, RKind::Void) => Some(Typed::V2(func.typed(st)?)),
            (false, true, 0, _) if ret_ptr => Some(Typed::R0(func.typed(st)?)),
            (false, true, 1, _) if ret_ptr => Some(Typed::R1(func.typed(st)?)),
            (false, true, 2, _) if ret_ptr => Some(Typed::R2(func.typed(st)?)),
            (true, true, 1, _) if ret_ptr => Some(Typed::M1(func.typed(st)?)),
            _ => None,
        };
        let post_i32 = match (&post, ret_ptr) {
            (Some(p), true) => Some(p.typed(st)?),
            _ => None,
        };
        Ok(CoreFn {
            func,
            typed,
            post,
            post_i32,
            sig,
        })
    }
}

/// A function of the fused adapter: `(stage, len0, len1) -> status`.
type AdapterFn = TypedFunc<(i32, i32, i32), i32>;

/// A VMOD's core instances as one: what a call needs.
pub struct CoreInst {
    memory: Memory,
    /// Kept here too: a `TypedFunc` is not `Copy`, and cloning one per call
    /// (out of the store's data) costs a type-registry reference count.
    realloc: Option<TypedFunc<(i32, i32, i32, i32), i32>>,
    /// Per export, its function in the fused adapter (see
    /// `cache_vmod_adapter`), and the adapter's stage in guest memory.
    fused: Vec<Option<AdapterFn>>,
    stage: u32,
    on_event: TypedFunc<i32, i32>,
    on_event_post: Option<TypedFunc<i32, ()>>,
    end_task: TypedFunc<(), ()>,
    fns: Vec<CoreFn>,
    /// VCL objects (`new x = …`): `ObjectId` → representation.
    pub objects: HashMap<u32, i32>,
}

impl CoreInst {
    /// The bytes of a string result, UTF-8 checked.
    pub fn str<'s>(&self, store: &'s Store<VmodData>, span: (u32, u32)) -> R<&'s str> {
        let b = bytes_at(self.memory.data(store), span.0, span.1)?;
        crate::vrt::utf8(b).map_err(|e| wasmtime::Error::msg(format!("invalid utf-8: {e}")))
    }

    /// `lifecycle.on-event(ev)`: `Err` is the guest's message.
    pub fn on_event(&self, store: &mut Store<VmodData>, ev: i32) -> R<Result<(), String>> {
        let ret = self.on_event.call(&mut *store, ev)?;
        let out = lift(self.memory.data(&*store), RKind::UnitOrStr, ret)?;
        if let Some(p) = &self.on_event_post {
            p.call(&mut *store, ret)?;
        }
        Ok(match out {
            CoreOut::UnitOrStr(Err(span)) => Err(self.str(store, span)?.to_string()),
            _ => Ok(()),
        })
    }

    /// `lifecycle.end-task()`.
    pub fn end_task(&self, store: &mut Store<VmodData>) -> R<()> {
        self.end_task.call(store, ())
    }

    /// Calls export `idx` (a method on representation `rep`) with `args`.
    pub fn call(
        &self,
        store: &mut Store<VmodData>,
        idx: usize,
        rep: Option<i32>,
        args: &[CoreArg<'_>],
    ) -> R<CoreOut> {
        let f = self
            .fns
            .get(idx)
            .ok_or_else(|| wasmtime::Error::msg("bad export index"))?;
        let s = |i: usize| -> R<&str> {
            match args.get(i) {
                Some(CoreArg::Str(s)) => Ok(s),
                None => Ok(""),
                _ => Err(wasmtime::Error::msg("argument type")),
            }
        };
        if let Some(Some(a)) = self.fused.get(idx) {
            let (a0, a1) = match f.sig.params.len() {
                0 => ("", ""),
                1 => (s(0)?, ""),
                _ => (s(0)?, s(1)?),
            };
            if a0.len() + a1.len() <= (adapter::STAGE - adapter::DATA) as usize {
                return self.call_fused(store, f, a, a0, a1);
            }
        }
        if let Some(t) = &f.typed {
            let ret = match t {
                Typed::V0(t) => t.call(&mut *store, ()).map(|()| 0)?,
                Typed::R0(t) => t.call(&mut *store, ())?,
                Typed::V1(t) => {
                    let a = self.lower_arg(store, s(0)?)?;
                    t.call(&mut *store, a).map(|()| 0)?
                }
                Typed::R1(t) => {
                    let a = self.lower_arg(store, s(0)?)?;
                    t.call(&mut *store, a)?
                }
                Typed::V2(t) => {
                    let a = self.lower_arg(store, s(0)?)?;
                    let b = self.lower_arg(store, s(1)?)?;
                    t.call(&mut *store, (a.0, a.1, b.0, b.1)).map(|()| 0)?
                }
                Typed::R2(t) => {
                    let a = self.lower_arg(store, s(0)?)?;
                    let b = self.lower_arg(store, s(1)?)?;
                    t.call(&mut *store, (a.0, a.1, b.0, b.1))?
                }
                Typed::M1(t) => {
                    let r = rep.ok_or_else(|| wasmtime::Error::msg("no object"))?;
                    let a = self.lower_arg(store, s(0)?)?;
                    t.call(&mut *store, (r, a.0, a.1))?
                }
            };
            return self.lift_and_post(store, f, ret);
        }
        self.call_dynamic(store, f, rep, args)
    }

    /// Lifts `f`'s flat result `ret`, then runs its post-return (the
    /// result's strings stay valid for the arena's allocator).
    fn lift_and_post(&self, store: &mut Store<VmodData>, f: &CoreFn, ret: i32) -> R<CoreOut> {
        let out = lift(self.memory.data(&*store), f.sig.result, ret)?;
        match (&f.post_i32, f.post) {
            (Some(p), _) => p.call(&mut *store, ret)?,
            (None, Some(p)) => p.call(&mut *store, &[], &mut [])?,
            (None, None) => {}
        }
        Ok(out)
    }

    /// A call through the fused adapter: the arguments go into the stage,
    /// the result comes back in it (or, on its slow path, as before).
    fn call_fused(
        &self,
        store: &mut Store<VmodData>,
        f: &CoreFn,
        adapter_fn: &AdapterFn,
        a0: &str,
        a1: &str,
    ) -> R<CoreOut> {
        let at = (self.stage + adapter::DATA) as usize;
        let data = self.memory.data_mut(&mut *store);
        let dst = data
            .get_mut(at..at + a0.len() + a1.len())
            .ok_or_else(|| wasmtime::Error::msg("stage beyond end of memory"))?;
        let (d0, d1) = dst.split_at_mut(a0.len());
        d0.copy_from_slice(a0.as_bytes());
        d1.copy_from_slice(a1.as_bytes());
        // (Lengths fit the stage, hence i32.)
        let status = adapter_fn.call(
            &mut *store,
            (self.stage as i32, a0.len() as i32, a1.len() as i32),
        )?;
        let data = self.memory.data(&*store);
        match status {
            adapter::NONE if f.sig.result == RKind::Void => Ok(CoreOut::Void),
            adapter::NONE => Ok(CoreOut::Str(None)),
            adapter::SOME => {
                let len = u32_at(data, self.stage as usize)?;
                Ok(CoreOut::Str(Some((self.stage + adapter::DATA, len))))
            }
            adapter::SLOW => {
                let ret = u32_at(data, self.stage as usize + 4)? as i32;
                self.lift_and_post(store, f, ret)
            }
            _ => Err(wasmtime::Error::msg("adapter: unexpected status")),
        }
    }

    /// Any other supported signature, through `Func::call`.
    fn call_dynamic(
        &self,
        store: &mut Store<VmodData>,
        f: &CoreFn,
        rep: Option<i32>,
        args: &[CoreArg<'_>],
    ) -> R<CoreOut> {
        use wasmtime::Val;
        let mut params: Vec<Val> = Vec::with_capacity(f.sig.flat_params());
        if f.sig.method {
            params.push(Val::I32(
                rep.ok_or_else(|| wasmtime::Error::msg("no object"))?,
            ));
        }
        for (i, k) in f.sig.params.iter().enumerate() {
            match (k, args.get(i)) {
                (PKind::Str, a) => {
                    let s = match a {
                        Some(CoreArg::Str(s)) => s,
                        _ => "",
                    };
                    let (p, l) = self.lower_arg(store, s)?;
                    params.push(Val::I32(p));
                    params.push(Val::I32(l));
                }
                (PKind::S64, Some(CoreArg::S64(n))) => params.push(Val::I64(*n)),
                (PKind::S64, None) => params.push(Val::I64(0)),
                (PKind::F64, Some(CoreArg::F64(x))) => params.push(Val::F64(x.to_bits())),
                (PKind::Bool, Some(CoreArg::Bool(b))) => params.push(Val::I32(i32::from(*b))),
                (PKind::OptF64, Some(CoreArg::OptF64(x))) => {
                    params.push(Val::I32(i32::from(x.is_some())));
                    params.push(Val::F64(x.unwrap_or(0.0).to_bits()));
                }
                (PKind::OptBool, Some(CoreArg::OptBool(b))) => {
                    params.push(Val::I32(i32::from(b.is_some())));
                    params.push(Val::I32(i32::from(b.unwrap_or(false))));
                }
                _ => return Err(wasmtime::Error::msg("argument type")),
            }
        }
        let mut results = match f.sig.result {
            RKind::Void => vec![],
            RKind::S64 => vec![Val::I64(0)],
            RKind::F64 => vec![Val::F64(0)],
            _ => vec![Val::I32(0)],
        };
        f.func.call(&mut *store, &params, &mut results)?;
        let data = self.memory.data(&*store);
        let out = match (f.sig.result, results.first()) {
            (RKind::Void, _) => CoreOut::Void,
            (RKind::S64, Some(Val::I64(n))) => CoreOut::S64(*n),
            (RKind::F64, Some(Val::F64(x))) => CoreOut::F64(f64::from_bits(*x)),
            (RKind::Own, Some(Val::I32(h))) => {
                // Lifting `own` takes the handle out of the table.
                let ctx = store
                    .data_mut()
                    .core
                    .as_mut()
                    .ok_or_else(|| wasmtime::Error::msg("no core context"))?;
                let ty = ctx
                    .handles
                    .get(usize::try_from(*h).unwrap_or(0).wrapping_sub(1))
                    .copied()
                    .flatten()
                    .map_or(u32::MAX, |(t, _)| t);
                CoreOut::Own(handle(ctx, ty, *h, true)?)
            }
            (k, Some(Val::I32(r))) => lift(data, k, *r)?,
            _ => return Err(wasmtime::Error::msg("unexpected core result")),
        };
        if let Some(p) = f.post {
            p.call(&mut *store, &results, &mut [])?;
        }
        Ok(out)
    }
}

impl CoreInst {
    /// Writes a string argument into guest memory (`cabi_realloc(0, 0, 1,
    /// len)`, as wasmtime's lowering does).
    fn lower_arg(&self, store: &mut Store<VmodData>, s: &str) -> R<(i32, i32)> {
        let realloc = self
            .realloc
            .as_ref()
            .ok_or_else(|| wasmtime::Error::msg("no realloc"))?;
        let len = i32::try_from(s.len()).map_err(|_| wasmtime::Error::msg("string too long"))?;
        let ptr = realloc.call(&mut *store, (0, 0, 1, len))?;
        self.memory
            .data_mut(&mut *store)
            .get_mut(ptr as u32 as usize..)
            .and_then(|m| m.get_mut(..s.len()))
            .ok_or_else(|| wasmtime::Error::msg("realloc return: beyond end of memory"))?
            .copy_from_slice(s.as_bytes());
        Ok((ptr, len))
    }
}

/// Lifts the flat result `ret` of kind `k`.
fn lift(data: &[u8], k: RKind, ret: i32) -> R<CoreOut> {
    Ok(match k {
        RKind::Void => CoreOut::Void,
        RKind::Bool => CoreOut::Bool(ret != 0),
        RKind::Str => {
            let at = area(data, ret, 8, 4)?;
            let span = (u32_at(data, at)?, u32_at(data, at + 4)?);
            bytes_at(data, span.0, span.1)?;
            CoreOut::Str(Some(span))
        }
        RKind::OptStr | RKind::UnitOrStr => {
            let at = area(data, ret, 12, 4)?;
            let disc = data.get(at).copied().unwrap_or(0);
            let span = || -> R<(u32, u32)> {
                let s = (u32_at(data, at + 4)?, u32_at(data, at + 8)?);
                bytes_at(data, s.0, s.1)?;
                Ok(s)
            };
            match (k, disc) {
                (RKind::OptStr, 0) => CoreOut::Str(None),
                (RKind::OptStr, 1) => CoreOut::Str(Some(span()?)),
                (_, 0) => CoreOut::UnitOrStr(Ok(())),
                (_, 1) => CoreOut::UnitOrStr(Err(span()?)),
                _ => return Err(wasmtime::Error::msg("invalid variant discriminant")),
            }
        }
        RKind::OptStrOrStr => {
            // result<option<string>, string>: the case at 0, its payload
            // at 4 (an option: its case at 4, the string at 8).
            let at = area(data, ret, 16, 4)?;
            let byte = |o: usize| data.get(at + o).copied().unwrap_or(0);
            let span = |o: usize| -> R<(u32, u32)> {
                let s = (u32_at(data, at + o)?, u32_at(data, at + o + 4)?);
                bytes_at(data, s.0, s.1)?;
                Ok(s)
            };
            CoreOut::OptStrOrStr(match (byte(0), byte(4)) {
                (0, 0) => Ok(None),
                (0, 1) => Ok(Some(span(8)?)),
                (1, _) => Err(span(4)?),
                _ => return Err(wasmtime::Error::msg("invalid variant discriminant")),
            })
        }
        RKind::S64 | RKind::F64 | RKind::Own => {
            return Err(wasmtime::Error::msg("unexpected core result"))
        }
    })
}
