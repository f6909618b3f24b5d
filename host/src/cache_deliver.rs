//! Delivery of a response body to the client (Varnish's
//! `cache_deliver_proc` and the transmit step of `cache_req_fsm`): which
//! delivery processors run (`esi`, `gunzip`, `range`, or `resp.filters`),
//! what they do to the response headers and its length, and the body
//! itself: bytes made here, or an object's body followed chunk by chunk
//! while its fetch may still be running, gunzipped and cut to a range on
//! the way.

use crate::cache_esi::EsiJob;
use crate::cache_gzip::Gunzipper;
use crate::cache_obj::{hdr_get, hdr_set, hdr_unset, Headers, Object, Progress};
use crate::cache_req_fsm::ReplyBody;
use crate::vrt_ctx::RespMsg;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

type ChunkFuture = Pin<Box<dyn Future<Output = Result<Option<Bytes>, ()>> + Send>>;

/// The processors after the source of a filtered body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vdp {
    /// Inflate a gzipped body.
    pub gunzip: bool,
    /// Send only bytes `low..=high`.
    pub range: Option<(u64, u64)>,
    /// The length of what comes out, when known (`Content-Length`).
    pub len: Option<u64>,
}

/// The delivery processors `resp.filters` may name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Filters {
    esi: bool,
    gunzip: bool,
    range: bool,
}

fn parse_filters(s: &str) -> Result<Filters, String> {
    let mut f = Filters::default();
    for n in s.split_ascii_whitespace() {
        match n {
            "esi" => f.esi = true,
            "gunzip" => f.gunzip = true,
            "range" => f.range = true,
            other => return Err(format!("Filter '{other}' not found")),
        }
    }
    Ok(f)
}

/// What the transmit step needs to know about the request.
pub struct TransmitReq<'a> {
    pub req: &'a Headers,
    pub head: bool,
    pub esi_level: u32,
    /// `req.esi = false` / `resp.do_esi = false`.
    pub disable_esi: bool,
    /// `resp.filters` as VCL set it.
    pub filters: Option<&'a str>,
    pub params: &'a crate::mgt_param::Params,
}

/// What decides the default `resp.filters`.
pub struct FilterWant<'a> {
    pub req: &'a Headers,
    pub disable_esi: bool,
    pub gzip_support: bool,
    pub range_support: bool,
}

/// The default delivery processors (Varnish's `resp_default_filter_list`).
fn default_set(w: &FilterWant<'_>, resp: &RespMsg, obj: &Object) -> Filters {
    Filters {
        esi: !w.disable_esi && obj.can_esi(),
        gunzip: w.gzip_support && obj.gzipped && !crate::cache_gzip::req_accepts_gzip(w.req),
        range: w.range_support && resp.status == 200 && hdr_get(w.req, "range").is_some(),
    }
}

/// The default `resp.filters`, as VCL reads it (" esi gunzip range").
pub fn default_filters(w: &FilterWant<'_>, resp: &RespMsg, obj: &Object) -> String {
    default_set(w, resp, obj).names().to_string()
}

impl Filters {
    /// The list as Varnish writes it: each name behind a space.
    fn names(self) -> &'static str {
        match (self.esi, self.gunzip, self.range) {
            (false, false, false) => "",
            (true, false, false) => " esi",
            (false, true, false) => " gunzip",
            (false, false, true) => " range",
            (true, true, false) => " esi gunzip",
            (true, false, true) => " esi range",
            (false, true, true) => " gunzip range",
            (true, true, true) => " esi gunzip range",
        }
    }
}

/// A response header set during transmit, logged as Varnish logs it
/// (`RespUnset` of what it replaces, `RespHeader`).
fn set_logged(vsl: &mut crate::vsl::Buf, resp: &mut RespMsg, name: &str, value: &str) {
    vsl.replace(crate::vsl::Http::Resp, &resp.headers, name, value);
    hdr_set(&mut resp.headers, name, value);
}

/// A response header removed during transmit (`RespUnset`).
fn unset_logged(vsl: &mut crate::vsl::Buf, resp: &mut RespMsg, name: &str) {
    vsl.unset(crate::vsl::Http::Resp, &resp.headers, name);
    hdr_unset(&mut resp.headers, name);
}

/// A new status line during transmit (206, 416), logged whole as
/// Varnish's `http_PutResponse` does.
fn status_logged(vsl: &mut crate::vsl::Buf, resp: &mut RespMsg, status: u16) {
    resp.status = status;
    resp.reason = crate::cache_http::status_reason(status).into();
    vsl.status_line(crate::vsl::Http::Resp, resp);
}

/// A weak ETag for a body the processors change (`W/` in front).
fn weaken_etag_logged(vsl: &mut crate::vsl::Buf, resp: &mut RespMsg) {
    if let Some(w) = crate::cache_gzip::weak_etag(&resp.headers) {
        set_logged(vsl, resp, "ETag", &w);
    }
}

fn content_length(h: &Headers) -> Option<u64> {
    hdr_get(h, "content-length").and_then(|v| v.trim().parse().ok())
}

/// What Varnish does to an object's response before `vcl_deliver`
/// (`Resp_Setup_Deliver` and `cnt_deliver`): a gzipped object going to a
/// client that cannot take gzip gets a weak ETag, a cacheable 200 the
/// `Accept-Ranges` header.
pub fn setup_deliver(
    resp: &mut RespMsg,
    obj: &Object,
    req: &Headers,
    params: &crate::mgt_param::Params,
) {
    if params.hot().http_gzip_support && obj.gzipped && !crate::cache_gzip::req_accepts_gzip(req) {
        crate::cache_gzip::weaken_etag(&mut resp.headers);
    }
    if params.hot().http_range_support && resp.status == 200 && !obj.private {
        hdr_set(&mut resp.headers, "Accept-Ranges", "bytes");
    }
}

/// The transmit step after `vcl_deliver` (Varnish's `cnt_transmit`):
/// picks the processors, lets each adjust the response (status, ETag,
/// `Content-Encoding`, `Content-Range`), settles `Content-Length`, and
/// returns the body to send and the length to announce for a response
/// without one. `esi_job` makes the ESI job (given whether its output is
/// gzip) when ESI runs. An unknown `resp.filters` name is an error.
/// What it does is logged as in Varnish: `Filters`, then each header
/// and status change.
pub fn transmit(
    r: &TransmitReq<'_>,
    resp: &mut RespMsg,
    obj: &Arc<Object>,
    vsl: &mut crate::vsl::Buf,
    esi_job: impl FnOnce(bool) -> EsiJob,
) -> Result<(ReplyBody, Option<u64>), String> {
    let progress = obj.body.progress();
    let clval = content_length(&resp.headers);
    let mut resp_len = match progress {
        Progress::Done(_) => Some(obj.body.len()),
        _ => clval,
    };
    let status = resp.status;
    let mut sendbody = !(r.head || status < 200 || status == 204 || status == 304);
    let f = match r.filters {
        Some(list) => parse_filters(list)?,
        None => default_set(
            &FilterWant {
                req: r.req,
                disable_esi: r.disable_esi,
                gzip_support: r.params.hot().http_gzip_support,
                range_support: r.params.hot().http_range_support,
            },
            resp,
            obj,
        ),
    };
    match r.filters {
        Some(list) => vsl.log(vapi::Tag::Filters, list),
        None => vsl.log(vapi::Tag::Filters, f.names()),
    }
    let mut vdp = Vdp::default();
    let mut esi = None;
    if f.esi {
        // Varnish's ESI processor declines an object without ESI data.
        if let Some(data) = obj.body.esi() {
            weaken_etag_logged(vsl, resp);
            if resp_len != Some(0) {
                resp_len = None;
            }
            // ESI output is gzip when the object is and no gunzip follows.
            esi = Some(data.gzip && !f.gunzip);
        }
    }
    if f.gunzip {
        unset_logged(vsl, resp, "content-encoding");
        vdp.gunzip = true;
        resp_len = None;
        if esi.is_some() {
            // The ESI processor makes plain output itself.
            vdp.gunzip = false;
        } else if let (Progress::Done(_), Some(n)) =
            (progress, obj.body.attrs().and_then(|a| a.plain_len))
        {
            resp_len = Some(n);
        }
    }
    if f.range {
        if let Some(cut) = range_step(r.req, resp, resp_len, vsl) {
            resp_len = Some(cut.map_or(0, |(low, high)| high - low + 1));
            vdp.range = cut;
        }
    }
    // Content-Length as cnt_transmit settles it.
    let mut head_length = None;
    if status < 200 || status == 204 || status == 304 {
        unset_logged(vsl, resp, "content-length");
    } else if clval.is_some() && clval == resp_len {
        // The header says the truth already.
    } else if r.head && obj.private {
        // A pass of HEAD: the backend's length stands (Varnish leaves
        // it rather than fetching the body to count it).
        head_length = clval;
    } else {
        unset_logged(vsl, resp, "content-length");
        if let Some(n) = resp_len {
            let mut d = [0u8; 20];
            let d = vapi::fmt::fmt_u64(&mut d, n);
            // Digits are ASCII.
            let d = std::str::from_utf8(d).unwrap_or("0");
            vsl.header(crate::vsl::Http::Resp, "Content-Length", d);
            hdr_set(&mut resp.headers, "Content-Length", d);
        }
    }
    if r.head && head_length.is_none() {
        head_length = content_length(&resp.headers);
    }
    if resp_len == Some(0) {
        sendbody = false;
    }
    if !sendbody {
        return Ok((ReplyBody::Bytes(Bytes::new()), head_length));
    }
    vdp.len = resp_len;
    let body = match esi {
        Some(gzip_out) => ReplyBody::Esi(Box::new(esi_job(gzip_out))),
        None => ReplyBody::Object(obj.clone()),
    };
    let plain_whole = !vdp.gunzip && vdp.range.is_none() && matches!(progress, Progress::Done(_));
    Ok((
        if plain_whole && esi.is_none() {
            body
        } else {
            ReplyBody::Filtered(Box::new(body), vdp)
        },
        head_length,
    ))
}

/// The range processor on a byte stream.
struct RangeCut {
    low: u64,
    /// One past the last byte wanted.
    high: u64,
    off: u64,
}

impl RangeCut {
    /// The part of `b` inside the range; `true` once the range is done.
    fn cut(&mut self, b: Bytes) -> (Option<Bytes>, bool) {
        let len = b.len() as u64;
        let start = self.low.saturating_sub(self.off).min(len);
        let end = self.high.saturating_sub(self.off).min(len);
        self.off += len;
        let part = (end > start).then(|| b.slice(start as usize..end as usize));
        (part, self.off >= self.high)
    }
}

/// Where a body's bytes come from.
pub enum Source {
    Full(Option<Bytes>),
    /// Assembled elsewhere (ESI) and handed over through a channel.
    Channel(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>),
    /// An ESI page not started yet: it starts when its body is first
    /// read, after the response head went out and was logged (so its
    /// includes' `Link` records come after the head's, as in Varnish).
    Esi(Option<Box<EsiJob>>),
    /// An object's body from chunk `next` on.
    Object {
        obj: Arc<Object>,
        next: usize,
        wait: Option<ChunkFuture>,
    },
}

/// The fetch behind a streamed body failed: the connection is then
/// closed without finishing the body, as Varnish does.
fn fetch_failed() -> std::io::Error {
    std::io::Error::other("backend fetch failed while streaming")
}

impl Source {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        match self {
            Source::Full(b) => Poll::Ready(b.take().map(Ok)),
            Source::Channel(rx) => rx.poll_recv(cx),
            Source::Esi(job) => match job.take() {
                Some(job) => {
                    *self = esi_channel(*job);
                    self.poll_next(cx)
                }
                None => Poll::Ready(None),
            },
            Source::Object { obj, next, wait } => {
                let r = match wait {
                    None => match obj.body.try_chunk(*next) {
                        Some(r) => r,
                        None => {
                            let (o, i) = (obj.clone(), *next);
                            let mut f: ChunkFuture = Box::pin(async move { o.body.chunk(i).await });
                            match f.as_mut().poll(cx) {
                                Poll::Ready(r) => r,
                                Poll::Pending => {
                                    *wait = Some(f);
                                    return Poll::Pending;
                                }
                            }
                        }
                    },
                    Some(f) => match f.as_mut().poll(cx) {
                        Poll::Ready(r) => {
                            *wait = None;
                            r
                        }
                        Poll::Pending => return Poll::Pending,
                    },
                };
                match r {
                    Ok(Some(b)) => {
                        *next += 1;
                        Poll::Ready(Some(Ok(b)))
                    }
                    Ok(None) => Poll::Ready(None),
                    Err(()) => Poll::Ready(Some(Err(fetch_failed()))),
                }
            }
        }
    }
}

/// At most about this much plain text is inflated per step for a client.
const GUNZIP_STEP: usize = 256 << 10;

/// A body through gunzip and range.
pub struct Filtered {
    src: Source,
    gunzip: Option<Gunzipper>,
    /// Compressed input not inflated yet: gunzip works in bounded steps,
    /// so a small chunk that expands enormously never sits whole in memory.
    pending: Option<Bytes>,
    range: Option<RangeCut>,
    len: Option<u64>,
    queue: VecDeque<Bytes>,
    /// Gunzip output held back, as Varnish's gunzip buffer holds it: it
    /// goes out when [`HOLD`] bytes are there or at the end (not when
    /// the source has to wait), so a body whose gzip data is followed by
    /// junk sends nothing of it.
    held: Vec<Bytes>,
    held_len: usize,
    /// The request's log, for the gunzip's `Gzip` records.
    log: Option<Arc<crate::vsl::Follow>>,
    done: bool,
}

/// A range delivery whose object ended before the range did: the
/// session closes as `RANGE_SHORT`.
#[derive(Debug, thiserror::Error)]
#[error("range short")]
pub struct RangeShort;

/// Gunzip output held back at most (Varnish's `gzip_buffer` default).
const HOLD: usize = 32 << 10;

impl Filtered {
    /// Sends what is held back.
    fn release(&mut self) {
        self.queue.extend(self.held.drain(..));
        self.held_len = 0;
    }

    /// The gunzip context's records: an error first, if any, then its
    /// `U D - in out start last stop` (Varnish's `VGZ_Destroy`).
    fn log_gunzip(&mut self, err: Option<&str>) {
        let (Some(g), Some(log)) = (self.gunzip.as_ref(), self.log.take()) else {
            return;
        };
        let rec = g.record("U D -");
        log.append(|b| {
            if let Some(e) = err {
                b.log(vapi::Tag::Gzip, e);
            }
            b.log(vapi::Tag::Gzip, &rec);
        });
    }

    fn fail(&mut self, e: String) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        self.done = true;
        self.held.clear();
        self.held_len = 0;
        self.queue.clear();
        Poll::Ready(Some(Err(std::io::Error::other(e))))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        loop {
            if self.done || self.held_len >= HOLD {
                self.release();
            }
            if let Some(b) = self.queue.pop_front() {
                return Poll::Ready(Some(Ok(b)));
            }
            if self.done {
                return Poll::Ready(None);
            }
            let data = match self.pending.take() {
                Some(p) => Ok(p),
                None => match self.src.poll_next(cx) {
                    // Held output stays held while the source waits, as
                    // Varnish's gunzip ignores flushes: what comes next
                    // may be junk that fails the whole body.
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => Err(r),
                },
            };
            let data = match data {
                Ok(p) => p,
                Err(Some(Err(e))) => {
                    self.log_gunzip(None);
                    self.done = true;
                    // A range the object's end (a failed fetch) cut short
                    // closes as RANGE_SHORT, as Varnish's range processor.
                    if self.range.as_ref().is_some_and(|r| r.off < r.high) {
                        return Poll::Ready(Some(Err(std::io::Error::other(RangeShort))));
                    }
                    return Poll::Ready(Some(Err(e)));
                }
                Err(Some(Ok(b))) => b,
                Err(None) => {
                    self.done = true;
                    if let Some(g) = &self.gunzip {
                        if let Err(e) = g.finish() {
                            self.log_gunzip(None);
                            return self.fail(e.to_string());
                        }
                    }
                    self.log_gunzip(None);
                    if self.range.as_ref().is_some_and(|r| r.off < r.high) {
                        self.done = true;
                        self.held.clear();
                        self.held_len = 0;
                        return Poll::Ready(Some(Err(std::io::Error::other(RangeShort))));
                    }
                    continue;
                }
            };
            let mut pieces = Vec::new();
            match self.gunzip.as_mut() {
                Some(g) => match g.write_some(&data, &mut pieces, GUNZIP_STEP) {
                    Ok(used) if used < data.len() => self.pending = Some(data.slice(used..)),
                    Ok(_) => {}
                    Err(e) => {
                        let why = match e {
                            crate::cache_gzip::GzError::Junk => {
                                "G(un)zip error: 1 (junk after VGZ_END)".to_string()
                            }
                            ref e => format!("Gunzip error: -3 ({e})"),
                        };
                        self.log_gunzip(Some(&why));
                        return self.fail(e.to_string());
                    }
                },
                None => pieces.push(data),
            }
            let hold = self.gunzip.is_some();
            for p in pieces {
                let part = match self.range.as_mut() {
                    Some(r) => {
                        let (part, end) = r.cut(p);
                        if end {
                            // The range is complete: no need to wait for
                            // the rest of a streaming object.
                            self.done = true;
                        }
                        part
                    }
                    None => Some(p),
                };
                if let Some(part) = part {
                    if hold {
                        self.held_len += part.len();
                        self.held.push(part);
                    } else {
                        self.queue.push_back(part);
                    }
                }
                if self.done {
                    if hold {
                        self.log_gunzip(None);
                    }
                    break;
                }
            }
        }
    }

    /// Writes the gunzip's `Gzip` records to this request's log.
    pub fn log_to(&mut self, f: Arc<crate::vsl::Follow>) {
        if self.gunzip.is_some() {
            self.log = Some(f);
        }
    }
}

/// The body written to the client.
pub enum RespBody {
    /// Whole, made here; `None` once sent.
    Full(Option<Bytes>),
    /// An object's body or ESI output, as it comes.
    Plain(Source),
    /// Through gunzip and/or a range.
    Filtered(Box<Filtered>),
}

fn esi_channel(job: EsiJob) -> Source {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        crate::cache_esi::deliver_top(job, &tx).await;
    });
    Source::Channel(rx)
}

fn source(body: ReplyBody) -> Source {
    match body {
        ReplyBody::Bytes(b) => Source::Full((!b.is_empty()).then_some(b)),
        ReplyBody::Object(obj) => Source::Object {
            obj,
            next: 0,
            wait: None,
        },
        // ESI output is made by a task of its own, so includes run as the
        // client reads; a full channel holds that task back.
        ReplyBody::Esi(job) => Source::Esi(Some(job)),
        ReplyBody::Filtered(inner, _) => source(*inner),
        ReplyBody::Pipe(_) => Source::Full(None),
    }
}

impl RespBody {
    /// A body of these bytes.
    pub fn full(b: Bytes) -> RespBody {
        RespBody::Full((!b.is_empty()).then_some(b))
    }

    /// The body of `obj`.
    pub fn object(obj: Arc<Object>) -> RespBody {
        RespBody::Plain(Source::Object {
            obj,
            next: 0,
            wait: None,
        })
    }

    /// The body of a reply. A pipe has no body.
    pub fn from_reply(body: ReplyBody) -> RespBody {
        match body {
            ReplyBody::Bytes(b) => RespBody::full(b),
            ReplyBody::Filtered(inner, vdp) => RespBody::Filtered(Box::new(Filtered {
                src: source(*inner),
                gunzip: vdp.gunzip.then(|| {
                    // Varnish counts a gunzip context when it makes one.
                    crate::vsc::MAIN.n_gunzip.inc();
                    Gunzipper::new()
                }),
                pending: None,
                range: vdp.range.map(|(low, high)| RangeCut {
                    low,
                    high: high + 1,
                    off: 0,
                }),
                len: vdp.len,
                queue: VecDeque::new(),
                held: Vec::new(),
                held_len: 0,
                log: None,
                done: false,
            })),
            b => RespBody::Plain(source(b)),
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let r = match self.get_mut() {
            RespBody::Full(b) => return Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespBody::Plain(s) => s.poll_next(cx),
            RespBody::Filtered(f) => f.poll_next(cx),
        };
        r.map(|o| o.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Full(b) => b.is_none(),
            RespBody::Plain(Source::Object { obj, next, .. }) => {
                matches!(obj.body.try_chunk(*next), Some(Ok(None)))
            }
            RespBody::Plain(_) => false,
            RespBody::Filtered(f) => f.done && f.queue.is_empty() && f.held.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RespBody::Plain(Source::Object { obj, next: 0, .. }) => match obj.body.progress() {
                Progress::Done(_) => SizeHint::with_exact(obj.body.len()),
                _ => SizeHint::default(),
            },
            RespBody::Plain(_) => SizeHint::default(),
            RespBody::Filtered(f) => match f.len {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}

/// A `vcl_synth` body's way out (Varnish's `cnt_synth` and
/// `cnt_transmit`): its `Content-Length`, the Transient object Varnish
/// keeps it in, and the range processor on a 200 when `range` (range
/// support on, not HEAD). Returns the part of `body` to send; all of it
/// is logged as varnishd logs it.
pub fn synth_transmit(
    req: &Headers,
    resp: &mut RespMsg,
    body: Bytes,
    range: bool,
    vsl: &mut crate::vsl::Buf,
) -> Bytes {
    let len = body.len();
    set_logged(vsl, resp, "Content-Length", &len.to_string());
    vsl.log(vapi::Tag::Storage, "malloc Transient");
    let range = range && resp.status == 200 && hdr_get(req, "range").is_some();
    vsl.log(vapi::Tag::Filters, if range { " range" } else { "" });
    let body = match range.then(|| range_step(req, resp, Some(len as u64), vsl)) {
        Some(Some(None)) => Bytes::new(),
        Some(Some(Some((low, high)))) => body.slice(low as usize..=high as usize),
        _ => return body,
    };
    if body.len() != len {
        set_logged(vsl, resp, "Content-Length", &body.len().to_string());
    }
    body
}

/// The range processor's step before the body (Varnish's
/// `vrg_range_init`), for objects and `vcl_synth` bodies alike: `None`
/// when it leaves the response be; else the response made a 416
/// (`Some(None)`: nothing to send) or a 206 of bytes `low..=high`
/// (`Some(Some(…))`), each change logged.
fn range_step(
    req: &Headers,
    resp: &mut RespMsg,
    len: Option<u64>,
    vsl: &mut crate::vsl::Buf,
) -> Option<Option<(u64, u64)>> {
    if !crate::cache_range::if_range(req, &resp.headers) {
        return None;
    }
    match crate::cache_range::dorange(req, len) {
        crate::cache_range::Range::Ignore => None,
        crate::cache_range::Range::Unsatisfiable(cr) => {
            if let Some(cr) = cr {
                set_logged(vsl, resp, "Content-Range", &cr);
            }
            status_logged(vsl, resp, 416);
            Some(None)
        }
        crate::cache_range::Range::Bytes {
            low,
            high,
            content_range,
        } => {
            set_logged(vsl, resp, "Content-Range", &content_range);
            status_logged(vsl, resp, 206);
            Some(Some((low, high)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client without gzip reading a gzip bomb: one small chunk that
    /// inflates to 64 MiB comes out in bounded steps, never whole.
    #[test]
    fn gunzip_for_a_client_is_bounded_per_step() {
        let plain = vec![0u8; 64 << 20];
        let bomb = crate::cache_gzip::gzip(&plain, 9).expect("gzip");
        assert!(bomb.len() < 1 << 20, "a bomb is small: {}", bomb.len());
        let mut f = Filtered {
            src: Source::Full(Some(bomb)),
            gunzip: Some(Gunzipper::new()),
            pending: None,
            range: None,
            len: None,
            queue: VecDeque::new(),
            held: Vec::new(),
            held_len: 0,
            log: None,
            done: false,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut total = 0usize;
        let mut most_queued = 0usize;
        loop {
            match f.poll_next(&mut cx) {
                Poll::Ready(Some(Ok(b))) => total += b.len(),
                Poll::Ready(Some(Err(e))) => panic!("gunzip failed: {e}"),
                Poll::Ready(None) => break,
                Poll::Pending => panic!("a full source never waits"),
            }
            let queued: usize = f.queue.iter().chain(&f.held).map(Bytes::len).sum();
            most_queued = most_queued.max(queued);
        }
        assert_eq!(total, plain.len());
        assert!(
            most_queued <= GUNZIP_STEP + (64 << 10),
            "{most_queued} bytes were queued at once"
        );
    }
}
