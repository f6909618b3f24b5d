//! The HTTP/1 session engine behind `client` and `server` specs.
//!
//! It is hand-written on a blocking [`TcpStream`] because tests must send
//! and receive deliberately malformed HTTP: nothing here validates what
//! it sends, and parsing follows varnishtest's (lenient) rules so that the
//! same expectations hold:
//!
//! * A header block ends at the first empty line (`\n\n`, `\n\r\n`,
//!   `\r\n\r\n`); the first line splits into three fields on blanks (the
//!   third running to the end of the line), header lookup is by
//!   case-insensitive name directly followed by `:`.
//! * Bodies: `Transfer-Encoding: chunked` (exact value), else
//!   `Content-Length`, else — for a `200` response (or `rxrespbody`) — up to
//!   EOF, else none. Both TE and CL is an error.
//! * `bodylen` is `<undef>` until a body was received; an unknown header
//!   is `<undef>` too.
//! * Errors in `non_fatal` mode are logged and the command carries on.
//!
//! One [`Session`] is one connection's worth of state (varnishtest's
//! `struct http`): a new session per connection resets `timeout` and
//! `fatal`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::ctx::{Abort, Ctx, R, SLICE};
use crate::expect::{compare, ExpectResult};
use crate::misc;
use crate::token::{tokenize, Command};

/// A received request or response head, split like varnishtest does.
#[derive(Debug, Clone, Default)]
pub struct Msg {
    /// Method/URL/proto for a request, proto/status/reason for a response.
    pub first: [Option<Vec<u8>>; 3],
    /// Header lines as received (`Name: value`).
    pub headers: Vec<Vec<u8>>,
}

impl Msg {
    /// Value of the first header `name` (leading blanks skipped).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        let n = name.as_bytes();
        self.headers.iter().find_map(|h| {
            if h.len() > n.len() && h[..n.len()].eq_ignore_ascii_case(n) && h[n.len()] == b':' {
                let mut v = &h[n.len() + 1..];
                while let Some((&c, rest)) = v.split_first() {
                    if c == b' ' || c == b'\t' {
                        v = rest;
                    } else {
                        break;
                    }
                }
                Some(v)
            } else {
                None
            }
        })
    }

    fn count(&self, name: &str) -> usize {
        let n = name.as_bytes();
        self.headers
            .iter()
            .filter(|h| {
                h.len() > n.len() && h[..n.len()].eq_ignore_ascii_case(n) && h[n.len()] == b':'
            })
            .count()
    }
}

/// Splits a received head (without the final empty line handling) into a
/// [`Msg`].
pub fn split_head(raw: &[u8]) -> Msg {
    let mut m = Msg::default();
    let is_lws = |c: u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let is_sp = |c: u8| c == b' ' || c == b'\t';
    let crlf = |p: usize| -> usize {
        if raw.get(p) == Some(&b'\r') && raw.get(p + 1) == Some(&b'\n') {
            2
        } else if raw.get(p) == Some(&b'\n') {
            1
        } else {
            0
        }
    };
    if raw.is_empty() {
        return m;
    }
    let len = raw.len();
    let mut p = 0;
    while p < len && is_lws(raw[p]) {
        p += 1;
    }
    let s = p;
    while p < len && !is_lws(raw[p]) {
        p += 1;
    }
    m.first[0] = Some(raw[s..p].to_vec());
    if crlf(p) > 0 || p >= len {
        p += crlf(p);
    } else {
        p += 1;
        while p < len && is_sp(raw[p]) {
            p += 1;
        }
        let s = p;
        while p < len && !is_lws(raw[p]) {
            p += 1;
        }
        m.first[1] = Some(raw[s..p].to_vec());
        if crlf(p) > 0 || p >= len {
            p += crlf(p);
        } else {
            p += 1;
            while p < len && is_sp(raw[p]) {
                p += 1;
            }
            let s = p;
            while p < len && crlf(p) == 0 {
                p += 1;
            }
            m.first[2] = Some(raw[s..p].to_vec());
            p += crlf(p);
        }
    }
    while p < len {
        if crlf(p) > 0 {
            break;
        }
        let s = p;
        while p < len && crlf(p) == 0 {
            p += 1;
        }
        m.headers.push(raw[s..p].to_vec());
        p += crlf(p);
    }
    m
}

/// A synthetic body of `n` bytes in varnishtest's pattern (printable
/// characters, a newline every 64 bytes, ending in a newline), so that
/// lengths and contents agree with tests written for varnishtest.
pub fn synth_body(n: usize, random: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(n);
    let mut k = b'!';
    let mut l = b'!';
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for j in 0..n {
        if j % 64 == 63 {
            b.push(b'\n');
            k += 1;
            if k == b'~' {
                k = b'!';
            }
            l = k;
        } else if random {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            b.push((seed % 95) as u8 + b' ');
        } else {
            b.push(l);
            l += 1;
            if l == b'~' {
                l = b'!';
            }
        }
    }
    if let Some(last) = b.last_mut() {
        *last = b'\n';
    }
    b
}

/// Decodes `sendhex` input: pairs of hex digits, blanks ignored.
pub fn hex_to_bin(s: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut hi: Option<u8> = None;
    for &c in s {
        if c.is_ascii_whitespace() {
            continue;
        }
        let d = (c as char)
            .to_digit(16)
            .ok_or_else(|| format!("Illegal Hex char ({})", c as char))? as u8;
        match hi.take() {
            Some(h) => out.push(h << 4 | d),
            None => hi = Some(d),
        }
    }
    if hi.is_some() {
        return Err("Odd number of hex digits".into());
    }
    Ok(out)
}

/// Gzips with the given level, as `-gzipbody`/`-gziplen` do.
pub fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::GzBuilder::new()
        .operating_system(3)
        .write(Vec::new(), flate2::Compression::new(level.min(9)));
    // Writing into a Vec cannot fail.
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// A connection: TCP or Unix-domain (servers and clients may use
/// `-listen /path` / `-connect /path`).
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix-domain socket.
    Unix(UnixStream),
}

impl Stream {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(d),
            Stream::Unix(s) => s.set_read_timeout(d),
        }
    }

    /// Shuts down the sending side (how a server ends a connection).
    pub fn shutdown_write(&self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }

    /// The peer's address and port (`0.0.0.0`/`0` for Unix sockets, as
    /// varnishtest reports them).
    pub fn peer(&self) -> (String, String) {
        match self {
            Stream::Tcp(s) => match s.peer_addr() {
                Ok(a) => (a.ip().to_string(), a.port().to_string()),
                Err(_) => ("0.0.0.0".into(), "0".into()),
            },
            Stream::Unix(_) => ("0.0.0.0".into(), "0".into()),
        }
    }
}

impl Stream {
    /// For a Unix-domain connection, the socket's path (the server's
    /// listening path on either side), as varnishtest's `remote.path`.
    pub fn path(&self) -> Option<String> {
        match self {
            Stream::Tcp(_) => None,
            Stream::Unix(s) => {
                let named = |a: std::io::Result<std::os::unix::net::SocketAddr>| {
                    a.ok()
                        .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                };
                named(s.peer_addr()).or_else(|| named(s.local_addr()))
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// A listening socket: TCP or Unix-domain.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix-domain socket.
    Unix(UnixListener),
}

impl Listener {
    fn raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }

    fn try_accept(&self) -> std::io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                l.set_nonblocking(true)?;
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                let _ = s.set_nodelay(true);
                Ok(Stream::Tcp(s))
            }
            Listener::Unix(l) => {
                l.set_nonblocking(true)?;
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                Ok(Stream::Unix(s))
            }
        }
    }
}

enum ReadRes {
    Data,
    Eof,
    Failed(String),
}

/// One connection's state, shared by client and server specs.
pub struct Session<'a> {
    ctx: &'a Ctx,
    id: String,
    /// The connection; `None` after `close`.
    pub stream: Option<Stream>,
    listener: Option<&'a Listener>,
    cancel: Option<&'a AtomicBool>,
    is_server: bool,
    timeout: Duration,
    fatal: bool,
    pending: Vec<u8>,
    req: Msg,
    resp: Msg,
    body: Option<Vec<u8>>,
    bodylen: Option<String>,
    chunklen: Option<String>,
    head_method: bool,
    gziplevel: u32,
    rem_ip: String,
    rem_port: String,
    rem_path: Option<String>,
}

impl<'a> Session<'a> {
    /// A session on `stream`. `listener` is the server's socket (for
    /// `accept`); `cancel` stops this session only (`server -break`).
    pub fn new(
        ctx: &'a Ctx,
        id: &str,
        stream: Stream,
        listener: Option<&'a Listener>,
        cancel: Option<&'a AtomicBool>,
    ) -> Session<'a> {
        let (rem_ip, rem_port) = stream.peer();
        let rem_path = stream.path();
        Session {
            ctx,
            id: id.to_string(),
            stream: Some(stream),
            is_server: listener.is_some(),
            listener,
            cancel,
            timeout: ctx.session_timeout(),
            fatal: true,
            pending: Vec::new(),
            req: Msg::default(),
            resp: Msg::default(),
            body: None,
            bodylen: None,
            chunklen: None,
            head_method: false,
            gziplevel: 0,
            rem_ip,
            rem_port,
            rem_path,
        }
    }

    /// Takes the connection back (for keep-alive across repeats).
    pub fn into_stream(self) -> Option<Stream> {
        self.stream
    }

    fn cancelled(&self) -> bool {
        self.ctx.stopped() || self.cancel.is_some_and(|c| c.load(Ordering::SeqCst))
    }

    fn log(&self, lvl: i32, msg: &str) {
        self.ctx.log.log(lvl, &self.id, msg);
    }

    fn dump(&self, pfx: &str, data: &[u8]) {
        self.ctx.log.dump(4, &self.id, pfx, data);
    }

    /// A protocol error: fatal unless `non_fatal` is in force.
    fn err(&self, msg: impl AsRef<str>) -> R<()> {
        if self.fatal {
            Err(self.ctx.fatal(&self.id, msg))
        } else {
            self.log(-1, msg.as_ref());
            Ok(())
        }
    }

    fn hard(&self, msg: impl AsRef<str>) -> Abort {
        self.ctx.fatal(&self.id, msg)
    }

    /// Reads more bytes into `pending`, waiting at most the session timeout.
    fn read_more(&mut self) -> R<ReadRes> {
        let deadline = Instant::now() + self.timeout;
        let mut buf = [0u8; 16384];
        loop {
            if self.cancelled() {
                return Err(Abort);
            }
            let now = Instant::now();
            let Some(s) = self.stream.as_mut() else {
                // varnishtest polls a closed descriptor (-1): nothing ever
                // arrives, so the read times out.
                self.ctx.sleep(deadline.saturating_duration_since(now))?;
                return Ok(ReadRes::Failed(format!(
                    "HTTP rx timeout ({} ms)",
                    self.timeout.as_millis()
                )));
            };
            if now >= deadline {
                return Ok(ReadRes::Failed(format!(
                    "HTTP rx timeout ({} ms)",
                    self.timeout.as_millis()
                )));
            }
            let _ = s.set_read_timeout(Some(
                (deadline - now).clamp(Duration::from_millis(1), SLICE),
            ));
            match s.read(&mut buf) {
                Ok(0) => return Ok(ReadRes::Eof),
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    return Ok(ReadRes::Data);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Ok(ReadRes::Failed(format!("HTTP rx failed ({e})"))),
            }
        }
    }

    /// Gets exactly `n` bytes. `Ok(None)` after a logged non-fatal error;
    /// with `eof_ok`, a clean EOF returns what was read so far.
    fn rx_bytes(&mut self, n: usize, eof_ok: bool) -> R<Option<Vec<u8>>> {
        while self.pending.len() < n {
            match self.read_more()? {
                ReadRes::Data => {}
                ReadRes::Eof if eof_ok => {
                    return Ok(Some(std::mem::take(&mut self.pending)));
                }
                ReadRes::Eof => {
                    self.err(format!("HTTP rx EOF (wanted {n} bytes)"))?;
                    return Ok(None);
                }
                ReadRes::Failed(m) => {
                    self.err(m)?;
                    return Ok(None);
                }
            }
        }
        let rest = self.pending.split_off(n);
        Ok(Some(std::mem::replace(&mut self.pending, rest)))
    }

    /// Receives one head, up to and including the empty line.
    fn rx_head(&mut self) -> R<Vec<u8>> {
        self.body = None;
        self.bodylen = None;
        let mut head = Vec::new();
        let mut s = 0u8;
        let mut complete = false;
        'outer: loop {
            while !self.pending.is_empty() {
                let c = self.pending.remove(0);
                head.push(c);
                s = match (s, c) {
                    (0, b'\r') => 1,
                    (0 | 1, b'\n') => 2,
                    (2, b'\r') => 3,
                    (2 | 3, b'\n') => {
                        complete = true;
                        break 'outer;
                    }
                    _ => 0,
                };
                if self.pending.is_empty() {
                    break;
                }
            }
            match self.read_more()? {
                ReadRes::Data => {}
                ReadRes::Eof => break,
                ReadRes::Failed(m) => {
                    self.log(3, &m);
                    break;
                }
            }
        }
        self.dump("rxhdr", &head);
        self.log(4, &format!("rxhdrlen = {}", head.len()));
        if !complete {
            self.err("HTTP header is incomplete")?;
        }
        self.body = Some(Vec::new());
        Ok(head)
    }

    /// One chunk: its size line, data, CRLF. Returns the size, or `None`
    /// after an error.
    fn rx_chunk(&mut self) -> R<Option<usize>> {
        let mut line = Vec::new();
        loop {
            let Some(b) = self.rx_bytes(1, false)? else {
                return Ok(None);
            };
            line.extend_from_slice(&b);
            if b == b"\n" {
                break;
            }
        }
        self.dump("len", &line);
        let text = String::from_utf8_lossy(&line);
        let t = text.trim_start();
        let t = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        let digits: String = t.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        let after = t[digits.len()..].chars().next();
        let ok = !digits.is_empty() && after.is_none_or(|c| c.is_ascii_whitespace());
        let n = usize::from_str_radix(&digits, 16).unwrap_or(0);
        self.chunklen = Some(n.to_string());
        if !ok {
            self.err(format!("Chunklen fail ({:?})", text))?;
            return Ok(None);
        }
        if n > 0 {
            let Some(data) = self.rx_bytes(n, false)? else {
                return Ok(None);
            };
            self.dump("chunk", &data);
            if let Some(b) = self.body.as_mut() {
                b.extend_from_slice(&data);
            }
        }
        let Some(end) = self.rx_bytes(2, false)? else {
            return Ok(None);
        };
        if !(end == b"\r\n" || end[0] == b'\n') {
            self.err("Chunklen without CRLF")?;
            return Ok(None);
        }
        Ok(Some(n))
    }

    fn swallow_body(&mut self, is_req: bool, to_eof: bool, max: usize) -> R<()> {
        let msg = if is_req { &self.req } else { &self.resp };
        let te = msg.header("transfer-encoding").map(|v| v.to_vec());
        let cl = msg
            .header("content-length")
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let start = self.body.as_ref().map_or(0, Vec::len);
        if self.body.is_none() {
            self.body = Some(Vec::new());
        }
        let kind;
        if te
            .as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"))
        {
            if cl.is_some() {
                return self.err("Both C-E: Chunked and C-L");
            }
            kind = "chunked";
            while let Some(n) = self.rx_chunk()? {
                if n == 0 {
                    break;
                }
                let got = self.body.as_ref().map_or(0, Vec::len) - start;
                if max > 0 && got >= max {
                    break;
                }
            }
        } else if let Some(cl) = cl {
            kind = "c-l";
            let total = crate::expect::strtoul(&cl) as usize;
            let mut want = total.saturating_sub(start);
            if max > 0 && total > start + max {
                want = max;
            }
            if let Some(data) = self.rx_bytes(want, false)? {
                if let Some(b) = self.body.as_mut() {
                    b.extend_from_slice(&data);
                }
            } else {
                return Ok(());
            }
        } else if to_eof {
            kind = "eof";
            loop {
                let got = self.body.as_ref().map_or(0, Vec::len) - start;
                if max > 0 && got >= max {
                    break;
                }
                if !self.pending.is_empty() {
                    let take = if max > 0 {
                        (max - got).min(self.pending.len())
                    } else {
                        self.pending.len()
                    };
                    let rest = self.pending.split_off(take);
                    let data = std::mem::replace(&mut self.pending, rest);
                    if let Some(b) = self.body.as_mut() {
                        b.extend_from_slice(&data);
                    }
                    continue;
                }
                match self.read_more()? {
                    ReadRes::Data => {}
                    ReadRes::Eof => break,
                    ReadRes::Failed(m) => return self.err(m),
                }
            }
        } else {
            kind = "none";
        }
        let body = self.body.clone().unwrap_or_default();
        self.dump(kind, &body[start.min(body.len())..]);
        self.bodylen = Some(body.len().to_string());
        self.log(4, &format!("bodylen = {}", body.len()));
        Ok(())
    }

    /// Sends TCP out-of-band ("urgent") data, which tests use to check
    /// that the peer ignores it.
    fn send_urgent(&mut self, data: &[u8]) -> R<()> {
        self.dump("send_urgent", data);
        let fd = match self.stream.as_ref() {
            Some(Stream::Tcp(s)) => s.as_raw_fd(),
            Some(Stream::Unix(s)) => s.as_raw_fd(),
            None => return self.err("Write error in http_send_urgent(): connection closed"),
        };
        // SAFETY: `data` is a valid buffer of `data.len()` bytes and `fd`
        // an open socket owned by this session for the whole call.
        let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_OOB) };
        if n < 0 || n as usize != data.len() {
            let e = std::io::Error::last_os_error();
            return self.err(format!("Write error in http_send_urgent(): {e}"));
        }
        Ok(())
    }

    fn write_all(&mut self, what: &str, data: &[u8]) -> R<()> {
        self.dump(what, data);
        let r = match self.stream.as_mut() {
            Some(s) => s.write_all(data),
            None => Err(std::io::Error::new(
                ErrorKind::NotConnected,
                "connection closed",
            )),
        };
        if let Err(e) = r {
            return self.err(format!("Write failed: {e}"));
        }
        Ok(())
    }

    /// The common txreq/txresp options after the first line: headers, then
    /// body options. Returns the index of the first unused argument.
    fn tx_args(
        &mut self,
        out: &mut Vec<u8>,
        av: &[Vec<u8>],
        mut i: usize,
        mut body: Option<Vec<u8>>,
        mut nohost: bool,
    ) -> R<usize> {
        let mut nolen = false;
        let missing = |s: &Self, o: &[u8]| {
            s.hard(format!(
                "Missing argument to {}",
                String::from_utf8_lossy(o)
            ))
        };
        while i < av.len() {
            match av[i].as_slice() {
                b"-nolen" => nolen = true,
                b"-nohost" => nohost = true,
                b"-nodate" | b"-noserver" => {}
                b"-hdr" => {
                    let h = av.get(i + 1).ok_or_else(|| missing(self, b"-hdr"))?;
                    if h.len() >= 5 && h[..5].eq_ignore_ascii_case(b"Host:") {
                        nohost = true;
                    }
                    out.extend_from_slice(h);
                    out.extend_from_slice(b"\r\n");
                    i += 1;
                }
                b"-hdrlen" => {
                    let (Some(n), Some(l)) = (av.get(i + 1), av.get(i + 2)) else {
                        return Err(missing(self, b"-hdrlen"));
                    };
                    out.extend_from_slice(n);
                    out.extend_from_slice(b": ");
                    let mut l = String::from_utf8_lossy(l)
                        .trim()
                        .parse::<i64>()
                        .unwrap_or(0);
                    while l > 0 {
                        l -= 1;
                        out.push(b'0' + (l % 10) as u8);
                    }
                    out.extend_from_slice(b"\r\n");
                    i += 2;
                }
                _ => break,
            }
            i += 1;
        }
        while i < av.len() {
            let arg = |s: &Self| av.get(i + 1).cloned().ok_or_else(|| missing(s, &av[i]));
            match av[i].as_slice() {
                b"-body" => {
                    let a = arg(self)?;
                    let mut b = Vec::with_capacity(a.len());
                    let mut k = 0;
                    while k < a.len() {
                        if a[k] == b'\\' && a.get(k + 1) == Some(&b'0') {
                            b.push(0);
                            k += 2;
                            if let Some(&c) = a.get(k) {
                                b.push(c);
                                k += 1;
                            }
                        } else {
                            b.push(a[k]);
                            k += 1;
                        }
                    }
                    body = Some(b);
                }
                b"-bodyfrom" => {
                    let a = arg(self)?;
                    let p = String::from_utf8_lossy(&a).into_owned();
                    match std::fs::read(self.ctx.tmpdir.join(&p)) {
                        Ok(b) => body = Some(b),
                        Err(e) => return Err(self.hard(format!("-bodyfrom {p}: {e}"))),
                    }
                }
                b"-bodylen" => {
                    let a = arg(self)?;
                    let n = crate::expect::strtoul(&String::from_utf8_lossy(&a)) as usize;
                    body = Some(synth_body(n, false));
                }
                b"-gzipresidual" => {
                    arg(self)?;
                }
                b"-gziplevel" => {
                    let a = arg(self)?;
                    self.gziplevel = crate::expect::strtoul(&String::from_utf8_lossy(&a)) as u32;
                }
                b"-gziplen" => {
                    let a = arg(self)?;
                    let n = crate::expect::strtoul(&String::from_utf8_lossy(&a)) as usize;
                    let z = gzip(&synth_body(n, true), self.gziplevel);
                    self.bodylen = Some(z.len().to_string());
                    body = Some(z);
                    out.extend_from_slice(b"Content-Encoding: gzip\r\n");
                }
                b"-gzipbody" => {
                    let a = arg(self)?;
                    let z = gzip(&a, self.gziplevel);
                    self.bodylen = Some(z.len().to_string());
                    body = Some(z);
                    out.extend_from_slice(b"Content-Encoding: gzip\r\n");
                }
                _ => break,
            }
            i += 2;
        }
        if !nohost {
            let lh = crate::ctx::lock(&self.ctx.macros)
                .get("localhost")
                .unwrap_or("127.0.0.1")
                .to_string();
            out.extend_from_slice(format!("Host: {lh}\r\n").as_bytes());
        }
        if let Some(b) = &body {
            if !nolen {
                out.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
        if let Some(b) = body {
            out.extend_from_slice(&b);
        }
        Ok(i)
    }

    fn only(&self, server: bool, name: &str) -> R<()> {
        if self.is_server != server {
            return Err(self.hard(format!(
                "\"{name}\" only possible in {}",
                if server { "server" } else { "client" }
            )));
        }
        Ok(())
    }

    fn no_args(&self, av: &[Vec<u8>]) -> R<()> {
        if let Some(a) = av.get(1) {
            return Err(self.hard(format!(
                "Unknown http {} spec: {}",
                String::from_utf8_lossy(&av[0]),
                String::from_utf8_lossy(a)
            )));
        }
        Ok(())
    }

    fn arg1<'b>(&self, av: &'b [Vec<u8>]) -> R<&'b [u8]> {
        match av.get(1) {
            Some(a) => Ok(a),
            None => Err(self.hard(format!(
                "{}: missing argument",
                String::from_utf8_lossy(&av[0])
            ))),
        }
    }

    fn resolve(&self, spec: &str) -> Option<String> {
        let lossy = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        let body_str = |b: &Option<Vec<u8>>| match b {
            Some(b) => {
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                Some(lossy(&b[..end]))
            }
            None => Some(spec.to_string()),
        };
        match spec {
            "remote.ip" => Some(self.rem_ip.clone()),
            "remote.port" => Some(self.rem_port.clone()),
            "remote.path" => self.rem_path.clone(),
            "req.method" => self.req.first[0].as_deref().map(lossy),
            "req.url" => self.req.first[1].as_deref().map(lossy),
            "req.proto" => self.req.first[2].as_deref().map(lossy),
            "resp.proto" => self.resp.first[0].as_deref().map(lossy),
            "resp.status" => self.resp.first[1].as_deref().map(lossy),
            "resp.reason" => self.resp.first[2].as_deref().map(lossy),
            "resp.chunklen" => Some(self.chunklen.clone().unwrap_or_else(|| "<undef>".into())),
            "req.bodylen" | "resp.bodylen" => {
                Some(self.bodylen.clone().unwrap_or_else(|| "<undef>".into()))
            }
            "req.body" | "resp.body" => body_str(&self.body),
            "h2.state" => Some("false".into()),
            _ => {
                if let Some(h) = spec.strip_prefix("req.http.") {
                    self.req.header(h).map(lossy)
                } else if let Some(h) = spec.strip_prefix("resp.http.") {
                    self.resp.header(h).map(lossy)
                } else {
                    Some(spec.to_string())
                }
            }
        }
    }

    /// Runs the commands of a spec on this session.
    pub fn process(&mut self, cmds: &[Command]) -> R<()> {
        for c in cmds {
            if self.cancelled() {
                return Err(Abort);
            }
            let c = {
                let m = crate::ctx::lock(&self.ctx.macros);
                c.expand(&m)
            };
            let c = c.map_err(|e| self.hard(e.to_string()))?;
            let av: Vec<Vec<u8>> = c.tokens.iter().map(|t| t.bytes.clone()).collect();
            let name = String::from_utf8_lossy(&av[0]).into_owned();
            self.log(4, &format!("cmd line {}: {}", c.line, name));
            if name == "loop" {
                let n = av
                    .get(1)
                    .map_or(0, |a| crate::expect::strtoul(&String::from_utf8_lossy(a)));
                let Some(spec) = c.tokens.get(2) else {
                    return Err(self.hard("loop: missing spec"));
                };
                let inner =
                    tokenize(&spec.bytes, spec.line).map_err(|e| self.hard(e.to_string()))?;
                for i in 0..n {
                    self.log(4, &format!("Loop #{i}"));
                    self.process(&inner)?;
                }
                continue;
            }
            self.command(&name, &av)?;
        }
        Ok(())
    }

    fn command(&mut self, name: &str, av: &[Vec<u8>]) -> R<()> {
        match name {
            "txreq" => self.txreq(av),
            "txresp" => self.txresp(av),
            "rxreq" => {
                self.only(true, name)?;
                self.no_args(av)?;
                let h = self.rx_head()?;
                self.req = split_head(&h);
                self.log_head(true);
                if self.req.count("Content-Length") > 1 {
                    return Err(self.hard("Multiple Content-Length headers."));
                }
                self.swallow_body(true, false, 0)
            }
            "rxreqhdrs" => {
                self.no_args(av)?;
                let h = self.rx_head()?;
                self.req = split_head(&h);
                self.log_head(true);
                if self.req.count("Content-Length") > 1 {
                    return Err(self.hard("Multiple Content-Length headers."));
                }
                Ok(())
            }
            "rxreqbody" => {
                self.only(true, name)?;
                self.no_args(av)?;
                self.swallow_body(true, false, 0)
            }
            "rxresp" | "rxresphdrs" => {
                self.only(false, name)?;
                let mut has_obj = name == "rxresp";
                for a in &av[1..] {
                    if name == "rxresp" && a == b"-no_obj" {
                        has_obj = false;
                    } else {
                        return Err(self.hard(format!(
                            "Unknown http rxresp spec: {}",
                            String::from_utf8_lossy(a)
                        )));
                    }
                }
                let h = self.rx_head()?;
                self.resp = split_head(&h);
                self.log_head(false);
                if self.resp.count("Content-Length") > 1 {
                    return Err(self.hard("Multiple Content-Length headers."));
                }
                if !has_obj
                    || self.resp.first[0].is_none()
                    || self.resp.first[1].is_none()
                    || self.head_method
                {
                    return Ok(());
                }
                let is200 = self.resp.first[1].as_deref() == Some(b"200");
                self.swallow_body(false, is200, 0)
            }
            "rxrespbody" => {
                self.only(false, name)?;
                let mut max = 0;
                let mut i = 1;
                while i < av.len() {
                    if av[i] == b"-max" {
                        max = av.get(i + 1).map_or(0, |a| {
                            crate::expect::strtoul(&String::from_utf8_lossy(a)) as usize
                        });
                        i += 2;
                    } else {
                        return Err(self.hard(format!(
                            "Unknown http rxrespbody spec: {}",
                            String::from_utf8_lossy(&av[i])
                        )));
                    }
                }
                self.swallow_body(false, true, max)
            }
            "rxchunk" => {
                self.only(false, name)?;
                if let Some(0) = self.rx_chunk()? {
                    let l = self.body.as_ref().map_or(0, Vec::len);
                    self.bodylen = Some(l.to_string());
                    self.log(4, &format!("bodylen = {l}"));
                }
                Ok(())
            }
            "expect" => self.expect(av),
            "expect_close" => self.expect_close(),
            "expect_pattern" => {
                let body = self.body.clone().unwrap_or_default();
                let mut t = b'0';
                for (i, &c) in body.iter().take_while(|&&c| c != 0).enumerate() {
                    if c != t {
                        return Err(self.hard(format!(
                            "EXPECT PATTERN FAIL @{i} should 0x{t:02x} is 0x{c:02x}"
                        )));
                    }
                    t = t.wrapping_add(1) & !0x08;
                }
                self.log(4, "EXPECT PATTERN SUCCESS");
                Ok(())
            }
            "send" => {
                let a = self.arg1(av)?.to_vec();
                self.write_all("send", &a)
            }
            "send_n" => {
                let n = crate::expect::strtoul(&String::from_utf8_lossy(self.arg1(av)?));
                let Some(d) = av.get(2).cloned() else {
                    return Err(self.hard("send_n: missing argument"));
                };
                for _ in 0..n {
                    self.write_all("send_n", &d)?;
                }
                Ok(())
            }
            "send_urgent" => {
                let a = self.arg1(av)?.to_vec();
                self.send_urgent(&a)
            }
            "sendhex" => {
                let a = self.arg1(av)?;
                let b = hex_to_bin(a).map_err(|e| self.hard(e))?;
                self.write_all("sendhex", &b)
            }
            "recv" => {
                let n = crate::expect::strtoul(&String::from_utf8_lossy(self.arg1(av)?)) as usize;
                if let Some(b) = self.rx_bytes(n, false)? {
                    self.dump("recv", &b);
                }
                Ok(())
            }
            "chunked" => {
                let a = self.arg1(av)?.to_vec();
                let mut out = format!("{:x}\r\n", a.len()).into_bytes();
                out.extend_from_slice(&a);
                out.extend_from_slice(b"\r\n");
                self.write_all("chunked", &out)
            }
            "chunkedlen" => {
                let n = String::from_utf8_lossy(self.arg1(av)?)
                    .trim()
                    .parse::<i64>()
                    .unwrap_or(0)
                    .max(0) as usize;
                let out = if n == 0 {
                    b"0\r\n\r\n".to_vec()
                } else {
                    let mut o = format!("{n:x}\r\n").into_bytes();
                    o.extend((0..n).map(|u| ((u % 16384) & 7) as u8 + b'0'));
                    o.extend_from_slice(b"\r\n");
                    o
                };
                self.write_all("chunked", &out)
            }
            "timeout" => {
                let a = String::from_utf8_lossy(self.arg1(av)?).into_owned();
                let d = crate::expect::vnum(&a);
                if d.is_nan() || d < 0.0 {
                    return Err(self.hard(format!("timeout is not a number ({a})")));
                }
                self.timeout = Duration::from_secs_f64(d);
                Ok(())
            }
            "close" => {
                self.only(true, name)?;
                self.stream = None;
                self.pending.clear();
                self.log(4, "Closed");
                Ok(())
            }
            "accept" => {
                self.only(true, name)?;
                self.stream = None;
                self.pending.clear();
                self.log(4, "Accepting");
                let Some(l) = self.listener else {
                    return Err(self.hard("accept: no listening socket"));
                };
                let s = accept(self.ctx, l, self.cancel)?;
                match s {
                    Ok(s) => {
                        (self.rem_ip, self.rem_port) = s.peer();
                        self.stream = Some(s);
                        self.log(3, "Accepted socket");
                        Ok(())
                    }
                    Err(e) => self.err(format!("Accepted failed: {e}")),
                }
            }
            "fatal" => {
                self.fatal = true;
                Ok(())
            }
            "non_fatal" => {
                self.fatal = false;
                Ok(())
            }
            "gunzip" => self.gunzip(),
            "write_body" => {
                let p = String::from_utf8_lossy(self.arg1(av)?).into_owned();
                let b = self.body.clone().unwrap_or_default();
                std::fs::write(self.ctx.tmpdir.join(&p), b)
                    .map_err(|e| self.hard(format!("write_body {p}: {e}")))
            }
            "txpri" | "rxpri" | "stream" | "settings" | "upgrade" => Err(self.ctx.skip(
                &self.id,
                &format!("HTTP/2 command {name} is not supported; skipping test"),
            )),
            _ => {
                let args: Vec<String> = av
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                match misc::global_cmd(self.ctx, &self.id, &args) {
                    Some(r) => r,
                    None => Err(self.hard(format!("Unknown command: \"{name}\""))),
                }
            }
        }
    }

    fn log_head(&self, req: bool) {
        let m = if req { &self.req } else { &self.resp };
        let mut n = 0;
        for f in &m.first {
            let v = f
                .as_deref()
                .map_or("(null)".into(), String::from_utf8_lossy);
            self.log(4, &format!("http[{n:2}] |{v}"));
            n += 1;
        }
        for h in &m.headers {
            self.log(4, &format!("http[{n:2}] |{}", String::from_utf8_lossy(h)));
            n += 1;
        }
    }

    fn txreq(&mut self, av: &[Vec<u8>]) -> R<()> {
        self.only(false, "txreq")?;
        let mut method: &[u8] = b"GET";
        let mut url: &[u8] = b"/";
        let mut proto: &[u8] = b"HTTP/1.1";
        self.head_method = false;
        let mut i = 1;
        while i < av.len() {
            let Some(v) = av.get(i + 1) else { break };
            match av[i].as_slice() {
                b"-url" => url = v,
                b"-proto" => proto = v,
                b"-method" | b"-req" => {
                    method = v;
                    self.head_method = v == b"HEAD";
                }
                _ => break,
            }
            i += 2;
        }
        let mut out = Vec::new();
        out.extend_from_slice(method);
        out.push(b' ');
        out.extend_from_slice(url);
        out.push(b' ');
        out.extend_from_slice(proto);
        out.extend_from_slice(b"\r\n");
        let nohost = proto != b"HTTP/1.1";
        let i = self.tx_args(&mut out, av, i, None, nohost)?;
        if let Some(a) = av.get(i) {
            return Err(self.hard(format!(
                "Unknown http txreq spec: {}",
                String::from_utf8_lossy(a)
            )));
        }
        self.write_all("txreq", &out)
    }

    fn txresp(&mut self, av: &[Vec<u8>]) -> R<()> {
        self.only(true, "txresp")?;
        let mut proto: &[u8] = b"HTTP/1.1";
        let mut status: &[u8] = b"200";
        let mut reason: &[u8] = b"OK";
        let mut i = 1;
        while i < av.len() {
            let Some(v) = av.get(i + 1) else { break };
            match av[i].as_slice() {
                b"-proto" => proto = v,
                b"-status" => status = v,
                b"-reason" => reason = v,
                _ => break,
            }
            i += 2;
        }
        let mut out = Vec::new();
        out.extend_from_slice(proto);
        out.push(b' ');
        out.extend_from_slice(status);
        out.push(b' ');
        out.extend_from_slice(reason);
        out.extend_from_slice(b"\r\n");
        let i = self.tx_args(&mut out, av, i, Some(Vec::new()), true)?;
        if let Some(a) = av.get(i) {
            return Err(self.hard(format!(
                "Unknown http txresp spec: {}",
                String::from_utf8_lossy(a)
            )));
        }
        self.write_all("txresp", &out)
    }

    fn expect(&mut self, av: &[Vec<u8>]) -> R<()> {
        if av.len() != 4 {
            return Err(self.hard("expect: needs exactly three arguments"));
        }
        let s = |i: usize| String::from_utf8_lossy(&av[i]).into_owned();
        let (l, op, r) = (s(1), s(2), s(3));
        let lv = self.resolve(&l);
        let rv = self.resolve(&r);
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "<undef>".into());
        match compare(lv.as_deref(), &op, rv.as_deref()) {
            ExpectResult::Match => {
                self.log(
                    4,
                    &format!("EXPECT {l} ({}) {op} \"{}\" match", show(&lv), show(&rv)),
                );
                Ok(())
            }
            ExpectResult::Fail => Err(self.hard(format!(
                "EXPECT {l} ({}) {op} \"{}\" failed",
                show(&lv),
                show(&rv)
            ))),
            ExpectResult::Error(e) => Err(self.hard(format!("EXPECT {l} {op} {r}: {e}"))),
        }
    }

    fn expect_close(&mut self) -> R<()> {
        self.log(4, "Expecting close");
        loop {
            while let Some(&c) = self.pending.first() {
                if matches!(c, b' ' | b'\t' | b'\r' | b'\n') {
                    self.pending.remove(0);
                } else {
                    return self.err(format!("Expecting close: read = 1, c = 0x{c:02x}"));
                }
            }
            match self.read_more()? {
                ReadRes::Data => {}
                ReadRes::Eof => break,
                ReadRes::Failed(m) if m.starts_with("HTTP rx timeout") => {
                    return self.err("Expected close: timeout");
                }
                ReadRes::Failed(_) => break,
            }
        }
        self.log(4, "EOF, as expected");
        Ok(())
    }

    fn gunzip(&mut self) -> R<()> {
        let body = self.body.clone().unwrap_or_default();
        if body.len() < 2 || body[0] != 0x1f || body[1] != 0x8b {
            self.err("Gunzip error: body lacks gzip magic")?;
        }
        let mut d = flate2::read::GzDecoder::new(&body[..]);
        let mut out = Vec::new();
        if let Err(e) = d.read_to_end(&mut out) {
            self.err(format!("Gunzip error: {e}"))?;
        }
        self.log(3, &format!("new bodylen {}", out.len()));
        self.dump("body", &out);
        self.bodylen = Some(out.len().to_string());
        self.body = Some(out);
        Ok(())
    }
}

/// Accepts one connection, giving up when the test (or `cancel`) stops.
/// The outer `R` is the abort; the inner result the accept error.
pub fn accept(ctx: &Ctx, l: &Listener, cancel: Option<&AtomicBool>) -> R<std::io::Result<Stream>> {
    loop {
        if ctx.stopped() || cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
            return Err(Abort);
        }
        match l.try_accept() {
            Ok(s) => return Ok(Ok(s)),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                let mut pfd = libc::pollfd {
                    fd: l.raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for a descriptor we own, for
                // the duration of the call.
                unsafe {
                    libc::poll(&mut pfd, 1, SLICE.as_millis() as libc::c_int);
                }
            }
            Err(e) => return Ok(Err(e)),
        }
    }
}

/// Parses a spec text into commands (for the runner and tests).
pub fn parse(ctx: &Ctx, id: &str, text: &[u8], line: u32) -> R<Vec<Command>> {
    tokenize(text, line).map_err(|e| ctx.fatal(id, e.to_string()))
}
