//! `return (pipe)` (Varnish's `cache_pipe`): the backend request is sent
//! as `vcl_pipe` left it, then the client's connection and a fresh
//! backend connection are joined byte for byte until one side is done or
//! nothing moves for `pipe_timeout`. Nothing after the first request is
//! parsed: later requests on the connection go to the backend as they are.

use crate::cache_backend::Backend;
use crate::vrt_ctx::ReqMsg;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the request state machine hands the session for a pipe.
pub struct PipeJob {
    pub backend: Arc<Backend>,
    pub bereq: ReqMsg,
    /// The request body as already read from the client.
    pub body: Bytes,
    pub connect_timeout: f64,
    pub pipe_timeout: f64,
    /// The backend request's log (begun by [`crate::vsl::pipe_begin`]).
    pub vsl: crate::vsl::Buf,
}

/// What a pipe moved and when it started (the request's `Timestamp
/// Pipe` and `PipeAcct`).
#[derive(Debug, Default, Clone, Copy)]
pub struct PipeAcct {
    /// When the backend request was sent and the tunnel opened.
    pub t_pipe: Option<f64>,
    /// Bytes of the backend request's head.
    pub bereq_hdr: u64,
    /// Bytes piped from the client to the backend, and back.
    pub in_bytes: u64,
    pub out_bytes: u64,
}

/// Why a pipe ended early.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    #[error("backend {0} has no address")]
    NoAddress(String),
    #[error("connect to backend {0} failed: {1}")]
    Connect(String, String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the pipe. `leftover` is what the client sent after the first
/// request's head and body (the start of its next request, say).
/// When the backend cannot be reached the client's connection just
/// closes, without an answer (Varnish's SC_TX_ERROR). The backend
/// request's log gets the connection (`Timestamp Connected`,
/// `BackendOpen`, `Timestamp Bereq`, `BackendClose … Piped
/// transaction`) and ends; what moved is returned for the request's.
pub async fn run(
    mut client: TcpStream,
    leftover: &[u8],
    mut job: PipeJob,
) -> (PipeAcct, Result<(), PipeError>) {
    let mut acct = PipeAcct::default();
    let name = job.backend.name.clone();
    let (mut backend, reused) = match connect(&job).await {
        Ok(b) => b,
        Err(e) => {
            job.vsl.log(vapi::Tag::FetchError, &e.to_string());
            let _ = client.shutdown().await;
            return (acct, Err(e));
        }
    };
    job.vsl.ts("Connected", crate::vrt_ctx::now());
    log_open(&mut job.vsl, &job.backend, &backend, reused);
    let first = crate::cache_http1_fetch::request_bytes(
        &job.bereq,
        &job.body,
        job.backend.host_header.as_deref(),
    );
    acct.bereq_hdr = (first.len() - job.body.len()) as u64;
    let idle = crate::vrt_ctx::secs(job.pipe_timeout.max(0.001));
    let clock = Activity::new();
    let r = async {
        backend.write_all(&first).await?;
        let t = crate::vrt_ctx::now();
        acct.t_pipe = Some(t);
        job.vsl.ts("Bereq", t);
        backend.write_all(leftover).await?;
        clock.moved_in(job.body.len() + leftover.len());
        let (cr, cw) = client.split();
        let (br, bw) = backend.split();
        // Either direction failing or going idle ends both; one side
        // closing its half is passed on and the other direction runs to
        // its end.
        tokio::try_join!(
            copy(cr, bw, idle, &clock, &clock.bytes_in),
            copy(br, cw, idle, &clock, &clock.bytes_out)
        )
    }
    .await;
    tracing::debug!(backend = %name, "pipe done: {:?}", r.as_ref().map(|_| ()));
    acct.in_bytes = clock.bytes_in.load(std::sync::atomic::Ordering::Relaxed);
    acct.out_bytes = clock.bytes_out.load(std::sync::atomic::Ordering::Relaxed);
    job.vsl.logf(
        vapi::Tag::BackendClose,
        format_args!(
            "{} {name} close Piped transaction",
            std::os::fd::AsRawFd::as_raw_fd(&backend)
        ),
    );
    (acct, r.map(|_| ()).map_err(PipeError::from))
}

/// `BackendOpen FD NAME IP PORT LOCALIP LOCALPORT connect|reuse`.
fn log_open(vsl: &mut crate::vsl::Buf, be: &Backend, s: &TcpStream, reused: bool) {
    use std::os::fd::AsRawFd;
    let (ip, port) = s
        .peer_addr()
        .map(|a| (a.ip().to_string(), a.port()))
        .unwrap_or_default();
    let (lip, lport) = s
        .local_addr()
        .map(|a| (a.ip().to_string(), a.port()))
        .unwrap_or_default();
    vsl.logf(
        vapi::Tag::BackendOpen,
        format_args!(
            "{} {} {ip} {port} {lip} {lport} {}",
            s.as_raw_fd(),
            be.name,
            if reused { "reuse" } else { "connect" }
        ),
    );
}

async fn connect(job: &PipeJob) -> Result<(TcpStream, bool), PipeError> {
    let be = &job.backend;
    // Like Varnish, a pipe starts on an idle connection of the backend's
    // when there is one.
    if let Some(s) = be.conns.take() {
        return Ok((s, true));
    }
    let addr = be
        .addr
        .ok_or_else(|| PipeError::NoAddress(be.name.clone()))?;
    let t = crate::vrt_ctx::secs(job.connect_timeout.max(0.001));
    let mut s = tokio::time::timeout(t, TcpStream::connect(addr))
        .await
        .map_err(|_| PipeError::Connect(be.name.clone(), "timed out".into()))?
        .map_err(|e| PipeError::Connect(be.name.clone(), e.to_string()))?;
    let _ = s.set_nodelay(true);
    be.send_preamble(&mut s)
        .await
        .map_err(|e| PipeError::Connect(be.name.clone(), e.to_string()))?;
    Ok((s, false))
}

/// When bytes last moved in either direction: `pipe_timeout` is idleness
/// of the whole pipe, not of one direction.
/// It also counts the bytes each way (`PipeAcct`).
struct Activity {
    start: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
    bytes_in: std::sync::atomic::AtomicU64,
    bytes_out: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: std::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
            bytes_in: std::sync::atomic::AtomicU64::new(0),
            bytes_out: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn moved_in(&self, n: usize) {
        self.bytes_in
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long until the pipe has been idle for `idle`.
    fn left(&self, idle: Duration) -> Option<Duration> {
        let last = Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed));
        (last + idle).checked_sub(self.start.elapsed())
    }
}

/// Copies until end of input, then half-closes the output.
async fn copy<R, W>(
    mut from: R,
    mut to: W,
    idle: Duration,
    clock: &Activity,
    total: &std::sync::atomic::AtomicU64,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = loop {
            let Some(left) = clock.left(idle) else {
                return Err(std::io::ErrorKind::TimedOut.into());
            };
            // The other direction may have moved meanwhile: look again.
            if let Ok(r) = tokio::time::timeout(left, from.read(&mut buf)).await {
                break r?;
            }
        };
        clock.touch();
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        total.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
}
