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
use crate::cache_req_fsm::{handle, Ctx, ReplyBody};
use bytes::{Buf, Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Serves one connection until it closes.
pub async fn session(ctx: Arc<Ctx>, stream: TcpStream, peer: SocketAddr, local: SocketAddr) {
    let idle = crate::vrt_ctx::secs(ctx.params().num("timeout_idle").max(0.001));
    let (rd, mut wr) = stream.into_split();
    let mut conn = ClientReader {
        rd,
        buf: BytesMut::with_capacity(16 << 10),
        idle,
    };
    loop {
        let params = ctx.params();
        let limits = HeadLimits {
            req_size: params.num("http_req_size") as usize,
            hdr_len: params.num("http_req_hdr_len") as usize,
            max_hdr: params.num("http_max_hdr") as usize,
        };
        let send_timeout = crate::vrt_ctx::secs(params.num("send_timeout").max(0.001));
        drop(params);
        // The whole head must arrive within timeout_idle.
        let deadline = Instant::now() + idle;
        let req = loop {
            let skip = leading_space(&conn.buf);
            conn.buf.advance(skip);
            match dissect(&conn.buf, &limits) {
                Ok(Some((req, n))) => {
                    conn.buf.advance(n);
                    break req;
                }
                Ok(None) => {}
                Err(HeadError::Overflow) => {
                    // Varnish closes such a connection without an answer.
                    tracing::debug!(%peer, "request head over http_req_size");
                    return;
                }
                Err(HeadError::Bad(why)) => {
                    tracing::debug!(%peer, "bad request: {why}");
                    let _ = write_minimal(&mut wr, 400, "Bad Request").await;
                    return close(wr).await;
                }
            }
            if conn.buf.capacity() - conn.buf.len() < 4096 {
                conn.buf.reserve(16 << 10);
            }
            match tokio::time::timeout_at(deadline, conn.rd.read_buf(&mut conn.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        };
        let msg = req.msg;
        // Refused before any VCL runs, as Varnish does: an `Expect` other
        // than 100-continue, and an HTTP/1.0 POST or PUT without a length.
        let expect = msg
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("expect"))
            .map(|(_, v)| v.trim().to_ascii_lowercase());
        if expect.as_deref().is_some_and(|e| e != "100-continue") {
            let _ = write_minimal(&mut wr, 417, "Expectation Failed").await;
            return close(wr).await;
        }
        if req.version == 10
            && (msg.method == "POST" || msg.method == "PUT")
            && req.body == BodyFraming::None
        {
            let _ = write_minimal(&mut wr, 400, "Bad Request").await;
            return close(wr).await;
        }
        let mut close_after = connection_has(&msg.headers, "close")
            || (req.version == 10 && !connection_has(&msg.headers, "keep-alive"));
        if expect.is_some()
            && req.body != BodyFraming::None
            && conn.buf.is_empty()
            && wr
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }
        let ex = Exchange {
            head: msg.method == "HEAD",
            version: req.version,
            close: false,
        };
        // The body stays on the connection until something reads it.
        let body = ReqBody::new(conn, req.body);
        let mut reply = handle(ctx.clone(), msg, body.clone(), peer.ip(), local.ip()).await;
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
            if let Err(e) = crate::cache_pipe::run(stream, &leftover, *job).await {
                tracing::debug!(%peer, "pipe: {e}");
            }
            return;
        }
        if reply.status == 0 {
            // No answer: the request body failed.
            return close(wr).await;
        }
        if reply.minimal {
            let _ = write_minimal(&mut wr, reply.status, &reply.reason).await;
            return close(wr).await;
        }
        // What nobody read of the body is read and dropped now, so the
        // connection is at the next request; a body that failed closes it.
        let next = body.finish().await;
        close_after |= next.is_none();
        let ex = Exchange {
            close: close_after,
            ..ex
        };
        match tokio::time::timeout(send_timeout, write_reply(&mut wr, reply, ex)).await {
            Ok(Ok(false)) => {}
            Ok(Ok(true)) => return close(wr).await,
            Ok(Err(e)) => {
                tracing::debug!(%peer, "delivery: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "send_timeout");
                return;
            }
        }
        match next {
            Some(r) => conn = r,
            None => return close(wr).await,
        }
    }
}

/// Closes after a response: the FIN goes out after everything written.
async fn close(mut wr: tokio::net::tcp::OwnedWriteHalf) {
    let _ = wr.shutdown().await;
}
