//! Backend health probes (Varnish's `cache_backend_probe`): a task per
//! probed backend sends `.url` (or the raw `.request`) every `.interval`,
//! reads the answer until the backend closes or `.timeout` runs out, and
//! keeps 64 results per kind of outcome. The backend is healthy while at
//! least `.threshold` of the last `.window` probes were good ("happy").
//!
//! As in Varnish the probe says `Connection: close` and waits for the
//! close: a backend that keeps the connection open fails the probe by
//! timeout, whatever it answered. The next probe starts `.interval`
//! after the previous one ended; the first one at once.

use crate::cache_backend::Backend;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vcl_to_wasm::tir::ProbeDef;

/// How quickly the average response time follows new good probes
/// (Varnish's AVG_RATE).
const AVG_RATE: f64 = 4.0;

/// What the probe keeps of a response: the start of the status line.
const RESP_BUF: usize = 128;

/// A probe's settings with Varnish's defaults applied.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The bytes sent, CRLFs included.
    pub request: String,
    pub expected: u16,
    pub timeout: f64,
    pub interval: f64,
    pub window: u32,
    pub threshold: u32,
    pub initial: u32,
}

impl Probe {
    /// Applies Varnish's defaults (`vbp_set_defaults`): an unset or zero
    /// interval is 5s, timeout 2s, window 8, threshold 3, expected 200;
    /// initial is threshold - 1 and never above the threshold. `host` is
    /// the backend's Host header (`.host_header`, else `.host`).
    pub fn from_def(def: &ProbeDef, host: &str) -> Probe {
        let window = def.window.filter(|&w| w > 0).unwrap_or(8).min(64);
        let threshold = def.threshold.filter(|&t| t > 0).unwrap_or(3);
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
            expected: def
                .expected_response
                .filter(|&e| e > 0)
                .and_then(|e| u16::try_from(e).ok())
                .unwrap_or(200),
            timeout: def.timeout.filter(|&t| t > 0.0).unwrap_or(2.0),
            interval: def.interval.filter(|&i| i > 0.0).unwrap_or(5.0),
            window,
            threshold,
            initial: def
                .initial
                .unwrap_or(threshold.saturating_sub(1))
                .min(threshold),
        }
    }
}

/// The outcome bits of the last 64 probes, newest in bit 0 (Varnish's
/// `tbl/backend_poll.h`), in `backend.list -p`'s order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bitmaps {
    pub good_ipv4: u64,
    pub good_ipv6: u64,
    pub good_unix: u64,
    pub err_xmit: u64,
    pub good_xmit: u64,
    pub err_recv: u64,
    pub good_recv: u64,
    pub happy: u64,
}

impl Bitmaps {
    /// (bits, character, label, shown even when empty) for each map.
    pub fn rows(&self) -> [(u64, char, &'static str, bool); 8] {
        [
            (self.good_ipv4, '4', "Good IPv4", false),
            (self.good_ipv6, '6', "Good IPv6", false),
            (self.good_unix, 'U', "Good UNIX", false),
            (self.err_xmit, 'x', "Error Xmit", false),
            (self.good_xmit, 'X', "Good Xmit", false),
            (self.err_recv, 'r', "Error Recv", false),
            (self.good_recv, 'R', "Good Recv", false),
            (self.happy, 'H', "Happy", true),
        ]
    }

    fn shift(&mut self) {
        for b in [
            &mut self.good_ipv4,
            &mut self.good_ipv6,
            &mut self.good_unix,
            &mut self.err_xmit,
            &mut self.good_xmit,
            &mut self.err_recv,
            &mut self.good_recv,
            &mut self.happy,
        ] {
            *b <<= 1;
        }
    }
}

/// What the probe has seen so far (Varnish's `vbp_target` statistics).
#[derive(Clone, Debug, Default)]
pub struct ProbeStats {
    pub bits: Bitmaps,
    /// Happy probes among the last `.window`.
    pub good: u32,
    /// Response time of the last good probe, and their running average.
    pub last: f64,
    pub avg: f64,
    rate: f64,
    /// The start of the last response's status line, or why it failed.
    pub resp: String,
}

/// A probed backend's probe: its settings and what it has seen.
#[derive(Debug)]
pub struct ProbeTarget {
    pub cfg: Probe,
    stats: Mutex<ProbeStats>,
    /// Bumped by every [`start`] and [`stop`]: a probing loop runs while
    /// it still sees the number it started with (a cold VCL stops its
    /// probes; warming it starts them again).
    run: std::sync::atomic::AtomicU64,
}

impl ProbeTarget {
    /// A probe whose window holds `.initial` good results (Varnish's
    /// `vbp_reset`).
    pub fn new(cfg: Probe) -> ProbeTarget {
        let mut st = ProbeStats::default();
        for _ in 0..cfg.initial {
            st.bits.shift();
            st.bits.happy |= 1;
            has_poked(&mut st, cfg.window);
        }
        ProbeTarget {
            cfg,
            stats: Mutex::new(st),
            run: Default::default(),
        }
    }

    /// A copy of the statistics.
    pub fn stats(&self) -> ProbeStats {
        match self.stats.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn publish(&self, st: &ProbeStats) {
        match self.stats.lock() {
            Ok(mut g) => *g = st.clone(),
            Err(p) => *p.into_inner() = st.clone(),
        }
    }

    /// Whether the good probes in the window reach the threshold.
    pub fn healthy(&self) -> bool {
        self.stats().good >= self.cfg.threshold
    }

    /// `backend.list -p` for this probe (Varnish's `VBP_Status` with
    /// details), starting on a new line.
    pub fn details(&self) -> String {
        let st = self.stats();
        let mut out = format!(
            "\n Current states  good: {:2} threshold: {:2} window: {:2}\n",
            st.good, self.cfg.threshold, self.cfg.window
        );
        out.push_str(&format!(
            "  Average response time of good probes: {:.6}\n",
            st.avg
        ));
        out.push_str("  Oldest ================================================== Newest\n");
        for (bits, c, label, always) in st.bits.rows() {
            if bits == 0 && !always {
                continue;
            }
            out.push_str("  ");
            for i in (0..64).rev() {
                out.push(if bits >> i & 1 == 1 { c } else { '-' });
            }
            out.push(' ');
            out.push_str(label);
            out.push('\n');
        }
        out
    }

    /// `backend.list -j -p` for this probe: the bitmaps as numbers.
    pub fn details_json(&self, indent: usize) -> String {
        let st = self.stats();
        let pad = " ".repeat(indent + 2);
        let mut out = String::from("{\n");
        for (bits, c, _, _) in st.bits.rows() {
            out.push_str(&format!("{pad}\"bits_{c}\": {bits},\n"));
        }
        out.push_str(&format!("{pad}\"good\": {},\n", st.good));
        out.push_str(&format!("{pad}\"threshold\": {},\n", self.cfg.threshold));
        out.push_str(&format!("{pad}\"window\": {}\n", self.cfg.window));
        out.push_str(&format!("{}}},\n", " ".repeat(indent)));
        out
    }
}

/// Counts the happy probes in the window and folds a good probe's time
/// into the average (Varnish's `vbp_has_poked`).
fn has_poked(st: &mut ProbeStats, window: u32) {
    if st.bits.happy & 1 == 1 {
        if st.rate < AVG_RATE {
            st.rate += 1.0;
        }
        st.avg += (st.last - st.avg) / st.rate;
    }
    let mask = if window >= 64 {
        u64::MAX
    } else {
        (1u64 << window) - 1
    };
    st.good = (st.bits.happy & mask).count_ones();
}

/// One probe (Varnish's `vbp_poke`): connect, send, read until the
/// backend closes, all within `.timeout`; then judge the status line.
async fn poke(be: &Backend, p: &Probe, st: &mut ProbeStats) {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + crate::vrt_ctx::secs(p.timeout);
    let Some(addr) = be.addr else {
        st.resp = "No backend".into();
        return;
    };
    let mut s = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            st.resp = format!("Open error {} ({e})", e.raw_os_error().unwrap_or(0));
            return;
        }
        Err(_) => {
            st.resp = format!("Open timeout {:.3}s exceeded", p.timeout);
            return;
        }
    };
    if addr.is_ipv4() {
        st.bits.good_ipv4 |= 1;
    } else {
        st.bits.good_ipv6 |= 1;
    }
    let sent = async {
        be.send_preamble(&mut s).await?;
        s.write_all(p.request.as_bytes()).await
    };
    match tokio::time::timeout_at(deadline, sent).await {
        Ok(Ok(())) => st.bits.good_xmit |= 1,
        Ok(Err(e)) => {
            st.bits.err_xmit |= 1;
            st.resp = format!("Write error {} ({e})", e.raw_os_error().unwrap_or(0));
            return;
        }
        Err(_) => {
            st.resp = format!("Poll timeout {:.3}s exceeded", p.timeout);
            return;
        }
    }
    // Read to the end; only the first bytes are kept.
    let mut head: Vec<u8> = Vec::with_capacity(RESP_BUF);
    let mut buf = [0u8; 8192];
    let mut total = 0usize;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                let keep = (RESP_BUF - 1).saturating_sub(head.len()).min(n);
                head.extend_from_slice(&buf[..keep]);
                total += n;
            }
            Ok(Err(e)) => {
                st.bits.err_recv |= 1;
                st.resp = format!("Read error {} ({e})", e.raw_os_error().unwrap_or(0));
                return;
            }
            Err(_) => {
                st.bits.err_recv |= 1;
                st.resp = format!("Poll timeout {:.3}s exceeded", p.timeout);
                return;
            }
        }
    }
    if total == 0 {
        st.resp = "Empty response".into();
        return;
    }
    st.last = start.elapsed().as_secs_f64();
    st.bits.good_recv |= 1;
    let line = head
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    let line = String::from_utf8_lossy(line).into_owned();
    if status_of(&line) == Some(p.expected) {
        st.bits.happy |= 1;
    }
    st.resp = line;
}

/// The status of a status line as Varnish reads it (`HTTP/%f %u`): a
/// number after `HTTP/`, blanks, then the status digits.
fn status_of(line: &str) -> Option<u16> {
    let rest = line.strip_prefix("HTTP/")?;
    let ver_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..ver_end].parse::<f64>().ok()?;
    let rest = rest[ver_end..].trim_start();
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse::<u32>().ok()?.try_into().ok()
}

/// Publishes the probe's verdict to the backend (Varnish's
/// `VBP_Update_Backend`): sick when fewer than `.threshold` of the window
/// were good, and the time of a change.
fn update_backend(be: &Backend, t: &ProbeTarget, st: &ProbeStats) {
    let healthy = st.good >= t.cfg.threshold;
    let changed = be.healthy.swap(healthy, Ordering::Relaxed) != healthy;
    if changed {
        be.mark_changed();
    }
    let bits: String = st
        .bits
        .rows()
        .iter()
        .map(|(b, c, _, _)| if b & 1 == 1 { *c } else { '-' })
        .collect();
    be.conns.vsc.happy.set(st.bits.happy);
    crate::vsl::backend_health(format_args!(
        "{} {} {} {} {} {} {} {:.6} {:.6} \"{}\"",
        be.name,
        if changed { "Went" } else { "Still" },
        if healthy { "healthy" } else { "sick" },
        bits,
        st.good,
        t.cfg.threshold,
        t.cfg.window,
        st.last,
        st.avg,
        st.resp
    ));
}

/// Sets the backend's initial health from its probe's `.initial` and
/// starts probing it until the backend is dropped (its VCL discarded).
pub fn start(be: &Arc<Backend>) {
    let Some(t) = be.probe.clone() else { return };
    // Starting sick is a change (Varnish's backend starts healthy and
    // its first update flips it).
    be.healthy.store(true, Ordering::Relaxed);
    update_backend(be, &t, &t.stats());
    let weak: Weak<Backend> = Arc::downgrade(be);
    let run = t.run.fetch_add(1, Ordering::AcqRel) + 1;
    tokio::spawn(async move {
        loop {
            if t.run.load(Ordering::Acquire) != run {
                return;
            }
            let Some(be) = weak.upgrade() else { return };
            // The maps move on when the probe starts, as Varnish's
            // vbp_start_poke: a probe under way shows as a new, empty
            // slot.
            let mut st = t.stats();
            st.bits.shift();
            st.last = 0.0;
            st.resp.clear();
            t.publish(&st);
            poke(&be, &t.cfg, &mut st).await;
            has_poked(&mut st, t.cfg.window);
            t.publish(&st);
            update_backend(&be, &t, &st);
            drop(be);
            tokio::time::sleep(crate::vrt_ctx::secs(t.cfg.interval)).await;
        }
    });
}

/// Stops probing the backend (its VCL went cold): the loop ends before
/// its next probe. Its health stays as last seen.
pub fn stop(be: &Arc<Backend>) {
    if let Some(t) = &be.probe {
        t.run.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_as_varnish_reads_them() {
        assert_eq!(status_of("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_of("HTTP/1.1 200 "), Some(200));
        assert_eq!(status_of("HTTP/2 404"), Some(404));
        assert_eq!(status_of("FROBOZ 200 OK"), None);
        assert_eq!(status_of("HTTP/1.1 abc"), None);
        assert_eq!(status_of("HTTP/x 200"), None);
    }

    #[test]
    fn initial_fills_the_window_up_to_the_threshold() {
        let def = ProbeDef::default();
        let p = Probe::from_def(&def, "h");
        assert_eq!((p.window, p.threshold, p.initial), (8, 3, 2));
        let t = ProbeTarget::new(p);
        let st = t.stats();
        assert_eq!(st.good, 2);
        assert_eq!(st.bits.happy, 0b11);
        assert!(!t.healthy());
        let def = ProbeDef {
            initial: Some(9),
            threshold: Some(4),
            ..ProbeDef::default()
        };
        let t = ProbeTarget::new(Probe::from_def(&def, "h"));
        assert_eq!(t.stats().good, 4);
        assert!(t.healthy());
    }

    #[test]
    fn details_print_64_results_oldest_first() {
        let t = ProbeTarget::new(Probe::from_def(&ProbeDef::default(), "h"));
        let d = t.details();
        assert!(d.starts_with("\n Current states  good:  2 threshold:  3 window:  8\n"));
        let happy = d.lines().last().unwrap_or_default();
        assert_eq!(happy, format!("  {}HH Happy", "-".repeat(62)));
    }
}
