//! Admin authentication shared by the CLI and the HTTP admin API: the
//! HTTP bearer token derived from the `-S` secret, and a limiter that
//! slows down whoever keeps failing.
//!
//! The token is `hex(HMAC-SHA256(key = the secret file's bytes,
//! message = "shellac admin http v1"))`: whoever can read the secret
//! file (and so answer the CLI's challenge) can compute it, and the
//! token itself does not reveal the secret.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// The message the HTTP token is the HMAC of.
const TOKEN_MESSAGE: &[u8] = b"shellac admin http v1";

/// The HTTP admin API's bearer token for `secret` (64 hex digits).
pub fn http_token(secret: &[u8]) -> String {
    // HMAC takes keys of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(TOKEN_MESSAGE);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `a` equals `b`, in time that depends on the lengths only.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Failures an address may have before it is locked out.
const FREE_FAILURES: u32 = 5;
/// The longest lockout, in seconds.
const MAX_LOCK: f64 = 60.0;
/// Failures older than this (seconds) are forgotten.
const WINDOW: f64 = 300.0;

#[derive(Default, Clone, Copy)]
struct Record {
    failures: u32,
    last: f64,
    locked_until: f64,
}

/// Counts authentication failures by client address: past
/// [`FREE_FAILURES`], each failure locks the address out for twice as
/// long as the one before (1 s, 2 s, ... up to a minute), during which
/// even right credentials get only the auth error.
#[derive(Default)]
pub struct Limiter {
    map: Mutex<HashMap<IpAddr, Record>>,
}

impl Limiter {
    /// Whether `ip` may try to authenticate at time `now`.
    pub fn allowed(&self, ip: IpAddr, now: f64) -> bool {
        let g = self.map.lock().unwrap_or_else(|p| p.into_inner());
        g.get(&ip).is_none_or(|r| now >= r.locked_until)
    }

    /// `ip` failed at time `now`.
    pub fn failed(&self, ip: IpAddr, now: f64) {
        let mut g = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() > 10_000 {
            g.retain(|_, r| now - r.last < WINDOW);
        }
        let r = g.entry(ip).or_default();
        if now - r.last > WINDOW {
            *r = Record::default();
        }
        r.failures += 1;
        r.last = now;
        if r.failures > FREE_FAILURES {
            let exp = (r.failures - FREE_FAILURES - 1).min(16);
            r.locked_until = now + f64::from(1u32 << exp).min(MAX_LOCK);
        }
    }

    /// `ip` authenticated: its record is cleared.
    pub fn succeeded(&self, ip: IpAddr) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_an_hmac_of_the_secret() {
        let t = http_token(b"s3cret\n");
        assert_eq!(t.len(), 64);
        assert_eq!(t, http_token(b"s3cret\n"));
        assert_ne!(t, http_token(b"s3cret"));
        assert!(same(t.as_bytes(), http_token(b"s3cret\n").as_bytes()));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }

    #[test]
    fn repeated_failures_lock_out_with_growing_delays() {
        let l = Limiter::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        for i in 0..FREE_FAILURES {
            assert!(l.allowed(ip, 100.0), "failure {i}");
            l.failed(ip, 100.0);
        }
        assert!(l.allowed(ip, 100.0));
        l.failed(ip, 100.0);
        assert!(!l.allowed(ip, 100.5));
        assert!(l.allowed(other, 100.5));
        assert!(l.allowed(ip, 101.0));
        l.failed(ip, 101.0);
        assert!(!l.allowed(ip, 102.5));
        assert!(l.allowed(ip, 103.0));
        l.succeeded(ip);
        l.failed(ip, 103.0);
        assert!(l.allowed(ip, 103.0));
    }
}
