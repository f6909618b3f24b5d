//! The client state machine (Varnish's `cache_req_fsm`): recv → hash →
//! lookup → hit | miss | pass | purge | synth → deliver, with restarts.

use crate::cache_expire::http_date;
use crate::cache_fetch::{fetch, Fetched};
use crate::cache_hash::{Cache, Lookup};
use crate::cache_obj::{hdr_get, hdr_set, Headers, Object};
use crate::cache_vcl::Vcl;
use crate::mgt_param::Params;
use crate::vrt_ctx::{now, ReqMsg, RespMsg, Task};
use bytes::Bytes;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vcl_to_wasm::types::{Action, Method};

/// What every client task shares: parameters, the cache, the loaded VCLs.
pub struct Ctx {
    /// Replaced whole by `param.set`, so a task reads one consistent set.
    params: std::sync::RwLock<Arc<Params>>,
    /// The default tenant's cache (Varnish's one cache).
    pub cache: Arc<Cache>,
    /// `-s malloc,SIZE`: the storage budget in bytes.
    pub storage_budget: u64,
    /// Loaded VCLs and labels, and the active one (`vcl.use` swaps it;
    /// requests in flight finish on the VCL they started with).
    pub vcls: crate::mgt_vcl::VclTable,
    /// The default tenant.
    pub default_tenant: Arc<crate::cache_tenant::Tenant>,
    /// Every tenant (the default one and the labels').
    pub tenants: Arc<crate::cache_tenant::Tenants>,
    xid: AtomicU64,
}

/// The `Via` header value Shellac adds, in Varnish's form.
pub const VIA: &str = concat!("1.1 shellac (Shellac/", env!("CARGO_PKG_VERSION"), ")");

impl Ctx {
    /// A context serving `vcl` (named `boot`, as in varnishd).
    pub fn new(params: Params, vcl: Arc<Vcl>) -> Ctx {
        let budget = vcl.shared.storage_budget;
        let ctx = Ctx::empty(params, budget);
        let _ = ctx.vcls.add("boot", vcl, crate::mgt_vcl::State::Auto);
        let _ = ctx.vcls.use_("boot");
        ctx
    }

    /// A context without any VCL yet (`-f ''`): the admin CLI loads one.
    pub fn empty(params: Params, storage_budget: u64) -> Ctx {
        crate::vsl::configure(&params);
        // One storage for every tenant's cache: `-s malloc,SIZE` is the
        // limit of all of them together.
        let storage = crate::cache_hash::Storage::new(storage_budget);
        let cache = Cache::in_storage(storage_budget, &storage);
        let default_tenant = Arc::new(crate::cache_tenant::Tenant::new(
            crate::cache_tenant::DEFAULT,
            cache.clone(),
        ));
        let tenants = Arc::new(crate::cache_tenant::Tenants::new(
            default_tenant.clone(),
            storage_budget,
            storage,
        ));
        crate::cache_obj::configure(&params);
        crate::vre::configure(&params);
        Ctx {
            params: std::sync::RwLock::new(Arc::new(params)),
            cache,
            storage_budget,
            vcls: crate::mgt_vcl::VclTable::new(tenants.clone()),
            default_tenant,
            tenants,
            xid: AtomicU64::new(1000),
        }
    }

    /// The parameters in force now.
    pub fn params(&self) -> Arc<Params> {
        match self.params.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Changes parameters (`param.set`, `param.reset`): `f` edits a copy
    /// that then replaces the set in force.
    pub fn update_params<T>(&self, f: impl FnOnce(&mut Params) -> T) -> T {
        let mut g = match self.params.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut next = (**g).clone();
        let r = f(&mut next);
        crate::vsl::configure(&next);
        crate::cache_obj::configure(&next);
        crate::vre::configure(&next);
        *g = Arc::new(next);
        r
    }

    /// Sets the first XID handed out (`debug.xid`).
    pub fn set_xid(&self, xid: u64) {
        self.xid.store(xid, Ordering::Relaxed);
    }

    /// Whether a VCL is active (`start` needs one).
    pub fn has_active_vcl(&self) -> bool {
        self.vcls.active().is_some()
    }

    /// The active VCL.
    pub fn vcl(&self) -> Option<Arc<Vcl>> {
        self.vcls.active().map(|r| r.vcl)
    }

    /// Every loaded VCL (not labels) with its name.
    pub fn vcl_table(&self) -> Vec<(String, Arc<Vcl>)> {
        self.vcls.programs()
    }

    /// The active VCL's name ("" before the first load).
    pub fn active_name(&self) -> String {
        self.vcls.active_name()
    }

    /// The labels defined so far (for compiling `return (vcl(label))`).
    pub fn label_names(&self) -> Vec<String> {
        self.vcls.label_names()
    }

    /// The VCL a name (or label) refers to.
    pub fn vcl_named(&self, name: &str) -> Option<Arc<Vcl>> {
        self.vcls.route(name).map(|r| r.vcl)
    }

    /// A new transaction id.
    pub fn next_xid(&self) -> u64 {
        // VXIDs wrap at 1 << 30, as Varnish's (the bits above mark the
        // client and backend sides in its log).
        (self.xid.fetch_add(1, Ordering::Relaxed) + 1) & ((1 << 30) - 1)
    }
}

/// The body of a response to the client.
pub enum ReplyBody {
    /// Made here (synthetic, errors) or empty.
    Bytes(Bytes),
    /// An object's body, possibly still arriving.
    Object(Arc<Object>),
    /// An ESI object: its text with the includes' bodies inlined.
    Esi(Box<crate::cache_esi::EsiJob>),
    /// One of the above through delivery processors (gunzip, a range) or
    /// with a length known before the body is complete.
    Filtered(Box<ReplyBody>, crate::cache_deliver::Vdp),
    /// `return (pipe)`: no response, the connection becomes a tunnel to
    /// the backend.
    Pipe(Box<crate::cache_pipe::PipeJob>),
}

/// A response to write to the client.
pub struct Reply {
    pub status: u16,
    /// The reason phrase (`resp.reason`).
    pub reason: String,
    pub headers: Headers,
    pub body: ReplyBody,
    /// Close the connection after this response.
    pub close: bool,
    /// The Content-Length to announce for a body that is not sent (HEAD).
    pub head_length: Option<u64>,
    /// Only the status line goes out, then the connection closes
    /// (Varnish's `minimal_response`, e.g. after `vcl_synth` failed).
    pub minimal: bool,
}

impl Reply {
    /// No response at all: the connection just closes (status 0).
    pub fn hangup() -> Reply {
        Reply {
            status: 0,
            reason: String::new(),
            headers: Vec::new(),
            body: ReplyBody::Bytes(Bytes::new()),
            close: true,
            head_length: None,
            minimal: false,
        }
    }

    /// Just a status line, then the connection closes.
    pub fn minimal(status: u16) -> Reply {
        Reply {
            status,
            reason: crate::cache_http::status_reason(status).to_string(),
            minimal: true,
            ..Reply::hangup()
        }
    }
}

/// Where the state machine goes next.
enum Step {
    Recv,
    /// `return (vcl(label))`: vcl_recv again, in the labelled VCL.
    SwitchVcl(String),
    Synth(u16, Option<String>),
    Deliver(Arc<Object>, Option<u64>),
    Fail(String),
    /// `pipe` from `vcl_pipe`: the session becomes a tunnel.
    Pipe(Box<crate::cache_pipe::PipeJob>),
    /// No response: the connection closes (the request body failed).
    Hangup,
}

/// Headers a message may hold (`http_max_hdr` less the start line's).
fn max_hdr(ctx: &Ctx) -> usize {
    ctx.params()
        .hot()
        .http_max_hdr
        .saturating_sub(crate::cache_http1_proto::HDR_FIRST)
}

fn client_ws(ctx: &Ctx) -> u32 {
    ctx.params().hot().workspace_client
}

/// Handles one client request.
pub async fn handle(
    ctx: Arc<Ctx>,
    req: ReqMsg,
    body: crate::cache_req_body::ReqBody,
    client: IpAddr,
    server: IpAddr,
) -> Reply {
    handle_at_level(ctx, req, body, client, server, 0).await
}

/// Handles a request at ESI level `esi_level` (0 for a client's request,
/// more for an ESI include's sub-request).
pub async fn handle_at_level(
    ctx: Arc<Ctx>,
    req: ReqMsg,
    body: crate::cache_req_body::ReqBody,
    client: IpAddr,
    server: IpAddr,
    esi_level: u32,
) -> Reply {
    let vsl = crate::vsl::req_begin(&ctx, &req, esi_level, 0, None, false);
    let o = Origin {
        esi_level,
        top: None,
        req_start: None,
        ports: [0, 0],
    };
    handle_task(ctx, req, body, client, server, o, vsl).await
}

/// Handles a client request whose log `vsl` has begun (the request's
/// transaction, with its VXID).
/// `req_start` is its `ReqStart` text, which its ESI includes log too.
pub async fn handle_txn(
    ctx: Arc<Ctx>,
    req: ReqMsg,
    body: crate::cache_req_body::ReqBody,
    (client, server): (std::net::SocketAddr, std::net::SocketAddr),
    req_start: Arc<str>,
    vsl: crate::vsl::Buf,
) -> Reply {
    let top = Origin {
        esi_level: 0,
        top: None,
        req_start: Some(req_start),
        ports: [client.port(), server.port()],
    };
    handle_task(ctx, req, body, client.ip(), server.ip(), top, vsl).await
}

/// Where a request comes from: its ESI level, the top request it is an
/// include of, and the `ReqStart` text of the client's request.
struct Origin {
    esi_level: u32,
    top: Option<Arc<crate::vrt_ctx::ReqTop>>,
    req_start: Option<Arc<str>>,
    /// The ports of `client.ip` and `server.ip`.
    ports: [u16; 2],
}

/// Handles the sub-request of an ESI include: `top` is the top request
/// (`req_top.*`) and its time, `vsl` its log (begun by the include).
pub async fn handle_include(
    ctx: Arc<Ctx>,
    req: ReqMsg,
    (client, server): (IpAddr, IpAddr),
    esi_level: u32,
    top: Arc<crate::vrt_ctx::ReqTop>,
    (req_start, ports): (Option<Arc<str>>, [u16; 2]),
    vsl: crate::vsl::Buf,
) -> Reply {
    let body = crate::cache_req_body::ReqBody::none();
    let o = Origin {
        esi_level,
        top: Some(top),
        req_start,
        ports,
    };
    handle_task(ctx, req, body, client, server, o, vsl).await
}

async fn handle_task(
    ctx: Arc<Ctx>,
    req: ReqMsg,
    body: crate::cache_req_body::ReqBody,
    client: IpAddr,
    server: IpAddr,
    origin: Origin,
    vsl: crate::vsl::Buf,
) -> Reply {
    let Origin {
        esi_level,
        top,
        req_start,
        ports,
    } = origin;
    // An ESI include starts in the VCL its top request started in (as
    // Varnish's) and stays in the tenant its page was delivered in.
    let route = match top.as_ref().and_then(|t| t.2.clone()) {
        Some(r) => Some(r),
        None => ctx.vcls.active(),
    };
    let Some(route) = route else {
        return fallback_503(vsl.vxid());
    };
    let start = route.clone();
    let tenant = route.tenant;
    // The tenant's `requests` quota (ESI includes are part of their
    // page's request and take no place of their own).
    let mut slot = None;
    if top.is_none() {
        match tenant.admit().await {
            Ok(s) => slot = s,
            Err(full) => return queue_full(vsl, &tenant, full),
        }
    }
    let mut vcl = crate::cache_vcl::VclRef::new(route.vcl);
    let xid = vsl.vxid();
    let mut t = Box::new(Task::new(xid, client, server, now()));
    if let Some(top) = top {
        // An include keeps the time of the request it is part of.
        t.req_time = top.1;
        t.req_top = Some(top);
    }
    t.vsl = vsl;
    t.cache = Some(tenant.cache.clone());
    t.tenant = Some(tenant);
    t.vcl_start = Some(start);
    t.req_start = req_start;
    t.set_ports(ports);
    // What the client sent, before any VCL (Varnish's `http0`): a VCL
    // failure and `std.rollback(req)` go back to it.
    t.http0 = req.clone();
    t.req = req;
    t.req_body = body;
    t.max_hdr = max_hdr(&ctx);
    t.esi_level = esi_level;
    {
        let params = ctx.params();
        t.gzip_support = params.hot().http_gzip_support;
        t.range_support = params.hot().http_range_support;
    }
    if esi_level > 0 {
        crate::vsc::MAIN.esi_req.inc();
    }
    // An include too: it is a copy of what its top request received,
    // and gets the client's address in `X-Forwarded-For` as that did
    // (Varnish's `cnt_recv_prep` runs for every request not restarted).
    let before = crate::vsl::prep_snapshot(&t.req.headers);
    recv_prep(t.gzip_support, &mut t.req, client);
    crate::vsl::prep_changes(&mut t.vsl, &before, &t.req.headers);
    t.backend_hint = vcl.default_backend;
    let max_restarts = ctx.params().hot().max_restarts;
    // Varnish's `req->doclose` after a VCL failure: the response still
    // goes out, then the connection closes.
    let mut doclose = false;
    let mut switched = false;
    let mut step = Step::Recv;
    loop {
        let next = match step {
            Step::Recv => {
                let (tt, s) = recv_to_delivery(&ctx, &vcl, t).await;
                t = tt;
                s
            }
            // return (vcl(label)): once, from the VCL the request started
            // in (an ESI include too), before any restart; else a 503
            // (Varnish's "Illegal return(vcl)"). The request starts over
            // as the client sent it.
            Step::SwitchVcl(_) if switched || t.restarts > 0 => {
                t.vsl.log(
                    vapi::Tag::VCL_Error,
                    if t.restarts > 0 {
                        "Illegal return(vcl): Not after restarts"
                    } else {
                        "Illegal return(vcl): Only from active VCL"
                    },
                );
                Step::Synth(503, None)
            }
            Step::SwitchVcl(label) => match ctx.vcls.route(&label) {
                Some(r) => {
                    vcl = crate::cache_vcl::VclRef::new(r.vcl);
                    // An include keeps its page's tenant.
                    if t.req_top.is_none() {
                        let same = t.tenant.as_ref().is_some_and(|x| Arc::ptr_eq(x, &r.tenant));
                        if !same {
                            // The request leaves its tenant's place for
                            // one in the new tenant's quota.
                            drop(slot.take());
                            match r.tenant.admit().await {
                                Ok(s) => slot = s,
                                Err(full) => {
                                    return queue_full(std::mem::take(&mut t.vsl), &r.tenant, full)
                                }
                            }
                        }
                        t.cache = Some(r.tenant.cache.clone());
                        t.tenant = Some(r.tenant);
                    }
                    if crate::vsl::enabled(vapi::Tag::VCL_use) {
                        t.vsl.logf(
                            vapi::Tag::VCL_use,
                            format_args!("{} via {label}", vcl.name()),
                        );
                    }
                    switched = true;
                    t.req = t.http0.clone();
                    recv_prep(t.gzip_support, &mut t.req, client);
                    t.backend_hint = vcl.default_backend;
                    t.vcl_label = None;
                    step = Step::Recv;
                    continue;
                }
                None => Step::Synth(503, Some(format!("VCL {label} is not loaded"))),
            },
            Step::Deliver(obj, hit_xid) => {
                let (tt, r) = deliver(&ctx, &vcl, t, obj, hit_xid);
                t = tt;
                match r {
                    Ok(mut reply) => {
                        reply.close |= doclose;
                        return reply;
                    }
                    Err(s) => s,
                }
            }
            Step::Hangup => return Reply::hangup(),
            Step::Pipe(job) => {
                return Reply {
                    status: 0,
                    reason: String::new(),
                    headers: Vec::new(),
                    body: ReplyBody::Pipe(job),
                    close: true,
                    head_length: None,
                    minimal: false,
                }
            }
            Step::Synth(status, reason) => {
                let (tt, r) = synth(&ctx, &vcl, t, status, reason);
                t = tt;
                match r {
                    Ok(mut reply) => {
                        reply.close |= doclose;
                        return reply;
                    }
                    Err(s) => s,
                }
            }
            Step::Fail(why) => {
                // Varnish's cnt_vclfail: the request as the client sent
                // it, a 503 "VCL failed" from vcl_synth, and the
                // connection closes after it.
                tracing::warn!(xid = t.xid, "request failed: {why}");
                crate::vsc::MAIN.vcl_fail.inc();
                t.req = t.http0.clone();
                t.obj = None;
                doclose = true;
                step = Step::Synth(503, Some("VCL failed".into()));
                continue;
            }
        };
        // `Recv` from a step means restart.
        // Varnish counts the restart first, so `vcl_synth` sees
        // `req.restarts == max_restarts + 1` when the limit is hit.
        if let Step::Recv = next {
            t.restarts += 1;
            t.obj = None;
            t.is_hit = false;
            if t.restarts > max_restarts {
                step = Step::Synth(503, Some("Too many restarts".into()));
                continue;
            }
            crate::vsl::restart(&ctx, &mut t);
        }
        step = next;
    }
}

/// What Varnish does to a request before the first `vcl_recv`: one
/// `Cache-Control`, and the client's address appended to
/// `X-Forwarded-For` (collected into one header first).
fn recv_prep(gzip_support: bool, req: &mut crate::vrt_ctx::ReqMsg, client: IpAddr) {
    if gzip_support {
        crate::cache_gzip::normalize_req(&mut req.headers);
    }
    crate::cache_http::collect(&mut req.headers, "cache-control");
    crate::cache_http::collect(&mut req.headers, "x-forwarded-for");
    let ip = crate::cache_http::ip_text(client);
    let xff = match hdr_get(&req.headers, "x-forwarded-for") {
        Some(v) => format!("{v}, {ip}"),
        None => ip.to_string(),
    };
    hdr_set(&mut req.headers, "X-Forwarded-For", &xff);
}

/// The 503 for a request its tenant's `requests` quota turned away (its
/// queue was full): made here, without running any of the tenant's VCL,
/// so a flood of them costs little.
fn queue_full(
    mut vsl: crate::vsl::Buf,
    tenant: &crate::cache_tenant::Tenant,
    full: crate::cache_tenant::QueueFull,
) -> Reply {
    let why = format!(
        "tenant {}: requests quota full ({} in progress, {} waiting)",
        tenant.name, full.in_progress, full.waiting
    );
    tracing::info!(xid = vsl.vxid(), "{why}");
    vsl.log(vapi::Tag::Error, &why);
    let resp = RespMsg {
        status: 503,
        reason: "Service Unavailable".into(),
        proto: "HTTP/1.1".into(),
        headers: vec![
            ("Date".into(), http_date(now())),
            ("Server".into(), "Shellac".into()),
            ("X-Varnish".into(), vsl.vxid().to_string()),
            ("Retry-After".into(), "1".into()),
        ],
    };
    vsl.http_resp(crate::vsl::Http::Resp, &resp);
    Reply {
        status: 503,
        reason: resp.reason,
        headers: resp.headers,
        body: ReplyBody::Bytes(Bytes::new()),
        close: false,
        head_length: None,
        minimal: false,
    }
}

fn fallback_503(xid: u64) -> Reply {
    let body = format!("<!DOCTYPE html>\n<html><body><h1>Error 503 VCL failed</h1><p>XID: {xid}</p></body></html>\n");
    Reply {
        status: 503,
        reason: "VCL failed".into(),
        headers: vec![
            ("Content-Type".into(), "text/html; charset=utf-8".into()),
            ("X-Varnish".into(), xid.to_string()),
        ],
        body: ReplyBody::Bytes(Bytes::from(body)),
        close: false,
        head_length: None,
        minimal: false,
    }
}

fn fail_of(t: &Task, e: impl std::fmt::Display) -> Step {
    Step::Fail(format!("xid {}: {e}", t.xid))
}

fn synth_args(t: &Task) -> (u16, Option<String>) {
    match &t.synth {
        // Varnish's VRT_synth: up to 65535 (VCL's own digits above the
        // last three), else 503.
        Some((st, reason)) => (
            u16::try_from(*st)
                .ok()
                .filter(|s| *s % 1000 >= 100)
                .unwrap_or(503),
            reason.clone(),
        ),
        None => (503, None),
    }
}

/// Maps the common returns of client subroutines.
fn common(t: &Task, sub: &str, a: Action) -> Step {
    match a {
        Action::Synth => {
            let (s, r) = synth_args(t);
            Step::Synth(s, r)
        }
        Action::Restart => Step::Recv,
        Action::Fail => Step::Fail(format!("fail in {sub}: {}", t.failed.join("; "))),
        a => Step::Fail(format!("return ({}) in {sub} is not supported", a.name())),
    }
}

/// vcl_recv, vcl_hash and the lookup, up to an object to deliver or a
/// synthetic response.
async fn recv_to_delivery(ctx: &Arc<Ctx>, vcl: &Arc<Vcl>, mut t: Box<Task>) -> (Box<Task>, Step) {
    let ws = client_ws(ctx);
    let (tt, r) = vcl_call(ctx, vcl, Method::Recv, t, ws);
    t = tt;
    // A body that failed to be cached (too big, client gone) ends the
    // request without an answer, as Varnish's cnt_recv.
    if t.req_body.failed() {
        return (t, Step::Hangup);
    }
    // The 100 Continue a client waits for goes out now, whatever VCL
    // decided (unless it failed, or asked for another VCL's vcl_recv
    // first), or with std.late_100_continue(true) when the body is read.
    if !matches!(r, Err(_) | Ok(Some(Action::Vcl))) {
        match t.req_body.send_continue().await {
            Ok(true) => crate::cache_req_body::log_continue(&mut t.vsl),
            Ok(false) => {}
            Err(e) => {
                // The client is gone: no response (Varnish's REM_CLOSE).
                tracing::debug!(xid = t.xid, "{e}");
                return (t, Step::Hangup);
            }
        }
    }
    let action = match r {
        Ok(a) => a.unwrap_or(Action::Hash),
        Err(e) => {
            let s = fail_of(&t, e);
            return (t, s);
        }
    };
    let (mut pass, mut purge, mut pipe) = (false, false, false);
    // A synth or restart from vcl_recv still goes through vcl_hash first,
    // as in Varnish's cnt_recv (only a failure skips it).
    let mut after_hash = None;
    match action {
        Action::Hash | Action::Lookup => {}
        Action::Pass => pass = true,
        Action::Pipe => pipe = true,
        Action::Purge => purge = true,
        Action::Vcl => {
            let label = t.vcl_label.clone().unwrap_or_default();
            return (t, Step::SwitchVcl(label));
        }
        // (Its status and reason taken now: a VCL call resets them.)
        a @ (Action::Synth | Action::Restart) => after_hash = Some(common(&t, "vcl_recv", a)),
        a => {
            let s = common(&t, "vcl_recv", a);
            return (t, s);
        }
    }
    // Accept-Encoding is washed after vcl_recv, for Vary's sake (not for
    // a pass or pipe, whose backend sees the client's).
    if t.gzip_support && !pass && !pipe {
        crate::cache_gzip::normalize_req(&mut t.req.headers);
    }
    t.hash_start();
    let (tt, r) = vcl_call(ctx, vcl, Method::Hash, t, ws);
    t = tt;
    t.hash_finish();
    match r {
        Ok(None | Some(Action::Lookup)) => {}
        Ok(Some(a)) => {
            let s = common(&t, "vcl_hash", a);
            return (t, s);
        }
        Err(e) => {
            let s = fail_of(&t, e);
            return (t, s);
        }
    }
    if let Some(s) = after_hash {
        return (t, s);
    }
    if pipe {
        // vcl_pipe sees the backend request: the client's, the headers
        // `Connection` names gone, `Connection: close` so the backend does not keep
        // the tunnel open for requests Varnish never sees, and X-Varnish.
        t.bereq = t.req.clone();
        crate::cache_http::filter_connection_named(&mut t.bereq.headers);
        hdr_set(&mut t.bereq.headers, "Connection", "close");
        hdr_set(&mut t.bereq.headers, "X-Varnish", &t.xid.to_string());
        // A 100 Continue still owed is the backend's to send, through
        // the tunnel.
        if t.req_body.take_continue() {
            t.bereq
                .headers
                .push(("Expect".into(), "100-continue".into()));
        }
        t.bereq_backend = t.backend_hint;
        crate::vsc::MAIN.s_pipe.inc();
        // The pipe's backend request is a transaction of its own, as in
        // Varnish: begun and linked before vcl_pipe runs.
        let mut bl = crate::vsl::pipe_begin(ctx.next_xid(), &mut t);
        let (tt, r) = vcl_call(ctx, vcl, Method::Pipe, t, ws);
        t = tt;
        let now = now();
        t.vsl.ts("Process", now);
        bl.ts("Process", now);
        let s = match r {
            Ok(None | Some(Action::Pipe)) => pipe_job(ctx, vcl, &t, bl),
            Ok(Some(a)) => common(&t, "vcl_pipe", a),
            Err(e) => fail_of(&t, e),
        };
        return (t, s);
    }
    if purge {
        let n = task_cache(ctx, &t).purge(t.hash);
        crate::vsc::purged(n);
        tracing::debug!(xid = t.xid, "purged {n} objects");
        let (tt, r) = vcl_call(ctx, vcl, Method::Purge, t, ws);
        t = tt;
        let s = match r {
            Ok(None) => Step::Synth(200, Some("Purged".into())),
            Ok(Some(a)) => common(&t, "vcl_purge", a),
            Err(e) => fail_of(&t, e),
        };
        return (t, s);
    }
    if pass {
        return pass_fetch(ctx, vcl, t).await;
    }
    let cache = task_cache(ctx, &t);
    let mut bgfetch = None;
    loop {
        let found = cache.lookup(&crate::cache_hash::LookupReq {
            hash: t.hash,
            url: &t.req.url,
            headers: &t.req.headers,
            t_req: t.req_time,
            always_miss: t.hash_always_miss,
            ignore_busy: t.hash_ignore_busy,
            ignore_vary: t.hash_ignore_vary,
            ttl: t.req_ttl,
            grace: t.req_grace,
        });
        let obj = match found {
            Lookup::Wait(mut rx) => {
                // Woken when the busy fetch ends (its sender is dropped).
                crate::vsc::MAIN.busy_sleep.inc();
                let _ = rx.changed().await;
                crate::vsc::MAIN.busy_wakeup.inc();
                continue;
            }
            Lookup::HitPass(o) => {
                crate::vsc::MAIN.cache_hitpass.inc();
                crate::vsl::hit(&mut t.vsl, vapi::Tag::HitPass, &o);
                t.is_hitpass = true;
                return pass_fetch(ctx, vcl, t).await;
            }
            Lookup::HitMiss(o) => {
                crate::vsc::MAIN.cache_hitmiss.inc();
                crate::vsl::hit(&mut t.vsl, vapi::Tag::HitMiss, &o);
                t.is_hitmiss = true;
                return miss(ctx, vcl, t, None).await;
            }
            Lookup::Miss(g, stale) => {
                t.stale_obj = stale;
                return miss(ctx, vcl, t, Some(g)).await;
            }
            Lookup::Hit(o) => o,
            Lookup::Grace(o, guard) => {
                crate::vsc::MAIN.cache_hit_grace.inc();
                // The background fetch starts once vcl_hit delivers the
                // stale object, as in Varnish; till then the busy marker
                // keeps other requests from starting one.
                bgfetch = guard.map(|g| (g, o.clone()));
                o
            }
        };
        obj.hit(now());
        crate::vsl::hit(&mut t.vsl, vapi::Tag::Hit, &obj);
        t.is_hit = true;
        t.obj = Some(obj.clone());
        let (tt, r) = vcl_call(ctx, vcl, Method::Hit, t, ws);
        t = tt;
        let s = match r {
            Ok(None | Some(Action::Deliver)) => {
                crate::vsc::MAIN.cache_hit.inc();
                if let Some((g, stale)) = bgfetch.take() {
                    start_bgfetch(ctx, vcl, &mut t, &cache, g, stale);
                }
                Step::Deliver(obj.clone(), Some(obj.xid))
            }
            Ok(Some(Action::Pass)) => {
                crate::vsc::MAIN.cache_hit.inc();
                t.obj = None;
                return pass_fetch(ctx, vcl, t).await;
            }
            Ok(Some(a)) => common(&t, "vcl_hit", a),
            Err(e) => fail_of(&t, e),
        };
        return (t, s);
    }
}

/// A background fetch to refresh `stale`, which `t` delivers in grace
/// (Varnish's `VBF_Fetch` with `VBF_BACKGROUND`): `Link bereq N
/// bgfetch`, `Timestamp Fetch`, and the fetch in its own task, holding
/// the busy marker `g` till it is done.
fn start_bgfetch(
    ctx: &Arc<Ctx>,
    vcl: &Arc<Vcl>,
    t: &mut Task,
    cache: &Arc<Cache>,
    g: crate::cache_hash::BusyGuard,
    stale: Arc<Object>,
) {
    crate::vsc::MAIN.s_fetch.inc();
    crate::vsc::MAIN.s_bgfetch.inc();
    t.stale_obj = Some(stale.clone());
    let mut bo = make_bo(ctx, t, false);
    t.stale_obj = None;
    t.vsl.link(vapi::Tag::Link, "bereq", bo.xid, "bgfetch");
    t.vsl.ts("Fetch", now());
    let (ctx2, vcl2, hdrs, hash, cache2) = (
        ctx.clone(),
        crate::cache_vcl::VclRef::new(vcl.clone()),
        t.req.headers.clone(),
        t.hash,
        cache.clone(),
    );
    // The background fetch sends the request body too; the client side
    // waits for it to be done with it before it reads the next request.
    let body = crate::cache_req_body::BereqBody::claim(&t.req_body);
    bo.is_bgfetch = true;
    tokio::spawn(async move {
        let r = fetch(&ctx2, &vcl2, bo, body, &hdrs).await;
        complete_fetch(&cache2, hash, r, Some(g), None, Some(stale)).await;
    });
}

/// The backend task for a miss or pass of `t`.
fn make_bo(ctx: &Ctx, t: &Task, pass: bool) -> Box<Task> {
    let mut bo = Box::new(Task::new(ctx.next_xid(), t.client_ip, t.server_ip, now()));
    bo.set_ports(t.ports());
    bo.vsl = crate::vsl::bereq_buf(bo.xid, t.xid, bo.req_time);
    bo.cache = t.cache.clone();
    bo.tenant = t.tenant.clone();
    bo.method = Method::BackendFetch;
    bo.bereq = t.req.clone();
    let mut mk = crate::vrt_ctx::MkBereq::default();
    if bo.bereq.proto != "HTTP/1.1" {
        mk.old_proto = Some(std::mem::replace(&mut bo.bereq.proto, "HTTP/1.1".into()));
    }
    crate::cache_http::filter_hop_by_hop(&mut bo.bereq.headers);
    if !pass {
        for h in ["if-none-match", "if-modified-since", "range", "if-range"] {
            crate::cache_obj::hdr_unset(&mut bo.bereq.headers, h);
        }
    }
    // What follows shows in the log after the copy (see `MkBereq`):
    // each header set here goes at the end.
    mk.added = 1; // X-Varnish
    if !pass {
        if bo.bereq.method == "HEAD" {
            bo.bereq.method = "GET".into();
            mk.was_head = true;
        }
        // A cacheable fetch asks for gzip: the object then serves both
        // kinds of clients. A client's `gzip` stays where it is.
        if ctx.params().flag("http_gzip_support")
            && hdr_get(&bo.bereq.headers, "accept-encoding") != Some("gzip")
        {
            hdr_set(&mut bo.bereq.headers, "Accept-Encoding", "gzip");
            mk.gzip_added = true;
            mk.added += 1;
        }
        if let Some(stale) = &t.stale_obj {
            // Revalidate instead of refetching (Varnish's conditional
            // backend request for objects in keep).
            if let Some(etag) = stale.headers.get("etag") {
                hdr_set(&mut bo.bereq.headers, "If-None-Match", etag);
                mk.added += 1;
            }
            if let Some(lm) = stale.headers.get("last-modified") {
                hdr_set(&mut bo.bereq.headers, "If-Modified-Since", lm);
                mk.added += 1;
            }
            bo.stale_obj = Some(stale.clone());
        }
    }
    hdr_set(&mut bo.bereq.headers, "X-Varnish", &bo.xid.to_string());
    bo.mkbereq = mk;
    bo.gzip_support = t.gzip_support;
    bo.range_support = t.range_support;
    bo.http0 = bo.bereq.clone();
    bo.bereq_uncacheable = pass;
    bo.max_hdr = t.max_hdr;
    bo.bereq_backend = t.backend_hint;
    bo.is_hitmiss = t.is_hitmiss;
    bo.is_hitpass = t.is_hitpass;
    bo.hash = t.hash;
    bo
}

/// The second half of a fetch, in the fetch's own task: inserts what it
/// produced, releases the busy marker and reads the body. With
/// `do_stream` the object is inserted and handed to `deliver` as soon as
/// its headers are in, so the client and any waiting list stream it; a
/// body that then fails is removed from the cache. Without `do_stream`
/// the body is read first. A fetch that completes replaces `stale`, the
/// expired object it refreshed (Varnish's `HSH_Kill` of the stale
/// object at the end of a fetch).
async fn complete_fetch(
    cache: &Arc<Cache>,
    hash: [u8; 32],
    r: Result<Fetched, crate::cache_fetch::Abandoned>,
    guard: Option<crate::cache_hash::BusyGuard>,
    deliver: Option<tokio::sync::oneshot::Sender<Result<Arc<Object>, String>>>,
    stale: Option<Arc<Object>>,
) {
    let f = match r {
        Ok(f) => f,
        Err(e) => {
            drop(guard);
            if let Some(tx) = deliver {
                let _ = tx.send(Err(e.to_string()));
            }
            return;
        }
    };
    let Fetched {
        obj,
        insert,
        pump,
        stream,
        replaces_stale,
        mut vsl,
        from_error,
    } = f;
    let stale = stale.filter(|_| replaces_stale);
    crate::vsc::transient_if_uncached(&obj, insert.as_ref());
    let mut deliver = deliver;
    if stream || pump.is_none() {
        if let Some(i) = &insert {
            cache.insert(hash, i.clone());
        }
        drop(guard);
        if let Some(tx) = deliver.take() {
            let _ = tx.send(Ok(obj.clone()));
        }
        let ok = match pump {
            Some(p) => match p.run(&obj.body, &mut vsl).await {
                Err(e) => {
                    tracing::warn!(xid = obj.xid, "FetchError: {e}");
                    vsl.log(vapi::Tag::FetchError, &e);
                    crate::vsc::MAIN.fetch_failed.inc();
                    cache.remove(hash, &obj);
                    obj.body.finish(false);
                    false
                }
                Ok(done) => {
                    obj.body.finish(true);
                    cache.account(&obj);
                    done.nap().await;
                    true
                }
            },
            None => true,
        };
        if let (true, Some(s)) = (ok, stale) {
            cache.remove(hash, &s);
        }
        crate::vsl::body_done(&mut vsl, &obj, !from_error);
    } else {
        let ok = match pump {
            Some(p) => match p.run(&obj.body, &mut vsl).await {
                Ok(done) => {
                    done.nap().await;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            None => Ok(()),
        };
        obj.body.finish(ok.is_ok());
        if let Err(e) = &ok {
            vsl.log(vapi::Tag::FetchError, e);
        }
        crate::vsl::body_done(&mut vsl, &obj, !from_error);
        match ok {
            Ok(()) => {
                if let Some(i) = &insert {
                    cache.insert(hash, i.clone());
                }
                if let Some(s) = stale {
                    cache.remove(hash, &s);
                }
                drop(guard);
                if let Some(tx) = deliver.take() {
                    let _ = tx.send(Ok(obj));
                }
            }
            Err(e) => {
                drop(guard);
                if let Some(tx) = deliver.take() {
                    let _ = tx.send(Err(e));
                }
            }
        }
    }
}

/// Runs the fetch in its own task (a client that goes away does not abort
/// it) and waits until the object may be delivered.
/// The tunnel for a `pipe`, to the backend `vcl_pipe` left in
/// `bereq.backend`; without one (or one that is `none`) the connection
/// closes without an answer, as Varnish's VDI_Http1Pipe.
fn pipe_job(ctx: &Ctx, vcl: &Vcl, t: &Task, vsl: crate::vsl::Buf) -> Step {
    let Ok(be) = vcl.shared.resolve(t.bereq_backend, t) else {
        tracing::warn!(xid = t.xid, "Backend does not support pipe");
        return Step::Hangup;
    };
    let params = ctx.params();
    Step::Pipe(Box::new(crate::cache_pipe::PipeJob {
        connect_timeout: t
            .connect_timeout
            .or(be.connect_timeout)
            .unwrap_or_else(|| params.num("connect_timeout")),
        pipe_timeout: params.num("pipe_timeout"),
        backend: be,
        bereq: t.bereq.clone(),
        // A cached body goes first; an unread one follows on the tunnel.
        body: t.req_body.cached().unwrap_or_default(),
        vsl,
    }))
}

async fn run_fetch(
    ctx: &Arc<Ctx>,
    vcl: &Arc<Vcl>,
    t: &mut Task,
    pass: bool,
    guard: Option<crate::cache_hash::BusyGuard>,
) -> Step {
    let bo = make_bo(ctx, t, pass);
    let stale = bo.stale_obj.clone();
    let how = if pass { "pass" } else { "fetch" };
    t.vsl.link(vapi::Tag::Link, "bereq", bo.xid, how);
    crate::vsc::MAIN.s_fetch.inc();
    let (ctx2, vcl2, hdrs, hash, body, cache) = (
        ctx.clone(),
        crate::cache_vcl::VclRef::new(vcl.clone()),
        t.req.headers.clone(),
        t.hash,
        crate::cache_req_body::BereqBody::claim(&t.req_body),
        task_cache(ctx, t),
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let r = fetch(&ctx2, &vcl2, bo, body, &hdrs).await;
        complete_fetch(&cache, hash, r, guard, Some(tx), stale).await;
    });
    let fetched = rx.await;
    // The fetch read the body from the client: Varnish pulls it through
    // a Transient object, and a late 100 Continue went out first.
    let read_at = t.req_body.take_read_done();
    if read_at.is_some() {
        t.vsl.log(vapi::Tag::Storage, "malloc Transient");
    }
    if t.req_body.take_continue_unlogged() {
        crate::cache_req_body::log_continue(&mut t.vsl);
    }
    if let Some(at) = read_at {
        t.vsl.ts("ReqBody", at);
    }
    t.vsl.ts("Fetch", now());
    match fetched {
        Ok(Ok(obj)) => Step::Deliver(obj, None),
        Ok(Err(e)) => {
            // A failed fetch (abandon, fail, a body that broke before
            // delivery) is a plain 503 for the client, as in Varnish's
            // cnt_fetch; "Backend fetch failed" is what
            // vcl_backend_error's object says.
            tracing::warn!(xid = t.xid, "{e}");
            Step::Synth(503, None)
        }
        Err(e) => Step::Fail(format!("fetch task: {e}")),
    }
}

async fn miss(
    ctx: &Arc<Ctx>,
    vcl: &Arc<Vcl>,
    mut t: Box<Task>,
    guard: Option<crate::cache_hash::BusyGuard>,
) -> (Box<Task>, Step) {
    let (tt, r) = vcl_call(ctx, vcl, Method::Miss, t, client_ws(ctx));
    t = tt;
    let s = match r {
        Ok(None | Some(Action::Fetch)) => {
            crate::vsc::MAIN.cache_miss.inc();
            run_fetch(ctx, vcl, &mut t, false, guard).await
        }
        Ok(Some(Action::Pass)) => {
            drop(guard);
            return pass_fetch(ctx, vcl, t).await;
        }
        Ok(Some(a)) => common(&t, "vcl_miss", a),
        Err(e) => fail_of(&t, e),
    };
    (t, s)
}

async fn pass_fetch(ctx: &Arc<Ctx>, vcl: &Arc<Vcl>, mut t: Box<Task>) -> (Box<Task>, Step) {
    let (tt, r) = vcl_call(ctx, vcl, Method::Pass, t, client_ws(ctx));
    t = tt;
    let s = match r {
        Ok(None | Some(Action::Fetch)) => {
            crate::vsc::MAIN.s_pass.inc();
            run_fetch(ctx, vcl, &mut t, true, None).await
        }
        Ok(Some(a)) => common(&t, "vcl_pass", a),
        Err(e) => fail_of(&t, e),
    };
    (t, s)
}

fn deliver(
    ctx: &Arc<Ctx>,
    vcl: &Vcl,
    mut t: Box<Task>,
    obj: Arc<Object>,
    hit_xid: Option<u64>,
) -> (Box<Task>, Result<Reply, Step>) {
    let n = now();
    // One read of the parameters per delivery.
    let params = ctx.params();
    // An object with every header slot taken leaves none for the
    // response: Varnish cannot set up the delivery and answers 500.
    if obj.headers.len() >= t.max_hdr {
        tracing::warn!(xid = t.xid, "Too many headers to Decode object");
        return (t, Err(Step::Synth(500, None)));
    }
    // What described the backend's connection does not describe the
    // client's (Varnish's HTTPH_A_DELIVER filter). Room for the four
    // headers added below.
    let mut headers = obj.headers.to_vec_without(
        |name| {
            [
                "connection",
                "keep-alive",
                "proxy-connection",
                "te",
                "trailer",
                "upgrade",
            ]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
        },
        4,
    );
    // After a hit (also one that vcl_hit turned into a pass), Varnish
    // names the delivered object's XID too.
    let hit_xid = hit_xid.or(t.is_hit.then_some(obj.xid));
    let xv = match hit_xid {
        Some(h) => format!("{} {h}", t.xid),
        None => t.xid.to_string(),
    };
    hdr_set(&mut headers, "X-Varnish", &xv);
    hdr_set(
        &mut headers,
        "Age",
        &((n - obj.t_origin).max(0.0) as u64).to_string(),
    );
    hdr_set(&mut headers, "Via", VIA);
    if hdr_get(&headers, "date").is_none() {
        headers.push(("Date".into(), http_date(n)));
    }
    t.resp = RespMsg {
        status: obj.status,
        reason: obj.headers.reason().to_string(),
        proto: "HTTP/1.1".into(),
        headers,
    };
    crate::cache_deliver::setup_deliver(&mut t.resp, &obj, &t.req.headers, &params);
    t.vsl.http_resp(crate::vsl::Http::Resp, &t.resp);
    t.obj = Some(obj.clone());
    t.resp_do_esi = true;
    t.vdp_filters = None;
    let (tt, r) = vcl_call(ctx, vcl, Method::Deliver, t, client_ws(ctx));
    t = tt;
    t.vsl.ts("Process", now());
    match r {
        Ok(None | Some(Action::Deliver)) => {
            let head = t.req.method == "HEAD";
            if t.esi_level == 0
                && t.resp.status % 1000 == 200
                && not_modified(&t.req.headers, &t.resp.headers, now())
            {
                t.resp.status = 304;
                t.resp.reason = "Not Modified".into();
                // Varnish's http_PutResponse: the whole status line.
                t.vsl.status_line(crate::vsl::Http::Resp, &t.resp);
            }
            let disable_esi = !t.resp_do_esi || !t.req_esi;
            let (client, server, level) = (t.client_ip, t.server_ip, t.esi_level);
            let ports = t.ports();
            let filters = t.vdp_filters.take();
            // Copies of the request for ESI includes, made only when the
            // delivery has includes (not on every hit).
            let (http0, req, req_top, req_time) = (&t.http0, &t.req, &t.req_top, t.req_time);
            let (vcl_start, tenant, req_start) = (&t.vcl_start, &t.tenant, &t.req_start);
            let tr = crate::cache_deliver::TransmitReq {
                req: &req.headers,
                head,
                esi_level: t.esi_level,
                disable_esi,
                filters: filters.as_deref(),
                params: &params,
            };
            // Includes link from this request's log while it delivers.
            let parent = t.vsl.follow();
            let job = |gzip_out| crate::cache_esi::EsiJob {
                ctx: ctx.clone(),
                obj: obj.clone(),
                req0: http0.clone(),
                client,
                server,
                level,
                gzip_out,
                req_start: req_start.clone(),
                ports,
                top: req_top.clone().unwrap_or_else(|| {
                    let start = vcl_start.clone().map(|s| crate::mgt_vcl::Route {
                        tenant: tenant.clone().unwrap_or(s.tenant),
                        ..s
                    });
                    Arc::new((req.clone(), req_time, start))
                }),
                parent,
            };
            let (body, head_length, close) =
                match crate::cache_deliver::transmit(&tr, &mut t.resp, &obj, &mut t.vsl, job) {
                    Ok((b, h)) => (b, h, false),
                    Err(e) => {
                        tracing::warn!(xid = t.xid, "Failure to push processors: {e}");
                        (ReplyBody::Bytes(Bytes::new()), None, true)
                    }
                };
            let reply = Reply {
                head_length,
                minimal: false,
                status: t.resp.status % 1000,
                reason: std::mem::take(&mut t.resp.reason),
                headers: std::mem::take(&mut t.resp.headers),
                body,
                close,
            };
            (t, Ok(reply))
        }
        Ok(Some(a)) => {
            let s = common(&t, "vcl_deliver", a);
            (t, Err(s))
        }
        Err(e) => {
            let s = fail_of(&t, e);
            (t, Err(s))
        }
    }
}

fn synth(
    ctx: &Ctx,
    vcl: &Vcl,
    mut t: Box<Task>,
    status: u16,
    reason: Option<String>,
) -> (Box<Task>, Result<Reply, Step>) {
    crate::vsc::MAIN.s_synth.inc();
    let reason =
        reason.unwrap_or_else(|| crate::cache_http::status_reason(status % 1000).to_string());
    t.resp = RespMsg {
        status,
        reason,
        proto: "HTTP/1.1".into(),
        headers: vec![
            ("Date".into(), http_date(now())),
            ("Server".into(), "Varnish".into()),
            ("X-Varnish".into(), t.xid.to_string()),
        ],
    };
    // A client still waiting for its 100 Continue (late, body unread):
    // VCL is offered to close the connection rather than send the 100
    // and read the body, and may veto by removing the header.
    if t.req_body.wants_continue() {
        t.resp.headers.push(("Connection".into(), "close".into()));
    }
    t.vsl.http_resp(crate::vsl::Http::Resp, &t.resp);
    t.synth_body.clear();
    t.obj = None;
    let (tt, r) = vcl_call(ctx, vcl, Method::Synth, t, client_ws(ctx));
    t = tt;
    t.vsl.ts("Process", now());
    // With the restarts used up, a restart from vcl_synth delivers what
    // it made, as in Varnish.
    let r = match r {
        Ok(Some(Action::Restart)) if t.restarts > ctx.params().hot().max_restarts => {
            Ok(Some(Action::Deliver))
        }
        r => r,
    };
    match r {
        Ok(None | Some(Action::Deliver)) => {
            let body = Bytes::from(std::mem::take(&mut t.synth_body));
            let head = t.req.method == "HEAD";
            let range = !head && ctx.params().flag("http_range_support");
            let body = crate::cache_deliver::synth_transmit(
                &t.req.headers,
                &mut t.resp,
                body,
                range,
                &mut t.vsl,
            );
            let reply = Reply {
                status: t.resp.status % 1000,
                reason: std::mem::take(&mut t.resp.reason),
                headers: std::mem::take(&mut t.resp.headers),
                body: ReplyBody::Bytes(if head { Bytes::new() } else { body }),
                close: false,
                head_length: None,
                minimal: false,
            };
            (t, Ok(reply))
        }
        Ok(Some(Action::Restart)) => (t, Err(Step::Recv)),
        // A failing vcl_synth leaves only a bare status line and a close
        // (Varnish's minimal response).
        Ok(Some(a)) => {
            tracing::warn!(xid = t.xid, "{} in vcl_synth", a.name());
            (t, Ok(Reply::minimal(500)))
        }
        Err(e) => {
            tracing::warn!(xid = t.xid, "vcl_synth failed: {e}");
            (t, Ok(Reply::minimal(500)))
        }
    }
}

/// Whether a conditional client request is satisfied by the response
/// (Varnish's `RFC2616_Do_Cond`): `If-None-Match` against `ETag` (weak
/// comparison), else `If-Modified-Since` against `Last-Modified`.
fn not_modified(req: &Headers, resp: &Headers, now: f64) -> bool {
    if let Some(inm) = hdr_get(req, "if-none-match") {
        let Some(etag) = hdr_get(resp, "etag") else {
            return false;
        };
        // With a Range only a strong comparison may match (RFC 7233).
        if hdr_get(req, "range").is_some() {
            let etag = etag.trim();
            return !etag.starts_with("W/")
                && inm.split(',').any(|c| c.trim() == "*" || c.trim() == etag);
        }
        let weak = |e: &str| e.trim().trim_start_matches("W/").to_string();
        let etag = weak(etag);
        return inm.split(',').any(|c| c.trim() == "*" || weak(c) == etag);
    }
    if let Some(ims) = hdr_get(req, "if-modified-since") {
        // A date in the future is no date (RFC 9110 13.1.3), as Varnish
        // has it.
        let ims = crate::cache_expire::parse_http_date(ims).filter(|i| *i <= now);
        let lm = hdr_get(resp, "last-modified").and_then(crate::cache_expire::parse_http_date);
        return matches!((ims, lm), (Some(i), Some(l)) if l <= i);
    }
    false
}

/// The cache a task works on: its tenant's.
fn task_cache(ctx: &Ctx, t: &Task) -> Arc<Cache> {
    t.cache.clone().unwrap_or_else(|| ctx.cache.clone())
}

/// Calls into the VCL and applies what the call asked of the cache (bans).
pub fn vcl_call(
    ctx: &Ctx,
    vcl: &Vcl,
    method: Method,
    mut t: Box<Task>,
    ws: u32,
) -> (
    Box<Task>,
    Result<Option<Action>, crate::cache_vcl::CallError>,
) {
    t.vsl.vcl_call(method);
    let (mut t, r) = vcl.call(method, t, ws);
    t.vsl.vcl_return(method, &r);
    if !t.new_bans.is_empty() {
        let cache = task_cache(ctx, &t);
        for b in t.new_bans.drain(..) {
            tracing::info!(xid = t.xid, "ban: {}", b.text);
            cache.bans.add(b, ctx.params().flag("ban_dups"));
        }
    }
    (t, r)
}
