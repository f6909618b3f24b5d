//! Helper functions every module carries. Each replaces what would
//! otherwise be a host call or a long inline sequence: the workspace bump
//! allocator (Varnish's `WS_Alloc`), INT formatting (`%jd`), and string
//! equality, ordering (`VRT_strcmp`) and copying.

use super::func::{mem, mem8, FuncBuilder};
use crate::abi::{self, Import, ValType};
use wasm_encoder::{BlockType, Function, Instruction as I};

/// The helpers, in function-index order after the imports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Helper {
    /// `ws_alloc(n: i64) -> i32`: `n` bytes from the workspace, or a call
    /// of the `ws_overflow` import (which does not return).
    WsAlloc,
    /// `int_to_string(v: i64) -> str`: decimal, like `%jd`, in the workspace.
    IntToString,
    /// `str_eq(a: str, b: str) -> i32`: 1 when both are non-NULL and equal
    /// (so a NULL operand makes `==` false and `!=` true, as `VRT_strcmp`).
    StrEq,
    /// `str_cmp(a: str, b: str) -> i32`: `VRT_strcmp`: 1 when either is
    /// NULL, else the sign of the bytewise (unsigned) comparison.
    StrCmp,
    /// `str_copy(dst: i32, s: str) -> i32`: copy `s` to `dst`, return the
    /// byte after it (NULL copies nothing).
    StrCopy,
}

impl Helper {
    pub(crate) const ALL: [Helper; 5] = [
        Helper::WsAlloc,
        Helper::IntToString,
        Helper::StrEq,
        Helper::StrCmp,
        Helper::StrCopy,
    ];

    pub(crate) fn func_index(self) -> u32 {
        Import::ALL.len() as u32 + self as u32
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Helper::WsAlloc => "ws_alloc",
            Helper::IntToString => "int_to_string",
            Helper::StrEq => "str_eq",
            Helper::StrCmp => "str_cmp",
            Helper::StrCopy => "str_copy",
        }
    }

    pub(crate) fn signature(self) -> (&'static [ValType], &'static [ValType]) {
        use ValType::{I32, I64};
        match self {
            Helper::WsAlloc => (&[I64], &[I32]),
            Helper::IntToString => (&[I64], &[I64]),
            Helper::StrEq | Helper::StrCmp => (&[I64, I64], &[I32]),
            Helper::StrCopy => (&[I32, I64], &[I32]),
        }
    }
}

/// Instructions that turn a packed string on the stack into its pointer.
pub(crate) const PTR: [I<'static>; 3] = [I::I64Const(32), I::I64ShrU, I::I32WrapI64];

pub(crate) fn build(h: Helper) -> Function {
    let nparams = h.signature().0.len() as u32;
    let mut f = FuncBuilder::new(nparams);
    match h {
        Helper::WsAlloc => ws_alloc(&mut f),
        Helper::IntToString => int_to_string(&mut f),
        Helper::StrEq => str_eq(&mut f),
        Helper::StrCmp => str_cmp(&mut f),
        Helper::StrCopy => str_copy(&mut f),
    }
    f.finish()
}

fn ws_alloc(f: &mut FuncBuilder) {
    let n = 0;
    let p = f.local(ValType::I32);
    f.emit_all([
        // if (u64)ws_ptr + n > (u64)ws_end: overflow. In i64 nothing wraps,
        // and a ws_ptr beyond ws_end (a host mistake) also overflows.
        I::I32Const(0),
        I::I32Load(mem(abi::WS_PTR_ADDR, 2)),
        I::LocalTee(p),
        I::I64ExtendI32U,
        I::LocalGet(n),
        I::I64Add,
        I::I32Const(0),
        I::I32Load(mem(abi::WS_END_ADDR, 2)),
        I::I64ExtendI32U,
        I::I64GtU,
        I::If(BlockType::Empty),
        I::Call(Import::WsOverflow.func_index()),
        I::Unreachable,
        I::End,
        I::I32Const(0),
        I::LocalGet(p),
        I::LocalGet(n),
        I::I32WrapI64,
        I::I32Add,
        I::I32Store(mem(abi::WS_PTR_ADDR, 2)),
        I::LocalGet(p),
    ]);
}

fn int_to_string(f: &mut FuncBuilder) {
    let v = 0;
    let u = f.local(ValType::I64);
    let t = f.local(ValType::I64);
    let len = f.local(ValType::I32);
    let p = f.local(ValType::I32);
    let q = f.local(ValType::I32);
    f.emit_all([
        // len = (v < 0) for the sign; u = |v| as unsigned (MIN stays 2^63).
        I::LocalGet(v),
        I::I64Const(0),
        I::I64LtS,
        I::LocalSet(len),
        I::LocalGet(v),
        I::I64Const(0),
        I::LocalGet(v),
        I::I64Sub,
        I::LocalGet(v),
        I::I64Const(0),
        I::I64GeS,
        I::Select,
        I::LocalTee(u),
        I::LocalSet(t),
        // Count the digits.
        I::Loop(BlockType::Empty),
        I::LocalGet(len),
        I::I32Const(1),
        I::I32Add,
        I::LocalSet(len),
        I::LocalGet(t),
        I::I64Const(10),
        I::I64DivU,
        I::LocalTee(t),
        I::I64Const(0),
        I::I64Ne,
        I::BrIf(0),
        I::End,
        // Allocate exactly, then write the digits from the end.
        I::LocalGet(len),
        I::I64ExtendI32U,
        I::Call(Helper::WsAlloc.func_index()),
        I::LocalTee(p),
        I::LocalGet(len),
        I::I32Add,
        I::LocalSet(q),
        I::LocalGet(v),
        I::I64Const(0),
        I::I64LtS,
        I::If(BlockType::Empty),
        I::LocalGet(p),
        I::I32Const(i32::from(b'-')),
        I::I32Store8(mem8(0)),
        I::End,
        I::Loop(BlockType::Empty),
        I::LocalGet(q),
        I::I32Const(1),
        I::I32Sub,
        I::LocalTee(q),
        I::LocalGet(u),
        I::I64Const(10),
        I::I64RemU,
        I::I32WrapI64,
        I::I32Const(i32::from(b'0')),
        I::I32Add,
        I::I32Store8(mem8(0)),
        I::LocalGet(u),
        I::I64Const(10),
        I::I64DivU,
        I::LocalTee(u),
        I::I64Const(0),
        I::I64Ne,
        I::BrIf(0),
        I::End,
        // pack(p, len)
        I::LocalGet(p),
        I::I64ExtendI32U,
        I::I64Const(32),
        I::I64Shl,
        I::LocalGet(len),
        I::I64ExtendI32U,
        I::I64Or,
    ]);
}

/// Emits: return `value` if either parameter string is NULL.
fn null_check(f: &mut FuncBuilder, value: i32) {
    f.emit_all([
        I::LocalGet(0),
        I::I64Eqz,
        I::LocalGet(1),
        I::I64Eqz,
        I::I32Or,
        I::If(BlockType::Empty),
        I::I32Const(value),
        I::Return,
        I::End,
    ]);
}

/// Emits: `pa`/`pb` = pointers of the two parameter strings.
fn pointers(f: &mut FuncBuilder, pa: u32, pb: u32) {
    f.emit(I::LocalGet(0));
    f.emit_all(PTR);
    f.emit(I::LocalSet(pa));
    f.emit(I::LocalGet(1));
    f.emit_all(PTR);
    f.emit(I::LocalSet(pb));
}

/// Emits `local += k` for an i32 local.
fn bump(f: &mut FuncBuilder, local: u32, k: i32) {
    f.emit_all([
        I::LocalGet(local),
        I::I32Const(k),
        I::I32Add,
        I::LocalSet(local),
    ]);
}

fn str_eq(f: &mut FuncBuilder) {
    let n = f.local(ValType::I32);
    let pa = f.local(ValType::I32);
    let pb = f.local(ValType::I32);
    null_check(f, 0);
    f.emit_all([
        // Same pointer and length: equal without looking.
        I::LocalGet(0),
        I::LocalGet(1),
        I::I64Eq,
        I::If(BlockType::Empty),
        I::I32Const(1),
        I::Return,
        I::End,
        // Different lengths: not equal.
        I::LocalGet(0),
        I::I32WrapI64,
        I::LocalTee(n),
        I::LocalGet(1),
        I::I32WrapI64,
        I::I32Ne,
        I::If(BlockType::Empty),
        I::I32Const(0),
        I::Return,
        I::End,
    ]);
    pointers(f, pa, pb);
    // Eight bytes at a time, then the tail.
    f.emit_all([
        I::Block(BlockType::Empty),
        I::Loop(BlockType::Empty),
        I::LocalGet(n),
        I::I32Const(8),
        I::I32LtU,
        I::BrIf(1),
        I::LocalGet(pa),
        I::I64Load(mem(0, 0)),
        I::LocalGet(pb),
        I::I64Load(mem(0, 0)),
        I::I64Ne,
        I::If(BlockType::Empty),
        I::I32Const(0),
        I::Return,
        I::End,
    ]);
    bump(f, pa, 8);
    bump(f, pb, 8);
    bump(f, n, -8);
    f.emit_all([
        I::Br(0),
        I::End,
        I::End,
        I::Block(BlockType::Empty),
        I::Loop(BlockType::Empty),
        I::LocalGet(n),
        I::I32Eqz,
        I::BrIf(1),
        I::LocalGet(pa),
        I::I32Load8U(mem8(0)),
        I::LocalGet(pb),
        I::I32Load8U(mem8(0)),
        I::I32Ne,
        I::If(BlockType::Empty),
        I::I32Const(0),
        I::Return,
        I::End,
    ]);
    bump(f, pa, 1);
    bump(f, pb, 1);
    bump(f, n, -1);
    f.emit_all([I::Br(0), I::End, I::End, I::I32Const(1)]);
}

fn str_cmp(f: &mut FuncBuilder) {
    let la = f.local(ValType::I32);
    let lb = f.local(ValType::I32);
    let pa = f.local(ValType::I32);
    let pb = f.local(ValType::I32);
    let n = f.local(ValType::I32);
    let ca = f.local(ValType::I32);
    let cb = f.local(ValType::I32);
    null_check(f, 1);
    f.emit_all([
        I::LocalGet(0),
        I::I32WrapI64,
        I::LocalTee(la),
        I::LocalGet(1),
        I::I32WrapI64,
        I::LocalTee(lb),
        I::LocalGet(la),
        I::LocalGet(lb),
        I::I32LtU,
        I::Select,
        I::LocalSet(n),
    ]);
    pointers(f, pa, pb);
    f.emit_all([
        I::Block(BlockType::Empty),
        I::Loop(BlockType::Empty),
        I::LocalGet(n),
        I::I32Eqz,
        I::BrIf(1),
        I::LocalGet(pa),
        I::I32Load8U(mem8(0)),
        I::LocalTee(ca),
        I::LocalGet(pb),
        I::I32Load8U(mem8(0)),
        I::LocalTee(cb),
        I::I32Ne,
        I::If(BlockType::Empty),
        I::LocalGet(ca),
        I::LocalGet(cb),
        I::I32Sub,
        I::Return,
        I::End,
    ]);
    bump(f, pa, 1);
    bump(f, pb, 1);
    bump(f, n, -1);
    f.emit_all([
        I::Br(0),
        I::End,
        I::End,
        // A common prefix: the shorter string sorts first.
        I::LocalGet(la),
        I::LocalGet(lb),
        I::I32GtU,
        I::LocalGet(la),
        I::LocalGet(lb),
        I::I32LtU,
        I::I32Sub,
    ]);
}

fn str_copy(f: &mut FuncBuilder) {
    let (dst, s) = (0, 1);
    let len = f.local(ValType::I32);
    f.emit(I::LocalGet(dst));
    f.emit(I::LocalGet(s));
    f.emit_all(PTR);
    f.emit_all([
        I::LocalGet(s),
        I::I32WrapI64,
        I::LocalTee(len),
        I::MemoryCopy {
            src_mem: 0,
            dst_mem: 0,
        },
        I::LocalGet(dst),
        I::LocalGet(len),
        I::I32Add,
    ]);
}
