//! The parsed, untyped VCL program (what `vcc_parse` produces).
//!
//! Every node that a diagnostic may point at carries the [`Span`] of the
//! token varnishd would point at.

use crate::error::Span;

/// A name as written, with where it was written.
#[derive(Clone, Debug)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A whole VCL file, includes resolved.
#[derive(Clone, Debug)]
pub struct Program {
    /// 40 or 41.
    pub version: u32,
    pub version_span: Span,
    pub items: Vec<Item>,
    /// The last trace point's number ([`Stmt::Trace`]).
    pub traces: u32,
}

/// A top-level declaration.
#[derive(Clone, Debug)]
pub enum Item {
    Import(Import),
    Backend(Backend),
    Probe(Probe),
    Acl(Acl),
    Sub(SubDecl),
}

#[derive(Clone, Debug)]
pub struct Import {
    pub name: Ident,
    /// `import name as alias;`: the name VCL uses for it.
    pub alias: Option<Ident>,
    pub from: Option<(String, Span)>,
    /// The `import` keyword, which varnishd points at for a missing VMOD.
    pub span: Span,
}

/// `backend name { .field = value; … }` or `backend name none;`.
#[derive(Clone, Debug)]
pub struct Backend {
    pub name: Ident,
    /// `None` for `backend name none;`.
    pub fields: Option<Vec<Field>>,
}

/// `probe name { … }`.
#[derive(Clone, Debug)]
pub struct Probe {
    pub name: Ident,
    pub fields: Vec<Field>,
}

/// One `.name = value;` in a backend or probe.
#[derive(Clone, Debug)]
pub struct Field {
    pub name: Ident,
    pub value: FieldValue,
}

#[derive(Clone, Debug)]
pub enum FieldValue {
    /// One or more adjacent strings (only `.request` may have several).
    Strings(Vec<(String, Span)>),
    /// A number, with an optional unit (`5s`, `100`).
    Number {
        text: String,
        unit: Option<String>,
        span: Span,
    },
    /// A name, e.g. `.probe = healthcheck;`
    Name(Ident),
    /// An inline probe: `.probe = { … }`.
    Block(Vec<Field>, Span),
    /// A BLOB literal `:base64:` (`.preamble`).
    Blob(String, Span),
}

impl FieldValue {
    pub fn span(&self) -> &Span {
        match self {
            FieldValue::Strings(v) => &v[0].1,
            FieldValue::Number { span, .. } => span,
            FieldValue::Name(i) => &i.span,
            FieldValue::Block(_, s) => s,
            FieldValue::Blob(_, s) => s,
        }
    }
}

/// `acl name [+flag…] { entries }`.
#[derive(Clone, Debug)]
pub struct Acl {
    pub name: Ident,
    pub flags: Vec<(bool, Ident)>,
    pub entries: Vec<AclEntry>,
}

#[derive(Clone, Debug)]
pub struct AclEntry {
    pub negated: bool,
    /// Written in parentheses: may fail to resolve.
    pub optional: bool,
    pub addr: String,
    pub addr_span: Span,
    pub mask: Option<(u32, Span)>,
}

/// `sub name { … }`.
#[derive(Clone, Debug)]
pub struct SubDecl {
    pub name: Ident,
    pub body: Vec<Stmt>,
}

/// A statement.
#[derive(Clone, Debug)]
pub enum Stmt {
    /// `{ … }` nested block.
    Block(Vec<Stmt>),
    Set {
        target: Ident,
        op: String,
        op_span: Span,
        value: Expr,
    },
    Unset {
        target: Ident,
    },
    Call {
        name: Ident,
    },
    /// `return (action[(args)]);` — `action` is None for a bare `return;`.
    Return {
        action: Option<Ident>,
        args: Option<Vec<Expr>>,
        span: Span,
    },
    If {
        cond: Expr,
        then: Vec<Stmt>,
        els: Option<Vec<Stmt>>,
    },
    New {
        name: Ident,
        ctor: Ident,
        args: Vec<Arg>,
    },
    /// A built-in action used as a statement: `hash_data(x)`, `synthetic(x)`,
    /// `ban(x)`.
    Action {
        name: Ident,
        args: Vec<Expr>,
    },
    /// A function or method call used as a statement.
    CallExpr(Expr),
    /// A trace point (Varnish's `VPI_count`, logged as `VCL_trace` when
    /// that tag is on): at the start of every compound and after every
    /// `if` statement, numbered from 1 in parse order over the program
    /// and then the builtin VCL; `at` is the token that follows.
    Trace {
        n: u32,
        at: Span,
    },
}

/// A call argument, possibly named (`std.real(time = now)`).
#[derive(Clone, Debug)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

/// An expression.
#[derive(Clone, Debug)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum ExprKind {
    Str(String),
    /// A BLOB literal `:base64:`; the base64 text, already validated.
    Blob(String),
    /// An integer or real literal, with an optional unit (`10s`, `1KB`).
    Number {
        text: String,
        real: bool,
        unit: Option<String>,
    },
    /// A symbol: variable, header, backend, acl, sub, enum value, `true` …
    Sym(String),
    /// `f(args)` where `f` is a symbol (function, method, constructor…).
    Call {
        func: Ident,
        args: Vec<Arg>,
    },
    Unary {
        op: String,
        expr: Box<Expr>,
    },
    /// A left-associative chain of one precedence level: `a || b || c`,
    /// `a && b`, or `a + b - c`. Kept flat (not as nested `Binary`) so that
    /// long generated conditions cannot exhaust the stack.
    Chain {
        first: Box<Expr>,
        rest: Vec<(String, Span, Expr)>,
    },
    Binary {
        op: String,
        op_span: Span,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `(expr)`
    Paren(Box<Expr>),
    /// A method on a value: `(expr).lower()`. (`req.url.lower()` arrives as
    /// a `Call` of `req.url.lower`; the checker splits it.)
    Method {
        recv: Box<Expr>,
        name: Ident,
        args: Vec<Arg>,
    },
}
