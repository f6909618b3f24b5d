//! The functions compiled VCL imports (Varnish's `vrt*.c`): every entry of
//! `abi::Import::ALL`, linked into module `shellac` over a [`Data`] store.

use crate::cache_obj::{hdr_get, hdr_set, hdr_unset};
use crate::cache_vcl::VclShared;
use crate::vmod_std::{self, Arg, Ret};
use crate::vrt_ctx::Task;
use crate::vrt_var;
use std::sync::Arc;
use vcl_to_wasm::abi::{self, Tag};
use vcl_to_wasm::tir::HttpWhere;
use wasmtime::{AsContextMut, Caller, Engine, Linker, Memory, StoreLimits};

/// Why a call into VCL failed other than by returning an action.
#[derive(Debug, thiserror::Error)]
pub enum VrtError {
    #[error("workspace overflow")]
    WsOverflow,
    #[error("{0}")]
    Host(String),
}

/// What a store holds: the current task (moved in for each call), the
/// loaded VCL's shared state, and the module's memory (which holds the
/// workspace cells, see `vcl_to_wasm::abi`).
pub struct Data {
    pub task: Option<Box<Task>>,
    pub vcl: Arc<VclShared>,
    pub limits: StoreLimits,
    pub mem: Option<Memory>,
    /// The CPU budget of one call, in epoch ticks (a host call that
    /// waits for I/O grants it afresh).
    pub budget_ticks: u64,
}

/// The `u32` at `addr` of guest memory `data` (the workspace cells).
pub fn cell(data: &[u8], addr: u32) -> Option<u32> {
    let a = addr as usize;
    let b: [u8; 4] = data.get(a..a + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// Sets the `u32` at `addr` of guest memory `data`.
pub fn set_cell(data: &mut [u8], addr: u32, v: u32) -> Option<()> {
    let a = addr as usize;
    data.get_mut(a..a + 4)?.copy_from_slice(&v.to_le_bytes());
    Some(())
}

type R<T> = wasmtime::Result<T>;
type C<'a> = Caller<'a, Data>;

fn herr(m: impl Into<String>) -> wasmtime::Error {
    wasmtime::Error::new(VrtError::Host(m.into()))
}

fn task<'a>(c: &'a mut C<'_>) -> R<&'a mut Task> {
    c.data_mut()
        .task
        .as_deref_mut()
        .ok_or_else(|| herr("no task"))
}

/// The VCL module's memory and the store's data at once: the hot host
/// functions read their string arguments in place (no copy, no
/// allocation) while they work on the task.
fn memory_and_data<'a>(c: &'a mut C<'_>) -> R<(&'a mut [u8], &'a mut Data)> {
    let mem = c.data().mem.ok_or_else(|| herr("no memory"))?;
    Ok(mem.data_and_store_mut(c))
}

/// A packed guest string borrowed from `data`, as UTF-8 (lossy); NULL is
/// `None`.
fn str_at(data: &[u8], packed: i64) -> R<Option<std::borrow::Cow<'_, str>>> {
    if packed == abi::NULL {
        return Ok(None);
    }
    let (ptr, len) = abi::unpack(packed);
    let b = data
        .get(ptr as usize..(ptr as usize).saturating_add(len as usize))
        .ok_or_else(|| herr("string out of bounds"))?;
    Ok(Some(utf8_lossy(b)))
}

/// A BLOB as VCL prints it: `:base64:`. varnishd 7.1's table has 'q' and
/// 'r' swapped (42 prints as 'r', 43 as 'q'); Shellac prints what varnishd
/// prints, so a VCL that compares or logs such strings sees the same text.
pub fn blob_string(b: &[u8]) -> String {
    use base64::engine::{general_purpose::PAD, GeneralPurpose};
    use base64::{alphabet::Alphabet, Engine as _};
    static ENGINE: std::sync::OnceLock<Option<GeneralPurpose>> = std::sync::OnceLock::new();
    let engine = ENGINE.get_or_init(|| {
        Alphabet::new("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnoprqstuvwxyz0123456789+/")
            .ok()
            .map(|a| GeneralPurpose::new(&a, PAD))
    });
    match engine {
        Some(e) => format!(":{}:", e.encode(b)),
        None => format!(":{}:", base64::engine::general_purpose::STANDARD.encode(b)),
    }
}

/// Copies a packed guest string out; NULL is `None`.
pub fn read_bytes(c: &mut C<'_>, packed: i64) -> R<Option<Vec<u8>>> {
    if packed == abi::NULL {
        return Ok(None);
    }
    let (ptr, len) = abi::unpack(packed);
    let mem = c.data().mem.ok_or_else(|| herr("no memory"))?;
    let data = mem.data(&*c);
    let b = data
        .get(ptr as usize..ptr as usize + len as usize)
        .ok_or_else(|| herr("string out of bounds"))?;
    Ok(Some(b.to_vec()))
}

/// A guest string as UTF-8 (lossy); NULL is `None`.
pub fn read_str(c: &mut C<'_>, packed: i64) -> R<Option<String>> {
    Ok(read_bytes(c, packed)?.map(|b| {
        if b.is_ascii() {
            // SAFETY: ASCII is valid UTF-8 (see `utf8`).
            return unsafe { String::from_utf8_unchecked(b) };
        }
        match String::from_utf8(b) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }))
}

/// `b` as UTF-8, checked. Header values are nearly always ASCII, and
/// `is_ascii` goes a word at a time where `from_utf8` goes a byte at a
/// time on short strings.
pub fn utf8(b: &[u8]) -> Result<&str, std::str::Utf8Error> {
    if b.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(b) });
    }
    std::str::from_utf8(b)
}

/// `b` as UTF-8, invalid sequences replaced (U+FFFD), borrowed when valid.
pub fn utf8_lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    match utf8(b) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

/// Writes `s` into the workspace (WS_Alloc) and returns it packed.
pub fn alloc(c: &mut C<'_>, s: Option<&[u8]>) -> R<i64> {
    let Some(s) = s else { return Ok(abi::NULL) };
    let mem = c.data().mem.ok_or_else(|| herr("no workspace"))?;
    ws_alloc(mem.data_mut(&mut *c), s)
}

/// [`alloc`] in the VCL module's memory `data`.
fn ws_alloc(data: &mut [u8], s: &[u8]) -> R<i64> {
    let overflow = || wasmtime::Error::new(VrtError::WsOverflow);
    let (ptr, end) = match (cell(data, abi::WS_PTR_ADDR), cell(data, abi::WS_END_ADDR)) {
        (Some(p), Some(e)) => (p, e),
        _ => return Err(herr("no workspace")),
    };
    let len = u32::try_from(s.len()).map_err(|_| overflow())?;
    let new = ptr
        .checked_add(len)
        .filter(|&n| n <= end)
        .ok_or_else(overflow)?;
    data.get_mut(ptr as usize..new as usize)
        .ok_or_else(overflow)?
        .copy_from_slice(s);
    set_cell(data, abi::WS_PTR_ADDR, new).ok_or_else(overflow)?;
    Ok(abi::pack(ptr, len))
}

fn where_of(w: i32) -> R<HttpWhere> {
    Ok(match w {
        0 => HttpWhere::Req,
        1 => HttpWhere::ReqTop,
        2 => HttpWhere::Bereq,
        3 => HttpWhere::Beresp,
        4 => HttpWhere::Resp,
        5 => HttpWhere::Obj,
        _ => return Err(herr(format!("bad HttpWhere {w}"))),
    })
}

fn headers_mut(t: &mut Task, w: HttpWhere) -> R<&mut crate::cache_obj::Headers> {
    Ok(match w {
        HttpWhere::Req => &mut t.req.headers,
        HttpWhere::Bereq => &mut t.bereq.headers,
        HttpWhere::Beresp => &mut t.beresp.headers,
        HttpWhere::Resp => &mut t.resp.headers,
        HttpWhere::ReqTop | HttpWhere::Obj => return Err(herr("header is read-only")),
    })
}

fn header_ref<'t>(t: &'t Task, w: HttpWhere, name: &str) -> Option<&'t str> {
    let h = match w {
        HttpWhere::Req => &t.req.headers,
        HttpWhere::ReqTop => &t.req_top.as_ref().map_or(&t.req, |x| &x.0).headers,
        HttpWhere::Bereq => &t.bereq.headers,
        HttpWhere::Beresp => &t.beresp.headers,
        HttpWhere::Resp => &t.resp.headers,
        HttpWhere::Obj => return t.obj.as_ref().and_then(|o| o.headers.get(name)),
    };
    hdr_get(h, name)
}

fn read_slot(c: &mut C<'_>, addr: u32) -> R<Arg> {
    let mem = c.data().mem.ok_or_else(|| herr("no memory"))?;
    let mut b = [0u8; 16];
    mem.read(&*c, addr as usize, &mut b)
        .map_err(|e| herr(e.to_string()))?;
    let tag = Tag::from_u8(b[0]).ok_or_else(|| herr(format!("bad tag {}", b[0])))?;
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[8..16]);
    let raw = i64::from_le_bytes(v);
    Ok(match tag {
        Tag::None => Arg::None,
        Tag::Header => {
            let w = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            Arg::Header(w, read_str(c, raw)?.unwrap_or_default())
        }
        Tag::String | Tag::Strands | Tag::Enum | Tag::Body => Arg::Str(read_str(c, raw)?),
        Tag::Blob => Arg::Blob(read_bytes(c, raw)?),
        Tag::Int | Tag::Bytes => Arg::Int(raw),
        Tag::Real | Tag::Duration | Tag::Time => Arg::Real(f64::from_bits(raw as u64)),
        Tag::Bool => Arg::Bool(raw != 0),
        _ => Arg::Handle(raw as i32),
    })
}

fn write_ret(c: &mut C<'_>, addr: u32, r: Ret) -> R<()> {
    let (tag, bits) = match r {
        Ret::Void => (Tag::None, 0i64),
        Ret::Str(s) => (Tag::String, alloc(c, s.as_deref().map(str::as_bytes))?),
        Ret::Blob(b) => (Tag::Blob, alloc(c, b.as_deref())?),
        Ret::Int(n) => (Tag::Int, n),
        Ret::Real(x) => (Tag::Real, x.to_bits() as i64),
        Ret::Bool(b) => (Tag::Bool, i64::from(b)),
        Ret::Handle(tag, h) => (tag, i64::from(h as u32)),
    };
    let mut b = [0u8; 16];
    b[0] = tag as u8;
    b[8..].copy_from_slice(&bits.to_le_bytes());
    let mem = c.data().mem.ok_or_else(|| herr("no memory"))?;
    mem.write(&mut *c, addr as usize, &b)
        .map_err(|e| herr(e.to_string()))
}

/// A call into a component VMOD: the task moves into the VMOD's store for
/// the call and back.
fn component_call(
    c: &mut C<'_>,
    vcl: &VclShared,
    b: &crate::cache_vmod::Binding,
    object: i32,
    slots: Vec<vmod_std::Arg>,
) -> Result<Ret, String> {
    use crate::cache_vmod::VclResult as V;
    let Some(t) = c.data_mut().task.take() else {
        return Err("no task".into());
    };
    let (mut t, r) = crate::cache_vmod::call_from_vcl(vcl, b, object, slots, t);
    let r = match r {
        Ok(V::Void) => Ok(Ret::Void),
        Ok(V::Str(s)) => Ok(Ret::Str(s)),
        Ok(V::Blob(b)) => Ok(Ret::Blob(b)),
        Ok(V::Int(n)) => Ok(Ret::Int(n)),
        Ok(V::Real(x)) => Ok(Ret::Real(x)),
        Ok(V::Bool(x)) => Ok(Ret::Bool(x)),
        Ok(V::Ip(ip)) => Ok(Ret::Handle(Tag::Ip, ip.map_or(0, |ip| t.ip_handle(ip, 0)))),
        Ok(V::Backend(n)) => Ok(Ret::Handle(
            Tag::Backend,
            n.map_or(abi::BACKEND_NONE, |n| vcl.backend_by_name(&n)),
        )),
        Err(e) => Err(e.to_string()),
    };
    c.data_mut().task = Some(t);
    r
}

/// A failed native call: a `VCL_Error` record, the task marked failed,
/// and the error that ends the VCL call.
fn fail(c: &mut C<'_>, msg: String) -> wasmtime::Error {
    if let Ok(t) = task(c) {
        tracing::warn!(xid = t.xid, "VCL_Error: {msg}");
        t.failed.push(msg.clone());
    }
    herr(msg)
}

/// The fast path of a native call of a component function of up to two
/// `string`s returning nothing, a `string` or an `option<string>`
/// (`hello.lower(req.http.x)`, `cookie.get("id")`, `var.set("k", v)`): the
/// arguments go from the VCL module's memory to the VMOD's without a host
/// copy, a result from the VMOD's memory into the workspace with one.
/// `None`: not such a call (or in `vcl_init`, whose calls are recorded for
/// replay), take the general path.
fn component_str_call(
    c: &mut C<'_>,
    index: i32,
    args: i32,
    nargs: i32,
    ret: i32,
) -> R<Option<Result<(), String>>> {
    use crate::cache_vmod::{StrValue, MAX_STR_ARGS};
    let b = {
        let vcl = &c.data().vcl;
        match vcl.natives.get(index as usize) {
            Some(vmod_std::Native::Component(b))
                if vcl
                    .vmods
                    .get(b.vmod)
                    .and_then(|v| v.str_call_args(b.export))
                    .is_some_and(|n| n as i32 == nargs) =>
            {
                b.clone()
            }
            _ => return Ok(None),
        }
    };
    let in_init = c
        .data()
        .task
        .as_ref()
        .is_none_or(|t| t.method == vcl_to_wasm::types::Method::Init);
    if in_init {
        return Ok(None);
    }
    let mem = c.data().mem.ok_or_else(|| herr("no memory"))?;
    // Where each argument lies in the VCL module's memory.
    let mut spans = [(0usize, 0usize); MAX_STR_ARGS];
    let data = mem.data(&*c);
    for (i, span) in spans.iter_mut().enumerate().take(nargs as usize) {
        let at = (args as u32 as usize).saturating_add(i * abi::SLOT_SIZE as usize);
        let slot = data
            .get(at..)
            .and_then(|s| s.get(..abi::SLOT_SIZE as usize))
            .ok_or_else(|| herr("argument slot out of bounds"))?;
        let packed = match Tag::from_u8(slot[0]) {
            Some(Tag::None) => abi::NULL,
            Some(Tag::String | Tag::Strands | Tag::Enum | Tag::Body) => {
                let mut v = [0u8; 8];
                v.copy_from_slice(&slot[8..16]);
                i64::from_le_bytes(v)
            }
            _ => return Ok(None),
        };
        let (ptr, len) = abi::unpack(packed);
        let (ptr, end) = (ptr as usize, ptr as usize + len as usize);
        if end > data.len() {
            return Err(herr("string out of bounds"));
        }
        *span = (ptr, end);
    }
    let Some(t) = c.data_mut().task.take() else {
        return Ok(None);
    };
    let mut call = match crate::cache_vmod::StrCall::begin(&c.data().vcl, &b, t) {
        Ok(call) => call,
        Err((t, e)) => {
            c.data_mut().task = Some(t);
            return Ok(Some(Err(e.to_string())));
        }
    };
    // The arguments, borrowed from the VCL module's memory (NULL is "";
    // bounds checked above).
    let data = mem.data(&*c);
    let arg = |i: usize| {
        let (ptr, end) = spans[i];
        utf8_lossy(data.get(ptr..end).unwrap_or_default())
    };
    let r = match nargs {
        0 => call.invoke(&[]),
        1 => call.invoke(&[&arg(0)]),
        _ => call.invoke(&[&arg(0), &arg(1)]),
    };
    // The VMOD did its part; what may still fail is the workspace. The
    // result goes into the workspace and its slot with one borrow of the
    // VCL module's memory.
    let vmod_ok = r.is_ok();
    let data = mem.data_mut(&mut *c);
    let out = match r.and_then(|()| call.result()) {
        Ok(v) => {
            let packed = match v {
                StrValue::Void => Ok(None),
                StrValue::Null => Ok(Some(abi::NULL)),
                StrValue::Bytes(b) => ws_alloc(data, &b).map(Some),
            };
            packed.and_then(|packed| write_str_slot(data, ret, packed).map(Ok))
        }
        Err(e) => Ok(Err(e.to_string())),
    };
    let Some(t) = call.finish(vmod_ok) else {
        return Err(herr("task lost"));
    };
    c.data_mut().task = Some(t);
    out.map(Some)
}

/// Writes a string result (`None`: no value) into the slot at `ret`.
fn write_str_slot(data: &mut [u8], ret: i32, packed: Option<i64>) -> R<()> {
    let slot = data
        .get_mut(ret as u32 as usize..)
        .and_then(|s| s.get_mut(..abi::SLOT_SIZE as usize))
        .ok_or_else(|| herr("result slot out of bounds"))?;
    slot.fill(0);
    if let Some(packed) = packed {
        slot[0] = Tag::String as u8;
        slot[8..16].copy_from_slice(&packed.to_le_bytes());
    }
    Ok(())
}

/// Builds the linker with every import of the ABI.
pub fn linker(engine: &Engine) -> R<Linker<Data>> {
    let mut l: Linker<Data> = Linker::new(engine);
    let m = abi::MODULE;
    l.func_wrap(m, abi::WS_OVERFLOW, |_: C<'_>| -> R<()> {
        Err(wasmtime::Error::new(VrtError::WsOverflow))
    })?;
    l.func_wrap(m, abi::FAIL, |mut c: C<'_>, msg: i64| -> R<()> {
        let msg = read_str(&mut c, msg)?.unwrap_or_default();
        let t = task(&mut c)?;
        tracing::warn!(xid = t.xid, "VCL_Error: {msg}");
        t.vsl.log(vapi::Tag::VCL_Error, &msg);
        t.failed.push(msg);
        Ok(())
    })?;
    l.func_wrap(
        m,
        abi::HEADER_GET,
        |mut c: C<'_>, w: i32, name: i64| -> R<i64> {
            let w = where_of(w)?;
            let (data, d) = memory_and_data(&mut c)?;
            let t = d.task.as_deref().ok_or_else(|| herr("no task"))?;
            let n = str_at(data, name)?.unwrap_or_default();
            // The value is the task's; the name's borrow of memory ends
            // before the value is written into it.
            let v = header_ref(t, w, &n);
            drop(n);
            match v {
                Some(v) => ws_alloc(data, v.as_bytes()),
                None => Ok(abi::NULL),
            }
        },
    )?;
    l.func_wrap(
        m,
        abi::HEADER_SET,
        |mut c: C<'_>, w: i32, name: i64, v: i64| -> R<()> {
            let w = where_of(w)?;
            let (data, d) = memory_and_data(&mut c)?;
            let name = str_at(data, name)?.unwrap_or_default();
            let v = str_at(data, v)?.unwrap_or_default();
            let t = d.task.as_deref_mut().ok_or_else(|| herr("no task"))?;
            let (max, xid) = (t.max_hdr, t.xid);
            crate::vsl::vrt_hdr(t, w, &name, Some(&v));
            let h = headers_mut(t, w)?;
            let same = h
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(&name))
                .count();
            if h.len() - same >= max {
                // No slot left: the header is lost, as in Varnish.
                tracing::warn!(xid, "LostHeader: {name}: {v}");
                return Ok(());
            }
            hdr_set(h, &name, &v);
            Ok(())
        },
    )?;
    l.func_wrap(
        m,
        abi::HEADER_UNSET,
        |mut c: C<'_>, w: i32, name: i64| -> R<()> {
            let w = where_of(w)?;
            let (data, d) = memory_and_data(&mut c)?;
            let name = str_at(data, name)?.unwrap_or_default();
            let t = d.task.as_deref_mut().ok_or_else(|| herr("no task"))?;
            crate::vsl::vrt_hdr(t, w, &name, None);
            hdr_unset(headers_mut(t, w)?, &name);
            Ok(())
        },
    )?;
    l.func_wrap(m, abi::VAR_GET_STRING, |mut c: C<'_>, id: i32| -> R<i64> {
        let v = vrt_var::get_bytes(task(&mut c)?, id).map_err(herr)?;
        alloc(&mut c, v.as_deref())
    })?;
    l.func_wrap(
        m,
        abi::VAR_SET_STRING,
        |mut c: C<'_>, id: i32, v: i64| -> R<()> {
            let v = read_bytes(&mut c, v)?;
            vrt_var::set_string(task(&mut c)?, id, v).map_err(herr)
        },
    )?;
    l.func_wrap(m, abi::VAR_GET_INT, |mut c: C<'_>, id: i32| -> R<i64> {
        vrt_var::get_int(task(&mut c)?, id).map_err(herr)
    })?;
    l.func_wrap(
        m,
        abi::VAR_SET_INT,
        |mut c: C<'_>, id: i32, v: i64| -> R<()> {
            vrt_var::set_int(task(&mut c)?, id, v).map_err(herr)
        },
    )?;
    l.func_wrap(m, abi::VAR_GET_REAL, |mut c: C<'_>, id: i32| -> R<f64> {
        vrt_var::get_real(task(&mut c)?, id).map_err(herr)
    })?;
    l.func_wrap(
        m,
        abi::VAR_SET_REAL,
        |mut c: C<'_>, id: i32, v: f64| -> R<()> {
            vrt_var::set_real(task(&mut c)?, id, v).map_err(herr)
        },
    )?;
    l.func_wrap(m, abi::VAR_GET_BOOL, |mut c: C<'_>, id: i32| -> R<i32> {
        vrt_var::get_bool(task(&mut c)?, id)
            .map(i32::from)
            .map_err(herr)
    })?;
    l.func_wrap(
        m,
        abi::VAR_SET_BOOL,
        |mut c: C<'_>, id: i32, v: i32| -> R<()> {
            vrt_var::set_bool(task(&mut c)?, id, v != 0).map_err(herr)
        },
    )?;
    l.func_wrap(m, abi::VAR_GET_HANDLE, |mut c: C<'_>, id: i32| -> R<i32> {
        vrt_var::get_handle(task(&mut c)?, id).map_err(herr)
    })?;
    l.func_wrap(
        m,
        abi::VAR_SET_HANDLE,
        |mut c: C<'_>, id: i32, v: i32| -> R<()> {
            vrt_var::set_handle(task(&mut c)?, id, v).map_err(herr)
        },
    )?;
    l.func_wrap(m, abi::VAR_UNSET, |mut c: C<'_>, id: i32| -> R<()> {
        vrt_var::unset(task(&mut c)?, id).map_err(herr)
    })?;
    l.func_wrap(
        m,
        abi::REAL_TO_STRING,
        |mut c: C<'_>, tag: i32, v: f64| -> R<i64> {
            let s = match Tag::from_u8(tag as u8) {
                _ if !v.is_finite() => None,
                Some(Tag::Real | Tag::Duration) => Some(format!("{v:.3}")),
                Some(Tag::Time) => Some(crate::cache_expire::http_date(v)),
                t => return Err(herr(format!("real_to_string({t:?})"))),
            };
            alloc(&mut c, s.as_deref().map(str::as_bytes))
        },
    )?;
    l.func_wrap(
        m,
        abi::HANDLE_TO_STRING,
        |mut c: C<'_>, tag: i32, h: i32| -> R<i64> {
            let s = if h == 0 {
                None
            } else {
                match Tag::from_u8(tag as u8) {
                    Some(Tag::Ip) => task(&mut c)?.ip(h).map(|ip| ip.to_string()),
                    Some(Tag::Backend) => c.data().vcl.backend_name(h),
                    Some(Tag::Stevedore) => Some(vmod_std::stevedore_name(h).to_string()),
                    t => return Err(herr(format!("handle_to_string({t:?})"))),
                }
            };
            alloc(&mut c, s.as_deref().map(str::as_bytes))
        },
    )?;
    l.func_wrap(m, abi::BLOB_TO_STRING, |mut c: C<'_>, b: i64| -> R<i64> {
        let s = read_bytes(&mut c, b)?.map(|b| blob_string(&b));
        alloc(&mut c, s.as_deref().map(str::as_bytes))
    })?;
    l.func_wrap(m, abi::IP_EQ, |mut c: C<'_>, a: i32, b: i32| -> R<i32> {
        let t = task(&mut c)?;
        Ok(i32::from(t.ip(a).is_some() && t.ip(a) == t.ip(b)))
    })?;
    l.func_wrap(
        m,
        abi::REGEX_MATCH,
        |mut c: C<'_>, re: i32, s: i64| -> R<i32> {
            let s = read_bytes(&mut c, s)?.unwrap_or_default();
            let vcl = c.data().vcl.clone();
            let re = vcl
                .regexes
                .get(re as usize)
                .ok_or_else(|| herr("bad regex id"))?;
            let m = re.is_match(&s).map_err(|e| herr(e.to_string()))?;
            Ok(i32::from(m))
        },
    )?;
    l.func_wrap(
        m,
        abi::REGSUB,
        |mut c: C<'_>, re: i32, all: i32, s: i64, r: i64| -> R<i64> {
            let subject = read_bytes(&mut c, s)?.unwrap_or_default();
            let repl = read_bytes(&mut c, r)?.unwrap_or_default();
            let vcl = c.data().vcl.clone();
            let re = vcl
                .regexes
                .get(re as usize)
                .ok_or_else(|| herr("bad regex id"))?;
            let out = crate::vre::regsub(re, all != 0, &subject, &repl).map_err(herr)?;
            alloc(&mut c, Some(&out))
        },
    )?;
    l.func_wrap(
        m,
        abi::ACL_MATCH,
        |mut c: C<'_>, acl: i32, ip: i32| -> R<i32> {
            let ip = task(&mut c)?.ip(ip);
            let vcl = c.data().vcl.clone();
            let acl = vcl
                .acls
                .get(acl as usize)
                .ok_or_else(|| herr("bad ACL id"))?;
            Ok(i32::from(ip.is_some_and(|ip| acl.matches(ip))))
        },
    )?;
    l.func_wrap(
        m,
        abi::HASH_DATA,
        |mut c: C<'_>, s: i64, last: i32| -> R<()> {
            let s = read_bytes(&mut c, s)?;
            let t = task(&mut c)?;
            if let Some(s) = s.as_deref() {
                // A C string in varnishd's record: the NUL is part of it.
                t.vsl.log_cstr(vapi::Tag::Hash, s);
            }
            t.hash_data(s.as_deref(), last != 0);
            Ok(())
        },
    )?;
    l.func_wrap(m, abi::TRACE, |mut c: C<'_>, n: i32| -> R<()> {
        let vcl = c.data().vcl.clone();
        let [src, line, pos] = usize::try_from(n)
            .ok()
            .and_then(|i| vcl.meta.traces.get(i))
            .copied()
            .unwrap_or_default();
        let name = vcl.name.get().map_or("", String::as_str);
        task(&mut c)?.vsl.logf(
            vapi::Tag::VCL_trace,
            format_args!("{name} {n} {src}.{line}.{pos}"),
        );
        Ok(())
    })?;
    l.func_wrap(m, abi::SYNTHETIC, |mut c: C<'_>, s: i64| -> R<()> {
        let s = read_bytes(&mut c, s)?.unwrap_or_default();
        task(&mut c)?.synth_body.extend_from_slice(&s);
        Ok(())
    })?;
    l.func_wrap(m, abi::BAN, |mut c: C<'_>, s: i64| -> R<()> {
        let s = read_str(&mut c, s)?;
        let t = task(&mut c)?;
        let Some(s) = s else {
            t.vsl.log(vapi::Tag::VCL_Error, "ban(): Null argument");
            return Ok(());
        };
        match crate::cache_ban::parse(&s, crate::vrt_ctx::now()) {
            Ok(b) => t.new_bans.push(b),
            Err(e) => {
                tracing::warn!(xid = t.xid, "ban(\"{s}\"): {e}");
                t.vsl.logf(vapi::Tag::VCL_Error, format_args!("ban(): {e}"));
            }
        }
        Ok(())
    })?;
    l.func_wrap(m, abi::LOG, |mut c: C<'_>, s: i64| -> R<()> {
        let s = read_str(&mut c, s)?.unwrap_or_default();
        task(&mut c)?.vsl.log(vapi::Tag::VCL_Log, &s);
        Ok(())
    })?;
    l.func_wrap(
        m,
        abi::NATIVE_CALL,
        |mut c: C<'_>, index: i32, object: i32, args: i32, nargs: i32, ret: i32| -> R<()> {
            if !(0..=64).contains(&nargs) {
                return Err(herr(format!("native_call with {nargs} arguments")));
            }
            if nargs <= crate::cache_vmod::MAX_STR_ARGS as i32 {
                if let Some(r) = component_str_call(&mut c, index, args, nargs, ret)? {
                    return r.map_err(|msg| fail(&mut c, msg));
                }
            }
            let mut slots = Vec::with_capacity(nargs as usize);
            for i in 0..nargs as u32 {
                let addr = (args as u32)
                    .checked_add(i * abi::SLOT_SIZE)
                    .ok_or_else(|| herr("argument slot out of bounds"))?;
                slots.push(read_slot(&mut c, addr)?);
            }
            let native = c
                .data()
                .vcl
                .natives
                .get(index as usize)
                .ok_or_else(|| herr("bad native index"))?;
            let r = if let vmod_std::Native::Component(b) = native {
                let b = b.clone();
                let vcl = c.data().vcl.clone();
                component_call(&mut c, &vcl, &b, object, slots)
            } else {
                // The task moves out of the store for the call, so that the
                // VCL's shared state is borrowed rather than its `Arc`
                // cloned (a reference count every worker thread would
                // write on every call).
                let mut t = c.data_mut().task.take().ok_or_else(|| herr("no task"))?;
                let d = c.data();
                let native = d.vcl.natives.get(index as usize);
                let req_body = matches!(native, Some(vmod_std::Native::CacheReqBody));
                // Only a body read waits; no clock read for other calls.
                let t0 = req_body.then(std::time::Instant::now);
                let r = match native {
                    Some(n) => vmod_std::call(n, object, &slots, &mut t, &d.vcl),
                    None => Err("bad native index".to_string()),
                };
                if let Some(t0) = t0 {
                    // Waiting for the client's body is not CPU time.
                    t.io_wait += t0.elapsed();
                    let budget = c.data().budget_ticks;
                    c.as_context_mut().set_epoch_deadline(budget + 1);
                }
                c.data_mut().task = Some(t);
                r
            };
            match r {
                Ok(r) => write_ret(&mut c, ret as u32, r),
                Err(msg) => Err(fail(&mut c, msg)),
            }
        },
    )?;
    l.func_wrap(
        m,
        abi::SET_SYNTH,
        |mut c: C<'_>, status: i64, reason: i64| -> R<()> {
            let reason = read_str(&mut c, reason)?;
            task(&mut c)?.synth = Some((status, reason));
            Ok(())
        },
    )?;
    l.func_wrap(m, abi::SET_PASS_TTL, |mut c: C<'_>, d: f64| -> R<()> {
        let t = task(&mut c)?;
        let origin = t.beresp_time - t.beresp_age;
        t.vsl.logf(
            vapi::Tag::TTL,
            format_args!("HFP {d:.0} 0 0 {origin:.0} uncacheable"),
        );
        t.pass_ttl = Some(d);
        Ok(())
    })?;
    l.func_wrap(m, abi::SET_VCL, |mut c: C<'_>, l: i32| -> R<()> {
        let name = usize::try_from(l)
            .ok()
            .and_then(|i| c.data().vcl.meta.labels.get(i).cloned())
            .ok_or_else(|| herr(format!("bad label index {l}")))?;
        task(&mut c)?.vcl_label = Some(name);
        Ok(())
    })?;
    Ok(l)
}
