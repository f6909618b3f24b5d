//! The fused adapter of the VMOD core fast path: one small core module per
//! VMOD, instantiated next to the VMOD's own modules, that makes a string
//! call one entry into wasm instead of three.
//!
//! Done by hand, a call to `f(string) -> string` enters wasm three times:
//! `cabi_realloc` for the argument, `f`, and `f`'s post-return, and each
//! entry costs wasmtime's host-to-wasm transition (trap handler, thread
//! state) — about 200 instructions, more than the rest of the call. The
//! component model's own answer is an adapter: wasm code that does the
//! lowering and lifting on the wasm side. This is that, for the shapes
//! string functions have:
//!
//! ```text
//! call_k(stage, len0, len1) -> status
//!   p0 = cabi_realloc(0, 0, 1, len0); copy stage[16..][..len0] to p0   (and arg 1)
//!   r = f_k(p0, len0, …)
//!   the result's string is copied to stage[16..], its length to stage[0]
//!   post_k(r)
//! ```
//!
//! `stage` is a buffer of [`STAGE`] bytes the host allocated in the VMOD's
//! memory (with its `cabi_realloc`, when the instance was made, so it
//! belongs to the instance's permanent memory, below the task arena). The
//! canonical ABI's steps all happen, in its order; only the copy of the
//! result moves before post-return, which is where the component model
//! reads it too. Whatever is not the plain case (a misaligned return area,
//! a string out of bounds or longer than the stage, a bad discriminant)
//! returns [`SLOW`] with `r` at `stage[4]`, without post-return: the host
//! then lifts `r` as before (with its precise errors) and calls
//! post-return itself.

use wasm_encoder::{
    CodeSection, EntityType, ExportKind, ExportSection, Function, FunctionSection, ImportSection,
    MemArg, MemoryType, Module, TypeSection, ValType,
};

/// The staging buffer's size in guest memory.
pub const STAGE: u32 = 4096;
/// Where the bytes start in the stage (the header before them: the result's
/// length at 0, the slow path's return pointer at 4).
pub const DATA: u32 = 16;
/// Status: no string (a `void` function, or `none`).
pub const NONE: i32 = 0;
/// Status: the result's string is in the stage.
pub const SOME: i32 = 1;
/// Status: the host lifts the result at `stage[4]` and calls post-return.
pub const SLOW: i32 = 3;

/// The result shapes the adapter lifts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ret {
    Void,
    /// `string`: (ptr, len) at the return area.
    Str,
    /// `option<string>`: the case byte, then (ptr, len) at 4.
    OptStr,
}

/// One fused export: `args` string arguments (0–2), its result, and
/// whether it has a post-return function (`(i32) -> ()`; only for a
/// result other than `Void`, whose post-return would take no argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub args: u8,
    pub ret: Ret,
    pub post: bool,
}

/// The adapter's imports, in order: `("m", "memory")`, `("m", "realloc")`,
/// then per shape `("f", "K")` and, with `post`, `("p", "K")`. Its exports:
/// `"K"`, each `(stage, len0, len1) -> status`.
pub fn module(shapes: &[Shape]) -> Vec<u8> {
    let mut types = TypeSection::new();
    // 0: realloc; 1: the adapter; 2: post; 3..: each shape's function.
    types.ty().function([ValType::I32; 4], [ValType::I32]);
    types.ty().function([ValType::I32; 3], [ValType::I32]);
    types.ty().function([ValType::I32], []);
    for s in shapes {
        let params = vec![ValType::I32; 2 * usize::from(s.args)];
        let results: &[ValType] = match s.ret {
            Ret::Void => &[],
            Ret::Str | Ret::OptStr => &[ValType::I32],
        };
        types.ty().function(params, results.iter().copied());
    }
    let mut imports = ImportSection::new();
    imports.import(
        "m",
        "memory",
        EntityType::Memory(MemoryType {
            minimum: 0,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        }),
    );
    imports.import("m", "realloc", EntityType::Function(0));
    let mut next = 1u32;
    let mut callee = Vec::with_capacity(shapes.len());
    for (k, s) in shapes.iter().enumerate() {
        let name = k.to_string();
        imports.import("f", &name, EntityType::Function(3 + k as u32));
        let f = next;
        next += 1;
        let post = if s.post {
            imports.import("p", &name, EntityType::Function(2));
            next += 1;
            Some(next - 1)
        } else {
            None
        };
        callee.push((f, post));
    }
    let mut funcs = FunctionSection::new();
    let mut exports = ExportSection::new();
    let mut code = CodeSection::new();
    for (k, (s, (f, post))) in shapes.iter().zip(&callee).enumerate() {
        funcs.function(1);
        exports.export(&k.to_string(), ExportKind::Func, next + k as u32);
        code.function(&body(s, *f, *post));
    }
    let mut m = Module::new();
    m.section(&types)
        .section(&imports)
        .section(&funcs)
        .section(&exports)
        .section(&code);
    m.finish()
}

// Parameters and locals of an adapter function.
const STAGE_AT: u32 = 0;
const LEN0: u32 = 1;
const LEN1: u32 = 2;
const P0: u32 = 3;
const P1: u32 = 4;
const R: u32 = 5;
const SP: u32 = 6;
const SL: u32 = 7;
const REALLOC: u32 = 0;

fn mem(offset: u64, align: u32) -> MemArg {
    MemArg {
        offset,
        align,
        memory_index: 0,
    }
}

fn body(s: &Shape, f: u32, post: Option<u32>) -> Function {
    let mut func = Function::new([(5, ValType::I32)]);
    let mut i = func.instructions();
    // Lower each argument: realloc, then copy it out of the stage.
    for (n, (len, p)) in [(LEN0, P0), (LEN1, P1)]
        .into_iter()
        .take(usize::from(s.args))
        .enumerate()
    {
        i.i32_const(0)
            .i32_const(0)
            .i32_const(1)
            .local_get(len)
            .call(REALLOC)
            .local_tee(p)
            .local_get(STAGE_AT)
            .i32_const(DATA as i32)
            .i32_add();
        if n == 1 {
            i.local_get(LEN0).i32_add();
        }
        i.local_get(len).memory_copy(0, 0);
    }
    for (len, p) in [(LEN0, P0), (LEN1, P1)]
        .into_iter()
        .take(usize::from(s.args))
    {
        i.local_get(p).local_get(len);
    }
    i.call(f);
    let area = match s.ret {
        Ret::Void => {
            // (A `void` function with a post-return is not fused: see
            // `Shape::post`.)
            i.i32_const(NONE).end();
            return func;
        }
        Ret::Str => 8,
        Ret::OptStr => 12,
    };
    i.local_set(R);
    // block $slow: every check that fails branches out to the slow tail.
    i.block(wasm_encoder::BlockType::Empty);
    // The return area: aligned to 4 and inside memory.
    i.local_get(R).i32_const(3).i32_and().br_if(0);
    in_bounds(&mut i, |i| {
        i.local_get(R).i64_extend_i32_u().i64_const(area);
    });
    if s.ret == Ret::OptStr {
        // `none`: post-return, done. A case other than 0 or 1: slow.
        i.local_get(R)
            .i32_load8_u(mem(0, 0))
            .i32_eqz()
            .if_(wasm_encoder::BlockType::Empty);
        if let Some(p) = post {
            i.local_get(R).call(p);
        }
        i.i32_const(NONE).return_().end();
        i.local_get(R)
            .i32_load8_u(mem(0, 0))
            .i32_const(1)
            .i32_ne()
            .br_if(0);
    }
    let at = if s.ret == Ret::OptStr { 4 } else { 0 };
    i.local_get(R)
        .i32_load(mem(at, 2))
        .local_set(SP)
        .local_get(R)
        .i32_load(mem(at + 4, 2))
        .local_set(SL);
    // The string: no longer than the stage holds, inside memory.
    i.local_get(SL)
        .i32_const((STAGE - DATA) as i32)
        .i32_gt_u()
        .br_if(0);
    in_bounds(&mut i, |i| {
        i.local_get(SP)
            .i64_extend_i32_u()
            .local_get(SL)
            .i64_extend_i32_u();
    });
    // Copy it into the stage, its length to stage[0]; post-return; done.
    i.local_get(STAGE_AT)
        .i32_const(DATA as i32)
        .i32_add()
        .local_get(SP)
        .local_get(SL)
        .memory_copy(0, 0)
        .local_get(STAGE_AT)
        .local_get(SL)
        .i32_store(mem(0, 2));
    if let Some(p) = post {
        i.local_get(R).call(p);
    }
    i.i32_const(SOME).return_();
    i.end();
    // Slow: the host lifts `r` and calls post-return.
    i.local_get(STAGE_AT)
        .local_get(R)
        .i32_store(mem(4, 2))
        .i32_const(SLOW)
        .end();
    func
}

/// Branches to the enclosing block unless start + len (both pushed as i64
/// by `push`) ≤ the memory's size in bytes.
fn in_bounds(
    i: &mut wasm_encoder::InstructionSink<'_>,
    push: impl FnOnce(&mut wasm_encoder::InstructionSink<'_>),
) {
    push(i);
    i.i64_add()
        .memory_size(0)
        .i64_extend_i32_u()
        .i64_const(16)
        .i64_shl()
        .i64_gt_u()
        .br_if(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_validates() {
        let mut shapes = Vec::new();
        for args in 0..=2 {
            for ret in [Ret::Void, Ret::Str, Ret::OptStr] {
                for post in [false, true] {
                    if ret == Ret::Void && post {
                        continue;
                    }
                    shapes.push(Shape { args, ret, post });
                }
            }
        }
        let bytes = module(&shapes);
        wasmparser::Validator::new()
            .validate_all(&bytes)
            .unwrap_or_else(|e| panic!("invalid adapter: {e}"));
    }
}
