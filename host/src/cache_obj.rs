//! Cached objects (Varnish's `cache_obj`): immutable once inserted, shared
//! by `Arc` between the index and every client delivering them.

use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// `lru_interval` (f64 bits), read on every hit without the parameter
/// lock; 2.0 until configured.
static LRU_INTERVAL: AtomicU64 = AtomicU64::new(0x4000_0000_0000_0000);

/// Applies the object parameters (at start-up and on `param.set`).
pub fn configure(p: &crate::mgt_param::Params) {
    LRU_INTERVAL.store(p.num("lru_interval").max(0.0).to_bits(), Ordering::Relaxed);
}

/// A header list in arrival order; names compare case-insensitively.
pub type Headers = Vec<(String, String)>;

/// The first header named `name`.
pub fn hdr_get<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Replaces every header named `name` by one with `value`.
pub fn hdr_set(h: &mut Headers, name: &str, value: &str) {
    // As Varnish: every `name` goes, one comes at the end. The first
    // removed entry's buffers are reused for it (a `set` of a header
    // that is there allocates nothing).
    let mut spare: Option<(String, String)> = None;
    let mut i = 0;
    while i < h.len() {
        if h[i].0.eq_ignore_ascii_case(name) {
            let e = h.remove(i);
            spare.get_or_insert(e);
        } else {
            i += 1;
        }
    }
    let (mut n, mut v) = spare.unwrap_or_default();
    n.clear();
    n.push_str(name);
    v.clear();
    v.push_str(value);
    h.push((n, v));
}

/// Removes every header named `name`.
pub fn hdr_unset(h: &mut Headers, name: &str) {
    h.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
}

/// An object's status line texts and headers, packed in one allocation
/// (Varnish keeps them in one storage blob too): a cached object holds
/// them for its whole life, and as `String` pairs in a `Vec` a 1 KiB
/// object's five headers took about 400 bytes in a dozen allocations,
/// here about 200 in one. Immutable; read in order.
///
/// Layout: a `u32` count of texts, then each text's length as a `u32`,
/// then the texts one after the other: the protocol, the reason, then
/// each header's name and value.
#[derive(Clone)]
pub struct ObjHeaders(Box<[u8]>);

impl ObjHeaders {
    /// Packs a status line's protocol and reason and `headers`.
    pub fn new<'a>(
        proto: &str,
        reason: &str,
        headers: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    ) -> ObjHeaders {
        let (mut count, mut bytes) = (2usize, proto.len() + reason.len());
        for (n, v) in headers.clone() {
            count += 2;
            bytes += n.len() + v.len();
        }
        let mut b = Vec::with_capacity(4 + 4 * count + bytes);
        b.extend_from_slice(&(count as u32).to_le_bytes());
        let texts = || {
            [proto, reason]
                .into_iter()
                .chain(headers.clone().flat_map(|(n, v)| [n, v]))
        };
        for t in texts() {
            b.extend_from_slice(&(t.len() as u32).to_le_bytes());
        }
        for t in texts() {
            b.extend_from_slice(t.as_bytes());
        }
        ObjHeaders(b.into_boxed_slice())
    }

    fn count(&self) -> usize {
        self.len_at(0)
    }

    fn len_at(&self, i: usize) -> usize {
        let at = 4 * i;
        u32::from_le_bytes([self.0[at], self.0[at + 1], self.0[at + 2], self.0[at + 3]]) as usize
    }

    /// The texts in order, from the protocol on.
    fn texts(&self) -> impl Iterator<Item = &str> + '_ {
        let n = self.count();
        let mut at = 4 + 4 * n;
        (1..=n).map(move |i| {
            let l = self.len_at(i);
            let t = &self.0[at..at + l];
            at += l;
            // SAFETY: `new` wrote only `&str`s, each whole, and these
            // are their bounds.
            unsafe { std::str::from_utf8_unchecked(t) }
        })
    }

    /// The status line's protocol (`HTTP/1.1`).
    pub fn proto(&self) -> &str {
        self.texts().next().unwrap_or_default()
    }

    /// The status line's reason (`OK`).
    pub fn reason(&self) -> &str {
        self.texts().nth(1).unwrap_or_default()
    }

    /// The headers in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut t = self.texts().skip(2);
        std::iter::from_fn(move || Some((t.next()?, t.next()?)))
    }

    /// How many headers.
    pub fn len(&self) -> usize {
        self.count().saturating_sub(2) / 2
    }

    /// No headers at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first header named `name` (case-insensitively).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The headers as a list to change (a response made from the
    /// object, a 304's merge), without those `drop` names, with room for
    /// `extra` more.
    pub fn to_vec_without(&self, drop: impl Fn(&str) -> bool, extra: usize) -> Headers {
        let mut out = Headers::with_capacity(self.len() + extra);
        out.extend(
            self.iter()
                .filter(|(n, _)| !drop(n))
                .map(|(n, v)| (n.to_string(), v.to_string())),
        );
        out
    }
}

impl std::fmt::Debug for ObjHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// How far a body has arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Still being fetched; this many chunks are in.
    Streaming(usize),
    /// Complete with this many chunks.
    Done(usize),
    /// The fetch failed: readers end with an error (the client's
    /// connection is closed mid-body, as Varnish does).
    Failed,
}

impl Progress {
    const DONE: u64 = 1 << 62;
    const FAILED: u64 = 1 << 63;

    fn pack(self) -> u64 {
        match self {
            Progress::Streaming(n) => n as u64,
            Progress::Done(n) => n as u64 | Self::DONE,
            Progress::Failed => Self::FAILED,
        }
    }

    fn unpack(v: u64) -> Progress {
        if v & Self::FAILED != 0 {
            Progress::Failed
        } else if v & Self::DONE != 0 {
            Progress::Done((v & !Self::DONE) as usize)
        } else {
            Progress::Streaming(v as usize)
        }
    }
}

/// An object's body: complete, or still arriving from the backend while
/// clients already deliver it (Varnish's streaming, `beresp.do_stream`).
/// The fetch appends chunks; every reader follows at its own pace.
/// Chunks shorter than this are copied into their own storage by
/// [`Body::push`].
const STORE_COPY_MAX: usize = 32 << 10;

#[derive(Debug)]
pub struct Body {
    chunks: Mutex<Vec<Bytes>>,
    /// The [`Progress`], packed (see [`Progress::pack`]) so that a cached
    /// object carries a word and a `Notify`, not a watch channel's heap
    /// block.
    progress: AtomicU64,
    /// Woken on every change of `progress`.
    changed: tokio::sync::Notify,
    len: AtomicU64,
    /// What the fetch filters found out (ESI instructions, gzip layout),
    /// set before the body is marked complete.
    /// Boxed: only filtered bodies have them, and inline they made
    /// every cached object 60 bytes larger.
    attrs: std::sync::OnceLock<Box<crate::cache_fetch_proc::BodyAttrs>>,
}

impl Body {
    /// A complete body.
    pub fn complete(b: Bytes) -> Body {
        let len = b.len() as u64;
        let chunks = if b.is_empty() { Vec::new() } else { vec![b] };
        let n = chunks.len();
        Body {
            chunks: Mutex::new(chunks),
            progress: AtomicU64::new(Progress::Done(n).pack()),
            changed: tokio::sync::Notify::new(),
            len: AtomicU64::new(len),
            attrs: std::sync::OnceLock::new(),
        }
    }

    /// A complete body with the attributes of another (a 304 reusing the
    /// stale object's body).
    pub fn complete_with(b: Bytes, attrs: Option<crate::cache_fetch_proc::BodyAttrs>) -> Body {
        let body = Body::complete(b);
        if let Some(a) = attrs {
            let _ = body.attrs.set(Box::new(a));
        }
        body
    }

    /// Records what the fetch filters found (once, before `finish`).
    pub fn set_attrs(&self, a: crate::cache_fetch_proc::BodyAttrs) {
        let _ = self.attrs.set(Box::new(a));
    }

    /// What the fetch filters found, once the body is complete.
    pub fn attrs(&self) -> Option<&crate::cache_fetch_proc::BodyAttrs> {
        self.attrs.get().map(|a| &**a)
    }

    /// The ESI instructions of a complete body with ESI markup.
    pub fn esi(&self) -> Option<&std::sync::Arc<crate::cache_esi::EsiData>> {
        self.attrs.get().and_then(|a| a.esi.as_ref())
    }

    /// An empty body that the fetch will fill.
    pub fn streaming() -> Body {
        Body {
            chunks: Mutex::new(Vec::new()),
            progress: AtomicU64::new(Progress::Streaming(0).pack()),
            changed: tokio::sync::Notify::new(),
            len: AtomicU64::new(0),
            attrs: std::sync::OnceLock::new(),
        }
    }

    /// Appends a chunk (fetch side). A small chunk is copied into storage
    /// of its own size: it is usually a slice of the fetch's read buffer,
    /// and keeping it would keep that whole buffer alive with the object
    /// (8 KiB and more behind a 1 KiB body). Varnish trims its last storage
    /// segment for the same reason.
    pub fn push(&self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        let b = if b.len() < STORE_COPY_MAX {
            Bytes::copy_from_slice(&b)
        } else {
            b
        };
        self.len.fetch_add(b.len() as u64, Ordering::Relaxed);
        let n = {
            let mut c = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
            c.push(b);
            c.len()
        };
        self.set_progress(Progress::Streaming(n));
    }

    fn set_progress(&self, p: Progress) {
        self.progress.store(p.pack(), Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Ends the body (fetch side): complete, or failed.
    pub fn finish(&self, ok: bool) {
        let n = {
            let mut c = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
            // The object keeps its chunk list for its life: no spare
            // capacity (one chunk had room for four).
            c.shrink_to_fit();
            c.len()
        };
        self.set_progress(if ok {
            Progress::Done(n)
        } else {
            Progress::Failed
        });
    }

    /// Bytes arrived so far.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no byte has arrived (yet).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the body stands.
    pub fn progress(&self) -> Progress {
        Progress::unpack(self.progress.load(Ordering::Acquire))
    }

    /// Chunk `i` if the answer is known without waiting: `Some(Ok(Some))`
    /// when it has arrived, `Some(Ok(None))` past the end of a complete
    /// body, `Some(Err(()))` when the fetch failed, `None` while it is
    /// still to come.
    pub fn try_chunk(&self, i: usize) -> Option<Result<Option<Bytes>, ()>> {
        match self.progress() {
            Progress::Failed => Some(Err(())),
            Progress::Done(n) if i >= n => Some(Ok(None)),
            Progress::Streaming(n) if i >= n => None,
            _ => {
                let c = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
                Some(Ok(c.get(i).cloned()))
            }
        }
    }

    /// Chunk `i`, waiting for it to arrive. `Ok(None)` at the end,
    /// `Err(())` when the fetch failed.
    pub async fn chunk(&self, i: usize) -> Result<Option<Bytes>, ()> {
        loop {
            // Registered before the progress is read, so a change in
            // between still wakes it.
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let p = self.progress();
            let have = match p {
                Progress::Streaming(n) | Progress::Done(n) => n,
                Progress::Failed => return Err(()),
            };
            if i < have {
                let c = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
                return Ok(c.get(i).cloned());
            }
            if let Progress::Done(_) = p {
                return Ok(None);
            }
            notified.await;
        }
    }

    /// The whole body if it is complete now.
    pub fn try_collect(&self) -> Option<Bytes> {
        let Progress::Done(_) = self.progress() else {
            return None;
        };
        let c = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() == 1 {
            return Some(c[0].clone());
        }
        let mut out = bytes::BytesMut::with_capacity(self.len() as usize);
        for b in c.iter() {
            out.extend_from_slice(b);
        }
        Some(out.freeze())
    }

    /// The whole body once complete (`None` if the fetch failed).
    pub async fn collect(&self) -> Option<Bytes> {
        let mut out = bytes::BytesMut::new();
        let mut i = 0;
        while let Some(c) = self.chunk(i).await.ok()? {
            if i == 0 && matches!(self.progress(), Progress::Done(1)) {
                return Some(c);
            }
            out.extend_from_slice(&c);
            i += 1;
        }
        Some(out.freeze())
    }
}

/// What kind of entry an object is: a real response, or a marker that
/// makes later lookups miss or pass (`beresp.uncacheable`, `pass(DURATION)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjKind {
    Normal,
    HitMiss,
    HitPass,
}

/// One cached response.
#[derive(Debug)]
pub struct Object {
    pub kind: ObjKind,
    pub status: u16,
    /// The status line's protocol and reason, and the headers.
    pub headers: ObjHeaders,
    pub body: Body,
    /// The XID of the fetch that made it (second number of `X-Varnish`).
    pub xid: u64,
    /// When the object was born (fetch time minus the backend's `Age`).
    pub t_origin: f64,
    /// When it entered the cache (bans older than this do not apply).
    pub t_insert: f64,
    pub ttl: f64,
    pub grace: f64,
    pub keep: f64,
    /// Made by an uncacheable fetch (a pass, `beresp.uncacheable`):
    /// `obj.uncacheable`.
    pub uncacheable: bool,
    /// The request header values named by `Vary`, at insert time.
    pub vary: Vec<(String, Option<String>)>,
    pub hits: AtomicU64,
    /// When a hit last counted as a move to the LRU's end (f64 bits):
    /// hits within `lru_interval` of it do not (Varnish's `EXP_Touch`,
    /// counted in `n_lru_moved`).
    pub last_lru: AtomicU64,
    /// Bytes charged against the storage budget for this object (a
    /// streaming body is charged again when complete).
    pub charged: AtomicU64,
    /// The body is gzipped (Varnish's OF_GZIPED): set by the fetch
    /// filters, not by the `Content-Encoding` VCL may have left.
    pub gzipped: bool,
    /// A fetch filter changed the body's encoding (OF_CHGCE): a 304 then
    /// keeps the stored `Content-Encoding` and weakens the new ETag.
    pub chgce: bool,
    /// Made for one client only (a pass): no `Accept-Ranges`.
    pub private: bool,
    /// Cache tags (surrogate keys): the `xkey` / `X-HashTwo` response
    /// header tokens and what VMODs added with `cache.add-tags`.
    pub tags: Vec<String>,
    /// When a soft purge expired it (f64 bits; 0: never): its TTL then
    /// ends there while grace and keep still count from it.
    pub soft_purged: AtomicU64,
    /// The time of the newest ban it has been tested against (f64 bits;
    /// starts at its insertion time: older bans never apply).
    pub ban_mark: AtomicU64,
    /// Counts the object in `MAIN.n_object` while it lives.
    pub live: crate::vsc::ObjLive,
}

impl Object {
    /// When its TTL ends (earlier if soft-purged).
    pub fn fresh_until(&self) -> f64 {
        let end = self.t_origin + self.ttl;
        match self.soft_purged.load(std::sync::atomic::Ordering::Relaxed) {
            0 => end,
            bits => end.min(f64::from_bits(bits)),
        }
    }

    /// Whether the object is still fresh at `now`.
    pub fn fresh(&self, now: f64) -> bool {
        now < self.fresh_until()
    }

    /// When its TTL ends for a request with `req.ttl` (`None`, or not
    /// positive: no cap), as Varnish's `EXP_Ttl`.
    pub fn ttl_end(&self, req_ttl: Option<f64>) -> f64 {
        match req_ttl {
            Some(t) if t > 0.0 && t < self.ttl => self.fresh_until().min(self.t_origin + t),
            _ => self.fresh_until(),
        }
    }

    /// When its grace ends for a request with `req.ttl` and `req.grace`
    /// (a negative `req.grace`: no cap), as Varnish's `EXP_Ttl_grace`.
    pub fn grace_end(&self, req_ttl: Option<f64>, req_grace: Option<f64>) -> f64 {
        let g = match req_grace {
            Some(g) if g >= 0.0 && g < self.grace => g,
            _ => self.grace,
        };
        self.ttl_end(req_ttl) + g
    }

    /// Whether it may still be served stale (in grace).
    pub fn in_grace(&self, now: f64) -> bool {
        now < self.fresh_until() + self.grace
    }

    /// Whether it is dead (past ttl + grace + keep) and may be dropped.
    pub fn expired(&self, now: f64) -> bool {
        now >= self.fresh_until() + self.grace + self.keep
    }

    /// The time of the newest ban it was tested against.
    pub fn ban_checked(&self) -> f64 {
        match self.ban_mark.load(std::sync::atomic::Ordering::Relaxed) {
            0 => self.t_insert,
            bits => f64::from_bits(bits).max(self.t_insert),
        }
    }

    /// Records that bans up to `t` were tested.
    pub fn set_ban_checked(&self, t: f64) {
        if t > self.ban_checked() {
            self.ban_mark
                .store(t.to_bits(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Expires it now, keeping grace and keep (vmod_xkey's softpurge).
    pub fn soft_purge(&self, now: f64) {
        if self.fresh(now) {
            self.soft_purged
                .store(now.to_bits(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Counts a hit and returns the new count. A hit more than
    /// `lru_interval` seconds after the object's last move to the LRU's
    /// end counts as another (`n_lru_moved`).
    pub fn hit(&self, now: f64) -> u64 {
        let lru_interval = f64::from_bits(LRU_INTERVAL.load(Ordering::Relaxed));
        let last = f64::from_bits(self.last_lru.load(Ordering::Relaxed));
        if now - last >= lru_interval
            && self
                .last_lru
                .compare_exchange(
                    last.to_bits(),
                    now.to_bits(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            crate::vsc::MAIN.n_lru_moved.inc();
        }
        self.hits.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Whether the object has ESI instructions (`obj.can_esi`).
    pub fn can_esi(&self) -> bool {
        self.body.esi().is_some()
    }

    /// Whether this variant matches the request headers (`Vary`).
    pub fn vary_matches(&self, req: &Headers) -> bool {
        crate::cache_hash::vary_match(&self.vary, req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn obj_headers_keep_the_status_line_and_every_header_in_order() {
        let list: Headers = vec![
            ("Cache-Control".into(), "max-age=10".into()),
            ("X-Empty".into(), String::new()),
            ("x-dup".into(), "a".into()),
            ("X-Dup".into(), "b, ü".into()),
        ];
        let h = ObjHeaders::new(
            "HTTP/1.1",
            "Not Found",
            list.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        );
        assert_eq!(h.proto(), "HTTP/1.1");
        assert_eq!(h.reason(), "Not Found");
        assert_eq!(h.len(), 4);
        assert_eq!(h.to_vec_without(|_| false, 0), list);
        assert_eq!(
            h.to_vec_without(|n| n.eq_ignore_ascii_case("x-dup"), 0),
            list[..2].to_vec()
        );
        assert_eq!(h.get("x-DUP"), Some("a"));
        assert_eq!(h.get("x-empty"), Some(""));
        assert_eq!(h.get("missing"), None);

        let none = ObjHeaders::new("HTTP/1.0", "", std::iter::empty());
        assert!(none.is_empty());
        assert_eq!((none.proto(), none.reason()), ("HTTP/1.0", ""));
        assert_eq!(none.iter().count(), 0);
    }
}
