//! Signatures of the VMODs built into Shellac: `std` and `directors` as in
//! Varnish 7.1.
//!
//! The host implements them natively; the compiler only type-checks calls.
//! The signatures are written below in a compact form of Varnish's `.vcc`
//! files, one stanza per line, and parsed once on first use:
//!
//! ```text
//! $Module std
//! $Function STRING tolower(STRANDS s)
//! $Function INT integer([STRING s], [INT fallback], …)
//! $Object fallback(BOOL sticky = 0)
//! $Method BACKEND .backend([ENUM {HASH, URL, KEY, BLOB} by=HASH], …)
//! $Restrict vcl_recv backend
//! # a comment
//! ```
//!
//! - An argument is `TYPE [name] [= default]`; `ENUM {A, B}` lists the
//!   allowed values. Arguments in `[...]` are optional: left out, the VMOD
//!   sees them as "not given". An argument without a name (e.g.
//!   `querysort(STRING)`) can only be passed by position; its `name` is
//!   empty and Varnish reports it missing as `Argument 1 missing` (1-based).
//! - Defaults are VCL text. Varnish writes `0` for "no value" in types
//!   without a zero (`STRING ident=0`, `BLOB param=0`, `BACKEND backend=0`):
//!   see [`Arg::default_is_null`]. BOOL defaults are written `0`/`1`.
//! - `PRIV_*` arguments (`fileread(PRIV_CALL, STRING)`) are state the
//!   runtime passes, invisible in VCL; the parser drops them and sets
//!   [`Func::priv_call`] etc. instead.
//! - `$Restrict` (the syntax of later Varnish releases) limits the
//!   preceding `$Function`/`$Method` to some subroutines, by name or by the
//!   groups `client`, `backend`, `housekeeping`, `both` and `all`. Varnish
//!   7.1 has no compile-time restrictions in `std` or `directors`: every
//!   limit there is checked at run time, noted in `# runtime:` comments
//!   below for the host's implementer.
//! - Objects may only be created with `new` in `vcl_init` (Varnish: "Not a
//!   valid action in subroutine 'vcl_recv'."); their methods can be called
//!   from any subroutine.

use crate::types::{Method, MethodSet, Type};
use std::sync::OnceLock;

/// A VMOD's interface.
#[derive(Clone, Debug, PartialEq)]
pub struct Vmod {
    pub name: String,
    pub functions: Vec<Func>,
    pub objects: Vec<Object>,
}

/// A function, an object method, or (as [`Object::ctor_args`]) a
/// constructor.
#[derive(Clone, Debug, PartialEq)]
pub struct Func {
    /// `tolower`; for a method, its name without the dot (`backend`).
    pub name: String,
    pub ret: Type,
    /// The VCL-visible arguments, in order.
    pub args: Vec<Arg>,
    /// Where it may be called; [`MethodSet::ALL`] unless `$Restrict` says.
    pub restrict: MethodSet,
    /// Which `PRIV_*` state the runtime passes (`PRIV_CALL`, `PRIV_TASK`,
    /// `PRIV_TOP`, `PRIV_VCL`), in order. Varnish limits functions taking
    /// `PRIV_TOP` to client subroutines.
    pub privs: Vec<String>,
}

impl Func {
    /// Whether the function keeps per-call-site state (`PRIV_CALL`, e.g.
    /// `std.fileread` caches the file per call site).
    pub fn priv_call(&self) -> bool {
        self.privs.iter().any(|p| p == "PRIV_CALL")
    }
}

/// One argument of a [`Func`].
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    /// Empty for an unnamed argument.
    pub name: String,
    pub ty: Type,
    /// The default as VCL text (`", "`, `1`, `HASH`, `-1`, `0.0`).
    pub default: Option<String>,
    /// Written in `[...]`: may be left out even without a default.
    pub optional: bool,
    /// For `ENUM`, the allowed values.
    pub enum_values: Vec<String>,
}

impl Arg {
    /// Whether the default is Varnish's `0` meaning "no value" (a NULL
    /// STRING, BLOB, BACKEND, …) rather than a literal of the type.
    pub fn default_is_null(&self) -> bool {
        self.default.as_deref() == Some("0")
            && !matches!(
                self.ty,
                Type::Int | Type::Real | Type::Bool | Type::Duration | Type::Bytes | Type::Time
            )
    }

    /// Whether a call must pass this argument.
    pub fn required(&self) -> bool {
        !self.optional && self.default.is_none()
    }
}

/// A VMOD object class, created with `new x = vmod.class(…)` in `vcl_init`.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub name: String,
    pub ctor_args: Vec<Arg>,
    pub methods: Vec<Func>,
}

impl Object {
    pub fn method(&self, name: &str) -> Option<&Func> {
        self.methods.iter().find(|m| m.name == name)
    }
}

impl Vmod {
    pub fn function(&self, name: &str) -> Option<&Func> {
        self.functions.iter().find(|f| f.name == name)
    }

    pub fn object(&self, name: &str) -> Option<&Object> {
        self.objects.iter().find(|o| o.name == name)
    }
}

/// The signatures of Varnish 7.1's `vmod_std` and `vmod_directors`
/// (from their `.vcc` files).
pub const BUILTIN_VCC: &str = r#"
$Module std
$Function REAL random(REAL lo, REAL hi)
$Function REAL round(REAL r)
# runtime: fails the task when hdr is NULL or not a req/resp/bereq/beresp header
$Function VOID collect(HEADER hdr, STRING sep=", ")
$Function STRING querysort(STRING)
$Function STRING toupper(STRANDS s)
$Function STRING tolower(STRANDS s)
$Function STRING strstr(STRING s1, STRING s2)
$Function BOOL fnmatch(STRING pattern, STRING subject, BOOL pathname=1, BOOL noescape=0, BOOL period=0)
$Function STRING fileread(PRIV_CALL, STRING)
$Function BLOB blobread(PRIV_CALL, STRING)
$Function BOOL file_exists(STRING path)
$Function BOOL healthy(BACKEND be)
$Function INT port(IP ip)
$Function DURATION duration([STRING s], [DURATION fallback], [REAL real], [INT integer])
$Function BYTES bytes([STRING s], [BYTES fallback], [REAL real], [INT integer])
$Function INT integer([STRING s], [INT fallback], [BOOL bool], [BYTES bytes], [DURATION duration], [REAL real], [TIME time])
$Function IP ip(STRING s, [IP fallback], BOOL resolve = 1, [STRING p])
$Function REAL real([STRING s], [REAL fallback], [INT integer], [BOOL bool], [BYTES bytes], [DURATION duration], [TIME time])
$Function TIME time([STRING s], [TIME fallback], [REAL real], [INT integer])
$Function STRING strftime(TIME time, STRING format)
$Function VOID log(STRANDS s)
$Function VOID syslog(INT priority, STRANDS s)
$Function VOID timestamp(STRING s)
$Function BOOL syntax(REAL)
$Function STRING getenv(STRING name)
# runtime: only in vcl_recv ("req.body can only be cached in vcl_recv{}"), else false
$Function BOOL cache_req_body(BYTES size)
# runtime: outside vcl_recv logs "std.late_100_continue() only valid in vcl_recv{}" and does nothing
$Function VOID late_100_continue(BOOL late)
$Function VOID set_ip_tos(INT tos)
$Function VOID rollback(HTTP h)
$Function BOOL ban(STRING)
$Function STRING ban_error()
# deprecated in 7.1 but present
$Function INT real2integer(REAL r, INT fallback)
$Function TIME real2time(REAL r, TIME fallback)
$Function INT time2integer(TIME t, INT fallback)
$Function REAL time2real(TIME t, REAL fallback)

$Module directors
$Object round_robin()
$Method VOID .add_backend(BACKEND)
$Method VOID .remove_backend(BACKEND)
$Method BACKEND .backend()
$Object fallback(BOOL sticky = 0)
$Method VOID .add_backend(BACKEND)
$Method VOID .remove_backend(BACKEND)
$Method BACKEND .backend()
$Object random()
$Method VOID .add_backend(BACKEND, REAL)
$Method VOID .remove_backend(BACKEND)
$Method BACKEND .backend()
$Object hash()
$Method VOID .add_backend(BACKEND, REAL weight = 1.0)
$Method VOID .remove_backend(BACKEND)
$Method BACKEND .backend(STRANDS)
$Object shard()
$Method VOID .set_warmup(REAL probability=0.0)
$Method VOID .set_rampup(DURATION duration=0)
$Method VOID .associate(BLOB param=0)
$Method BOOL .add_backend(BACKEND backend, [STRING ident], [DURATION rampup], [REAL weight])
$Method BOOL .remove_backend([BACKEND backend=0], [STRING ident=0])
$Method BOOL .clear()
$Method BOOL .reconfigure(INT replicas=67)
$Method INT .key(STRANDS)
# runtime: resolve defaults to LAZY in vcl_init/vcl_fini and NOW elsewhere; NOW fails
# in vcl_init/vcl_fini; LAZY with other arguments only in vcl_pipe and backend subs
$Method BACKEND .backend([ENUM {HASH, URL, KEY, BLOB} by=HASH], [INT key], [BLOB key_blob], [INT alt=0], [REAL warmup=-1], [BOOL rampup=1], [ENUM {CHOSEN, IGNORE, ALL} healthy=CHOSEN], [BLOB param], [ENUM {NOW, LAZY} resolve])
$Method VOID .debug(INT)
$Object shard_param()
# runtime: .clear() and .set() fail in client subs other than vcl_pipe
# ("... may only be used in vcl_init and in backend/pipe context")
$Method VOID .clear()
$Method VOID .set([ENUM {HASH, URL, KEY, BLOB} by], [INT key], [BLOB key_blob], [INT alt], [REAL warmup], [BOOL rampup], [ENUM {CHOSEN, IGNORE, ALL} healthy])
$Method STRING .get_by()
$Method INT .get_key()
$Method INT .get_alt()
$Method REAL .get_warmup()
$Method BOOL .get_rampup()
$Method STRING .get_healthy()
# runtime: only in vcl_pipe and backend subs
$Method BLOB .use()
# runtime: only in vcl_init/vcl_fini ("lookup() may only be called from vcl_init / vcl_fini")
$Function BACKEND lookup(STRING)
"#;

/// The built-in VMOD `name` (`std` or `directors`).
pub fn builtin_vmod(name: &str) -> Option<&'static Vmod> {
    builtin_vmods().iter().find(|v| v.name == name)
}

/// All built-in VMODs.
pub fn builtin_vmods() -> &'static [Vmod] {
    static VMODS: OnceLock<Vec<Vmod>> = OnceLock::new();
    VMODS.get_or_init(|| match parse_vcc(BUILTIN_VCC) {
        Ok(v) => v,
        // The text is a constant of this file, checked by the unit tests.
        Err(e) => panic!("built-in VMOD signatures: {e}"),
    })
}

/// Parses signatures in the compact `.vcc` form described in the module
/// documentation. Errors name the 1-based line.
pub fn parse_vcc(text: &str) -> Result<Vec<Vmod>, String> {
    let mut vmods: Vec<Vmod> = Vec::new();
    // What a `$Restrict` line applies to.
    #[derive(Clone, Copy)]
    enum Last {
        None,
        Function,
        Method,
    }
    let mut last = Last::None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |e: String| format!("line {}: {e}", i + 1);
        let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        if keyword == "$Module" {
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err(at("expected `$Module name`".into()));
            }
            vmods.push(Vmod {
                name: rest.to_string(),
                functions: Vec::new(),
                objects: Vec::new(),
            });
            last = Last::None;
            continue;
        }
        let Some(vmod) = vmods.last_mut() else {
            return Err(at(format!("{keyword} before $Module")));
        };
        match keyword {
            "$Function" => {
                let f = parse_func(rest, false).map_err(at)?;
                vmod.functions.push(f);
                last = Last::Function;
            }
            "$Object" => {
                let (name, args) = split_call(rest).map_err(at)?;
                let (ctor_args, _) = parse_args(args).map_err(at)?;
                vmod.objects.push(Object {
                    name: ident(name).map_err(at)?,
                    ctor_args,
                    methods: Vec::new(),
                });
                last = Last::None;
            }
            "$Method" => {
                let m = parse_func(rest, true).map_err(at)?;
                let Some(obj) = vmod.objects.last_mut() else {
                    return Err(at("$Method before $Object".into()));
                };
                obj.methods.push(m);
                last = Last::Method;
            }
            "$Restrict" => {
                let set = parse_restrict(rest).map_err(at)?;
                let target = match last {
                    Last::Function => vmod.functions.last_mut(),
                    Last::Method => vmod.objects.last_mut().and_then(|o| o.methods.last_mut()),
                    Last::None => None,
                };
                let Some(f) = target else {
                    return Err(at(
                        "$Restrict without a preceding $Function or $Method".into()
                    ));
                };
                f.restrict = set;
            }
            other => return Err(at(format!("unknown stanza {other}"))),
        }
    }
    Ok(vmods)
}

/// `RET name(ARGS)`, or `RET .name(ARGS)` for a method.
fn parse_func(s: &str, method: bool) -> Result<Func, String> {
    let (ret, rest) = s
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("expected `TYPE name(...)`, got `{s}`"))?;
    let ret = parse_type(ret)?;
    let (name, args) = split_call(rest.trim())?;
    let name = if method {
        name.strip_prefix('.')
            .ok_or_else(|| format!("method name `{name}` must start with `.`"))?
    } else {
        name
    };
    let (args, privs) = parse_args(args)?;
    Ok(Func {
        name: ident(name)?,
        ret,
        args,
        restrict: MethodSet::ALL,
        privs,
    })
}

/// Splits `name(args)` into `name` and `args`.
fn split_call(s: &str) -> Result<(&str, &str), String> {
    let open = s.find('(').ok_or_else(|| format!("missing `(` in `{s}`"))?;
    let inner = s[open + 1..]
        .strip_suffix(')')
        .ok_or_else(|| format!("missing `)` at the end of `{s}`"))?;
    Ok((s[..open].trim(), inner))
}

fn ident(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("bad name `{s}`"))
    }
}

fn parse_type(s: &str) -> Result<Type, String> {
    const TYPES: &[Type] = &[
        Type::Void,
        Type::Acl,
        Type::Backend,
        Type::Blob,
        Type::Body,
        Type::Bool,
        Type::Bytes,
        Type::Duration,
        Type::Enum,
        Type::Header,
        Type::Http,
        Type::Int,
        Type::Ip,
        Type::Probe,
        Type::Real,
        Type::Regex,
        Type::Stevedore,
        Type::String,
        Type::Strands,
        Type::Sub,
        Type::Time,
    ];
    TYPES
        .iter()
        .copied()
        .find(|t| t.name() == s)
        .ok_or_else(|| format!("unknown type `{s}`"))
}

/// Splits at commas outside quotes, braces and brackets.
fn split_top(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            _ if quoted => {}
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return Err(format!("unbalanced brackets in `{s}`"));
        }
    }
    if quoted || depth != 0 {
        return Err(format!("unbalanced quotes or brackets in `{s}`"));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

/// An argument list: the VCL-visible arguments and the `PRIV_*` ones.
fn parse_args(s: &str) -> Result<(Vec<Arg>, Vec<String>), String> {
    let mut args = Vec::new();
    let mut privs = Vec::new();
    if s.trim().is_empty() {
        return Ok((args, privs));
    }
    for part in split_top(s)? {
        let part = part.trim();
        if part.starts_with("PRIV_") {
            privs.push(part.to_string());
            continue;
        }
        let arg = parse_arg(part)?;
        if !arg.name.is_empty() && args.iter().any(|a: &Arg| a.name == arg.name) {
            return Err(format!("argument `{}` declared twice", arg.name));
        }
        args.push(arg);
    }
    Ok((args, privs))
}

/// `[TYPE name=default]`, `TYPE`, `ENUM {A, B} name=A`, …
fn parse_arg(s: &str) -> Result<Arg, String> {
    let (optional, body) = match s.strip_prefix('[') {
        Some(inner) => (
            true,
            inner
                .strip_suffix(']')
                .ok_or_else(|| format!("missing `]` in `{s}`"))?
                .trim(),
        ),
        None => (false, s),
    };
    let (decl, default) = match body.split_once('=') {
        Some((d, v)) => {
            let v = v.trim();
            if v.is_empty() {
                return Err(format!("empty default in `{s}`"));
            }
            (d.trim(), Some(v.to_string()))
        }
        None => (body, None),
    };
    let ty_end = decl
        .find(|c: char| !c.is_ascii_uppercase())
        .unwrap_or(decl.len());
    let ty = parse_type(&decl[..ty_end])?;
    let mut rest = decl[ty_end..].trim();
    let mut enum_values = Vec::new();
    if ty == Type::Enum {
        let inner = rest
            .strip_prefix('{')
            .ok_or_else(|| format!("ENUM without `{{...}}` in `{s}`"))?;
        let close = inner
            .find('}')
            .ok_or_else(|| format!("missing `}}` in `{s}`"))?;
        for v in inner[..close].split(',') {
            enum_values.push(ident(v.trim())?);
        }
        rest = inner[close + 1..].trim();
        if let Some(d) = &default {
            if !enum_values.contains(d) {
                return Err(format!("default `{d}` is not one of the ENUM values"));
            }
        }
    }
    let name = if rest.is_empty() {
        String::new()
    } else {
        ident(rest)?
    };
    if name.is_empty() && default.is_some() {
        return Err(format!("default for an unnamed argument in `{s}`"));
    }
    Ok(Arg {
        name,
        ty,
        default,
        optional,
        enum_values,
    })
}

/// `vcl_recv vcl_hash client backend housekeeping both all`.
fn parse_restrict(s: &str) -> Result<MethodSet, String> {
    let mut set = MethodSet::NONE;
    for word in s.split(|c: char| c.is_whitespace() || c == ',') {
        let add = match word {
            "" => continue,
            "client" => MethodSet::CLIENT,
            "backend" => MethodSet::BACKEND,
            "housekeeping" => MethodSet::HOUSEKEEPING,
            "both" => MethodSet::CLIENT.union(MethodSet::BACKEND),
            "all" => MethodSet::ALL,
            sub => match Method::from_sub_name(sub) {
                Some(m) => MethodSet::of(&[m]),
                None => return Err(format!("unknown subroutine `{sub}` in $Restrict")),
            },
        };
        set = set.union(add);
    }
    if set.is_empty() {
        return Err("empty $Restrict".into());
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn std() -> &'static Vmod {
        builtin_vmod("std").expect("std")
    }

    #[test]
    fn parses() {
        assert!(parse_vcc(BUILTIN_VCC).is_ok());
        assert_eq!(std().functions.len(), 35);
        assert!(builtin_vmod("directors").is_some());
        assert!(builtin_vmod("vtc").is_none());
    }

    #[test]
    fn tolower() {
        let f = std().function("tolower").expect("tolower");
        assert_eq!(f.ret, Type::String);
        assert_eq!(f.args.len(), 1);
        assert_eq!(f.args[0].ty, Type::Strands);
        assert_eq!(f.args[0].name, "s");
        assert!(f.args[0].required());
        assert_eq!(f.restrict, MethodSet::ALL);
    }

    #[test]
    fn std_details() {
        let f = std().function("collect").expect("collect");
        assert_eq!(f.args[1].default.as_deref(), Some("\", \""));
        let f = std().function("fileread").expect("fileread");
        assert_eq!(f.args.len(), 1);
        assert!(f.priv_call());
        assert_eq!(f.args[0].name, "");
        let f = std().function("integer").expect("integer");
        assert_eq!(f.args.len(), 7);
        assert!(f.args.iter().all(|a| a.optional && !a.required()));
        let f = std().function("ip").expect("ip");
        assert!(f.args[0].required());
        assert_eq!(f.args[2].default.as_deref(), Some("1"));
        assert!(std().function("now").is_none());
    }

    #[test]
    fn shard_backend() {
        let d = builtin_vmod("directors").expect("directors");
        let shard = d.object("shard").expect("shard");
        let m = shard.method("backend").expect("backend");
        assert_eq!(m.ret, Type::Backend);
        let by = &m.args[0];
        assert_eq!((by.name.as_str(), by.ty), ("by", Type::Enum));
        assert_eq!(by.enum_values, ["HASH", "URL", "KEY", "BLOB"]);
        assert_eq!(by.default.as_deref(), Some("HASH"));
        assert!(by.optional);
        assert_eq!(m.args.len(), 9);
        let rb = shard.method("remove_backend").expect("remove_backend");
        assert!(rb.args.iter().all(|a| a.default_is_null()));
        let fb = d.object("fallback").expect("fallback");
        assert_eq!(fb.ctor_args[0].default.as_deref(), Some("0"));
        assert!(!fb.ctor_args[0].default_is_null());
        assert!(d.function("lookup").is_some());
        assert!(d
            .object("shard_param")
            .and_then(|o| o.method("use"))
            .is_some());
    }

    #[test]
    fn restrict_and_errors() {
        let v = parse_vcc(
            "$Module m\n$Function VOID f()\n$Restrict vcl_recv backend\n$Object o()\n$Method INT .g()\n$Restrict housekeeping\n",
        )
        .expect("parse");
        let f = v[0].function("f").expect("f");
        assert!(f.restrict.contains(Method::Recv));
        assert!(f.restrict.contains(Method::BackendError));
        assert!(!f.restrict.contains(Method::Deliver));
        let g = v[0].object("o").and_then(|o| o.method("g")).expect("g");
        assert_eq!(g.restrict, MethodSet::HOUSEKEEPING);
        assert!(parse_vcc("$Function VOID f()").is_err());
        assert!(parse_vcc("$Module m\n$Function FOO f()").is_err());
        assert!(parse_vcc("$Module m\n$Function VOID f(ENUM {A, B} x=C)").is_err());
        assert!(parse_vcc("$Module m\n$Restrict vcl_recv").is_err());
        assert!(parse_vcc("$Module m\n$Function VOID f([INT x)").is_err());
    }
}
