//! The transaction log, writing side (Varnish's VSL): records with
//! Varnish's tags, written per transaction into a small buffer ([`Buf`])
//! and handed to a bounded in-memory ring in batches.
//!
//! Cost: a record is formatted straight into its transaction's buffer
//! (no allocation per record; masked tags cost a bit test); the buffer
//! goes to the ring when it fills (`vsl_buffer`) and when the transaction
//! ends, under one short lock, without copying (the batch is moved in).
//! Readers never slow writers: the ring drops its oldest batches past
//! `vsl_space` bytes whoever still wanted them, and a reader that fell
//! behind is told how many records it lost. Nobody reading costs nothing
//! more than the above.
//!
//! The ring is per process, as a Shellac process is one instance. Readers
//! attach through the admin HTTP listener (`/log`, see
//! [`crate::mgt_http`]) with a [`Cursor`].

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use vapi::fmt::{copy_short, fmt_fixed6, fmt_u64, F6};
use vapi::record::Packed;
use vapi::{Kind, Tag};

/// Where a batch of records sits in the ring's history.
#[derive(Clone, Copy)]
struct Slot {
    /// Byte offset in the ring's history (the ring holds offsets
    /// `head - capacity .. head`).
    start: u64,
    len: u32,
    /// Number of its first record in the ring's history, and how many.
    first_rec: u64,
    nrec: u32,
}

/// The ring: `vsl_space` bytes written round and round (as Varnish's
/// shared memory log), batch after batch (each behind a batch header, see
/// [`vapi::shm`]), and where each batch starts. Writers copy their batch
/// in under the lock; no memory is allocated or freed once it is full.
/// The bytes are either this process's own (readers then come through
/// `/log`) or a shared mapping of the instance's `_.vsl` file
/// ([`attach_file`]), which other processes read without the server's
/// help.
struct Ring {
    /// The ring's bytes (after the header, in a mapping).
    base: *mut u8,
    cap: usize,
    /// The shared header, when the ring is a mapped file.
    shm: Option<&'static vapi::shm::Header>,
    /// The heap ring's storage (the pointer above points into it).
    heap: Vec<u8>,
    /// Bytes ever written.
    head: u64,
    /// How far ahead of `head` the ring's bytes were asked into the
    /// cache (see [`Ring::prefetch`]).
    prefetched: u64,
    slots: VecDeque<Slot>,
    next_rec: u64,
}

// SAFETY: the ring's bytes are only touched under RING's mutex (or read
// by other processes, which check what they read).
unsafe impl Send for Ring {}

impl Ring {
    const fn new() -> Ring {
        Ring {
            base: std::ptr::null_mut(),
            cap: 0,
            shm: None,
            heap: Vec::new(),
            head: 0,
            prefetched: 0,
            slots: VecDeque::new(),
            next_rec: 0,
        }
    }

    fn cap(&self) -> u64 {
        self.cap as u64
    }

    fn copy_in(&mut self, at: u64, data: &[u8]) {
        let cap = self.cap;
        let pos = (at % cap as u64) as usize;
        let first = data.len().min(cap - pos);
        // SAFETY: base..base+cap is the ring's memory (heap or mapping),
        // and both ranges lie within it.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.add(pos), first);
            std::ptr::copy_nonoverlapping(data.as_ptr().add(first), self.base, data.len() - first);
        }
    }

    /// Asks the cache for the ring's next bytes, past `head`, before the
    /// next batch is copied there: the ring is larger than the caches, so
    /// a copy into it otherwise waits on memory for every line it
    /// writes. The lines come while the writer does other work.
    #[inline]
    fn prefetch(&mut self) {
        const AHEAD: u64 = 4096;
        let want = self.head + AHEAD;
        let mut at = self.prefetched.max(self.head) & !63;
        while at < want {
            let pos = (at % self.cap as u64) as usize;
            // SAFETY: a prefetch is a hint that touches no memory, and
            // `pos` lies within the ring anyway.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0};
                _mm_prefetch::<_MM_HINT_ET0>(self.base.add(pos) as *const i8);
            }
            at += 64;
        }
        self.prefetched = want;
    }

    fn copy_out(&self, at: u64, len: usize, out: &mut Vec<u8>) {
        let cap = self.cap;
        let pos = (at % cap as u64) as usize;
        let first = len.min(cap - pos);
        // SAFETY: as in copy_in.
        unsafe {
            out.extend_from_slice(std::slice::from_raw_parts(self.base.add(pos), first));
            out.extend_from_slice(std::slice::from_raw_parts(self.base, len - first));
        }
    }

    /// A new heap ring of `space` bytes (the old records go).
    fn heap_ring(&mut self, space: usize) {
        self.heap = vec![0; space];
        self.base = self.heap.as_mut_ptr();
        self.cap = space;
        self.shm = None;
        self.slots.clear();
    }
}

static RING: Mutex<Ring> = Mutex::new(Ring::new());

/// Puts the ring into memory other processes can map: an anonymous
/// in-memory file (memfd: never written back to disk, gone with the
/// process) of `vsl_space` bytes of ring, which readers open as
/// `/proc/PID/fd/FD` — the path returned, which `serve` writes into the
/// instance directory. The records logged before are dropped. Called
/// once at start-up.
pub fn attach_shm() -> std::io::Result<std::path::PathBuf> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let space = SPACE.load(Relaxed);
    let len = vapi::shm::HDR + space;
    // SAFETY: a NUL-terminated name; the descriptor is checked and then
    // owned by `f` (kept open for the process's lifetime below).
    let fd = unsafe { libc::memfd_create(c"shellac-vsl".as_ptr(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.set_len(len as u64)?;
    // SAFETY: a fresh shared read-write mapping of a file of `len`
    // bytes; checked for failure; kept for the process's lifetime.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let map = map as *mut u8;
    // SAFETY: the mapping is page-aligned and larger than the header;
    // the header is bytes and atomics, zeroed by the fresh file.
    let hdr: &'static vapi::shm::Header = unsafe { &*(map as *const vapi::shm::Header) };
    hdr.space
        .store(space as u64, std::sync::atomic::Ordering::Release);
    // SAFETY: writing the magic into the header's first bytes; no reader
    // knows the file's path yet.
    unsafe {
        std::ptr::copy_nonoverlapping(vapi::shm::MAGIC.as_ptr(), map, 8);
    }
    let path =
        std::path::PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd()));
    // The descriptor stays open (readers open it through /proc).
    std::mem::forget(f);
    let mut r = RING.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: the ring part starts HDR bytes into the mapping.
    r.base = unsafe { map.add(vapi::shm::HDR) };
    r.cap = space;
    r.shm = Some(hdr);
    r.heap = Vec::new();
    r.head = 0;
    r.prefetched = 0;
    r.next_rec = 0;
    r.slots.clear();
    Ok(path)
}

/// `vsl_space`: bytes the ring keeps.
static SPACE: AtomicUsize = AtomicUsize::new(80 << 20);
/// `vsl_reclen`: the longest record data; longer is cut.
static RECLEN: AtomicUsize = AtomicUsize::new(255);
/// `vsl_buffer`: a transaction's buffer goes to the ring at this size.
static BUFFER: AtomicUsize = AtomicUsize::new(4 << 10);
/// `vsl_mask`: a set bit masks (does not log) the tag with that number.
static MASK: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// Readers waiting for new records.
static WAITING: AtomicUsize = AtomicUsize::new(0);
static NOTIFY: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Whether records with numbers go to the ring packed (see
/// [`vapi::record`]): always, unless `vsl_reclen` is so short that their
/// text would be cut, which only the text form shows.
#[inline]
fn packable() -> bool {
    RECLEN.load(Relaxed) >= 128
}

/// Varnish's default `vsl_mask`.
pub const DEFAULT_MASK: &str = "-Debug,-ExpKill,-ObjProtocol,-ObjStatus,-ObjReason,-ObjHeader,-VCL_trace,-WorkThread,-Hash,-VfpAcct,-H2RxHdr,-H2RxBody,-H2TxHdr,-H2TxBody,-VdpAcct";

/// Whether `tag` is logged (not masked by `vsl_mask`).
#[inline]
pub fn enabled(tag: Tag) -> bool {
    let n = tag as usize;
    MASK[n / 64].load(Relaxed) & (1 << (n % 64)) == 0
}

/// Parses a `vsl_mask` value: `default`, or a comma-separated list of
/// `-Tag` (mask) and `+Tag` (log) applied to the current mask, tags as
/// varnishlog globs (`-Req*`; Shellac's extension: `-*` masks all).
/// Returns the new mask without applying it.
pub fn parse_mask(value: &str, current: [u64; 2]) -> Result<[u64; 2], String> {
    let mut m = current;
    let value = value.trim();
    if value == "default" {
        return parse_mask(DEFAULT_MASK, [0, 0]);
    }
    if value == "(all enabled)" {
        return Ok([0, 0]);
    }
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (set, glob) = match item.as_bytes()[0] {
            b'-' => (true, &item[1..]),
            b'+' => (false, &item[1..]),
            _ => return Err(format!("Missing '+' or '-' ({item})")),
        };
        let tags = Tag::glob(glob).map_err(|_| format!("Unknown VSL tag ({item})"))?;
        for t in tags {
            let n = t as usize;
            if set {
                m[n / 64] |= 1 << (n % 64);
            } else {
                m[n / 64] &= !(1 << (n % 64));
            }
        }
    }
    Ok(m)
}

/// The mask in force.
pub fn mask() -> [u64; 2] {
    [MASK[0].load(Relaxed), MASK[1].load(Relaxed)]
}

/// Shows a mask as varnishd's `param.show vsl_mask` does.
pub fn show_mask(m: [u64; 2]) -> String {
    let masked: Vec<String> = vapi::tag::TAGS
        .iter()
        .filter(|t| {
            let n = t.0 as usize;
            m[n / 64] & (1 << (n % 64)) != 0
        })
        .map(|t| format!("-{}", t.1))
        .collect();
    if masked.is_empty() {
        "(all enabled)".into()
    } else {
        masked.join(",")
    }
}

/// Applies the `vsl_*` parameters (at start-up and on `param.set`).
pub fn configure(p: &crate::mgt_param::Params) {
    SPACE.store(p.num("vsl_space").max(1024.0) as usize, Relaxed);
    RECLEN.store(p.num("vsl_reclen").clamp(16.0, 65535.0) as usize, Relaxed);
    // `debug +syncvsl`: every record goes to the ring as it is written,
    // so records of concurrent transactions interleave as they happened.
    let buffer = if p.debug("syncvsl") {
        0
    } else {
        p.num("vsl_buffer").clamp(256.0, 1048576.0) as usize
    };
    BUFFER.store(buffer, Relaxed);
    let m = parse_mask(p.text("vsl_mask"), [0, 0])
        .unwrap_or_else(|_| parse_mask(DEFAULT_MASK, [0, 0]).unwrap_or_default());
    MASK[0].store(m[0], Relaxed);
    MASK[1].store(m[1], Relaxed);
}

/// Copies a batch into the ring, over its oldest batches.
fn publish(data: &[u8], nrec: u64) {
    if data.is_empty() {
        return;
    }
    crate::vsc::MAIN.shm_records.add(nrec);
    crate::vsc::MAIN.shm_writes.inc();
    publish_to(&RING, SPACE.load(Relaxed), data, nrec);
    // SeqCst against the reader's increment: either the reader sees
    // the batch, or this sees the reader (see `Cursor::wait`).
    if WAITING.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        NOTIFY.notify_waiters();
    }
}

/// Copies a batch into `ring` (of `space` bytes, unless it is a shared
/// file, whose size is fixed).
fn publish_to(ring: &Mutex<Ring>, space: usize, data: &[u8], nrec: u64) {
    use std::sync::atomic::{fence, Ordering};
    let mut r = ring.lock().unwrap_or_else(|p| p.into_inner());
    if r.shm.is_none() && r.cap != space {
        // First use, or `vsl_space` changed: a new ring.
        r.heap_ring(space);
    }
    let total = vapi::shm::BATCH_HDR + data.len();
    if total > r.cap {
        return;
    }
    let start = r.head;
    if let Some(h) = r.shm {
        // Readers learn first that these bytes are about to change.
        h.reserved.store(start + total as u64, Ordering::Relaxed);
        fence(Ordering::Release);
    }
    let first_rec = r.next_rec;
    r.copy_in(start, &vapi::shm::batch_header(data.len(), nrec, first_rec));
    r.copy_in(start + vapi::shm::BATCH_HDR as u64, data);
    r.slots.push_back(Slot {
        start,
        len: total as u32,
        first_rec,
        nrec: nrec as u32,
    });
    r.head += total as u64;
    r.prefetch();
    r.next_rec += nrec;
    let oldest = r.head.saturating_sub(r.cap());
    while r.slots.front().is_some_and(|s| s.start < oldest) {
        r.slots.pop_front();
    }
    if let (Some(h), Some(front)) = (r.shm, r.slots.front().copied()) {
        h.oldest.store(front.start, Ordering::Release);
        h.oldest_rec.store(front.first_rec, Ordering::Release);
        h.next_rec.store(r.next_rec, Ordering::Release);
        h.head.store(r.head, Ordering::Release);
    }
}

thread_local! {
    /// Emptied transaction buffers, kept for the next transactions on
    /// this thread (no allocation per transaction).
    static POOL: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Where a transaction's records go before the ring: its VXID, whose it
/// is, and the timing its `Timestamp` records report. Dropping it hands
/// what it holds to the ring.
pub struct Buf {
    vxid: u64,
    kind: Kind,
    data: Vec<u8>,
    nrec: u64,
    /// Log `End` when dropped (the transaction ends with its buffer).
    end_on_drop: bool,
    /// The parent transaction (a bereq's request), for its `Begin`.
    pub parent: u64,
    /// Told the transaction's current VXID (a restart gives a request a
    /// new one), for whoever ends it after its buffer is gone.
    follow: Option<std::sync::Arc<Follow>>,
    /// `Timestamp` bases: the transaction's start and last timestamp.
    pub t_start: f64,
    pub t_last: f64,
    /// A backend request's bytes (request head, body; response head,
    /// body), logged as `BereqAcct` before its `End`.
    bereq_acct: Option<[u64; 4]>,
}

impl Buf {
    /// A buffer for transaction `vxid`, started at `now`.
    pub fn new(vxid: u64, kind: Kind, now: f64) -> Buf {
        Buf {
            vxid,
            kind,
            data: Vec::new(),
            nrec: 0,
            end_on_drop: false,
            parent: 0,
            follow: None,
            t_start: now,
            t_last: now,
            bereq_acct: None,
        }
    }

    /// Counts bytes a backend request moved (see [`bereq_buf`]):
    /// request head, request body, response head, response body.
    pub fn bereq_acct_add(&mut self, n: [u64; 4]) {
        if let Some(a) = self.bereq_acct.as_mut() {
            for (a, n) in a.iter_mut().zip(n) {
                *a += n;
            }
        }
    }

    /// The transaction's last records: a backend request's `BereqAcct`,
    /// then `End`.
    fn end_records(&mut self) {
        if let Some([qh, qb, rh, rb]) = self.bereq_acct.take() {
            self.numbers(Tag::BereqAcct, &[qh, qb, qh + qb, rh, rb, rh + rb]);
        }
        self.log(Tag::End, "");
    }

    /// The transaction.
    pub fn vxid(&self) -> u64 {
        self.vxid
    }

    /// Where the transaction goes on after its buffer is gone: its VXID
    /// (a restart moves a request to a new one) and what its buffer held
    /// when dropped, which [`Follow::resume`] continues, so a request's
    /// records go to the ring in one batch.
    pub fn follow(&mut self) -> std::sync::Arc<Follow> {
        let vxid = self.vxid;
        self.follow
            .get_or_insert_with(|| {
                std::sync::Arc::new(Follow {
                    vxid: AtomicU64::new(vxid),
                    parked: Mutex::new(None),
                })
            })
            .clone()
    }

    /// Makes dropping the buffer end the transaction (`End`), so every
    /// way out of it logs one.
    pub fn end_on_drop(mut self) -> Buf {
        self.end_on_drop = true;
        self
    }

    /// The same buffer, no longer ending the transaction when dropped
    /// (its owner logs more after it, and the `End`).
    pub fn detach(mut self) -> Buf {
        self.end_on_drop = false;
        std::mem::take(&mut self)
    }

    /// Ends the transaction now: `End`, and the records to the ring.
    pub fn end(mut self) {
        self.end_on_drop = false;
        self.end_records();
    }

    /// Logs a record with text `s` (cut at `vsl_reclen`).
    #[inline(always)]
    pub fn log(&mut self, tag: Tag, s: &str) {
        if enabled(tag) {
            self.put(tag, s.as_bytes());
        }
    }

    /// Logs a record of a C string as varnishd writes one: `b` and its
    /// terminating NUL (varnishlog shows it, `%00`, for unsafe tags).
    pub fn log_cstr(&mut self, tag: Tag, b: &[u8]) {
        let Some(s) = self.start(tag) else {
            return;
        };
        self.data.extend_from_slice(b);
        self.data.push(0);
        self.done(s);
    }

    /// Logs a record with bytes `b`.
    pub fn log_bytes(&mut self, tag: Tag, b: &[u8]) {
        if enabled(tag) {
            self.put(tag, b);
        }
    }

    /// Room for a transaction's records at once (a request's fit in
    /// `vsl_buffer`), from the thread's pool of buffers.
    #[inline]
    fn room(&mut self) {
        if self.data.capacity() == 0 {
            self.data = POOL
                .with(|p| p.borrow_mut().pop())
                .unwrap_or_else(|| Vec::with_capacity(BUFFER.load(Relaxed).clamp(256, 64 << 10)));
        }
    }

    /// Hands the records to the ring and the emptied buffer to the pool.
    fn publish_and_recycle(&mut self) {
        let mut data = std::mem::take(&mut self.data);
        publish(&data, std::mem::take(&mut self.nrec));
        data.clear();
        if data.capacity() <= 256 << 10 {
            POOL.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < 16 {
                    p.push(data);
                }
            });
        }
    }

    #[inline]
    fn put(&mut self, tag: Tag, b: &[u8]) {
        self.rec(tag, [b]);
    }

    /// Appends one record whose data is `parts` one after the other (cut
    /// at `vsl_reclen`): the header written in place with two stores,
    /// short parts copied without a `memcpy` call, the room checked once.
    /// A request logs about 40 records, so this is most of what the log
    /// costs it; inlined so that the parts' loop unrolls.
    #[inline(always)]
    fn rec<const N: usize>(&mut self, tag: Tag, parts: [&[u8]; N]) {
        self.rec_as(tag, self.kind.byte(), parts);
    }

    /// [`Buf::rec`] with the header's kind byte given (packed records
    /// set [`vapi::record::PACKED`] in it).
    #[inline(always)]
    fn rec_as<const N: usize>(&mut self, tag: Tag, kind: u8, parts: [&[u8]; N]) {
        let mut total = 0;
        for p in &parts {
            total += p.len();
        }
        // Packed records are made to fit; text is cut at `vsl_reclen`.
        let reclen = if kind & vapi::record::PACKED != 0 {
            usize::from(u16::MAX)
        } else {
            RECLEN.load(Relaxed)
        };
        let whole = total <= reclen;
        let len = if whole { total } else { reclen };
        let dst = self.open_record(tag, kind, len);
        // SAFETY: `open_record` left room for `len` bytes at `dst`;
        // exactly those are written before `close_record`.
        unsafe {
            let mut at = 0;
            if whole {
                for p in &parts {
                    copy_short(p.as_ptr(), dst.add(at), p.len());
                    at += p.len();
                }
            } else {
                let mut left = len;
                for p in &parts {
                    let n = p.len().min(left);
                    copy_short(p.as_ptr(), dst.add(at), n);
                    at += n;
                    left -= n;
                }
            }
            self.close_record(len);
        }
        self.done_record();
    }

    /// Starts a record of `len` bytes of data: room for it, its header
    /// written; returns where its data goes. The caller writes exactly
    /// `len` bytes there, then calls [`Buf::close_record`].
    #[inline(always)]
    fn open_record(&mut self, tag: Tag, kind: u8, len: usize) -> *mut u8 {
        let need = vapi::record::HEADER + len;
        if self.data.capacity() - self.data.len() < need {
            self.grow(need);
        }
        let word = vapi::record::header_word(self.vxid, tag as u8, kind, len as u16);
        // SAFETY: there is room for `need` bytes past the length; the
        // header is written here (the length stays until `close_record`).
        unsafe {
            let dst = self.data.as_mut_ptr().add(self.data.len());
            std::ptr::write_unaligned(dst as *mut u64, word.to_le());
            dst.add(vapi::record::HEADER)
        }
    }

    /// Ends a record [`Buf::open_record`] started.
    ///
    /// # Safety
    /// The record's `len` bytes of data have been written.
    #[inline(always)]
    unsafe fn close_record(&mut self, len: usize) {
        let l = self.data.len() + vapi::record::HEADER + len;
        // SAFETY: the header and (by the caller) the data are written.
        unsafe { self.data.set_len(l) }
    }

    /// Room for `need` more bytes (the first record takes a buffer from
    /// the pool).
    #[cold]
    fn grow(&mut self, need: usize) {
        self.room();
        self.data.reserve(need);
    }

    /// Logs a formatted record (`buf.logf(Tag::Length, format_args!(…))`),
    /// formatted straight into the buffer.
    pub fn logf(&mut self, tag: Tag, args: std::fmt::Arguments<'_>) {
        if !enabled(tag) {
            return;
        }
        self.room();
        let start = self.data.len();
        vapi::record::encode_header(&mut self.data, self.vxid, tag as u8, self.kind, 0);
        let body = self.data.len();
        let _ = Adapter(&mut self.data).write_fmt(args);
        let len = (self.data.len() - body).min(RECLEN.load(Relaxed));
        self.data.truncate(body + len);
        let at = start + vapi::record::LEN_AT;
        self.data[at..at + 2].copy_from_slice(&(len as u16).to_le_bytes());
        self.done_record();
    }

    fn done_record(&mut self) {
        self.nrec += 1;
        if self.data.len() >= BUFFER.load(Relaxed) {
            self.flush();
        }
    }

    /// Starts a record written piece by piece (the hot records, without
    /// the formatter); `None` when the tag is masked. [`Buf::done`] ends
    /// it.
    #[inline]
    fn start(&mut self, tag: Tag) -> Option<usize> {
        if !enabled(tag) {
            return None;
        }
        self.room();
        let start = self.data.len();
        vapi::record::encode_header(&mut self.data, self.vxid, tag as u8, self.kind, 0);
        Some(start)
    }

    /// Ends a record [`Buf::start`] began: its length (cut at
    /// `vsl_reclen`) goes in its header.
    #[inline]
    fn done(&mut self, start: usize) {
        let body = start + vapi::record::HEADER;
        let len = (self.data.len() - body).min(RECLEN.load(Relaxed));
        self.data.truncate(body + len);
        let at = start + vapi::record::LEN_AT;
        self.data[at..at + 2].copy_from_slice(&(len as u16).to_le_bytes());
        self.done_record();
    }

    /// `Timestamp LABEL: now since_start since_last`, moving `t_last`.
    pub fn ts(&mut self, label: &str, now: f64) {
        let (d0, d1) = (now - self.t_start, now - self.t_last);
        self.t_last = now;
        if !enabled(Tag::Timestamp) {
            return;
        }
        // (A long label, from `std.timestamp()`, goes as text: cut at
        // `vsl_reclen`, which is what varnishd shows of it.)
        if packable() && label.len() <= 32 {
            let k = self.kind.byte() | vapi::record::PACKED;
            self.rec_as(
                Tag::Timestamp,
                k,
                [
                    &[Packed::Timestamp as u8],
                    &now.to_le_bytes(),
                    &d0.to_le_bytes(),
                    &d1.to_le_bytes(),
                    label.as_bytes(),
                ],
            );
            return;
        }
        let (mut a, mut b, mut c) = ([0u8; F6], [0u8; F6], [0u8; F6]);
        self.rec(
            Tag::Timestamp,
            [
                label.as_bytes(),
                b": ",
                fmt_fixed6(&mut a, now),
                b" ",
                fmt_fixed6(&mut b, d0),
                b" ",
                fmt_fixed6(&mut c, d1),
            ],
        );
    }

    /// A record `WORD NUMBER WORD` (`Begin req 1000 rxreq`, `Link bereq
    /// 1002 fetch`).
    pub fn link(&mut self, tag: Tag, kind: &str, vxid: u64, reason: &str) {
        if !enabled(tag) {
            return;
        }
        if packable() && kind.len() + reason.len() <= 64 {
            let k = self.kind.byte() | vapi::record::PACKED;
            self.rec_as(
                tag,
                k,
                [
                    &[Packed::Link as u8],
                    &vxid.to_le_bytes(),
                    &[kind.len() as u8],
                    kind.as_bytes(),
                    reason.as_bytes(),
                ],
            );
            return;
        }
        let mut v = [0u8; 20];
        self.rec(
            tag,
            [
                kind.as_bytes(),
                b" ",
                fmt_u64(&mut v, vxid),
                b" ",
                reason.as_bytes(),
            ],
        );
    }

    /// A record of numbers separated by spaces (`ReqAcct`, `Length`,
    /// `RespStatus`).
    pub fn numbers(&mut self, tag: Tag, ns: &[u64]) {
        if !enabled(tag) {
            return;
        }
        // Built on the stack, then one record (up to six numbers: the
        // longest, `ReqAcct`, has six).
        if packable() {
            let mut line = [0u8; 1 + 6 * 8];
            line[0] = Packed::Numbers as u8;
            let mut end = 1;
            for n in ns.iter().take(6) {
                line[end..end + 8].copy_from_slice(&n.to_le_bytes());
                end += 8;
            }
            let k = self.kind.byte() | vapi::record::PACKED;
            self.rec_as(tag, k, [&line[..end]]);
            return;
        }
        let mut line = [0u8; 6 * 21];
        let mut end = 0;
        for (i, n) in ns.iter().take(6).enumerate() {
            if i > 0 {
                line[end] = b' ';
                end += 1;
            }
            let mut d = [0u8; 20];
            let d = fmt_u64(&mut d, *n);
            line[end..end + d.len()].copy_from_slice(d);
            end += d.len();
        }
        self.rec(tag, [&line[..end]]);
    }

    /// Hands the records so far to the ring.
    pub fn flush(&mut self) {
        if !self.data.is_empty() {
            self.publish_and_recycle();
        }
    }
}

impl Default for Buf {
    fn default() -> Self {
        Buf::new(0, Kind::None, 0.0)
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if self.end_on_drop {
            self.end_records();
        } else if let Some(f) = self.follow.take() {
            // Its owner goes on with it: parked, not published. Records
            // appended meanwhile (see [`Follow::append`]) come after.
            if let Ok(mut p) = f.parked.lock() {
                let mut data = std::mem::take(&mut self.data);
                let mut nrec = std::mem::take(&mut self.nrec);
                if let Some((more, n, _)) = p.take() {
                    data.extend_from_slice(&more);
                    nrec += n;
                }
                *p = Some((data, nrec, self.t_last));
                return;
            }
        }
        if !self.data.is_empty() {
            self.publish_and_recycle();
        }
    }
}

/// A transaction that outlives its first buffer (see [`Buf::follow`]).
pub struct Follow {
    vxid: AtomicU64,
    parked: Mutex<Option<(Vec<u8>, u64, f64)>>,
}

impl Follow {
    /// The transaction's VXID now.
    pub fn vxid(&self) -> u64 {
        self.vxid.load(Relaxed)
    }

    /// A buffer that goes on where the dropped one stopped (its records
    /// and its last timestamp); `t_start` is the transaction's start.
    pub fn resume(&self, t_start: f64) -> Buf {
        let mut b = Buf::new(self.vxid(), Kind::Client, t_start);
        if let Some((data, nrec, t_last)) = self.parked.lock().ok().and_then(|mut p| p.take()) {
            b.data = data;
            b.nrec = nrec;
            b.t_last = t_last;
        }
        b
    }
}

impl Follow {
    /// Adds records to the transaction from elsewhere while its owner
    /// goes on (an ESI include's `Link` in its parent's log, written
    /// while the parent delivers): they join what is parked.
    pub fn append(&self, f: impl FnOnce(&mut Buf)) {
        let Ok(mut p) = self.parked.lock() else {
            return;
        };
        let (data, nrec, t_last) = p.take().unwrap_or((Vec::new(), 0, 0.0));
        let mut b = Buf::new(self.vxid(), Kind::Client, t_last);
        b.data = data;
        b.nrec = nrec;
        f(&mut b);
        *p = Some((
            std::mem::take(&mut b.data),
            std::mem::take(&mut b.nrec),
            t_last,
        ));
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        // Records nobody resumed still go to the ring.
        if let Some((data, nrec, _)) = self.parked.get_mut().ok().and_then(|p| p.take()) {
            publish(&data, nrec);
        }
    }
}

/// A record outside any transaction (VXID 0: CLI traffic, probes),
/// written to the ring at once.
pub fn log0(tag: Tag, args: std::fmt::Arguments<'_>) {
    let mut b = Buf::new(0, Kind::None, 0.0);
    b.logf(tag, args);
}

/// A reader's place in the ring.
pub struct Cursor {
    ring: &'static Mutex<Ring>,
    /// Offset of the next batch to read, and the number of its first
    /// record.
    next: u64,
    next_rec: u64,
}

impl Cursor {
    /// At the oldest record the ring holds (`varnishlog -d`).
    pub fn head() -> Cursor {
        Cursor::head_of(&RING)
    }

    fn head_of(ring: &'static Mutex<Ring>) -> Cursor {
        let r = ring.lock().unwrap_or_else(|p| p.into_inner());
        match r.slots.front() {
            Some(s) => Cursor {
                ring,
                next: s.start,
                next_rec: s.first_rec,
            },
            None => Cursor {
                ring,
                next: r.head,
                next_rec: r.next_rec,
            },
        }
    }

    /// After the newest record: only what comes next.
    pub fn tail() -> Cursor {
        Cursor::tail_of(&RING)
    }

    fn tail_of(ring: &'static Mutex<Ring>) -> Cursor {
        let r = ring.lock().unwrap_or_else(|p| p.into_inner());
        Cursor {
            ring,
            next: r.head,
            next_rec: r.next_rec,
        }
    }

    /// Appends to `out` the batches past the cursor (whole batches, about
    /// `max` bytes at most, so writers wait little), and returns how many
    /// records the cursor lost because the ring wrote over them before it
    /// read them.
    pub fn read(&mut self, max: usize, out: &mut Vec<u8>) -> u64 {
        let r = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let Some(front) = r.slots.front() else {
            return 0;
        };
        let mut lost = 0;
        if front.start > self.next {
            lost = front.first_rec.saturating_sub(self.next_rec);
            self.next = front.start;
            self.next_rec = front.first_rec;
        }
        let i = r.slots.partition_point(|s| s.start < self.next);
        let mut taken = 0;
        for s in r.slots.iter().skip(i) {
            if taken > 0 && taken + s.len as usize > max {
                break;
            }
            let hdr = vapi::shm::BATCH_HDR;
            r.copy_out(s.start + hdr as u64, s.len as usize - hdr, out);
            taken += s.len as usize;
            self.next = s.start + u64::from(s.len);
            self.next_rec = s.first_rec + u64::from(s.nrec);
        }
        lost
    }

    /// Whether nothing is past the cursor now.
    pub fn at_end(&self) -> bool {
        let r = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        self.next >= r.head
    }

    /// Waits until something may be past the cursor.
    pub async fn wait(&self) {
        struct Waiting;
        impl Drop for Waiting {
            fn drop(&mut self) {
                WAITING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let n = NOTIFY.notified();
        tokio::pin!(n);
        n.as_mut().enable();
        WAITING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _w = Waiting;
        if self.at_end() {
            n.await;
        }
    }
}

/// Which HTTP message a record describes, for its tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Http {
    Req,
    Resp,
    Bereq,
    Beresp,
    Obj,
}

impl Http {
    /// (method, URL, protocol, status, reason, header, unset) tags.
    fn tags(self) -> [Tag; 7] {
        use Tag::*;
        match self {
            Http::Req => [
                ReqMethod,
                ReqURL,
                ReqProtocol,
                ReqStatus,
                ReqReason,
                ReqHeader,
                ReqUnset,
            ],
            Http::Resp => [
                RespMethod,
                RespURL,
                RespProtocol,
                RespStatus,
                RespReason,
                RespHeader,
                RespUnset,
            ],
            Http::Bereq => [
                BereqMethod,
                BereqURL,
                BereqProtocol,
                BereqStatus,
                BereqReason,
                BereqHeader,
                BereqUnset,
            ],
            Http::Beresp => [
                BerespMethod,
                BerespURL,
                BerespProtocol,
                BerespStatus,
                BerespReason,
                BerespHeader,
                BerespUnset,
            ],
            Http::Obj => [
                ObjMethod,
                ObjURL,
                ObjProtocol,
                ObjStatus,
                ObjReason,
                ObjHeader,
                ObjUnset,
            ],
        }
    }

    /// The message `w` names in VCL.
    pub fn of(w: vcl_to_wasm::tir::HttpWhere) -> Http {
        use vcl_to_wasm::tir::HttpWhere as W;
        match w {
            W::Req | W::ReqTop => Http::Req,
            W::Bereq => Http::Bereq,
            W::Beresp => Http::Beresp,
            W::Resp => Http::Resp,
            W::Obj => Http::Obj,
        }
    }
}

impl Buf {
    /// A request line and its headers (`ReqMethod`, `ReqURL`,
    /// `ReqProtocol`, `ReqHeader`…).
    pub fn http_req(&mut self, h: Http, m: &crate::vrt_ctx::ReqMsg) {
        let t = h.tags();
        self.log(t[0], &m.method);
        self.log(t[1], &m.url);
        self.log(t[2], &m.proto);
        self.headers(h, &m.headers);
    }

    /// A status line and its headers (`RespProtocol`, `RespStatus`,
    /// `RespReason`, `RespHeader`…).
    pub fn http_resp(&mut self, h: Http, m: &crate::vrt_ctx::RespMsg) {
        self.status_line(h, m);
        self.headers(h, &m.headers);
    }

    /// A status line alone (`RespProtocol`, `RespStatus`, `RespReason`).
    pub fn status_line(&mut self, h: Http, m: &crate::vrt_ctx::RespMsg) {
        let t = h.tags();
        self.log(t[2], &m.proto);
        self.numbers(t[3], &[u64::from(m.status)]);
        self.log(t[4], &m.reason);
    }

    /// Every header, one record each.
    pub fn headers(&mut self, h: Http, headers: &[(String, String)]) {
        let tag = h.tags()[5];
        if !enabled(tag) {
            return;
        }
        if packable() && self.headers_packed(tag, headers) {
            return;
        }
        for (n, v) in headers {
            self.header(h, n, v);
        }
    }

    /// All of `headers` as one packed record (readers make a record of
    /// each), when each fits in `vsl_reclen` as text and all in one
    /// record; else false and nothing written. A request logs its
    /// headers twice (request and response), so a record each was a
    /// quarter of what the log cost it.
    fn headers_packed(&mut self, tag: Tag, headers: &[(String, String)]) -> bool {
        let reclen = RECLEN.load(Relaxed);
        let mut total = 1;
        for (n, v) in headers {
            let l = n.len() + v.len();
            if l + 2 > reclen {
                return false;
            }
            total += 4 + l;
        }
        if headers.is_empty() || total > 32 << 10 {
            return false;
        }
        let dst = self.open_record(tag, self.kind.byte() | vapi::record::PACKED, total);
        // SAFETY: `open_record` left room for `total` bytes at `dst`, and
        // exactly those are written (the format byte, then per header 4
        // bytes of lengths, the name and the value) before `close_record`.
        unsafe {
            *dst = Packed::Headers as u8;
            let mut at = 1;
            for (n, v) in headers {
                let lens = n.len() as u32 | (v.len() as u32) << 16;
                std::ptr::write_unaligned(dst.add(at) as *mut u32, lens.to_le());
                at += 4;
                copy_short(n.as_ptr(), dst.add(at), n.len());
                at += n.len();
                copy_short(v.as_ptr(), dst.add(at), v.len());
                at += v.len();
            }
            self.close_record(total);
        }
        self.nrec += headers.len() as u64 - 1;
        self.done_record();
        true
    }

    /// One header set: `ReqHeader name: value`.
    pub fn header(&mut self, h: Http, name: &str, value: &str) {
        self.pair(h.tags()[5], name, value);
    }

    /// A record `NAME: VALUE` (headers), without the formatter.
    fn pair(&mut self, tag: Tag, name: &str, value: &str) {
        if !enabled(tag) {
            return;
        }
        self.rec(tag, [name.as_bytes(), b": ", value.as_bytes()]);
    }

    /// The headers named `name` about to be removed: `ReqUnset name: v`.
    pub fn unset(&mut self, h: Http, headers: &crate::cache_obj::Headers, name: &str) {
        let tag = h.tags()[6];
        if !enabled(tag) {
            return;
        }
        for (n, v) in headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)) {
            self.pair(tag, n, v);
        }
    }

    /// A header replaced: the old ones unset, the new one set (as VCL's
    /// `set req.http.x = …` logs).
    pub fn replace(
        &mut self,
        h: Http,
        headers: &crate::cache_obj::Headers,
        name: &str,
        value: &str,
    ) {
        self.unset(h, headers, name);
        self.header(h, name, value);
    }

    /// `VCL_call` before a subroutine runs.
    pub fn vcl_call(&mut self, m: vcl_to_wasm::types::Method) {
        use vcl_to_wasm::types::Method as M;
        let name = match m {
            M::Recv => "RECV",
            M::Pipe => "PIPE",
            M::Pass => "PASS",
            M::Hash => "HASH",
            M::Purge => "PURGE",
            M::Miss => "MISS",
            M::Hit => "HIT",
            M::Deliver => "DELIVER",
            M::Synth => "SYNTH",
            M::BackendFetch => "BACKEND_FETCH",
            M::BackendResponse => "BACKEND_RESPONSE",
            M::BackendError => "BACKEND_ERROR",
            M::Init => "INIT",
            M::Fini => "FINI",
        };
        self.log(Tag::VCL_call, name);
    }

    /// `VCL_return` after it (its `return`, or the one the builtin VCL
    /// falls to), and `VCL_Error` for a failure.
    pub fn vcl_return<E: std::fmt::Display>(
        &mut self,
        m: vcl_to_wasm::types::Method,
        r: &Result<Option<vcl_to_wasm::types::Action>, E>,
    ) {
        use vcl_to_wasm::types::{Action, Method};
        match r {
            Ok(Some(a)) => self.log(Tag::VCL_return, a.name()),
            Ok(None) => {
                let a = match m {
                    Method::Recv => Action::Hash,
                    Method::Hash => Action::Lookup,
                    Method::Miss | Method::Pass | Method::BackendFetch => Action::Fetch,
                    Method::Pipe => Action::Pipe,
                    Method::Purge => Action::Synth,
                    _ => Action::Deliver,
                };
                self.log(Tag::VCL_return, a.name())
            }
            Err(e) => {
                self.logf(Tag::VCL_Error, format_args!("{e}"));
                self.log(Tag::VCL_return, "fail");
            }
        }
    }
}

/// VCL sets a variable that is part of an HTTP message (`req.url`,
/// `resp.status`, …): the new value is logged, as Varnish does.
pub fn vrt_set(b: &mut Buf, var: &str, value: &dyn std::fmt::Display) {
    let (h, i) = match var {
        "req.method" => (Http::Req, 0),
        "req.url" => (Http::Req, 1),
        "req.proto" => (Http::Req, 2),
        "bereq.method" => (Http::Bereq, 0),
        "bereq.url" => (Http::Bereq, 1),
        "bereq.proto" => (Http::Bereq, 2),
        "beresp.proto" => (Http::Beresp, 2),
        "beresp.status" => (Http::Beresp, 3),
        "beresp.reason" => (Http::Beresp, 4),
        "resp.proto" => (Http::Resp, 2),
        "resp.status" => (Http::Resp, 3),
        "resp.reason" => (Http::Resp, 4),
        _ => return,
    };
    b.logf(h.tags()[i], format_args!("{value}"));
}

/// VCL sets (`Some`) or unsets (`None`) a header of `w`: logs the old
/// values unset and the new one set.
pub fn vrt_hdr(
    t: &mut crate::vrt_ctx::Task,
    w: vcl_to_wasm::tir::HttpWhere,
    name: &str,
    value: Option<&str>,
) {
    use vcl_to_wasm::tir::HttpWhere as W;
    let hs = match w {
        W::Req | W::ReqTop => &t.req.headers,
        W::Bereq => &t.bereq.headers,
        W::Beresp => &t.beresp.headers,
        W::Resp => &t.resp.headers,
        W::Obj => return,
    };
    let h = Http::of(w);
    t.vsl.unset(h, hs, name);
    if let Some(v) = value {
        t.vsl.header(h, name, v);
    }
}

/// The log of a request that is not a session's (an ESI include of the
/// request `parent`, or a request handled without a session): `Begin req
/// PARENT esi|rxreq`, timestamps, `VCL_use` and the request. Ends when
/// its task does.
pub fn req_begin(
    ctx: &crate::cache_req_fsm::Ctx,
    req: &crate::vrt_ctx::ReqMsg,
    esi_level: u32,
    parent: u64,
    req_start: Option<&str>,
    ae_forced: bool,
) -> Buf {
    let now = crate::vrt_ctx::now();
    let mut b = Buf::new(ctx.next_xid(), Kind::Client, now).end_on_drop();
    b.link(
        Tag::Begin,
        "req",
        parent,
        if esi_level > 0 { "esi" } else { "rxreq" },
    );
    b.ts("Start", now);
    if esi_level == 0 {
        // An include was never received: Varnish logs no `Req` for it.
        b.ts("Req", now);
    }
    if esi_level > 0 {
        // An include's URL is set on a copy of the parent's request
        // before the request is logged whole (Varnish's `ved_include`);
        // it runs in the VCL its top request started in, unannounced.
        b.log(Tag::ReqURL, &req.url);
        // A gzip page asks its fragments for gzip: `ved_include` forces
        // the header before the copy is logged, which shows when it
        // changed it (`ae_forced`).
        if ae_forced {
            b.pair(Tag::ReqHeader, "Accept-Encoding", "gzip");
        }
        if let Some(s) = req_start {
            b.log(Tag::ReqStart, s);
        }
    } else if enabled(Tag::VCL_use) {
        b.log(Tag::VCL_use, &ctx.active_name());
    }
    b.http_req(Http::Req, req);
    b
}

/// The headers Varnish's request preparation may change, as they were.
pub fn prep_snapshot(h: &crate::cache_obj::Headers) -> crate::cache_obj::Headers {
    if !enabled(Tag::ReqHeader) {
        return Vec::new();
    }
    h.iter()
        .filter(|(n, _)| PREP.iter().any(|p| n.eq_ignore_ascii_case(p)))
        .cloned()
        .collect()
}

const PREP: [&str; 3] = ["x-forwarded-for", "cache-control", "accept-encoding"];

/// Logs what request preparation changed (`ReqUnset` of the old values,
/// `ReqHeader` of the new), as Varnish's `cnt_recv_prep` does.
pub fn prep_changes(
    b: &mut Buf,
    before: &crate::cache_obj::Headers,
    after: &crate::cache_obj::Headers,
) {
    if !enabled(Tag::ReqHeader) {
        return;
    }
    if before.is_empty() {
        // The client sent none of them (the usual case): whatever is
        // there now is new.
        for name in PREP {
            for (n, v) in after.iter().filter(|h| h.0.eq_ignore_ascii_case(name)) {
                b.pair(Tag::ReqHeader, n, v);
            }
        }
        return;
    }
    for name in PREP {
        let named = |h: &&(String, String)| h.0.eq_ignore_ascii_case(name);
        if before.iter().filter(named).eq(after.iter().filter(named)) {
            continue;
        }
        for (n, v) in before.iter().filter(named) {
            b.pair(Tag::ReqUnset, n, v);
        }
        for (n, v) in after.iter().filter(named) {
            b.pair(Tag::ReqHeader, n, v);
        }
    }
}

/// Ends a transaction whose buffer is gone (`End`).
pub fn end_txn(f: &Follow) {
    f.resume(0.0).end();
}

/// The lookup found `obj`: `Hit XID TTL GRACE KEEP` (time left to live,
/// then the grace and keep it has), or for a hit-for-pass/miss marker
/// `HitPass`/`HitMiss XID TTL`.
pub fn hit(b: &mut Buf, tag: Tag, obj: &crate::cache_obj::Object) {
    if !enabled(tag) {
        return;
    }
    let left = obj.fresh_until() - crate::vrt_ctx::now();
    if packable() {
        let k = b.kind.byte() | vapi::record::PACKED;
        let xid = obj.xid.to_le_bytes();
        if tag == Tag::Hit {
            let (g, kp) = (obj.grace.to_le_bytes(), obj.keep.to_le_bytes());
            b.rec_as(
                tag,
                k,
                [&[Packed::Hit as u8], &xid, &left.to_le_bytes(), &g, &kp],
            );
        } else {
            b.rec_as(tag, k, [&[Packed::Hit as u8], &xid, &left.to_le_bytes()]);
        }
        return;
    }
    let mut x = [0u8; 20];
    let (mut t, mut g, mut k) = ([0u8; F6], [0u8; F6], [0u8; F6]);
    let xid = fmt_u64(&mut x, obj.xid);
    let ttl = fmt_fixed6(&mut t, left);
    if tag == Tag::Hit {
        let grace = fmt_fixed6(&mut g, obj.grace);
        let keep = fmt_fixed6(&mut k, obj.keep);
        b.rec(tag, [xid, b" ", ttl, b" ", grace, b" ", keep]);
    } else {
        b.rec(tag, [xid, b" ", ttl]);
    }
}

/// A backend request's buffer (its `Begin` is logged when the fetch
/// starts, knowing what kind it is).
pub fn bereq_buf(vxid: u64, parent: u64, now: f64) -> Buf {
    let mut b = Buf::new(vxid, Kind::Backend, now).end_on_drop();
    b.parent = parent;
    b.bereq_acct = Some([0; 4]);
    b
}

/// A backend request retried (Varnish's `vbf_stp_retry`): `Timestamp
/// Retry`, `Link bereq NEW retry` and the end of this transaction; the
/// fetch goes on as `NEW` (the task's new XID), begun `bereq OLD retry`,
/// with the backend request logged again.
pub fn bereq_retry(bo: &mut crate::vrt_ctx::Task) {
    let new = bo.xid;
    let now = crate::vrt_ctx::now();
    bo.vsl.ts("Retry", now);
    bo.vsl.link(Tag::Link, "bereq", new, "retry");
    let old = bo.vsl.vxid();
    let mut done = std::mem::replace(&mut bo.vsl, bereq_buf(new, old, now));
    // Varnish accounts a retried attempt's bytes with the next one.
    done.bereq_acct = None;
    done.end();
    bo.vsl.link(Tag::Begin, "bereq", old, "retry");
    bo.vsl.ts("Start", now);
    // The request goes on as VCL left it (r01512), logged whole, with
    // the new VXID in `X-Varnish`.
    bo.vsl.http_req(Http::Bereq, &bo.bereq);
    let x = new.to_string();
    bo.vsl
        .replace(Http::Bereq, &bo.bereq.headers, "X-Varnish", &x);
    crate::cache_obj::hdr_set(&mut bo.bereq.headers, "X-Varnish", &x);
}

/// The start of a backend request's log: `Begin bereq PARENT
/// fetch|pass|bgfetch`, `VCL_use`, `Timestamp Start` and the request.
pub fn bereq_begin(bo: &mut crate::vrt_ctx::Task, vcl: &str) {
    let how = if bo.is_bgfetch {
        "bgfetch"
    } else if bo.bereq_uncacheable {
        "pass"
    } else {
        "fetch"
    };
    let b = &mut bo.vsl;
    let parent = b.parent;
    b.link(Tag::Begin, "bereq", parent, how);
    b.log(Tag::VCL_use, vcl);
    let t0 = b.t_start;
    b.ts("Start", t0);
    // As Varnish's `vbf_stp_mkbereq` logs it: the copy of the request,
    // then each change (see `MkBereq`).
    let mk = &bo.mkbereq;
    let m = &bo.bereq;
    b.log(
        Tag::BereqMethod,
        if mk.was_head { "HEAD" } else { &m.method },
    );
    b.log(Tag::BereqURL, &m.url);
    b.log(
        Tag::BereqProtocol,
        mk.old_proto.as_deref().unwrap_or(&m.proto),
    );
    if !mk.was_head && mk.old_proto.is_none() {
        b.headers(Http::Bereq, &m.headers);
        return;
    }
    let cut = m.headers.len().saturating_sub(mk.added);
    let (copy, mut tail) = m.headers.split_at(cut);
    b.headers(Http::Bereq, copy);
    if mk.was_head {
        b.log(Tag::BereqMethod, &m.method);
    }
    if mk.gzip_added && !tail.is_empty() {
        b.headers(Http::Bereq, &tail[..1]);
        tail = &tail[1..];
    }
    if mk.old_proto.is_some() {
        b.log(Tag::BereqProtocol, &m.proto);
    }
    b.headers(Http::Bereq, tail);
}

/// The backend request of a `pipe` (Varnish's `cnt_pipe`): `Link bereq
/// VXID pipe` in the request's log; its own log begun (`Begin bereq REQ
/// pipe`, `Timestamp Start`, the request as `vcl_pipe` will see it).
/// [`crate::cache_pipe::run`] goes on with it.
pub fn pipe_begin(vxid: u64, t: &mut crate::vrt_ctx::Task) -> Buf {
    t.vsl.link(Tag::Link, "bereq", vxid, "pipe");
    let mut b = bereq_buf(vxid, t.xid, crate::vrt_ctx::now());
    b.link(Tag::Begin, "bereq", t.xid, "pipe");
    let t0 = b.t_start;
    b.ts("Start", t0);
    b.http_req(Http::Bereq, &t.bereq);
    b
}

/// Varnish's text for a fetch error (`FetchError`), prefixed with the
/// backend's name where Varnish names it.
pub fn fetch_error(backend: &str, e: &crate::cache_http1_fetch::FetchError) -> String {
    use crate::cache_http1_fetch::FetchError as E;
    match e {
        E::Connect { err, .. } => {
            let errno = err.raw_os_error().unwrap_or(0);
            let text = err.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text);
            format!("backend {backend}: fail errno {errno} ({text})")
        }
        E::ConnectTimeout(_) => format!("backend {backend}: fail errno 110 (Connection timed out)"),
        E::FirstByteTimeout => "first byte timeout".into(),
        E::BetweenBytesTimeout => "between bytes timeout".into(),
        E::Closed => "HTC eof (-1)".into(),
        E::TooLong => "http format error".into(),
        E::Truncated => "straight insufficient bytes".into(),
        e => format!("backend {backend}: {e}"),
    }
}

/// A backend connection used for a request: `Timestamp Connected`,
/// `BackendOpen FD NAME IP PORT LOCALIP LOCALPORT connect|reuse`,
/// `Timestamp Bereq`, `Timestamp Beresp`, and the response as received.
pub fn backend_open(
    b: &mut Buf,
    be: &crate::cache_backend::Backend,
    r: &crate::cache_http1_fetch::BodyReader,
    resp: &crate::vrt_ctx::RespMsg,
) {
    let (ip, port) = be
        .addr
        .map(|a| (a.ip().to_string(), a.port()))
        .unwrap_or_default();
    let (lip, lport) = r
        .local
        .map(|a| (a.ip().to_string(), a.port()))
        .unwrap_or_default();
    if let Some((fd, t)) = r.retried {
        // The pooled connection the request went out on first, and found
        // closed.
        b.ts("Connected", t);
        b.logf(
            Tag::BackendOpen,
            format_args!("{fd} {} {ip} {port} {lip} {lport} reuse", be.name),
        );
        b.ts("Bereq", t);
        b.log(Tag::FetchError, "HTC eof (-1)");
        b.logf(Tag::BackendClose, format_args!("{fd} {} close", be.name));
    }
    b.ts("Connected", r.t_connected);
    b.logf(
        Tag::BackendOpen,
        format_args!(
            "{} {} {ip} {port} {lip} {lport} {}",
            r.fd,
            be.name,
            if r.reused { "reuse" } else { "connect" }
        ),
    );
    b.ts("Bereq", r.t_bereq);
    b.ts("Beresp", r.t_beresp);
    b.http_resp(Http::Beresp, resp);
}

/// `TTL RFC TTL GRACE KEEP NOW ORIGIN DATE EXPIRES MAX-AGE cacheable`,
/// the lifetime the response's headers give.
pub fn ttl_rfc(bo: &mut crate::vrt_ctx::Task, lt: &crate::cache_expire::Lifetime, now: f64) {
    // A pass makes a private object: Varnish keeps only its origin time
    // and logs no TTL.
    if !enabled(Tag::TTL) || bo.bereq_uncacheable {
        return;
    }
    let h = &bo.beresp.headers;
    let date = crate::cache_obj::hdr_get(h, "date")
        .and_then(crate::cache_expire::parse_http_date)
        .unwrap_or(0.0);
    let expires = crate::cache_obj::hdr_get(h, "expires")
        .and_then(crate::cache_expire::parse_http_date)
        .unwrap_or(0.0);
    let max_age = crate::cache_obj::hdr_get(h, "cache-control")
        .and_then(|cc| {
            cc.split(',').find_map(|d| {
                let (k, v) = d.trim().split_once('=')?;
                (k.eq_ignore_ascii_case("s-maxage") || k.eq_ignore_ascii_case("max-age"))
                    .then(|| v.trim().parse::<u32>().ok())
                    .flatten()
            })
        })
        .unwrap_or(0);
    let what = if bo.uncacheable {
        "uncacheable"
    } else {
        "cacheable"
    };
    bo.vsl.logf(
        Tag::TTL,
        format_args!(
            "RFC {:.0} {:.0} {:.0} {now:.0} {:.0} {date:.0} {expires:.0} {max_age} {what}",
            lt.ttl, lt.grace, lt.keep, lt.t_origin
        ),
    );
}

/// VCL changed the object's lifetime (`beresp.ttl`, `.grace`, `.keep`,
/// `.uncacheable`): `TTL VCL TTL GRACE KEEP ORIGIN cacheable|uncacheable`,
/// the TTL counted from the origin, all rounded to seconds.
pub fn ttl_vcl(t: &mut crate::vrt_ctx::Task) {
    if !enabled(Tag::TTL) {
        return;
    }
    let what = if t.uncacheable {
        "uncacheable"
    } else {
        "cacheable"
    };
    let origin = t.beresp_time - t.beresp_age;
    t.vsl.logf(
        Tag::TTL,
        format_args!(
            "VCL {:.0} {:.0} {:.0} {origin:.0} {what}",
            t.ttl, t.grace, t.keep
        ),
    );
}

/// Where the fetched object is stored: `Storage malloc s0` when it is
/// cached, `Storage malloc Transient` when not.
pub fn storage(
    b: &mut Buf,
    obj: &std::sync::Arc<crate::cache_obj::Object>,
    insert: Option<&std::sync::Arc<crate::cache_obj::Object>>,
) {
    let cached = insert.is_some_and(|i| std::sync::Arc::ptr_eq(i, obj));
    b.log(
        Tag::Storage,
        if cached {
            "malloc s0"
        } else {
            "malloc Transient"
        },
    );
}

/// The body is in: `Timestamp BerespBody` (when one was `received`)
/// and `Length`.
pub fn body_done(b: &mut Buf, obj: &crate::cache_obj::Object, received: bool) {
    if received {
        b.ts("BerespBody", crate::vrt_ctx::now());
    }
    b.numbers(Tag::Length, &[obj.body.len()]);
}

/// CLI traffic (VXID 0), before the command runs: `CLI Rd COMMAND`.
pub fn cli_rd(words: &[String]) {
    if !enabled(Tag::CLI) {
        return;
    }
    // What varnishd's child is told: a VCL is loaded by name whichever
    // way it came (`vcl.inline` carries its source, which is not logged).
    if let (Some("vcl.inline" | "vcl.load"), Some(name)) =
        (words.first().map(String::as_str), words.get(1))
    {
        log0(Tag::CLI, format_args!("Rd vcl.load \"{name}\" 1auto"));
        return;
    }
    let cmd: Vec<&str> = words
        .iter()
        .map(|w| if w.contains('\n') { "<<" } else { w.as_str() })
        .collect();
    log0(Tag::CLI, format_args!("Rd {}", cmd.join(" ")));
}

/// CLI traffic (VXID 0), the answer: `CLI Wr STATUS LEN BODY`, `reply`
/// being the framed answer (`STATUS LEN\nBODY\n`).
pub fn cli_wr(reply: &str) {
    if !enabled(Tag::CLI) {
        return;
    }
    let (head, body) = reply.split_once('\n').unwrap_or((reply, ""));
    let mut it = head.split_whitespace();
    let status = it.next().unwrap_or("");
    let len = it.next().unwrap_or("");
    log0(
        Tag::CLI,
        format_args!("Wr {status} {len} {}", body.trim_end_matches('\n')),
    );
}

/// A `Backend_health` record, its fields as Varnish writes them.
pub fn backend_health(line: std::fmt::Arguments<'_>) {
    if !enabled(Tag::Backend_health) {
        return;
    }
    log0(Tag::Backend_health, line);
}

/// A restart (Varnish 7.1's): the request's transaction ends (`Timestamp
/// Restart`, `Link req NEW restart`, `End`) and the request goes on as a
/// new one (`Begin req OLD restart`, `Timestamp Start`, `ReqStart` and
/// the request as it is now) with a new VXID,
/// which `req.xid` and `X-Varnish` then show.
pub fn restart(ctx: &crate::cache_req_fsm::Ctx, t: &mut crate::vrt_ctx::Task) {
    let now = crate::vrt_ctx::now();
    let new = ctx.next_xid();
    let old_xid = t.xid;
    let mut old = std::mem::take(&mut t.vsl);
    old.ts("Restart", now);
    old.link(Tag::Link, "req", new, "restart");
    let mut b = Buf::new(new, Kind::Client, old.t_start);
    b.end_on_drop = old.end_on_drop;
    b.follow = old.follow.take();
    if let Some(c) = &b.follow {
        c.vxid.store(new, Relaxed);
    }
    old.end();
    b.link(Tag::Begin, "req", old_xid, "restart");
    b.t_last = now;
    b.ts("Start", now);
    // The request as it goes on, logged whole as a new one's is.
    if let Some(s) = &t.req_start {
        b.log(Tag::ReqStart, s);
    }
    b.http_req(Http::Req, &t.req);
    t.vsl = b;
    t.xid = new;
}

/// `std::fmt::Write` onto a byte vector.
struct Adapter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Adapter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small ring of its own: batches wrap around its end, a reader
    /// that keeps up sees them all, one that falls behind is told how
    /// many records it lost and goes on from the oldest batch kept.
    #[test]
    fn ring_wraps_and_counts_losses() {
        let ring: &'static Mutex<Ring> = Box::leak(Box::new(Mutex::new(Ring::new())));
        // Room for three batches of 30 bytes and their headers.
        let space = 3 * (30 + vapi::shm::BATCH_HDR) + 10;
        let batch = |i: u8| vec![i; 30];
        let mut fast = Cursor::tail_of(ring);
        let mut slow = Cursor::head_of(ring);
        let mut seen = Vec::new();
        for i in 0..10u8 {
            publish_to(ring, space, &batch(i), 2);
            let mut out = Vec::new();
            assert_eq!(fast.read(1000, &mut out), 0);
            assert_eq!(out, batch(i));
            seen.push(out);
            assert!(fast.at_end());
        }
        assert_eq!(seen.len(), 10);
        // The slow reader lost the 7 batches (14 records) the ring wrote
        // over, then reads the 3 kept, oldest first.
        let mut out = Vec::new();
        assert_eq!(slow.read(1000, &mut out), 14);
        assert_eq!(out, [batch(7), batch(8), batch(9)].concat());
        assert!(slow.at_end());
        // Reads stop near `max`, whole batches only.
        publish_to(ring, space, &batch(10), 1);
        publish_to(ring, space, &batch(11), 1);
        let mut out = Vec::new();
        assert_eq!(slow.read(40, &mut out), 0);
        assert_eq!(out, batch(10));
        // A batch larger than the ring is dropped.
        publish_to(ring, space, &[0; 300], 1);
        let mut out = Vec::new();
        slow.read(1000, &mut out);
        assert_eq!(out, batch(11));
    }

    #[test]
    fn masks() {
        let m = parse_mask(DEFAULT_MASK, [0, 0]).unwrap();
        assert!(show_mask(m).contains("-Debug"));
        let m2 = parse_mask("+Debug,-ReqHeader", m).unwrap();
        let shown = show_mask(m2);
        assert!(!shown.contains("-Debug,") && shown.contains("-ReqHeader"));
        assert_eq!(
            parse_mask("-*", [0, 0])
                .map(show_mask)
                .unwrap()
                .matches(',')
                .count(),
            95
        );
        assert!(parse_mask("Debug", [0, 0]).is_err());
        assert!(parse_mask("-Nope", [0, 0]).is_err());
    }
}
