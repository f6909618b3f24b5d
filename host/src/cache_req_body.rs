//! The client's request body (Varnish's `cache_req_body`): read from the
//! connection only when something needs it, not before `vcl_recv`.
//!
//! - `std.cache_req_body(max)` reads it into memory (failing when it is
//!   longer than `max`); a cached body can be sent to the backend any
//!   number of times (retries, restarts).
//! - Otherwise the first fetch that needs it streams it from the client
//!   to the backend as it arrives; it can be consumed only once.
//! - Whatever nobody read is drained before the response goes out, so
//!   the connection can carry the next request; a body that failed
//!   (client gone, malformed, too big to cache) closes the connection.
//!
//! The connection's read side travels with the body: the session hands it
//! over with the request and takes it back afterwards.
//!
//! A client that sent `Expect: 100-continue` waits for a `100 Continue`
//! before it sends the body (Varnish's `want100cont`): by default it goes
//! out after `vcl_recv` ([`ReqBody::send_continue`]); with
//! `std.late_100_continue(true)` only when something first reads the body,
//! and not at all when nothing does and the connection closes instead.
//! It is written on the client's socket through the read side the body
//! holds: nothing else writes to the client while the body is read.

use crate::cache_http1_proto::BodyFraming;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;

/// The interim response, as Varnish's `minimal_response(req, 100)` writes it.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Why a request body could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("client closed the connection in the body")]
    Closed,
    #[error("timeout_idle passed while reading the body")]
    Timeout,
    #[error("malformed chunked body")]
    BadChunk,
    #[error("I/O: {0}")]
    Io(String),
    #[error("Request body too big to cache")]
    TooBig,
    #[error("Uncached req.body can only be consumed once.")]
    Taken,
    #[error("Had failed reading req.body before.")]
    Failed,
    #[error("req.body must be cached before restarts")]
    NotFirst,
    #[error("the request body is being read elsewhere")]
    Busy,
    #[error("reading req.body from VCL needs the multi-threaded runtime")]
    Runtime,
    #[error("writing 100 Continue: {0}")]
    Continue(String),
}

impl BodyError {
    /// The `FetchError` text Varnish logs for this failure of a body
    /// that came `chunked` or with a Content-Length.
    pub fn vfp_text(&self, chunked: bool) -> String {
        match self {
            BodyError::Closed | BodyError::Timeout | BodyError::Io(_) | BodyError::Continue(_) => {
                if chunked {
                    "chunked read err"
                } else {
                    "straight insufficient bytes"
                }
                .into()
            }
            BodyError::BadChunk => "chunked header number syntax".into(),
            e => e.to_string(),
        }
    }
}

/// The read side of a client connection: the socket, bytes read ahead
/// (a body's start, a pipelined request) and the idle timeout.
pub struct ClientReader {
    pub rd: OwnedReadHalf,
    pub buf: BytesMut,
    pub idle: Duration,
}

impl ClientReader {
    /// Reads more into the buffer within `idle`.
    pub async fn fill(&mut self) -> Result<usize, BodyError> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 << 10);
        }
        match tokio::time::timeout(self.idle, self.rd.read_buf(&mut self.buf)).await {
            Ok(Ok(0)) => Err(BodyError::Closed),
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(BodyError::Io(e.to_string())),
            Err(_) => Err(BodyError::Timeout),
        }
    }

    /// The next line (without its line end) of a chunked body.
    async fn line(&mut self) -> Result<Vec<u8>, BodyError> {
        loop {
            if let Some(i) = self.buf.iter().position(|&c| c == b'\n') {
                let mut l = self.buf.split_to(i + 1).to_vec();
                l.pop();
                if l.last() == Some(&b'\r') {
                    l.pop();
                }
                return Ok(l);
            }
            if self.buf.len() > 4096 {
                return Err(BodyError::BadChunk);
            }
            self.fill().await?;
        }
    }
}

/// Where a body's decoding stands.
enum Decoder {
    /// Bytes left of a Content-Length body.
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Bytes left of the current chunk.
    ChunkData(u64),
    /// Expecting the line end after a chunk.
    ChunkEnd,
    Done,
}

/// A body not read yet, with the connection it comes from.
struct Source {
    reader: ClientReader,
    dec: Decoder,
    /// Shared with its [`Inner`].
    shared: Arc<Shared>,
}

impl Source {
    /// The next piece of the body; `None` at its end (the connection is
    /// then at the next request).
    async fn next(&mut self) -> Result<Option<Bytes>, BodyError> {
        // A client waiting for its `100 Continue` gets it before the first
        // read (Varnish's `vrb_pull`), unless there is nothing to read.
        if self.shared.want.load(Ordering::Relaxed)
            && !matches!(self.dec, Decoder::Done | Decoder::Length(0))
            && self.shared.want.swap(false, Ordering::Relaxed)
        {
            self.shared.send_continue(&self.reader.rd).await?;
        }
        loop {
            match self.dec {
                Decoder::Done | Decoder::Length(0) => {
                    self.dec = Decoder::Done;
                    return Ok(None);
                }
                Decoder::Length(left) | Decoder::ChunkData(left) => {
                    if self.reader.buf.is_empty() {
                        self.reader.fill().await?;
                    }
                    let n = (self.reader.buf.len() as u64).min(left);
                    let piece = self.reader.buf.split_to(n as usize).freeze();
                    self.shared.read.fetch_add(n, Ordering::Relaxed);
                    self.dec = match self.dec {
                        Decoder::Length(_) => Decoder::Length(left - n),
                        _ if left == n => Decoder::ChunkEnd,
                        _ => Decoder::ChunkData(left - n),
                    };
                    return Ok(Some(piece));
                }
                Decoder::ChunkSize => {
                    let line = self.reader.line().await?;
                    let size = line.split(|&c| c == b';').next().unwrap_or_default();
                    let size = std::str::from_utf8(size)
                        .ok()
                        .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                        .ok_or(BodyError::BadChunk)?;
                    if size == 0 {
                        // Trailers, up to the blank line.
                        while !self.reader.line().await?.is_empty() {}
                        self.dec = Decoder::Done;
                    } else {
                        self.dec = Decoder::ChunkData(size);
                    }
                }
                Decoder::ChunkEnd => {
                    if !self.reader.line().await?.is_empty() {
                        return Err(BodyError::BadChunk);
                    }
                    self.dec = Decoder::ChunkSize;
                }
            }
        }
    }
}

/// What VCL and the fetches can know of the body (Varnish's
/// `req_body_status`).
#[derive(Clone, Debug)]
enum Status {
    None,
    Unread,
    Cached(Bytes),
    Taken,
    Error,
}

/// Where the connection's read side is.
enum Place {
    /// Positioned after the body (read, or none at all).
    Idle(ClientReader),
    /// The body is still to be read.
    Unread(Source),
    /// Someone is reading the body now.
    Busy,
    /// Lost: the body failed, or the reader was handed out.
    Gone,
}

struct State {
    status: Status,
    place: Place,
    /// The length the client announced (Content-Length).
    length: Option<u64>,
    chunked: bool,
}

/// What a body's [`Source`] shares with its [`Inner`]: what was read and
/// where the `100 Continue` stands.
struct Shared {
    /// Body bytes (after dechunking) read so far: the request's
    /// `req_bodybytes`.
    read: AtomicU64,
    /// The client waits for a `100 Continue` (Varnish's `want100cont`).
    want: AtomicBool,
    /// ... and it goes out only when the body is read
    /// (`std.late_100_continue(true)`, Varnish's `late100cont`).
    late: AtomicBool,
    /// It went out (its bytes count with the response head's).
    sent: AtomicBool,
    /// It went out and the request's log does not show it yet.
    unlogged: AtomicBool,
    /// The time it may take to write it (`send_timeout`).
    send_timeout: Duration,
}

impl Shared {
    /// Writes the `100 Continue` on the client's socket (through its read
    /// side: the response is not being written while the body is read).
    async fn send_continue(&self, rd: &OwnedReadHalf) -> Result<(), BodyError> {
        let sock: &tokio::net::TcpStream = rd.as_ref();
        let write = async {
            let mut off = 0;
            while off < CONTINUE.len() {
                sock.writable().await?;
                match sock.try_write(&CONTINUE[off..]) {
                    Ok(n) => off += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(self.send_timeout, write).await {
            Ok(Ok(())) => {
                self.sent.store(true, Ordering::Relaxed);
                self.unlogged.store(true, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(e)) => Err(BodyError::Continue(e.to_string())),
            Err(_) => Err(BodyError::Continue("send_timeout".into())),
        }
    }
}

struct Inner {
    state: Mutex<State>,
    shared: Arc<Shared>,
    /// When a fetch or the drain finished reading the body (the bits of
    /// an `f64`, 0 for none): the request logs it as `Timestamp ReqBody`
    /// ([`ReqBody::take_read_done`]), as Varnish's request does whoever
    /// read its body.
    read_done: std::sync::atomic::AtomicU64,
    /// Woken whenever `place` stops being `Busy`. A `Notify` rather than a
    /// watch channel: every request makes one, and few ever wait on it.
    changed: tokio::sync::Notify,
}

/// A request's body; clones share it.
#[derive(Clone, Default)]
pub struct ReqBody(Option<Arc<Inner>>);

/// The body as a fetch sends it.
pub enum FetchBody {
    None,
    /// Cached: sent whole, with its length.
    Bytes(Bytes),
    /// Streamed from the client as it arrives.
    Stream(BodyStream),
}

impl FetchBody {
    /// Whether some of a streamed body has been read (it cannot be sent
    /// again then).
    pub fn started(&self) -> bool {
        matches!(self, FetchBody::Stream(s) if s.started)
    }
}

/// A body being streamed to a backend.
pub struct BodyStream {
    src: Option<Source>,
    home: Arc<Inner>,
    length: Option<u64>,
    started: bool,
}

impl BodyStream {
    /// The length the client announced; `None` for a chunked body.
    pub fn length(&self) -> Option<u64> {
        self.length
    }

    /// The next piece; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, BodyError> {
        let Some(src) = self.src.as_mut() else {
            return Ok(None);
        };
        self.started = true;
        match src.next().await {
            Ok(Some(b)) => Ok(Some(b)),
            Ok(None) => {
                if let Some(src) = self.src.take() {
                    self.home.read_done();
                    self.home.put(Status::Taken, Place::Idle(src.reader));
                }
                Ok(None)
            }
            Err(e) => {
                self.src = None;
                self.home.read_done();
                self.home.put(Status::Error, Place::Gone);
                Err(e)
            }
        }
    }
}

impl Drop for BodyStream {
    fn drop(&mut self) {
        match self.src.take() {
            // Never read from (the fetch failed before sending it): it is
            // still there for another fetch, or to be drained.
            Some(src) if !self.started => self.home.put(Status::Unread, Place::Unread(src)),
            // Abandoned half way: the connection cannot be used again.
            Some(_) => self.home.put(Status::Error, Place::Gone),
            None => {}
        }
    }
}

/// A fetch's hold on the request body: claimed when the fetch starts
/// (so the client side waits for the fetch to be done with it, as
/// Varnish's `BOS_REQ_DONE`), and the body again for retries (which
/// only a cached body allows).
pub struct BereqBody {
    body: ReqBody,
    first: Option<Result<FetchBody, BodyError>>,
}

impl BereqBody {
    /// Claims `body` for a fetch.
    pub fn claim(body: &ReqBody) -> BereqBody {
        BereqBody {
            body: body.clone(),
            first: Some(body.for_fetch()),
        }
    }

    /// The body for the next attempt to send the backend request.
    pub fn attempt(&mut self) -> Result<FetchBody, BodyError> {
        match self.first.take() {
            Some(r) => r,
            None => self.body.for_fetch(),
        }
    }

    /// Why the backend request cannot be sent again (a retry), if it
    /// cannot: its body was streamed, not cached.
    pub fn no_retry(&self) -> Option<&'static str> {
        self.body.taken().then_some("req.body not cached")
    }
}

impl Inner {
    fn read_done(&self) {
        self.read_done.store(
            crate::vrt_ctx::now().to_bits(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn put(&self, status: Status, place: Place) {
        if let Ok(mut s) = self.state.lock() {
            s.status = status;
            s.place = place;
        }
        self.changed.notify_waiters();
    }

    /// Takes the connection's read side out, wherever it is (marking the
    /// place busy; [`Inner::restore`] puts it back); `None` when it is
    /// gone. Waits while someone reads the body.
    async fn take_place(&self) -> Option<Place> {
        loop {
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.state.lock().ok()?;
                match std::mem::replace(&mut s.place, Place::Busy) {
                    p @ (Place::Idle(_) | Place::Unread(_)) => return Some(p),
                    Place::Busy => {}
                    Place::Gone => {
                        s.place = Place::Gone;
                        return None;
                    }
                }
            }
            notified.await;
        }
    }

    /// Puts back what [`Inner::take_place`] took, the status as it was.
    fn restore(&self, place: Place) {
        if let Ok(mut s) = self.state.lock() {
            s.place = place;
        }
        self.changed.notify_waiters();
    }

    /// Takes the unread body out (marking the place busy), or says what
    /// the status is instead. Waits while someone else reads it.
    async fn take_source(&self) -> Result<Source, Status> {
        loop {
            // Registered before the state is looked at, so a `put` in
            // between is not missed.
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let Ok(mut s) = self.state.lock() else {
                    return Err(Status::Error);
                };
                match std::mem::replace(&mut s.place, Place::Busy) {
                    Place::Unread(src) => return Ok(src),
                    Place::Busy => {}
                    other => {
                        s.place = other;
                        return Err(s.status.clone());
                    }
                }
            }
            notified.await;
        }
    }
}

impl ReqBody {
    /// No body (and no connection behind it): ESI includes, requests
    /// without a body.
    pub fn none() -> ReqBody {
        ReqBody(None)
    }

    /// The body framed by `framing` still to come on `reader`; `cont` is
    /// `send_timeout` when the client waits for a `100 Continue` (it sent
    /// `Expect: 100-continue` and none of the body yet).
    pub fn new(reader: ClientReader, framing: BodyFraming, cont: Option<Duration>) -> ReqBody {
        let read = Arc::new(Shared {
            read: AtomicU64::new(0),
            want: AtomicBool::new(cont.is_some()),
            late: AtomicBool::new(false),
            sent: AtomicBool::new(false),
            unlogged: AtomicBool::new(false),
            send_timeout: cont.unwrap_or_default(),
        });
        let (status, place, length, chunked) = match framing {
            BodyFraming::None | BodyFraming::Length(0) => {
                (Status::None, Place::Idle(reader), None, false)
            }
            BodyFraming::Length(n) => (
                Status::Unread,
                Place::Unread(Source {
                    reader,
                    dec: Decoder::Length(n),
                    shared: read.clone(),
                }),
                Some(n),
                false,
            ),
            BodyFraming::Chunked => (
                Status::Unread,
                Place::Unread(Source {
                    reader,
                    dec: Decoder::ChunkSize,
                    shared: read.clone(),
                }),
                None,
                true,
            ),
        };
        let changed = tokio::sync::Notify::new();
        ReqBody(Some(Arc::new(Inner {
            state: Mutex::new(State {
                status,
                place,
                length,
                chunked,
            }),
            shared: read,
            read_done: std::sync::atomic::AtomicU64::new(0),
            changed,
        })))
    }

    /// When a fetch or the drain finished reading the body, once (the
    /// request's `Timestamp ReqBody`).
    pub fn take_read_done(&self) -> Option<f64> {
        let bits = self
            .0
            .as_ref()?
            .read_done
            .swap(0, std::sync::atomic::Ordering::Relaxed);
        (bits != 0).then(|| f64::from_bits(bits))
    }

    /// Body bytes read from the client so far, whoever read them (a
    /// fetch, `std.cache_req_body`, or the drain before the response):
    /// the request's `req_bodybytes`, as Varnish counts them at the
    /// bottom of its body pipeline (after dechunking).
    pub fn bytes_read(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |i| i.shared.read.load(Ordering::Relaxed))
    }

    /// Whether the client still waits for a `100 Continue`.
    pub fn wants_continue(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|i| i.shared.want.load(Ordering::Relaxed))
    }

    /// `std.late_100_continue(late)`: whether the `100 Continue` waits
    /// until the body is read (no effect when none is wanted).
    pub fn set_late_continue(&self, late: bool) {
        if let Some(i) = &self.0 {
            if i.shared.want.load(Ordering::Relaxed) {
                i.shared.late.store(late, Ordering::Relaxed);
            }
        }
    }

    /// Takes the wish for a `100 Continue` away (a `pipe` passes it on to
    /// the backend); whether there was one.
    pub fn take_continue(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|i| i.shared.want.swap(false, Ordering::Relaxed))
    }

    /// After `vcl_recv`: sends the `100 Continue` the client waits for,
    /// unless it is to wait for the body to be read (Varnish's
    /// `cnt_recv`). `Ok(true)` when it went out (for the caller to log:
    /// [`log_continue`]); an error when the client cannot be written to.
    pub async fn send_continue(&self) -> Result<bool, BodyError> {
        let Some(inner) = &self.0 else {
            return Ok(false);
        };
        let sh = &inner.shared;
        if !sh.want.load(Ordering::Relaxed)
            || sh.late.load(Ordering::Relaxed)
            || !sh.want.swap(false, Ordering::Relaxed)
        {
            return Ok(false);
        }
        let Some(place) = inner.take_place().await else {
            return Err(BodyError::Failed);
        };
        let r = match &place {
            Place::Idle(r) => sh.send_continue(&r.rd).await,
            Place::Unread(src) => sh.send_continue(&src.reader.rd).await,
            Place::Busy | Place::Gone => Err(BodyError::Failed),
        };
        inner.restore(place);
        r?;
        // The caller logs it.
        sh.unlogged.store(false, Ordering::Relaxed);
        Ok(true)
    }

    /// Whether a `100 Continue` went out that the request's log does not
    /// show yet (once).
    pub fn take_continue_unlogged(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|i| i.shared.unlogged.swap(false, Ordering::Relaxed))
    }

    /// The bytes of the `100 Continue`, if one went out: Varnish counts
    /// them with the response head's.
    pub fn continue_bytes(&self) -> u64 {
        let sent = self
            .0
            .as_ref()
            .is_some_and(|i| i.shared.sent.load(Ordering::Relaxed));
        if sent {
            CONTINUE.len() as u64
        } else {
            0
        }
    }

    /// Whether there is a body still to read from the client.
    pub fn is_unread(&self) -> bool {
        matches!(self.status(), Status::Unread)
    }

    fn status(&self) -> Status {
        match &self.0 {
            None => Status::None,
            Some(i) => i.state.lock().map_or(Status::Error, |s| s.status.clone()),
        }
    }

    /// Whether the client sent (or is sending) a body.
    pub fn is_present(&self) -> bool {
        !matches!(self.status(), Status::None)
    }

    /// The length the client announced (Content-Length), if it did.
    pub fn announced(&self) -> Option<u64> {
        self.0
            .as_ref()
            .and_then(|i| i.state.lock().ok().and_then(|s| s.length))
    }

    /// Whether the body was chunked on the wire.
    pub fn was_chunked(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|i| i.state.lock().is_ok_and(|s| s.chunked))
    }

    /// The cached body, if `std.cache_req_body()` read it.
    pub fn cached(&self) -> Option<Bytes> {
        match self.status() {
            Status::Cached(b) => Some(b),
            _ => None,
        }
    }

    /// Whether reading the body failed (the connection is lost).
    pub fn failed(&self) -> bool {
        matches!(self.status(), Status::Error)
    }

    /// Whether the body was streamed to a fetch (and cannot be sent
    /// again: no retry).
    pub fn taken(&self) -> bool {
        matches!(self.status(), Status::Taken)
    }

    /// `std.cache_req_body(max)`: reads the whole body into memory and
    /// returns its length; a body over `max` bytes fails (and the
    /// connection with it). No body is a body of length 0.
    pub async fn cache(&self, max: u64) -> Result<u64, BodyError> {
        let Some(inner) = &self.0 else { return Ok(0) };
        let too_long = inner
            .state
            .lock()
            .is_ok_and(|s| s.length.is_some_and(|n| n > max));
        let mut src = match inner.take_source().await {
            Ok(src) => src,
            Err(Status::None) => return Ok(0),
            Err(Status::Cached(b)) => return Ok(b.len() as u64),
            Err(Status::Taken) => return Err(BodyError::Taken),
            Err(_) => return Err(BodyError::Failed),
        };
        if too_long {
            inner.put(Status::Error, Place::Gone);
            return Err(BodyError::TooBig);
        }
        let mut acc = BytesMut::new();
        loop {
            match src.next().await {
                Ok(Some(b)) => {
                    acc.extend_from_slice(&b);
                    if acc.len() as u64 > max {
                        inner.put(Status::Error, Place::Gone);
                        return Err(BodyError::TooBig);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    inner.put(Status::Error, Place::Gone);
                    return Err(e);
                }
            }
        }
        let n = acc.len() as u64;
        inner.put(Status::Cached(acc.freeze()), Place::Idle(src.reader));
        Ok(n)
    }

    /// [`ReqBody::cache`] from synchronous code (a VCL call): the worker
    /// thread waits, handing its other tasks to the runtime meanwhile.
    pub fn cache_blocking(&self, max: u64) -> Result<u64, BodyError> {
        match self.status() {
            Status::None => return Ok(0),
            Status::Cached(b) => return Ok(b.len() as u64),
            Status::Taken => return Err(BodyError::Taken),
            Status::Error => return Err(BodyError::Failed),
            Status::Unread => {}
        }
        let handle = tokio::runtime::Handle::try_current().map_err(|_| BodyError::Runtime)?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Err(BodyError::Runtime);
        }
        tokio::task::block_in_place(|| handle.block_on(self.cache(max)))
    }

    /// The body for a fetch: the cached bytes, or the unread body to
    /// stream (which only one fetch can have).
    pub fn for_fetch(&self) -> Result<FetchBody, BodyError> {
        let Some(inner) = &self.0 else {
            return Ok(FetchBody::None);
        };
        let Ok(mut s) = inner.state.lock() else {
            return Err(BodyError::Failed);
        };
        match (&s.status, &s.place) {
            (Status::None, _) => return Ok(FetchBody::None),
            (Status::Cached(b), _) => return Ok(FetchBody::Bytes(b.clone())),
            (Status::Taken, _) => return Err(BodyError::Taken),
            (Status::Error, _) => return Err(BodyError::Failed),
            (Status::Unread, Place::Busy) => return Err(BodyError::Busy),
            (Status::Unread, _) => {}
        }
        let Place::Unread(src) = std::mem::replace(&mut s.place, Place::Busy) else {
            s.status = Status::Error;
            s.place = Place::Gone;
            return Err(BodyError::Failed);
        };
        s.status = Status::Taken;
        Ok(FetchBody::Stream(BodyStream {
            src: Some(src),
            home: inner.clone(),
            length: s.length,
            started: false,
        }))
    }

    /// Ends the body's part in the request: waits for a fetch still
    /// streaming it, reads and drops what nobody read (Varnish's
    /// `VRB_Ignore`), and hands back the connection's read side, or
    /// `None` when the connection cannot carry another request.
    pub async fn finish(&self) -> Option<ClientReader> {
        let inner = self.0.as_ref()?;
        match inner.take_source().await {
            Ok(mut src) => loop {
                match src.next().await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        inner.read_done();
                        inner.put(Status::Error, Place::Gone);
                        return Some(src.reader);
                    }
                    Err(_) => {
                        inner.read_done();
                        inner.put(Status::Error, Place::Gone);
                        return None;
                    }
                }
            },
            Err(_) => {
                let mut s = inner.state.lock().ok()?;
                s.status = Status::Error;
                match std::mem::replace(&mut s.place, Place::Gone) {
                    Place::Idle(r) => Some(r),
                    _ => None,
                }
            }
        }
    }

    /// The connection's read side as it is, the unread body still in it
    /// (for `pipe`, which passes the client's bytes on untouched).
    pub async fn into_reader(&self) -> Option<ClientReader> {
        let inner = self.0.as_ref()?;
        match inner.take_source().await {
            Ok(src) => {
                inner.put(Status::Error, Place::Gone);
                Some(src.reader)
            }
            Err(_) => {
                let mut s = inner.state.lock().ok()?;
                s.status = Status::Error;
                match std::mem::replace(&mut s.place, Place::Gone) {
                    Place::Idle(r) => Some(r),
                    _ => None,
                }
            }
        }
    }
}

/// Logs a `100 Continue` that went out, as Varnish's minimal response
/// does: `RespProtocol`, `RespStatus`, `RespReason`.
pub fn log_continue(b: &mut crate::vsl::Buf) {
    b.log(vapi::Tag::RespProtocol, "HTTP/1.1");
    b.log(vapi::Tag::RespStatus, "100");
    b.log(vapi::Tag::RespReason, "Continue");
}
