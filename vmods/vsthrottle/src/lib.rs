//! varnish-modules' vmod_vsthrottle as a Shellac component. Buckets live in
//! the host's `shared` state (so every worker and every instance sees the
//! same ones) and are updated with compare-and-swap, so concurrent requests
//! never take the same token twice.

wit_bindgen::generate!({
    world: "vmod:vsthrottle/vmod-vsthrottle",
    path: ["../../wit", "wit"],
    generate_all,
});

mod bucket;

use bucket::{Bucket, Params};
use exports::vmod::vsthrottle::vsthrottle::Guest;
use shellac::vmod::types::Duration;
use shellac::vmod::{host, shared};

struct Component;
shellac_vmod_sdk::lifecycle!(Component);
export!(Component);

/// Applies `f` to the bucket of `p` atomically; returns what `f` returned.
/// Retries when another task changed the bucket in between.
fn update<R>(p: &Params, mut f: impl FnMut(&mut Bucket, f64) -> R) -> R {
    let key = p.key();
    loop {
        let now = host::now();
        let old = shared::get(&key);
        let mut b = old
            .as_deref()
            .and_then(Bucket::parse)
            .unwrap_or_else(|| Bucket::full(p, now));
        b.refill(p, now);
        let r = f(&mut b, now);
        if shared::swap(&key, old.as_deref(), &b.to_string(), Some(p.keep_for())) {
            return r;
        }
    }
}

fn params(key: String, limit: i64, period: Duration, block: Option<Duration>) -> Option<Params> {
    Params::new(key, limit, period.seconds, block.map_or(0.0, |b| b.seconds))
}

impl Guest for Component {
    fn is_denied(key: String, limit: i64, period: Duration, block: Option<Duration>) -> bool {
        match params(key, limit, period, block) {
            None => true,
            Some(p) => update(&p, |b, now| b.take(&p, now)),
        }
    }

    fn return_token(key: String, limit: i64, period: Duration, block: Option<Duration>) {
        if let Some(p) = params(key, limit, period, block) {
            update(&p, |b, _| b.give_back(&p));
        }
    }

    fn remaining(key: String, limit: i64, period: Duration, block: Option<Duration>) -> i64 {
        match params(key, limit, period, block) {
            None => -1,
            Some(p) => update(&p, |b, _| b.tokens.floor() as i64),
        }
    }

    fn blocked(key: String, limit: i64, period: Duration, block: Duration) -> Duration {
        let seconds = match params(key, limit, period, Some(block)) {
            None => 0.0,
            Some(p) => update(&p, |b, now| (b.blocked_until - now).max(0.0)),
        };
        Duration { seconds }
    }
}
