//! The HTTP/1 backend side (Varnish's `cache_http1_fetch` and
//! `cache_http1_vfp`): writes `bereq` exactly as VCL left it (URL verbatim,
//! header names as written), reads the response head, and reads the body
//! by its framing (Content-Length, chunked, or until close). A connection
//! whose body was read to its end and that did not say `close` goes back
//! to the backend's idle pool.

use crate::cache_obj::{hdr_get, Headers};
use crate::vrt_ctx::{ReqMsg, RespMsg};
use bytes::{Buf, Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a fetch failed (all end in `vcl_backend_error` / a 503).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("connect to {addr} failed: {err}")]
    Connect {
        addr: SocketAddr,
        err: std::io::Error,
    },
    #[error("connect to {0} timed out")]
    ConnectTimeout(SocketAddr),
    #[error("first byte timeout")]
    FirstByteTimeout,
    #[error("between bytes timeout")]
    BetweenBytesTimeout,
    #[error("backend closed the connection before the response")]
    Closed,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("response headers too long")]
    TooLong,
    #[error("body ended early")]
    Truncated,
}

/// Idle keep-alive connections of one backend.
#[derive(Debug, Default)]
pub struct ConnPool {
    idle: Mutex<Vec<TcpStream>>,
    /// The backend's `VBE.<vcl>.<backend>.*` counters.
    pub vsc: crate::vsc::Vbe,
    /// After a connect error that will not go away soon (refused,
    /// unreachable, not permitted), no new connection is tried until this
    /// time; fetches fail with that error meanwhile (Varnish's holddown).
    holddown: Mutex<Option<(std::time::Instant, i32)>>,
}

impl ConnPool {
    /// The error new connections fail with while held down.
    fn held_down(&self) -> Option<i32> {
        let mut g = self.holddown.lock().ok()?;
        match *g {
            Some((until, errno)) if std::time::Instant::now() < until => Some(errno),
            Some(_) => {
                *g = None;
                None
            }
            None => None,
        }
    }

    /// Starts a holddown after a connect error, for the errors Varnish
    /// holds down on.
    fn hold_down(&self, err: &std::io::Error, limits: &Limits) {
        let h = match err.raw_os_error() {
            Some(libc::EACCES | libc::EPERM | libc::EADDRNOTAVAIL) => limits.local_holddown,
            Some(libc::ECONNREFUSED | libc::ENETUNREACH) => limits.remote_holddown,
            _ => return,
        };
        if h <= 0.0 {
            return;
        }
        let until = std::time::Instant::now() + crate::vrt_ctx::secs(h);
        if let (Ok(mut g), Some(errno)) = (self.holddown.lock(), err.raw_os_error()) {
            if g.is_none_or(|(u, _)| until < u) {
                *g = Some((until, errno));
            }
        }
    }

    /// An idle connection, if there is one.
    pub(crate) fn take(&self) -> Option<TcpStream> {
        self.idle.lock().ok()?.pop()
    }

    fn give(&self, s: TcpStream) {
        if let Ok(mut g) = self.idle.lock() {
            if g.len() < 64 {
                g.push(s);
            }
        }
    }
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    Eof,
}

/// The limits and timeouts of one fetch.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect_timeout: f64,
    pub first_byte_timeout: f64,
    pub between_bytes_timeout: f64,
    /// `http_resp_hdr_len`-ish bound on the whole response head.
    pub max_head: usize,
    /// `http_max_hdr`.
    pub max_headers: usize,
    /// `backend_local_error_holddown`, `backend_remote_error_holddown`.
    pub local_holddown: f64,
    pub remote_holddown: f64,
}

fn secs(s: f64) -> Duration {
    crate::vrt_ctx::secs(s.max(0.001))
}

async fn connect(addr: SocketAddr, limits: &Limits) -> Result<TcpStream, FetchError> {
    let s = tokio::time::timeout(secs(limits.connect_timeout), TcpStream::connect(addr))
        .await
        .map_err(|_| FetchError::ConnectTimeout(addr))?
        .map_err(|err| FetchError::Connect { addr, err })?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Serialises `bereq` (Varnish adds nothing the VCL did not set, except
/// a Content-Length for a body and the Host from `.host_header`).
pub(crate) fn request_bytes(req: &ReqMsg, body: &[u8], host_header: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.url.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.proto.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_host = false;
    let mut had_length = false;
    for (n, v) in &req.headers {
        if n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding") {
            had_length = true;
            continue;
        }
        has_host |= n.eq_ignore_ascii_case("host");
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has_host {
        if let Some(h) = host_header {
            out.extend_from_slice(format!("Host: {h}\r\n").as_bytes());
        }
    }
    if !body.is_empty() || had_length {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// A response whose head has arrived; the body is read with
/// [`BodyReader::next_chunk`].
pub struct BodyReader {
    stream: Option<TcpStream>,
    buf: BytesMut,
    framing: Framing,
    /// Bytes left of the current chunk (chunked) or the body (length).
    left: u64,
    done: bool,
    reusable: bool,
    between_bytes_timeout: f64,
    /// The connection's descriptor and local address (for the log).
    pub fd: i32,
    pub local: Option<SocketAddr>,
    /// Whether the connection came from the idle pool.
    pub reused: bool,
    /// Bytes of the response head.
    pub hdr_bytes: u64,
    /// When the connection was had, the request sent, the response head
    /// in (for the log's timestamps).
    pub t_connected: f64,
    pub t_bereq: f64,
    pub t_beresp: f64,
    /// A pooled connection that turned out closed before this one: its
    /// descriptor and when the request went out on it.
    pub retried: Option<(i32, f64)>,
}

/// Sends `req` to `addr` (on an idle pooled connection if there is one,
/// retrying once on a fresh one if that turns out dead) and reads the
/// response head.
pub async fn fetch_head(
    pool: &ConnPool,
    addr: SocketAddr,
    req: &ReqMsg,
    body: &[u8],
    host_header: Option<&str>,
    limits: &Limits,
) -> Result<(RespMsg, BodyReader), FetchError> {
    let wire = request_bytes(req, body, host_header);
    let mut r = None;
    let mut retried = None;
    if let Some(s) = pool.take() {
        use std::os::fd::AsRawFd;
        crate::vsc::backend_reuse(&pool.vsc, wire.len() - body.len(), body.len());
        let (fd, t) = (s.as_raw_fd(), crate::vrt_ctx::now());
        match exchange(s, &wire, req, limits).await {
            Ok(mut x) => {
                x.1.t_connected = t;
                r = Some(x);
            }
            // A recycled connection the backend had closed: try a new one.
            Err(FetchError::Closed | FetchError::Io(_)) => {
                crate::vsc::MAIN.backend_retry.inc();
                retried = Some((fd, t));
            }
            Err(e) => return Err(e),
        }
    }
    let (resp, mut reader) = match r {
        Some(x) => x,
        None => {
            if let Some(errno) = pool.held_down() {
                crate::vsc::MAIN.backend_fail.inc();
                pool.vsc.helddown.inc();
                return Err(FetchError::Connect {
                    addr,
                    err: std::io::Error::from_raw_os_error(errno),
                });
            }
            let s = connect(addr, limits).await;
            if let Err(FetchError::Connect { err, .. }) = &s {
                pool.hold_down(err, limits);
            }
            crate::vsc::backend_connect(&pool.vsc, &s, wire.len() - body.len(), body.len());
            let t = crate::vrt_ctx::now();
            let mut x = exchange(s?, &wire, req, limits).await?;
            x.1.reused = false;
            x.1.t_connected = t;
            x.1.retried = retried;
            x
        }
    };
    pool.vsc.beresp_hdrbytes.add(reader.hdr_bytes);
    // Nothing to read (HEAD, 204, 304): the connection is free now.
    if reader.done {
        reader.release(pool);
    }
    Ok((resp, reader))
}

async fn exchange(
    mut s: TcpStream,
    wire: &[u8],
    req: &ReqMsg,
    limits: &Limits,
) -> Result<(RespMsg, BodyReader), FetchError> {
    s.write_all(wire).await?;
    let t_bereq = crate::vrt_ctx::now();
    let mut buf = BytesMut::with_capacity(8192);
    let fbt = secs(limits.first_byte_timeout);
    let (resp, head_len) = loop {
        // 1xx responses are skipped, as Varnish does (100 Continue).
        if let Some((resp, n)) = parse_head(&buf, limits)? {
            if (100..200).contains(&resp.status) && resp.status != 101 {
                buf.advance(n);
                continue;
            }
            break (resp, n);
        }
        if buf.len() > limits.max_head {
            return Err(FetchError::TooLong);
        }
        let n = tokio::time::timeout(fbt, s.read_buf(&mut buf))
            .await
            .map_err(|_| FetchError::FirstByteTimeout)??;
        if n == 0 {
            return Err(if buf.is_empty() {
                FetchError::Closed
            } else {
                FetchError::Malformed("response head cut short".into())
            });
        }
    };
    let t_beresp = crate::vrt_ctx::now();
    buf.advance(head_len);
    let framing = framing_of(req, &resp)?;
    crate::vsc::MAIN.fetch_framing(match framing {
        Framing::None if req.method == "HEAD" => "head",
        Framing::None if resp.status == 204 => "204",
        Framing::None if resp.status == 304 => "304",
        Framing::None => "none",
        Framing::Length(_) => "length",
        Framing::Chunked => "chunked",
        Framing::Eof => "eof",
    });
    let close = resp.proto == "HTTP/1.0"
        && !hdr_get(&resp.headers, "connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("keep-alive"))
        || hdr_get(&resp.headers, "connection")
            .is_some_and(|c| c.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
    let left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    use std::os::fd::AsRawFd;
    let reader = BodyReader {
        fd: s.as_raw_fd(),
        local: s.local_addr().ok(),
        reused: true,
        hdr_bytes: head_len as u64,
        t_connected: t_bereq,
        t_bereq,
        t_beresp,
        retried: None,
        stream: Some(s),
        buf,
        framing,
        left,
        done: framing == Framing::None || framing == Framing::Length(0),
        reusable: !close && framing != Framing::Eof,
        between_bytes_timeout: limits.between_bytes_timeout,
    };
    Ok((resp, reader))
}

fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(RespMsg, usize)>, FetchError> {
    let mut hdrs = vec![httparse::EMPTY_HEADER; limits.max_headers.max(1)];
    let mut r = httparse::Response::new(&mut hdrs);
    match r.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(n)) => {
            let status = r.code.unwrap_or(0);
            if !(100..=999).contains(&status) {
                return Err(FetchError::Malformed(format!("status {status}")));
            }
            let proto = match r.version {
                Some(0) => "HTTP/1.0",
                _ => "HTTP/1.1",
            };
            let headers: Headers = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).trim().to_string(),
                    )
                })
                .collect();
            Ok(Some((
                RespMsg {
                    status,
                    // A backend that sends no reason gets the standard
                    // one, as in Varnish.
                    reason: match r.reason.map(str::trim) {
                        Some(r) if !r.is_empty() => r.to_string(),
                        _ => crate::cache_http::status_reason(status).to_string(),
                    },
                    proto: proto.to_string(),
                    headers,
                },
                n,
            )))
        }
        Err(httparse::Error::TooManyHeaders) => Err(FetchError::TooLong),
        Err(e) => Err(FetchError::Malformed(e.to_string())),
    }
}

fn framing_of(req: &ReqMsg, resp: &RespMsg) -> Result<Framing, FetchError> {
    if resp.status == 204
        && hdr_get(&resp.headers, "content-length").is_some_and(|v| v.trim() != "0")
    {
        return Err(FetchError::Malformed("204 with a body".into()));
    }
    if req.method == "HEAD" || resp.status == 204 || resp.status == 304 {
        return Ok(Framing::None);
    }
    if let Some(te) = hdr_get(&resp.headers, "transfer-encoding") {
        if te
            .rsplit(',')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"))
        {
            return Ok(Framing::Chunked);
        }
        return Ok(Framing::Eof);
    }
    let mut lengths = resp
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    if let Some((_, v)) = lengths.next() {
        let n: u64 = v
            .trim()
            .parse()
            .map_err(|_| FetchError::Malformed(format!("Content-Length: {v}")))?;
        if lengths.any(|(_, w)| w.trim() != v.trim()) {
            return Err(FetchError::Malformed("conflicting Content-Length".into()));
        }
        return Ok(Framing::Length(n));
    }
    Ok(Framing::Eof)
}

impl BodyReader {
    /// Whether the response has no body at all.
    pub fn is_empty(&self) -> bool {
        self.framing == Framing::None || self.framing == Framing::Length(0)
    }

    /// The Content-Length the backend announced.
    pub fn content_length(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            _ => None,
        }
    }

    async fn fill(&mut self) -> Result<usize, FetchError> {
        let Some(s) = self.stream.as_mut() else {
            return Ok(0);
        };
        tokio::time::timeout(secs(self.between_bytes_timeout), s.read_buf(&mut self.buf))
            .await
            .map_err(|_| FetchError::BetweenBytesTimeout)?
            .map_err(FetchError::Io)
    }

    async fn line(&mut self) -> Result<String, FetchError> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let l = self.buf.split_to(i + 1);
                return Ok(String::from_utf8_lossy(&l).trim_end().to_string());
            }
            if self.buf.len() > 4096 {
                return Err(FetchError::Malformed("chunk header too long".into()));
            }
            if self.fill().await? == 0 {
                return Err(FetchError::Truncated);
            }
        }
    }

    /// The next piece of the body; `None` at its end. When the body ended
    /// cleanly on a reusable connection, the connection goes back to `pool`.
    pub async fn next_chunk(&mut self, pool: &ConnPool) -> Result<Option<Bytes>, FetchError> {
        if self.done {
            self.release(pool);
            return Ok(None);
        }
        match self.framing {
            Framing::None => {
                self.done = true;
                self.release(pool);
                Ok(None)
            }
            Framing::Length(_) => {
                let b = self.take_left().await?;
                if self.left == 0 {
                    self.done = true;
                }
                Ok(Some(b))
            }
            Framing::Eof => {
                if self.buf.is_empty() && self.fill().await? == 0 {
                    self.done = true;
                    return Ok(None);
                }
                Ok(Some(self.buf.split().freeze()))
            }
            Framing::Chunked => {
                if self.left == 0 {
                    let l = self.line().await?;
                    let l = if l.is_empty() { self.line().await? } else { l };
                    let size = l.split(';').next().unwrap_or("").trim();
                    let n = u64::from_str_radix(size, 16)
                        .map_err(|_| FetchError::Malformed(format!("chunk size {size:?}")))?;
                    if n == 0 {
                        // Trailers, up to the empty line.
                        while !self.line().await?.is_empty() {}
                        self.done = true;
                        self.release(pool);
                        return Ok(None);
                    }
                    self.left = n;
                }
                let b = self.take_left().await?;
                if self.left == 0 {
                    // The CRLF after the chunk data.
                    let _ = self.line().await?;
                }
                Ok(Some(b))
            }
        }
    }

    /// Up to `left` bytes of what has arrived (reading if nothing has).
    async fn take_left(&mut self) -> Result<Bytes, FetchError> {
        if self.buf.is_empty() && self.fill().await? == 0 {
            return Err(FetchError::Truncated);
        }
        let n = (self.buf.len() as u64).min(self.left) as usize;
        self.left -= n as u64;
        Ok(self.buf.split_to(n).freeze())
    }

    fn release(&mut self, pool: &ConnPool) {
        if let Some(s) = self.stream.take() {
            if self.reusable && self.buf.is_empty() {
                crate::vsc::MAIN.backend_recycle.inc();
                pool.give(s);
            }
        }
    }
}
