//! The wasmtime engine that runs compiled VCL and VMOD components.
//!
//! One place decides how tenant code is compiled and bounded, so that
//! `shellac compile --native` measures exactly what `serve` will do at
//! `vcl.load`.

/// Instance slots of the pooling allocator. Every VCL worker instance,
/// every pooled VMOD instance and each core module inside a component
/// takes one; slots are address space reserved once at start (linear
/// memories are 4 GiB reservations, never committed until touched), so
/// generous numbers cost nothing but virtual memory.
const POOL_COMPONENT_INSTANCES: u32 = 2_000;
const POOL_CORE_INSTANCES: u32 = 8_000;
const POOL_MEMORIES: u32 = 4_000;
const POOL_TABLES: u32 = 8_000;

/// Cranelift's incremental compilation cache, in memory: compiled
/// functions by the hash of their input. Every VCL carries the builtin
/// VCL's subroutines and the same scaffolding, so a new VCL compiles only
/// the functions that differ from those of VCLs loaded before (the
/// whole-module cache in `cache_vcl` covers the unchanged reload).
/// Bounded: past [`CODE_CACHE_BYTES`] it starts afresh.
#[derive(Debug, Default)]
struct CodeCache {
    /// Entries, and their bytes in all.
    map: std::sync::RwLock<(CodeMap, usize)>,
}

type CodeMap = std::collections::HashMap<Vec<u8>, Vec<u8>>;

/// The most bytes of compiled functions [`CodeCache`] keeps.
const CODE_CACHE_BYTES: usize = 64 << 20;

impl wasmtime::CacheStore for CodeCache {
    fn get(&self, key: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
        let g = self.map.read().ok()?;
        g.0.get(key).map(|v| std::borrow::Cow::Owned(v.clone()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let Ok(mut g) = self.map.write() else {
            return false;
        };
        let size = key.len() + value.len();
        if g.1 + size > CODE_CACHE_BYTES {
            g.0.clear();
            g.1 = 0;
        }
        g.1 += size;
        g.0.insert(key.to_vec(), value);
        true
    }
}

/// Builds the engine: Cranelift at full optimisation, epoch interruption
/// so every call into tenant code can be given a CPU budget, and the
/// pooling allocator, so instantiating (a fresh VMOD instance after a
/// trap, a new VCL worker) reuses pre-mapped slots instead of mmap'ing
/// and copying a memory image each time.
pub fn engine() -> anyhow::Result<wasmtime::Engine> {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(POOL_COMPONENT_INSTANCES)
        .total_core_instances(POOL_CORE_INSTANCES)
        .total_memories(POOL_MEMORIES)
        .total_tables(POOL_TABLES);
    let mut config = wasmtime::Config::new();
    config
        .cranelift_opt_level(wasmtime::OptLevel::Speed)
        .epoch_interruption(true)
        .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    let cache = std::sync::Arc::new(CodeCache::default());
    config
        .enable_incremental_compilation(cache.clone())
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    match wasmtime::Engine::new(&config) {
        Ok(e) => Ok(e),
        Err(pooled) => {
            // Address space can be limited (`ulimit -v`): run without the
            // pool rather than not at all.
            tracing::warn!("pooling allocator unavailable ({pooled:#}); using on-demand instances");
            let mut config = wasmtime::Config::new();
            config
                .cranelift_opt_level(wasmtime::OptLevel::Speed)
                .epoch_interruption(true);
            config
                .enable_incremental_compilation(cache)
                .map_err(|e| anyhow::anyhow!("{e:#}"))?;
            wasmtime::Engine::new(&config)
                .map_err(|e| anyhow::anyhow!("creating the wasmtime engine: {e}"))
        }
    }
}
