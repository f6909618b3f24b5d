//! Every VCL variable of Varnish 7.1 (Varnish's `vcl-var(7)`).
//!
//! The table is the list in Varnish 7.1's `doc/sphinx/reference/vcl_var.rst`
//! (the file Varnish's own compiler generates its symbol table from), with
//! each variable's type, the subroutines where it may be read, set and
//! unset, and the VCL versions it exists in. It was checked against
//! `varnishd -C` of Varnish 7.1.1.
//!
//! The shorthands of the Varnish documentation map as follows:
//! "client" is `vcl_recv` … `vcl_synth` ([`MethodSet::CLIENT`], without
//! `vcl_init`/`vcl_fini`), "backend" is the `vcl_backend_*` subroutines,
//! "both" is client and backend, and "all" also includes `vcl_init` and
//! `vcl_fini`.
//!
//! A variable's index in [`VARS`] is its [`VarId`], shared by the code
//! generator and the host, so entries may be appended but never reordered.
//!
//! Names with several dotted parts resolve the way Varnish resolves them:
//! the longest prefix that names a variable wins and the rest are
//! properties of its type (`beresp.storage.free_space`,
//! `req.backend_hint.resolve()`, `req.url.lower()`); see [`lookup_prefix`]
//! and [`type_property`]. Families (`req.http.`, `storage.`) take exactly
//! one more part: `req.http.a.b` is the header `a` followed by the property
//! `b`.

use crate::tir::{HttpWhere, VarId};
use crate::types::{Method, MethodSet, Type};

/// One variable, or one family of variables (`req.http.*`, `storage.*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VarDef {
    /// `req.url`; for a family the prefix including its final dot,
    /// e.g. `req.http.` or `storage.`.
    pub name: &'static str,
    /// The value's type. Header families are `HEADER` (read as a STRING
    /// that may be unset); `req`, `bereq`, `beresp` and `resp` are `HTTP`.
    pub ty: Type,
    /// Subroutines where the variable may be read.
    pub read: MethodSet,
    /// Subroutines where it may be `set`.
    pub write: MethodSet,
    /// Subroutines where it may be `unset`.
    pub unset: MethodSet,
    /// The lowest VCL version (`vcl 4.0;` is 40, `vcl 4.1;` is 41) in which
    /// the variable exists.
    pub min_version: u32,
    /// The highest VCL version in which it exists (40 for variables that
    /// VCL 4.1 dropped, such as `req.esi`).
    pub max_version: u32,
    /// For a header family (`req.http.` …), which message's headers.
    pub header_family: Option<HttpWhere>,
    /// For a whole message (`req`, `bereq`, `beresp`, `resp`, of type
    /// `HTTP`, e.g. for `std.rollback(req)`), which message.
    pub http_message: Option<HttpWhere>,
    /// Whether `name` is a prefix: any one further dotted part names a
    /// member (a header name, or a storage backend's name).
    pub family: bool,
}

impl VarDef {
    /// Whether the variable exists in VCL version `vcl_version` (40 or 41).
    pub const fn in_version(&self, vcl_version: u32) -> bool {
        self.min_version <= vcl_version && vcl_version <= self.max_version
    }

    /// The note Varnish appends to "Symbol not found: 'name'" when the
    /// variable exists, but in another VCL version, e.g.
    /// `(Only available when VCL syntax <= 4.0)`.
    pub fn version_note(&self) -> String {
        if self.max_version < 41 {
            format!(
                "(Only available when VCL syntax <= {}.{})",
                self.max_version / 10,
                self.max_version % 10
            )
        } else {
            format!(
                "(Only available when {}.{} <= VCL syntax)",
                self.min_version / 10,
                self.min_version % 10
            )
        }
    }

    const fn since(self, version: u32) -> VarDef {
        VarDef {
            min_version: version,
            ..self
        }
    }

    const fn until(self, version: u32) -> VarDef {
        VarDef {
            max_version: version,
            ..self
        }
    }
}

/// The lowest VCL version Varnish 7.1 accepts.
pub const VCL_MIN_VERSION: u32 = 40;
/// The highest VCL version Varnish 7.1 accepts.
pub const VCL_MAX_VERSION: u32 = 41;

const NONE: MethodSet = MethodSet::NONE;
const ALL: MethodSet = MethodSet::ALL;
const CLIENT: MethodSet = MethodSet::CLIENT;
const BACKEND: MethodSet = MethodSet::BACKEND;
const BOTH: MethodSet = MethodSet::CLIENT.union(MethodSet::BACKEND);
const PIPE_BACKEND: MethodSet = MethodSet::BACKEND.union(MethodSet::of(&[Method::Pipe]));
const BERESP: MethodSet = MethodSet::of(&[Method::BackendResponse, Method::BackendError]);
const BE_FETCH: MethodSet = MethodSet::of(&[Method::BackendFetch]);
const BE_RESPONSE: MethodSet = MethodSet::of(&[Method::BackendResponse]);
const BE_ERROR: MethodSet = MethodSet::of(&[Method::BackendError]);
const RESP: MethodSet = MethodSet::of(&[Method::Deliver, Method::Synth]);
const SYNTH: MethodSet = MethodSet::of(&[Method::Synth]);
const HIT: MethodSet = MethodSet::of(&[Method::Hit]);
const DELIVER: MethodSet = MethodSet::of(&[Method::Deliver]);
const HIT_DELIVER: MethodSet = MethodSet::of(&[Method::Hit, Method::Deliver]);
/// Where `req.hash` exists: after `vcl_hash` has run.
const REQ_HASH: MethodSet = MethodSet::of(&[
    Method::Pass,
    Method::Purge,
    Method::Miss,
    Method::Hit,
    Method::Deliver,
]);

const fn def(
    name: &'static str,
    ty: Type,
    read: MethodSet,
    write: MethodSet,
    unset: MethodSet,
) -> VarDef {
    VarDef {
        name,
        ty,
        read,
        write,
        unset,
        min_version: VCL_MIN_VERSION,
        max_version: VCL_MAX_VERSION,
        header_family: None,
        http_message: None,
        family: false,
    }
}

const fn hdr(
    prefix: &'static str,
    wh: HttpWhere,
    read: MethodSet,
    write: MethodSet,
    unset: MethodSet,
) -> VarDef {
    VarDef {
        header_family: Some(wh),
        family: true,
        ..def(prefix, Type::Header, read, write, unset)
    }
}

const fn http(name: &'static str, wh: HttpWhere, read: MethodSet) -> VarDef {
    VarDef {
        http_message: Some(wh),
        ..def(name, Type::Http, read, NONE, NONE)
    }
}

/// Every variable; the index is the [`VarId`]. Entries may be appended,
/// never reordered or removed.
pub static VARS: &[VarDef] = &[
    // local, server, remote and client
    def("client.identity", Type::String, BOTH, CLIENT, NONE),
    def("client.ip", Type::Ip, BOTH, NONE, NONE),
    def("server.hostname", Type::String, ALL, NONE, NONE),
    def("server.identity", Type::String, ALL, NONE, NONE),
    def("server.ip", Type::Ip, BOTH, NONE, NONE),
    def("remote.ip", Type::Ip, BOTH, NONE, NONE),
    def("local.endpoint", Type::String, BOTH, NONE, NONE).since(41),
    def("local.ip", Type::Ip, BOTH, NONE, NONE),
    def("local.socket", Type::String, BOTH, NONE, NONE).since(41),
    // req
    http("req", HttpWhere::Req, CLIENT),
    def("req.backend_hint", Type::Backend, CLIENT, CLIENT, NONE),
    def("req.can_gzip", Type::Bool, CLIENT, NONE, NONE),
    def("req.esi", Type::Bool, CLIENT, CLIENT, NONE).until(40),
    def("req.esi_level", Type::Int, CLIENT, NONE, NONE),
    def("req.grace", Type::Duration, CLIENT, CLIENT, NONE),
    def("req.hash", Type::Blob, REQ_HASH, NONE, NONE),
    def("req.hash_always_miss", Type::Bool, CLIENT, CLIENT, NONE),
    def("req.hash_ignore_busy", Type::Bool, CLIENT, CLIENT, NONE),
    def("req.hash_ignore_vary", Type::Bool, CLIENT, CLIENT, NONE),
    hdr("req.http.", HttpWhere::Req, CLIENT, CLIENT, CLIENT),
    def("req.is_hitmiss", Type::Bool, CLIENT, NONE, NONE),
    def("req.is_hitpass", Type::Bool, CLIENT, NONE, NONE),
    def("req.method", Type::String, CLIENT, CLIENT, NONE),
    def("req.proto", Type::String, CLIENT, CLIENT, NONE).until(40),
    def("req.proto", Type::String, CLIENT, NONE, NONE).since(41),
    def("req.restarts", Type::Int, CLIENT, NONE, NONE),
    def("req.storage", Type::Stevedore, CLIENT, CLIENT, NONE),
    def("req.time", Type::Time, CLIENT, NONE, NONE),
    def("req.transport", Type::String, CLIENT, NONE, NONE),
    def("req.ttl", Type::Duration, CLIENT, CLIENT, NONE),
    def("req.url", Type::String, CLIENT, CLIENT, NONE),
    def("req.xid", Type::String, CLIENT, NONE, NONE),
    // req_top
    hdr("req_top.http.", HttpWhere::ReqTop, CLIENT, NONE, NONE),
    def("req_top.method", Type::String, CLIENT, NONE, NONE),
    def("req_top.proto", Type::String, CLIENT, NONE, NONE),
    def("req_top.time", Type::Time, CLIENT, NONE, NONE),
    def("req_top.url", Type::String, CLIENT, NONE, NONE),
    // bereq
    http("bereq", HttpWhere::Bereq, BACKEND),
    def(
        "bereq.backend",
        Type::Backend,
        PIPE_BACKEND,
        PIPE_BACKEND,
        NONE,
    ),
    def(
        "bereq.between_bytes_timeout",
        Type::Duration,
        BACKEND,
        BACKEND,
        NONE,
    ),
    def("bereq.body", Type::Body, NONE, NONE, BE_FETCH),
    def(
        "bereq.connect_timeout",
        Type::Duration,
        PIPE_BACKEND,
        PIPE_BACKEND,
        NONE,
    ),
    def(
        "bereq.first_byte_timeout",
        Type::Duration,
        BACKEND,
        BACKEND,
        NONE,
    ),
    def("bereq.hash", Type::Blob, PIPE_BACKEND, NONE, NONE),
    hdr(
        "bereq.http.",
        HttpWhere::Bereq,
        PIPE_BACKEND,
        PIPE_BACKEND,
        PIPE_BACKEND,
    ),
    def("bereq.is_bgfetch", Type::Bool, BACKEND, NONE, NONE),
    def("bereq.is_hitmiss", Type::Bool, BACKEND, NONE, NONE),
    def("bereq.is_hitpass", Type::Bool, BACKEND, NONE, NONE),
    def(
        "bereq.method",
        Type::String,
        PIPE_BACKEND,
        PIPE_BACKEND,
        NONE,
    ),
    def(
        "bereq.proto",
        Type::String,
        PIPE_BACKEND,
        PIPE_BACKEND,
        NONE,
    )
    .until(40),
    def("bereq.proto", Type::String, PIPE_BACKEND, NONE, NONE).since(41),
    def("bereq.retries", Type::Int, BACKEND, NONE, NONE),
    def("bereq.time", Type::Time, PIPE_BACKEND, NONE, NONE),
    def("bereq.uncacheable", Type::Bool, BACKEND, NONE, NONE),
    def("bereq.url", Type::String, PIPE_BACKEND, PIPE_BACKEND, NONE),
    def("bereq.xid", Type::String, PIPE_BACKEND, NONE, NONE),
    // beresp
    http("beresp", HttpWhere::Beresp, BERESP),
    def("beresp.age", Type::Duration, BERESP, NONE, NONE),
    def("beresp.backend", Type::Backend, BERESP, NONE, NONE),
    def("beresp.backend.ip", Type::Ip, BE_RESPONSE, NONE, NONE).until(40),
    def("beresp.backend.name", Type::String, BERESP, NONE, NONE),
    def("beresp.body", Type::Body, NONE, BE_ERROR, NONE),
    def("beresp.do_esi", Type::Bool, BERESP, BERESP, NONE),
    def("beresp.do_gunzip", Type::Bool, BERESP, BERESP, NONE),
    def("beresp.do_gzip", Type::Bool, BERESP, BERESP, NONE),
    def("beresp.do_stream", Type::Bool, BERESP, BERESP, NONE),
    def(
        "beresp.filters",
        Type::String,
        BE_RESPONSE,
        BE_RESPONSE,
        NONE,
    ),
    def("beresp.grace", Type::Duration, BERESP, BERESP, NONE),
    hdr("beresp.http.", HttpWhere::Beresp, BERESP, BERESP, BERESP),
    def("beresp.keep", Type::Duration, BERESP, BERESP, NONE),
    def("beresp.proto", Type::String, BERESP, BERESP, NONE).until(40),
    def("beresp.proto", Type::String, BERESP, NONE, NONE).since(41),
    def("beresp.reason", Type::String, BERESP, BERESP, NONE),
    def("beresp.status", Type::Int, BERESP, BERESP, NONE),
    def("beresp.storage", Type::Stevedore, BERESP, BERESP, NONE),
    def("beresp.storage_hint", Type::String, BERESP, BERESP, NONE).until(40),
    def("beresp.time", Type::Time, BERESP, NONE, NONE),
    def("beresp.ttl", Type::Duration, BERESP, BERESP, NONE),
    def("beresp.uncacheable", Type::Bool, BERESP, BERESP, NONE),
    def("beresp.was_304", Type::Bool, BERESP, NONE, NONE),
    // obj
    def("obj.age", Type::Duration, HIT_DELIVER, NONE, NONE),
    def("obj.can_esi", Type::Bool, HIT_DELIVER, NONE, NONE),
    def("obj.grace", Type::Duration, HIT_DELIVER, NONE, NONE),
    def("obj.hits", Type::Int, HIT_DELIVER, NONE, NONE),
    hdr("obj.http.", HttpWhere::Obj, HIT, NONE, NONE),
    def("obj.keep", Type::Duration, HIT_DELIVER, NONE, NONE),
    def("obj.proto", Type::String, HIT, NONE, NONE),
    def("obj.reason", Type::String, HIT, NONE, NONE),
    def("obj.status", Type::Int, HIT, NONE, NONE),
    def("obj.storage", Type::Stevedore, HIT_DELIVER, NONE, NONE),
    def("obj.time", Type::Time, HIT_DELIVER, NONE, NONE),
    def("obj.ttl", Type::Duration, HIT_DELIVER, NONE, NONE),
    def("obj.uncacheable", Type::Bool, DELIVER, NONE, NONE),
    // resp
    http("resp", HttpWhere::Resp, RESP),
    def("resp.body", Type::Body, NONE, SYNTH, NONE),
    def("resp.do_esi", Type::Bool, RESP, RESP, NONE).since(41),
    def("resp.filters", Type::String, RESP, RESP, NONE),
    hdr("resp.http.", HttpWhere::Resp, RESP, RESP, RESP),
    def("resp.is_streaming", Type::Bool, RESP, NONE, NONE),
    def("resp.proto", Type::String, RESP, RESP, NONE).until(40),
    def("resp.proto", Type::String, RESP, NONE, NONE).since(41),
    def("resp.reason", Type::String, RESP, RESP, NONE),
    def("resp.status", Type::Int, RESP, RESP, NONE),
    def("resp.time", Type::Time, RESP, NONE, NONE),
    // special variables
    def("now", Type::Time, ALL, NONE, NONE),
    // sess
    def(
        "sess.idle_send_timeout",
        Type::Duration,
        CLIENT,
        CLIENT,
        NONE,
    ),
    def("sess.send_timeout", Type::Duration, CLIENT, CLIENT, NONE),
    def("sess.timeout_idle", Type::Duration, CLIENT, CLIENT, NONE),
    def("sess.timeout_linger", Type::Duration, CLIENT, CLIENT, NONE),
    def("sess.xid", Type::String, BOTH, NONE, NONE).since(41),
    // storage: `storage.<name>` is a STEVEDORE readable everywhere (also in
    // vcl_init/vcl_fini); `.free_space`, `.used_space` and `.happy` are
    // properties of any STEVEDORE value (see `type_property`). The name
    // must be a configured storage backend: `s0` and `Transient` without
    // `-s` arguments.
    VarDef {
        family: true,
        ..def("storage.", Type::Stevedore, ALL, NONE, NONE)
    },
];

/// The entry for `id`.
///
/// # Panics
/// If `id` is not an index into [`VARS`]; ids come from [`lookup`], so this
/// is a compiler bug, never a user error.
pub fn var(id: VarId) -> &'static VarDef {
    &VARS[id as usize]
}

fn with_id(i: usize) -> (VarId, &'static VarDef) {
    // VARS has a few hundred entries at most.
    (i as VarId, &VARS[i])
}

/// The variable named `name` in VCL version `vcl_version` (40 or 41).
///
/// Exact names match case-sensitively (`req.url`). A name of the form
/// `<family><member>` with exactly one more dotted part resolves to the
/// family entry: `req.http.Foo-Bar` gives the `req.http.` entry,
/// `storage.s0` the `storage.` entry. Header names are not validated here;
/// see [`check_header_name`].
pub fn lookup(name: &str, vcl_version: u32) -> Option<(VarId, &'static VarDef)> {
    find(name, |d| d.in_version(vcl_version))
}

/// Like [`lookup`] but ignoring the VCL version, so that a checker can say
/// "Symbol not found: 'req.esi' (Only available when VCL syntax <= 4.0)"
/// (see [`VarDef::version_note`]).
pub fn lookup_any_version(name: &str) -> Option<(VarId, &'static VarDef)> {
    find(name, |_| true)
}

/// The family entry whose prefix is `prefix` (e.g. `req.http.`), for
/// quoted header names such as `req.http."a.b"` whose member contains dots.
pub fn lookup_family(prefix: &str, vcl_version: u32) -> Option<(VarId, &'static VarDef)> {
    VARS.iter()
        .position(|d| d.family && d.name == prefix && d.in_version(vcl_version))
        .map(with_id)
}

fn find(name: &str, ok: impl Fn(&VarDef) -> bool) -> Option<(VarId, &'static VarDef)> {
    if let Some(i) = VARS
        .iter()
        .position(|d| !d.family && d.name == name && ok(d))
    {
        return Some(with_id(i));
    }
    VARS.iter()
        .position(|d| {
            d.family
                && ok(d)
                && name
                    .strip_prefix(d.name)
                    .is_some_and(|member| !member.is_empty() && !member.contains('.'))
        })
        .map(with_id)
}

/// The longest leading run of dotted parts of `name` that names a
/// variable, and the rest (empty, or starting with `.`): the rest are
/// properties of the variable's type, as in `beresp.storage.free_space`
/// (`beresp.storage` + `.free_space`) or `req.http.a.upper` (`req.http.a`
/// + `.upper`).
pub fn lookup_prefix(name: &str, vcl_version: u32) -> Option<(VarId, &'static VarDef, &str)> {
    if let Some((id, d)) = lookup(name, vcl_version) {
        return Some((id, d, ""));
    }
    let mut end = name.len();
    while let Some(dot) = name[..end].rfind('.') {
        let (head, rest) = name.split_at(dot);
        if let Some((id, d)) = lookup(head, vcl_version) {
            return Some((id, d, rest));
        }
        end = dot;
    }
    None
}

/// A property or method that Varnish 7.1 defines on a type and that can
/// follow any expression of that type after a dot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeProperty {
    pub name: &'static str,
    /// The type of the result.
    pub ret: Type,
    /// Whether it is written as a call with empty parentheses
    /// (`.resolve()`), rather than as a plain property (`.free_space`).
    pub call: bool,
}

const STEVEDORE_PROPS: &[TypeProperty] = &[
    TypeProperty {
        name: "free_space",
        ret: Type::Bytes,
        call: false,
    },
    TypeProperty {
        name: "used_space",
        ret: Type::Bytes,
        call: false,
    },
    TypeProperty {
        name: "happy",
        ret: Type::Bool,
        call: false,
    },
];

const BACKEND_PROPS: &[TypeProperty] = &[TypeProperty {
    name: "resolve",
    ret: Type::Backend,
    call: true,
}];

const STRING_PROPS: &[TypeProperty] = &[
    TypeProperty {
        name: "upper",
        ret: Type::String,
        call: true,
    },
    TypeProperty {
        name: "lower",
        ret: Type::String,
        call: true,
    },
];

/// The properties of values of type `ty`: STEVEDORE has `.free_space`,
/// `.used_space` (BYTES) and `.happy` (BOOL); BACKEND has `.resolve()`;
/// strings (STRING, STRANDS and header reads) have `.upper()` and
/// `.lower()`. Varnish reports any other as
/// "Unknown property 'x' for type T" (T is `STRINGS` for strings).
pub fn type_properties(ty: Type) -> &'static [TypeProperty] {
    match ty {
        Type::Stevedore => STEVEDORE_PROPS,
        Type::Backend => BACKEND_PROPS,
        Type::String | Type::Strands | Type::Header => STRING_PROPS,
        _ => &[],
    }
}

/// The property `name` of type `ty`, if there is one.
pub fn type_property(ty: Type, name: &str) -> Option<&'static TypeProperty> {
    type_properties(ty).iter().find(|p| p.name == name)
}

/// Checks a header name the way Varnish 7.1 does for `req.http.<name>`:
/// shorter than 127 bytes and made of RFC 7230 `tchar`s only. The error is
/// Varnish's message text.
pub fn check_header_name(name: &str) -> Result<(), String> {
    if name.len() >= 127 {
        let short: String = name.chars().take(20).collect();
        return Err(format!("HTTP header ({short}..) is too long."));
    }
    // varnishd prints the first offending byte as C would: `\n`, `\t`,
    // `\r`, a printable character as itself, anything else in octal.
    match name.bytes().find(|&b| !is_tchar(char::from(b))) {
        Some(b) => {
            let shown = match b {
                b'\n' => "\\n".to_string(),
                b'\t' => "\\t".to_string(),
                b'\r' => "\\r".to_string(),
                0x20..=0x7e => char::from(b).to_string(),
                _ => format!("\\{b:03o}"),
            };
            Err(format!("Invalid character '{shown}' in header name."))
        }
        None => Ok(()),
    }
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(name: &str, version: u32) -> &'static VarDef {
        match lookup(name, version) {
            Some((_, d)) => d,
            None => panic!("{name} not found in {version}"),
        }
    }

    #[test]
    fn req_url_writable_in_recv() {
        let d = get("req.url", 41);
        assert_eq!(d.ty, Type::String);
        assert!(d.read.contains(Method::Recv));
        assert!(d.write.contains(Method::Recv));
        assert!(!d.unset.contains(Method::Recv));
        assert!(!d.read.contains(Method::Init));
        assert!(!d.read.contains(Method::BackendFetch));
    }

    #[test]
    fn beresp_ttl_not_in_recv() {
        let d = get("beresp.ttl", 41);
        assert_eq!(d.ty, Type::Duration);
        assert!(!d.read.contains(Method::Recv));
        assert!(d.read.contains(Method::BackendResponse));
        assert!(d.write.contains(Method::BackendError));
    }

    #[test]
    fn header_families() {
        let (id, d) = lookup("req.http.Foo-Bar", 41).expect("req.http family");
        assert_eq!(d.name, "req.http.");
        assert_eq!(d.header_family, Some(HttpWhere::Req));
        assert_eq!(d.ty, Type::Header);
        assert!(d.unset.contains(Method::Recv));
        assert_eq!(var(id), d);
        assert!(lookup("req.http.", 41).is_none());
        assert!(lookup("req.http.a.b", 41).is_none());
        let (_, d, rest) = lookup_prefix("req.http.a.upper", 41).expect("prefix");
        assert_eq!((d.name, rest), ("req.http.", ".upper"));
        assert_eq!(get("obj.http.x", 41).header_family, Some(HttpWhere::Obj));
        assert_eq!(
            get("req_top.http.x", 40).header_family,
            Some(HttpWhere::ReqTop)
        );
        let (_, d) = lookup_family("beresp.http.", 41).expect("family");
        assert_eq!(d.header_family, Some(HttpWhere::Beresp));
    }

    #[test]
    fn obj_hits_in_hit_and_deliver() {
        let d = get("obj.hits", 41);
        assert_eq!(d.ty, Type::Int);
        assert!(d.read.contains(Method::Hit));
        assert!(d.read.contains(Method::Deliver));
        assert!(!d.read.contains(Method::Miss));
        assert!(d.write.is_empty());
    }

    #[test]
    fn versions() {
        assert!(lookup("req.esi", 41).is_none());
        assert!(lookup("req.esi", 40).is_some());
        assert!(lookup("resp.do_esi", 40).is_none());
        let (_, d) = lookup_any_version("req.esi").expect("any version");
        assert_eq!(d.version_note(), "(Only available when VCL syntax <= 4.0)");
        assert!(get("req.proto", 40).write.contains(Method::Recv));
        assert!(get("req.proto", 41).write.is_empty());
        assert_eq!(get("bereq.proto", 41).read, PIPE_BACKEND);
        assert!(lookup("req.URL", 41).is_none());
    }

    #[test]
    fn storage_and_properties() {
        let (_, d, rest) = lookup_prefix("storage.s0.free_space", 41).expect("storage");
        assert_eq!(
            (d.name, d.ty, rest),
            ("storage.", Type::Stevedore, ".free_space")
        );
        assert!(d.read.contains(Method::Init));
        let (_, d, rest) = lookup_prefix("beresp.storage.happy", 41).expect("beresp.storage");
        assert_eq!((d.name, rest), ("beresp.storage", ".happy"));
        assert_eq!(
            type_property(Type::Stevedore, "happy").map(|p| p.ret),
            Some(Type::Bool)
        );
        assert!(type_property(Type::Backend, "resolve").is_some_and(|p| p.call));
        assert!(lookup_prefix("nonexistent.x", 41).is_none());
    }

    #[test]
    fn unique_names_per_version() {
        for v in [40, 41] {
            for (i, a) in VARS.iter().enumerate() {
                for b in &VARS[i + 1..] {
                    assert!(
                        !(a.name == b.name && a.in_version(v) && b.in_version(v)),
                        "{} twice in {v}",
                        a.name
                    );
                }
            }
        }
    }

    #[test]
    fn header_names() {
        assert!(check_header_name("X-Foo_bar.1").is_ok());
        assert_eq!(
            check_header_name("a b"),
            Err("Invalid character ' ' in header name.".to_string())
        );
        assert!(check_header_name(&"a".repeat(127)).is_err());
    }
}
