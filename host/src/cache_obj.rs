//! Cached objects (Varnish's `cache_obj`): immutable once inserted, shared
//! by `Arc` between the index and every client delivering them.

use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};

/// A header list in arrival order; names compare case-insensitively.
pub type Headers = Vec<(String, String)>;

/// The first header named `name`.
pub fn hdr_get<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Replaces every header named `name` by one with `value`.
pub fn hdr_set(h: &mut Headers, name: &str, value: &str) {
    hdr_unset(h, name);
    h.push((name.to_string(), value.to_string()));
}

/// Removes every header named `name`.
pub fn hdr_unset(h: &mut Headers, name: &str) {
    h.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
}

/// What kind of entry an object is: a real response, or a marker that
/// makes later lookups miss or pass (`beresp.uncacheable`, `pass(DURATION)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjKind {
    Normal,
    HitMiss,
    HitPass,
}

/// One cached response.
#[derive(Debug)]
pub struct Object {
    pub kind: ObjKind,
    pub status: u16,
    pub reason: String,
    pub proto: String,
    pub headers: Headers,
    pub body: Bytes,
    /// The XID of the fetch that made it (second number of `X-Varnish`).
    pub xid: u64,
    /// When the object was born (fetch time minus the backend's `Age`).
    pub t_origin: f64,
    /// When it entered the cache (bans older than this do not apply).
    pub t_insert: f64,
    pub ttl: f64,
    pub grace: f64,
    pub keep: f64,
    /// The request header values named by `Vary`, at insert time.
    pub vary: Vec<(String, Option<String>)>,
    pub hits: AtomicU64,
}

impl Object {
    /// Whether the object is still fresh at `now`.
    pub fn fresh(&self, now: f64) -> bool {
        now < self.t_origin + self.ttl
    }

    /// Whether it may still be served stale (in grace).
    pub fn in_grace(&self, now: f64) -> bool {
        now < self.t_origin + self.ttl + self.grace
    }

    /// Whether it is dead (past ttl + grace + keep) and may be dropped.
    pub fn expired(&self, now: f64) -> bool {
        now >= self.t_origin + self.ttl + self.grace + self.keep
    }

    /// Counts a hit and returns the new count.
    pub fn hit(&self) -> u64 {
        self.hits.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Whether this variant matches the request headers (`Vary`).
    pub fn vary_matches(&self, req: &Headers) -> bool {
        self.vary
            .iter()
            .all(|(name, v)| hdr_get(req, name) == v.as_deref())
    }
}
