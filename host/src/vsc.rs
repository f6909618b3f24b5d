//! Counters with varnishstat's names (Varnish's VSC): `MAIN.*`, `MGT.*`,
//! `SMA.<storage>.*` and `VBE.<vcl>.<backend>.*`.
//!
//! A Shellac process is one instance (what varnishd's `-n` names), so the
//! `MAIN` and `MGT` counters are process-wide statics: a hook anywhere in
//! the code is one line (`vsc::MAIN.cache_hit.inc()`). Counters are
//! sharded over cache-line-sized slots picked per thread, so two worker
//! threads counting the same thing never bounce a cache line between
//! cores; a read sums the shards (Varnish's per-worker stats summed into
//! the shared segment, without the batching). Gauges are counters that
//! also go down: their shards are summed with wrapping arithmetic, so a
//! decrement on another thread than the increment still adds up.
//!
//! Values some counters report are not events but state (`MAIN.bans`,
//! `MAIN.n_vcl`, `SMA.s0.g_space`, …): [`snapshot`] reads them from the
//! running instance when the counters are read.
//!
//! Readers: `shellac stat` (over the admin HTTP listener, `/stats`),
//! Prometheus (`/metrics`) and varnishtest's `-expect` (through
//! `shellac stat`). See [`crate::mgt_http`].

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Shards per counter; more than the cores Shellac usually gets.
const SHARDS: usize = 8;

#[repr(align(64))]
struct Slot(AtomicU64);

/// One counter or gauge, sharded per thread.
pub struct Counter([Slot; SHARDS]);

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

#[inline]
fn shard() -> usize {
    SHARD.with(|s| {
        let v = s.get();
        if v != usize::MAX {
            return v;
        }
        let n = NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS;
        s.set(n);
        n
    })
}

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Counter {
        Counter([const { Slot(AtomicU64::new(0)) }; SHARDS])
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0[shard()].0.fetch_add(n, Relaxed);
    }

    /// Takes one away (gauges).
    #[inline]
    pub fn dec(&self) {
        self.sub(1);
    }

    /// Takes `n` away (gauges); a shard may wrap, the sum does not.
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0[shard()].0.fetch_sub(n, Relaxed);
    }

    /// The value now: the sum of the shards.
    pub fn get(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |a, s| a.wrapping_add(s.0.load(Relaxed)))
    }

    /// Sets a gauge that only one place writes (not atomic against
    /// concurrent `add`s).
    pub fn set(&self, v: u64) {
        for s in &self.0[1..] {
            s.0.store(0, Relaxed);
        }
        self.0[0].0.store(v, Relaxed);
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

/// A counter that is not hot (per backend): one atomic, same interface
/// as [`Counter`].
pub struct Single(AtomicU64);

impl Single {
    /// A counter at zero.
    pub const fn new() -> Single {
        Single(AtomicU64::new(0))
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// Takes one away (gauges).
    pub fn dec(&self) {
        self.sub(1);
    }

    /// Takes `n` away (gauges).
    pub fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Relaxed);
    }

    /// The value now.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    /// Sets a gauge.
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
}

impl Default for Single {
    fn default() -> Self {
        Single::new()
    }
}

impl std::fmt::Debug for Single {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.get())
    }
}

/// What a counter means (varnishstat's `flag`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Semantics {
    /// Only goes up; varnishstat shows a rate.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A bit field (`VBE.*.happy`).
    Bitmap,
}

impl Semantics {
    /// varnishstat's letter: `c`, `g`, `b`.
    pub fn letter(self) -> char {
        match self {
            Semantics::Counter => 'c',
            Semantics::Gauge => 'g',
            Semantics::Bitmap => 'b',
        }
    }
}

/// How a value reads (varnishstat's `format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Integer,
    Bytes,
    Duration,
    Bitmap,
}

impl Format {
    /// varnishstat's letter: `i`, `B`, `d`, `b`.
    pub fn letter(self) -> char {
        match self {
            Format::Integer => 'i',
            Format::Bytes => 'B',
            Format::Duration => 'd',
            Format::Bitmap => 'b',
        }
    }
}

/// How interesting a counter is (varnishstat's verbosity levels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info,
    Diag,
    Debug,
}

/// A counter's description.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: &'static str,
    pub semantics: Semantics,
    pub level: Level,
    pub format: Format,
    pub desc: &'static str,
}

macro_rules! sem {
    (c) => {
        Semantics::Counter
    };
    (g) => {
        Semantics::Gauge
    };
    (b) => {
        Semantics::Bitmap
    };
}
macro_rules! fmt_of {
    (i) => {
        Format::Integer
    };
    (B) => {
        Format::Bytes
    };
    (d) => {
        Format::Duration
    };
    (b) => {
        Format::Bitmap
    };
}
macro_rules! lvl {
    (info) => {
        Level::Info
    };
    (diag) => {
        Level::Diag
    };
    (debug) => {
        Level::Debug
    };
}

/// Declares a counter set: a struct with one [`Counter`] per name, its
/// field table in declaration order (varnishstat's order), and a reader.
macro_rules! counters {
    ($(#[$m:meta])* $ty:ident($cty:ident), $fields:ident { $($name:ident: $s:ident $l:ident $f:ident $d:literal,)* }) => {
        $(#[$m])*
        #[allow(missing_docs)]
        pub struct $ty { $(pub $name: $cty,)* }

        impl $ty {
            /// Every counter at zero.
            pub const fn new() -> $ty {
                $ty { $($name: $cty::new(),)* }
            }

            /// The values, in the order of the field table.
            pub fn values(&self) -> Vec<u64> {
                vec![$(self.$name.get(),)*]
            }
        }

        impl Default for $ty {
            fn default() -> Self {
                $ty::new()
            }
        }

        /// The field table, in varnishstat's order.
        pub const $fields: &[Field] = &[
            $(Field {
                name: stringify!($name),
                semantics: sem!($s),
                level: lvl!($l),
                format: fmt_of!($f),
                desc: $d,
            },)*
        ];
    };
}

counters! {
    /// `MGT.*`: the management side.
    Mgt(Counter), MGT_FIELDS {
    uptime: c info d "Management process uptime",
    child_start: c diag i "Child process started",
    child_exit: c diag i "Child process normal exit",
    child_stop: c diag i "Child process unexpected exit",
    child_died: c diag i "Child process died (signal)",
    child_dump: c diag i "Child process core dumped",
    child_panic: c diag i "Child process panic",
}}

counters! {
    /// `MAIN.*`: the cache.
    Main(Counter), MAIN_FIELDS {
    summs: c debug i "stat summ operations",
    uptime: c info d "Child process uptime",
    sess_conn: c info i "Sessions accepted",
    sess_fail: c info i "Session accept failures",
    sess_fail_econnaborted: c info i "Session accept failures: connection aborted",
    sess_fail_eintr: c info i "Session accept failures: interrupted system call",
    sess_fail_emfile: c info i "Session accept failures: too many open files",
    sess_fail_ebadf: c info i "Session accept failures: bad file descriptor",
    sess_fail_enomem: c info i "Session accept failures: not enough memory",
    sess_fail_other: c info i "Session accept failures: other",
    client_req_400: c info i "Client requests received, subject to 400 errors",
    client_req_417: c info i "Client requests received, subject to 417 errors",
    client_req: c info i "Good client requests received",
    esi_req: c info i "ESI subrequests",
    cache_hit: c info i "Cache hits",
    cache_hit_grace: c info i "Cache grace hits",
    cache_hitpass: c info i "Cache hits for pass.",
    cache_hitmiss: c info i "Cache hits for miss.",
    cache_miss: c info i "Cache misses",
    beresp_uncacheable: c info i "Uncacheable backend responses",
    beresp_shortlived: c info i "Shortlived objects",
    backend_conn: c info i "Backend conn. success",
    backend_unhealthy: c info i "Backend conn. not attempted",
    backend_busy: c info i "Backend conn. too many",
    backend_fail: c info i "Backend conn. failures",
    backend_reuse: c info i "Backend conn. reuses",
    backend_recycle: c info i "Backend conn. recycles",
    backend_retry: c info i "Backend conn. retry",
    fetch_head: c info i "Fetch no body (HEAD)",
    fetch_length: c info i "Fetch with Length",
    fetch_chunked: c info i "Fetch chunked",
    fetch_eof: c info i "Fetch EOF",
    fetch_bad: c info i "Fetch bad T-E",
    fetch_none: c info i "Fetch no body",
    fetch_1xx: c info i "Fetch no body (1xx)",
    fetch_204: c info i "Fetch no body (204)",
    fetch_304: c info i "Fetch no body (304)",
    fetch_failed: c info i "Fetch failed (all causes)",
    fetch_no_thread: c info i "Fetch failed (no thread)",
    pools: g info i "Number of thread pools",
    threads: g info i "Total number of threads",
    threads_limited: c info i "Threads hit max",
    threads_created: c info i "Threads created",
    threads_destroyed: c info i "Threads destroyed",
    threads_failed: c info i "Thread creation failed",
    thread_queue_len: g info i "Length of session queue",
    busy_sleep: c info i "Number of requests sent to sleep on busy objhdr",
    busy_wakeup: c info i "Number of requests woken after sleep on busy objhdr",
    busy_killed: c info i "Number of requests killed after sleep on busy objhdr",
    sess_queued: c info i "Sessions queued for thread",
    sess_dropped: c info i "Sessions dropped for thread",
    req_dropped: c info i "Requests dropped",
    n_object: g info i "object structs made",
    n_vampireobject: g diag i "unresurrected objects",
    n_objectcore: g info i "objectcore structs made",
    n_objecthead: g info i "objecthead structs made",
    n_backend: g info i "Number of backends",
    n_expired: c info i "Number of expired objects",
    n_lru_nuked: c info i "Number of LRU nuked objects",
    n_lru_moved: c diag i "Number of LRU moved objects",
    n_lru_limited: c info i "Reached nuke_limit",
    losthdr: c info i "HTTP header overflows",
    s_sess: c info i "Total sessions seen",
    n_pipe: g info i "Number of ongoing pipe sessions",
    pipe_limited: c info i "Pipes hit pipe_sess_max",
    s_pipe: c info i "Total pipe sessions seen",
    s_pass: c info i "Total pass-ed requests seen",
    s_fetch: c info i "Total backend fetches initiated",
    s_bgfetch: c info i "Total backend background fetches initiated",
    s_synth: c info i "Total synthetic responses made",
    s_req_hdrbytes: c info B "Request header bytes",
    s_req_bodybytes: c info B "Request body bytes",
    s_resp_hdrbytes: c info B "Response header bytes",
    s_resp_bodybytes: c info B "Response body bytes",
    s_pipe_hdrbytes: c info B "Pipe request header bytes",
    s_pipe_in: c info B "Piped bytes from client",
    s_pipe_out: c info B "Piped bytes to client",
    sess_closed: c info i "Session Closed",
    sess_closed_err: c info i "Session Closed with error",
    sess_readahead: c info i "Session Read Ahead",
    sess_herd: c diag i "Session herd",
    sc_rem_close: c diag i "Session OK  REM_CLOSE",
    sc_req_close: c diag i "Session OK  REQ_CLOSE",
    sc_req_http10: c diag i "Session Err REQ_HTTP10",
    sc_rx_bad: c diag i "Session Err RX_BAD",
    sc_rx_body: c diag i "Session Err RX_BODY",
    sc_rx_junk: c diag i "Session Err RX_JUNK",
    sc_rx_overflow: c diag i "Session Err RX_OVERFLOW",
    sc_rx_timeout: c diag i "Session Err RX_TIMEOUT",
    sc_rx_close_idle: c diag i "Session Err RX_CLOSE_IDLE",
    sc_tx_pipe: c diag i "Session OK  TX_PIPE",
    sc_tx_error: c diag i "Session Err TX_ERROR",
    sc_tx_eof: c diag i "Session OK  TX_EOF",
    sc_resp_close: c diag i "Session OK  RESP_CLOSE",
    sc_overload: c diag i "Session Err OVERLOAD",
    sc_pipe_overflow: c diag i "Session Err PIPE_OVERFLOW",
    sc_range_short: c diag i "Session Err RANGE_SHORT",
    sc_req_http20: c diag i "Session Err REQ_HTTP20",
    sc_vcl_failure: c diag i "Session Err VCL_FAILURE",
    client_resp_500: c diag i "Delivery failed due to insufficient workspace.",
    ws_backend_overflow: c diag i "workspace_backend overflows",
    ws_client_overflow: c diag i "workspace_client overflows",
    ws_thread_overflow: c diag i "workspace_thread overflows",
    ws_session_overflow: c diag i "workspace_session overflows",
    shm_records: c diag i "SHM records",
    shm_writes: c diag i "SHM writes",
    shm_flushes: c diag i "SHM flushes due to overflow",
    shm_cont: c diag i "SHM MTX contention",
    shm_cycles: c diag i "SHM cycles through buffer",
    backend_req: c info i "Backend requests made",
    n_vcl: g info i "Number of loaded VCLs in total",
    n_vcl_avail: g diag i "Number of VCLs available",
    n_vcl_discard: g diag i "Number of discarded VCLs",
    vcl_fail: c info i "VCL failures",
    bans: g info i "Count of bans",
    bans_completed: g diag i "Number of bans marked 'completed'",
    bans_obj: g diag i "Number of bans using obj.*",
    bans_req: g diag i "Number of bans using req.*",
    bans_added: c diag i "Bans added",
    bans_deleted: c diag i "Bans deleted",
    bans_tested: c diag i "Bans tested against objects (lookup)",
    bans_obj_killed: c diag i "Objects killed by bans (lookup)",
    bans_lurker_tested: c diag i "Bans tested against objects (lurker)",
    bans_tests_tested: c diag i "Ban tests tested against objects (lookup)",
    bans_lurker_tests_tested: c diag i "Ban tests tested against objects (lurker)",
    bans_lurker_obj_killed: c diag i "Objects killed by bans (lurker)",
    bans_lurker_obj_killed_cutoff: c diag i "Objects killed by bans for cutoff (lurker)",
    bans_dups: c diag i "Bans superseded by other bans",
    bans_lurker_contention: c diag i "Lurker gave way for lookup",
    bans_persisted_bytes: g diag B "Bytes used by the persisted ban lists",
    bans_persisted_fragmentation: g diag B "Extra bytes in persisted ban lists due to fragmentation",
    n_purges: c info i "Number of purge operations executed",
    n_obj_purged: c info i "Number of purged objects",
    exp_mailed: c diag i "Number of objects mailed to expiry thread",
    exp_received: c diag i "Number of objects received by expiry thread",
    hcb_nolock: c debug i "HCB Lookups without lock",
    hcb_lock: c debug i "HCB Lookups with lock",
    hcb_insert: c debug i "HCB Inserts",
    esi_errors: c diag i "ESI parse errors (unlock)",
    esi_warnings: c diag i "ESI parse warnings (unlock)",
    vmods: g info i "Loaded VMODs",
    n_gzip: c info i "Gzip operations",
    n_gunzip: c info i "Gunzip operations",
    n_test_gunzip: c info i "Test gunzip operations",
}}

counters! {
    /// `SMA.<name>.*`: one storage (`s0` for `-s malloc`, `Transient`
    /// for objects that are not cached).
    Sma(Counter), SMA_FIELDS {
    c_req: c info i "Allocator requests",
    c_fail: c info i "Allocator failures",
    c_bytes: c info B "Bytes allocated",
    c_freed: c info B "Bytes freed",
    g_alloc: g info i "Allocations outstanding",
    g_bytes: g info B "Bytes outstanding",
    g_space: g info B "Bytes available",
}}

counters! {
    /// `VBE.<vcl>.<backend>.*`: one backend of one loaded VCL.
    Vbe(Single), VBE_FIELDS {
    happy: b info b "Happy health probes",
    bereq_hdrbytes: c info B "Request header bytes",
    bereq_bodybytes: c info B "Request body bytes",
    beresp_hdrbytes: c info B "Response header bytes",
    beresp_bodybytes: c info B "Response body bytes",
    pipe_hdrbytes: c info B "Pipe request header bytes",
    pipe_out: c info B "Piped bytes to backend",
    pipe_in: c info B "Piped bytes from backend",
    conn: g info i "Concurrent connections used",
    req: c info i "Backend requests sent",
    unhealthy: c info i "Fetches not attempted due to backend being unhealthy",
    busy: c info i "Fetches not attempted due to backend being busy",
    fail: c info i "Connections failed",
    fail_eacces: c diag i "Connections failed with EACCES or EPERM",
    fail_eaddrnotavail: c diag i "Connections failed with EADDRNOTAVAIL",
    fail_econnrefused: c diag i "Connections failed with ECONNREFUSED",
    fail_enetunreach: c diag i "Connections failed with ENETUNREACH",
    fail_etimedout: c diag i "Connections failed ETIMEDOUT",
    fail_other: c diag i "Connections failed for other reason",
    helddown: c diag i "Connection opens not attempted",
}}

counters! {
    /// `VMOD.<vcl>.<vmod>.*`: one VMOD component of one loaded VCL.
    VmodStats(Single), VMOD_FIELDS {
    calls: c info i "Calls into the VMOD",
    failed: c info i "Calls that failed (the request got a 503)",
    cpu_exceeded: c info i "Calls stopped at their CPU budget",
    out_of_memory: c info i "Calls that hit the instance memory cap",
}}

impl std::fmt::Debug for VmodStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VmodStats")
    }
}

/// A VMOD call trapped: at its memory cap, or its CPU budget.
pub fn vmod_failed(s: &VmodStats, out_of_memory: bool, e: &wasmtime::Error) {
    if out_of_memory {
        s.out_of_memory.inc();
    } else if matches!(
        e.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    ) {
        s.cpu_exceeded.inc();
    }
}

/// The management counters.
pub static MGT: Mgt = Mgt::new();
/// The cache's counters.
pub static MAIN: Main = Main::new();
/// `SMA.s0`: the `-s malloc` storage (objects in the cache).
pub static SMA_S0: Sma = Sma::new();
/// `SMA.Transient`: objects delivered but not cached (pass, uncacheable).
pub static SMA_TRANSIENT: Sma = Sma::new();

impl std::fmt::Debug for Vbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vbe")
    }
}

/// When the process started (`MGT.uptime`).
static PROCESS_T0: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
/// When the child last started (`MAIN.uptime`), as milliseconds since
/// the process started; `u64::MAX` while stopped.
static CHILD_T0: AtomicU64 = AtomicU64::new(u64::MAX);

fn process_t0() -> std::time::Instant {
    *PROCESS_T0.get_or_init(std::time::Instant::now)
}

/// Marks the process start (call early in `serve`).
pub fn process_started() {
    let _ = process_t0();
}

/// The child (the listeners) started: `MGT.child_start`, and
/// `MAIN.uptime` counts from now.
pub fn child_started() {
    MGT.child_start.inc();
    CHILD_T0.store(process_t0().elapsed().as_millis() as u64, Relaxed);
}

/// A live object (Varnish's `n_object`, `n_objectcore`): held by every
/// [`crate::cache_obj::Object`], counted while it lives.
#[derive(Debug)]
pub struct ObjLive {
    normal: bool,
    /// Allocations charged to `SMA.s0` for it (0 while not in the cache).
    sma_allocs: std::sync::atomic::AtomicU8,
}

impl ObjLive {
    /// Counts a new object; `normal` for a real object, false for a
    /// hit-for-pass / hit-for-miss marker (only an objcore in Varnish).
    pub fn new(normal: bool) -> ObjLive {
        MAIN.n_objectcore.inc();
        if normal {
            MAIN.n_object.inc();
        }
        ObjLive {
            normal,
            sma_allocs: std::sync::atomic::AtomicU8::new(0),
        }
    }
}

impl Drop for ObjLive {
    fn drop(&mut self) {
        MAIN.n_objectcore.dec();
        if self.normal {
            MAIN.n_object.dec();
        }
    }
}

/// Storage accounting: `bytes` charged to `sma` for one object (with a
/// body: two allocations, the object and its body, as `-s malloc` makes).
/// Hit-for-pass/miss markers take no storage in Varnish: not counted.
pub fn sma_alloc(sma: &Sma, obj: &crate::cache_obj::Object, bytes: u64) {
    let live = &obj.live;
    if !live.normal {
        return;
    }
    let n = 1 + u8::from(has_body(obj));
    live.sma_allocs.store(n, Relaxed);
    sma.c_req.add(u64::from(n));
    sma.c_bytes.add(bytes);
    sma.g_alloc.add(u64::from(n));
    sma.g_bytes.add(bytes);
}

/// Storage accounting: `bytes` more for an object whose body grew.
pub fn sma_grow(sma: &Sma, live: &ObjLive, bytes: u64) {
    if live.sma_allocs.load(Relaxed) == 0 {
        return;
    }
    sma.c_bytes.add(bytes);
    sma.g_bytes.add(bytes);
}

/// Storage accounting: an object's `bytes` given back.
pub fn sma_free(sma: &Sma, live: &ObjLive, bytes: u64) {
    let n = live.sma_allocs.swap(0, Relaxed);
    if n == 0 {
        return;
    }
    sma.c_freed.add(bytes);
    sma.g_alloc.sub(u64::from(n));
    sma.g_bytes.sub(bytes);
}

/// A fetched object that was not inserted (pass, uncacheable) lives in
/// Varnish's Transient storage: counted there.
pub fn transient_if_uncached(
    obj: &std::sync::Arc<crate::cache_obj::Object>,
    insert: Option<&std::sync::Arc<crate::cache_obj::Object>>,
) {
    if insert.is_some_and(|i| std::sync::Arc::ptr_eq(i, obj)) {
        return;
    }
    // The object (its headers, as the cache charges them) and what of
    // its body is there.
    let h: usize = obj.headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    sma_transient(obj.body.len() + (h + 256) as u64, has_body(obj));
}

/// Whether an object has (or is still getting) a body.
fn has_body(obj: &crate::cache_obj::Object) -> bool {
    let streaming = !matches!(obj.body.progress(), crate::cache_obj::Progress::Done(_));
    streaming || !obj.body.is_empty()
}

/// An object delivered without being cached (pass, uncacheable): what
/// `-s malloc`'s Transient storage would have allocated for it.
pub fn sma_transient(bytes: u64, with_body: bool) {
    let n = 1 + u64::from(with_body);
    SMA_TRANSIENT.c_req.add(n);
    SMA_TRANSIENT.c_bytes.add(bytes);
    SMA_TRANSIENT.c_freed.add(bytes);
}

/// One counter as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    /// Full name: `MAIN.cache_hit`, `VBE.boot.default.req`.
    pub name: String,
    pub semantics: Semantics,
    pub format: Format,
    pub level: Level,
    /// varnishstat's one-line description.
    pub desc: String,
    pub value: u64,
}

fn push(out: &mut Vec<Point>, prefix: &str, fields: &[Field], values: Vec<u64>) {
    for (f, v) in fields.iter().zip(values) {
        out.push(Point {
            name: format!("{prefix}.{}", f.name),
            semantics: f.semantics,
            format: f.format,
            level: f.level,
            desc: f.desc.to_string(),
            value: v,
        });
    }
}

/// Sets the gauges that are state rather than events, from `ctx`.
fn refresh(ctx: &crate::cache_req_fsm::Ctx) {
    let t0 = process_t0();
    MGT.uptime.set(t0.elapsed().as_secs());
    let child = CHILD_T0.load(Relaxed);
    MAIN.uptime.set(if child == u64::MAX {
        0
    } else {
        (t0.elapsed().as_millis() as u64).saturating_sub(child) / 1000
    });
    let labels = ctx.label_names();
    let vcls: Vec<_> = ctx
        .vcl_table()
        .into_iter()
        .filter(|(n, _)| !labels.contains(n))
        .collect();
    MAIN.n_vcl.set(vcls.len() as u64);
    MAIN.n_vcl_avail.set(vcls.len() as u64);
    MAIN.n_backend.set(
        vcls.iter()
            .map(|(_, v)| v.shared.backends.len() as u64)
            .sum(),
    );
    let bans = ctx.cache.bans.list(&[]);
    MAIN.bans.set(bans.len() as u64);
    MAIN.bans_completed
        .set(bans.iter().filter(|b| b.completed).count() as u64);
    MAIN.n_objecthead.set(ctx.cache.heads() as u64);
    let budget = ctx.storage_budget;
    let used = SMA_S0.g_bytes.get();
    SMA_S0.g_space.set(if budget == u64::MAX {
        0
    } else {
        budget.saturating_sub(used)
    });
}

/// Every counter of the instance, in varnishstat's order: `MGT`, `MAIN`,
/// `SMA.s0`, `SMA.Transient`, then `VBE.<vcl>.<backend>` for every
/// loaded VCL (labels are not VCLs of their own).
pub fn snapshot(ctx: &crate::cache_req_fsm::Ctx) -> Vec<Point> {
    refresh(ctx);
    let mut out = Vec::with_capacity(256);
    push(&mut out, "MGT", MGT_FIELDS, MGT.values());
    push(&mut out, "MAIN", MAIN_FIELDS, MAIN.values());
    push(&mut out, "SMA.s0", SMA_FIELDS, SMA_S0.values());
    push(
        &mut out,
        "SMA.Transient",
        SMA_FIELDS,
        SMA_TRANSIENT.values(),
    );
    let labels = ctx.label_names();
    for (vname, vcl) in ctx.vcl_table() {
        // A cold VCL's backends have no counters (Varnish removes them).
        if labels.contains(&vname) || vcl.is_cold() {
            continue;
        }
        for b in vcl.shared.backends.iter() {
            push(
                &mut out,
                &format!("VBE.{vname}.{}", b.name),
                VBE_FIELDS,
                b.conns.vsc.values(),
            );
        }
    }
    // Shellac's own: per VCL and VMOD component.
    for (vname, vcl) in ctx.vcl_table() {
        if labels.contains(&vname) {
            continue;
        }
        for m in vcl.shared.vmods.iter() {
            push(
                &mut out,
                &format!("VMOD.{vname}.{}", m.lib.name),
                VMOD_FIELDS,
                m.vsc.values(),
            );
        }
    }
    out
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The wire form `shellac stat` reads from `/stats`: a JSON array of
/// `{"name", "flag", "format", "level", "description", "value"}` in
/// varnishstat's order.
pub fn to_json(points: &[Point]) -> String {
    let mut o = String::with_capacity(points.len() * 120);
    o.push('[');
    for (i, p) in points.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str(&format!(
            "\n{{\"name\":{},\"flag\":\"{}\",\"format\":\"{}\",\"level\":\"{}\",\"description\":{},\"value\":{}}}",
            json_str(&p.name),
            p.semantics.letter(),
            p.format.letter(),
            match p.level {
                Level::Info => "info",
                Level::Diag => "diag",
                Level::Debug => "debug",
            },
            json_str(&p.desc),
            p.value
        ));
    }
    o.push_str("\n]\n");
    o
}

/// One Prometheus metric: its samples share the name, help and type.
struct Metric {
    name: String,
    kind: &'static str,
    help: String,
    samples: Vec<(String, u64)>,
}

/// Prometheus' metric name and labels for a counter: `MAIN.cache_hit` is
/// `varnish_main_cache_hit`; `VBE.<vcl>.<backend>.req` is
/// `varnish_backend_req{backend,vcl}`; `SMA.s0.c_req` is
/// `varnish_sma_c_req{storage}`.
fn prometheus_name(name: &str) -> Option<(String, String)> {
    let (section, rest) = name.split_once('.')?;
    let q = json_str;
    Some(match section {
        "VBE" => {
            // VBE.<vcl>.<backend>.<counter>: a VCL name has no dot.
            let (vcl, rest) = rest.split_once('.')?;
            let (backend, counter) = rest.rsplit_once('.')?;
            (
                format!("varnish_backend_{counter}"),
                format!("{{backend={},vcl={}}}", q(backend), q(vcl)),
            )
        }
        "VMOD" => {
            let (vcl, rest) = rest.split_once('.')?;
            let (vmod, counter) = rest.rsplit_once('.')?;
            (
                format!("shellac_vmod_{counter}"),
                format!("{{vcl={},vmod={}}}", q(vcl), q(vmod)),
            )
        }
        "SMA" => {
            let (storage, counter) = rest.split_once('.')?;
            (
                format!("varnish_sma_{counter}"),
                format!("{{storage={}}}", q(storage)),
            )
        }
        s => (
            format!(
                "varnish_{}_{}",
                s.to_ascii_lowercase(),
                rest.replace('.', "_")
            ),
            String::new(),
        ),
    })
}

/// Prometheus' text exposition format (the names
/// prometheus_varnish_exporter users know, see [`prometheus_name`]);
/// counters end in `_total`, as Prometheus' conventions ask.
pub fn to_prometheus(points: &[Point]) -> String {
    let mut metrics: Vec<Metric> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for p in points {
        let Some((metric, labels)) = prometheus_name(&p.name) else {
            continue;
        };
        let (metric, kind) = match p.semantics {
            Semantics::Counter => (format!("{metric}_total"), "counter"),
            _ => (metric, "gauge"),
        };
        let metric: String = metric
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let i = *index.entry(metric.clone()).or_insert_with(|| {
            metrics.push(Metric {
                name: metric,
                kind,
                help: p.desc.replace('\\', "\\\\").replace('\n', "\\n"),
                samples: Vec::new(),
            });
            metrics.len() - 1
        });
        metrics[i].samples.push((labels, p.value));
    }
    let mut o = String::with_capacity(points.len() * 160);
    for m in metrics {
        o.push_str(&format!(
            "# HELP {0} {1}\n# TYPE {0} {2}\n",
            m.name, m.help, m.kind
        ));
        for (labels, v) in m.samples {
            o.push_str(&format!("{}{labels} {v}\n", m.name));
        }
    }
    o
}

/// An `accept()` that failed: `MAIN.sess_fail` and its detail counter.
pub fn sess_fail(e: &std::io::Error) {
    MAIN.sess_fail.inc();
    match e.raw_os_error() {
        Some(libc::ECONNABORTED) => MAIN.sess_fail_econnaborted.inc(),
        Some(libc::EINTR) => MAIN.sess_fail_eintr.inc(),
        Some(libc::EMFILE) | Some(libc::ENFILE) => MAIN.sess_fail_emfile.inc(),
        Some(libc::EBADF) => MAIN.sess_fail_ebadf.inc(),
        Some(libc::ENOMEM) | Some(libc::ENOBUFS) => MAIN.sess_fail_enomem.inc(),
        _ => MAIN.sess_fail_other.inc(),
    }
}

/// A purge (`return (purge)`) that removed `n` objects.
pub fn purged(n: usize) {
    MAIN.n_purges.inc();
    MAIN.n_obj_purged.add(n as u64);
}

impl Main {
    /// A backend response's framing (`fetch_length`, `fetch_chunked`, …).
    pub fn fetch_framing(&self, how: &str) {
        match how {
            "head" => self.fetch_head.inc(),
            "204" => self.fetch_204.inc(),
            "304" => self.fetch_304.inc(),
            "1xx" => self.fetch_1xx.inc(),
            "length" => self.fetch_length.inc(),
            "chunked" => self.fetch_chunked.inc(),
            "eof" => self.fetch_eof.inc(),
            "bad" => self.fetch_bad.inc(),
            _ => self.fetch_none.inc(),
        }
    }
}

/// A backend request sent on a pooled connection.
pub fn backend_reuse(vbe: &Vbe, hdr: usize, body: usize) {
    MAIN.backend_reuse.inc();
    backend_req(vbe, hdr, body);
}

fn backend_req(vbe: &Vbe, hdr: usize, body: usize) {
    MAIN.backend_req.inc();
    vbe.req.inc();
    vbe.bereq_hdrbytes.add(hdr as u64);
    vbe.bereq_bodybytes.add(body as u64);
}

/// A new backend connection: `backend_conn` and the request, or
/// `backend_fail` with its reason.
pub fn backend_connect<T>(
    vbe: &Vbe,
    r: &Result<T, crate::cache_http1_fetch::FetchError>,
    hdr: usize,
    body: usize,
) {
    use crate::cache_http1_fetch::FetchError;
    match r {
        Ok(_) => {
            MAIN.backend_conn.inc();
            backend_req(vbe, hdr, body);
        }
        Err(e) => {
            MAIN.backend_fail.inc();
            vbe.fail.inc();
            match e {
                FetchError::Connect { err, .. } => match err.raw_os_error() {
                    Some(libc::EACCES) | Some(libc::EPERM) => vbe.fail_eacces.inc(),
                    Some(libc::EADDRNOTAVAIL) => vbe.fail_eaddrnotavail.inc(),
                    Some(libc::ECONNREFUSED) => vbe.fail_econnrefused.inc(),
                    Some(libc::ENETUNREACH) => vbe.fail_enetunreach.inc(),
                    Some(libc::ETIMEDOUT) => vbe.fail_etimedout.inc(),
                    _ => vbe.fail_other.inc(),
                },
                FetchError::ConnectTimeout(_) => vbe.fail_etimedout.inc(),
                _ => vbe.fail_other.inc(),
            }
        }
    }
}

/// Where Varnish would store a fetched object: Transient for an
/// uncacheable one (`beresp_uncacheable`) or one that lives less than
/// `shortlived` (`beresp_shortlived`).
pub fn beresp_storage(uncacheable: bool, lifetime: f64, shortlived: f64) {
    if uncacheable {
        MAIN.beresp_uncacheable.inc();
    } else if lifetime < shortlived {
        MAIN.beresp_shortlived.inc();
    }
}

/// A fetch not attempted: the backend is sick.
pub fn backend_unhealthy(vbe: &Vbe) {
    MAIN.backend_unhealthy.inc();
    vbe.unhealthy.inc();
}

/// A fetch not attempted: the backend's `.max_connections` are in use.
pub fn backend_busy(vbe: &Vbe) {
    MAIN.backend_busy.inc();
    vbe.busy.inc();
}

/// Gunzips a body, counted in `MAIN.n_gunzip`.
pub fn gunzip(b: &[u8]) -> Result<bytes::Bytes, String> {
    MAIN.n_gunzip.inc();
    crate::cache_gzip::gunzip(b).map_err(|e| e.to_string())
}
