//! Host → wasm call costs in one wasmtime version, with Shellac's engine
//! settings (Cranelift at `Speed`, epoch interruption, the pooling
//! allocator) and no Shellac code: an empty component function (the
//! VMOD's `lifecycle.end-task`) and `hello.lower` as a
//! `TypedFunc<(&str,), (WasmStr,)>`, as Shellac calls it. Run by
//! bench/wasmtime-floor.sh.
//!
//! Usage: wasmtime-floor HELLO.wasm [CALLS]
//! Env (to see what a setting changes): NO_POOL (on-demand instances, as
//! under valgrind), NO_BACKTRACE, NO_UNWIND, NO_SIGNALS, NO_EPOCH.

use std::time::Instant;
use wasmtime::component::{Component, Linker, WasmStr};
use wasmtime::{Config, Engine, Store};

fn set(name: &str) -> bool {
    std::env::var_os(name).is_some()
}

fn main() -> wasmtime::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/samples/hello.wasm".into());
    let n: u32 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let epochs = !set("NO_EPOCH");
    let mut config = Config::new();
    config
        .cranelift_opt_level(wasmtime::OptLevel::Speed)
        .epoch_interruption(epochs);
    if !set("NO_POOL") {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(100)
            .total_core_instances(400)
            .total_memories(200)
            .total_tables(400);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    if set("NO_BACKTRACE") {
        config.wasm_backtrace_max_frames(None);
    }
    if set("NO_UNWIND") {
        config.native_unwind_info(false);
    }
    if set("NO_SIGNALS") {
        config.signals_based_traps(false);
    }
    let engine = Engine::new(&config)?;
    let component = Component::from_file(&engine, &path)?;
    let mut linker: Linker<()> = Linker::new(&engine);
    linker.define_unknown_imports_as_traps(&component)?;
    let mut store = Store::new(&engine, ());
    if epochs {
        store.set_epoch_deadline(1 << 40);
    }
    let inst = linker.instantiate(&mut store, &component)?;
    let export = |parent, name: &str| {
        component
            .get_export_index(parent, name)
            .ok_or_else(|| wasmtime::format_err!("{path} does not export {name}"))
    };
    let lifecycle = export(None, "shellac:vmod/lifecycle@0.1.0")?;
    let end_task = export(Some(&lifecycle), "end-task")?;
    let hello = export(None, "vmod:hello/hello")?;
    let lower = export(Some(&hello), "lower")?;
    let end_task = inst.get_typed_func::<(), ()>(&mut store, &end_task)?;
    let lower = inst.get_typed_func::<(&str,), (WasmStr,)>(&mut store, &lower)?;
    let arg = "Hello-World-AbC";
    let mut bytes = 0usize;
    for _ in 0..10_000 {
        end_task.call(&mut store, ())?;
        let (s,) = lower.call(&mut store, (arg,))?;
        bytes += s.to_str(&store)?.len();
    }
    let t = Instant::now();
    for _ in 0..n {
        if epochs {
            store.set_epoch_deadline(100);
        }
        end_task.call(&mut store, ())?;
    }
    let empty = t.elapsed().as_nanos() as f64 / f64::from(n);
    let t = Instant::now();
    for i in 0..n {
        if epochs {
            store.set_epoch_deadline(100);
        }
        let (s,) = lower.call(&mut store, (arg,))?;
        bytes += s.to_str(&store)?.len();
        if i % 1000 == 999 {
            // As a task ends: the guest's arena resets.
            end_task.call(&mut store, ())?;
        }
    }
    let lower_ns = t.elapsed().as_nanos() as f64 / f64::from(n);
    println!(
        "empty component call (end-task): {empty:.0} ns; \
         lower(&str) -> WasmStr: {lower_ns:.0} ns ({n} calls, {bytes} bytes)"
    );
    Ok(())
}
