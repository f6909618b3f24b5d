//! Host-native functions reached through `native_call`: `std` (Varnish's
//! `vmod_std`) and the language helpers the compiler emits as VMOD `vcl`
//! (`.lower()`, `.upper()`, constant IPs, `storage.*`, `.resolve()`).
//! Anything not implemented fails the task (`VRT_fail`), never the process.

use crate::cache_vcl::VclShared;
use crate::vrt_ctx::Task;
use std::net::IpAddr;
use vcl_to_wasm::abi::Tag;
use vcl_to_wasm::tir::NativeFn;

/// A decoded argument slot.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    None,
    Str(Option<String>),
    /// A BLOB: bytes, not necessarily UTF-8.
    Blob(Option<Vec<u8>>),
    /// A HEADER argument: where (`HttpWhere` code) and the name.
    Header(i32, String),
    Int(i64),
    Real(f64),
    Bool(bool),
    Handle(i32),
}

/// A result to write into the `ret` slot.
#[derive(Clone, Debug, PartialEq)]
pub enum Ret {
    Void,
    Str(Option<String>),
    Blob(Option<Vec<u8>>),
    Int(i64),
    Real(f64),
    Bool(bool),
    Handle(Tag, i32),
}

/// A native function bound at load time.
#[derive(Clone, Debug)]
pub enum Native {
    ToLower,
    ToUpper,
    Log,
    Timestamp,
    Noop,
    /// `std.late_100_continue(late)`: when the client's 100 Continue goes out.
    Late100Continue,
    QuerySort,
    Integer,
    Real,
    Duration,
    Strstr,
    Healthy,
    Port,
    Random,
    Ip,
    BanFalse,
    BanError,
    Resolve,
    Storage,
    StorageSpace,
    Happy,
    /// `new x = directors.kind(…)`.
    DirectorNew(crate::vmod_directors::Kind),
    /// A method of a `directors` object.
    DirectorMethod(crate::vmod_directors::Kind, crate::vmod_directors::Call),
    /// `directors.lookup()`.
    DirectorLookup,
    /// Not implemented: calling it fails the task with this message.
    /// `std.rollback(req|bereq)`.
    Rollback,
    Missing(String),
    /// A function of a component VMOD (`cache_vmod`).
    Component(crate::cache_vmod::Binding),
    Collect,
    Real2Time,
    Real2Integer,
    Time2Integer,
    Time2Real,
    Round,
    Fnmatch,
    Time,
    FileExists,
    FileRead,
    CacheReqBody,
}

/// `std.fileread()` and `std.file_exists()` confined to the directories
/// of `fileread_path`. A file is read once per VCL, as Varnish's
/// PRIV_CALL cache does: later changes to it are not seen until reload.
#[derive(Debug, Default)]
pub struct FileReader {
    dirs: Vec<std::path::PathBuf>,
    cache: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl FileReader {
    /// The reader for a `fileread_path` value.
    pub fn new(path: &str) -> FileReader {
        FileReader {
            dirs: path
                .split(':')
                .filter(|d| !d.is_empty())
                .filter_map(|d| std::fs::canonicalize(d).ok())
                .collect(),
            cache: Default::default(),
        }
    }

    /// `path` resolved (symlinks, `..`) if it lies inside an allowed
    /// directory.
    fn allowed(&self, path: &str) -> Result<std::path::PathBuf, String> {
        let real = std::fs::canonicalize(path)
            .map_err(|e| format!("std.fileread: cannot read {path}: {e}"))?;
        if self.dirs.iter().any(|d| real.starts_with(d)) {
            Ok(real)
        } else {
            Err(format!("std.fileread: {path} is outside fileread_path"))
        }
    }

    /// The contents of `path` (lossy UTF-8), from the cache after the
    /// first read.
    pub fn read(&self, path: &str) -> Result<String, String> {
        if let Some(s) = self.cache.lock().ok().and_then(|c| c.get(path).cloned()) {
            return Ok(s);
        }
        let real = self.allowed(path)?;
        let bytes =
            std::fs::read(&real).map_err(|e| format!("std.fileread: cannot read {path}: {e}"))?;
        let s = String::from_utf8_lossy(&bytes).into_owned();
        if let Ok(mut c) = self.cache.lock() {
            c.insert(path.to_string(), s.clone());
        }
        Ok(s)
    }

    /// Whether `path` exists inside an allowed directory.
    pub fn exists(&self, path: &str) -> bool {
        self.allowed(path).is_ok_and(|p| p.exists())
    }
}

/// Binds a `Metadata::natives` entry.
pub fn bind(f: &NativeFn) -> Native {
    match (f.vmod.as_str(), f.func.as_str()) {
        ("std", "tolower") | ("vcl", "lower") => Native::ToLower,
        ("std", "toupper") | ("vcl", "upper") => Native::ToUpper,
        ("std", "log") | ("std", "syslog") => Native::Log,
        ("std", "timestamp") => Native::Timestamp,
        ("std", "set_ip_tos") => Native::Noop,
        ("std", "late_100_continue") => Native::Late100Continue,
        ("std", "querysort") => Native::QuerySort,
        ("std", "collect") => Native::Collect,
        ("std", "real2time") => Native::Real2Time,
        ("std", "real2integer") => Native::Real2Integer,
        ("std", "time2integer") => Native::Time2Integer,
        ("std", "time2real") => Native::Time2Real,
        ("std", "round") => Native::Round,
        ("std", "fnmatch") => Native::Fnmatch,
        ("std", "time") => Native::Time,
        ("std", "file_exists") => Native::FileExists,
        ("std", "fileread") => Native::FileRead,
        ("std", "cache_req_body") => Native::CacheReqBody,
        ("std", "integer") => Native::Integer,
        ("std", "real") => Native::Real,
        ("std", "duration") => Native::Duration,
        ("std", "strstr") => Native::Strstr,
        ("std", "healthy") => Native::Healthy,
        ("std", "rollback") => Native::Rollback,
        ("std", "port") => Native::Port,
        ("std", "random") => Native::Random,
        ("std", "ip") | ("vcl", "ip") => Native::Ip,
        ("std", "ban") => Native::BanFalse,
        ("std", "ban_error") => Native::BanError,
        ("vcl", "resolve") => Native::Resolve,
        ("vcl", "storage") => Native::Storage,
        ("vcl", "free_space") | ("vcl", "used_space") => Native::StorageSpace,
        ("vcl", "happy") => Native::Happy,
        ("directors", f) => crate::vmod_directors::bind(f)
            .unwrap_or_else(|| Native::Missing(format!("directors.{f}() is not implemented"))),
        (v, n) => Native::Missing(format!("{v}.{n}() is not implemented yet")),
    }
}

/// The name of a STEVEDORE handle (1 = `s0`, 2 = `Transient`).
pub fn stevedore_name(h: i32) -> &'static str {
    if h == 2 {
        "Transient"
    } else {
        "s0"
    }
}

fn s(args: &[Arg], i: usize) -> Option<&str> {
    match args.get(i) {
        Some(Arg::Str(Some(s))) => Some(s),
        _ => None,
    }
}

fn given(args: &[Arg], i: usize) -> bool {
    !matches!(args.get(i), None | Some(Arg::None))
}

fn num(args: &[Arg], i: usize) -> Option<f64> {
    match args.get(i) {
        Some(Arg::Int(n)) => Some(*n as f64),
        Some(Arg::Real(x)) => Some(*x),
        Some(Arg::Bool(b)) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// `std.querysort`: sorts the query string's parameters.
fn querysort(url: &str) -> String {
    let Some((path, q)) = url.split_once('?') else {
        return url.to_string();
    };
    let mut params: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
    if params.is_empty() {
        return path.to_string();
    }
    params.sort_unstable();
    format!("{path}?{}", params.join("&"))
}

/// Calls a native function.
pub fn call(
    native: &Native,
    object: i32,
    args: &[Arg],
    task: &mut Task,
    vcl: &VclShared,
) -> Result<Ret, String> {
    Ok(match native {
        // C's tolower/toupper in the C locale, as varnishd: ASCII letters
        // only, other bytes (UTF-8 included) as they are.
        Native::ToLower => Ret::Str(Some(s(args, 0).unwrap_or("").to_ascii_lowercase())),
        Native::ToUpper => Ret::Str(Some(s(args, 0).unwrap_or("").to_ascii_uppercase())),
        Native::Log => {
            let msg = args.iter().rev().find_map(|a| match a {
                Arg::Str(Some(s)) => Some(s.as_str()),
                _ => None,
            });
            task.vsl.log(vapi::Tag::VCL_Log, msg.unwrap_or(""));
            Ret::Void
        }
        Native::Timestamp => {
            if let Some(label) = s(args, 0) {
                task.vsl.ts(label, crate::vrt_ctx::now());
            }
            Ret::Void
        }
        Native::Noop => Ret::Void,
        Native::Late100Continue => {
            if task.method == vcl_to_wasm::types::Method::Recv {
                task.req_body
                    .set_late_continue(num(args, 0).is_some_and(|x| x != 0.0));
            } else {
                task.vsl.log(
                    vapi::Tag::VCL_Error,
                    "std.late_100_continue() only valid in vcl_recv{}",
                );
            }
            Ret::Void
        }
        Native::QuerySort => Ret::Str(s(args, 0).map(querysort)),
        Native::Integer => {
            if let Some(v) = s(args, 0).and_then(|v| v.trim().parse::<i64>().ok()) {
                Ret::Int(v)
            } else if let Some(x) = (2..7).find_map(|i| num(args, i)) {
                Ret::Int(x.trunc() as i64)
            } else if given(args, 1) {
                Ret::Int(num(args, 1).unwrap_or(0.0) as i64)
            } else {
                return Err("std.integer: conversion failed and no fallback".into());
            }
        }
        Native::Real => {
            if let Some(v) = s(args, 0).and_then(|v| v.trim().parse::<f64>().ok()) {
                Ret::Real(v)
            } else if let Some(x) = (2..7).find_map(|i| num(args, i)) {
                Ret::Real(x)
            } else if given(args, 1) {
                Ret::Real(num(args, 1).unwrap_or(0.0))
            } else {
                return Err("std.real: conversion failed and no fallback".into());
            }
        }
        Native::Duration => {
            if let Some(v) = s(args, 0).and_then(crate::mgt_param::parse_duration) {
                Ret::Real(v)
            } else if let Some(x) = num(args, 2).or_else(|| num(args, 3)) {
                Ret::Real(x)
            } else if given(args, 1) {
                Ret::Real(num(args, 1).unwrap_or(0.0))
            } else {
                return Err("std.duration: conversion failed and no fallback".into());
            }
        }
        Native::Strstr => match (s(args, 0), s(args, 1)) {
            (Some(a), Some(b)) => Ret::Str(a.find(b).map(|i| a[i..].to_string())),
            _ => Ret::Str(None),
        },
        Native::Healthy => Ret::Bool(match args.first() {
            Some(Arg::Handle(h)) => vcl.backend_healthy(*h),
            _ => false,
        }),
        Native::Port => match args.first() {
            Some(Arg::Handle(h)) => Ret::Int(i64::from(task.ip_port(*h))),
            _ => Ret::Int(0),
        },
        Native::Random => {
            let (lo, hi) = (num(args, 0).unwrap_or(0.0), num(args, 1).unwrap_or(1.0));
            let r = (random_u64() >> 11) as f64 / (1u64 << 53) as f64;
            Ret::Real(lo + (hi - lo) * r)
        }
        Native::Ip => {
            let resolve = !matches!(args.get(2), Some(Arg::Bool(false)));
            let parsed = s(args, 0).and_then(|v| parse_ip(v, resolve));
            match parsed {
                // `p`, the port it gets, is "80" unless given.
                Some(ip) => {
                    let port = s(args, 3).and_then(|p| p.parse().ok()).unwrap_or(80);
                    Ret::Handle(Tag::Ip, task.ip_handle(ip, port))
                }
                None => match args.get(1) {
                    Some(Arg::Handle(h)) if *h != 0 => Ret::Handle(Tag::Ip, *h),
                    _ => return Err(format!("cannot parse IP \"{}\"", s(args, 0).unwrap_or(""))),
                },
            }
        }
        Native::BanFalse => {
            let parsed = match s(args, 0) {
                None => Err("Null argument".to_string()),
                Some(text) => crate::cache_ban::parse(text, crate::vrt_ctx::now()),
            };
            match parsed {
                Ok(b) => {
                    task.new_bans.push(b);
                    task.ban_error.clear();
                    Ret::Bool(true)
                }
                Err(e) => {
                    task.vsl
                        .logf(vapi::Tag::VCL_Error, format_args!("ban(): {e}"));
                    task.ban_error = e;
                    Ret::Bool(false)
                }
            }
        }
        Native::BanError => Ret::Str(Some(task.ban_error.clone())),
        // `BACKEND.resolve()`: what a director picks now.
        Native::Resolve => match args.first() {
            Some(Arg::Handle(h)) => Ret::Handle(
                Tag::Backend,
                crate::vmod_directors::resolve_handle(vcl, *h, task).unwrap_or(0),
            ),
            _ => Ret::Handle(Tag::Backend, 0),
        },
        Native::Storage => Ret::Handle(
            Tag::Stevedore,
            if s(args, 0) == Some("Transient") {
                2
            } else {
                1
            },
        ),
        Native::StorageSpace => Ret::Int(vcl.storage_budget as i64),
        Native::Happy => Ret::Bool(true),
        Native::DirectorNew(_) | Native::DirectorMethod(..) | Native::DirectorLookup => {
            crate::vmod_directors::call(native, object, args, task, vcl)?
        }
        Native::Rollback => {
            // Varnish's VRT_Rollback: the message goes back to what the
            // task started with (`http0`, `bereq0`).
            if task.method == vcl_to_wasm::types::Method::Pipe {
                return Err("Cannot rollback in vcl_pipe {}".into());
            }
            match args.first() {
                Some(Arg::Handle(0 | 1)) => task.req = task.http0.clone(),
                Some(Arg::Handle(2)) => {
                    task.bereq = task.http0.clone();
                    task.bereq_rolled_back =
                        task.method == vcl_to_wasm::types::Method::BackendResponse;
                }
                _ => return Err("std.rollback: only req and bereq can be rolled back".into()),
            }
            Ret::Void
        }
        Native::Missing(msg) => return Err(msg.clone()),
        Native::Component(_) => return Err("component VMOD called as native".into()),
        Native::Collect => {
            if let Some(Arg::Header(w, name)) = args.first() {
                let sep = s(args, 1).unwrap_or(", ");
                let h = match w {
                    0 => &mut task.req.headers,
                    2 => &mut task.bereq.headers,
                    3 => &mut task.beresp.headers,
                    4 => &mut task.resp.headers,
                    _ => return Err("std.collect: header is read-only".into()),
                };
                collect_with(h, name, sep);
            }
            Ret::Void
        }
        Native::Real2Time => match num(args, 0).filter(|x| x.is_finite()) {
            Some(x) => Ret::Real(x),
            None => Ret::Real(num(args, 1).unwrap_or(0.0)),
        },
        Native::Real2Integer | Native::Time2Integer => {
            match num(args, 0).filter(|x| x.is_finite() && x.abs() < 9.2e18) {
                Some(x) => Ret::Int(x.trunc() as i64),
                None => Ret::Int(num(args, 1).unwrap_or(0.0) as i64),
            }
        }
        Native::Time2Real => match num(args, 0).filter(|x| x.is_finite()) {
            Some(x) => Ret::Real(x),
            None => Ret::Real(num(args, 1).unwrap_or(0.0)),
        },
        Native::Round => Ret::Real(num(args, 0).unwrap_or(0.0).round()),
        Native::Fnmatch => Ret::Bool(match (s(args, 0), s(args, 1)) {
            (Some(p), Some(subject)) => {
                fnmatch(p, subject, !matches!(args.get(2), Some(Arg::Bool(false))))
            }
            _ => false,
        }),
        Native::Time => {
            let parsed = s(args, 0).and_then(|v| {
                crate::cache_expire::parse_http_date(v).or_else(|| v.trim().parse::<f64>().ok())
            });
            match parsed.or_else(|| num(args, 2)).or_else(|| num(args, 3)) {
                Some(t) => Ret::Real(t),
                None if given(args, 1) => Ret::Real(num(args, 1).unwrap_or(0.0)),
                None => return Err("std.time: conversion failed and no fallback".into()),
            }
        }
        // The sandbox sees no files.
        Native::FileExists => Ret::Bool(s(args, 0).is_some_and(|p| vcl.files.exists(p))),
        Native::FileRead => Ret::Str(Some(vcl.files.read(s(args, 0).unwrap_or(""))?)),
        Native::CacheReqBody => Ret::Bool(cache_req_body(task, num(args, 0).unwrap_or(0.0))),
    })
}

/// `std.cache_req_body(max)`: reads the request body into memory (in
/// `vcl_recv` only, and before any restart, as in Varnish). A cached body
/// that came chunked is announced with its length from then on.
fn cache_req_body(task: &mut Task, max: f64) -> bool {
    use crate::cache_req_body::BodyError;
    use vapi::Tag;
    if task.method != vcl_to_wasm::types::Method::Recv {
        task.vsl
            .log(Tag::VCL_Error, "req.body can only be cached in vcl_recv{}");
        return false;
    }
    let body = task.req_body.clone();
    if task.restarts > 0 && body.cached().is_none() && body.is_present() {
        task.vsl
            .log(Tag::VCL_Error, &BodyError::NotFirst.to_string());
        return false;
    }
    let max = if max.is_finite() {
        max.max(0.0) as u64
    } else {
        u64::MAX
    };
    // Varnish reads the body into a Transient object, timed `ReqBody`.
    let reading = body.is_unread();
    if reading && body.announced().is_none_or(|n| n <= max) {
        task.vsl.log(Tag::Storage, "malloc Transient");
    }
    let r = body.cache_blocking(max);
    if body.take_continue_unlogged() {
        crate::cache_req_body::log_continue(&mut task.vsl);
    }
    if let Err(e) = &r {
        task.vsl
            .log(Tag::FetchError, &e.vfp_text(body.was_chunked()));
    }
    if reading && !matches!(r, Err(BodyError::TooBig) if body.announced().is_some_and(|n| n > max))
    {
        task.vsl.ts("ReqBody", crate::vrt_ctx::now());
    }
    match r {
        Ok(n) => {
            if body.was_chunked() {
                crate::cache_obj::hdr_unset(&mut task.req.headers, "transfer-encoding");
                crate::cache_obj::hdr_set(&mut task.req.headers, "Content-Length", &n.to_string());
            }
            true
        }
        Err(_) => false,
    }
}

/// `std.collect`: joins every `name` header into the first, with `sep`.
pub fn collect_with(h: &mut crate::cache_obj::Headers, name: &str, sep: &str) {
    let mut first: Option<usize> = None;
    let mut i = 0;
    while i < h.len() {
        if !h[i].0.eq_ignore_ascii_case(name) {
            i += 1;
            continue;
        }
        match first {
            None => {
                first = Some(i);
                i += 1;
            }
            Some(f) => {
                let (_, v) = h.remove(i);
                let joined = format!("{}{sep}{v}", h[f].1);
                h[f].1 = joined;
            }
        }
    }
}

/// `std.fnmatch` (shell wildcard matching, fnmatch(3)); also used for
/// backend name patterns on the admin CLI. A malformed pattern matches
/// nothing, as fnmatch(3) reports no match.
pub fn fnmatch(pattern: &str, subject: &str, pathname: bool) -> bool {
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: pathname,
        require_literal_leading_dot: false,
    };
    glob::Pattern::new(pattern).is_ok_and(|p| p.matches_with(subject, opts))
}

/// 64 random bits: a fresh SipHash key from the standard library's
/// per-process random seed, mixed with a counter (not for cryptography).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// An address as `std.ip()` takes it: an IP, optionally with a port
/// (`1.2.3.4:80`, `[::1]:80`, or Varnish's `1.2.3.4 80`), or a host name
/// when `resolve` is set (the first address it resolves to).
fn parse_ip(s: &str, resolve: bool) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    let host = match s.rsplit_once(' ') {
        Some((h, _port)) => h.trim(),
        None => match s.rsplit_once(':') {
            Some((h, _port)) if !h.contains(':') => h,
            _ => s,
        },
    };
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Some(ip);
    }
    if !resolve || host.is_empty() {
        return None;
    }
    std::net::ToSocketAddrs::to_socket_addrs(&(host, 0))
        .ok()?
        .next()
        .map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    #[test]
    fn querysort() {
        assert_eq!(super::querysort("/a?b=1&a=2"), "/a?a=2&b=1");
        assert_eq!(super::querysort("/a?"), "/a");
        assert_eq!(super::querysort("/a"), "/a");
    }
}
