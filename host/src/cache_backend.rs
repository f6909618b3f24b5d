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
    /// Timeouts declared on the backend; unset ones come from the
    /// parameters in force at fetch time, as in Varnish.
    pub connect_timeout: Option<f64>,
    pub first_byte_timeout: Option<f64>,
    pub between_bytes_timeout: Option<f64>,
    /// Idle keep-alive connections.
    pub conns: ConnPool,
    /// Health as the probe sees it; always true without a probe.
    pub healthy: std::sync::atomic::AtomicBool,
    /// `backend.set_health`: [`ADMIN_AUTO`], [`ADMIN_HEALTHY`] or [`ADMIN_SICK`].
    pub admin_health: std::sync::atomic::AtomicU8,
    /// Whether a probe decides `healthy` (shown by `backend.list`).
    pub probed: bool,
    /// `.max_connections`: fetches at once; one more fails as busy.
    pub max_connections: Option<u32>,
    /// Fetches holding a connection now.
    busy: std::sync::atomic::AtomicU32,
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

impl Backend {
    /// Resolves the host (first address, as varnishd) and builds the pool.
    pub async fn build(def: &BackendDef, _params: &Params) -> Result<Backend, String> {
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
        Ok(Backend {
            name: def.name.clone(),
            addr,
            host_header: def.host_header.clone(),
            connect_timeout: def.connect_timeout,
            first_byte_timeout: def.first_byte_timeout,
            between_bytes_timeout: def.between_bytes_timeout,
            conns: ConnPool::default(),
            healthy: std::sync::atomic::AtomicBool::new(true),
            admin_health: std::sync::atomic::AtomicU8::new(ADMIN_AUTO),
            probed: def.probe.is_some(),
            max_connections: def.max_connections.filter(|&n| n > 0),
            busy: std::sync::atomic::AtomicU32::new(0),
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
