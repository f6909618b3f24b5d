//! Time per call of a component VMOD function from the host side alone
//! (`VclVmod::call`, no VCL module around it): the floor under what
//! bench/vmod-call.sh measures through VCL.
//!
//! Usage: cargo run --release --example vmod_call -- PATH.wasm FUNC [CALLS]
//! (e.g. target/samples/hello.wasm lower 1000000)

use shellac::cache_vmod::{load, VclValue, VclVmod, VmodLimits};
use std::sync::Arc;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "target/samples/hello.wasm".into());
    let func = args.next().unwrap_or_else(|| "lower".into());
    let calls: u32 = args
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let name = std::path::Path::new(&path)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("hello")
        .to_string();
    let lib = load(&name, std::path::Path::new(&path))?;
    let limits = VmodLimits {
        budget_ticks: 100,
        memory: 64 << 20,
    };
    let vv = Arc::new(VclVmod::new(lib, "bench", limits));
    let export = vv
        .export_index(&func)
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
    println!("{name}.{func}: {ns:.0} ns per call ({calls} calls)");
    Ok(())
}
