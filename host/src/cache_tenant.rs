//! Tenants: the namespaces requests run in. A tenant owns a cache index
//! (its objects, bans, purges and cache tags) and the namespace of its
//! VMODs' shared state, so one tenant can never hit, ban or purge
//! another's objects. Requests use the default tenant unless they reach
//! their VCL through a label bound to another (see `docs/tenancy.md`).

use crate::cache_hash::Cache;
use std::sync::Arc;

/// The tenant every request uses unless a label routes it elsewhere:
/// Varnish's one shared cache.
pub const DEFAULT: &str = "default";

/// A tenant.
pub struct Tenant {
    pub name: String,
    /// Its objects, bans and cache tags.
    pub cache: Arc<Cache>,
}

impl Tenant {
    /// A tenant over `cache`.
    pub fn new(name: &str, cache: Arc<Cache>) -> Tenant {
        Tenant {
            name: name.to_string(),
            cache,
        }
    }
}
