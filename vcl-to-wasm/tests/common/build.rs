//! Short constructors for hand-written TIR programs.

use vcl_to_wasm::tir::*;
use vcl_to_wasm::types::{Action, Method, Type};

pub fn e(ty: Type, kind: ExprKind) -> Expr {
    Expr::new(ty, kind)
}

pub fn s(v: &str) -> Expr {
    e(Type::String, ExprKind::Str(v.into()))
}

pub fn int(n: i64) -> Expr {
    e(Type::Int, ExprKind::Int(n))
}

pub fn real(x: f64) -> Expr {
    e(Type::Real, ExprKind::Real(x))
}

pub fn dur(x: f64) -> Expr {
    e(Type::Duration, ExprKind::Duration(x))
}

pub fn boolean(b: bool) -> Expr {
    e(Type::Bool, ExprKind::Bool(b))
}

pub fn hdr(w: HttpWhere, name: &str) -> Expr {
    e(Type::String, ExprKind::Header(w, name.into()))
}

pub fn req(name: &str) -> Expr {
    hdr(HttpWhere::Req, name)
}

pub fn var(id: VarId, ty: Type) -> Expr {
    e(ty, ExprKind::Var(id))
}

pub fn concat(parts: Vec<Expr>) -> Expr {
    e(Type::String, ExprKind::Concat(parts))
}

pub fn to_s(x: Expr) -> Expr {
    e(Type::String, ExprKind::ToString(Box::new(x)))
}

pub fn to_bool(x: Expr) -> Expr {
    e(Type::Bool, ExprKind::ToBool(Box::new(x)))
}

pub fn not(x: Expr) -> Expr {
    e(Type::Bool, ExprKind::Not(Box::new(x)))
}

pub fn and(a: Expr, b: Expr) -> Expr {
    e(Type::Bool, ExprKind::And(Box::new(a), Box::new(b)))
}

pub fn or(a: Expr, b: Expr) -> Expr {
    e(Type::Bool, ExprKind::Or(Box::new(a), Box::new(b)))
}

pub fn cmp(op: CmpOp, a: Expr, b: Expr) -> Expr {
    e(Type::Bool, ExprKind::Cmp(op, Box::new(a), Box::new(b)))
}

pub fn arith(ty: Type, op: ArithOp, a: Expr, b: Expr) -> Expr {
    e(ty, ExprKind::Arith(op, Box::new(a), Box::new(b)))
}

pub fn matches(subject: Expr, regex: RegexId, negate: bool) -> Expr {
    e(
        Type::Bool,
        ExprKind::Match {
            subject: Box::new(subject),
            regex,
            negate,
        },
    )
}

pub fn regsub(all: bool, subject: Expr, regex: RegexId, replacement: &str) -> Expr {
    e(
        Type::String,
        ExprKind::Regsub {
            all,
            subject: Box::new(subject),
            regex,
            replacement: Box::new(s(replacement)),
        },
    )
}

pub fn native(vmod: &str, func: &str, ret: Type, args: Vec<Option<Expr>>) -> Expr {
    e(
        ret,
        ExprKind::Call {
            func: NativeFn {
                vmod: vmod.into(),
                func: func.into(),
            },
            args,
        },
    )
}

pub fn set_hdr(w: HttpWhere, name: &str, value: Expr) -> Stmt {
    Stmt::Set {
        target: Target::Header(w, name.into()),
        op: SetOp::Assign,
        value,
    }
}

/// `set req.http.name = value;`
pub fn set_req(name: &str, value: Expr) -> Stmt {
    set_hdr(HttpWhere::Req, name, value)
}

pub fn add_req(name: &str, value: Expr) -> Stmt {
    Stmt::Set {
        target: Target::Header(HttpWhere::Req, name.into()),
        op: SetOp::Add,
        value,
    }
}

pub fn unset_req(name: &str) -> Stmt {
    Stmt::Unset(Target::Header(HttpWhere::Req, name.into()))
}

pub fn set_var(id: VarId, op: SetOp, value: Expr) -> Stmt {
    Stmt::Set {
        target: Target::Var(id),
        op,
        value,
    }
}

pub fn ret(a: Action) -> Stmt {
    Stmt::Return(Return::Plain(a))
}

pub fn synth(status: i64, reason: Option<Expr>) -> Stmt {
    Stmt::Return(Return::Synth {
        action: Action::Synth,
        status: Box::new(int(status)),
        reason: reason.map(Box::new),
    })
}

pub fn if_(cond: Expr, then: Vec<Stmt>, els: Vec<Stmt>) -> Stmt {
    Stmt::If { cond, then, els }
}

pub fn method(m: Method, body: Vec<Stmt>) -> Sub {
    Sub {
        name: m.sub_name().into(),
        method: Some(m),
        body,
    }
}

pub fn user(name: &str, body: Vec<Stmt>) -> Sub {
    Sub {
        name: name.into(),
        method: None,
        body,
    }
}

pub fn program(subs: Vec<Sub>) -> Program {
    program_with(subs, Metadata::default())
}

pub fn program_with(subs: Vec<Sub>, meta: Metadata) -> Program {
    Program { subs, meta }
}

/// A program whose `vcl_recv` is `body`.
pub fn recv(body: Vec<Stmt>) -> Program {
    program(vec![method(Method::Recv, body)])
}

/// Metadata with these regexes.
pub fn with_regexes(res: &[&str]) -> Metadata {
    Metadata {
        regexes: res.iter().map(|r| r.to_string()).collect(),
        ..Metadata::default()
    }
}

/// Compiles, panicking on generator errors (tests only).
pub fn compile(p: &Program) -> Vec<u8> {
    match vcl_to_wasm::codegen::generate(p) {
        Ok((wasm, _)) => wasm,
        Err(e) => panic!("codegen failed: {e}"),
    }
}
