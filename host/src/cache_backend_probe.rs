//! Backend health probes (Varnish's `cache_backend_probe`): a task per
//! probed backend sends `.url` (or the raw `.request`) every `.interval`,
//! keeps the last `.window` results, and calls the backend healthy while
//! at least `.threshold` of them were good.

use crate::cache_backend::Backend;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vcl_to_wasm::tir::ProbeDef;

/// A probe's settings with Varnish's defaults applied.
#[derive(Clone, Debug)]
pub struct Probe {
    pub request: String,
    pub expected: u16,
    pub timeout: f64,
    pub interval: f64,
    pub window: u32,
    pub threshold: u32,
    pub initial: u32,
}

impl Probe {
    /// Applies the defaults (interval 5s, timeout 2s, window 8,
    /// threshold 3, initial threshold - 1, expected 200).
    pub fn from_def(def: &ProbeDef, host: &str) -> Probe {
        let window = def.window.unwrap_or(8).clamp(1, 64);
        let threshold = def.threshold.unwrap_or(3).min(window);
        let request = def.request.clone().unwrap_or_else(|| {
            format!(
                "GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
                def.url.as_deref().unwrap_or("/")
            )
        });
        let request = if request.ends_with("\r\n\r\n") {
            request
        } else {
            format!("{}\r\n\r\n", request.trim_end_matches("\r\n"))
        };
        Probe {
            request,
            expected: def.expected_response.map_or(200, |e| e as u16),
            timeout: def.timeout.unwrap_or(2.0),
            interval: def.interval.unwrap_or(5.0),
            window,
            threshold,
            initial: def
                .initial
                .unwrap_or(threshold.saturating_sub(1))
                .min(window),
        }
    }
}

async fn once(be: &Backend, p: &Probe) -> bool {
    let Some(addr) = be.addr else { return false };
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(p.request.as_bytes()).await.ok()?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !buf.contains(&b'\n') {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        line.split_whitespace().nth(1)?.parse::<u16>().ok()
    };
    let status = tokio::time::timeout(crate::vrt_ctx::secs(p.timeout.max(0.001)), attempt)
        .await
        .ok()
        .flatten();
    status == Some(p.expected)
}

/// Starts probing `be` until it is dropped (the VCL was discarded).
pub fn start(be: &Arc<Backend>, p: Probe) {
    // `initial` good results pre-fill the window, as Varnish does.
    let mut bits: u64 = 1u64.checked_shl(p.initial).map_or(u64::MAX, |v| v - 1);
    be.healthy
        .store(p.initial >= p.threshold, Ordering::Relaxed);
    let weak: Weak<Backend> = Arc::downgrade(be);
    tokio::spawn(async move {
        let mask = if p.window >= 64 {
            u64::MAX
        } else {
            (1u64 << p.window) - 1
        };
        loop {
            let Some(be) = weak.upgrade() else { return };
            let ok = once(&be, &p).await;
            bits = ((bits << 1) | u64::from(ok)) & mask;
            be.conns
                .vsc
                .happy
                .set((be.conns.vsc.happy.get() << 1) | u64::from(ok));
            let healthy = bits.count_ones() >= p.threshold;
            let was = be.healthy.load(Ordering::Relaxed);
            crate::vsl::backend_health(&be.name, was, healthy, ok, bits, &p);
            if be.healthy.swap(healthy, Ordering::Relaxed) != healthy {
                tracing::info!(
                    backend = %be.name,
                    "Backend_health: {} {}/{}",
                    if healthy { "Back healthy" } else { "Went sick" },
                    bits.count_ones(),
                    p.window
                );
            }
            drop(be);
            tokio::time::sleep(crate::vrt_ctx::secs(p.interval.max(0.01))).await;
        }
    });
}
