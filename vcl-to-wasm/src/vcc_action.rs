//! Statements (Varnish's `vcc_action`): `set`, `unset`, `call`, `return`,
//! `if`, `new`, `hash_data`, `synthetic`, `ban` and procedure calls.
//!
//! Compound assignments are lowered here (`set x += y` becomes
//! `set x = x + y`), so the code generator only sees plain assignment.

use crate::ast;
use crate::error::Span;
use crate::tir::{ArithOp, Expr, ExprKind as K, NativeFn, Return, SetOp, Stmt, Target};
use crate::types::{Action, Method, MethodSet, Type};
use crate::vcc_compile::{err, CResult, Checker, SymKind, UseKind};

/// The methods where `action` may be returned.
pub(crate) fn methods_allowing(action: Action) -> MethodSet {
    let mut set = MethodSet::NONE;
    for m in Method::ALL {
        if crate::returns::allowed_returns(m).contains(&action) {
            set = set.union(MethodSet(m.bit()));
        }
    }
    set
}

impl Checker {
    pub(crate) fn check_block(&mut self, body: &[ast::Stmt], out: &mut Vec<Stmt>) -> CResult<()> {
        for s in body {
            self.check_stmt(s, out)?;
        }
        Ok(())
    }

    fn check_stmt(&mut self, s: &ast::Stmt, out: &mut Vec<Stmt>) -> CResult<()> {
        match s {
            ast::Stmt::Block(b) => self.check_block(b, out)?,
            ast::Stmt::Trace { n, at } => {
                let source = self
                    .trace_sources
                    .iter()
                    .position(|s| std::sync::Arc::ptr_eq(s, &at.source))
                    .unwrap_or(0) as u32;
                let (line, pos) = at.line_col();
                let i = *n as usize;
                if self.meta.traces.len() <= i {
                    self.meta.traces.resize(i + 1, [0; 3]);
                }
                self.meta.traces[i] = [source, line as u32, pos as u32];
                out.push(Stmt::Trace(*n));
            }
            ast::Stmt::Set {
                target,
                op,
                op_span,
                value,
            } => out.push(self.set(target, op, op_span, value)?),
            ast::Stmt::Unset { target } => {
                let (t, _) = self.target(target, false)?;
                out.push(Stmt::Unset(t));
            }
            ast::Stmt::Call { name } => {
                let id = match self.symbols.get(&name.name).map(|s| s.kind) {
                    Some(SymKind::Sub(id)) => id,
                    Some(other) => {
                        return Err(err(
                            format!(
                                "Symbol '{}' has wrong type ({}), expected sub:",
                                name.name,
                                other.describe()
                            ),
                            &name.span,
                        ))
                    }
                    None if crate::vcc_expr::is_keyword(&name.name) => {
                        return Err(err(
                            format!(
                                "Symbol '{}' type (reserved) can not be used in expression.",
                                name.name
                            ),
                            &name.span,
                        ))
                    }
                    None => {
                        self.undefined.push(err(
                            format!("Undefined sub {}, first reference:", name.name),
                            &name.span,
                        ));
                        return Ok(());
                    }
                };
                self.reference(&name.name);
                let cur = self.cur;
                self.subs[cur as usize].calls.push((id, name.span.clone()));
                out.push(Stmt::Call(id));
            }
            ast::Stmt::Return { action, args, span } => {
                let Some(action) = action else {
                    // A bare `return;` leaves a user sub (not a method).
                    if self.subs[self.cur as usize].method.is_some() {
                        return Err(err("Expected '(' got ';'", span));
                    }
                    out.push(Stmt::Leave);
                    return Ok(());
                };
                out.push(self.ret(action, args.as_deref())?);
            }
            ast::Stmt::If { cond, then, els } => {
                let c = self.expr(cond, Type::Bool)?;
                let mut t = Vec::new();
                self.check_block(then, &mut t)?;
                let mut e = Vec::new();
                if let Some(els) = els {
                    self.check_block(els, &mut e)?;
                }
                out.push(Stmt::If {
                    cond: c,
                    then: t,
                    els: e,
                });
            }
            ast::Stmt::New { name, ctor, args } => {
                self.record_use(MethodSet::of(&[Method::Init]), &name.span, UseKind::Action);
                let Some(SymKind::Object(id)) = self.symbols.get(&name.name).map(|s| s.kind) else {
                    return Err(err(
                        format!("Symbol not found: '{}'", name.name),
                        &name.span,
                    ));
                };
                let obj = self.objects[id as usize].clone();
                let args = self.bind_args(&obj.class.ctor_args, args, &ctor.span)?;
                out.push(Stmt::New {
                    object: id,
                    ctor: NativeFn {
                        vmod: obj.vmod.name.to_string(),
                        func: obj.class.name.to_string(),
                    },
                    args,
                });
            }
            ast::Stmt::Action { name, args } => {
                let allowed = match name.name.as_str() {
                    "hash_data" => MethodSet::of(&[Method::Hash]),
                    "synthetic" => MethodSet::of(&[Method::Synth, Method::BackendError]),
                    _ => MethodSet::ALL,
                };
                if args.len() != 1 {
                    return Err(err(
                        format!("{}() takes one argument", name.name),
                        &name.span,
                    ));
                }
                self.record_use(allowed, &name.span, UseKind::Action);
                let v = self.expr(&args[0], Type::String)?;
                out.push(match name.name.as_str() {
                    "hash_data" => Stmt::HashData(v),
                    "synthetic" => Stmt::Synthetic(v),
                    _ => Stmt::Ban(v),
                });
            }
            ast::Stmt::CallExpr(e) => {
                let te = self.expr(e, Type::Void)?;
                out.push(Stmt::Expr(te));
            }
        }
        Ok(())
    }

    /// Resolves a `set`/`unset` target; returns it with the type a value
    /// assigned to it must have.
    fn target(&mut self, id: &ast::Ident, for_set: bool) -> CResult<(Target, Type)> {
        if let Some((_, def, member)) = self.quoted_member(&id.name, &id.span)? {
            let allowed = if for_set { def.write } else { def.unset };
            let what = if for_set {
                UseKind::Set
            } else {
                UseKind::Unset
            };
            self.record_use(allowed, &id.span, what);
            if let Some(w) = def.header_family {
                return Ok((Target::Header(w, member), Type::String));
            }
        }
        let Some((var, def)) = crate::vars::lookup(&id.name, self.version) else {
            if let Some((_, d)) = crate::vars::lookup_any_version(&id.name) {
                return Err(err(
                    format!("Symbol not found: '{}' {}", id.name, d.version_note()),
                    &id.span,
                ));
            }
            return Err(err(format!("Symbol not found: '{}'", id.name), &id.span));
        };
        let allowed = if for_set { def.write } else { def.unset };
        if for_set && allowed.is_empty() && !def.read.is_empty() {
            self.record_use(MethodSet::NONE, &id.span, UseKind::SetReadOnly(def.read));
            let ty = if def.header_family.is_some() {
                Type::String
            } else {
                def.ty
            };
            return Ok((Target::Var(var), ty));
        }
        if allowed.is_empty() {
            let msg = match (for_set, def.read.is_empty()) {
                (true, false) => "Variable is read only.",
                (true, true) => "Variable cannot be set.",
                (false, _) => "Variable cannot be unset.",
            };
            return Err(err(msg, &id.span));
        }
        let what = if for_set {
            UseKind::Set
        } else {
            UseKind::Unset
        };
        self.record_use(allowed, &id.span, what);
        if let Some(w) = def.header_family {
            let hdr = &id.name[def.name.len()..];
            crate::vars::check_header_name(hdr).map_err(|m| err(m, &id.span))?;
            return Ok((Target::Header(w, hdr.to_string()), Type::String));
        }
        let ty = match def.ty {
            Type::Body | Type::Header | Type::Strands => Type::String,
            t => t,
        };
        Ok((Target::Var(var), ty))
    }

    fn set(
        &mut self,
        target: &ast::Ident,
        op: &str,
        op_span: &Span,
        value: &ast::Expr,
    ) -> CResult<Stmt> {
        let (t, ty) = self.target(target, true)?;
        if op == "=" {
            let v = self.expr(value, ty)?;
            return Ok(Stmt::Set {
                target: t,
                op: SetOp::Assign,
                value: v,
            });
        }
        let current = || -> Expr {
            match &t {
                Target::Var(id) => Expr::new(ty, K::Var(*id)),
                Target::Header(w, n) => Expr::new(Type::String, K::Header(*w, n.clone())),
            }
        };
        let value = match (ty, op) {
            (Type::String, "+=") => {
                let v = self.expr(value, Type::String)?;
                Expr::new(Type::String, K::Concat(vec![current(), v]))
            }
            (Type::Int | Type::Real | Type::Duration | Type::Bytes, "+=" | "-=") => {
                let v = self.expr(value, ty)?;
                let aop = if op == "+=" {
                    ArithOp::Add
                } else {
                    ArithOp::Sub
                };
                Expr::new(ty, K::Arith(aop, Box::new(current()), Box::new(v)))
            }
            (Type::Time, "+=" | "-=") => {
                let v = self.expr(value, Type::Duration)?;
                let aop = if op == "+=" {
                    ArithOp::Add
                } else {
                    ArithOp::Sub
                };
                Expr::new(ty, K::Arith(aop, Box::new(current()), Box::new(v)))
            }
            (Type::Int, "*=" | "/=") => {
                let v = self.expr(value, Type::Int)?;
                let aop = if op == "*=" {
                    ArithOp::Mul
                } else {
                    ArithOp::Div
                };
                Expr::new(ty, K::Arith(aop, Box::new(current()), Box::new(v)))
            }
            (Type::Real | Type::Duration | Type::Bytes, "*=" | "/=") => {
                let v = self.expr(value, Type::Real)?;
                let aop = if op == "*=" {
                    ArithOp::Mul
                } else {
                    ArithOp::Div
                };
                Expr::new(ty, K::Arith(aop, Box::new(current()), Box::new(v)))
            }
            (Type::Bool | Type::Backend | Type::Ip | Type::Http | Type::Probe, _) => {
                return Err(err(format!("Expected '=' got '{}'", op), op_span))
            }
            _ => {
                return Err(err(
                    format!("Operator {} not possible on type {}.", op, ty),
                    op_span,
                ))
            }
        };
        Ok(Stmt::Set {
            target: t,
            op: SetOp::Assign,
            value,
        })
    }

    fn ret(&mut self, action: &ast::Ident, args: Option<&[ast::Expr]>) -> CResult<Stmt> {
        let Some(a) = Action::from_name(&action.name) else {
            return Err(err("Expected return action name.", &action.span));
        };
        self.record_use(methods_allowing(a), &action.span, UseKind::Return(a));
        let spec = crate::returns::action_args(a);
        let args = match args {
            None if !spec.bare => return Err(err("Missing argument.", &action.span)),
            None => &[][..],
            Some(list) if spec.args.is_empty() => {
                let at = list.first().map(|e| &e.span).unwrap_or(&action.span);
                return Err(err("Arguments not allowed.", at));
            }
            Some(list) => {
                if list.len() < spec.required || list.len() > spec.args.len() {
                    return Err(err("Missing argument.", &action.span));
                }
                list
            }
        };
        let r = match a {
            Action::Synth | Action::Error if !args.is_empty() => {
                let status = self.expr(&args[0], Type::Int)?;
                let reason = match args.get(1) {
                    Some(r) => Some(Box::new(self.expr(r, Type::String)?)),
                    None => None,
                };
                Return::Synth {
                    action: a,
                    status: Box::new(status),
                    reason,
                }
            }
            Action::Error => Return::Synth {
                action: a,
                status: Box::new(Expr::new(Type::Int, K::Int(503))),
                reason: None,
            },
            Action::Fail if !args.is_empty() => Return::Synth {
                action: a,
                status: Box::new(Expr::new(Type::Int, K::Int(503))),
                reason: Some(Box::new(self.expr(&args[0], Type::String)?)),
            },
            Action::Pass if !args.is_empty() => {
                Return::PassFor(Box::new(self.expr(&args[0], Type::Duration)?))
            }
            Action::Vcl => {
                let label = &args[0];
                let name = match &label.kind {
                    ast::ExprKind::Sym(s) => s.clone(),
                    _ => return Err(err("Expected a VCL label", &label.span)),
                };
                if !self.opts.labels.contains(&name) {
                    return Err(err(format!("Symbol not found: '{}'", name), &label.span));
                }
                let idx = match self.meta.labels.iter().position(|l| *l == name) {
                    Some(i) => i,
                    None => {
                        self.meta.labels.push(name);
                        self.meta.labels.len() - 1
                    }
                };
                Return::Vcl(idx as u32)
            }
            _ => Return::Plain(a),
        };
        Ok(Stmt::Return(r))
    }
}
