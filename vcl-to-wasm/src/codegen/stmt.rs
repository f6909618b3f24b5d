//! Lowering of statements and subroutines.
//!
//! Every subroutine is a function `() -> i32` returning the action code
//! (0: fell off the end). `return (x)` returns `x`'s code after calling the
//! setter import for its arguments; `call s` returns at once when `s`
//! returned a nonzero code, so a `return` deep in a call chain ends the
//! whole method, as in Varnish.

use super::expr::handle;
use super::func::FuncBuilder;
use super::{CodegenError, Ctx, Result};
use crate::abi::{Import, Repr, ValType};
use crate::tir::{ArithOp, Expr, ExprKind, Return, SetOp, Stmt, Sub, Target};
use crate::types::Type;
use wasm_encoder::{BlockType, Function, Instruction as I};

/// The generator of one subroutine's function.
pub(crate) struct Gen<'a> {
    pub(crate) cx: &'a mut Ctx,
    pub(crate) f: FuncBuilder,
}

pub(crate) fn lower_sub(cx: &mut Ctx, sub: &Sub) -> Result<Function> {
    let mut g = Gen {
        cx,
        f: FuncBuilder::new(0),
    };
    if g.stmts(&sub.body)? {
        // Ended in a return: the function end is unreachable but must still
        // type-check, which the stack-polymorphic `return` guarantees.
    } else {
        g.f.emit(I::I32Const(0));
    }
    Ok(g.f.finish())
}

impl Gen<'_> {
    /// Lowers a block; true when it ends with an unconditional `return`
    /// (statements after it are dead and not emitted).
    fn stmts(&mut self, body: &[Stmt]) -> Result<bool> {
        for s in body {
            self.stmt(s)?;
            if matches!(s, Stmt::Return(_) | Stmt::Leave) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn stmt(&mut self, s: &Stmt) -> Result<()> {
        match s {
            Stmt::Set { target, op, value } => self.set(target, *op, value),
            Stmt::Unset(Target::Header(w, name)) => {
                let name = self.cx.pool.str(name)?;
                self.f.emit_all([I::I32Const(*w as i32), I::I64Const(name)]);
                self.call_import(Import::HeaderUnset);
                Ok(())
            }
            Stmt::Unset(Target::Var(id)) => {
                self.f.emit(I::I32Const(handle(*id)?));
                self.call_import(Import::VarUnset);
                Ok(())
            }
            Stmt::Call(id) => {
                let func = self.cx.sub_func(*id)?;
                let t = self.f.local(ValType::I32);
                self.f.emit_all([
                    I::Call(func),
                    I::LocalTee(t),
                    I::If(BlockType::Empty),
                    I::LocalGet(t),
                    I::Return,
                    I::End,
                ]);
                self.f.release(ValType::I32, t);
                Ok(())
            }
            Stmt::Return(r) => self.ret(r),
            Stmt::Leave => {
                self.f.emit_all([I::I32Const(0), I::Return]);
                Ok(())
            }
            Stmt::If { cond, then, els } => {
                self.value(cond, Repr::Bool)?;
                self.f.emit(I::If(BlockType::Empty));
                self.stmts(then)?;
                if !els.is_empty() {
                    self.f.emit(I::Else);
                    self.stmts(els)?;
                }
                self.f.emit(I::End);
                Ok(())
            }
            Stmt::HashData(e) => self.hash_data(e),
            Stmt::Trace(n) => {
                // Only when the host turned tracing on for this call.
                self.f.emit_all([
                    I::I32Const(0),
                    I::I32Load(wasm_encoder::MemArg {
                        offset: u64::from(crate::abi::TRACE_ADDR),
                        align: 2,
                        memory_index: 0,
                    }),
                    I::If(BlockType::Empty),
                    I::I32Const(*n as i32),
                ]);
                self.call_import(Import::Trace);
                self.f.emit(I::End);
                Ok(())
            }
            Stmt::Synthetic(e) => self.string_call(e, Import::Synthetic),
            Stmt::Ban(e) => self.string_call(e, Import::Ban),
            Stmt::New { object, ctor, args } => {
                self.native_call(ctor, Some(*object), args, Type::Void)?;
                Ok(())
            }
            Stmt::Expr(e) => {
                if self.expr(e)?.is_some() {
                    self.f.emit(I::Drop);
                }
                Ok(())
            }
        }
    }

    /// `hash_data(e)`: a concatenation goes strand by strand, as
    /// Varnish's STRANDS argument does (constants folded together).
    fn hash_data(&mut self, e: &Expr) -> Result<()> {
        let ExprKind::Concat(parts) = &e.kind else {
            self.string(e)?;
            self.f.emit(I::I32Const(1));
            self.call_import(Import::HashData);
            return Ok(());
        };
        let strands = super::expr::strands(parts);
        if strands.is_empty() {
            let v = self.cx.pool.str("")?;
            self.f.emit_all([I::I64Const(v), I::I32Const(1)]);
            self.call_import(Import::HashData);
            return Ok(());
        }
        let n = strands.len();
        for (i, p) in strands.into_iter().enumerate() {
            match p {
                Ok(s) => {
                    let v = self.cx.pool.str(&s)?;
                    self.f.emit(I::I64Const(v));
                }
                Err(e) => self.string(e)?,
            }
            self.f.emit(I::I32Const(i32::from(i + 1 == n)));
            self.call_import(Import::HashData);
        }
        Ok(())
    }

    fn string_call(&mut self, e: &Expr, imp: Import) -> Result<()> {
        self.string(e)?;
        self.call_import(imp);
        Ok(())
    }

    fn ret(&mut self, r: &Return) -> Result<()> {
        match r {
            Return::Plain(_) => {}
            Return::Synth { status, reason, .. } => {
                self.value(status, Repr::Int)?;
                match reason {
                    Some(reason) => self.string(reason)?,
                    None => self.f.emit(I::I64Const(0)),
                }
                self.call_import(Import::SetSynth);
            }
            Return::PassFor(d) => {
                self.value(d, Repr::F64)?;
                self.call_import(Import::SetPassTtl);
            }
            Return::Vcl(label) => {
                self.f.emit(I::I32Const(handle(*label)?));
                self.call_import(Import::SetVcl);
            }
        }
        self.f.emit_all([I::I32Const(r.action().code()), I::Return]);
        Ok(())
    }

    fn set(&mut self, target: &Target, op: SetOp, value: &Expr) -> Result<()> {
        match target {
            Target::Header(w, name) => {
                let packed = self.cx.pool.str(name)?;
                self.f
                    .emit_all([I::I32Const(*w as i32), I::I64Const(packed)]);
                match op {
                    SetOp::Assign => self.string(value)?,
                    SetOp::Add => self.concat(&[
                        Expr::new(Type::String, ExprKind::Header(*w, name.clone())),
                        value.clone(),
                    ])?,
                    _ => return Err(CodegenError::Invalid(format!("{op:?} on header {name}"))),
                }
                self.call_import(Import::HeaderSet);
                Ok(())
            }
            Target::Var(id) => {
                // The variable's representation is the value's: the checker
                // gives `value` the target's type, except for DURATION *= REAL
                // and friends, which share the f64 representation.
                let r = super::expr::value_repr(value.ty)?;
                self.f.emit(I::I32Const(handle(*id)?));
                let current = Expr::new(value.ty, ExprKind::Var(*id));
                match (op, r) {
                    (SetOp::Assign, Repr::Str) => self.string(value)?,
                    (SetOp::Assign, r) => self.value(value, r)?,
                    (SetOp::Add, Repr::Str) => self.concat(&[current, value.clone()])?,
                    (op, Repr::Int | Repr::F64) => {
                        let aop = match op {
                            SetOp::Add => ArithOp::Add,
                            SetOp::Sub => ArithOp::Sub,
                            SetOp::Mul => ArithOp::Mul,
                            SetOp::Div => ArithOp::Div,
                            SetOp::Assign => ArithOp::Add,
                        };
                        let e = Expr::new(
                            value.ty,
                            ExprKind::Arith(aop, Box::new(current), Box::new(value.clone())),
                        );
                        self.value(&e, r)?;
                    }
                    (op, r) => {
                        return Err(CodegenError::Invalid(format!("{op:?} on a {r:?} variable")))
                    }
                }
                self.call_import(match r {
                    Repr::Str => Import::VarSetString,
                    Repr::Int => Import::VarSetInt,
                    Repr::F64 => Import::VarSetReal,
                    Repr::Bool => Import::VarSetBool,
                    Repr::Handle => Import::VarSetHandle,
                });
                Ok(())
            }
        }
    }
}
