//! A test host for compiled VCL modules: implements every import of
//! `vcl_to_wasm::abi` over simple in-memory state, so tests can run a
//! subroutine and look at what it did.
//!
//! ```ignore
//! let mut st = State::default();
//! st.set_header(HttpWhere::Req, "host", "example.com");
//! let action = run(&wasm, "vcl_recv", &mut st)?;
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::OnceLock;
use vcl_to_wasm::abi::{self, Tag};
use vcl_to_wasm::tir::{HttpWhere, Metadata, VarId};
use vcl_to_wasm::types::Action;
use wasmtime::{Caller, Engine, Extern, Linker, Module, Store, Val};

/// A variable's value in the test host.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(Option<String>),
    Int(i64),
    Real(f64),
    Bool(bool),
    Handle(i32),
}

/// A decoded native-call argument slot.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    pub tag: Tag,
    pub aux: u32,
    /// The value as read for the tag (`None` for `Tag::None`).
    pub value: Option<Value>,
}

/// One `native_call` the module made.
#[derive(Clone, Debug, PartialEq)]
pub struct NativeCall {
    /// `vmod.func`, from `Metadata::natives`.
    pub name: String,
    pub object: i32,
    pub args: Vec<Slot>,
}

/// A native function of the test host.
pub type NativeImpl = fn(&[Slot]) -> Option<Value>;

/// Everything a subroutine can read or change.
#[derive(Default)]
pub struct State {
    pub headers: HashMap<HttpWhere, Vec<(String, String)>>,
    pub vars: HashMap<VarId, Value>,
    pub unset_vars: Vec<VarId>,
    /// IP handles: handle `i` is `ips[i - 1]`.
    pub ips: Vec<IpAddr>,
    pub hash: Vec<Option<String>>,
    /// Turn trace points on (the host's `TRACE_ADDR` cell) and the trace
    /// points passed.
    pub trace: bool,
    pub traces: Vec<i32>,
    pub synthetic: String,
    pub bans: Vec<String>,
    pub logs: Vec<String>,
    pub synth: Option<(i64, Option<String>)>,
    pub pass_ttl: Option<f64>,
    pub vcl_label: Option<i32>,
    /// Messages passed to `fail`.
    pub failed: Vec<String>,
    pub native_calls: Vec<NativeCall>,
    /// Native functions by `vmod.func`; unknown ones return nothing.
    pub natives: HashMap<String, NativeImpl>,
    /// Workspace size in bytes; 0 = the module's default.
    pub workspace: u32,
    /// Workspace bytes in use when the subroutine returned.
    pub ws_used: u32,
    pub meta: Metadata,
    regexes: Vec<pcre2::bytes::Regex>,
}

impl State {
    pub fn set_header(&mut self, w: HttpWhere, name: &str, value: &str) {
        self.unset_header(w, name);
        self.add_header(w, name, value);
    }

    pub fn add_header(&mut self, w: HttpWhere, name: &str, value: &str) {
        self.headers
            .entry(w)
            .or_default()
            .push((name.to_string(), value.to_string()));
    }

    pub fn unset_header(&mut self, w: HttpWhere, name: &str) {
        if let Some(h) = self.headers.get_mut(&w) {
            h.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        }
    }

    /// The first header of that name, case-insensitively.
    pub fn header(&self, w: HttpWhere, name: &str) -> Option<&str> {
        self.headers
            .get(&w)?
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header of that name (to check replacement leaves one).
    pub fn headers_named(&self, w: HttpWhere, name: &str) -> Vec<&str> {
        self.headers
            .get(&w)
            .map(|h| {
                h.iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Registers an IP and returns its handle.
    pub fn ip(&mut self, addr: &str) -> i32 {
        self.ips.push(addr.parse().expect("test IP literal"));
        self.ips.len() as i32
    }
}

/// Errors the host functions raise; they unwind the call.
#[derive(Debug, Clone, PartialEq)]
pub enum HostError {
    WsOverflow,
    Other(String),
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::WsOverflow => f.write_str("workspace overflow"),
            HostError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for HostError {}

/// How a run ended other than by returning.
#[derive(Debug)]
pub enum RunError {
    /// The workspace overflowed (the module's or the host's allocation).
    WsOverflow,
    /// Some other host error.
    Host(String),
    /// A wasm trap or instantiation problem.
    Trap(String),
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

type HResult<T> = wasmtime::Result<T>;

fn host_err(m: impl Into<String>) -> wasmtime::Error {
    wasmtime::Error::new(HostError::Other(m.into()))
}

fn memory(c: &mut Caller<'_, State>) -> HResult<wasmtime::Memory> {
    c.get_export(abi::EXPORT_MEMORY)
        .and_then(Extern::into_memory)
        .ok_or_else(|| host_err("no memory export"))
}

/// The workspace cell (a little-endian `u32`) at `addr`.
fn cell(data: &[u8], addr: u32) -> Option<u32> {
    let a = addr as usize;
    Some(u32::from_le_bytes(data.get(a..a + 4)?.try_into().ok()?))
}

fn set_cell(data: &mut [u8], addr: u32, v: u32) -> Option<()> {
    let a = addr as usize;
    data.get_mut(a..a + 4)?.copy_from_slice(&v.to_le_bytes());
    Some(())
}

/// Reads a packed string; NULL is `None`.
fn read_str(c: &mut Caller<'_, State>, packed: i64) -> HResult<Option<String>> {
    if packed == abi::NULL {
        return Ok(None);
    }
    let (ptr, len) = abi::unpack(packed);
    let mem = memory(c)?;
    let data = mem.data(&*c);
    let bytes = data
        .get(ptr as usize..ptr as usize + len as usize)
        .ok_or_else(|| host_err("string out of bounds"))?;
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// Copies `s` into the workspace, as a host does for returned strings.
fn alloc_str(c: &mut Caller<'_, State>, s: Option<&str>) -> HResult<i64> {
    let Some(s) = s else { return Ok(abi::NULL) };
    let mem = memory(c)?;
    let data = mem.data(&*c);
    let (ptr, end) = cell(data, abi::WS_PTR_ADDR)
        .zip(cell(data, abi::WS_END_ADDR))
        .ok_or_else(|| host_err("no workspace cells"))?;
    let len = u32::try_from(s.len()).map_err(|_| host_err("huge string"))?;
    if u64::from(ptr) + u64::from(len) > u64::from(end) {
        return Err(wasmtime::Error::new(HostError::WsOverflow));
    }
    mem.write(&mut *c, ptr as usize, s.as_bytes())
        .map_err(|e| host_err(e.to_string()))?;
    set_cell(mem.data_mut(&mut *c), abi::WS_PTR_ADDR, ptr + len)
        .ok_or_else(|| host_err("no workspace cells"))?;
    Ok(abi::pack(ptr, len))
}

fn where_of(w: i32) -> HResult<HttpWhere> {
    Ok(match w {
        0 => HttpWhere::Req,
        1 => HttpWhere::ReqTop,
        2 => HttpWhere::Bereq,
        3 => HttpWhere::Beresp,
        4 => HttpWhere::Resp,
        5 => HttpWhere::Obj,
        _ => return Err(host_err(format!("bad HttpWhere {w}"))),
    })
}

/// Varnish's `VTIM_format`: an RFC 1123 date.
pub fn http_date(t: f64) -> String {
    let secs = t.floor() as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mon = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mon <= 2);
    let wd = (days + 4).rem_euclid(7); // 1970-01-01 was a Thursday
    const WD: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        WD[wd as usize],
        d,
        MON[(mon - 1) as usize],
        y,
        h,
        m,
        s
    )
}

/// Varnish's regsub replacement: `\0`..`\9` insert groups, `\x` is `x`,
/// a final lone backslash stays.
fn expand(caps: &pcre2::bytes::Captures<'_>, repl: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < repl.len() {
        let c = repl[i];
        if c != b'\\' || i + 1 == repl.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let n = repl[i + 1];
        if n.is_ascii_digit() {
            if let Some(m) = caps.get(usize::from(n - b'0')) {
                out.extend_from_slice(m.as_bytes());
            }
        } else {
            out.push(n);
        }
        i += 2;
    }
}

fn regsub(re: &pcre2::bytes::Regex, all: bool, subject: &[u8], repl: &[u8]) -> HResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut last = 0;
    for caps in re.captures_iter(subject) {
        let caps = caps.map_err(|e| host_err(e.to_string()))?;
        let Some(m) = caps.get(0) else { break };
        out.extend_from_slice(&subject[last..m.start()]);
        expand(&caps, repl, &mut out);
        last = m.end();
        if !all {
            break;
        }
    }
    out.extend_from_slice(&subject[last..]);
    Ok(out)
}

fn acl_match(meta: &Metadata, acl: i32, ip: IpAddr) -> HResult<bool> {
    let acl = meta
        .acls
        .get(acl as usize)
        .ok_or_else(|| host_err("bad ACL id"))?;
    // The most specific matching entry decides, as in Varnish.
    let mut best: Option<(u8, bool)> = None;
    for e in &acl.entries {
        let Ok(addr) = e.addr.parse::<IpAddr>() else {
            continue;
        };
        let bits = match (addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let m = e.mask.unwrap_or(32).min(32);
                let mask = if m == 0 { 0 } else { u32::MAX << (32 - m) };
                (u32::from(a) & mask == u32::from(b) & mask).then_some(m)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let m = e.mask.unwrap_or(128).min(128);
                let mask = if m == 0 { 0 } else { u128::MAX << (128 - m) };
                (u128::from(a) & mask == u128::from(b) & mask).then_some(m)
            }
            _ => None,
        };
        if let Some(m) = bits {
            if best.is_none_or(|(b, _)| m > b) {
                best = Some((m, !e.negated));
            }
        }
    }
    Ok(best.is_some_and(|(_, ok)| ok))
}

fn ip_of(st: &State, h: i32) -> HResult<IpAddr> {
    usize::try_from(h - 1)
        .ok()
        .and_then(|i| st.ips.get(i))
        .copied()
        .ok_or_else(|| host_err(format!("bad IP handle {h}")))
}

fn read_slot(c: &mut Caller<'_, State>, addr: u32) -> HResult<Slot> {
    let mem = memory(c)?;
    let mut b = [0u8; 16];
    mem.read(&*c, addr as usize, &mut b)
        .map_err(|e| host_err(e.to_string()))?;
    let tag = Tag::from_u8(b[0]).ok_or_else(|| host_err(format!("bad tag {}", b[0])))?;
    let aux = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let raw = i64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
    let value = match tag {
        Tag::None => None,
        Tag::String | Tag::Strands | Tag::Enum | Tag::Body | Tag::Blob | Tag::Header => {
            Some(Value::Str(read_str(c, raw)?))
        }
        Tag::Int | Tag::Bytes => Some(Value::Int(raw)),
        Tag::Real | Tag::Duration | Tag::Time => Some(Value::Real(f64::from_bits(raw as u64))),
        Tag::Bool => Some(Value::Bool(raw != 0)),
        _ => Some(Value::Handle(raw as i32)),
    };
    if b[1] != 0 || b[2] != 0 || b[3] != 0 {
        return Err(host_err("reserved slot bytes not zero"));
    }
    Ok(Slot { tag, aux, value })
}

fn write_ret(c: &mut Caller<'_, State>, addr: u32, v: Option<Value>) -> HResult<()> {
    let (tag, bits) = match v {
        None => (Tag::None, 0i64),
        Some(Value::Str(s)) => (Tag::String, alloc_str(c, s.as_deref())?),
        Some(Value::Int(n)) => (Tag::Int, n),
        Some(Value::Real(x)) => (Tag::Real, x.to_bits() as i64),
        Some(Value::Bool(b)) => (Tag::Bool, i64::from(b)),
        Some(Value::Handle(h)) => (Tag::Backend, i64::from(h as u32)),
    };
    let mut b = [0u8; 16];
    b[0] = tag as u8;
    b[8..].copy_from_slice(&bits.to_le_bytes());
    let mem = memory(c)?;
    mem.write(&mut *c, addr as usize, &b)
        .map_err(|e| host_err(e.to_string()))
}

fn linker() -> HResult<Linker<State>> {
    let mut l: Linker<State> = Linker::new(engine());
    let m = abi::MODULE;
    l.func_wrap(m, abi::WS_OVERFLOW, |_: Caller<'_, State>| -> HResult<()> {
        Err(wasmtime::Error::new(HostError::WsOverflow))
    })?;
    l.func_wrap(
        m,
        abi::FAIL,
        |mut c: Caller<'_, State>, msg: i64| -> HResult<()> {
            let msg = read_str(&mut c, msg)?.unwrap_or_default();
            c.data_mut().failed.push(msg);
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        abi::HEADER_GET,
        |mut c: Caller<'_, State>, w: i32, name: i64| -> HResult<i64> {
            let name = read_str(&mut c, name)?.unwrap_or_default();
            let v = c.data().header(where_of(w)?, &name).map(str::to_string);
            alloc_str(&mut c, v.as_deref())
        },
    )?;
    l.func_wrap(
        m,
        abi::HEADER_SET,
        |mut c: Caller<'_, State>, w: i32, name: i64, v: i64| -> HResult<()> {
            let name = read_str(&mut c, name)?.unwrap_or_default();
            let v = read_str(&mut c, v)?.unwrap_or_default();
            c.data_mut().set_header(where_of(w)?, &name, &v);
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        abi::HEADER_UNSET,
        |mut c: Caller<'_, State>, w: i32, name: i64| -> HResult<()> {
            let name = read_str(&mut c, name)?.unwrap_or_default();
            c.data_mut().unset_header(where_of(w)?, &name);
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        abi::VAR_GET_STRING,
        |mut c: Caller<'_, State>, id: i32| -> HResult<i64> {
            let v = match c.data().vars.get(&(id as u32)) {
                Some(Value::Str(s)) => s.clone(),
                None => None,
                Some(v) => return Err(host_err(format!("var {id} is {v:?}"))),
            };
            alloc_str(&mut c, v.as_deref())
        },
    )?;
    l.func_wrap(
        m,
        abi::VAR_SET_STRING,
        |mut c: Caller<'_, State>, id: i32, v: i64| -> HResult<()> {
            let v = read_str(&mut c, v)?;
            c.data_mut().vars.insert(id as u32, Value::Str(v));
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        abi::VAR_GET_INT,
        |c: Caller<'_, State>, id: i32| -> HResult<i64> {
            match c.data().vars.get(&(id as u32)) {
                Some(Value::Int(n)) => Ok(*n),
                None => Ok(0),
                Some(v) => Err(host_err(format!("var {id} is {v:?}"))),
            }
        },
    )?;
    l.func_wrap(
        m,
        abi::VAR_SET_INT,
        |mut c: Caller<'_, State>, id: i32, v: i64| -> HResult<()> {
            c.data_mut().vars.insert(id as u32, Value::Int(v));
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        abi::VAR_GET_REAL,
        |c: Caller<'_, State>, id: i32| -> HResult<f64> {
            match c.data().vars.get(&(id as u32)) {
                Some(Value::Real(x)) => Ok(*x),
                None => Ok(0.0),
                Some(v) => Err(host_err(format!("var {id} is {v:?}"))),
            }
        },
    )?;
    l.func_wrap(
        m,
        abi::VAR_SET_REAL,
        |mut c: Caller<'_, State>, id: i32, v: f64| -> HResult<()> {
            c.data_mut().vars.insert(id as u32, Value::Real(v));
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        abi::VAR_GET_BOOL,
        |c: Caller<'_, State>, id: i32| -> HResult<i32> {
            match c.data().vars.get(&(id as u32)) {
                Some(Value::Bool(b)) => Ok(i32::from(*b)),
                None => Ok(0),
                Some(v) => Err(host_err(format!("var {id} is {v:?}"))),
            }
        },
    )?;
    l.func_wrap(
        m,
        abi::VAR_SET_BOOL,
        |mut c: Caller<'_, State>, id: i32, v: i32| -> HResult<()> {
            c.data_mut().vars.insert(id as u32, Value::Bool(v != 0));
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        abi::VAR_GET_HANDLE,
        |c: Caller<'_, State>, id: i32| -> HResult<i32> {
            match c.data().vars.get(&(id as u32)) {
                Some(Value::Handle(h)) => Ok(*h),
                None => Ok(0),
                Some(v) => Err(host_err(format!("var {id} is {v:?}"))),
            }
        },
    )?;
    l.func_wrap(
        m,
        abi::VAR_SET_HANDLE,
        |mut c: Caller<'_, State>, id: i32, v: i32| -> HResult<()> {
            c.data_mut().vars.insert(id as u32, Value::Handle(v));
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        abi::VAR_UNSET,
        |mut c: Caller<'_, State>, id: i32| -> HResult<()> {
            let st = c.data_mut();
            st.vars.remove(&(id as u32));
            st.unset_vars.push(id as u32);
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        abi::REAL_TO_STRING,
        |mut c: Caller<'_, State>, tag: i32, v: f64| -> HResult<i64> {
            let s = match Tag::from_u8(tag as u8) {
                _ if !v.is_finite() => None,
                Some(Tag::Real | Tag::Duration) => Some(format!("{v:.3}")),
                Some(Tag::Time) => Some(http_date(v)),
                t => return Err(host_err(format!("real_to_string({t:?})"))),
            };
            alloc_str(&mut c, s.as_deref())
        },
    )?;
    l.func_wrap(
        m,
        abi::HANDLE_TO_STRING,
        |mut c: Caller<'_, State>, tag: i32, h: i32| -> HResult<i64> {
            let s = if h == 0 {
                None
            } else {
                match Tag::from_u8(tag as u8) {
                    Some(Tag::Ip) => Some(ip_of(c.data(), h)?.to_string()),
                    Some(Tag::Backend) => Some(
                        c.data()
                            .meta
                            .backends
                            .get((h - 1) as usize)
                            .map(|b| b.name.clone())
                            .unwrap_or_else(|| format!("director{h}")),
                    ),
                    t => return Err(host_err(format!("handle_to_string({t:?})"))),
                }
            };
            alloc_str(&mut c, s.as_deref())
        },
    )?;
    l.func_wrap(
        m,
        abi::BLOB_TO_STRING,
        |mut c: Caller<'_, State>, b: i64| -> HResult<i64> {
            use base64::Engine as _;
            let s = if b == abi::NULL {
                None
            } else {
                let (ptr, len) = abi::unpack(b);
                let mem = memory(&mut c)?;
                let bytes = mem
                    .data(&c)
                    .get(ptr as usize..ptr as usize + len as usize)
                    .ok_or_else(|| host_err("blob out of bounds"))?;
                Some(format!(
                    ":{}:",
                    base64::engine::general_purpose::STANDARD.encode(bytes)
                ))
            };
            alloc_str(&mut c, s.as_deref())
        },
    )?;
    l.func_wrap(
        m,
        abi::IP_EQ,
        |c: Caller<'_, State>, a: i32, b: i32| -> HResult<i32> {
            Ok(i32::from(ip_of(c.data(), a)? == ip_of(c.data(), b)?))
        },
    )?;
    l.func_wrap(
        m,
        abi::REGEX_MATCH,
        |mut c: Caller<'_, State>, re: i32, s: i64| -> HResult<i32> {
            let s = read_str(&mut c, s)?.unwrap_or_default();
            let re = c
                .data()
                .regexes
                .get(re as usize)
                .ok_or_else(|| host_err("bad regex id"))?;
            let m = re
                .is_match(s.as_bytes())
                .map_err(|e| host_err(e.to_string()))?;
            Ok(i32::from(m))
        },
    )?;
    l.func_wrap(
        m,
        abi::REGSUB,
        |mut c: Caller<'_, State>, re: i32, all: i32, s: i64, r: i64| -> HResult<i64> {
            let subject = read_str(&mut c, s)?.unwrap_or_default();
            let repl = read_str(&mut c, r)?.unwrap_or_default();
            let re = c
                .data()
                .regexes
                .get(re as usize)
                .ok_or_else(|| host_err("bad regex id"))?;
            let out = regsub(re, all != 0, subject.as_bytes(), repl.as_bytes())?;
            let out = String::from_utf8_lossy(&out).into_owned();
            alloc_str(&mut c, Some(&out))
        },
    )?;
    l.func_wrap(
        m,
        abi::ACL_MATCH,
        |c: Caller<'_, State>, acl: i32, ip: i32| -> HResult<i32> {
            let ip = ip_of(c.data(), ip)?;
            Ok(i32::from(acl_match(&c.data().meta, acl, ip)?))
        },
    )?;
    l.func_wrap(
        m,
        abi::HASH_DATA,
        |mut c: Caller<'_, State>, s: i64, _last: i32| -> HResult<()> {
            let s = read_str(&mut c, s)?;
            c.data_mut().hash.push(s);
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        abi::TRACE,
        |mut c: Caller<'_, State>, n: i32| -> HResult<()> {
            c.data_mut().traces.push(n);
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        abi::SYNTHETIC,
        |mut c: Caller<'_, State>, s: i64| -> HResult<()> {
            let s = read_str(&mut c, s)?.unwrap_or_default();
            c.data_mut().synthetic.push_str(&s);
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        abi::BAN,
        |mut c: Caller<'_, State>, s: i64| -> HResult<()> {
            let s = read_str(&mut c, s)?.unwrap_or_default();
            c.data_mut().bans.push(s);
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        abi::LOG,
        |mut c: Caller<'_, State>, s: i64| -> HResult<()> {
            let s = read_str(&mut c, s)?.unwrap_or_default();
            c.data_mut().logs.push(s);
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        abi::NATIVE_CALL,
        |mut c: Caller<'_, State>,
         index: i32,
         object: i32,
         args: i32,
         nargs: i32,
         ret: i32|
         -> HResult<()> {
            let f = c
                .data()
                .meta
                .natives
                .get(index as usize)
                .ok_or_else(|| host_err("bad native index"))?;
            let name = format!("{}.{}", f.vmod, f.func);
            let mut slots = Vec::new();
            for i in 0..nargs as u32 {
                slots.push(read_slot(&mut c, args as u32 + i * abi::SLOT_SIZE)?);
            }
            let imp = c.data().natives.get(&name).copied();
            let result = imp.and_then(|f| f(&slots));
            c.data_mut().native_calls.push(NativeCall {
                name,
                object,
                args: slots,
            });
            write_ret(&mut c, ret as u32, result)
        },
    )?;
    l.func_wrap(
        m,
        abi::SET_SYNTH,
        |mut c: Caller<'_, State>, status: i64, reason: i64| -> HResult<()> {
            let reason = read_str(&mut c, reason)?;
            c.data_mut().synth = Some((status, reason));
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        abi::SET_PASS_TTL,
        |mut c: Caller<'_, State>, d: f64| -> HResult<()> {
            c.data_mut().pass_ttl = Some(d);
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        abi::SET_VCL,
        |mut c: Caller<'_, State>, l: i32| -> HResult<()> {
            c.data_mut().vcl_label = Some(l);
            Ok(())
        },
    )?;
    Ok(l)
}

fn classify(e: wasmtime::Error) -> RunError {
    match e.downcast_ref::<HostError>() {
        Some(HostError::WsOverflow) => RunError::WsOverflow,
        Some(HostError::Other(m)) => RunError::Host(m.clone()),
        None => RunError::Trap(format!("{e:?}")),
    }
}

/// Instantiates `wasm` (reading its metadata for regexes, ACLs, natives),
/// runs the exported subroutine `sub` over `state`, and returns its action
/// (`None`: it ended without `return`).
pub fn run(wasm: &[u8], sub: &str, state: &mut State) -> Result<Option<Action>, RunError> {
    let meta = abi::read_metadata(wasm).map_err(|e| RunError::Trap(e.to_string()))?;
    let mut regexes = Vec::new();
    for r in &meta.regexes {
        regexes.push(pcre2::bytes::Regex::new(r).map_err(|e| RunError::Trap(e.to_string()))?);
    }
    state.meta = meta;
    state.regexes = regexes;
    let module = Module::new(engine(), wasm).map_err(|e| RunError::Trap(e.to_string()))?;
    let linker = linker().map_err(|e| RunError::Trap(e.to_string()))?;
    let mut store = Store::new(engine(), std::mem::take(state));
    let result = (|| -> Result<Option<Action>, RunError> {
        let inst = linker
            .instantiate(&mut store, &module)
            .map_err(|e| RunError::Trap(format!("instantiate: {e:?}")))?;
        let global =
            |store: &mut Store<State>, name: &str| -> Result<(wasmtime::Global, u32), RunError> {
                let g = inst
                    .get_global(&mut *store, name)
                    .ok_or_else(|| RunError::Trap(format!("no global {name}")))?;
                match g.get(&mut *store) {
                    Val::I32(v) => Ok((g, v as u32)),
                    _ => Err(RunError::Trap(format!("global {name} not i32"))),
                }
            };
        let (_, heap) = global(&mut store, abi::GLOBAL_HEAP_BASE)?;
        let (_, version) = global(&mut store, abi::GLOBAL_ABI_VERSION)?;
        if version as i32 != abi::ABI_VERSION {
            return Err(RunError::Trap(format!("ABI version {version}")));
        }
        let ws = store.data().workspace;
        if ws != 0 {
            // Reset the workspace the way a host does per task.
            let (start, _) = global(&mut store, abi::GLOBAL_WS_START)?;
            start
                .set(&mut store, Val::I32(heap as i32))
                .map_err(|e| RunError::Trap(e.to_string()))?;
            let mem = inst
                .get_memory(&mut store, abi::EXPORT_MEMORY)
                .ok_or_else(|| RunError::Trap("no memory".into()))?;
            let data = mem.data_mut(&mut store);
            set_cell(data, abi::WS_PTR_ADDR, heap)
                .and_then(|()| set_cell(data, abi::WS_END_ADDR, heap + ws))
                .ok_or_else(|| RunError::Trap("no workspace cells".into()))?;
        }
        if store.data().trace {
            let mem = inst
                .get_memory(&mut store, abi::EXPORT_MEMORY)
                .ok_or_else(|| RunError::Trap("no memory".into()))?;
            set_cell(mem.data_mut(&mut store), abi::TRACE_ADDR, 1)
                .ok_or_else(|| RunError::Trap("no trace cell".into()))?;
        }
        let f = inst
            .get_typed_func::<(), i32>(&mut store, sub)
            .map_err(|e| RunError::Trap(format!("no sub {sub}: {e}")))?;
        let code = f.call(&mut store, ()).map_err(classify);
        let mem = inst
            .get_memory(&mut store, abi::EXPORT_MEMORY)
            .ok_or_else(|| RunError::Trap("no memory".into()))?;
        let ptr = cell(mem.data(&store), abi::WS_PTR_ADDR)
            .ok_or_else(|| RunError::Trap("no workspace cells".into()))?;
        let (_, start) = global(&mut store, abi::GLOBAL_WS_START)?;
        store.data_mut().ws_used = ptr - start;
        let code = code?;
        if code == 0 {
            return Ok(None);
        }
        Action::from_code(code)
            .map(Some)
            .ok_or_else(|| RunError::Trap(format!("bad action code {code}")))
    })();
    *state = store.into_data();
    result
}
