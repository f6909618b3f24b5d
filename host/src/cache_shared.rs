//! State that VMODs share across tasks (the `shared` import of
//! `wit/vmod.wit`): a concurrent map of strings with optional expiry, keyed
//! by namespace (`tenant/vmod`) so one VMOD in one tenant never sees
//! another's keys. Expired entries are dropped when touched and swept when a
//! shard grows.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

const SHARDS: usize = 16;

struct Entry {
    value: String,
    expires: Option<Instant>,
}

type Shard = Mutex<HashMap<(String, String), Entry>>;

struct Shared {
    shards: Vec<Shard>,
    hasher: std::collections::hash_map::RandomState,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| Shared {
        shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        hasher: Default::default(),
    })
}

fn with<R>(
    ns: &str,
    key: &str,
    f: impl FnOnce(&mut HashMap<(String, String), Entry>, Instant) -> R,
) -> Option<R> {
    let s = shared();
    let mut h = s.hasher.build_hasher();
    ns.hash(&mut h);
    key.hash(&mut h);
    let shard = &s.shards[(h.finish() as usize) % SHARDS];
    let mut m = shard.lock().ok()?;
    let now = Instant::now();
    if m.len() > 4096 && m.len().is_power_of_two() {
        m.retain(|_, e| e.expires.is_none_or(|t| t > now));
    }
    Some(f(&mut m, now))
}

fn live(e: &Entry, now: Instant) -> bool {
    e.expires.is_none_or(|t| t > now)
}

fn expiry(now: Instant, ttl: Option<f64>) -> Option<Instant> {
    ttl.filter(|t| t.is_finite() && *t >= 0.0)
        .map(|t| now + std::time::Duration::from_secs_f64(t.min(1e9)))
}

fn k(ns: &str, key: &str) -> (String, String) {
    (ns.to_string(), key.to_string())
}

/// The value under `key`, unless absent or expired.
pub fn get(ns: &str, key: &str) -> Option<String> {
    with(ns, key, |m, now| {
        m.get(&k(ns, key))
            .filter(|e| live(e, now))
            .map(|e| e.value.clone())
    })
    .flatten()
}

/// Stores `value` for `ttl` seconds (none: no expiry).
pub fn set(ns: &str, key: &str, value: String, ttl: Option<f64>) {
    with(ns, key, |m, now| {
        m.insert(
            k(ns, key),
            Entry {
                value,
                expires: expiry(now, ttl),
            },
        );
    });
}

/// Adds `delta` to the integer under `key` and returns the sum; `ttl`
/// applies when the key is (re)created.
pub fn incr(ns: &str, key: &str, delta: i64, ttl: Option<f64>) -> i64 {
    with(ns, key, |m, now| {
        let e = m.entry(k(ns, key)).or_insert_with(|| Entry {
            value: String::new(),
            expires: expiry(now, ttl),
        });
        if !live(e, now) {
            e.value.clear();
            e.expires = expiry(now, ttl);
        }
        let v = e.value.parse::<i64>().unwrap_or(0).saturating_add(delta);
        e.value = v.to_string();
        v
    })
    .unwrap_or(0)
}

/// Stores `value` if the live value under `key` is `expected` (`None`:
/// absent or expired); whether it did.
pub fn swap(ns: &str, key: &str, expected: Option<&str>, value: String, ttl: Option<f64>) -> bool {
    with(ns, key, |m, now| {
        let cur = m
            .get(&k(ns, key))
            .filter(|e| live(e, now))
            .map(|e| e.value.as_str());
        if cur != expected {
            return false;
        }
        m.insert(
            k(ns, key),
            Entry {
                value,
                expires: expiry(now, ttl),
            },
        );
        true
    })
    .unwrap_or(false)
}

/// Removes `key`; whether it was there (and live).
pub fn delete(ns: &str, key: &str) -> bool {
    with(ns, key, |m, now| {
        m.remove(&k(ns, key)).is_some_and(|e| live(&e, now))
    })
    .unwrap_or(false)
}

/// Seconds until `key` expires.
pub fn ttl(ns: &str, key: &str) -> Option<f64> {
    with(ns, key, |m, now| {
        m.get(&k(ns, key))
            .filter(|e| live(e, now))
            .and_then(|e| e.expires)
            .map(|t| t.saturating_duration_since(now).as_secs_f64())
    })
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_separate() {
        set("t1/var", "k", "a".into(), None);
        set("t2/var", "k", "b".into(), None);
        assert_eq!(get("t1/var", "k").as_deref(), Some("a"));
        assert_eq!(get("t2/var", "k").as_deref(), Some("b"));
        assert!(delete("t1/var", "k"));
        assert_eq!(get("t1/var", "k"), None);
        assert_eq!(get("t2/var", "k").as_deref(), Some("b"));
    }

    #[test]
    fn incr_counts_and_expires() {
        assert_eq!(incr("t/x", "n", 2, None), 2);
        assert_eq!(incr("t/x", "n", 3, None), 5);
        assert_eq!(incr("t/x", "e", 1, Some(0.0)), 1);
        // Expired at once: the next incr starts over.
        assert_eq!(incr("t/x", "e", 1, Some(0.0)), 1);
        assert_eq!(ttl("t/x", "n"), None);
    }

    #[test]
    fn swap_compares_first() {
        assert!(swap("t/s", "k", None, "1".into(), None));
        assert!(!swap("t/s", "k", None, "2".into(), None));
        assert!(!swap("t/s", "k", Some("0"), "2".into(), None));
        assert!(swap("t/s", "k", Some("1"), "2".into(), Some(0.0)));
        // Expired at once: absent again.
        assert!(swap("t/s", "k", None, "3".into(), None));
        assert_eq!(get("t/s", "k").as_deref(), Some("3"));
    }
}
