//! Expressions (Varnish's `vcc_expr`): typing, implicit conversions and
//! symbol resolution, producing [`tir::Expr`].
//!
//! As in Varnish, an expression is checked against the type its context
//! expects (`fmt`): that decides whether `+` concatenates strings, whether a
//! bare number is a REAL, and which conversions apply at the end.

use crate::ast::{self, ExprKind as A};
use crate::error::Span;
use crate::tir::{self, ArithOp, CmpOp, Expr, ExprKind as K, HttpWhere, NativeFn};
use crate::types::{MethodSet, Type};
use crate::vcc_backend::{bytes_unit, duration_unit};
use crate::vcc_compile::{err, CResult, Checker, SymKind, UseKind};
use crate::vmods;

/// Where a variable name's header family points.
pub(crate) fn http_where(prefix: &str) -> Option<HttpWhere> {
    Some(match prefix {
        "req" => HttpWhere::Req,
        "req_top" => HttpWhere::ReqTop,
        "bereq" => HttpWhere::Bereq,
        "beresp" => HttpWhere::Beresp,
        "resp" => HttpWhere::Resp,
        "obj" => HttpWhere::Obj,
        _ => return None,
    })
}

fn span_join(a: &Span, b: &Span) -> Span {
    let mut s = a.clone();
    if std::sync::Arc::ptr_eq(&a.source, &b.source) && b.end > a.start {
        s.end = b.end;
    }
    s
}

/// `l + r` of two STRING expressions: one flat concatenation.
fn concat(l: Expr, r: Expr) -> Expr {
    let mut parts = match l.kind {
        K::Concat(v) => v,
        other => vec![Expr::new(Type::String, other)],
    };
    parts.push(r);
    Expr::new(Type::String, K::Concat(parts))
}

fn is_stringish(t: Type) -> bool {
    matches!(t, Type::String | Type::Strands | Type::Body)
}

impl Checker {
    /// Checks `e` and converts the result to `fmt`.
    pub(crate) fn expr(&mut self, e: &ast::Expr, fmt: Type) -> CResult<Expr> {
        let te = self.expr0(e, fmt)?;
        self.convert(te, fmt, &e.span)
    }

    /// An operand of `&&`, `||` or `!`, which must be BOOL (after the usual
    /// conversions), with varnishd's message when it is not.
    fn bool_operand(&mut self, e: &ast::Expr, op: &str, side: &str) -> CResult<Expr> {
        let te = self.expr0(e, Type::Bool)?;
        let ty = te.ty;
        self.convert(te, Type::Bool, &e.span).map_err(|_| {
            err(
                format!("'{}' must be {} by BOOL, found {}.", op, side, ty),
                &e.span,
            )
        })
    }

    /// Implicit conversion to the type the context wants.
    pub(crate) fn convert(&mut self, te: Expr, fmt: Type, span: &Span) -> CResult<Expr> {
        if te.ty == fmt || fmt == Type::Void {
            return Ok(te);
        }
        match fmt {
            Type::String | Type::Strands | Type::Body => {
                if is_stringish(te.ty) {
                    return Ok(Expr::new(Type::String, te.kind));
                }
                if te.ty.stringifies() {
                    return Ok(Expr::new(Type::String, K::ToString(Box::new(te))));
                }
                // An ACL prints as its name.
                if let K::Acl(id) = te.kind {
                    if let Some(a) = self.meta.acls.get(id as usize) {
                        return Ok(Expr::new(Type::String, K::Str(a.name.clone())));
                    }
                }
            }
            Type::Bool => {
                if matches!(
                    te.ty,
                    Type::String | Type::Strands | Type::Int | Type::Duration | Type::Backend
                ) {
                    return Ok(Expr::new(Type::Bool, K::ToBool(Box::new(te))));
                }
            }
            Type::Real if te.ty == Type::Int => {
                return Ok(Expr::new(Type::Real, K::IntToReal(Box::new(te))));
            }
            // A string constant where an IP is wanted is parsed when the
            // VCL loads (varnishd resolves it at compile time).
            Type::Ip => {
                if let K::Str(lit) = &te.kind {
                    if !crate::vcc_backend::plausible_address(lit) {
                        return Err(err(
                            format!(
                                "IP constant '{}' could not be resolved to an IP address",
                                lit
                            ),
                            span,
                        ));
                    }
                    return Ok(Expr::new(
                        Type::Ip,
                        K::Call {
                            func: vcl_fn("ip"),
                            args: vec![Some(te)],
                        },
                    ));
                }
            }
            _ => {}
        }
        if let K::SubRef(id) = te.kind {
            let name = self
                .subs
                .get(id as usize)
                .map(|s| s.name.clone())
                .unwrap_or_default();
            return Err(err(
                format!("Symbol '{}' can only be used as a SUB expression", name),
                span,
            ));
        }
        if matches!(fmt, Type::String | Type::Strands) && !matches!(te.ty, Type::Sub | Type::Void) {
            return Err(err(format!("Cannot convert {} to STRING", te.ty), span));
        }
        Err(err(
            format!("Expression has type {}, expected {}", te.ty, fmt),
            span,
        ))
    }

    fn expr0(&mut self, e: &ast::Expr, fmt: Type) -> CResult<Expr> {
        match &e.kind {
            A::Paren(inner) => self.expr0(inner, fmt),
            A::Str(s) => Ok(Expr::new(Type::String, K::Str(s.clone()))),
            A::Blob(b) => {
                // The lexer has validated it already.
                let bytes = crate::vcc_token::decode_blob(b.as_bytes())
                    .map_err(|x| err(x.message, &e.span))?;
                Ok(Expr::new(Type::Blob, K::Blob(bytes)))
            }
            A::Number { text, real, unit } => self.number(text, *real, unit.as_deref(), fmt, e),
            A::Sym(name) => self.symbol(name, &e.span, fmt),
            A::Call { func, args } => self.call(func, args, &e.span),
            A::Method { recv, name, args } => {
                let r = self.expr0(recv, Type::String)?;
                self.value_method(r, name, args, &e.span)
            }
            A::Unary { op, expr } => match op.as_str() {
                "!" => {
                    let inner = self.bool_operand(expr, "!", "followed")?;
                    Ok(Expr::new(Type::Bool, K::Not(Box::new(inner))))
                }
                "-" => {
                    let inner = self.expr0(expr, fmt)?;
                    if !matches!(
                        inner.ty,
                        Type::Int | Type::Real | Type::Duration | Type::Bytes
                    ) {
                        return Err(err(
                            format!("Unknown token '-' when looking for {}", fmt),
                            &e.span,
                        ));
                    }
                    Ok(Expr::new(inner.ty, K::Neg(Box::new(inner))))
                }
                _ => self.expr0(expr, fmt),
            },
            A::Chain { first, rest } => {
                let logical = rest.first().map(|(op, _, _)| op == "||" || op == "&&");
                if logical == Some(true) {
                    let or = rest[0].0 == "||";
                    let op = &rest[0].0;
                    let mut operands = vec![self.bool_operand(first, op, "preceeded")?];
                    for (_, _, e) in rest {
                        operands.push(self.bool_operand(e, op, "followed")?);
                    }
                    return Ok(balanced(operands, or));
                }
                let mut acc = self.expr0(first, fmt)?;
                let mut arith = 0;
                for (op, op_span, rhs) in rest {
                    acc = self.add(acc, &first.span, op, op_span, rhs, fmt)?;
                    if matches!(acc.kind, K::Arith(..)) {
                        arith += 1;
                        if arith > 256 {
                            return Err(err("Expression too complex", op_span));
                        }
                    }
                }
                Ok(acc)
            }
            A::Binary {
                op,
                op_span,
                lhs,
                rhs,
            } => match op.as_str() {
                "==" | "!=" | "<" | "<=" | ">" | ">=" | "~" | "!~" => {
                    self.compare(op, op_span, lhs, rhs, fmt)
                }
                _ => self.mul(op, op_span, lhs, rhs, fmt),
            },
        }
    }

    fn number(
        &mut self,
        text: &str,
        real: bool,
        unit: Option<&str>,
        fmt: Type,
        e: &ast::Expr,
    ) -> CResult<Expr> {
        let v: f64 = text
            .parse()
            .map_err(|_| err(format!("Bad number '{}'", text), &e.span))?;
        if let Some(unit) = unit {
            if fmt == Type::Bytes {
                if let Some(f) = bytes_unit(unit) {
                    return Ok(Expr::new(Type::Bytes, K::Bytes((v * f) as i64)));
                }
                return Err(err(
                    format!(
                        "Unknown BYTES unit '{}'. Legal are 'B', 'KB', 'MB', 'GB' and 'TB'",
                        unit
                    ),
                    &e.span,
                ));
            }
            let Some(f) = duration_unit(unit) else {
                let mut s = e.span.clone();
                s.start = s.end.saturating_sub(unit.len());
                return Err(err(
                    format!(
                        "Unknown duration unit '{}'\nLegal duration units are 'ms', 's', 'm', 'h', 'd', 'w' and 'y'",
                        unit
                    ),
                    &s,
                ));
            };
            return Ok(Expr::new(Type::Duration, K::Duration(v * f)));
        }
        if real {
            let (int_part, frac) = text.split_once('.').unwrap_or((text, ""));
            if int_part.len() > 12 || frac.len() > 3 {
                return Err(err("Too many digits for real.", &e.span));
            }
        }
        if real || fmt == Type::Real {
            return Ok(Expr::new(Type::Real, K::Real(v)));
        }
        if text.len() > 15 {
            return Err(err("Too many digits for integer.", &e.span));
        }
        let i: i64 = text
            .parse()
            .map_err(|_| err("Too many digits for integer.", &e.span))?;
        Ok(Expr::new(Type::Int, K::Int(i)))
    }

    /// A bare name in an expression.
    fn symbol(&mut self, name: &str, span: &Span, fmt: Type) -> CResult<Expr> {
        // varnishd takes `true`/`false` in any case (`True` is seen in tests).
        if name.eq_ignore_ascii_case("true") {
            return Ok(Expr::new(Type::Bool, K::Bool(true)));
        }
        if name.eq_ignore_ascii_case("false") {
            return Ok(Expr::new(Type::Bool, K::Bool(false)));
        }
        if fmt == Type::Http {
            if let Some(w) = http_where(name) {
                return Ok(Expr::new(Type::Http, K::Http(w)));
            }
        }
        // BODY variables (`resp.body`, `beresp.body`) are write only; varnishd
        // refuses a read by its type first.
        if let Some((_, def)) = crate::vars::lookup(name, self.version) {
            if def.ty == Type::Body && def.read.is_empty() {
                let msg = if matches!(fmt, Type::String | Type::Strands) {
                    "Cannot convert BODY to STRING.".to_string()
                } else {
                    format!("Expression has type BODY, expected {}", fmt)
                };
                return Err(err(msg, span));
            }
        }
        if let Some(e) = self.variable_read(name, span)? {
            return Ok(e);
        }
        if let Some(sym) = self.symbols.get(name).cloned() {
            self.reference(name);
            return Ok(match sym.kind {
                SymKind::Backend(id) => Expr::new(Type::Backend, K::Backend(id)),
                SymKind::Acl(id) => Expr::new(Type::Acl, K::Acl(id)),
                SymKind::Probe(id) => Expr::new(Type::Probe, K::Probe(id)),
                SymKind::Sub(id) => {
                    let cur = self.cur;
                    self.subs[cur as usize].calls.push((id, span.clone()));
                    Expr::new(Type::Sub, K::SubRef(id))
                }
                SymKind::Object(id) => Expr::new(Type::Instance, K::Object(id)),
                SymKind::Vmod => {
                    return Err(err(
                        format!(
                            "Symbol '{}' type (vmod) can not be used in expression.",
                            name
                        ),
                        span,
                    ))
                }
            });
        }
        if is_keyword(name) {
            return Err(err(
                format!(
                    "Symbol '{}' type (reserved) can not be used in expression.",
                    name
                ),
                span,
            ));
        }
        if fmt == Type::Backend && !name.contains('.') {
            self.undefined.push(err(
                format!("Undefined backend {}, first reference:", name),
                span,
            ));
            return Ok(Expr::new(Type::Backend, K::Null));
        }
        if matches!(
            name,
            "ban" | "call" | "hash_data" | "new" | "return" | "set" | "synthetic" | "unset"
        ) {
            return Err(err(
                format!(
                    "Symbol '{}' type (action) can not be used in expression.",
                    name
                ),
                span,
            ));
        }
        if name == "default" {
            return Err(err("Symbol 'default' is a reserved word.", span));
        }
        Err(err(format!("Symbol not found: '{}'", name), span))
    }

    /// Reads a variable, header or storage backend, then any type
    /// properties written after it (`storage.s0.free_space`), recording
    /// where the read is allowed. `None` if `name` is not a variable.
    pub(crate) fn variable_read(&mut self, name: &str, span: &Span) -> CResult<Option<Expr>> {
        if let Some((_, def, member)) = self.quoted_member(name, span)? {
            self.record_use(def.read, span, UseKind::Read);
            return Ok(def
                .header_family
                .map(|w| Expr::new(Type::String, K::Header(w, member))));
        }
        let Some((id, def, rest)) = crate::vars::lookup_prefix(name, self.version) else {
            if let Some((_, d)) = crate::vars::lookup_any_version(name) {
                return Err(err(
                    format!("Symbol not found: '{}' {}", name, d.version_note()),
                    span,
                ));
            }
            return Ok(None);
        };
        let head = &name[..name.len() - rest.len()];
        let mut hspan = span.clone();
        hspan.end = (hspan.start + head.len()).min(span.end);
        if def.read.is_empty() {
            return Err(err("Variable is write only.", &hspan));
        }
        self.record_use(def.read, &hspan, UseKind::Read);
        let mut value = if let Some(w) = def.header_family {
            let hdr = &head[def.name.len()..];
            crate::vars::check_header_name(hdr).map_err(|m| err(m, &hspan))?;
            Expr::new(Type::String, K::Header(w, hdr.to_string()))
        } else if def.family {
            // `storage.NAME`: the host looks the storage backend up by name.
            let member = &head[def.name.len()..];
            if !self.opts.storages.iter().any(|s| s == member) {
                return Err(err(format!("Symbol not found: '{}'", head), &hspan));
            }
            Expr::new(
                def.ty,
                K::Call {
                    func: vcl_fn("storage"),
                    args: vec![Some(Expr::new(Type::String, K::Str(member.to_string())))],
                },
            )
        } else {
            Expr::new(def.ty, K::Var(id))
        };
        for prop in rest.split('.').skip(1) {
            value = self.property(value, prop, false, span)?;
        }
        Ok(Some(value))
    }

    /// `req.http."a.b"`: the family entry and the unquoted member name.
    pub(crate) fn quoted_member(
        &self,
        name: &str,
        span: &Span,
    ) -> CResult<Option<(tir::VarId, &'static crate::vars::VarDef, String)>> {
        let Some(q) = name.find(".\"") else {
            return Ok(None);
        };
        let (prefix, quoted) = (&name[..q + 1], &name[q + 1..]);
        let member = quoted.trim_matches('"');
        if self.version < 41 {
            return Err(err("Quoted headers are available for VCL >= 4.1.", span));
        }
        let Some((id, def)) = crate::vars::lookup_family(prefix, self.version)
            .filter(|(_, d)| d.header_family.is_some())
        else {
            return Err(err(format!("Symbol not found: '{}'", name), span));
        };
        crate::vars::check_header_name(member).map_err(|m| err(m, span))?;
        Ok(Some((id, def, member.to_string())))
    }

    /// `value.prop` or `value.prop()`: the properties Varnish 7.1 defines
    /// per type (see `vars::type_properties`).
    fn property(&mut self, value: Expr, prop: &str, called: bool, span: &Span) -> CResult<Expr> {
        let Some(p) = crate::vars::type_property(value.ty, prop) else {
            let ty = if is_stringish(value.ty) {
                "STRINGS".to_string()
            } else {
                value.ty.to_string()
            };
            return Err(err(
                format!("Unknown property '{}' for type {}", prop, ty),
                span,
            ));
        };
        if p.call != called {
            let msg = if p.call {
                format!("Expected '(' after .{}", prop)
            } else {
                format!("Property .{} takes no arguments", prop)
            };
            return Err(err(msg, span));
        }
        Ok(Expr::new(
            p.ret,
            K::Call {
                func: vcl_fn(prop),
                args: vec![Some(value)],
            },
        ))
    }

    fn compare(
        &mut self,
        op: &str,
        op_span: &Span,
        lhs: &ast::Expr,
        rhs: &ast::Expr,
        fmt: Type,
    ) -> CResult<Expr> {
        let l = self.expr0(lhs, fmt)?;
        if op == "~" || op == "!~" {
            let negate = op == "!~";
            if l.ty == Type::Ip {
                let acl = match &rhs.kind {
                    A::Sym(name) if is_keyword(name) => {
                        return Err(err(
                            format!(
                                "Symbol '{}' type (reserved) can not be used in expression.",
                                name
                            ),
                            &rhs.span,
                        ))
                    }
                    A::Sym(name) => {
                        match self.symbols.get(name).map(|s| (s.kind, s.span.clone())) {
                            Some((SymKind::Acl(id), _)) => {
                                self.reference(name);
                                id
                            }
                            Some((kind, def)) => {
                                return Err(self.not_an_acl(name, kind, &def, &rhs.span))
                            }
                            None if name == "default" => {
                                return Err(err("Symbol 'default' is a reserved word.", &rhs.span))
                            }
                            None if name.starts_with("vcl_") => {
                                return Err(err("Symbols named 'vcl_*' are reserved.", &rhs.span))
                            }
                            None if name.eq_ignore_ascii_case("true")
                                || name.eq_ignore_ascii_case("false") =>
                            {
                                return Err(err(
                                    "Expression has type BOOL, expected ACL",
                                    &rhs.span,
                                ))
                            }
                            None => {
                                self.undefined.push(err(
                                    format!("Undefined acl {}, first reference:", name),
                                    &rhs.span,
                                ));
                                u32::MAX
                            }
                        }
                    }
                    _ => return Err(err("Expected ACL name", &rhs.span)),
                };
                return Ok(Expr::new(
                    Type::Bool,
                    K::AclMatch {
                        ip: Box::new(l),
                        acl,
                        negate,
                    },
                ));
            }
            let l = self.convert(l, Type::String, &lhs.span)?;
            let regex = self.regex_literal(rhs)?;
            return Ok(Expr::new(
                Type::Bool,
                K::Match {
                    subject: Box::new(l),
                    regex,
                    negate,
                },
            ));
        }
        let cop = match op {
            "==" => CmpOp::Eq,
            "!=" => CmpOp::Ne,
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            ">" => CmpOp::Gt,
            _ => CmpOp::Ge,
        };
        let ordered = !matches!(cop, CmpOp::Eq | CmpOp::Ne);
        let (l, r) = match l.ty {
            Type::String | Type::Strands | Type::Body => {
                let r = self.expr0(rhs, Type::String)?;
                if !is_stringish(r.ty) {
                    return Err(err(
                        format!("Comparison of different types: STRING '{}' {}", op, r.ty),
                        op_span,
                    ));
                }
                (
                    Expr::new(Type::String, l.kind),
                    Expr::new(Type::String, r.kind),
                )
            }
            Type::Int | Type::Real | Type::Duration | Type::Time | Type::Bytes => {
                let r = self.expr0(rhs, l.ty)?;
                if r.ty != l.ty {
                    return Err(err(
                        format!("Comparison of different types: {} '{}' {}", l.ty, op, r.ty),
                        op_span,
                    ));
                }
                (l, r)
            }
            Type::Bool | Type::Backend | Type::Ip if ordered => {
                return Err(err(
                    format!("Operator {} not possible on {}", op, l.ty),
                    op_span,
                ))
            }
            Type::Bool | Type::Backend if !ordered => {
                let r = self.expr0(rhs, l.ty)?;
                if r.ty != l.ty {
                    return Err(err(
                        format!("Comparison of different types: {} '{}' {}", l.ty, op, r.ty),
                        op_span,
                    ));
                }
                (l, r)
            }
            Type::Ip if !ordered => {
                let r = self.expr0(rhs, Type::String)?;
                if r.ty == Type::Ip {
                    (l, r)
                } else {
                    let l = self.convert(l, Type::String, &lhs.span)?;
                    let r = self.convert(r, Type::String, &rhs.span)?;
                    (l, r)
                }
            }
            t => {
                return Err(err(
                    format!("Operator {} not possible on {}", op, t),
                    op_span,
                ))
            }
        };
        Ok(Expr::new(Type::Bool, K::Cmp(cop, Box::new(l), Box::new(r))))
    }

    /// varnishd's error for `ip ~ name` where `name` is declared, but not
    /// as an ACL. varnishd resolves names in file order, so its message
    /// depends on whether the declaration comes before the use.
    fn not_an_acl(
        &self,
        name: &str,
        kind: SymKind,
        def: &Span,
        at: &Span,
    ) -> crate::error::Diagnostic {
        let after = std::sync::Arc::ptr_eq(&def.source, &at.source) && def.start > at.start;
        match kind {
            SymKind::Sub(_) if after => err(
                format!("Symbol '{}' has wrong type (acl), expected sub:", name),
                def,
            ),
            SymKind::Sub(_) => err(
                format!("Symbol '{}' can only be used as a SUB expression", name),
                at,
            ),
            SymKind::Backend(_) | SymKind::Probe(_) if after => {
                err(format!("Name {} must have type 'acl'.", name), at)
            }
            SymKind::Backend(_) => err("Expression has type BACKEND, expected ACL", at),
            SymKind::Probe(_) => err("Expression has type PROBE, expected ACL", at),
            SymKind::Object(id) => {
                let ty = self
                    .meta
                    .objects
                    .get(id as usize)
                    .map(|o| format!("{}.{}", o.vmod, o.class))
                    .unwrap_or_else(|| "INSTANCE".to_string());
                err(format!("Expression has type {}, expected ACL", ty), at)
            }
            SymKind::Vmod | SymKind::Acl(_) => {
                err(format!("Undefined acl {}, first reference:", name), at)
            }
        }
    }

    /// The right side of `~`: a constant string (a literal, or literals
    /// joined with `+`), compiled now.
    pub(crate) fn regex_literal(&mut self, e: &ast::Expr) -> CResult<u32> {
        match &e.kind {
            A::Str(s) => self.regex(s, &e.span),
            A::Paren(inner) => self.regex_literal(inner),
            A::Chain { first, rest }
                if rest
                    .iter()
                    .all(|(op, _, x)| op == "+" && matches!(x.kind, A::Str(_)))
                    && matches!(first.kind, A::Str(_)) =>
            {
                let mut pattern = String::new();
                for part in std::iter::once(&**first).chain(rest.iter().map(|(_, _, x)| x)) {
                    if let A::Str(s) = &part.kind {
                        pattern.push_str(s);
                    }
                }
                self.regex(&pattern, &e.span)
            }
            _ => {
                let te = self.expr0(e, Type::Regex)?;
                Err(err(
                    format!("Expression has type {}, expected REGEX", te.ty),
                    &e.span,
                ))
            }
        }
    }

    /// One step of an additive chain: `l op rhs`, where `l` is checked.
    fn add(
        &mut self,
        l: Expr,
        lspan: &Span,
        op: &str,
        op_span: &Span,
        rhs: &ast::Expr,
        fmt: Type,
    ) -> CResult<Expr> {
        let wants_string = matches!(fmt, Type::String | Type::Strands | Type::Body);
        // As varnishd: arithmetic when the operand types have an operator
        // (`10.0 + 3` is 13.000 even in a header), concatenation otherwise
        // when a string is wanted.
        let numeric = matches!(
            l.ty,
            Type::Int | Type::Real | Type::Duration | Type::Bytes | Type::Time
        );
        if op == "+" && (is_stringish(l.ty) || (wants_string && l.ty.stringifies() && !numeric)) {
            let l = self.convert(l, Type::String, lspan)?;
            let r = self.expr0(rhs, Type::String)?;
            if !r.ty.stringifies() {
                return Err(err(
                    format!("{} {} {} not possible.", l.ty, op, r.ty),
                    &span_join(op_span, &rhs.span),
                ));
            }
            let r = self.convert(r, Type::String, &rhs.span)?;
            return Ok(concat(l, r));
        }
        let rfmt = if l.ty == Type::Time {
            Type::Duration
        } else {
            l.ty
        };
        let r = self.expr0(rhs, rfmt)?;
        if op == "+" && wants_string && is_stringish(r.ty) && l.ty.stringifies() {
            let l = self.convert(l, Type::String, lspan)?;
            let r = self.convert(r, Type::String, &rhs.span)?;
            return Ok(concat(l, r));
        }
        let aop = if op == "+" {
            ArithOp::Add
        } else {
            ArithOp::Sub
        };
        let result = match (l.ty, op, r.ty) {
            (Type::Int, _, Type::Int) => Some(Type::Int),
            (Type::Int, _, Type::Real)
            | (Type::Real, _, Type::Int)
            | (Type::Real, _, Type::Real) => Some(Type::Real),
            (Type::Duration, _, Type::Duration) => Some(Type::Duration),
            (Type::Bytes, _, Type::Bytes) => Some(Type::Bytes),
            (Type::Time, _, Type::Duration) => Some(Type::Time),
            (Type::Time, "-", Type::Time) => Some(Type::Duration),
            _ => None,
        };
        let Some(result) = result else {
            // No arithmetic for these types: where a string is wanted,
            // varnishd concatenates (`1 + 1s` is "11.000" in a header).
            if op == "+" && wants_string && l.ty.stringifies() && r.ty.stringifies() {
                let l = self.convert(l, Type::String, lspan)?;
                let r = self.convert(r, Type::String, &rhs.span)?;
                return Ok(concat(l, r));
            }
            return Err(err(
                format!("{} {} {} not possible.", l.ty, op, r.ty),
                &span_join(op_span, &rhs.span),
            ));
        };
        let (l, r) = if result == Type::Real {
            (
                self.convert(l, Type::Real, lspan)?,
                self.convert(r, Type::Real, &rhs.span)?,
            )
        } else {
            (l, r)
        };
        Ok(Expr::new(result, K::Arith(aop, Box::new(l), Box::new(r))))
    }

    fn mul(
        &mut self,
        op: &str,
        op_span: &Span,
        lhs: &ast::Expr,
        rhs: &ast::Expr,
        fmt: Type,
    ) -> CResult<Expr> {
        let l = self.expr0(lhs, fmt)?;
        let rfmt = match l.ty {
            Type::Duration | Type::Bytes | Type::Real => Type::Real,
            t => t,
        };
        let r = self.expr0(rhs, rfmt)?;
        if op == "%" && (l.ty != Type::Int || r.ty != Type::Int) {
            return Err(err("Operator % only possible on INT", op_span));
        }
        if is_stringish(l.ty) {
            return Err(err(
                format!("Operator {} not possible on type STRING.", op),
                op_span,
            ));
        }
        let aop = match op {
            "*" => ArithOp::Mul,
            "/" => ArithOp::Div,
            "%" => ArithOp::Mod,
            _ => {
                return Err(err(
                    format!("{} {} {} not possible.", l.ty, op, r.ty),
                    op_span,
                ))
            }
        };
        let result = match (l.ty, r.ty) {
            (Type::Int, Type::Int) => Some(Type::Int),
            (Type::Real, Type::Real) | (Type::Real, Type::Int) => Some(Type::Real),
            (Type::Duration, Type::Real) | (Type::Duration, Type::Int) => Some(Type::Duration),
            (Type::Bytes, Type::Real) | (Type::Bytes, Type::Int) => Some(Type::Bytes),
            _ => None,
        };
        let Some(result) = result else {
            return Err(err(
                format!("{} {} {} not possible.", l.ty, op, r.ty),
                op_span,
            ));
        };
        let r = if result != Type::Int {
            self.convert(r, Type::Real, &rhs.span)?
        } else {
            r
        };
        Ok(Expr::new(result, K::Arith(aop, Box::new(l), Box::new(r))))
    }

    /// `name(args)`: regsub, a VMOD function, an object method, or a method
    /// on a value (`req.url.lower()`).
    fn call(&mut self, func: &ast::Ident, args: &[ast::Arg], span: &Span) -> CResult<Expr> {
        let name = func.name.as_str();
        if name == "regsub" || name == "regsuball" {
            if args.len() != 3 {
                return Err(err(format!("{} takes three arguments", name), &func.span));
            }
            let subject = self.expr(&args[0].value, Type::String)?;
            let regex = self.regex_literal(&args[1].value)?;
            let replacement = self.expr(&args[2].value, Type::String)?;
            return Ok(Expr::new(
                Type::String,
                K::Regsub {
                    all: name == "regsuball",
                    subject: Box::new(subject),
                    regex,
                    replacement: Box::new(replacement),
                },
            ));
        }
        if let Some((head, tail)) = name.split_once('.') {
            if let Some(imp) = self.vmods.get(head) {
                let vmod = imp.vmod.clone();
                if let Some(f) = vmod.functions.iter().find(|f| f.name == tail) {
                    let args = self.bind_args(&f.args, args, &func.span)?;
                    if f.restrict != MethodSet::ALL {
                        self.record_use(f.restrict, &func.span, UseKind::Read);
                    }
                    return Ok(Expr::new(
                        f.ret,
                        K::Call {
                            func: NativeFn {
                                vmod: vmod.name.to_string(),
                                func: f.name.to_string(),
                            },
                            args,
                        },
                    ));
                }
                return Err(err(format!("Symbol not found: '{}'", name), &func.span));
            }
            if let Some(SymKind::Object(id)) = self.symbols.get(head).map(|s| s.kind) {
                self.reference(head);
                let obj = self.objects[id as usize].clone();
                if let Some(m) = obj.class.methods.iter().find(|m| m.name == tail) {
                    let args = self.bind_args(&m.args, args, &func.span)?;
                    if m.restrict != MethodSet::ALL {
                        self.record_use(m.restrict, &func.span, UseKind::Read);
                    }
                    return Ok(Expr::new(
                        m.ret,
                        K::MethodCall {
                            object: id,
                            func: NativeFn {
                                vmod: obj.vmod.name.to_string(),
                                func: format!("{}.{}", obj.class.name, m.name),
                            },
                            args,
                        },
                    ));
                }
                return Err(err(format!("Symbol not found: '{}'", name), &func.span));
            }
            // A method on a value: split at the last dot.
            if let Some((recv, method)) = name.rsplit_once('.') {
                let mut rspan = func.span.clone();
                rspan.end = rspan.start + recv.len();
                if let Some(r) = self.variable_read(recv, &rspan)? {
                    let mut mspan = func.span.clone();
                    mspan.start = rspan.end + 1;
                    let m = ast::Ident {
                        name: method.to_string(),
                        span: mspan,
                    };
                    return self.value_method(r, &m, args, span);
                }
                if let Some(SymKind::Backend(id)) = self.symbols.get(recv).map(|s| s.kind) {
                    self.reference(recv);
                    let b = Expr::new(Type::Backend, K::Backend(id));
                    return self.property(b, method, true, &func.span);
                }
            }
        }
        if matches!(name, "ban" | "hash_data" | "synthetic" | "call" | "new") {
            return Err(err(
                format!(
                    "Symbol '{}' type (action) can not be used in expression.",
                    name
                ),
                &func.span,
            ));
        }
        Err(err(format!("Symbol not found: '{}'", name), &func.span))
    }

    /// Methods on values: `.lower()`, `.upper()`, `.resolve()`.
    fn value_method(
        &mut self,
        recv: Expr,
        name: &ast::Ident,
        args: &[ast::Arg],
        _span: &Span,
    ) -> CResult<Expr> {
        if let Some(a) = args.first() {
            return Err(err("Expected ')'", &a.value.span));
        }
        let recv = if is_stringish(recv.ty) {
            Expr::new(Type::String, recv.kind)
        } else {
            recv
        };
        self.property(recv, &name.name, true, &name.span)
    }

    /// Matches call arguments to a VMOD signature: positional first, then
    /// by name; defaults filled in; optional arguments (`[...]`, with a
    /// default or not) left out as `None`.
    pub(crate) fn bind_args(
        &mut self,
        params: &[vmods::Arg],
        args: &[ast::Arg],
        fspan: &Span,
    ) -> CResult<Vec<Option<Expr>>> {
        let mut slots: Vec<Option<&ast::Arg>> = vec![None; params.len()];
        let mut pos = 0;
        for a in args {
            match &a.name {
                None => {
                    if pos >= params.len() {
                        return Err(err("Too many arguments", &a.value.span));
                    }
                    slots[pos] = Some(a);
                    pos += 1;
                }
                Some(n) => {
                    let Some(i) = params.iter().position(|p| p.name == n.name) else {
                        return Err(err(format!("Unknown argument '{}'", n.name), &n.span));
                    };
                    if slots[i].is_some() {
                        return Err(err(format!("Argument '{}' already used", n.name), &n.span));
                    }
                    slots[i] = Some(a);
                }
            }
        }
        let mut out = Vec::with_capacity(params.len());
        for (p, slot) in params.iter().zip(slots) {
            match slot {
                Some(a) => out.push(Some(self.vmod_arg(p, &a.value)?)),
                None => {
                    // `[X x=default]` left out is "not given" (Varnish's
                    // `valid_x` is 0): the VMOD applies the default.
                    if p.optional {
                        out.push(None);
                    } else if let Some(d) = &p.default {
                        out.push(self.default_arg(p, d));
                    } else {
                        return Err(err(format!("Argument '{}' missing", p.name), fspan));
                    }
                }
            }
        }
        Ok(out)
    }

    fn vmod_arg(&mut self, p: &vmods::Arg, e: &ast::Expr) -> CResult<Expr> {
        match p.ty {
            Type::Enum => {
                let v = match &e.kind {
                    A::Sym(s) => s.clone(),
                    A::Str(s) => s.clone(),
                    _ => {
                        return Err(err(
                            format!("Expected ENUM for argument '{}'", p.name),
                            &e.span,
                        ))
                    }
                };
                if !p.enum_values.is_empty() && !p.enum_values.contains(&v) {
                    let mut d = err("Wrong enum value.  Expected one of:", &e.span);
                    for x in &p.enum_values {
                        d.notes.push(format!("\t{}", x));
                    }
                    return Err(d);
                }
                Ok(Expr::new(Type::Enum, K::Str(v)))
            }
            Type::Header => match &e.kind {
                A::Sym(name) if name.contains(".\"") => {
                    let Some((_, def, member)) = self.quoted_member(name, &e.span)? else {
                        return Err(err(format!("Symbol not found: '{}'", name), &e.span));
                    };
                    let Some(w) = def.header_family else {
                        return Err(err(
                            format!("Expected a header, '{}' is not one", name),
                            &e.span,
                        ));
                    };
                    self.record_use(def.read, &e.span, UseKind::Read);
                    Ok(Expr::new(Type::Header, K::HeaderRef(w, member)))
                }
                A::Sym(name) => {
                    let Some((_, def)) = crate::vars::lookup(name, self.version) else {
                        return Err(err(format!("Symbol not found: '{}'", name), &e.span));
                    };
                    let Some(w) = def.header_family else {
                        return Err(err(
                            format!("Expected a header, '{}' is not one", name),
                            &e.span,
                        ));
                    };
                    self.record_use(def.read, &e.span, UseKind::Read);
                    let hdr = &name[def.name.len()..];
                    Ok(Expr::new(Type::Header, K::HeaderRef(w, hdr.to_string())))
                }
                _ => {
                    let te = self.expr0(e, Type::Header)?;
                    Err(err(
                        format!("Expression has type {}, expected HEADER", te.ty),
                        &e.span,
                    ))
                }
            },
            Type::Http => match &e.kind {
                A::Sym(name) => match http_where(name) {
                    Some(w) => Ok(Expr::new(Type::Http, K::Http(w))),
                    None => Err(err(format!("Symbol not found: '{}'", name), &e.span)),
                },
                _ => Err(err("Expected req, bereq, beresp or resp", &e.span)),
            },
            Type::Regex => {
                let id = self.regex_literal(e)?;
                Ok(Expr::new(Type::Regex, K::Regex(id)))
            }
            Type::Strands => self.expr(e, Type::String),
            t => self.expr(e, t),
        }
    }

    /// A parameter's default, from its VCL text in the signature.
    fn default_arg(&mut self, p: &vmods::Arg, text: &str) -> Option<Expr> {
        if p.default_is_null() {
            return None;
        }
        if p.ty == Type::Enum {
            return Some(Expr::new(
                Type::Enum,
                K::Str(text.trim_matches('"').to_string()),
            ));
        }
        let src = std::sync::Arc::new(crate::error::Source {
            name: "<vmod default>".into(),
            text: text.to_string(),
        });
        let toks = crate::vcc_token::tokenize(&src, false).ok()?;
        let e = crate::vcc_parse::Parser::new(toks).expr().ok()?;
        let fmt = if p.ty == Type::Strands {
            Type::String
        } else {
            p.ty
        };
        let te = self.expr0(&e, fmt).ok()?;
        // VMOD signatures write BOOL defaults as 0/1.
        if fmt == Type::Bool {
            if let K::Int(i) = te.kind {
                return Some(Expr::new(Type::Bool, K::Bool(i != 0)));
            }
        }
        self.convert(te, fmt, &e.span).ok()
    }
}

/// VCL's keywords: never symbols.
pub(crate) fn is_keyword(name: &str) -> bool {
    matches!(
        name,
        "acl"
            | "backend"
            | "probe"
            | "sub"
            | "import"
            | "include"
            | "vcl"
            | "if"
            | "else"
            | "elsif"
            | "elseif"
            | "new"
            | "return"
    )
}

/// A host-native helper of the language itself (type properties,
/// conversions of constants): VMOD name `vcl`.
fn vcl_fn(name: &str) -> NativeFn {
    NativeFn {
        vmod: "vcl".into(),
        func: name.into(),
    }
}

/// Builds `a || b || c` (or `&&`) as a balanced tree: evaluation order and
/// short-circuiting are those of the flat chain, and the depth stays
/// logarithmic for the code generator.
fn balanced(mut operands: Vec<Expr>, or: bool) -> Expr {
    if operands.len() == 1 {
        if let Some(e) = operands.pop() {
            return e;
        }
    }
    let right = operands.split_off(operands.len() / 2);
    let l = Box::new(balanced(operands, or));
    let r = Box::new(balanced(right, or));
    Expr::new(Type::Bool, if or { K::Or(l, r) } else { K::And(l, r) })
}
