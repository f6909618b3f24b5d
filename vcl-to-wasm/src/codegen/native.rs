//! Calls of host-native functions (`std`, `directors`, host-native VMOD
//! objects) through the `native_call` import and its argument slots (see
//! "Native calls" in [`crate::abi`]).

use super::expr::{handle, value_repr};
use super::func::mem;
use super::stmt::Gen;
use super::{CodegenError, Result};
use crate::abi::{self, Import, Repr, Tag};
use crate::tir::{Expr, ExprKind, NativeFn, ObjectId, Program, Return, Stmt};
use crate::types::Type;
use wasm_encoder::Instruction as I;

/// Calls `f` with the argument count of every native call site.
fn visit_calls(program: &Program, f: &mut dyn FnMut(usize)) {
    for sub in &program.subs {
        visit_stmts(&sub.body, f);
    }
}

fn visit_stmts(stmts: &[Stmt], f: &mut dyn FnMut(usize)) {
    for s in stmts {
        match s {
            Stmt::Set { value, .. } => visit_expr(value, f),
            Stmt::Unset(_) | Stmt::Call(_) | Stmt::Leave | Stmt::Trace(_) => {}
            Stmt::Return(r) => match r {
                Return::Plain(_) | Return::Vcl(_) => {}
                Return::Synth { status, reason, .. } => {
                    visit_expr(status, f);
                    if let Some(r) = reason {
                        visit_expr(r, f);
                    }
                }
                Return::PassFor(d) => visit_expr(d, f),
            },
            Stmt::If { cond, then, els } => {
                visit_expr(cond, f);
                visit_stmts(then, f);
                visit_stmts(els, f);
            }
            Stmt::HashData(e) | Stmt::Synthetic(e) | Stmt::Ban(e) | Stmt::Expr(e) => {
                visit_expr(e, f)
            }
            Stmt::New { args, .. } => {
                f(args.len());
                args.iter().flatten().for_each(|a| visit_expr(a, f));
            }
        }
    }
}

fn visit_expr(e: &Expr, f: &mut dyn FnMut(usize)) {
    match &e.kind {
        ExprKind::Str(_)
        | ExprKind::Blob(_)
        | ExprKind::Int(_)
        | ExprKind::Real(_)
        | ExprKind::Duration(_)
        | ExprKind::Bytes(_)
        | ExprKind::Bool(_)
        | ExprKind::Var(_)
        | ExprKind::Header(..)
        | ExprKind::Http(_)
        | ExprKind::HeaderRef(..)
        | ExprKind::Backend(_)
        | ExprKind::Object(_)
        | ExprKind::Acl(_)
        | ExprKind::Probe(_)
        | ExprKind::SubRef(_)
        | ExprKind::Regex(_)
        | ExprKind::Null => {}
        ExprKind::Concat(parts) => parts.iter().for_each(|p| visit_expr(p, f)),
        ExprKind::ToString(a)
        | ExprKind::ToBool(a)
        | ExprKind::IntToReal(a)
        | ExprKind::Not(a)
        | ExprKind::Neg(a) => visit_expr(a, f),
        ExprKind::And(a, b)
        | ExprKind::Or(a, b)
        | ExprKind::Cmp(_, a, b)
        | ExprKind::Arith(_, a, b) => {
            visit_expr(a, f);
            visit_expr(b, f);
        }
        ExprKind::Match { subject, .. } => visit_expr(subject, f),
        ExprKind::AclMatch { ip, .. } => visit_expr(ip, f),
        ExprKind::Regsub {
            subject,
            replacement,
            ..
        } => {
            visit_expr(subject, f);
            visit_expr(replacement, f);
        }
        ExprKind::Call { args, .. } | ExprKind::MethodCall { args, .. } => {
            f(args.len());
            args.iter().flatten().for_each(|a| visit_expr(a, f));
        }
    }
}

/// The most arguments any native call of the program passes.
pub(crate) fn max_native_args(program: &Program) -> usize {
    let mut max = 0;
    visit_calls(program, &mut |n| max = max.max(n));
    max
}

/// Whether the program makes any native call (even without arguments).
pub(crate) fn has_native_calls(program: &Program) -> bool {
    let mut any = false;
    visit_calls(program, &mut |_| any = true);
    any
}

/// Arguments without side effects and without native calls inside, which
/// can be evaluated straight into their slot.
fn is_constant(e: &Expr) -> bool {
    matches!(
        e.kind,
        ExprKind::Str(_)
            | ExprKind::Blob(_)
            | ExprKind::Int(_)
            | ExprKind::Real(_)
            | ExprKind::Duration(_)
            | ExprKind::Bytes(_)
            | ExprKind::Bool(_)
            | ExprKind::Http(_)
            | ExprKind::Backend(_)
            | ExprKind::Object(_)
            | ExprKind::Acl(_)
            | ExprKind::Probe(_)
            | ExprKind::SubRef(_)
            | ExprKind::Regex(_)
            | ExprKind::Null
    )
}

/// An argument, ready to be stored in its slot.
enum Arg<'e> {
    Absent,
    /// Evaluated at store time.
    Const(&'e Expr),
    /// A header reference: (where, packed name).
    Header(i32, i64),
    /// Already evaluated into a local.
    Local(Tag, Repr, u32),
}

impl Gen<'_> {
    /// A native call; leaves the result (if any) on the stack.
    pub(crate) fn native_call(
        &mut self,
        func: &NativeFn,
        object: Option<ObjectId>,
        args: &[Option<Expr>],
        ret: Type,
    ) -> Result<Option<Repr>> {
        // `std.log(s)` is common enough for its own import.
        if object.is_none() && func.vmod == "std" && func.func == "log" && ret == Type::Void {
            if let [Some(arg)] = args {
                self.string(arg)?;
                self.call_import(Import::Log);
                return Ok(None);
            }
        }
        let index = self.cx.native(func)?;
        let obj = match object {
            Some(o) => handle(o)?,
            None => abi::NO_OBJECT,
        };
        let nargs = u32::try_from(args.len()).map_err(|_| super::too_many("arguments"))?;
        if nargs >= self.cx.slots {
            return Err(CodegenError::Invalid(format!(
                "native call with {nargs} arguments exceeds the {} slots counted",
                self.cx.slots
            )));
        }
        // Evaluate every argument that may call the host before any slot is
        // written: a nested native call reuses the same slots.
        let mut prepared = Vec::with_capacity(args.len());
        for arg in args {
            prepared.push(match arg {
                None => Arg::Absent,
                Some(e) => match &e.kind {
                    ExprKind::HeaderRef(w, name) => Arg::Header(*w as i32, self.cx.pool.str(name)?),
                    _ if is_constant(e) => Arg::Const(e),
                    _ => {
                        let r = value_repr(e.ty)?;
                        if e.ty == Type::Blob || r != Repr::Str {
                            self.value(e, r)?;
                        } else {
                            self.string(e)?;
                        }
                        let t = self.f.local(r.val_type());
                        self.f.emit(I::LocalSet(t));
                        Arg::Local(Tag::of(e.ty), r, t)
                    }
                },
            });
        }
        let args_addr = self.cx.scratch + abi::SLOT_SIZE;
        for (i, arg) in prepared.iter().enumerate() {
            let slot = args_addr + abi::SLOT_SIZE * i as u32;
            let (tag, aux) = match arg {
                Arg::Absent => (Tag::None, 0),
                Arg::Const(e) => (Tag::of(e.ty), 0),
                Arg::Header(w, _) => (Tag::Header, *w),
                Arg::Local(tag, _, _) => (*tag, 0),
            };
            let word0 = i64::from(tag as u8) | (i64::from(aux) << 32);
            self.f.emit_all([
                I::I32Const(0),
                I::I64Const(word0),
                I::I64Store(mem(slot + abi::SLOT_TAG, 3)),
            ]);
            let r = match arg {
                Arg::Absent => continue,
                Arg::Const(e) => {
                    self.f.emit(I::I32Const(0));
                    self.expr(e)?
                        .ok_or_else(|| CodegenError::Invalid("VOID argument".into()))?
                }
                Arg::Header(_, name) => {
                    self.f.emit_all([I::I32Const(0), I::I64Const(*name)]);
                    Repr::Str
                }
                Arg::Local(_, r, t) => {
                    self.f.emit_all([I::I32Const(0), I::LocalGet(*t)]);
                    self.f.release(r.val_type(), *t);
                    *r
                }
            };
            let at = mem(slot + abi::SLOT_VALUE, 3);
            match r {
                Repr::Str | Repr::Int => self.f.emit(I::I64Store(at)),
                Repr::F64 => self.f.emit(I::F64Store(at)),
                Repr::Bool | Repr::Handle => self.f.emit_all([I::I64ExtendI32U, I::I64Store(at)]),
            }
        }
        self.f.emit_all([
            I::I32Const(index),
            I::I32Const(obj),
            I::I32Const(handle(args_addr)?),
            I::I32Const(handle(nargs)?),
            I::I32Const(handle(self.cx.scratch)?),
        ]);
        self.call_import(Import::NativeCall);
        let r = abi::repr(ret);
        if let Some(r) = r {
            self.load_slot(self.cx.scratch, r);
        }
        Ok(r)
    }
}
