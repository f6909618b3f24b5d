//! A client session (Varnish's `cache_session`): its VXID, when it
//! opened, and why it closed. Dropping the [`Sess`] ends the session:
//! the close reason is counted in `MAIN.sc_*` (and `sess_closed_err` for
//! the reasons Varnish calls errors) and logged.
//!
//! The session's log is Varnish's: `Begin sess 0 HTTP/1`, `SessOpen`, a
//! `Link req N rxreq` per request, `SessClose REASON DURATION`, `End`;
//! each request's log begins here too ([`Sess::req_log`]) up to its
//! request line and headers, and ends here after delivery
//! ([`Sess::req_done`]).

use crate::cache_req_fsm::Ctx;
use crate::vsl::{Buf, Http};
use std::net::SocketAddr;
use vapi::{Kind, Tag};

/// Why a session closed (Varnish's `SC_*`, from `tbl/sess_close.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sc {
    RemClose,
    ReqClose,
    ReqHttp10,
    RxBad,
    RxBody,
    RxJunk,
    RxOverflow,
    RxTimeout,
    RxCloseIdle,
    TxPipe,
    TxError,
    TxEof,
    RespClose,
    Overload,
    PipeOverflow,
    RangeShort,
    ReqHttp20,
    VclFailure,
}

impl Sc {
    /// The name varnishlog shows (`REM_CLOSE`).
    pub fn name(self) -> &'static str {
        match self {
            Sc::RemClose => "REM_CLOSE",
            Sc::ReqClose => "REQ_CLOSE",
            Sc::ReqHttp10 => "REQ_HTTP10",
            Sc::RxBad => "RX_BAD",
            Sc::RxBody => "RX_BODY",
            Sc::RxJunk => "RX_JUNK",
            Sc::RxOverflow => "RX_OVERFLOW",
            Sc::RxTimeout => "RX_TIMEOUT",
            Sc::RxCloseIdle => "RX_CLOSE_IDLE",
            Sc::TxPipe => "TX_PIPE",
            Sc::TxError => "TX_ERROR",
            Sc::TxEof => "TX_EOF",
            Sc::RespClose => "RESP_CLOSE",
            Sc::Overload => "OVERLOAD",
            Sc::PipeOverflow => "PIPE_OVERFLOW",
            Sc::RangeShort => "RANGE_SHORT",
            Sc::ReqHttp20 => "REQ_HTTP20",
            Sc::VclFailure => "VCL_FAILURE",
        }
    }

    /// Whether Varnish counts the reason as an error.
    pub fn is_err(self) -> bool {
        !matches!(
            self,
            Sc::RemClose | Sc::ReqClose | Sc::RxCloseIdle | Sc::TxPipe | Sc::TxEof | Sc::RespClose
        )
    }

    fn count(self) {
        use crate::vsc::MAIN as M;
        match self {
            Sc::RemClose => M.sc_rem_close.inc(),
            Sc::ReqClose => M.sc_req_close.inc(),
            Sc::ReqHttp10 => M.sc_req_http10.inc(),
            Sc::RxBad => M.sc_rx_bad.inc(),
            Sc::RxBody => M.sc_rx_body.inc(),
            Sc::RxJunk => M.sc_rx_junk.inc(),
            Sc::RxOverflow => M.sc_rx_overflow.inc(),
            Sc::RxTimeout => M.sc_rx_timeout.inc(),
            Sc::RxCloseIdle => M.sc_rx_close_idle.inc(),
            Sc::TxPipe => M.sc_tx_pipe.inc(),
            Sc::TxError => M.sc_tx_error.inc(),
            Sc::TxEof => M.sc_tx_eof.inc(),
            Sc::RespClose => M.sc_resp_close.inc(),
            Sc::Overload => M.sc_overload.inc(),
            Sc::PipeOverflow => M.sc_pipe_overflow.inc(),
            Sc::RangeShort => M.sc_range_short.inc(),
            Sc::ReqHttp20 => M.sc_req_http20.inc(),
            Sc::VclFailure => M.sc_vcl_failure.inc(),
        }
        if self.is_err() {
            M.sess_closed_err.inc();
        }
    }
}

/// One client connection.
pub struct Sess {
    /// The session's VXID (requests on it link to it).
    pub vxid: u64,
    /// When the connection was accepted.
    pub t_open: f64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Why it closes; `None` until known (a session dropped without a
    /// reason closed because the client did).
    close: Option<Sc>,
    /// `ReqStart`'s data (`IP PORT LISTENER`), the same for every
    /// request of the session.
    /// `ReqStart`'s text: the client's address and port, the listener
    /// (shared with the session's requests' ESI includes, which log it).
    pub req_start: std::sync::Arc<str>,
    vsl: Buf,
}

impl Sess {
    /// A session accepted on listener `listener` (`a0`).
    pub fn new(
        ctx: &Ctx,
        stream: &tokio::net::TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        listener: &str,
    ) -> Sess {
        use std::os::fd::AsRawFd;
        crate::vsc::MAIN.sess_conn.inc();
        crate::vsc::MAIN.s_sess.inc();
        let vxid = ctx.next_xid();
        let t_open = crate::vrt_ctx::now();
        let mut vsl = Buf::new(vxid, Kind::Client, t_open);
        vsl.log(Tag::Begin, "sess 0 HTTP/1");
        vsl.logf(
            Tag::SessOpen,
            format_args!(
                "{} {} {listener} {} {} {t_open:.6} {}",
                peer.ip(),
                peer.port(),
                local.ip(),
                local.port(),
                stream.as_raw_fd()
            ),
        );
        Sess {
            vxid,
            t_open,
            peer,
            local,
            close: None,
            req_start: format!("{} {} {listener}", peer.ip(), peer.port()).into(),
            vsl,
        }
    }

    /// A new request on the session: its VXID, linked from the session,
    /// and its log up to the request as received (`Begin`, `Timestamp
    /// Start`/`Req`, `VCL_use`, `ReqUnset` of the headers the transport
    /// took out (`unset`), `ReqStart`, `ReqMethod`…`ReqHeader`).
    /// `t_first` is when its first byte arrived, `t_req` when all of its
    /// head had.
    pub fn req_log(
        &mut self,
        ctx: &Ctx,
        t_first: f64,
        t_req: f64,
        unset: &[(String, String)],
        req: &crate::vrt_ctx::ReqMsg,
    ) -> Buf {
        let xid = ctx.next_xid();
        self.vsl.link(Tag::Link, "req", xid, "rxreq");
        let mut b = Buf::new(xid, Kind::Client, t_first).end_on_drop();
        b.link(Tag::Begin, "req", self.vxid, "rxreq");
        b.ts("Start", t_first);
        b.ts("Req", t_req);
        if crate::vsl::enabled(Tag::VCL_use) {
            b.log(Tag::VCL_use, &ctx.active_name());
        }
        // What the transport took out (`Expect: 100-continue`) shows
        // before the request, as in Varnish.
        for (n, v) in unset {
            b.logf(Tag::ReqUnset, format_args!("{n}: {v}"));
        }
        b.log(Tag::ReqStart, &self.req_start);
        b.http_req(Http::Req, req);
        b
    }

    /// A request whose head could not be parsed, answered with a bare
    /// 400 (Varnish's `http1_abort`): its transaction holds the
    /// `BogoHeader` the parser gave, `HttpGarbage` (what Varnish's record
    /// shows of the head: its first word), the response line and
    /// `ReqAcct` (`head` is what was received).
    pub fn bad_req(
        &mut self,
        ctx: &Ctx,
        t_first: f64,
        t_req: f64,
        bogo: Option<&str>,
        head: &[u8],
    ) {
        let end = head
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|n| n + 4)
            .or_else(|| head.windows(2).position(|w| w == b"\n\n").map(|n| n + 2))
            .unwrap_or(head.len());
        self.refused(
            ctx,
            (t_first, t_req),
            Refusal::Garbage { bogo, head },
            400,
            end as u64,
        );
    }

    /// A request refused before VCL sees it and before it is logged
    /// (Varnish's transport checks): `Begin`, `Timestamp Start` and
    /// `Req`, what `how` says, the bare response (`HTTP/1.1 STATUS
    /// REASON` and an empty line) and `ReqAcct` (`hdr_bytes` received).
    pub fn refused(
        &mut self,
        ctx: &Ctx,
        (t_first, t_req): (f64, f64),
        how: Refusal<'_>,
        status: u16,
        hdr_bytes: u64,
    ) {
        let xid = ctx.next_xid();
        self.vsl.link(Tag::Link, "req", xid, "rxreq");
        let mut b = Buf::new(xid, Kind::Client, t_first);
        b.link(Tag::Begin, "req", self.vxid, "rxreq");
        b.ts("Start", t_first);
        b.ts("Req", t_req);
        match how {
            Refusal::Garbage { bogo, head } => {
                if let Some(m) = bogo {
                    b.log(Tag::BogoHeader, m);
                }
                // The head as Varnish's parser left it: its first word,
                // NUL-terminated.
                let word = head
                    .iter()
                    .position(|c| c.is_ascii_whitespace())
                    .map_or(head, |n| &head[..n]);
                b.log_cstr(Tag::HttpGarbage, word);
            }
            Refusal::Expect => {
                if crate::vsl::enabled(Tag::VCL_use) {
                    b.log(Tag::VCL_use, &ctx.active_name());
                }
            }
        }
        let reason = crate::cache_http::status_reason(status);
        b.log(Tag::RespProtocol, "HTTP/1.1");
        b.numbers(Tag::RespStatus, &[u64::from(status)]);
        b.log(Tag::RespReason, reason);
        // "HTTP/1.1 SSS REASON\r\n\r\n"
        let resp = (9 + 4 + reason.len() + 4) as u64;
        b.numbers(Tag::ReqAcct, &[hdr_bytes, 0, hdr_bytes, resp, 0, resp]);
        b.end();
    }

    /// A request delivered: the `100 Continue` the drain of its body sent
    /// (`sent_continue`), `Timestamp ReqBody` when its body was read
    /// (drained) after VCL was done, `Timestamp Resp`, `ReqAcct` and
    /// `End`, after what the request logged (`f`; it started at
    /// `t_start`).
    pub fn req_done(
        &mut self,
        f: &crate::vsl::Follow,
        t_start: f64,
        sent_continue: bool,
        body_read: Option<f64>,
        acct: &ReqAcct,
    ) {
        let mut b = f.resume(t_start);
        // Varnish pulls a body it drains through a Transient object too.
        if body_read.is_some() {
            b.log(Tag::Storage, "malloc Transient");
        }
        if sent_continue {
            crate::cache_req_body::log_continue(&mut b);
        }
        if let Some(at) = body_read {
            b.ts("ReqBody", at);
        }
        b.ts("Resp", crate::vrt_ctx::now());
        b.numbers(
            Tag::ReqAcct,
            &[
                acct.req_hdrbytes,
                acct.req_bodybytes,
                acct.req_hdrbytes + acct.req_bodybytes,
                acct.resp_hdrbytes,
                acct.resp_bodybytes,
                acct.resp_hdrbytes + acct.resp_bodybytes,
            ],
        );
        b.end();
    }

    /// Records why the session closes (the first reason given wins).
    pub fn close(&mut self, sc: Sc) {
        self.close.get_or_insert(sc);
    }
}

impl Drop for Sess {
    fn drop(&mut self) {
        let sc = self.close.unwrap_or(Sc::RemClose);
        sc.count();
        let now = crate::vrt_ctx::now();
        self.vsl.logf(
            Tag::SessClose,
            format_args!("{} {:.3}", sc.name(), now - self.t_open),
        );
        self.vsl.log(Tag::End, "");
    }
}

/// Why a request was refused before it was logged (see
/// [`Sess::refused`]).
pub enum Refusal<'a> {
    /// A head that could not be parsed (or a request it cannot be
    /// served as): what the parser said, and the head.
    Garbage {
        bogo: Option<&'a str>,
        head: &'a [u8],
    },
    /// An `Expect` other than `100-continue` (417).
    Expect,
}

/// Why the connection closes after `reply` when the writer says it must:
/// the client asked (`REQ_CLOSE`, or `REQ_HTTP10` for HTTP/1.0 without
/// keep-alive), the response said so (`RESP_CLOSE`), or the body was
/// delimited by the close (`TX_EOF`).
pub fn resp_close(
    reply: &crate::cache_req_fsm::Reply,
    ex: &crate::cache_http1_deliver::Exchange,
) -> Sc {
    if ex.close {
        return if ex.version == 10 {
            Sc::ReqHttp10
        } else {
            Sc::ReqClose
        };
    }
    let says_close = reply.headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")
    });
    if reply.close || says_close {
        Sc::RespClose
    } else {
        Sc::TxEof
    }
}

/// What one client request moved (Varnish's `acct_req`, logged as
/// `ReqAcct` and summed into `MAIN.s_req_*`/`MAIN.s_resp_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReqAcct {
    pub req_hdrbytes: u64,
    pub req_bodybytes: u64,
    pub resp_hdrbytes: u64,
    pub resp_bodybytes: u64,
}

impl ReqAcct {
    /// Adds the request's bytes to the `MAIN` counters.
    pub fn charge(&self) {
        use crate::vsc::MAIN as M;
        M.s_req_hdrbytes.add(self.req_hdrbytes);
        M.s_req_bodybytes.add(self.req_bodybytes);
        M.s_resp_hdrbytes.add(self.resp_hdrbytes);
        M.s_resp_bodybytes.add(self.resp_bodybytes);
    }
}
