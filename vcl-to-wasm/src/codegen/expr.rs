//! Lowering of expressions. Each lowering leaves exactly one value of the
//! expression's representation ([`Repr`]) on the wasm stack (none for VOID).

use super::func::mem;
use super::runtime::Helper;
use super::stmt::Gen;
use super::{CodegenError, Result};
use crate::abi::{self, Import, Repr, Tag, ValType};
use crate::tir::{ArithOp, CmpOp, Expr, ExprKind};
use crate::types::{Action, Type};
use wasm_encoder::{BlockType, Ieee64, Instruction as I};

/// Message passed to `fail` for an INT division by zero.
pub(crate) const DIV_ZERO: &str = "INT division by zero";

/// The representation of a type that must have a value.
pub(crate) fn value_repr(ty: Type) -> Result<Repr> {
    abi::repr(ty).ok_or_else(|| CodegenError::Invalid("VOID used as a value".into()))
}

/// One part of a concatenation after constant folding.
enum Part<'e> {
    Const(String),
    Dyn(&'e Expr),
}

/// The strands of a concatenation: constants (folded together) and the
/// expressions to evaluate.
pub(crate) fn strands(parts: &[Expr]) -> Vec<std::result::Result<String, &Expr>> {
    let mut flat = Vec::new();
    flatten(parts, &mut flat);
    flat.into_iter()
        .map(|p| match p {
            Part::Const(s) => Ok(s),
            Part::Dyn(e) => Err(e),
        })
        .collect()
}

fn flatten<'e>(parts: &'e [Expr], out: &mut Vec<Part<'e>>) {
    for p in parts {
        let folded = match &p.kind {
            ExprKind::Str(s) => Some(s.clone()),
            ExprKind::Concat(inner) => {
                flatten(inner, out);
                continue;
            }
            ExprKind::Null => Some(String::new()),
            _ => const_string(p),
        };
        match (folded, out.last_mut()) {
            (Some(s), Some(Part::Const(prev))) => prev.push_str(&s),
            (Some(s), _) => out.push(Part::Const(s)),
            (None, _) => out.push(Part::Dyn(p)),
        }
    }
}

/// The string a constant expression converts to, when that is known at
/// compile time without doubt (REAL formatting is left to the host, which
/// owns `%.3f`).
fn const_string(e: &Expr) -> Option<String> {
    match &e.kind {
        ExprKind::Str(s) => Some(s.clone()),
        ExprKind::ToString(inner) => const_to_string(inner),
        _ => None,
    }
}

/// `ToString(e)` of a literal `e`, when known at compile time.
fn const_to_string(e: &Expr) -> Option<String> {
    match &e.kind {
        ExprKind::Str(s) => Some(s.clone()),
        ExprKind::Int(n) | ExprKind::Bytes(n) if matches!(e.ty, Type::Int | Type::Bytes) => {
            Some(n.to_string())
        }
        ExprKind::Bool(b) => Some(if *b { "true" } else { "false" }.to_string()),
        _ => None,
    }
}

impl Gen<'_> {
    /// Lowers `e`, returning what it left on the stack.
    pub(crate) fn expr(&mut self, e: &Expr) -> Result<Option<Repr>> {
        let repr = abi::repr(e.ty);
        match &e.kind {
            ExprKind::Str(s) => {
                let v = self.cx.pool.str(s)?;
                self.f.emit(I::I64Const(v));
                Ok(Some(Repr::Str))
            }
            ExprKind::Blob(b) => {
                let v = self.cx.pool.intern(b)?;
                self.f.emit(I::I64Const(v));
                Ok(Some(Repr::Str))
            }
            ExprKind::Int(n) | ExprKind::Bytes(n) => {
                if repr == Some(Repr::F64) {
                    self.f.emit(I::F64Const(Ieee64::from(*n as f64)));
                    Ok(Some(Repr::F64))
                } else {
                    self.f.emit(I::I64Const(*n));
                    Ok(Some(Repr::Int))
                }
            }
            ExprKind::Real(x) | ExprKind::Duration(x) => {
                self.f.emit(I::F64Const(Ieee64::from(*x)));
                Ok(Some(Repr::F64))
            }
            ExprKind::Bool(b) => {
                self.f.emit(I::I32Const(i32::from(*b)));
                Ok(Some(Repr::Bool))
            }
            ExprKind::Var(id) => {
                let r = value_repr(e.ty)?;
                self.f.emit(I::I32Const(handle(*id)?));
                let imp = match r {
                    Repr::Str => Import::VarGetString,
                    Repr::Int => Import::VarGetInt,
                    Repr::F64 => Import::VarGetReal,
                    Repr::Bool => Import::VarGetBool,
                    Repr::Handle => Import::VarGetHandle,
                };
                self.call_import(imp);
                Ok(Some(r))
            }
            ExprKind::Header(w, name) => {
                let name = self.cx.pool.str(name)?;
                self.f.emit_all([I::I32Const(*w as i32), I::I64Const(name)]);
                self.call_import(Import::HeaderGet);
                Ok(Some(Repr::Str))
            }
            ExprKind::HeaderRef(_, name) => {
                // The HttpWhere travels in a slot's aux word (see native.rs);
                // as a plain value a HEADER is its name.
                let name = self.cx.pool.str(name)?;
                self.f.emit(I::I64Const(name));
                Ok(Some(Repr::Str))
            }
            ExprKind::Http(w) => self.handle_const(*w as i32),
            ExprKind::Backend(id) => {
                let h = i32::try_from(*id)
                    .ok()
                    .and_then(|i| i.checked_add(1))
                    .ok_or_else(|| CodegenError::Invalid(format!("backend id {id}")))?;
                self.handle_const(h)
            }
            ExprKind::Object(id)
            | ExprKind::Acl(id)
            | ExprKind::Probe(id)
            | ExprKind::Regex(id) => self.handle_const(handle(*id)?),
            ExprKind::SubRef(id) => {
                self.cx.sub_func(*id)?;
                self.cx.sub_refs.insert(*id);
                self.handle_const(handle(*id)?)
            }
            ExprKind::Null => {
                match repr {
                    None => {}
                    Some(Repr::Str | Repr::Int) => self.f.emit(I::I64Const(0)),
                    Some(Repr::F64) => self.f.emit(I::F64Const(Ieee64::from(0.0))),
                    Some(Repr::Bool | Repr::Handle) => self.f.emit(I::I32Const(0)),
                }
                Ok(repr)
            }
            ExprKind::Concat(parts) => {
                self.concat(parts)?;
                Ok(Some(Repr::Str))
            }
            ExprKind::ToString(inner) => {
                self.convert_to_string(inner)?;
                Ok(Some(Repr::Str))
            }
            ExprKind::ToBool(inner) => {
                self.convert_to_bool(inner)?;
                Ok(Some(Repr::Bool))
            }
            ExprKind::IntToReal(inner) => {
                self.value(inner, Repr::F64)?;
                Ok(Some(Repr::F64))
            }
            ExprKind::Not(inner) => {
                self.value(inner, Repr::Bool)?;
                self.f.emit(I::I32Eqz);
                Ok(Some(Repr::Bool))
            }
            ExprKind::And(a, b) => {
                self.value(a, Repr::Bool)?;
                self.f
                    .emit(I::If(BlockType::Result(wasm_encoder::ValType::I32)));
                self.value(b, Repr::Bool)?;
                self.f.emit_all([I::Else, I::I32Const(0), I::End]);
                Ok(Some(Repr::Bool))
            }
            ExprKind::Or(a, b) => {
                self.value(a, Repr::Bool)?;
                self.f.emit_all([
                    I::If(BlockType::Result(wasm_encoder::ValType::I32)),
                    I::I32Const(1),
                    I::Else,
                ]);
                self.value(b, Repr::Bool)?;
                self.f.emit(I::End);
                Ok(Some(Repr::Bool))
            }
            ExprKind::Cmp(op, a, b) => {
                self.compare(*op, a, b)?;
                Ok(Some(Repr::Bool))
            }
            ExprKind::Match {
                subject,
                regex,
                negate,
            } => {
                self.f.emit(I::I32Const(handle(*regex)?));
                self.string(subject)?;
                self.call_import(Import::RegexMatch);
                if *negate {
                    self.f.emit(I::I32Eqz);
                }
                Ok(Some(Repr::Bool))
            }
            ExprKind::AclMatch { ip, acl, negate } => {
                self.f.emit(I::I32Const(handle(*acl)?));
                self.value(ip, Repr::Handle)?;
                self.call_import(Import::AclMatch);
                if *negate {
                    self.f.emit(I::I32Eqz);
                }
                Ok(Some(Repr::Bool))
            }
            ExprKind::Arith(op, a, b) => self.arith(e.ty, *op, a, b),
            ExprKind::Neg(inner) => match value_repr(inner.ty)? {
                Repr::Int => {
                    self.f.emit(I::I64Const(0));
                    self.value(inner, Repr::Int)?;
                    self.f.emit(I::I64Sub);
                    Ok(Some(Repr::Int))
                }
                Repr::F64 => {
                    self.value(inner, Repr::F64)?;
                    self.f.emit(I::F64Neg);
                    Ok(Some(Repr::F64))
                }
                r => Err(CodegenError::Invalid(format!("negation of {r:?}"))),
            },
            ExprKind::Regsub {
                all,
                subject,
                regex,
                replacement,
            } => {
                self.f
                    .emit_all([I::I32Const(handle(*regex)?), I::I32Const(i32::from(*all))]);
                self.string(subject)?;
                self.string(replacement)?;
                self.call_import(Import::Regsub);
                Ok(Some(Repr::Str))
            }
            ExprKind::Call { func, args } => self.native_call(func, None, args, e.ty),
            ExprKind::MethodCall { object, func, args } => {
                self.native_call(func, Some(*object), args, e.ty)
            }
        }
    }

    fn handle_const(&mut self, h: i32) -> Result<Option<Repr>> {
        self.f.emit(I::I32Const(h));
        Ok(Some(Repr::Handle))
    }

    pub(crate) fn call_import(&mut self, imp: Import) {
        self.f.emit(I::Call(imp.func_index()));
    }

    pub(crate) fn call_helper(&mut self, h: Helper) {
        self.f.emit(I::Call(h.func_index()));
    }

    /// Lowers `e`, which must produce `want` (an INT where a REAL is wanted
    /// is converted).
    pub(crate) fn value(&mut self, e: &Expr, want: Repr) -> Result<()> {
        match self.expr(e)? {
            Some(r) if r == want => Ok(()),
            Some(Repr::Int) if want == Repr::F64 => {
                self.f.emit(I::F64ConvertI64S);
                Ok(())
            }
            got => Err(CodegenError::Invalid(format!(
                "expected a {want:?} value, got {got:?} from {} expression",
                e.ty
            ))),
        }
    }

    /// Lowers `e` as a STRING, converting other types as Varnish does.
    pub(crate) fn string(&mut self, e: &Expr) -> Result<()> {
        if abi::repr(e.ty) == Some(Repr::Str) && e.ty != Type::Blob {
            return self.value(e, Repr::Str);
        }
        self.convert_to_string(e)
    }

    /// `ToString`: Varnish's `VRT_*_string` conversions.
    fn convert_to_string(&mut self, e: &Expr) -> Result<()> {
        if let Some(s) = const_to_string(e) {
            let v = self.cx.pool.str(&s)?;
            self.f.emit(I::I64Const(v));
            return Ok(());
        }
        match e.ty {
            Type::String | Type::Strands | Type::Enum | Type::Body | Type::Header => {
                self.value(e, Repr::Str)
            }
            Type::Int | Type::Bytes => {
                self.value(e, Repr::Int)?;
                self.call_helper(Helper::IntToString);
                Ok(())
            }
            Type::Real | Type::Duration | Type::Time => {
                self.f.emit(I::I32Const(i32::from(Tag::of(e.ty) as u8)));
                self.value(e, Repr::F64)?;
                self.call_import(Import::RealToString);
                Ok(())
            }
            Type::Bool => {
                let t = self.cx.pool.str("true")?;
                let f = self.cx.pool.str("false")?;
                self.f.emit_all([I::I64Const(t), I::I64Const(f)]);
                self.value(e, Repr::Bool)?;
                self.f.emit(I::Select);
                Ok(())
            }
            Type::Backend | Type::Ip | Type::Stevedore | Type::Probe | Type::Acl | Type::Sub => {
                self.f.emit(I::I32Const(i32::from(Tag::of(e.ty) as u8)));
                self.value(e, Repr::Handle)?;
                self.call_import(Import::HandleToString);
                Ok(())
            }
            Type::Blob => {
                // `VRT_BLOB_string`: `:base64:`, as in a BLOB literal.
                self.value(e, Repr::Str)?;
                self.call_import(Import::BlobToString);
                Ok(())
            }
            t => Err(CodegenError::Unsupported(format!(
                "conversion of {t} to STRING"
            ))),
        }
    }

    /// `ToBool`: a string is true when not NULL, numbers when not zero,
    /// handles when not "none".
    fn convert_to_bool(&mut self, e: &Expr) -> Result<()> {
        match value_repr(e.ty)? {
            r @ (Repr::Str | Repr::Int) => {
                self.value(e, r)?;
                self.f.emit_all([I::I64Const(0), I::I64Ne]);
            }
            Repr::F64 => {
                self.value(e, Repr::F64)?;
                self.f.emit_all([I::F64Const(Ieee64::from(0.0)), I::F64Ne]);
            }
            Repr::Bool => self.value(e, Repr::Bool)?,
            Repr::Handle => {
                self.value(e, Repr::Handle)?;
                self.f.emit_all([I::I32Const(0), I::I32Ne]);
            }
        }
        Ok(())
    }

    /// A concatenation in the workspace; NULL parts count as "", and the
    /// result is never NULL.
    pub(crate) fn concat(&mut self, parts: &[Expr]) -> Result<()> {
        let mut flat = Vec::new();
        flatten(parts, &mut flat);
        match flat.as_slice() {
            [] => {
                let v = self.cx.pool.str("")?;
                self.f.emit(I::I64Const(v));
                return Ok(());
            }
            [Part::Const(s)] => {
                let v = self.cx.pool.str(s)?;
                self.f.emit(I::I64Const(v));
                return Ok(());
            }
            [Part::Dyn(e)] => {
                // Nothing to copy: the part itself, with NULL made "".
                let empty = self.cx.pool.str("")?;
                let t = self.f.local(ValType::I64);
                self.f.emit(I::I64Const(empty));
                self.string(e)?;
                self.f
                    .emit_all([I::LocalTee(t), I::LocalGet(t), I::I64Eqz, I::Select]);
                self.f.release(ValType::I64, t);
                return Ok(());
            }
            _ => {}
        }
        // Evaluate the dynamic parts first (they may allocate), then size,
        // allocate and copy.
        let mut locals = Vec::with_capacity(flat.len());
        let mut const_len: i64 = 0;
        for p in &flat {
            match p {
                Part::Const(s) => {
                    const_len = const_len.saturating_add(s.len() as i64);
                    locals.push(None);
                }
                Part::Dyn(e) => {
                    self.string(e)?;
                    let t = self.f.local(ValType::I64);
                    self.f.emit(I::LocalSet(t));
                    locals.push(Some(t));
                }
            }
        }
        let total = self.f.local(ValType::I64);
        let ptr = self.f.local(ValType::I32);
        self.f.emit(I::I64Const(const_len));
        for t in locals.iter().flatten() {
            self.f.emit_all([
                I::LocalGet(*t),
                I::I64Const(0xffff_ffff),
                I::I64And,
                I::I64Add,
            ]);
        }
        self.f.emit(I::LocalTee(total));
        self.call_helper(Helper::WsAlloc);
        self.f.emit(I::LocalTee(ptr));
        for (p, t) in flat.iter().zip(&locals) {
            match (p, t) {
                (_, Some(t)) => self.f.emit(I::LocalGet(*t)),
                (Part::Const(s), None) => {
                    let v = self.cx.pool.str(s)?;
                    self.f.emit(I::I64Const(v));
                }
                (Part::Dyn(_), None) => {
                    return Err(CodegenError::Invalid("concatenation part lost".into()))
                }
            }
            self.call_helper(Helper::StrCopy);
        }
        self.f.emit_all([
            I::Drop,
            I::LocalGet(ptr),
            I::I64ExtendI32U,
            I::I64Const(32),
            I::I64Shl,
            I::LocalGet(total),
            I::I64Or,
        ]);
        for t in locals.into_iter().flatten() {
            self.f.release(ValType::I64, t);
        }
        self.f.release(ValType::I64, total);
        self.f.release(ValType::I32, ptr);
        Ok(())
    }

    fn compare(&mut self, op: CmpOp, a: &Expr, b: &Expr) -> Result<()> {
        let (ra, rb) = (value_repr(a.ty)?, value_repr(b.ty)?);
        // Mixed INT/REAL compares as REAL.
        let r = if ra == rb { ra } else { Repr::F64 };
        match r {
            Repr::Str => {
                self.string(a)?;
                self.string(b)?;
                match op {
                    CmpOp::Eq => self.call_helper(Helper::StrEq),
                    CmpOp::Ne => {
                        self.call_helper(Helper::StrEq);
                        self.f.emit(I::I32Eqz);
                    }
                    _ => {
                        self.call_helper(Helper::StrCmp);
                        self.f.emit(I::I32Const(0));
                        self.f.emit(match op {
                            CmpOp::Lt => I::I32LtS,
                            CmpOp::Le => I::I32LeS,
                            CmpOp::Gt => I::I32GtS,
                            _ => I::I32GeS,
                        });
                    }
                }
            }
            Repr::Int => {
                self.value(a, Repr::Int)?;
                self.value(b, Repr::Int)?;
                self.f.emit(match op {
                    CmpOp::Eq => I::I64Eq,
                    CmpOp::Ne => I::I64Ne,
                    CmpOp::Lt => I::I64LtS,
                    CmpOp::Le => I::I64LeS,
                    CmpOp::Gt => I::I64GtS,
                    CmpOp::Ge => I::I64GeS,
                });
            }
            Repr::F64 => {
                self.value(a, Repr::F64)?;
                self.value(b, Repr::F64)?;
                self.f.emit(match op {
                    CmpOp::Eq => I::F64Eq,
                    CmpOp::Ne => I::F64Ne,
                    CmpOp::Lt => I::F64Lt,
                    CmpOp::Le => I::F64Le,
                    CmpOp::Gt => I::F64Gt,
                    CmpOp::Ge => I::F64Ge,
                });
            }
            Repr::Bool => {
                // Host BOOLs promise 0/1; normalise anyway where it matters.
                self.value(a, Repr::Bool)?;
                self.f.emit_all([I::I32Const(0), I::I32Ne]);
                self.value(b, Repr::Bool)?;
                self.f.emit_all([I::I32Const(0), I::I32Ne]);
                self.f.emit(eq_ne_i32(op)?);
            }
            Repr::Handle => {
                self.value(a, Repr::Handle)?;
                self.value(b, Repr::Handle)?;
                if a.ty == Type::Ip {
                    self.call_import(Import::IpEq);
                    match op {
                        CmpOp::Eq => {}
                        CmpOp::Ne => self.f.emit(I::I32Eqz),
                        _ => return Err(ordering(a.ty)),
                    }
                } else {
                    self.f.emit(eq_ne_i32(op).map_err(|_| ordering(a.ty))?);
                }
            }
        }
        Ok(())
    }

    fn arith(&mut self, ty: Type, op: ArithOp, a: &Expr, b: &Expr) -> Result<Option<Repr>> {
        let r = value_repr(ty)?;
        let (ra, rb) = (value_repr(a.ty)?, value_repr(b.ty)?);
        if r == Repr::Str {
            if op != ArithOp::Add {
                return Err(CodegenError::Invalid(format!("STRING {op:?}")));
            }
            self.concat(&[a.clone(), b.clone()])?;
            return Ok(Some(Repr::Str));
        }
        if r == Repr::Int && ra == Repr::Int && rb == Repr::Int {
            if matches!(op, ArithOp::Div | ArithOp::Mod) {
                self.int_div(a, b, op == ArithOp::Mod)?;
            } else {
                self.value(a, Repr::Int)?;
                self.value(b, Repr::Int)?;
                self.f.emit(match op {
                    ArithOp::Add => I::I64Add,
                    ArithOp::Sub => I::I64Sub,
                    _ => I::I64Mul,
                });
            }
            return Ok(Some(Repr::Int));
        }
        if !matches!(r, Repr::Int | Repr::F64) {
            return Err(CodegenError::Invalid(format!("arithmetic on {ty}")));
        }
        // REAL, DURATION, TIME (and mixes): IEEE double arithmetic, as the
        // C Varnish generates; division by zero gives inf/nan there too.
        self.value(a, Repr::F64)?;
        self.value(b, Repr::F64)?;
        self.f.emit(match op {
            ArithOp::Add => I::F64Add,
            ArithOp::Sub => I::F64Sub,
            ArithOp::Mul => I::F64Mul,
            ArithOp::Div => I::F64Div,
            ArithOp::Mod => return Err(CodegenError::Invalid("REAL %".into())),
        });
        if r == Repr::Int {
            self.f.emit(I::I64TruncSatF64S);
        }
        Ok(Some(r))
    }

    /// INT division: by zero fails the task (`fail`, then the `fail`
    /// action); `MIN / -1` wraps instead of trapping.
    fn int_div(&mut self, a: &Expr, b: &Expr, rem: bool) -> Result<()> {
        let ta = self.f.local(ValType::I64);
        let tb = self.f.local(ValType::I64);
        self.value(a, Repr::Int)?;
        self.f.emit(I::LocalSet(ta));
        self.value(b, Repr::Int)?;
        self.f
            .emit_all([I::LocalTee(tb), I::I64Eqz, I::If(BlockType::Empty)]);
        self.fail(DIV_ZERO)?;
        self.f.emit_all([
            I::End,
            I::LocalGet(tb),
            I::I64Const(-1),
            I::I64Eq,
            I::If(BlockType::Result(wasm_encoder::ValType::I64)),
        ]);
        if rem {
            // x % -1 is 0 (and must not trap on MIN % -1).
            self.f.emit(I::I64Const(0));
        } else {
            self.f
                .emit_all([I::I64Const(0), I::LocalGet(ta), I::I64Sub]);
        }
        self.f.emit_all([
            I::Else,
            I::LocalGet(ta),
            I::LocalGet(tb),
            if rem { I::I64RemS } else { I::I64DivS },
            I::End,
        ]);
        self.f.release(ValType::I64, ta);
        self.f.release(ValType::I64, tb);
        Ok(())
    }

    /// `VRT_fail(msg)`: tell the host, then leave the subroutine with the
    /// `fail` action (callers propagate it). Valid anywhere in a
    /// subroutine body: `return` discards whatever is on the stack.
    pub(crate) fn fail(&mut self, msg: &str) -> Result<()> {
        let m = self.cx.pool.str(msg)?;
        self.f.emit(I::I64Const(m));
        self.call_import(Import::Fail);
        self.f
            .emit_all([I::I32Const(Action::Fail.code()), I::Return]);
        Ok(())
    }

    /// Loads a value of representation `r` from the value field of the
    /// slot at `addr`.
    pub(crate) fn load_slot(&mut self, addr: u32, r: Repr) {
        self.f.emit(I::I32Const(0));
        let off = addr.saturating_add(abi::SLOT_VALUE);
        self.f.emit(match r {
            Repr::Str | Repr::Int => I::I64Load(mem(off, 3)),
            Repr::F64 => I::F64Load(mem(off, 3)),
            Repr::Bool | Repr::Handle => I::I32Load(mem(off, 2)),
        });
    }
}

fn eq_ne_i32(op: CmpOp) -> Result<I<'static>> {
    match op {
        CmpOp::Eq => Ok(I::I32Eq),
        CmpOp::Ne => Ok(I::I32Ne),
        _ => Err(CodegenError::Invalid("ordering of BOOL".into())),
    }
}

fn ordering(ty: Type) -> CodegenError {
    CodegenError::Invalid(format!("ordering comparison of {ty}"))
}

/// A table index or id as an `i32` immediate.
pub(crate) fn handle(id: u32) -> Result<i32> {
    i32::try_from(id).map_err(|_| CodegenError::Invalid(format!("index {id} out of range")))
}
