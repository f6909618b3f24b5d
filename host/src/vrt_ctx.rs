//! The state one VCL task can see and change (Varnish's `vrt_ctx` plus
//! the parts of `req`/`busyobj` the VRT functions reach): the host keeps
//! it outside the sandbox and moves it into the store for each call.

use crate::cache_obj::{Headers, Object};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::Arc;
use vcl_to_wasm::types::Method;

/// An HTTP request as VCL sees it (`req`, `bereq`).
#[derive(Clone, Debug, Default)]
pub struct ReqMsg {
    pub method: String,
    pub url: String,
    pub proto: String,
    pub headers: Headers,
}

/// An HTTP response as VCL sees it (`beresp`, `resp`).
#[derive(Clone, Debug, Default)]
pub struct RespMsg {
    pub status: u16,
    pub reason: String,
    pub proto: String,
    pub headers: Headers,
}

/// The top request of an ESI tree: the request and its time
/// (`req_top.*`), and the route its includes start on (the VCL the top
/// request started in, as Varnish's, and the tenant it ended in, which
/// includes keep).
pub type ReqTop = (ReqMsg, f64, Option<crate::mgt_vcl::Route>);

/// How a backend request was made from its client request (Varnish's
/// `vbf_stp_mkbereq`), which its log tells step by step: the copy, then
/// the method made GET, `Accept-Encoding: gzip`, the protocol made
/// HTTP/1.1, and the other headers added at the end.
#[derive(Debug, Default, Clone)]
pub struct MkBereq {
    /// A HEAD made a GET.
    pub was_head: bool,
    /// `Accept-Encoding: gzip` was added (at the end of the copy).
    pub gzip_added: bool,
    /// The client's protocol, when it was not HTTP/1.1.
    pub old_proto: Option<String>,
    /// How many headers were added at the end, that one included.
    pub added: usize,
}

/// Everything a subroutine of one task reads or writes.
pub struct Task {
    pub xid: u64,
    /// The subroutine currently running.
    pub method: Method,
    pub req: ReqMsg,
    /// The message the task started from, for `std.rollback` and a VCL
    /// failure: on the client side the request as the client sent it
    /// (Varnish's `http0`), on the backend side the backend request
    /// before `vcl_backend_fetch` (`bereq0`).
    pub http0: ReqMsg,
    pub bereq: ReqMsg,
    /// How the backend request was made from the request, for its log.
    pub mkbereq: MkBereq,
    /// The client request's `ReqStart` text (its ESI includes log it).
    pub req_start: Option<Arc<str>>,
    pub beresp: RespMsg,
    pub resp: RespMsg,
    /// `obj` in `vcl_hit`/`vcl_deliver`.
    pub obj: Option<Arc<Object>>,
    /// A stale object to revalidate with a conditional fetch (`keep`).
    pub stale_obj: Option<Arc<Object>>,
    /// The backend answered 304 and the stale object was reused.
    pub was_304: bool,
    /// `std.rollback(bereq)` ran in `vcl_backend_response`: the
    /// backend response's body is let go.
    pub bereq_rolled_back: bool,
    pub restarts: u32,
    pub retries: u32,
    pub req_time: f64,
    pub client_ip: IpAddr,
    pub server_ip: IpAddr,
    /// IP handles handed to the module: handle `i` is `ips[i - 1]`,
    /// with the port `ip_ports[i - 1]` (`std.port()`): 1 is `client.ip`,
    /// 2 `server.ip`.
    pub ips: Vec<IpAddr>,
    pub ip_ports: Vec<u16>,
    pub backend_hint: i32,
    pub bereq_backend: i32,
    /// `beresp.backend`: the backend the fetch went to (a director in
    /// `bereq.backend` resolved), and its name.
    pub beresp_backend: i32,
    pub beresp_backend_name: Option<String>,
    pub hash_always_miss: bool,
    pub hash_ignore_busy: bool,
    pub hash_ignore_vary: bool,
    pub req_ttl: Option<f64>,
    pub req_grace: Option<f64>,
    pub is_hitmiss: bool,
    pub is_hitpass: bool,
    /// The lookup found an object (`X-Varnish` then names its XID).
    pub is_hit: bool,
    /// Headers one message may hold: `http_max_hdr` less the five slots
    /// Varnish's start lines take. A header set beyond is lost.
    pub max_hdr: usize,
    /// The client's request body (read when something needs it).
    pub req_body: crate::cache_req_body::ReqBody,
    /// `return (vcl(label))`: the label to continue with.
    pub vcl_label: Option<String>,
    /// `beresp.do_esi`.
    pub do_esi: bool,
    /// `beresp.do_gzip` / `beresp.do_gunzip`.
    pub do_gzip: bool,
    pub do_gunzip: bool,
    /// `req.esi_level`: 0 for a client request, +1 per ESI include.
    pub esi_level: u32,
    /// `req.esi`: whether ESI in delivered objects is processed.
    pub req_esi: bool,
    /// `resp.do_esi`: process this response's ESI (default true).
    pub resp_do_esi: bool,
    /// In an ESI include: the top request and its time (`req_top.*`),
    /// and where its includes run.
    pub req_top: Option<Arc<ReqTop>>,
    /// `beresp.filters` / `resp.filters` once VCL set them.
    pub vfp_filters: Option<String>,
    pub vdp_filters: Option<String>,
    /// The backend response has a body (for the default `beresp.filters`).
    pub beresp_has_body: bool,
    /// `http_gzip_support` and `http_range_support` when the task began.
    pub gzip_support: bool,
    pub range_support: bool,
    pub hasher: Option<Sha256>,
    pub hash: [u8; 32],
    pub ttl: f64,
    pub grace: f64,
    pub keep: f64,
    pub uncacheable: bool,
    pub beresp_age: f64,
    pub beresp_time: f64,
    pub bereq_uncacheable: bool,
    pub is_bgfetch: bool,
    pub connect_timeout: Option<f64>,
    pub first_byte_timeout: Option<f64>,
    pub between_bytes_timeout: Option<f64>,
    pub do_stream: bool,
    pub client_identity: Option<String>,
    /// The synthetic body (`synthetic()`, `resp.body`, `beresp.body`).
    pub synth_body: Vec<u8>,
    /// `synth(status, reason)` as passed by the last `return`.
    pub synth: Option<(i64, Option<String>)>,
    pub pass_ttl: Option<f64>,
    /// Bans added by this task (`ban()`, `std.ban()`), for the host to
    /// apply after the call.
    pub new_bans: Vec<crate::cache_ban::Ban>,
    /// The error of the last failed `std.ban()`.
    pub ban_error: String,
    /// `VRT_fail` messages of this task.
    pub failed: Vec<String>,
    /// Cache tags for the object being fetched (`cache.add-tags`).
    pub tags: Vec<String>,
    /// The cache the task works on (its tenant's; VMODs' tag purges
    /// reach it).
    pub cache: Option<std::sync::Arc<crate::cache_hash::Cache>>,
    /// The tenant the task runs in (none: the default tenant).
    pub tenant: Option<Arc<crate::cache_tenant::Tenant>>,
    /// CPU time spent in VCL code so far (see [`CpuCall`]; host
    /// functions and VMODs the calls make included), against the
    /// tenant's `cpu_ms` quota (counted only when the tenant has one).
    pub cpu_spent: std::time::Duration,
    /// The VCL call in progress under a `cpu_ms` quota: what its epoch
    /// deadline callback checks.
    pub cpu_call: Option<CpuCall>,
    /// Time VCL calls spent waiting for I/O (`std.cache_req_body`):
    /// not counted against `cpu_ms`.
    pub io_wait: std::time::Duration,
    /// The route a client request started on (its ESI includes start
    /// there too).
    pub vcl_start: Option<crate::mgt_vcl::Route>,
    /// The VMOD instances this task has checked out; returned to their
    /// pools when the task ends.
    pub vmods: crate::cache_vmod::TaskVmods,
    /// `directors` state of this task (shard parameters and queued
    /// changes, applied when the task ends).
    pub directors: crate::vmod_directors_shard::TaskPriv,
    /// The task's transaction log.
    pub vsl: crate::vsl::Buf,
}

impl Task {
    /// A fresh task for a client request.
    pub fn new(xid: u64, client_ip: IpAddr, server_ip: IpAddr, now: f64) -> Task {
        Task {
            xid,
            method: Method::Recv,
            req: ReqMsg::default(),
            http0: ReqMsg::default(),
            mkbereq: MkBereq::default(),
            req_start: None,
            bereq: ReqMsg::default(),
            beresp: RespMsg::default(),
            resp: RespMsg::default(),
            obj: None,
            stale_obj: None,
            was_304: false,
            bereq_rolled_back: false,
            restarts: 0,
            retries: 0,
            req_time: now,
            client_ip,
            server_ip,
            ips: vec![client_ip, server_ip],
            ip_ports: vec![0, 0],
            backend_hint: 0,
            bereq_backend: 0,
            beresp_backend: 0,
            beresp_backend_name: None,
            hash_always_miss: false,
            hash_ignore_busy: false,
            hash_ignore_vary: false,
            req_ttl: None,
            req_grace: None,
            is_hitmiss: false,
            is_hitpass: false,
            is_hit: false,
            req_body: Default::default(),
            max_hdr: 64 - crate::cache_http1_proto::HDR_FIRST,
            vcl_label: None,
            do_esi: false,
            do_gzip: false,
            do_gunzip: false,
            esi_level: 0,
            req_esi: true,
            resp_do_esi: true,
            req_top: None,
            tenant: None,
            cpu_spent: std::time::Duration::ZERO,
            cpu_call: None,
            io_wait: std::time::Duration::ZERO,
            vcl_start: None,
            vfp_filters: None,
            vdp_filters: None,
            beresp_has_body: false,
            gzip_support: true,
            range_support: true,
            hasher: None,
            hash: [0; 32],
            ttl: 0.0,
            grace: 0.0,
            keep: 0.0,
            uncacheable: false,
            beresp_age: 0.0,
            beresp_time: now,
            bereq_uncacheable: false,
            is_bgfetch: false,
            connect_timeout: None,
            first_byte_timeout: None,
            between_bytes_timeout: None,
            do_stream: true,
            client_identity: None,
            synth_body: Vec::new(),
            synth: None,
            pass_ttl: None,
            failed: Vec::new(),
            tags: Vec::new(),
            cache: None,
            vmods: Default::default(),
            directors: Default::default(),
            vsl: Default::default(),
            new_bans: Vec::new(),
            ban_error: String::new(),
        }
    }

    /// Starts a `hash_data` run.
    pub fn hash_start(&mut self) {
        self.hasher = Some(Sha256::new());
    }

    /// One strand of `hash_data(…)`: Varnish feeds each strand (a NUL
    /// for a NULL one) and, after the call's last, a separator byte, so
    /// ("ab","c") and ("a","bc") differ. The bytes are varnishd's, so the
    /// digest is the same: the shard director's `by=HASH` keys on it.
    pub fn hash_data(&mut self, s: Option<&[u8]>, last: bool) {
        if let Some(h) = self.hasher.as_mut() {
            match s {
                Some(s) => h.update(s),
                None => h.update([0]),
            }
            if last {
                h.update([0]);
            }
        }
    }

    /// Finishes the hash into `self.hash`.
    pub fn hash_finish(&mut self) {
        if let Some(h) = self.hasher.take() {
            self.hash = h.finalize().into();
        }
    }

    /// Registers an IP (with its port) and returns its handle.
    pub fn ip_handle(&mut self, ip: IpAddr, port: u16) -> i32 {
        self.ips.push(ip);
        self.ip_ports.push(port);
        self.ips.len() as i32
    }

    /// The ports of `client.ip` and `server.ip`.
    pub fn set_ports(&mut self, [client, server]: [u16; 2]) {
        self.ip_ports[0] = client;
        self.ip_ports[1] = server;
    }

    /// The ports of `client.ip` and `server.ip`, for a task made from
    /// this one (a backend request, an ESI include).
    pub fn ports(&self) -> [u16; 2] {
        [self.ip_ports[0], self.ip_ports[1]]
    }

    /// The port of the IP behind a handle (0 when it has none).
    pub fn ip_port(&self, h: i32) -> u16 {
        usize::try_from(h - 1)
            .ok()
            .and_then(|i| self.ip_ports.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// The IP behind a handle.
    pub fn ip(&self, h: i32) -> Option<IpAddr> {
        usize::try_from(h - 1)
            .ok()
            .and_then(|i| self.ips.get(i))
            .copied()
    }
}

/// A VCL call under a `cpu_ms` quota. Reading the thread's CPU clock
/// is a system call (about 1 µs here, more than a VCL call), so a call
/// starts on the wall clock (`w0`, cheap): a call that ends within its
/// first epoch deadline (a millisecond or so, nearly all) is charged
/// its wall time, which is its CPU time unless the thread lost the CPU
/// in between (waits for the client's body are not charged). When a
/// call runs past that deadline the CPU clock is read (`cpu0`, with the
/// wall time so far in `wall0`) and from then on the call is charged
/// CPU time.
#[derive(Clone, Copy, Debug)]
pub struct CpuCall {
    pub w0: std::time::Instant,
    pub cpu0: Option<std::time::Duration>,
    pub wall0: std::time::Duration,
    /// The CPU time the request had left when the call began.
    pub left: std::time::Duration,
    /// Epoch ticks (wall milliseconds) the call may still be granted
    /// under the per-call budget `vcl_cpu_budget_ms`.
    pub wall_ticks: u64,
    /// The task's `io_wait` when the call began: waits for the client's
    /// body are taken off the wall time.
    pub io0: std::time::Duration,
}

impl CpuCall {
    /// The wall time since the call began, less its waits for I/O
    /// (`io_wait`: the task's now).
    pub fn wall(&self, io_wait: std::time::Duration) -> std::time::Duration {
        self.w0
            .elapsed()
            .saturating_sub(io_wait.saturating_sub(self.io0))
    }

    /// What the call has used so far (`io_wait`: the task's now).
    pub fn used(&self, io_wait: std::time::Duration) -> std::time::Duration {
        match self.cpu0 {
            None => self.wall(io_wait),
            // The CPU clock does not count waits.
            Some(c) => self.wall0 + thread_cpu().saturating_sub(c),
        }
    }
}

/// The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`): what the
/// `cpu_ms` quota counts of long calls. A system call (the vDSO does not
/// serve this clock), so it is read only when a call under a CPU quota
/// runs long (see [`CpuCall`]).
pub fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a
    // constant every Linux has.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// The current time as seconds since the Unix epoch.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A duration from seconds that VCL, a parameter or a backend declared:
/// clamped to [1 ms, ~31 years] so no value can panic or overflow a timer.
pub fn secs(x: f64) -> std::time::Duration {
    let x = if x.is_nan() {
        0.001
    } else {
        x.clamp(0.001, 1e9)
    };
    std::time::Duration::from_secs_f64(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn thread_cpu_counts_work_not_sleep() {
        let t0 = thread_cpu();
        std::thread::sleep(Duration::from_millis(50));
        let slept = thread_cpu() - t0;
        assert!(slept < Duration::from_millis(20), "{slept:?} while asleep");
        let (t0, w0) = (thread_cpu(), Instant::now());
        let mut x = 0u64;
        while w0.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let busy = thread_cpu() - t0;
        // Busy 30 ms of wall time: most of it on this thread's clock
        // (less if the machine took the CPU away now and then).
        assert!(busy > Duration::from_millis(5), "{busy:?} while busy");
        assert!(busy <= w0.elapsed() + Duration::from_millis(2));
    }
}
