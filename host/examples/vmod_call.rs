//! Time per call of a component VMOD function, without sockets.
//!
//! - `vmod_call PATH.wasm FUNC [CALLS]`: the host side alone
//!   (`VclVmod::call` in a loop, no VCL module around it), the floor under
//!   what bench/vmod-call.sh measures through VCL.
//! - `vmod_call --vcl PATH.wasm FUNC [REQUESTS]`: from compiled VCL, as
//!   bench/vmod-call.sh does it but calling `vcl_recv` directly: a VCL of
//!   1,000 `set req.http.y = NAME.FUNC(req.http.x);` against one of 1,000
//!   header copies, and the same with host-native `std.tolower()`.
//!
//! - `vmod_call --floor PATH.wasm`: what wasmtime itself costs, with
//!   Shellac's engine and no Shellac code: an empty core wasm call, an
//!   empty component call (the VMOD's `lifecycle.end-task`), and
//!   `hello.lower` as a `TypedFunc<(&str,), (WasmStr,)>`.
//!
//! `VMOD_CALL_ONLY=base|std|vmod` (with `--vcl`) runs one of the three
//! VCLs, for callgrind: `valgrind --tool=callgrind
//! --toggle-collect='*vmod_call::requests*'` counts its requests only.
//! `SHELLAC_VMOD_CORE=0` takes wasmtime's component path instead of the
//! core fast path.
//!
//! `VMOD_CALL_BUDGET_MS` raises the CPU budget (for valgrind, where
//! instantiating takes longer than the default 100 ms).
//!
//! Usage: cargo run --release --example vmod_call -- [--vcl|--floor] PATH.wasm FUNC [N]
//! (e.g. target/samples/hello.wasm lower 1000000)

use shellac::cache_vcl::Vcl;
use shellac::cache_vmod::{load, VclValue, VclVmod, VmodLimits};
use shellac::mgt_param::Params;
use shellac::vrt_ctx::Task;
use std::sync::Arc;
use std::time::Instant;
use vcl_to_wasm::types::Method;

fn budget() -> u64 {
    std::env::var("VMOD_CALL_BUDGET_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
}

fn host_side(path: &str, name: &str, func: &str, calls: u32) -> anyhow::Result<()> {
    let lib = load(name, std::path::Path::new(path))?;
    let limits = VmodLimits {
        budget_ticks: budget(),
        memory: 64 << 20,
    };
    let vv = Arc::new(VclVmod::new(lib, "bench", limits));
    let export = vv
        .export_index(func)
        .ok_or_else(|| anyhow::anyhow!("{name} has no function {func}"))?;
    let mut inst = vv.checkout(0)?;
    let arg = || vec![VclValue::Str(Some("Hello-World-AbC".to_string()))];
    for _ in 0..10_000 {
        vv.call(&mut inst, export, None, arg())?;
    }
    let start = Instant::now();
    for i in 0..calls {
        vv.call(&mut inst, export, None, arg())?;
        if i % 1000 == 999 {
            // As a task ends: the arena resets.
            vv.release(inst);
            inst = vv.checkout(0)?;
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(calls);
    println!("{name}.{func}: {ns:.0} ns per call, host side ({calls} calls)");
    Ok(())
}

/// An empty core module: `(module (func (export "f")))`.
const NOP_MODULE: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: () -> ()
    0x03, 0x02, 0x01, 0x00, // func 0: type 0
    0x07, 0x05, 0x01, 0x01, b'f', 0x00, 0x00, // export "f" = func 0
    0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code: empty body
];

/// ns per call of `f`, `n` times after a warm-up.
fn time(n: u32, mut f: impl FnMut() -> wasmtime::Result<()>) -> wasmtime::Result<f64> {
    for _ in 0..n.div_ceil(10) {
        f()?;
    }
    let start = Instant::now();
    for _ in 0..n {
        f()?;
    }
    Ok(start.elapsed().as_nanos() as f64 / f64::from(n))
}

fn floor(path: &str, n: u32) -> wasmtime::Result<()> {
    use wasmtime::component::{Component, Linker, WasmStr};
    use wasmtime::{Module, Store};
    let engine = shellac::cache_vcl::engine().map_err(|e| wasmtime::format_err!("{e}"))?;
    let budget = budget();

    let module = Module::new(engine, NOP_MODULE)?;
    let mut store = Store::new(engine, ());
    store.set_epoch_deadline(budget);
    let core = wasmtime::Instance::new(&mut store, &module, &[])?;
    let f = core.get_typed_func::<(), ()>(&mut store, "f")?;
    let core_ns = time(n, || {
        store.set_epoch_deadline(budget);
        f.call(&mut store, ())
    })?;

    let component = Component::from_file(engine, path)?;
    let mut linker: Linker<()> = Linker::new(engine);
    linker.define_unknown_imports_as_traps(&component)?;
    let mut store = Store::new(engine, ());
    store.set_epoch_deadline(budget);
    let inst = linker.instantiate(&mut store, &component)?;
    let export = |parent: Option<&_>, name: &str| {
        component
            .get_export_index(parent, name)
            .ok_or_else(|| wasmtime::format_err!("{path} does not export {name}"))
    };
    let lifecycle = export(None, "shellac:vmod/lifecycle@0.1.0")?;
    let end_task = export(Some(&lifecycle), "end-task")?;
    let end_task = inst.get_typed_func::<(), ()>(&mut store, &end_task)?;
    let empty_ns = time(n, || {
        store.set_epoch_deadline(budget);
        end_task.call(&mut store, ())
    })?;
    let hello = export(None, "vmod:hello/hello")?;
    let lower = export(Some(&hello), "lower")?;
    let lower = inst.get_typed_func::<(&str,), (WasmStr,)>(&mut store, &lower)?;
    let mut i = 0u32;
    let lower_ns = time(n, || {
        store.set_epoch_deadline(budget);
        let (s,) = lower.call(&mut store, ("Hello-World-AbC",))?;
        std::hint::black_box(s.to_str(&store)?.len());
        i += 1;
        if i.is_multiple_of(1000) {
            // As a task ends: the arena resets.
            end_task.call(&mut store, ())?;
        }
        Ok(())
    })?;
    println!(
        "wasmtime alone ({n} calls): empty core call {core_ns:.0} ns; \
         empty component call (end-task) {empty_ns:.0} ns; \
         lower(&str) -> WasmStr {lower_ns:.0} ns"
    );
    Ok(())
}

const CALLS_PER_REQUEST: usize = 1000;

/// A VCL that makes 1,000 calls `set req.http.y = CALL;` in `vcl_recv`.
fn vcl(import: &str, call: &str) -> String {
    let mut s = format!("vcl 4.1;\n{import}\nbackend default none;\nsub vcl_recv {{\n");
    for _ in 0..CALLS_PER_REQUEST {
        s.push_str(&format!("    set req.http.y = {call};\n"));
    }
    s.push_str("    return (synth(200));\n}\n");
    s
}

/// ns per `vcl_recv` of `src`, over `n` requests.
fn per_request(rt: &tokio::runtime::Runtime, src: &str, n: u32) -> anyhow::Result<f64> {
    let mut params = Params::default();
    params.set("vcl_cpu_budget_ms", &budget().to_string())?;
    let vcl = rt
        .block_on(Vcl::load_source("bench", src, &params, 64 << 20))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ws = 64 << 10;
    let one = |xid: u64| -> anyhow::Result<()> {
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let mut t = Box::new(Task::new(xid, ip, ip, 1.0e9));
        t.req.method = "GET".into();
        t.req.url = "/".into();
        t.req.proto = "HTTP/1.1".into();
        t.req.headers = vec![
            ("Host".into(), "localhost".into()),
            ("X".into(), "Hello-World-AbC".into()),
        ];
        let (_t, r) = vcl.call(Method::Recv, t, ws);
        r.map_err(|e| anyhow::anyhow!("vcl_recv: {e}"))?;
        Ok(())
    };
    requests(&one, n.div_ceil(10))?;
    let start = Instant::now();
    requests(&one, n)?;
    Ok(start.elapsed().as_nanos() as f64 / f64::from(n))
}

/// `n` requests: a function of its own, so that callgrind can count only
/// these (`--toggle-collect='*vmod_call::requests*'`; warm-up included,
/// so n + n/10 requests).
#[inline(never)]
fn requests(one: &dyn Fn(u64) -> anyhow::Result<()>, n: u32) -> anyhow::Result<()> {
    for i in 0..n {
        one(u64::from(i))?;
    }
    Ok(())
}

fn from_vcl(path: &str, name: &str, func: &str, n: u32) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let import = format!("import {name} from \"{path}\";");
    if let Ok(only) = std::env::var("VMOD_CALL_ONLY") {
        // One VCL only (for callgrind): base, std or vmod.
        let src = match only.as_str() {
            "base" => vcl("import std;", "req.http.x"),
            "std" => vcl("import std;", "std.tolower(req.http.x)"),
            _ => vcl(&import, &format!("{name}.{func}(req.http.x)")),
        };
        let t = per_request(&rt, &src, n)?;
        println!("{only}: {:.1} us per request ({n} requests)", t / 1000.0);
        return Ok(());
    }
    let base = per_request(&rt, &vcl("import std;", "req.http.x"), n)?;
    let native = per_request(&rt, &vcl("import std;", "std.tolower(req.http.x)"), n)?;
    let component = per_request(&rt, &vcl(&import, &format!("{name}.{func}(req.http.x)")), n)?;
    let per_call = |t: f64| (t - base) / CALLS_PER_REQUEST as f64;
    println!(
        "from VCL ({n} requests of {CALLS_PER_REQUEST} calls): baseline {:.1} us per request; \
         std.tolower {:.0} ns per call; {name}.{func} {:.0} ns per call",
        base / 1000.0,
        per_call(native),
        per_call(component)
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match args.first().map(String::as_str) {
        Some(m @ ("--vcl" | "--floor")) => m.to_string(),
        _ => String::new(),
    };
    if !mode.is_empty() {
        args.remove(0);
    }
    let mut args = args.into_iter();
    let path = args
        .next()
        .unwrap_or_else(|| "target/samples/hello.wasm".into());
    let path = std::fs::canonicalize(&path)
        .map(|p| p.display().to_string())
        .unwrap_or(path);
    let func = args.next().unwrap_or_else(|| "lower".into());
    let n: Option<u32> = args.next().and_then(|n| n.parse().ok());
    let name = std::path::Path::new(&path)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("hello")
        .to_string();
    if mode == "--vcl" {
        from_vcl(&path, &name, &func, n.unwrap_or(2_000))
    } else if mode == "--floor" {
        floor(&path, n.unwrap_or(1_000_000)).map_err(|e| anyhow::anyhow!("{e:#}"))
    } else {
        host_side(&path, &name, &func, n.unwrap_or(1_000_000))
    }
}
