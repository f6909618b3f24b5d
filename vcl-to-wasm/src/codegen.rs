//! The code generator: a checked program ([`tir::Program`]) to a core wasm
//! module that speaks the interface declared in [`crate::abi`].
//!
//! Layout of the work:
//! - [`data`]: the memory layout and the pool of deduplicated constants;
//! - [`func`]: a function body under construction (instructions, locals);
//! - [`runtime`]: small helper functions every module carries (workspace
//!   allocation, INT formatting, string comparison and copying), so that
//!   what a few wasm instructions can do never costs a host call;
//! - [`expr`] and [`stmt`]: lowering of expressions and statements;
//! - [`native`]: calls of host-native VMOD functions through argument slots.
//!
//! Function index space: the imports ([`abi::IMPORTS`], in order), then the
//! runtime helpers ([`runtime::Helper`]), then one function per
//! subroutine in [`tir::Program::subs`] order.

mod data;
mod expr;
mod func;
mod native;
mod runtime;
mod stmt;

use crate::abi::{self, Import, ValType};
use crate::tir::{self, Metadata, NativeFn};
use std::collections::{BTreeSet, HashMap};
use wasm_encoder::{
    CodeSection, ConstExpr, CustomSection, DataSection, ExportKind, ExportSection, Function,
    FunctionSection, GlobalSection, GlobalType, ImportSection, MemorySection, MemoryType, Module,
    NameMap, NameSection, TypeSection,
};

/// Why code generation failed. The input is a checked program, so these
/// mean a bug in the checker (or a construct not supported yet), never a
/// user error that needs a source position.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    /// A construct the generator does not handle.
    #[error("code generation: unsupported: {0}")]
    Unsupported(String),
    /// The program breaks an invariant the checker promises.
    #[error("code generation: invalid program: {0}")]
    Invalid(String),
    /// The generated module failed validation (a generator bug).
    #[error("code generation: module does not validate: {0}")]
    Validation(String),
    #[error("code generation: {0}")]
    Meta(#[from] abi::MetaError),
    /// `to_wat` could not print the module.
    #[error("cannot print module: {0}")]
    Print(String),
}

pub(crate) type Result<T> = std::result::Result<T, CodegenError>;

/// Global indices (all `i32`).
const G_WS_START: u32 = 0;
const G_HEAP_BASE: u32 = 1;
const G_ABI_VERSION: u32 = 2;

/// State shared by all functions of one module.
pub(crate) struct Ctx {
    pub(crate) pool: data::Pool,
    /// `Metadata::natives` as built so far, and its index.
    pub(crate) natives: Vec<NativeFn>,
    native_index: HashMap<NativeFn, u32>,
    /// Address of the native-call scratch area (return slot first).
    pub(crate) scratch: u32,
    /// Slots in the scratch area (return slot included).
    pub(crate) slots: u32,
    /// Number of subroutines (valid `SubId`s are below this).
    pub(crate) nsubs: u32,
    /// Subroutines passed as SUB values: exported for call-back.
    pub(crate) sub_refs: BTreeSet<u32>,
}

impl Ctx {
    /// The `native_call` index of a host-native function.
    pub(crate) fn native(&mut self, f: &NativeFn) -> Result<i32> {
        if let Some(&i) = self.native_index.get(f) {
            return i32::try_from(i).map_err(|_| too_many("native functions"));
        }
        let i = u32::try_from(self.natives.len()).map_err(|_| too_many("native functions"))?;
        self.natives.push(f.clone());
        self.native_index.insert(f.clone(), i);
        i32::try_from(i).map_err(|_| too_many("native functions"))
    }

    /// The function index of subroutine `id`.
    pub(crate) fn sub_func(&self, id: u32) -> Result<u32> {
        if id >= self.nsubs {
            return Err(CodegenError::Invalid(format!(
                "call of unknown subroutine {id}"
            )));
        }
        Ok(first_sub_func() + id)
    }
}

pub(crate) fn too_many(what: &str) -> CodegenError {
    CodegenError::Unsupported(format!("too many {what}"))
}

fn first_sub_func() -> u32 {
    abi::IMPORTS.len() as u32 + runtime::Helper::ALL.len() as u32
}

fn enc_val(t: ValType) -> wasm_encoder::ValType {
    match t {
        ValType::I32 => wasm_encoder::ValType::I32,
        ValType::I64 => wasm_encoder::ValType::I64,
        ValType::F64 => wasm_encoder::ValType::F64,
    }
}

/// Deduplicated function types.
#[derive(Default)]
struct Types {
    list: Vec<(Vec<ValType>, Vec<ValType>)>,
    index: HashMap<(Vec<ValType>, Vec<ValType>), u32>,
}

impl Types {
    fn get(&mut self, params: &[ValType], results: &[ValType]) -> u32 {
        let key = (params.to_vec(), results.to_vec());
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = self.list.len() as u32;
        self.list.push(key.clone());
        self.index.insert(key, i);
        i
    }

    fn section(&self) -> TypeSection {
        let mut s = TypeSection::new();
        for (p, r) in &self.list {
            s.ty().function(
                p.iter().copied().map(enc_val),
                r.iter().copied().map(enc_val),
            );
        }
        s
    }
}

/// Compiles a checked program to a validated wasm module. Returns the
/// module and the metadata it embeds (the program's, with `natives`
/// filled in).
pub fn generate(program: &tir::Program) -> Result<(Vec<u8>, Metadata)> {
    let nsubs = u32::try_from(program.subs.len()).map_err(|_| too_many("subroutines"))?;
    // Argument slots needed by the largest native call decide where the
    // constants start, so they are counted before any code is emitted.
    let max_args = native::max_native_args(program);
    let nslots = if max_args > 0 || native::has_native_calls(program) {
        u32::try_from(max_args)
            .ok()
            .and_then(|n| n.checked_add(1))
            .ok_or_else(|| too_many("native call arguments"))?
    } else {
        0
    };
    let scratch = abi::RESERVED_LOW;
    let data_base = nslots
        .checked_mul(abi::SLOT_SIZE)
        .and_then(|n| n.checked_add(scratch))
        .ok_or_else(|| too_many("native call arguments"))?;

    let mut cx = Ctx {
        pool: data::Pool::new(data_base),
        natives: program.meta.natives.clone(),
        native_index: HashMap::new(),
        scratch,
        slots: nslots,
        nsubs,
        sub_refs: BTreeSet::new(),
    };
    for (i, f) in cx.natives.iter().enumerate() {
        cx.native_index.entry(f.clone()).or_insert(i as u32);
    }

    let mut types = Types::default();
    let mut imports = ImportSection::new();
    for d in abi::IMPORTS {
        let t = types.get(d.params, d.results);
        imports.import(abi::MODULE, d.name, wasm_encoder::EntityType::Function(t));
    }

    let mut functions = FunctionSection::new();
    let mut code = CodeSection::new();
    let mut names = NameMap::new();
    for imp in Import::ALL {
        names.append(imp.func_index(), imp.desc().name);
    }
    for h in runtime::Helper::ALL {
        let (params, results) = h.signature();
        functions.function(types.get(params, results));
        let f = runtime::build(h);
        code.function(&f);
        names.append(h.func_index(), h.name());
    }
    let sub_type = types.get(&[], &[ValType::I32]);
    let mut exports = ExportSection::new();
    let mut exported = HashMap::new();
    for (i, sub) in program.subs.iter().enumerate() {
        let f: Function = stmt::lower_sub(&mut cx, sub)?;
        functions.function(sub_type);
        code.function(&f);
        let idx = first_sub_func() + i as u32;
        names.append(idx, &sub.name);
        if let Some(m) = sub.method {
            let name = m.sub_name();
            if exported.insert(name, i).is_some() {
                return Err(CodegenError::Invalid(format!(
                    "two subroutines implement {name}"
                )));
            }
            exports.export(name, ExportKind::Func, idx);
        }
    }
    for &id in &cx.sub_refs {
        exports.export(
            &abi::sub_export_name(id),
            ExportKind::Func,
            cx.sub_func(id)?,
        );
    }

    // Memory: constants, then the workspace.
    let data_end = cx.pool.end()?;
    let heap_base = data_end
        .checked_add(7)
        .map(|n| n & !7)
        .ok_or_else(|| too_many("constants"))?;
    let ws_end = heap_base
        .checked_add(abi::DEFAULT_WORKSPACE)
        .ok_or_else(|| too_many("constants"))?;
    let pages = u64::from(ws_end).div_ceil(65536);
    let mut memory = MemorySection::new();
    memory.memory(MemoryType {
        minimum: pages,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    let mut globals = GlobalSection::new();
    let as_i32 = |v: u32| -> Result<i32> { i32::try_from(v).map_err(|_| too_many("constants")) };
    for (value, mutable) in [(heap_base, true), (heap_base, false)] {
        globals.global(
            GlobalType {
                val_type: wasm_encoder::ValType::I32,
                mutable,
                shared: false,
            },
            &ConstExpr::i32_const(as_i32(value)?),
        );
    }
    globals.global(
        GlobalType {
            val_type: wasm_encoder::ValType::I32,
            mutable: false,
            shared: false,
        },
        &ConstExpr::i32_const(abi::ABI_VERSION),
    );
    exports.export(abi::EXPORT_MEMORY, ExportKind::Memory, 0);
    for (name, g) in [
        (abi::GLOBAL_WS_START, G_WS_START),
        (abi::GLOBAL_HEAP_BASE, G_HEAP_BASE),
        (abi::GLOBAL_ABI_VERSION, G_ABI_VERSION),
    ] {
        exports.export(name, ExportKind::Global, g);
    }

    let mut data = DataSection::new();
    // The workspace cells (`ws_ptr`, `ws_end`) start out describing the
    // default workspace.
    let cells: Vec<u8> = heap_base
        .to_le_bytes()
        .into_iter()
        .chain(ws_end.to_le_bytes())
        .collect();
    data.active(0, &ConstExpr::i32_const(as_i32(abi::WS_PTR_ADDR)?), cells);
    let bytes = cx.pool.bytes();
    if !bytes.is_empty() {
        data.active(
            0,
            &ConstExpr::i32_const(as_i32(data_base)?),
            bytes.iter().copied(),
        );
    }

    let mut meta = program.meta.clone();
    meta.natives = std::mem::take(&mut cx.natives);
    let meta_json = abi::encode_metadata(&meta)?;
    let mut name_section = NameSection::new();
    name_section.functions(&names);

    let mut module = Module::new();
    module
        .section(&types.section())
        .section(&imports)
        .section(&functions)
        .section(&memory)
        .section(&globals)
        .section(&exports)
        .section(&code)
        .section(&data)
        .section(&name_section)
        .section(&CustomSection {
            name: abi::META_SECTION.into(),
            data: meta_json.into(),
        });
    let wasm = module.finish();
    validate(&wasm)?;
    Ok((wasm, meta))
}

/// Validates a module with the wasm 2.0 feature set (multi-value, bulk
/// memory, mutable globals, …) — what the host's wasmtime accepts.
pub fn validate(wasm: &[u8]) -> Result<()> {
    let mut v = wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::WASM2);
    v.validate_all(wasm)
        .map(|_| ())
        .map_err(|e| CodegenError::Validation(e.to_string()))
}

/// The module in the wasm text format, for debugging and tests.
pub fn to_wat(wasm: &[u8]) -> Result<String> {
    wasmprinter::print_bytes(wasm).map_err(|e| CodegenError::Print(e.to_string()))
}
