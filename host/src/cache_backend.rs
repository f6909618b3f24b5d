//! Backends (Varnish's `cache_backend`): an address resolved at load
//! time, its timeouts, and its idle keep-alive connections.

use crate::cache_http1_fetch::ConnPool;
use crate::mgt_param::Params;
use std::net::SocketAddr;
use vcl_to_wasm::tir::BackendDef;

/// A declared backend, ready to fetch from.
#[derive(Debug)]
pub struct Backend {
    pub name: String,
    /// `None` for `backend x none;`.
    pub addr: Option<SocketAddr>,
    pub host_header: Option<String>,
    /// `.preamble`: bytes written on every new connection before anything
    /// else (fetches, pipes and probes alike, as Varnish's `VCP_Open`).
    pub preamble: Option<Vec<u8>>,
    /// Timeouts declared on the backend; unset ones come from the
    /// parameters in force at fetch time, as in Varnish.
    pub connect_timeout: Option<f64>,
    pub first_byte_timeout: Option<f64>,
    pub between_bytes_timeout: Option<f64>,
    /// Idle keep-alive connections, shared by every backend (of any
    /// loaded VCL) with the same endpoint, as Varnish's connection pools
    /// are: a new VCL keeps using the connections the old one opened.
    pub conns: std::sync::Arc<ConnPool>,
    /// Health as the probe sees it; always true without a probe.
    pub healthy: std::sync::atomic::AtomicBool,
    /// `backend.set_health`: [`ADMIN_AUTO`], [`ADMIN_HEALTHY`] or [`ADMIN_SICK`].
    pub admin_health: std::sync::atomic::AtomicU8,
    /// The probe that decides `healthy`, with what it has seen (shown by
    /// `backend.list`).
    pub probe: Option<std::sync::Arc<crate::cache_backend_probe::ProbeTarget>>,
    /// `.max_connections`: fetches at once; one more fails as busy.
    pub max_connections: Option<u32>,
    /// Fetches holding a connection now.
    busy: std::sync::atomic::AtomicU32,
    /// When the probe's verdict last flipped (f64 seconds as bits;
    /// Varnish's `be->changed`). The shard director's rampup counts from
    /// it.
    changed: std::sync::atomic::AtomicU64,
    /// When it was made or the admin last changed its health (Varnish's
    /// `vdir->health_changed`): `backend.list`'s "Last change", and the
    /// time of a health the probe does not decide.
    health_changed: std::sync::atomic::AtomicU64,
}

/// A fetch's claim on one of its backend's `.max_connections`, given back
/// when the fetch (head and body) is done.
#[derive(Debug)]
pub struct ConnSlot(std::sync::Arc<Backend>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.conns.vsc.conn.dec();
        self.0
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// `backend.set_health auto`: the probe decides.
pub const ADMIN_AUTO: u8 = 0;
/// `backend.set_health healthy`: healthy whatever the probe says.
pub const ADMIN_HEALTHY: u8 = 1;
/// `backend.set_health sick`: sick whatever the probe says.
pub const ADMIN_SICK: u8 = 2;

/// `.host` may carry the port (`"127.0.0.1:8080"`, `"[::1]:8080"`,
/// `"host 8080"`) when `.port` is not given, as varnishd accepts.
fn split_host_port<'a>(host: &'a str, port: Option<&'a str>) -> (&'a str, &'a str) {
    if let Some(p) = port {
        return (host, p);
    }
    if let Some((h, p)) = host.split_once(' ') {
        return (h, p.trim());
    }
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once("]:") {
            return (h, p);
        }
        return (host, "80");
    }
    match host.split_once(':') {
        // One colon: host:port; more: a bare IPv6 address.
        Some((h, p)) if !p.contains(':') => (h, p),
        _ => (host, "80"),
    }
}

/// The connection pool for an endpoint (address, PROXY version, preamble),
/// shared while any backend uses it.
fn shared_pool(addr: Option<SocketAddr>, def: &BackendDef) -> std::sync::Arc<ConnPool> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock, Weak};
    type Key = (SocketAddr, Option<u32>, Option<String>);
    static POOLS: OnceLock<Mutex<HashMap<Key, Weak<ConnPool>>>> = OnceLock::new();
    let Some(addr) = addr else {
        return Arc::default();
    };
    let key = (addr, def.proxy_header, def.preamble.clone());
    let Ok(mut pools) = POOLS.get_or_init(Default::default).lock() else {
        return Arc::default();
    };
    if let Some(p) = pools.get(&key).and_then(Weak::upgrade) {
        return p;
    }
    pools.retain(|_, w| w.strong_count() > 0);
    let p = Arc::new(ConnPool::default());
    pools.insert(key, Arc::downgrade(&p));
    p
}

impl Backend {
    /// Resolves the host (first address, as varnishd) and builds the pool.
    /// `probe` is the backend's `.probe` (or the VCL's default probe).
    pub async fn build(
        def: &BackendDef,
        probe: Option<&vcl_to_wasm::tir::ProbeDef>,
        _params: &Params,
    ) -> Result<Backend, String> {
        let addr = if def.none {
            None
        } else {
            let (host, port) = split_host_port(
                def.host.as_deref().unwrap_or("localhost"),
                def.port.as_deref(),
            );
            let port: u16 = port
                .parse()
                .map_err(|_| format!("backend {}: bad port \"{port}\"", def.name))?;
            let host_trim = host.trim_start_matches('[').trim_end_matches(']');
            // `":80"` names no host: the wildcard address, as getaddrinfo(3)
            // gives varnishd.
            let host_trim = if host_trim.is_empty() {
                "0.0.0.0"
            } else {
                host_trim
            };
            let mut it = tokio::net::lookup_host((host_trim, port))
                .await
                .map_err(|e| {
                    format!(
                        "backend {}: cannot resolve \"{host}\" ({e}) at {}",
                        def.name, def.location
                    )
                })?;
            Some(
                it.next()
                    .ok_or_else(|| format!("backend {}: \"{host}\" has no address", def.name))?,
            )
        };
        let preamble = match &def.preamble {
            Some(b64) => {
                use base64::Engine as _;
                let b = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| format!("backend {}: bad .preamble ({e})", def.name))?;
                (!b.is_empty()).then_some(b)
            }
            None => None,
        };
        // The Host a request without one gets, and the probe's: the
        // `.host_header`, else `.host` as written (Varnish's hosthdr).
        let host_header = def.host_header.clone().or_else(|| def.host.clone());
        let probe = match (probe, addr) {
            (Some(p), Some(_)) => Some(std::sync::Arc::new(
                crate::cache_backend_probe::ProbeTarget::new(
                    crate::cache_backend_probe::Probe::from_def(
                        p,
                        host_header.as_deref().unwrap_or_default(),
                    ),
                ),
            )),
            _ => None,
        };
        let now = crate::vrt_ctx::now();
        Ok(Backend {
            name: def.name.clone(),
            addr,
            host_header,
            preamble,
            connect_timeout: def.connect_timeout,
            first_byte_timeout: def.first_byte_timeout,
            between_bytes_timeout: def.between_bytes_timeout,
            conns: shared_pool(addr, def),
            healthy: std::sync::atomic::AtomicBool::new(true),
            admin_health: std::sync::atomic::AtomicU8::new(ADMIN_AUTO),
            // A probed backend's verdict has not changed yet (Varnish's
            // zeroed `be->changed`; starting sick sets it).
            changed: std::sync::atomic::AtomicU64::new(
                if probe.is_some() { 0.0 } else { now }.to_bits(),
            ),
            probe,
            max_connections: def.max_connections.filter(|&n| n > 0),
            busy: std::sync::atomic::AtomicU32::new(0),
            health_changed: std::sync::atomic::AtomicU64::new(now.to_bits()),
        })
    }

    /// Claims a connection slot, or `None` when `.max_connections` are
    /// all in use (Varnish's "backend busy": the fetch fails, 503).
    pub fn claim(self: &std::sync::Arc<Self>) -> Option<ConnSlot> {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        let max = self.max_connections.unwrap_or(u32::MAX);
        self.busy
            .fetch_update(AcqRel, Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| {
                self.conns.vsc.conn.inc();
                ConnSlot(self.clone())
            })
    }

    /// When its health last changed as `std.healthy()` and directors see
    /// it (Varnish's `VRT_Healthy`): the probe's last flip, or without a
    /// probe or with the admin's word the admin's last change.
    pub fn changed(&self) -> f64 {
        use std::sync::atomic::Ordering::Relaxed;
        if self.probe.is_some() && self.admin_health.load(Relaxed) == ADMIN_AUTO {
            f64::from_bits(self.changed.load(Relaxed))
        } else {
            self.health_changed()
        }
    }

    /// `backend.list`'s "Last change": creation or `backend.set_health`.
    pub fn health_changed(&self) -> f64 {
        f64::from_bits(
            self.health_changed
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Notes that the probe's verdict flipped now.
    pub fn mark_changed(&self) {
        self.changed.store(
            crate::vrt_ctx::now().to_bits(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// `backend.set_health`: [`ADMIN_AUTO`], [`ADMIN_HEALTHY`] or
    /// [`ADMIN_SICK`].
    pub fn set_admin_health(&self, v: u8) {
        if self
            .admin_health
            .swap(v, std::sync::atomic::Ordering::Relaxed)
            != v
        {
            self.health_changed.store(
                crate::vrt_ctx::now().to_bits(),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// Writes `.preamble` (if any) on a connection just opened.
    pub async fn send_preamble(&self, s: &mut tokio::net::TcpStream) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        match &self.preamble {
            Some(p) => s.write_all(p).await,
            None => Ok(()),
        }
    }

    /// Whether the backend may be used: the admin's word, else the probe's.
    pub fn is_healthy(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        match self.admin_health.load(Relaxed) {
            ADMIN_HEALTHY => true,
            ADMIN_SICK => false,
            _ => self.healthy.load(Relaxed),
        }
    }
}
