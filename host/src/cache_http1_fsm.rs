//! One client connection over HTTP/1 (Varnish's `cache_http1_fsm`): wait
//! for a request head within `timeout_idle`, dissect it, run the request
//! through VCL (which reads the body when it needs it, see
//! `cache_req_body`), write the response, and go round again while the
//! connection may be kept. Bytes the client sent ahead (a pipelined
//! request) stay in the buffer for the next round.

use crate::cache_http1_deliver::{write_minimal, write_reply, Exchange};
use crate::cache_http1_proto::{
    connection_has, dissect, leading_space, BodyFraming, HeadError, HeadLimits,
};
use crate::cache_req_body::{ClientReader, ReqBody};
use crate::cache_req_fsm::{handle_txn, Ctx, ReplyBody};
use crate::cache_session::{Refusal, Sc, Sess};
use bytes::{Buf, Bytes, BytesMut};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Serves one connection until it closes.
pub async fn session(ctx: Arc<Ctx>, stream: TcpStream, mut sess: Sess) {
    // A worker in Varnish's terms while it is served; a session waiting
    // past timeout_linger is herded and holds none.
    let mut busy = Some(crate::cache_pool::Busy::new());
    let (peer, local) = (sess.peer, sess.local);
    let idle = crate::vrt_ctx::secs(ctx.params().hot().timeout_idle.max(0.001));
    let (rd, mut wr) = stream.into_split();
    let mut conn = ClientReader {
        rd,
        buf: BytesMut::with_capacity(16 << 10),
        idle,
    };
    loop {
        let params = ctx.params();
        let limits = HeadLimits {
            req_size: params.hot().http_req_size,
            hdr_len: params.hot().http_req_hdr_len,
            max_hdr: params.hot().http_max_hdr,
        };
        let send_timeout = crate::vrt_ctx::secs(params.hot().send_timeout.max(0.001));
        let linger = crate::vrt_ctx::secs(params.num("timeout_linger").max(0.0));
        drop(params);
        // The whole head must arrive within timeout_idle.
        let deadline = Instant::now() + idle;
        // A connection quiet for timeout_linger is what Varnish hands to
        // its waiter (`sess_herd`): counted once per wait.
        let mut herd_at = conn.buf.is_empty().then(|| Instant::now() + linger);
        let mut acct = crate::cache_session::ReqAcct::default();
        let mut t_first = (!conn.buf.is_empty()).then(crate::vrt_ctx::now);
        let req = loop {
            let skip = leading_space(&conn.buf);
            conn.buf.advance(skip);
            match dissect(&conn.buf, &limits) {
                Ok(Some((req, n))) => {
                    conn.buf.advance(n);
                    acct.req_hdrbytes = n as u64;
                    break req;
                }
                Ok(None) => {}
                Err(HeadError::Overflow) => {
                    // Varnish closes such a connection without an answer.
                    tracing::debug!(%peer, "request head over http_req_size");
                    sess.close(Sc::RxOverflow);
                    return;
                }
                Err(e @ (HeadError::Bad(_) | HeadError::BadHeader(_))) => {
                    tracing::debug!(%peer, "{e}");
                    crate::vsc::MAIN.client_req_400.inc();
                    sess.close(Sc::RxJunk);
                    let t_req = crate::vrt_ctx::now();
                    let bogo = match &e {
                        HeadError::BadHeader(b) => Some(b.as_str()),
                        _ => None,
                    };
                    sess.bad_req(&ctx, t_first.unwrap_or(t_req), t_req, bogo, &conn.buf);
                    let _ = write_minimal(&mut wr, 400, "Bad Request").await;
                    return close(wr).await;
                }
            }
            if conn.buf.capacity() - conn.buf.len() < 4096 {
                conn.buf.reserve(16 << 10);
            }
            let until = herd_at.map_or(deadline, |h| h.min(deadline));
            match tokio::time::timeout_at(until, conn.rd.read_buf(&mut conn.buf)).await {
                Ok(Ok(n)) if n > 0 => {
                    herd_at = None;
                    busy.get_or_insert_with(crate::cache_pool::Busy::new);
                    t_first.get_or_insert_with(crate::vrt_ctx::now);
                }
                Ok(_) => return,
                Err(_) if until < deadline => {
                    herd_at = None;
                    busy = None;
                    crate::vsc::MAIN.sess_herd.inc();
                }
                Err(_) => {
                    let sc = if conn.buf.is_empty() {
                        Sc::RxTimeout
                    } else {
                        Sc::RxJunk
                    };
                    sess.close(sc);
                    return;
                }
            }
        };
        let mut msg = req.msg;
        let t_req = crate::vrt_ctx::now();
        let expect = msg
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("expect"))
            .map(|(_, v)| v.trim().to_ascii_lowercase());
        // `Expect: 100-continue` is the transport's business, not VCL's
        // or the backend's: gone from the request before it is logged
        // (`ReqUnset`), and remembered when the client waits for the
        // interim response (HTTP/1.1, and none of its body sent yet).
        let mut unset = Vec::new();
        let mut want_continue = false;
        if expect.as_deref() == Some("100-continue") {
            want_continue = req.version >= 11 && conn.buf.is_empty();
            msg.headers.retain(|h| {
                let expect = h.0.eq_ignore_ascii_case("expect");
                if expect {
                    unset.push(h.clone());
                }
                !expect
            });
        }
        // Refused before any VCL runs and before the request is logged,
        // as Varnish does: an `Expect` other than 100-continue, and an
        // HTTP/1.0 POST or PUT without a length.
        let times = (t_first.unwrap_or(t_req), t_req);
        if expect.as_deref().is_some_and(|e| e != "100-continue") {
            crate::vsc::MAIN.client_req_417.inc();
            sess.close(Sc::RxJunk);
            sess.refused(&ctx, times, Refusal::Expect, 417, acct.req_hdrbytes);
            let _ = write_minimal(&mut wr, 417, "Expectation Failed").await;
            return close(wr).await;
        }
        if req.version == 10
            && (msg.method == "POST" || msg.method == "PUT")
            && req.body == BodyFraming::None
        {
            crate::vsc::MAIN.client_req_400.inc();
            sess.close(Sc::RxJunk);
            let how = Refusal::Garbage {
                bogo: None,
                head: msg.method.as_bytes(),
            };
            sess.refused(&ctx, times, how, 400, acct.req_hdrbytes);
            let _ = write_minimal(&mut wr, 400, "Bad Request").await;
            return close(wr).await;
        }
        let mut rlog = sess.req_log(&ctx, times.0, t_req, &unset, &msg);
        let rxid = rlog.follow();
        let mut close_after = connection_has(&msg.headers, "close")
            || (req.version == 10 && !connection_has(&msg.headers, "keep-alive"));
        let ex = Exchange {
            head: msg.method == "HEAD",
            version: req.version,
            close: false,
        };
        // The body stays on the connection until something reads it; the
        // 100 Continue goes out after vcl_recv or when it is read.
        let body = ReqBody::new(conn, req.body, want_continue.then_some(send_timeout));
        crate::vsc::MAIN.client_req.inc();
        let rt0 = rlog.t_start;
        let mut reply = handle_txn(
            ctx.clone(),
            msg,
            body.clone(),
            (peer, local),
            sess.req_start.clone(),
            rlog.detach(),
        )
        .await;
        if let ReplyBody::Pipe(_) = reply.body {
            let ReplyBody::Pipe(job) =
                std::mem::replace(&mut reply.body, ReplyBody::Bytes(Bytes::new()))
            else {
                return;
            };
            let Some(mut reader) = body.into_reader().await else {
                return;
            };
            let leftover = std::mem::take(&mut reader.buf);
            let Ok(stream) = reader.rd.reunite(wr) else {
                return;
            };
            // A backend that cannot be reached closes the client's
            // connection as a transmit error (Varnish's SC_TX_ERROR).
            let (pacct, r) = crate::cache_pipe::run(stream, &leftover, *job).await;
            let mut b = rxid.resume(rt0);
            if let Some(t) = pacct.t_pipe {
                b.ts("Pipe", t);
            }
            b.ts("PipeSess", crate::vrt_ctx::now());
            b.numbers(
                vapi::Tag::PipeAcct,
                &[
                    acct.req_hdrbytes,
                    pacct.bereq_hdr,
                    pacct.in_bytes,
                    pacct.out_bytes,
                ],
            );
            b.end();
            match r {
                Err(
                    e @ (crate::cache_pipe::PipeError::NoAddress(_)
                    | crate::cache_pipe::PipeError::Connect(..)),
                ) => {
                    tracing::debug!(%peer, "pipe: {e}");
                    sess.close(Sc::TxError);
                }
                Err(e) => {
                    tracing::debug!(%peer, "pipe: {e}");
                    sess.close(Sc::TxPipe);
                }
                Ok(()) => sess.close(Sc::TxPipe),
            }
            return;
        }
        if reply.status == 0 {
            // No answer: the request body failed.
            sess.close(Sc::RxBody);
            crate::vsl::end_txn(&rxid);
            return close(wr).await;
        }
        if reply.minimal {
            sess.close(Sc::VclFailure);
            crate::vsl::end_txn(&rxid);
            let _ = write_minimal(&mut wr, reply.status, &reply.reason).await;
            return close(wr).await;
        }
        // What nobody read of the body is read and dropped now, so the
        // connection is at the next request; a body that failed closes it.
        // A client still waiting for its 100 Continue when the connection
        // closes anyway gets neither (Varnish's VRB_Ignore under doclose).
        let skip_body = body.wants_continue() && (close_after || closes(&reply));
        let next = if skip_body { None } else { body.finish().await };
        let body_failed = next.is_none() && !skip_body;
        close_after |= body_failed;
        let ex = Exchange {
            close: close_after,
            ..ex
        };
        let resp_close = crate::cache_session::resp_close(&reply, &ex);
        let written = tokio::time::timeout(
            send_timeout,
            write_reply(&mut wr, reply, ex, &mut acct, Some(rxid.clone())),
        )
        .await;
        acct.req_bodybytes = body.bytes_read();
        acct.resp_hdrbytes += body.continue_bytes();
        acct.charge();
        sess.req_done(
            &rxid,
            rt0,
            body.take_continue_unlogged(),
            body.take_read_done(),
            &acct,
        );
        match written {
            Ok(Ok(false)) => {}
            Ok(Ok(true)) => {
                sess.close(if body_failed { Sc::RxBody } else { resp_close });
                return close(wr).await;
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, "delivery: {e}");
                let short = e
                    .get_ref()
                    .is_some_and(|x| x.is::<crate::cache_deliver::RangeShort>());
                sess.close(if short { Sc::RangeShort } else { Sc::TxError });
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "send_timeout");
                sess.close(Sc::TxError);
                return;
            }
        }
        match next {
            Some(r) => {
                if !r.buf.is_empty() {
                    crate::vsc::MAIN.sess_readahead.inc();
                }
                conn = r
            }
            None => return close(wr).await,
        }
    }
}

/// Whether the response says the connection closes after it.
fn closes(reply: &crate::cache_req_fsm::Reply) -> bool {
    reply.close
        || reply.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")
        })
}

/// Closes after a response: the FIN goes out after everything written.
async fn close(mut wr: tokio::net::tcp::OwnedWriteHalf) {
    let _ = wr.shutdown().await;
}
