//! The VCL parser (Varnish's `vcc_parse`, with the expression grammar of
//! `vcc_expr`): tokens in, [`ast::Program`] out.
//!
//! Operator precedence, loosest first: `||`, `&&`, `!`, comparisons
//! (`== != < <= > >= ~ !~`), `+ -`, `* / %`, unary `-`, then primaries.
//! As in Varnish, `!` binds looser than a comparison: `!a == b` is
//! `!(a == b)`.

use crate::ast::*;
use crate::error::{Diagnostic, Span};
use crate::vcc_token::{TokKind, Token};

/// Nesting deeper than this (blocks or parentheses) is refused, so that no
/// input can overflow the stack.
const MAX_DEPTH: usize = 200;

pub struct Parser {
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
    /// The last trace point's number.
    traces: u32,
}

type PResult<T> = Result<T, Diagnostic>;

impl Parser {
    pub fn new(toks: Vec<Token>) -> Self {
        Parser {
            toks,
            pos: 0,
            depth: 0,
            traces: 0,
        }
    }

    /// Numbers trace points after `n` (the builtin VCL's follow the
    /// program's, as in Varnish).
    pub fn traces_after(mut self, n: u32) -> Self {
        self.traces = n;
        self
    }

    /// A trace point at the next token.
    fn trace(&mut self) -> Stmt {
        self.traces += 1;
        Stmt::Trace {
            n: self.traces,
            at: self.peek().span.clone(),
        }
    }

    fn peek(&self) -> &Token {
        let last = self.toks.len().saturating_sub(1);
        &self.toks[self.pos.min(last)]
    }

    fn peek_at(&self, n: usize) -> &Token {
        let last = self.toks.len().saturating_sub(1);
        &self.toks[(self.pos + n).min(last)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn err_at(&self, msg: impl Into<String>, t: &Token) -> Diagnostic {
        Diagnostic::new(msg, Some(t.span.clone()))
    }

    /// varnishd's `Expected 'x' got 'y'`.
    fn expect_op(&mut self, op: &str) -> PResult<Token> {
        if self.peek().is_op(op) {
            Ok(self.next())
        } else {
            let t = self.peek();
            Err(self.err_at(format!("Expected '{}' got '{}'", op, t.describe()), t))
        }
    }

    fn expect_id(&mut self) -> PResult<Ident> {
        let t = self.peek();
        if t.kind == TokKind::Id {
            let t = self.next();
            Ok(self.quoted_suffix(Ident {
                name: t.value,
                span: t.span,
            }))
        } else {
            Err(self.err_at(format!("Expected ID got '{}'", t.describe()), t))
        }
    }

    /// `req.http."a.b"`: a quoted header name (VCL 4.1) continues the
    /// identifier; it is kept with its quotes for the checker.
    fn quoted_suffix(&mut self, mut id: Ident) -> Ident {
        if self.peek().is_op(".") && self.peek_at(1).kind == TokKind::Str {
            self.next();
            let s = self.next();
            id.name = format!("{}.\"{}\"", id.name, s.value);
            if std::sync::Arc::ptr_eq(&id.span.source, &s.span.source) {
                id.span.end = s.span.end;
            }
        }
        id
    }

    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let t = self.peek();
            return Err(self.err_at("Nesting too deep", t));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Parses a whole program.
    pub fn program(&mut self) -> PResult<Program> {
        let (version, version_span) = self.version()?;
        let mut items = Vec::new();
        loop {
            let t = self.peek().clone();
            if t.kind == TokKind::Eof {
                break;
            }
            if t.kind == TokKind::Id {
                match t.value.as_str() {
                    "acl" => {
                        self.next();
                        items.push(Item::Acl(self.acl()?));
                        continue;
                    }
                    "sub" => {
                        self.next();
                        items.push(Item::Sub(self.sub()?));
                        continue;
                    }
                    "backend" => {
                        self.next();
                        items.push(Item::Backend(self.backend()?));
                        continue;
                    }
                    "probe" => {
                        self.next();
                        let name = self.expect_id()?;
                        let (fields, _) = self.field_block()?;
                        items.push(Item::Probe(Probe { name, fields }));
                        continue;
                    }
                    "import" => {
                        self.next();
                        items.push(Item::Import(self.import(t.span.clone())?));
                        continue;
                    }
                    "vcl" => {
                        // Later `vcl` lines (varnishtest prepends one; included
                        // files carry their own) may not raise the version.
                        let (v, span) = self.version()?;
                        if v > version {
                            let mut span = span;
                            span.end = self.toks[self.pos.saturating_sub(1)].span.end;
                            return Err(Diagnostic::new(
                                format!(
                                    "VCL version {}.{} higher than the top level version {}.{}",
                                    v / 10,
                                    v % 10,
                                    version / 10,
                                    version % 10
                                ),
                                Some(span),
                            ));
                        }
                        continue;
                    }
                    _ => {}
                }
            }
            if t.is_op(";") {
                // Varnish tolerates stray semicolons at top level.
                self.next();
                continue;
            }
            return Err(self.err_at(
                format!(
                    "Expected one of\n\t'acl', 'sub', 'backend', 'probe', 'import',  or 'vcl'\nFound: '{}' at",
                    t.describe()
                ),
                &t,
            ));
        }
        Ok(Program {
            version,
            version_span,
            items,
            traces: self.traces,
        })
    }

    fn version(&mut self) -> PResult<(u32, Span)> {
        let t = self.peek().clone();
        if !t.is_id("vcl") {
            return Err(self.err_at(
                "VCL version declaration missing\nUpdate your VCL to Version 4 syntax, and add\n\tvcl 4.1;\non the first line of the VCL files.",
                &t,
            ));
        }
        self.next();
        let v = self.next();
        let version = match (v.kind, v.value.as_str()) {
            (TokKind::Real, "4.0") => 40,
            (TokKind::Real, "4.1") => 41,
            (TokKind::Real, _) => {
                let span = Span {
                    source: t.span.source.clone(),
                    start: t.span.start,
                    end: v.span.end,
                };
                return Err(Diagnostic::new(
                    format!("VCL version {} not supported.", v.value),
                    Some(span),
                ));
            }
            _ => {
                return Err(self.err_at(
                    format!("Expected a version number got '{}'", v.describe()),
                    &v,
                ))
            }
        };
        self.expect_op(";")?;
        Ok((version, t.span))
    }

    fn import(&mut self, span: Span) -> PResult<Import> {
        let name = self.expect_id()?;
        let mut alias = None;
        if self.peek().is_id("as") {
            self.next();
            alias = Some(self.expect_id()?);
        }
        let mut from = None;
        if self.peek().is_id("from") {
            self.next();
            let t = self.next();
            if t.kind != TokKind::Str {
                return Err(self.err_at(format!("Expected a string got '{}'", t.describe()), &t));
            }
            from = Some((t.value, t.span));
        }
        self.expect_op(";")?;
        Ok(Import {
            name,
            alias,
            from,
            span,
        })
    }

    fn backend(&mut self) -> PResult<Backend> {
        let name = self.expect_id()?;
        if self.peek().kind == TokKind::Id && self.peek().value.eq_ignore_ascii_case("none") {
            self.next();
            self.expect_op(";")?;
            return Ok(Backend { name, fields: None });
        }
        let (fields, _) = self.field_block()?;
        Ok(Backend {
            name,
            fields: Some(fields),
        })
    }

    /// `{ .name = value; … }` as in backends and probes.
    fn field_block(&mut self) -> PResult<(Vec<Field>, Span)> {
        let open = self.expect_op("{")?;
        self.enter()?;
        let mut fields = Vec::new();
        while !self.peek().is_op("}") {
            let t = self.peek().clone();
            if !t.is_op(".") {
                return Err(self.err_at(format!("Expected '.' got '{}'", t.describe()), &t));
            }
            self.next();
            let name = self.expect_id()?;
            self.expect_op("=")?;
            let value = if self.peek().is_op("{") {
                let (inner, span) = self.field_block()?;
                FieldValue::Block(inner, span)
            } else {
                let v = self.peek().clone();
                match v.kind {
                    TokKind::Str => {
                        let mut strs = Vec::new();
                        while self.peek().kind == TokKind::Str {
                            let s = self.next();
                            strs.push((s.value, s.span));
                        }
                        FieldValue::Strings(strs)
                    }
                    TokKind::Int | TokKind::Real => {
                        self.next();
                        let unit = if self.peek().kind == TokKind::Id {
                            Some(self.next().value)
                        } else {
                            None
                        };
                        FieldValue::Number {
                            text: v.value,
                            unit,
                            span: v.span,
                        }
                    }
                    TokKind::Id => FieldValue::Name(self.expect_id()?),
                    TokKind::Blob => {
                        self.next();
                        FieldValue::Blob(v.value, v.span)
                    }
                    _ => {
                        return Err(self.err_at(format!("Unexpected token '{}'", v.describe()), &v))
                    }
                }
            };
            fields.push(Field { name, value });
            if !matches!(fields.last().map(|f| &f.value), Some(FieldValue::Block(..))) {
                self.expect_op(";")?;
            } else if self.peek().is_op(";") {
                self.next();
            }
        }
        self.next();
        self.leave();
        Ok((fields, open.span))
    }

    fn acl(&mut self) -> PResult<Acl> {
        let name = self.expect_id()?;
        let mut flags = Vec::new();
        while self.peek().is_op("+") || self.peek().is_op("-") {
            let on = self.next().value == "+";
            flags.push((on, self.expect_id()?));
        }
        self.expect_op("{")?;
        let mut entries = Vec::new();
        while !self.peek().is_op("}") {
            // As varnishd: `[(] [!] "addr" [/ bits] [)] ;` — parentheses
            // make an entry optional (a name that does not resolve is
            // skipped instead of refused).
            let mut optional = false;
            if self.peek().is_op("(") {
                self.next();
                optional = true;
            }
            let mut negated = false;
            if self.peek().is_op("!") {
                self.next();
                negated = true;
            }
            let t = self.next();
            if t.kind != TokKind::Str {
                return Err(self.err_at(format!("Expected a string got '{}'", t.describe()), &t));
            }
            let mut mask = None;
            if self.peek().is_op("/") {
                self.next();
                let m = self.next();
                if m.kind != TokKind::Int {
                    return Err(self.err_at(format!("Expected CNUM got '{}'", m.describe()), &m));
                }
                let bits = m.value.parse::<u32>().unwrap_or(u32::MAX);
                mask = Some((bits, m.span));
            }
            if optional {
                self.expect_op(")")?;
            }
            self.expect_op(";")?;
            entries.push(AclEntry {
                negated,
                optional,
                addr: t.value,
                addr_span: t.span,
                mask,
            });
        }
        self.next();
        Ok(Acl {
            name,
            flags,
            entries,
        })
    }

    fn sub(&mut self) -> PResult<SubDecl> {
        let name = self.expect_id()?;
        let body = self.block()?;
        Ok(SubDecl { name, body })
    }

    /// `{ statements }`
    fn block(&mut self) -> PResult<Vec<Stmt>> {
        self.expect_op("{")?;
        self.enter()?;
        let mut out = vec![self.trace()];
        loop {
            let t = self.peek().clone();
            if t.is_op("}") {
                self.next();
                break;
            }
            if t.kind == TokKind::Eof {
                return Err(self.err_at("Expected '}' got 'EOF'", &t));
            }
            if let Some(s) = self.stmt()? {
                out.push(s);
            }
        }
        self.leave();
        Ok(out)
    }

    fn stmt(&mut self) -> PResult<Option<Stmt>> {
        let t = self.peek().clone();
        if t.is_op("{") {
            return Ok(Some(Stmt::Block(self.block()?)));
        }
        if t.is_op(";") {
            self.next();
            return Ok(None);
        }
        if t.kind != TokKind::Id {
            return Err(self.err_at(
                format!(
                    "Expected an action, 'if', '{{' or '}}'\nFound: '{}' at",
                    t.describe()
                ),
                &t,
            ));
        }
        let stmt = match t.value.as_str() {
            "if" => {
                self.next();
                let (s, plain_else) = self.if_stmt()?;
                // One trace point after the whole if/else chain, unless it
                // ends in a plain `else` (Varnish's vcc_Act_If returns
                // before counting then).
                if plain_else {
                    return Ok(Some(s));
                }
                return Ok(Some(Stmt::Block(vec![s, self.trace()])));
            }
            "set" => {
                self.next();
                let target = self.expect_id()?;
                let op = self.peek().clone();
                let ok = ["=", "+=", "-=", "*=", "/="].iter().any(|o| op.is_op(o));
                if !ok {
                    return Err(self.err_at(format!("Expected '=' got '{}'", op.describe()), &op));
                }
                self.next();
                let value = self.expr()?;
                Stmt::Set {
                    target,
                    op: op.value,
                    op_span: op.span,
                    value,
                }
            }
            "unset" | "remove" => {
                self.next();
                Stmt::Unset {
                    target: self.expect_id()?,
                }
            }
            "call" => {
                self.next();
                Stmt::Call {
                    name: self.expect_id()?,
                }
            }
            "return" => {
                self.next();
                let span = t.span.clone();
                if self.peek().is_op(";") {
                    Stmt::Return {
                        action: None,
                        args: None,
                        span,
                    }
                } else {
                    self.expect_op("(")?;
                    let action = self.expect_id()?;
                    let mut args = None;
                    if self.peek().is_op("(") {
                        self.next();
                        args = Some(self.arg_list_plain(")")?);
                    }
                    self.expect_op(")")?;
                    Stmt::Return {
                        action: Some(action),
                        args,
                        span,
                    }
                }
            }
            "new" => {
                self.next();
                let name = self.expect_id()?;
                self.expect_op("=")?;
                let ctor = self.expect_id()?;
                self.expect_op("(")?;
                let args = self.arg_list(")")?;
                Stmt::New { name, ctor, args }
            }
            "hash_data" | "synthetic" | "ban" => {
                let name = self.expect_id()?;
                self.expect_op("(")?;
                let args = self.arg_list_plain(")")?;
                Stmt::Action { name, args }
            }
            _ => {
                // A function or method call: `std.log("x");`
                let e = self.primary()?;
                if !matches!(e.kind, ExprKind::Call { .. }) {
                    let msg = format!("Symbol not found: '{}'", t.value);
                    return Err(self.err_at(msg, &t));
                }
                Stmt::CallExpr(e)
            }
        };
        self.expect_op(";")?;
        Ok(Some(stmt))
    }

    /// An `if` chain, and whether it ends in a plain `else { … }`.
    fn if_stmt(&mut self) -> PResult<(Stmt, bool)> {
        self.expect_op("(")?;
        let cond = self.expr()?;
        self.expect_op(")")?;
        let then = self.block()?;
        let t = self.peek().clone();
        let mut plain_else = false;
        let els = if t.is_id("else") {
            self.next();
            if self.peek().is_id("if") {
                self.next();
                let (s, p) = self.if_stmt()?;
                plain_else = p;
                Some(vec![s])
            } else {
                plain_else = true;
                Some(self.block()?)
            }
        } else if t.is_id("elsif") || t.is_id("elseif") || t.is_id("elif") {
            self.next();
            let (s, p) = self.if_stmt()?;
            plain_else = p;
            Some(vec![s])
        } else {
            None
        };
        Ok((Stmt::If { cond, then, els }, plain_else))
    }

    /// Comma-separated expressions up to `close` (consumed).
    fn arg_list_plain(&mut self, close: &str) -> PResult<Vec<Expr>> {
        Ok(self.arg_list(close)?.into_iter().map(|a| a.value).collect())
    }

    /// Comma-separated, possibly named, arguments up to `close` (consumed).
    fn arg_list(&mut self, close: &str) -> PResult<Vec<Arg>> {
        let mut args = Vec::new();
        if self.peek().is_op(close) {
            self.next();
            return Ok(args);
        }
        loop {
            let mut name = None;
            if self.peek().kind == TokKind::Id && self.peek_at(1).is_op("=") {
                name = Some(self.expect_id()?);
                self.next();
            }
            let value = self.expr()?;
            args.push(Arg { name, value });
            if self.peek().is_op(",") {
                self.next();
                continue;
            }
            self.expect_op(close)?;
            return Ok(args);
        }
    }

    /// A full expression.
    pub fn expr(&mut self) -> PResult<Expr> {
        self.enter()?;
        let r = self.expr_or();
        self.leave();
        r
    }

    fn binary(&mut self, op: Token, lhs: Expr, rhs: Expr) -> Expr {
        let span = Span {
            source: lhs.span.source.clone(),
            start: lhs.span.start,
            end: if std::sync::Arc::ptr_eq(&lhs.span.source, &rhs.span.source) {
                rhs.span.end.max(lhs.span.start)
            } else {
                lhs.span.end
            },
        };
        Expr {
            kind: ExprKind::Binary {
                op: op.value,
                op_span: op.span,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            },
            span,
        }
    }

    /// Parses `sub (op sub)*` into a flat [`ExprKind::Chain`].
    fn chain(&mut self, ops: &[&str], sub: fn(&mut Self) -> PResult<Expr>) -> PResult<Expr> {
        let first = sub(self)?;
        let mut rest = Vec::new();
        while ops.iter().any(|o| self.peek().is_op(o)) {
            let op = self.next();
            let rhs = sub(self)?;
            rest.push((op.value, op.span, rhs));
        }
        if rest.is_empty() {
            return Ok(first);
        }
        let mut span = first.span.clone();
        if let Some((_, _, last)) = rest.last() {
            if std::sync::Arc::ptr_eq(&span.source, &last.span.source) {
                span.end = last.span.end.max(span.start);
            }
        }
        Ok(Expr {
            kind: ExprKind::Chain {
                first: Box::new(first),
                rest,
            },
            span,
        })
    }

    fn expr_or(&mut self) -> PResult<Expr> {
        self.chain(&["||"], Self::expr_and)
    }

    fn expr_and(&mut self) -> PResult<Expr> {
        self.chain(&["&&"], Self::expr_not)
    }

    fn expr_not(&mut self) -> PResult<Expr> {
        if self.peek().is_op("!") {
            let op = self.next();
            self.enter()?;
            let e = self.expr_cmp();
            self.leave();
            let e = e?;
            let span = Span {
                source: op.span.source.clone(),
                start: op.span.start,
                end: e.span.end.max(op.span.end),
            };
            return Ok(Expr {
                kind: ExprKind::Unary {
                    op: op.value,
                    expr: Box::new(e),
                },
                span,
            });
        }
        self.expr_cmp()
    }

    fn expr_cmp(&mut self) -> PResult<Expr> {
        let lhs = self.expr_add()?;
        let t = self.peek();
        let is_cmp = ["==", "!=", "<", "<=", ">", ">=", "~", "!~"]
            .iter()
            .any(|o| t.is_op(o));
        if is_cmp {
            let op = self.next();
            let rhs = if op.is_op("~") || op.is_op("!~") {
                self.regex_operand()?
            } else {
                self.expr_add()?
            };
            return Ok(self.binary(op, lhs, rhs));
        }
        Ok(lhs)
    }

    /// The right side of `~`: as in varnishd, a string constant or
    /// constants joined with `+` (a regex, compiled now), or a name (an
    /// ACL, or something the checker refuses with its type).
    fn regex_operand(&mut self) -> PResult<Expr> {
        let t = self.peek().clone();
        match t.kind {
            TokKind::Str => {
                let first = self.primary()?;
                if !self.peek().is_op("+") {
                    return Ok(first);
                }
                let mut rest = Vec::new();
                let mut span = first.span.clone();
                while self.peek().is_op("+") {
                    let op = self.next();
                    let s = self.peek().clone();
                    if s.kind != TokKind::Str {
                        return Err(
                            self.err_at(format!("Expected CSTR got '{}'", s.describe()), &s)
                        );
                    }
                    let e = self.primary()?;
                    span.end = e.span.end;
                    rest.push((op.value, op.span, e));
                }
                Ok(Expr {
                    kind: ExprKind::Chain {
                        first: Box::new(first),
                        rest,
                    },
                    span,
                })
            }
            TokKind::Id => self.expr_add(),
            TokKind::Op if t.value == "(" => self.expr_add(),
            _ => Err(self.err_at(
                format!("Unknown token '{}' when looking for REGEX", t.describe()),
                &t,
            )),
        }
    }

    fn expr_add(&mut self) -> PResult<Expr> {
        self.chain(&["+", "-"], Self::expr_mul)
    }

    fn expr_mul(&mut self) -> PResult<Expr> {
        let mut lhs = self.expr_unary()?;
        let depth = self.depth;
        while self.peek().is_op("*") || self.peek().is_op("/") || self.peek().is_op("%") {
            // Each operator nests the tree one level deeper: count it.
            if let Err(e) = self.enter() {
                self.depth = depth;
                return Err(e);
            }
            let op = self.next();
            let rhs = self.expr_unary()?;
            lhs = self.binary(op, lhs, rhs);
        }
        self.depth = depth;
        Ok(lhs)
    }

    fn expr_unary(&mut self) -> PResult<Expr> {
        if self.peek().is_op("-") || self.peek().is_op("+") {
            let op = self.next();
            self.enter()?;
            let e = self.expr_unary();
            self.leave();
            let e = e?;
            let span = Span {
                source: op.span.source.clone(),
                start: op.span.start,
                end: e.span.end.max(op.span.end),
            };
            return Ok(Expr {
                kind: ExprKind::Unary {
                    op: op.value,
                    expr: Box::new(e),
                },
                span,
            });
        }
        self.primary()
    }

    /// Methods called on a value: `(a + b).lower()`,
    /// `req.http."x-y".upper()`.
    fn methods(&mut self, mut e: Expr, span: &mut Span) -> PResult<Expr> {
        while self.peek().is_op(".")
            && self.peek_at(1).kind == TokKind::Id
            && self.peek_at(2).is_op("(")
        {
            self.next();
            let name = self.expect_id()?;
            self.next();
            let args = self.arg_list(")")?;
            span.end = self.toks[self.pos.saturating_sub(1)].span.end;
            e = Expr {
                kind: ExprKind::Method {
                    recv: Box::new(e),
                    name,
                    args,
                },
                span: span.clone(),
            };
        }
        Ok(e)
    }

    fn primary(&mut self) -> PResult<Expr> {
        let t = self.peek().clone();
        match t.kind {
            TokKind::Op if t.value == "(" => {
                self.next();
                let e = self.expr()?;
                let close = self.expect_op(")")?;
                let mut span = Span {
                    source: t.span.source.clone(),
                    start: t.span.start,
                    end: close.span.end,
                };
                let e = Expr {
                    kind: ExprKind::Paren(Box::new(e)),
                    span: span.clone(),
                };
                // Methods on a parenthesized value: `(a + b).lower()`.
                self.methods(e, &mut span)
            }
            TokKind::Str => {
                self.next();
                Ok(Expr {
                    kind: ExprKind::Str(t.value),
                    span: t.span,
                })
            }
            TokKind::Blob => {
                self.next();
                Ok(Expr {
                    kind: ExprKind::Blob(t.value),
                    span: t.span,
                })
            }
            TokKind::Int | TokKind::Real => {
                self.next();
                let mut unit = None;
                let mut span = t.span.clone();
                if self.peek().kind == TokKind::Id {
                    let u = self.next();
                    span.end = u.span.end;
                    unit = Some(u.value);
                }
                Ok(Expr {
                    kind: ExprKind::Number {
                        text: t.value,
                        real: t.kind == TokKind::Real,
                        unit,
                    },
                    span,
                })
            }
            TokKind::Id => {
                self.next();
                if self.peek().is_op("(") {
                    self.next();
                    self.enter()?;
                    let args = self.arg_list(")");
                    self.leave();
                    let args = args?;
                    let end = self.toks[self.pos.saturating_sub(1)].span.end;
                    let span = Span {
                        source: t.span.source.clone(),
                        start: t.span.start,
                        end: end.max(t.span.end),
                    };
                    return Ok(Expr {
                        kind: ExprKind::Call {
                            func: Ident {
                                name: t.value,
                                span: t.span,
                            },
                            args,
                        },
                        span,
                    });
                }
                let id = self.quoted_suffix(Ident {
                    name: t.value,
                    span: t.span,
                });
                let quoted = id.name.ends_with('"');
                let mut span = id.span.clone();
                let e = Expr {
                    kind: ExprKind::Sym(id.name),
                    span: id.span,
                };
                if quoted {
                    self.methods(e, &mut span)
                } else {
                    Ok(e)
                }
            }
            _ => Err(self.err_at(
                format!(
                    "Unknown token '{}' when looking for expression",
                    t.describe()
                ),
                &t,
            )),
        }
    }
}
