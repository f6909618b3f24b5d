//! The typed intermediate representation: a checked VCL program.
//!
//! The checker (`vcc_*` modules) turns the parsed AST into this form; the
//! code generator (`codegen`) turns it into a wasm module. Everything here is
//! already resolved: names are indices, types are known, implicit
//! conversions are explicit nodes, and the builtin VCL is merged in. The
//! declarations the host needs at load time (backends, probes, ACLs,
//! regexes, VMOD objects) are in [`Metadata`], which the code generator
//! embeds in the module's `shellac:meta` custom section.

use crate::types::{Action, Method, Type};
use serde::{Deserialize, Serialize};

/// Index into [`Program::subs`].
pub type SubId = u32;
/// Index into [`Metadata::regexes`].
pub type RegexId = u32;
/// Index into [`Metadata::acls`].
pub type AclId = u32;
/// Index into [`Metadata::backends`].
pub type BackendId = u32;
/// Index into [`Metadata::probes`].
pub type ProbeId = u32;
/// Index into [`Metadata::objects`].
pub type ObjectId = u32;
/// Index into `vars::VARS`: a VCL variable such as `req.url`.
pub type VarId = u32;

/// A checked program, ready for code generation.
#[derive(Clone, Debug)]
pub struct Program {
    /// Every subroutine: user subs, and one per built-in method whose body is
    /// the user's bodies in order followed by the builtin VCL's body.
    pub subs: Vec<Sub>,
    /// Declarations the host instantiates at load time.
    pub meta: Metadata,
}

/// One subroutine.
#[derive(Clone, Debug)]
pub struct Sub {
    pub name: String,
    /// Set for `vcl_*` subs: the state-machine step this sub implements.
    /// Such subs are exported from the module under their VCL name.
    pub method: Option<Method>,
    pub body: Vec<Stmt>,
}

/// Which HTTP message a header or `HTTP` value refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HttpWhere {
    Req = 0,
    ReqTop = 1,
    Bereq = 2,
    Beresp = 3,
    Resp = 4,
    Obj = 5,
}

/// Something `set` and `unset` can change.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// A variable from `vars::VARS` (`req.url`, `beresp.ttl`, …).
    Var(VarId),
    /// A header: `req.http.name`. The name is as written (case kept);
    /// header names compare case-insensitively at run time.
    Header(HttpWhere, String),
}

/// The operator of a `set`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetOp {
    /// `=`
    Assign,
    /// `+=` (strings: append; numbers: add)
    Add,
    /// `-=`
    Sub,
    /// `*=`
    Mul,
    /// `/=`
    Div,
}

/// A statement.
#[derive(Clone, Debug)]
pub enum Stmt {
    /// `set target op value;` — `value` has the target's type already
    /// (after `+=` was turned into `target = target + value` where needed,
    /// the code generator may still see `SetOp::Add` for strings).
    Set {
        target: Target,
        op: SetOp,
        value: Expr,
    },
    /// `unset target;`
    Unset(Target),
    /// `call name;`
    Call(SubId),
    /// `return (action[(args)]);`
    Return(Return),
    /// A bare `return;` in a user sub: leave it; the caller goes on.
    Leave,
    /// `if (cond) {…} else {…}`; `elsif` chains are nested in `els`.
    If {
        cond: Expr,
        then: Vec<Stmt>,
        els: Vec<Stmt>,
    },
    /// `hash_data(expr);` (a STRING)
    HashData(Expr),
    /// `synthetic(expr);` (a STRING)
    Synthetic(Expr),
    /// `ban(expr);` (a STRING)
    Ban(Expr),
    /// `new name = vmod.object(args);` in `vcl_init`.
    New {
        object: ObjectId,
        ctor: NativeFn,
        args: Vec<Option<Expr>>,
    },
    /// An expression evaluated for its effect (a VOID function call).
    Expr(Expr),
    /// Trace point `n` (`Metadata::traces[n]`): logged as `VCL_trace`
    /// when the host turns tracing on.
    Trace(u32),
}

/// A `return` with its arguments, already checked against the method.
#[derive(Clone, Debug)]
pub enum Return {
    /// An action without arguments: `return (hash);`.
    Plain(Action),
    /// `return (synth(status[, reason]));` / `return (error(status[, reason]));`:
    /// status is INT, reason a STRING or `None`. `return (fail(reason))`
    /// is this too, with `action` Fail and status 503: the host logs the
    /// reason.
    Synth {
        action: Action,
        status: Box<Expr>,
        reason: Option<Box<Expr>>,
    },
    /// `return (pass(DURATION));` in `vcl_backend_response` (hit-for-pass).
    PassFor(Box<Expr>),
    /// `return (vcl(label));` in `vcl_recv`: index of the label in
    /// [`Metadata::labels`].
    Vcl(u32),
}

impl Return {
    pub fn action(&self) -> Action {
        match self {
            Return::Plain(a) => *a,
            Return::Synth { action, .. } => *action,
            Return::PassFor(_) => Action::Pass,
            Return::Vcl(_) => Action::Vcl,
        }
    }
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Arithmetic operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    /// INT remainder (`%`); by zero fails the task like division.
    Mod,
}

/// A host-native function (from the `std` or `directors` VMOD, or a method
/// of a host-native object): identified by VMOD name and function name so
/// the host can bind it at load time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NativeFn {
    pub vmod: String,
    /// `tolower`, or `round_robin.add_backend` for an object method, or
    /// `round_robin` for a constructor.
    pub func: String,
}

/// A typed expression.
#[derive(Clone, Debug)]
pub struct Expr {
    pub ty: Type,
    pub kind: ExprKind,
}

impl Expr {
    pub fn new(ty: Type, kind: ExprKind) -> Expr {
        Expr { ty, kind }
    }
}

/// What an expression computes. The operand types are exactly the ones the
/// comment gives: the checker inserted every conversion.
#[derive(Clone, Debug)]
pub enum ExprKind {
    /// STRING literal.
    Str(String),
    /// INT literal.
    Int(i64),
    /// REAL literal.
    Real(f64),
    /// DURATION literal, in seconds.
    Duration(f64),
    /// BYTES literal.
    Bytes(i64),
    /// BOOL literal.
    Bool(bool),
    /// BLOB literal (`:base64:`), decoded.
    Blob(Vec<u8>),
    /// Read a variable (its type is `ty`).
    Var(VarId),
    /// Read a header: STRING, null when absent.
    Header(HttpWhere, String),
    /// A whole HTTP message (type HTTP): for `std.rollback(req)`.
    Http(HttpWhere),
    /// A header reference (type HEADER) for VMOD arguments like `std.collect`.
    HeaderRef(HttpWhere, String),
    /// A backend or director by declaration (type BACKEND).
    Backend(BackendId),
    /// A VMOD object used as a value, e.g. a director passed as BACKEND is
    /// `Call` of its `.backend()` method instead; this is the object itself.
    Object(ObjectId),
    /// An ACL (type ACL), as a VMOD argument.
    Acl(AclId),
    /// A probe (type PROBE), as a VMOD argument.
    Probe(ProbeId),
    /// A subroutine (type SUB), as a VMOD argument.
    SubRef(SubId),
    /// A regex literal (type REGEX), as a VMOD argument.
    Regex(RegexId),
    /// The "no value" of an optional-less type, e.g. `backend none`.
    Null,
    /// STRING concatenation of STRING operands; null operands count as "".
    Concat(Vec<Expr>),
    /// Convert any stringifiable type to STRING the way Varnish prints it
    /// (INT `%jd`, REAL `%.3f`, DURATION `%.3f`, TIME as an HTTP date,
    /// BYTES as `%.0fB`-style, IP as the address, BACKEND as its name,
    /// BOOL `true`/`false`).
    ToString(Box<Expr>),
    /// Convert to BOOL: STRING/HEADER is "not null"; INT/REAL/DURATION/BYTES
    /// are "not zero"; BACKEND is "not none".
    ToBool(Box<Expr>),
    /// INT → REAL (e.g. in mixed arithmetic).
    IntToReal(Box<Expr>),
    /// `!expr` (BOOL).
    Not(Box<Expr>),
    /// `a && b` (BOOL, short-circuit).
    And(Box<Expr>, Box<Expr>),
    /// `a || b` (BOOL, short-circuit).
    Or(Box<Expr>, Box<Expr>),
    /// Compare two operands of the same type (STRING, INT, REAL, DURATION,
    /// BYTES, TIME, BOOL, BACKEND, IP). For STRING, a null operand makes
    /// `==` false and `!=` true, as `VRT_strcmp` does.
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// `expr ~ regex` / `expr !~ regex` on a STRING (null matches as "").
    Match {
        subject: Box<Expr>,
        regex: RegexId,
        negate: bool,
    },
    /// `ip ~ acl` / `ip !~ acl`.
    AclMatch {
        ip: Box<Expr>,
        acl: AclId,
        negate: bool,
    },
    /// Arithmetic on numbers. Both operands have the types Varnish allows:
    /// INT±INT, REAL±REAL, DURATION±DURATION, TIME±DURATION, TIME-TIME
    /// (gives DURATION), DURATION*REAL, DURATION/REAL, INT*INT, …
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    /// Unary minus.
    Neg(Box<Expr>),
    /// `regsub(subject, regex, replacement)` / `regsuball(…)`.
    Regsub {
        all: bool,
        subject: Box<Expr>,
        regex: RegexId,
        replacement: Box<Expr>,
    },
    /// A call of a host-native VMOD function or constructor. `args` has one
    /// entry per declared parameter; `None` is an optional argument that
    /// was not given (the host applies the default).
    Call {
        func: NativeFn,
        args: Vec<Option<Expr>>,
    },
    /// A method call on a VMOD object: `obj.method(args)`.
    MethodCall {
        object: ObjectId,
        func: NativeFn,
        args: Vec<Option<Expr>>,
    },
}

/// Declarations the host needs at load time, embedded in the module.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Metadata {
    /// `4.0` or `4.1`, as written in the `vcl` line, times ten (40 or 41).
    pub vcl_version: u32,
    pub backends: Vec<BackendDef>,
    /// The backend used when VCL does not set one: the first declared.
    pub default_backend: Option<BackendId>,
    pub probes: Vec<ProbeDef>,
    pub acls: Vec<AclDef>,
    /// Regex patterns, compiled once at load time and referred to by index.
    pub regexes: Vec<String>,
    /// VMOD objects created with `new` in `vcl_init`.
    pub objects: Vec<ObjectDef>,
    /// VMODs imported (`import name [from "path"];`).
    pub imports: Vec<ImportDef>,
    /// Labels named in `return (vcl(label))`.
    pub labels: Vec<String>,
    /// Host-native functions the module calls, in the order of the indices
    /// the code generator passes to the `native_call` import. Filled by the
    /// code generator.
    pub natives: Vec<NativeFn>,
    /// Trace points by number: `[source, line, column]` of the token that
    /// follows each (what Varnish's `VCL_trace` records name; sources as
    /// Varnish numbers them: the program 0, the builtin VCL 1, includes
    /// after). Entry 0 is unused.
    #[serde(default)]
    pub traces: Vec<[u32; 3]>,
}

/// A `backend name { … }` declaration. Host names are not resolved at
/// compile time (`shellac compile` never needs DNS).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BackendDef {
    pub name: String,
    /// `backend name none;`
    pub none: bool,
    pub host: Option<String>,
    pub port: Option<String>,
    pub path: Option<String>,
    pub host_header: Option<String>,
    pub connect_timeout: Option<f64>,
    pub first_byte_timeout: Option<f64>,
    pub between_bytes_timeout: Option<f64>,
    pub max_connections: Option<u32>,
    pub proxy_header: Option<u32>,
    /// `.preamble`: bytes (base64) sent on each new connection.
    pub preamble: Option<String>,
    pub probe: Option<ProbeId>,
    /// Where it was declared, `file:line:col`, for messages at load time.
    pub location: String,
}

/// A `probe name { … }` declaration, or an inline `.probe = { … }`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProbeDef {
    pub name: String,
    pub url: Option<String>,
    /// `.request`: lines joined by CRLF, as Varnish sends them.
    pub request: Option<String>,
    pub expected_response: Option<u32>,
    pub timeout: Option<f64>,
    pub interval: Option<f64>,
    pub window: Option<u32>,
    pub threshold: Option<u32>,
    pub initial: Option<u32>,
}

/// An `acl name { … }` declaration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AclDef {
    pub name: String,
    /// `+log`
    pub log: bool,
    /// `+table`: match linearly instead of by prefix tree (same result).
    pub table: bool,
    pub entries: Vec<AclEntry>,
}

/// One ACL line: `[!] "addr-or-host" [/ bits];`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AclEntry {
    pub negated: bool,
    /// An IP literal or a host name (resolved at load time).
    pub addr: String,
    pub mask: Option<u8>,
    /// `( "host" )`: a name that may fail to resolve without error.
    pub optional: bool,
    pub location: String,
}

/// A VMOD object instance (`new name = vmod.class(…)`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ObjectDef {
    pub name: String,
    pub vmod: String,
    pub class: String,
}

/// An `import` line.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ImportDef {
    pub name: String,
    /// `from "path"`, if given.
    pub path: Option<String>,
    /// Whether the host implements it natively (`std`, `directors`).
    pub native: bool,
}
