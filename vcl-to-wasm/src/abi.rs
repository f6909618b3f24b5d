//! The interface between a compiled VCL module and the host: the single
//! place where it is declared.
//!
//! The code generator ([`crate::codegen`]) emits modules that import exactly
//! [`IMPORTS`] (in that order, from module [`MODULE`]) and export the items
//! named here; the host links the imports and reads the exports using the
//! same constants, so the two sides cannot drift apart silently. Any change
//! to this file that a host would notice must bump [`ABI_VERSION`].
//!
//! # Values
//!
//! Every VCL type has one run-time representation ([`Repr`], see [`repr`]):
//!
//! | VCL type                                   | wasm  | meaning                                   |
//! |--------------------------------------------|-------|-------------------------------------------|
//! | STRING, STRANDS, ENUM, BODY, BLOB, HEADER  | `i64` | packed `(ptr << 32) \| len`, see [`pack`] |
//! | INT, BYTES                                 | `i64` | the number                                |
//! | REAL, DURATION, TIME                       | `f64` | seconds; TIME counts from the Unix epoch  |
//! | BOOL                                       | `i32` | 0 or 1                                    |
//! | BACKEND, IP, PROBE, ACL, HTTP, SUB, …      | `i32` | a handle, see [`Repr::Handle`]            |
//!
//! Strings are pointer and length into the module's linear memory, not
//! NUL-terminated. The packed value 0 is NULL — an absent header, an unset
//! variable — which VCL distinguishes from the empty string: nothing (no
//! constant, no workspace allocation) ever lives at address 0, so `""` is a
//! nonzero pointer with length 0. Packing both halves into one `i64` keeps
//! every import and helper a plain single-result function and lets a string
//! travel in one local, one global or one 8-byte slot.
//!
//! Strings handed to the host (arguments) are only valid during that call
//! unless they are constants; the host copies what it keeps. Strings the
//! host hands back (results of `header_get`, `var_get_string`, conversions,
//! `regsub`, `native_call`) must live in guest memory for the rest of the
//! task: the host writes them into the workspace itself (see below), or
//! returns a string the guest gave it earlier in the same task, or a
//! constant. The guest never writes through a pointer it did not allocate,
//! so the host may return the same packed value it received (e.g. `regsub`
//! without a match returns its subject).
//!
//! # Memory layout and the workspace
//!
//! ```text
//! 0            16                           data_base          heap_base         ws_end
//! | reserved 0 | native-call slots (scratch) | constants (data)  | workspace ...  |
//! ```
//!
//! * `[0, 16)` holds no string, so no pointer is 0; its bytes 4..12 are the
//!   workspace cells (below), bytes 12..16 the trace switch
//!   ([`TRACE_ADDR`]).
//! * The scratch area holds the argument slots of [`NATIVE_CALL`] (see
//!   "Native calls"); its size is fixed by the largest call in the program.
//! * Constants (string literals, header names) are deduplicated into one
//!   active data segment. They are immutable by construction: the generated
//!   code never writes there.
//! * The workspace is Varnish's per-task WS_Alloc arena: a bump allocator
//!   over `[ws_start, ws_end)` whose next free byte is `ws_ptr`.
//!   `ws_start` is an exported mutable `i32` global ([`GLOBAL_WS_START`]);
//!   `ws_ptr` and `ws_end` are little-endian `u32` cells in the reserved
//!   bytes, at [`WS_PTR_ADDR`] and [`WS_END_ADDR`], because the host reads
//!   and writes them on every string it returns and a memory access costs
//!   it far less than wasmtime's `Global::get`/`set`. Before a task the
//!   host sets `ws_start = ws_ptr = heap_base` (or anywhere at or above
//!   [`GLOBAL_HEAP_BASE`]) and `ws_end = ws_start + workspace size`,
//!   growing the memory if needed; resetting `ws_ptr` ends the task. The
//!   module's initial values describe a default 64 KiB workspace
//!   ([`DEFAULT_WORKSPACE`]) so a module works without any setup.
//!
//!   The host allocates from the same arena when it returns strings: read
//!   `ws_ptr` and `ws_end`, write the bytes at `ws_ptr`, advance `ws_ptr`.
//!   If they do not fit it fails the call with its workspace-overflow error
//!   (as [`WS_OVERFLOW`] does), so overflow is always a named failure.
//!   Generated code has no way to reach memory it was not handed a pointer
//!   to in the current task, so leftover bytes of earlier tasks are not
//!   observable and need not be cleared.
//!
//! # Functions and exports
//!
//! * Every subroutine with a `vcl_*` method is exported under its VCL name
//!   (`vcl_recv`, …) with type `() -> i32`: the result is the action code
//!   ([`crate::types::Action::code`]), 0 when the subroutine ended without
//!   `return` (the host then continues with what follows, as Varnish does
//!   after the builtin VCL).
//! * User subroutines are internal. Those passed as SUB values to a native
//!   function are also exported as [`sub_export_name`] so the host can call
//!   them back.
//! * `return (x)` anywhere — also inside a called subroutine — ends the
//!   whole method with `x`, as in Varnish: a `call` whose callee returned a
//!   nonzero code returns that code at once.
//!
//! # Native calls
//!
//! `std`, `directors` and host-native VMOD objects are implemented by the
//! host and reached through [`NATIVE_CALL`]`(index, object, args, nargs,
//! ret)`:
//!
//! * `index` is an index into `Metadata::natives` (the code generator fills
//!   that table; the host binds each entry once at load time);
//! * `object` is the `ObjectId` of the receiver for object methods and
//!   constructors (`new x = …`), [`NO_OBJECT`] for plain functions;
//! * `args` points at `nargs` consecutive [`SLOT_SIZE`]-byte slots, one per
//!   declared parameter in declaration order, and `ret` at one slot the
//!   host fills with the result (left alone for VOID functions).
//!
//! Slot layout (little-endian, 16 bytes, 8-aligned):
//!
//! | offset | size | field                                                    |
//! |--------|------|----------------------------------------------------------|
//! | 0      | 1    | tag: a [`Tag`]; [`Tag::None`] = argument not given, the host applies the declared default |
//! | 1      | 1    | flags: reserved, 0                                       |
//! | 2      | 2    | reserved, 0                                              |
//! | 4      | 4    | aux: for [`Tag::Header`] the `HttpWhere` of the header, else 0 |
//! | 8      | 8    | value in the tag's representation: `i64` (strings packed, INT, BYTES), `f64` (REAL, DURATION, TIME), or an `i32` zero-extended to 8 bytes (BOOL, handles) |
//!
//! The host writes the result's tag and value into the `ret` slot; the
//! guest reads the value as the function's declared return type. Argument
//! slots are only valid during the call (the scratch area is reused by the
//! next call).
//!
//! # Failing
//!
//! [`WS_OVERFLOW`] never returns normally: the host returns its
//! workspace-overflow error, so wasmtime unwinds the call and hands that
//! error (downcastable, not an anonymous trap) to whoever called the
//! subroutine; the task then fails as Varnish fails it (503 and a log
//! record). [`FAIL`] is Varnish's `VRT_fail`: the host logs the message
//! (`VCL_Error`) and normally returns, after which the generated code
//! returns `fail`'s action code from the subroutine, which propagates through
//! every caller — the same unwinding Varnish does, without a trap. The host
//! may instead return an error, which then unwinds like a trap.

use crate::tir::{BackendId, Metadata, SubId};
use crate::types::Type;

/// The version of this interface; exported as the immutable global
/// [`GLOBAL_ABI_VERSION`] so a host can refuse modules it cannot run.
pub const ABI_VERSION: i32 = 4;

/// The wasm import module name of every host function.
pub const MODULE: &str = "shellac";

/// The custom section that carries `serde_json` of [`Metadata`].
pub const META_SECTION: &str = "shellac:meta";

/// Export name of the linear memory.
pub const EXPORT_MEMORY: &str = "memory";
/// Exported mutable `i32` global: first byte of the task's workspace.
pub const GLOBAL_WS_START: &str = "ws_start";
/// Memory address of the `u32` cell holding the next free workspace byte.
pub const WS_PTR_ADDR: u32 = 4;
/// Memory address of the `u32` cell holding one past the last usable
/// workspace byte.
pub const WS_END_ADDR: u32 = 8;
/// Memory address of the `u32` cell the host sets nonzero before a call
/// when `VCL_trace` is logged: trace points call [`TRACE`] only then, so
/// they cost a load and a branch otherwise.
pub const TRACE_ADDR: u32 = 12;
/// Exported immutable `i32` global: the first byte after constants and the
/// scratch area; the workspace may start anywhere from here.
pub const GLOBAL_HEAP_BASE: &str = "heap_base";
/// Exported immutable `i32` global holding [`ABI_VERSION`].
pub const GLOBAL_ABI_VERSION: &str = "shellac_abi";

/// Bytes below this address are never used, so no pointer is 0 (NULL).
pub const RESERVED_LOW: u32 = 16;
/// The workspace the module's initial globals describe (Varnish's default
/// `workspace_client`/`workspace_backend`).
pub const DEFAULT_WORKSPACE: u32 = 64 * 1024;
/// Size of one native-call slot.
pub const SLOT_SIZE: u32 = 16;
/// Offset of the tag byte in a slot.
pub const SLOT_TAG: u32 = 0;
/// Offset of the flags byte in a slot.
pub const SLOT_FLAGS: u32 = 1;
/// Offset of the `aux` word in a slot.
pub const SLOT_AUX: u32 = 4;
/// Offset of the value in a slot.
pub const SLOT_VALUE: u32 = 8;
/// `object` argument of `native_call` for plain functions.
pub const NO_OBJECT: i32 = -1;

/// The NULL string (absent header, unset variable).
pub const NULL: i64 = 0;

/// Packs a guest string (pointer, length) into the `i64` the ABI passes.
pub const fn pack(ptr: u32, len: u32) -> i64 {
    (((ptr as u64) << 32) | len as u64) as i64
}

/// Splits a packed string into (pointer, length). NULL gives `(0, 0)`.
pub const fn unpack(v: i64) -> (u32, u32) {
    (((v as u64) >> 32) as u32, v as u64 as u32)
}

/// The BACKEND handle of a declared backend: `BackendId + 1`, so that 0
/// stays "no backend" (`backend none`). The host hands out handles above
/// `backends.len()` for directors and dynamic backends. Handles are
/// identities: the generated code compares BACKEND values with `i32.eq`, so
/// the host must return the same handle for the same backend or director.
pub const fn backend_handle(id: BackendId) -> i32 {
    id as i32 + 1
}

/// The BACKEND handle meaning "none".
pub const BACKEND_NONE: i32 = 0;

/// Export name of a user subroutine passed as a SUB value (whose handle is
/// its `SubId`).
pub fn sub_export_name(id: SubId) -> String {
    format!("sub.{id}")
}

/// A wasm value type, without tying the host to `wasm-encoder` or the
/// generator to `wasmtime`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValType {
    I32,
    I64,
    F64,
}

/// How a VCL value is represented at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Repr {
    /// Packed string `i64` ([`pack`]); 0 is NULL.
    Str,
    /// `i64` integer (INT, BYTES).
    Int,
    /// `f64` (REAL, DURATION, TIME).
    F64,
    /// `i32` 0 or 1.
    Bool,
    /// `i32` handle whose meaning depends on the type:
    /// BACKEND: [`backend_handle`], 0 = none; IP, STEVEDORE: host-assigned
    /// per-task handles, 0 = none; ACL, PROBE, REGEX, SUB, INSTANCE: the
    /// index in the matching `Metadata` table (`AclId`, `ProbeId`, …);
    /// HTTP: `HttpWhere as i32`; VCL: index into `Metadata::labels`.
    Handle,
}

impl Repr {
    pub const fn val_type(self) -> ValType {
        match self {
            Repr::Str | Repr::Int => ValType::I64,
            Repr::F64 => ValType::F64,
            Repr::Bool | Repr::Handle => ValType::I32,
        }
    }
}

/// The run-time representation of a VCL type; `None` for VOID.
pub const fn repr(ty: Type) -> Option<Repr> {
    Some(match ty {
        Type::Void => return None,
        Type::String | Type::Strands | Type::Enum | Type::Body | Type::Blob | Type::Header => {
            Repr::Str
        }
        Type::Int | Type::Bytes => Repr::Int,
        Type::Real | Type::Duration | Type::Time => Repr::F64,
        Type::Bool => Repr::Bool,
        Type::Acl
        | Type::Backend
        | Type::Http
        | Type::Ip
        | Type::Probe
        | Type::Regex
        | Type::Stevedore
        | Type::Sub
        | Type::Vcl
        | Type::Instance => Repr::Handle,
    })
}

/// Type tags: in native-call slots and as the first argument of the
/// `*_to_string` imports, so the host knows how to read and format a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Tag {
    /// No value: an optional argument that was not given, or a VOID result.
    None = 0,
    String = 1,
    Int = 2,
    Real = 3,
    Duration = 4,
    Time = 5,
    Bytes = 6,
    Bool = 7,
    Backend = 8,
    Ip = 9,
    Probe = 10,
    Acl = 11,
    Http = 12,
    /// A header reference: value = packed name, aux = `HttpWhere`.
    Header = 13,
    Blob = 14,
    /// STRANDS are passed already joined, as one packed string.
    Strands = 15,
    Enum = 16,
    Regex = 17,
    Sub = 18,
    Instance = 19,
    Stevedore = 20,
    Body = 21,
    Vcl = 22,
}

impl Tag {
    pub const ALL: [Tag; 23] = [
        Tag::None,
        Tag::String,
        Tag::Int,
        Tag::Real,
        Tag::Duration,
        Tag::Time,
        Tag::Bytes,
        Tag::Bool,
        Tag::Backend,
        Tag::Ip,
        Tag::Probe,
        Tag::Acl,
        Tag::Http,
        Tag::Header,
        Tag::Blob,
        Tag::Strands,
        Tag::Enum,
        Tag::Regex,
        Tag::Sub,
        Tag::Instance,
        Tag::Stevedore,
        Tag::Body,
        Tag::Vcl,
    ];

    /// The tag of a value of VCL type `ty`.
    pub const fn of(ty: Type) -> Tag {
        match ty {
            Type::Void => Tag::None,
            Type::Acl => Tag::Acl,
            Type::Backend => Tag::Backend,
            Type::Blob => Tag::Blob,
            Type::Body => Tag::Body,
            Type::Bool => Tag::Bool,
            Type::Bytes => Tag::Bytes,
            Type::Duration => Tag::Duration,
            Type::Enum => Tag::Enum,
            Type::Header => Tag::Header,
            Type::Http => Tag::Http,
            Type::Int => Tag::Int,
            Type::Ip => Tag::Ip,
            Type::Probe => Tag::Probe,
            Type::Real => Tag::Real,
            Type::Regex => Tag::Regex,
            Type::Stevedore => Tag::Stevedore,
            Type::String => Tag::String,
            Type::Strands => Tag::Strands,
            Type::Sub => Tag::Sub,
            Type::Time => Tag::Time,
            Type::Vcl => Tag::Vcl,
            Type::Instance => Tag::Instance,
        }
    }

    pub fn from_u8(v: u8) -> Option<Tag> {
        Tag::ALL.get(usize::from(v)).copied()
    }
}

/// One host function the module imports.
#[derive(Clone, Copy, Debug)]
pub struct ImportDesc {
    pub name: &'static str,
    pub params: &'static [ValType],
    pub results: &'static [ValType],
}

/// The imports, by position in [`IMPORTS`] (which is also the wasm function
/// index: imports come first in the function index space).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Import {
    WsOverflow,
    Fail,
    HeaderGet,
    HeaderSet,
    HeaderUnset,
    VarGetString,
    VarSetString,
    VarGetInt,
    VarSetInt,
    VarGetReal,
    VarSetReal,
    VarGetBool,
    VarSetBool,
    VarGetHandle,
    VarSetHandle,
    VarUnset,
    RealToString,
    HandleToString,
    IpEq,
    RegexMatch,
    Regsub,
    AclMatch,
    HashData,
    Trace,
    Synthetic,
    Ban,
    Log,
    NativeCall,
    SetSynth,
    SetPassTtl,
    SetVcl,
    BlobToString,
}

impl Import {
    /// Every import, in [`IMPORTS`] order.
    pub const ALL: [Import; 32] = [
        Import::WsOverflow,
        Import::Fail,
        Import::HeaderGet,
        Import::HeaderSet,
        Import::HeaderUnset,
        Import::VarGetString,
        Import::VarSetString,
        Import::VarGetInt,
        Import::VarSetInt,
        Import::VarGetReal,
        Import::VarSetReal,
        Import::VarGetBool,
        Import::VarSetBool,
        Import::VarGetHandle,
        Import::VarSetHandle,
        Import::VarUnset,
        Import::RealToString,
        Import::HandleToString,
        Import::IpEq,
        Import::RegexMatch,
        Import::Regsub,
        Import::AclMatch,
        Import::HashData,
        Import::Trace,
        Import::Synthetic,
        Import::Ban,
        Import::Log,
        Import::NativeCall,
        Import::SetSynth,
        Import::SetPassTtl,
        Import::SetVcl,
        Import::BlobToString,
    ];

    /// The wasm function index of this import.
    pub const fn func_index(self) -> u32 {
        self as u32
    }

    pub fn desc(self) -> &'static ImportDesc {
        &IMPORTS[self as usize]
    }
}

/// `ws_overflow()`: the workspace is exhausted. Never returns normally: the
/// host returns its workspace-overflow error.
pub const WS_OVERFLOW: &str = "ws_overflow";
/// `fail(msg: str)`: `VRT_fail`. The host records the message; if it
/// returns, the module returns the `fail` action from the subroutine.
pub const FAIL: &str = "fail";
/// `header_get(where: i32, name: str) -> str`: the header's value or NULL.
/// `where` is `HttpWhere as i32`; `name` is always a constant (so the host
/// may cache per packed value) without the colon, compared
/// case-insensitively. With several headers of that name, the first.
pub const HEADER_GET: &str = "header_get";
/// `header_set(where, name, value: str)`: replace every header of that
/// name by one with this value (Varnish `VRT_SetHdr`). NULL means "".
pub const HEADER_SET: &str = "header_set";
/// `header_unset(where, name)`: remove every header of that name.
pub const HEADER_UNSET: &str = "header_unset";
/// `var_get_string(var: i32) -> str`: read a STRING (or BLOB) variable by
/// `VarId`; NULL if unset.
pub const VAR_GET_STRING: &str = "var_get_string";
/// `var_set_string(var, value: str)`: assign a STRING variable. A
/// concatenation never arrives as NULL (its NULL parts count as ""), but a
/// plain NULL value (`set req.url = req.http.absent;`) does; Varnish's
/// setters join their STRANDS, so the host treats it as "" unless the
/// variable gives NULL a meaning.
pub const VAR_SET_STRING: &str = "var_set_string";
/// `var_get_int(var) -> i64`: INT and BYTES variables.
pub const VAR_GET_INT: &str = "var_get_int";
/// `var_set_int(var, i64)`.
pub const VAR_SET_INT: &str = "var_set_int";
/// `var_get_real(var) -> f64`: REAL, DURATION and TIME variables.
pub const VAR_GET_REAL: &str = "var_get_real";
/// `var_set_real(var, f64)`.
pub const VAR_SET_REAL: &str = "var_set_real";
/// `var_get_bool(var) -> i32`.
pub const VAR_GET_BOOL: &str = "var_get_bool";
/// `var_set_bool(var, i32)`.
pub const VAR_SET_BOOL: &str = "var_set_bool";
/// `var_get_handle(var) -> i32`: BACKEND, IP, STEVEDORE, PROBE variables.
pub const VAR_GET_HANDLE: &str = "var_get_handle";
/// `var_set_handle(var, i32)`.
pub const VAR_SET_HANDLE: &str = "var_set_handle";
/// `var_unset(var)`: `unset` of a variable (e.g. `unset bereq.body`).
pub const VAR_UNSET: &str = "var_unset";
/// `real_to_string(tag: i32, v: f64) -> str`: format REAL and DURATION as
/// `%.3f` (Varnish's `VRT_REAL_string`), TIME as an RFC 1123 date
/// (`VRT_TIME_string`). INT/BYTES and BOOL are formatted by the module.
pub const REAL_TO_STRING: &str = "real_to_string";
/// `handle_to_string(tag: i32, h: i32) -> str`: IP as the address without
/// port, BACKEND as its name, STEVEDORE as its name; NULL for handle 0.
pub const HANDLE_TO_STRING: &str = "handle_to_string";
/// `blob_to_string(b: blob) -> str`: a BLOB as `:base64:` (Varnish's
/// `VRT_BLOB_string`); NULL for a NULL BLOB.
pub const BLOB_TO_STRING: &str = "blob_to_string";
/// `ip_eq(a: i32, b: i32) -> i32`: `VRT_ipcmp(a, b) == 0` (IP handles
/// need not be interned, so equality asks the host).
pub const IP_EQ: &str = "ip_eq";
/// `regex_match(re: i32, subject: str) -> i32`: match `Metadata::regexes[re]`;
/// a NULL subject matches as "".
pub const REGEX_MATCH: &str = "regex_match";
/// `regsub(re: i32, all: i32, subject: str, replacement: str) -> str`:
/// `regsub`/`regsuball` (`all` = 1), replacement with `\0`..`\9`. A NULL
/// subject counts as "".
pub const REGSUB: &str = "regsub";
/// `acl_match(acl: i32, ip: i32) -> i32`: `ip ~ Metadata::acls[acl]`.
pub const ACL_MATCH: &str = "acl_match";
/// `hash_data(s: str, last: i32)`: one strand of a `hash_data()`
/// argument (Varnish hashes and logs each part of a concatenation on its
/// own; NULL for an unset header), `last` = 1 on the call's last strand,
/// after which the host adds the separator.
pub const HASH_DATA: &str = "hash_data";
/// `trace(n: i32)`: trace point `n` was passed (`Metadata::traces`);
/// called only while the cell at [`TRACE_ADDR`] is nonzero.
pub const TRACE: &str = "trace";
/// `synthetic(s: str)`: append to the synthetic body.
pub const SYNTHETIC: &str = "synthetic";
/// `ban(s: str)`: the ban expression; errors are logged by the host.
pub const BAN: &str = "ban";
/// `log(s: str)`: `std.log(s)`, called directly (the most frequent VMOD
/// call, not worth the slot encoding).
pub const LOG: &str = "log";
/// `native_call(index: i32, object: i32, args: i32, nargs: i32, ret: i32)`,
/// see "Native calls" above.
pub const NATIVE_CALL: &str = "native_call";
/// `set_synth(status: i64, reason: str)`: called just before a subroutine
/// returns `synth(status, reason)` or `error(status, reason)`; reason NULL
/// when not given (the host then uses the status' default reason).
pub const SET_SYNTH: &str = "set_synth";
/// `set_pass_ttl(ttl: f64)`: just before `return (pass(ttl))` in
/// `vcl_backend_response` (hit-for-pass lifetime).
pub const SET_PASS_TTL: &str = "set_pass_ttl";
/// `set_vcl(label: i32)`: just before `return (vcl(label))`; the index into
/// `Metadata::labels`.
pub const SET_VCL: &str = "set_vcl";

use ValType::{F64, I32, I64};

const fn imp(
    name: &'static str,
    params: &'static [ValType],
    results: &'static [ValType],
) -> ImportDesc {
    ImportDesc {
        name,
        params,
        results,
    }
}

/// Every import, in function-index order ([`Import`]).
pub static IMPORTS: &[ImportDesc] = &[
    imp(WS_OVERFLOW, &[], &[]),
    imp(FAIL, &[I64], &[]),
    imp(HEADER_GET, &[I32, I64], &[I64]),
    imp(HEADER_SET, &[I32, I64, I64], &[]),
    imp(HEADER_UNSET, &[I32, I64], &[]),
    imp(VAR_GET_STRING, &[I32], &[I64]),
    imp(VAR_SET_STRING, &[I32, I64], &[]),
    imp(VAR_GET_INT, &[I32], &[I64]),
    imp(VAR_SET_INT, &[I32, I64], &[]),
    imp(VAR_GET_REAL, &[I32], &[F64]),
    imp(VAR_SET_REAL, &[I32, F64], &[]),
    imp(VAR_GET_BOOL, &[I32], &[I32]),
    imp(VAR_SET_BOOL, &[I32, I32], &[]),
    imp(VAR_GET_HANDLE, &[I32], &[I32]),
    imp(VAR_SET_HANDLE, &[I32, I32], &[]),
    imp(VAR_UNSET, &[I32], &[]),
    imp(REAL_TO_STRING, &[I32, F64], &[I64]),
    imp(HANDLE_TO_STRING, &[I32, I32], &[I64]),
    imp(IP_EQ, &[I32, I32], &[I32]),
    imp(REGEX_MATCH, &[I32, I64], &[I32]),
    imp(REGSUB, &[I32, I32, I64, I64], &[I64]),
    imp(ACL_MATCH, &[I32, I32], &[I32]),
    imp(HASH_DATA, &[I64, I32], &[]),
    imp(TRACE, &[I32], &[]),
    imp(SYNTHETIC, &[I64], &[]),
    imp(BAN, &[I64], &[]),
    imp(LOG, &[I64], &[]),
    imp(NATIVE_CALL, &[I32, I32, I32, I32, I32], &[]),
    imp(SET_SYNTH, &[I64, I64], &[]),
    imp(SET_PASS_TTL, &[F64], &[]),
    imp(SET_VCL, &[I32], &[]),
    imp(BLOB_TO_STRING, &[I64], &[I64]),
];

/// Why [`read_metadata`] failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("not a wasm module: {0}")]
    Parse(String),
    #[error("no `{META_SECTION}` custom section")]
    Missing,
    #[error("bad `{META_SECTION}` section: {0}")]
    Json(String),
}

/// Serialises metadata for the [`META_SECTION`] custom section.
pub fn encode_metadata(meta: &Metadata) -> Result<Vec<u8>, MetaError> {
    serde_json::to_vec(meta).map_err(|e| MetaError::Json(e.to_string()))
}

/// Reads the [`Metadata`] a module carries in its [`META_SECTION`] section.
pub fn read_metadata(wasm: &[u8]) -> Result<Metadata, MetaError> {
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| MetaError::Parse(e.to_string()))?;
        if let wasmparser::Payload::CustomSection(section) = payload {
            if section.name() == META_SECTION {
                return serde_json::from_slice(section.data())
                    .map_err(|e| MetaError::Json(e.to_string()));
            }
        }
    }
    Err(MetaError::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_table_matches_enum() {
        assert_eq!(IMPORTS.len(), Import::ALL.len());
        for (i, imp) in Import::ALL.iter().enumerate() {
            assert_eq!(imp.func_index() as usize, i);
        }
        assert_eq!(Import::NativeCall.desc().name, NATIVE_CALL);
        assert_eq!(Import::SetVcl.desc().name, SET_VCL);
        assert_eq!(Import::BlobToString.desc().name, BLOB_TO_STRING);
        assert_eq!(Import::WsOverflow.desc().name, WS_OVERFLOW);
        let mut names: Vec<_> = IMPORTS.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), IMPORTS.len());
    }

    #[test]
    fn packing() {
        assert_eq!(unpack(pack(16, 0)), (16, 0));
        assert_eq!(unpack(pack(u32::MAX, u32::MAX)), (u32::MAX, u32::MAX));
        assert_ne!(pack(16, 0), NULL);
        for t in Tag::ALL {
            assert_eq!(Tag::from_u8(t as u8), Some(t));
        }
    }
}
