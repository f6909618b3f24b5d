//! The token bucket, as plain data (unit-tested off wasm32).

use std::fmt;

/// A bucket's identity: vsthrottle's 4-tuple.
pub struct Params {
    key: String,
    limit: f64,
    period: f64,
    block: f64,
}

impl Params {
    /// `None` for an empty key or a nonsensical limit/period (denied).
    pub fn new(key: String, limit: i64, period: f64, block: f64) -> Option<Params> {
        if key.is_empty() || limit <= 0 || !(period > 0.0) || !period.is_finite() {
            return None;
        }
        Some(Params {
            key,
            limit: limit as f64,
            period,
            block: if block.is_finite() {
                block.max(0.0)
            } else {
                0.0
            },
        })
    }

    /// The shared-state key: one bucket per 4-tuple, as in vsthrottle.
    pub fn key(&self) -> String {
        format!(
            "{}\u{1}{}\u{1}{}\u{1}{}",
            self.key, self.limit, self.period, self.block
        )
    }

    /// How long an untouched bucket must be kept: afterwards it is full and
    /// unblocked, the same as a new one.
    pub fn keep_for(&self) -> f64 {
        self.period + self.block + 1.0
    }
}

/// Tokens left, when they were last counted, and until when it is blocked.
#[derive(Debug, PartialEq)]
pub struct Bucket {
    pub tokens: f64,
    pub last: f64,
    pub blocked_until: f64,
}

impl Bucket {
    pub fn full(p: &Params, now: f64) -> Bucket {
        Bucket {
            tokens: p.limit,
            last: now,
            blocked_until: 0.0,
        }
    }

    pub fn parse(s: &str) -> Option<Bucket> {
        let mut it = s.split(' ').map(|x| x.parse::<f64>().ok());
        Some(Bucket {
            tokens: it.next()??,
            last: it.next()??,
            blocked_until: it.next()??,
        })
    }

    /// Adds the tokens earned since `last`: `limit` per `period`.
    pub fn refill(&mut self, p: &Params, now: f64) {
        if now > self.last {
            self.tokens = (self.tokens + (now - self.last) * p.limit / p.period).min(p.limit);
            self.last = now;
        }
    }

    /// Takes a token; whether the request is denied.
    pub fn take(&mut self, p: &Params, now: f64) -> bool {
        if self.blocked_until > now {
            return true;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return false;
        }
        if p.block > 0.0 {
            self.blocked_until = now + p.block;
        }
        true
    }

    pub fn give_back(&mut self, p: &Params) {
        self.tokens = (self.tokens + 1.0).min(p.limit);
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.tokens, self.last, self.blocked_until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_per_second() {
        let p = Params::new("k".into(), 10, 1.0, 0.0).unwrap();
        let mut b = Bucket::full(&p, 100.0);
        for i in 0..10 {
            b.refill(&p, 100.0 + i as f64 * 0.001);
            assert!(!b.take(&p, 100.0), "request {i}");
        }
        b.refill(&p, 100.01);
        assert!(b.take(&p, 100.01));
        b.refill(&p, 100.2);
        assert!(!b.take(&p, 100.2));
        assert_eq!(Bucket::parse(&b.to_string()), Some(b));
    }

    #[test]
    fn blocks() {
        let p = Params::new("k".into(), 1, 1.0, 5.0).unwrap();
        let mut b = Bucket::full(&p, 0.0);
        assert!(!b.take(&p, 0.0));
        assert!(b.take(&p, 0.0));
        b.refill(&p, 2.0);
        assert!(b.take(&p, 2.0), "still blocked");
        b.refill(&p, 6.0);
        assert!(!b.take(&p, 6.0));
    }

    #[test]
    fn empty_key() {
        assert!(Params::new(String::new(), 10, 1.0, 0.0).is_none());
    }
}
