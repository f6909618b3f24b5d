//! The wasmtime engine that runs compiled VCL (and later VMODs).
//!
//! One place decides how tenant code is compiled and bounded, so that
//! `shellac compile --native` measures exactly what `serve` will do at
//! `vcl.load`.

/// Builds the engine: Cranelift at full optimisation, and epoch
/// interruption so every call into tenant code can be given a CPU budget.
pub fn engine() -> anyhow::Result<wasmtime::Engine> {
    let mut config = wasmtime::Config::new();
    config
        .cranelift_opt_level(wasmtime::OptLevel::Speed)
        .epoch_interruption(true);
    wasmtime::Engine::new(&config).map_err(|e| anyhow::anyhow!("creating the wasmtime engine: {e}"))
}
