//! Host-native `directors` (Varnish's `vmod_directors`): round_robin,
//! fallback, random and hash, choosing among healthy backends only.
//! `.backend()` resolves at once to a declared backend's handle (Varnish
//! returns the director and resolves it at fetch time; the choice is the
//! same unless health changes in between).

use crate::vmod_std::{Arg, Ret};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use vcl_to_wasm::abi::Tag;

/// Which director an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    RoundRobin,
    Fallback,
    Random,
    Hash,
}

/// One director instance (`new x = directors.kind()`).
#[derive(Debug)]
pub struct Director {
    pub kind: Kind,
    backends: Mutex<Vec<(i32, f64)>>,
    next: AtomicUsize,
}

impl Director {
    pub fn new(kind: Kind) -> Director {
        Director {
            kind,
            backends: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
        }
    }

    /// Calls a method by name.
    pub fn call(
        &self,
        method: &str,
        args: &[Arg],
        healthy: &dyn Fn(i32) -> bool,
    ) -> Result<Ret, String> {
        let mut list = self
            .backends
            .lock()
            .map_err(|_| "director lock poisoned".to_string())?;
        match method {
            "add_backend" => {
                if let Some(Arg::Handle(h)) = args.first() {
                    let w = match args.get(1) {
                        Some(Arg::Real(w)) => *w,
                        _ => 1.0,
                    };
                    list.push((*h, w));
                }
                Ok(Ret::Void)
            }
            "remove_backend" => {
                if let Some(Arg::Handle(h)) = args.first() {
                    list.retain(|(b, _)| b != h);
                }
                Ok(Ret::Void)
            }
            "backend" => {
                let all: Vec<(i32, f64)> = list.clone();
                let list: Vec<(i32, f64)> = all.into_iter().filter(|(b, _)| healthy(*b)).collect();
                let pick = match self.kind {
                    _ if list.is_empty() => 0,
                    Kind::Fallback => list[0].0,
                    Kind::RoundRobin => {
                        let i = self.next.fetch_add(1, Ordering::Relaxed) % list.len();
                        list[i].0
                    }
                    Kind::Random | Kind::Hash => {
                        let key = match (self.kind, args.first()) {
                            (Kind::Hash, Some(Arg::Str(Some(s)))) => fnv(s.as_bytes()),
                            _ => fnv(&crate::vrt_ctx::now().to_bits().to_le_bytes()),
                        };
                        let total: f64 = list.iter().map(|(_, w)| w.max(0.0)).sum();
                        let mut r = (key as f64 / u64::MAX as f64) * total;
                        let mut pick = list[0].0;
                        for (b, w) in list.iter() {
                            if r < *w {
                                pick = *b;
                                break;
                            }
                            r -= w;
                        }
                        pick
                    }
                };
                Ok(Ret::Handle(Tag::Backend, pick))
            }
            m => Err(format!("directors: .{m}() is not implemented yet")),
        }
    }
}

fn fnv(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in b {
        h ^= u64::from(*x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
