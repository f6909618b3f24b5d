//! The HTTP/1 backend side (Varnish's `cache_http1_fetch` and
//! `cache_http1_vfp`): writes `bereq` exactly as VCL left it (URL verbatim,
//! header names as written), reads the response head, and reads the body
//! by its framing (Content-Length, chunked, or until close). A connection
//! whose body was read to its end and that did not say `close` goes back
//! to the backend's idle pool.

use crate::cache_obj::hdr_get;
use crate::cache_req_body::FetchBody;
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
    #[error("req.body read error: {0}")]
    ReqBody(String),
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

    /// An idle connection, if there is one the backend has not closed
    /// meanwhile (Varnish's waiter drops those from the pool).
    pub(crate) fn take(&self) -> Option<TcpStream> {
        loop {
            let s = self.idle.lock().ok()?.pop()?;
            // An idle connection has nothing to read: EOF means the
            // backend closed it, bytes mean it is out of step.
            if matches!(s.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            {
                return Some(s);
            }
        }
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
    /// `http_resp_size`: the whole response head.
    pub max_head: usize,
    /// `http_resp_hdr_len`: one header, folds included.
    pub max_hdr_len: usize,
    /// `http_max_hdr`: header slots (the status line takes five).
    pub max_headers: usize,
    /// `backend_local_error_holddown`, `backend_remote_error_holddown`.
    pub local_holddown: f64,
    pub remote_holddown: f64,
}

fn secs(s: f64) -> Duration {
    crate::vrt_ctx::secs(s.max(0.001))
}

async fn connect(
    addr: SocketAddr,
    limits: &Limits,
    preamble: Option<&[u8]>,
) -> Result<TcpStream, FetchError> {
    let mut s = tokio::time::timeout(secs(limits.connect_timeout), TcpStream::connect(addr))
        .await
        .map_err(|_| FetchError::ConnectTimeout(addr))?
        .map_err(|err| FetchError::Connect { addr, err })?;
    let _ = s.set_nodelay(true);
    if let Some(p) = preamble {
        s.write_all(p).await?;
    }
    Ok(s)
}

/// How the body of a backend request is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framed {
    None,
    Length(u64),
    Chunked,
}

/// Serialises a piped `bereq` with its headers as they are (the body's
/// framing included: an unread body follows on the tunnel) and `body`,
/// a cached body, behind it.
pub(crate) fn request_bytes(req: &ReqMsg, body: &[u8], host_header: Option<&str>) -> Vec<u8> {
    let mut out = request_head(req, None, host_header);
    out.extend_from_slice(body);
    out
}

/// Serialises `bereq`'s head (Varnish adds nothing the VCL did not set,
/// except the Host from `.host_header` and, given `body`, the body's
/// framing in place of the client's).
fn request_head(req: &ReqMsg, body: Option<Framed>, host_header: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.url.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.proto.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_host = false;
    let mut had_length = false;
    for (n, v) in &req.headers {
        if body.is_some()
            && (n.eq_ignore_ascii_case("content-length")
                || n.eq_ignore_ascii_case("transfer-encoding"))
        {
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
    match body {
        Some(Framed::Length(n)) => {
            out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
        }
        Some(Framed::None) if had_length => out.extend_from_slice(b"Content-Length: 0\r\n"),
        Some(Framed::None) | None => {}
        Some(Framed::Chunked) => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
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
    /// The connection was given back to the pool.
    recycled: bool,
    between_bytes_timeout: f64,
    /// The connection's descriptor and local address (for the log).
    pub fd: i32,
    pub local: Option<SocketAddr>,
    /// Whether the connection came from the idle pool.
    pub reused: bool,
    /// Bytes of the response head.
    pub hdr_bytes: u64,
    /// Bytes of the request's head and body as sent (`BereqAcct`).
    pub req_hdr_bytes: u64,
    pub req_body_bytes: u64,
    /// Bytes read after the response head (what is still in `buf` is
    /// not the body's yet).
    read_total: u64,
    /// When the connection was had, the request sent, the response head
    /// in (for the log's timestamps).
    pub t_connected: f64,
    pub t_bereq: f64,
    pub t_beresp: f64,
    /// A pooled connection that turned out closed before this one: its
    /// descriptor and when the request went out on it.
    pub retried: Option<(i32, f64)>,
}

/// Sends `req` with `body` to `addr` (on an idle pooled connection if
/// there is one, retrying once on a fresh one if that turns out dead and
/// the body can be sent again) and reads the response head.
pub async fn fetch_head(
    pool: &ConnPool,
    addr: SocketAddr,
    req: &ReqMsg,
    mut body: FetchBody,
    host_header: Option<&str>,
    preamble: Option<&[u8]>,
    limits: &Limits,
) -> Result<(RespMsg, BodyReader), FetchError> {
    let framed = match &body {
        FetchBody::None => Framed::None,
        FetchBody::Bytes(b) if b.is_empty() => Framed::None,
        FetchBody::Bytes(b) => Framed::Length(b.len() as u64),
        FetchBody::Stream(s) => match s.length() {
            Some(n) => Framed::Length(n),
            None => Framed::Chunked,
        },
    };
    let head = request_head(req, Some(framed), host_header);
    let body_bytes = match framed {
        Framed::Length(n) => n as usize,
        _ => 0,
    };
    let mut r = None;
    let mut retried = None;
    if let Some(s) = pool.take() {
        use std::os::fd::AsRawFd;
        crate::vsc::backend_reuse(&pool.vsc, head.len(), body_bytes);
        let (fd, t) = (s.as_raw_fd(), crate::vrt_ctx::now());
        match exchange(s, &head, &mut body, framed, req, limits, &pool.vsc).await {
            Ok(mut x) => {
                x.1.t_connected = t;
                r = Some(x);
            }
            // A recycled connection the backend had closed: try a new one.
            Err(FetchError::Closed | FetchError::Io(_)) if !body.started() => {
                crate::vsc::MAIN.backend_retry.inc();
                retried = Some((fd, t));
            }
            Err(e) => return Err(e),
        }
    }
    let (resp, reader) = match r {
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
            let s = connect(addr, limits, preamble).await;
            if let Err(FetchError::Connect { err, .. }) = &s {
                pool.hold_down(err, limits);
            }
            crate::vsc::backend_connect(&pool.vsc, &s, head.len(), body_bytes);
            let t = crate::vrt_ctx::now();
            let mut x = exchange(s?, &head, &mut body, framed, req, limits, &pool.vsc).await?;
            x.1.reused = false;
            x.1.t_connected = t;
            x.1.retried = retried;
            x
        }
    };
    pool.vsc.beresp_hdrbytes.add(reader.hdr_bytes);
    // Even without a body to read (HEAD, 204, 304) the connection goes
    // back to the pool only when the fetch is done with it: VCL may yet
    // say `Connection: close`.
    Ok((resp, reader))
}

/// Writes the request head and its body (streaming one from the client
/// as it arrives, chunked when its length is unknown; a chunked body's
/// bytes on the wire count in `bereq_bodybytes` as they go, a body of
/// known length was counted whole when the request started).
async fn send_request(
    s: &mut TcpStream,
    head: &[u8],
    body: &mut FetchBody,
    framed: Framed,
    vbe: &crate::vsc::Vbe,
) -> Result<u64, FetchError> {
    let mut sent = 0;
    match body {
        FetchBody::None => s.write_all(head).await?,
        FetchBody::Bytes(b) => {
            let mut w = Vec::with_capacity(head.len() + b.len());
            w.extend_from_slice(head);
            w.extend_from_slice(b);
            s.write_all(&w).await?;
            sent = b.len() as u64;
        }
        FetchBody::Stream(st) => {
            s.write_all(head).await?;
            loop {
                let piece = st
                    .next()
                    .await
                    .map_err(|e| FetchError::ReqBody(e.to_string()))?;
                match (piece, framed) {
                    (Some(p), Framed::Chunked) if !p.is_empty() => {
                        let mut w = Vec::with_capacity(p.len() + 16);
                        w.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
                        w.extend_from_slice(&p);
                        w.extend_from_slice(b"\r\n");
                        s.write_all(&w).await?;
                        vbe.bereq_bodybytes.add(w.len() as u64);
                        sent += w.len() as u64;
                    }
                    (Some(p), _) => {
                        s.write_all(&p).await?;
                        sent += p.len() as u64;
                    }
                    (None, Framed::Chunked) => {
                        s.write_all(b"0\r\n\r\n").await?;
                        vbe.bereq_bodybytes.add(5);
                        sent += 5;
                        break;
                    }
                    (None, _) => break,
                }
            }
        }
    }
    Ok(sent)
}

async fn exchange(
    mut s: TcpStream,
    head: &[u8],
    body: &mut FetchBody,
    framed: Framed,
    req: &ReqMsg,
    limits: &Limits,
    vbe: &crate::vsc::Vbe,
) -> Result<(RespMsg, BodyReader), FetchError> {
    let req_body_bytes = send_request(&mut s, head, body, framed, vbe).await?;
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
    let says_close = |h: &crate::cache_obj::Headers| {
        hdr_get(h, "connection")
            .is_some_and(|c| c.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    };
    // A backend request that said close closes too (Varnish's
    // SC_REQ_CLOSE), whatever the response says.
    let close = resp.proto == "HTTP/1.0"
        && !hdr_get(&resp.headers, "connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("keep-alive"))
        || says_close(&resp.headers)
        || says_close(&req.headers);
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
        req_hdr_bytes: head.len() as u64,
        req_body_bytes,
        read_total: buf.len() as u64,
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
        recycled: false,
        between_bytes_timeout: limits.between_bytes_timeout,
    };
    Ok((resp, reader))
}

fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(RespMsg, usize)>, FetchError> {
    let lim = crate::cache_http1_proto::HeadLimits {
        req_size: limits.max_head,
        hdr_len: limits.max_hdr_len,
        max_hdr: limits.max_headers,
    };
    crate::cache_http1_proto::dissect_response(buf, &lim).map_err(|e| match e {
        crate::cache_http1_proto::HeadError::Overflow => FetchError::TooLong,
        crate::cache_http1_proto::HeadError::Bad(why)
        | crate::cache_http1_proto::HeadError::BadHeader(why) => FetchError::Malformed(why),
    })
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

    /// Varnish's body status of the response: its number and name.
    pub fn body_status(&self) -> (u32, &'static str) {
        match self.framing {
            Framing::None => (0, "none"),
            Framing::Chunked => (2, "chunked"),
            Framing::Length(_) => (3, "length"),
            Framing::Eof => (4, "eof"),
        }
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
        let n = tokio::time::timeout(secs(self.between_bytes_timeout), s.read_buf(&mut self.buf))
            .await
            .map_err(|_| FetchError::BetweenBytesTimeout)?
            .map_err(FetchError::Io)?;
        self.read_total += n as u64;
        Ok(n)
    }

    /// Body bytes read off the connection so far, framing included
    /// (`BereqAcct`'s).
    pub fn body_wire_bytes(&self) -> u64 {
        self.read_total - self.buf.len() as u64
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
                self.recycled = true;
            }
        }
    }

    /// The connection is not to be reused (the response as VCL left it
    /// says `Connection: close`).
    pub fn forbid_reuse(&mut self) {
        self.reusable = false;
    }

    /// Done with a response that has no body to read: the connection
    /// goes back to `pool` (if it may).
    pub fn release_unread(&mut self, pool: &ConnPool) {
        if self.done {
            self.release(pool);
        }
    }

    /// Whether the connection went back to the pool for reuse.
    pub fn recycled(&self) -> bool {
        self.recycled
    }
}
