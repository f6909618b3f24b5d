//! VCL's type system (Varnish's `vcc_types`).
//!
//! Every expression the checker sees has one of these types. The names are
//! the ones Varnish prints in its error messages (`STRING`, `DURATION`, …) so
//! that our diagnostics read like `varnishd -C`'s.

use std::fmt;

/// A VCL type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    /// No value (a VOID function, or a statement).
    Void,
    Acl,
    Backend,
    Blob,
    Body,
    Bool,
    Bytes,
    Duration,
    /// A string from a fixed set, for VMOD arguments (`by=HASH`).
    Enum,
    /// A header reference such as `req.http.foo`, for `std.collect` and `unset`.
    Header,
    /// An HTTP message (`req`, `bereq`, `beresp`, `resp`), for `std.rollback`.
    Http,
    Int,
    Ip,
    Probe,
    Real,
    /// A compiled regular expression literal (VMOD arguments only).
    Regex,
    Stevedore,
    String,
    /// A list of string fragments, as Varnish passes concatenations to VMODs.
    Strands,
    Sub,
    Time,
    /// A label or VCL, for `return (vcl(…))`.
    Vcl,
    /// A VMOD object instance created with `new`.
    Instance,
}

impl Type {
    /// The name Varnish uses for the type in messages and `.vcc` files.
    pub fn name(self) -> &'static str {
        match self {
            Type::Void => "VOID",
            Type::Acl => "ACL",
            Type::Backend => "BACKEND",
            Type::Blob => "BLOB",
            Type::Body => "BODY",
            Type::Bool => "BOOL",
            Type::Bytes => "BYTES",
            Type::Duration => "DURATION",
            Type::Enum => "ENUM",
            Type::Header => "HEADER",
            Type::Http => "HTTP",
            Type::Int => "INT",
            Type::Ip => "IP",
            Type::Probe => "PROBE",
            Type::Real => "REAL",
            Type::Regex => "REGEX",
            Type::Stevedore => "STEVEDORE",
            Type::String => "STRING",
            Type::Strands => "STRANDS",
            Type::Sub => "SUB",
            Type::Time => "TIME",
            Type::Vcl => "VCL",
            Type::Instance => "INSTANCE",
        }
    }

    /// Whether a value of this type can be turned into a STRING implicitly,
    /// as `+` with a string operand and header assignment do.
    pub fn stringifies(self) -> bool {
        !matches!(
            self,
            Type::Void
                | Type::Acl
                | Type::Body
                | Type::Header
                | Type::Http
                | Type::Probe
                | Type::Regex
                | Type::Sub
                | Type::Vcl
                | Type::Instance
        )
    }

    /// Types that are strings at run time (pointer and length).
    pub fn is_stringish(self) -> bool {
        matches!(self, Type::String | Type::Strands | Type::Enum | Type::Body)
    }

    /// Numeric types that support arithmetic.
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            Type::Int | Type::Real | Type::Duration | Type::Bytes | Type::Time
        )
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The built-in subroutines, each a step of Varnish's state machines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Recv,
    Pipe,
    Pass,
    Hash,
    Purge,
    Miss,
    Hit,
    Deliver,
    Synth,
    BackendFetch,
    BackendResponse,
    BackendError,
    Init,
    Fini,
}

impl Method {
    pub const ALL: [Method; 14] = [
        Method::Recv,
        Method::Pipe,
        Method::Pass,
        Method::Hash,
        Method::Purge,
        Method::Miss,
        Method::Hit,
        Method::Deliver,
        Method::Synth,
        Method::BackendFetch,
        Method::BackendResponse,
        Method::BackendError,
        Method::Init,
        Method::Fini,
    ];

    /// The subroutine's VCL name, e.g. `vcl_recv`.
    pub fn sub_name(self) -> &'static str {
        match self {
            Method::Recv => "vcl_recv",
            Method::Pipe => "vcl_pipe",
            Method::Pass => "vcl_pass",
            Method::Hash => "vcl_hash",
            Method::Purge => "vcl_purge",
            Method::Miss => "vcl_miss",
            Method::Hit => "vcl_hit",
            Method::Deliver => "vcl_deliver",
            Method::Synth => "vcl_synth",
            Method::BackendFetch => "vcl_backend_fetch",
            Method::BackendResponse => "vcl_backend_response",
            Method::BackendError => "vcl_backend_error",
            Method::Init => "vcl_init",
            Method::Fini => "vcl_fini",
        }
    }

    pub fn from_sub_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.sub_name() == name)
    }

    /// A bit for this method in a [`MethodSet`].
    pub const fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// Whether the method runs on the client side (`req`), the backend side
    /// (`bereq`), or at load/discard time.
    pub fn side(self) -> Side {
        match self {
            Method::BackendFetch | Method::BackendResponse | Method::BackendError => Side::Backend,
            Method::Init | Method::Fini => Side::Housekeeping,
            _ => Side::Client,
        }
    }
}

/// Which task a subroutine runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Backend,
    Housekeeping,
}

/// A set of [`Method`]s, as a bit mask: where a variable may be used, or
/// where a subroutine can be called from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MethodSet(pub u16);

impl MethodSet {
    pub const NONE: MethodSet = MethodSet(0);
    pub const ALL: MethodSet = MethodSet((1 << 14) - 1);
    /// `vcl_recv` … `vcl_synth`: Varnish's "client" group.
    pub const CLIENT: MethodSet = MethodSet(
        Method::Recv.bit()
            | Method::Pipe.bit()
            | Method::Pass.bit()
            | Method::Hash.bit()
            | Method::Purge.bit()
            | Method::Miss.bit()
            | Method::Hit.bit()
            | Method::Deliver.bit()
            | Method::Synth.bit(),
    );
    /// `vcl_backend_*`: Varnish's "backend" group.
    pub const BACKEND: MethodSet = MethodSet(
        Method::BackendFetch.bit() | Method::BackendResponse.bit() | Method::BackendError.bit(),
    );
    /// `vcl_init` and `vcl_fini`.
    pub const HOUSEKEEPING: MethodSet = MethodSet(Method::Init.bit() | Method::Fini.bit());

    pub const fn of(methods: &[Method]) -> MethodSet {
        let mut bits = 0;
        let mut i = 0;
        while i < methods.len() {
            bits |= methods[i].bit();
            i += 1;
        }
        MethodSet(bits)
    }

    pub const fn union(self, other: MethodSet) -> MethodSet {
        MethodSet(self.0 | other.0)
    }

    pub const fn intersect(self, other: MethodSet) -> MethodSet {
        MethodSet(self.0 & other.0)
    }

    pub const fn contains(self, m: Method) -> bool {
        self.0 & m.bit() != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Method> {
        Method::ALL.into_iter().filter(move |m| self.contains(*m))
    }
}

/// The actions `return (…)` can name in Varnish 7.1 (`miss` is gone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Abandon,
    Deliver,
    Error,
    Fail,
    Fetch,
    Hash,
    Lookup,
    Ok,
    Pass,
    Pipe,
    Purge,
    Restart,
    Retry,
    Synth,
    Vcl,
}

impl Action {
    pub const ALL: [Action; 15] = [
        Action::Abandon,
        Action::Deliver,
        Action::Error,
        Action::Fail,
        Action::Fetch,
        Action::Hash,
        Action::Lookup,
        Action::Ok,
        Action::Pass,
        Action::Pipe,
        Action::Purge,
        Action::Restart,
        Action::Retry,
        Action::Synth,
        Action::Vcl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::Abandon => "abandon",
            Action::Deliver => "deliver",
            Action::Error => "error",
            Action::Fail => "fail",
            Action::Fetch => "fetch",
            Action::Hash => "hash",
            Action::Lookup => "lookup",
            Action::Ok => "ok",
            Action::Pass => "pass",
            Action::Pipe => "pipe",
            Action::Purge => "purge",
            Action::Restart => "restart",
            Action::Retry => "retry",
            Action::Synth => "synth",
            Action::Vcl => "vcl",
        }
    }

    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The code a compiled subroutine returns for this action. Code 0 means
    /// "no return executed", i.e. fall through to the builtin VCL.
    pub fn code(self) -> i32 {
        self as i32 + 1
    }

    pub fn from_code(code: i32) -> Option<Action> {
        if code <= 0 {
            return None;
        }
        Action::ALL.get((code - 1) as usize).copied()
    }
}
