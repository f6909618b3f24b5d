//! One client connection over HTTP/1 (Varnish's `cache_http1_fsm`): wait
//! for a request head within `timeout_idle`, dissect it, read its body,
//! run the request through VCL, write the response, and go round again
//! while the connection may be kept. Bytes the client sent ahead (a
//! pipelined request) stay in the buffer for the next round.

use crate::cache_http1_deliver::{write_minimal, write_reply, Exchange};
use crate::cache_http1_proto::{
    connection_has, dissect, leading_space, BodyFraming, HeadError, HeadLimits,
};
use crate::cache_req_fsm::{handle_txn, Ctx, ReplyBody};
use crate::cache_session::{Sc, Sess};
use bytes::{Buf, Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The largest request body accepted (bodies are read whole before VCL
/// runs).
const MAX_REQ_BODY: u64 = 64 << 20;

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("client closed the connection in the body")]
    Closed,
    #[error("timeout_idle passed while reading the body")]
    Timeout,
    #[error("body larger than {MAX_REQ_BODY} bytes")]
    TooLarge,
    #[error("malformed chunked body")]
    BadChunk,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A client connection and what has been read from it but not used.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    idle: Duration,
}

impl Conn {
    /// Reads more into the buffer within `idle`; 0 at end of stream.
    async fn fill(&mut self) -> Result<usize, BodyError> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 << 10);
        }
        match tokio::time::timeout(self.idle, self.stream.read_buf(&mut self.buf)).await {
            Ok(Ok(0)) => Err(BodyError::Closed),
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(BodyError::Timeout),
        }
    }

    /// The next line (without its CRLF) of a chunked body.
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

    /// Exactly `n` bytes of body.
    async fn take(&mut self, n: usize, out: &mut BytesMut) -> Result<(), BodyError> {
        let mut left = n;
        loop {
            let k = left.min(self.buf.len());
            out.extend_from_slice(&self.buf.split_to(k));
            left -= k;
            if left == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    async fn body(&mut self, framing: BodyFraming) -> Result<Bytes, BodyError> {
        let mut out = BytesMut::new();
        match framing {
            BodyFraming::None => {}
            BodyFraming::Length(n) => {
                if n > MAX_REQ_BODY {
                    return Err(BodyError::TooLarge);
                }
                self.take(n as usize, &mut out).await?;
            }
            BodyFraming::Chunked => loop {
                let line = self.line().await?;
                let size = line.split(|&c| c == b';').next().unwrap_or_default();
                let size = std::str::from_utf8(size)
                    .ok()
                    .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                    .ok_or(BodyError::BadChunk)?;
                if size == 0 {
                    // Trailers, up to the blank line.
                    while !self.line().await?.is_empty() {}
                    break;
                }
                if out.len() as u64 + size > MAX_REQ_BODY {
                    return Err(BodyError::TooLarge);
                }
                self.take(size as usize, &mut out).await?;
                if !self.line().await?.is_empty() {
                    return Err(BodyError::BadChunk);
                }
            },
        }
        Ok(out.freeze())
    }
}

/// Serves one connection until it closes.
pub async fn session(ctx: Arc<Ctx>, stream: TcpStream, mut sess: Sess) {
    let (peer, local) = (sess.peer, sess.local);
    let idle = crate::vrt_ctx::secs(ctx.params().num("timeout_idle").max(0.001));
    let mut conn = Conn {
        stream,
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
                Err(HeadError::Bad(why)) => {
                    tracing::debug!(%peer, "bad request: {why}");
                    crate::vsc::MAIN.client_req_400.inc();
                    sess.close(Sc::RxJunk);
                    let _ = write_minimal(&mut conn.stream, 400, "Bad Request").await;
                    return close(conn.stream).await;
                }
            }
            if conn.buf.capacity() - conn.buf.len() < 4096 {
                conn.buf.reserve(16 << 10);
            }
            match tokio::time::timeout_at(deadline, conn.stream.read_buf(&mut conn.buf)).await {
                Ok(Ok(n)) if n > 0 => {
                    t_first.get_or_insert_with(crate::vrt_ctx::now);
                }
                Ok(_) => return,
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
        let msg = req.msg;
        let t_req = crate::vrt_ctx::now();
        let mut rlog = sess.req_log(&ctx, t_first.unwrap_or(t_req), t_req, &msg);
        let rxid = rlog.follow();
        // Refused before any VCL runs, as Varnish does: an `Expect` other
        // than 100-continue, and an HTTP/1.0 POST or PUT without a length.
        let expect = msg
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("expect"))
            .map(|(_, v)| v.trim().to_ascii_lowercase());
        if expect.as_deref().is_some_and(|e| e != "100-continue") {
            crate::vsc::MAIN.client_req_417.inc();
            sess.close(Sc::RxJunk);
            crate::vsl::minimal(rlog, 417, "Expectation Failed");
            let _ = write_minimal(&mut conn.stream, 417, "Expectation Failed").await;
            return close(conn.stream).await;
        }
        if req.version == 10
            && (msg.method == "POST" || msg.method == "PUT")
            && req.body == BodyFraming::None
        {
            crate::vsc::MAIN.client_req_400.inc();
            sess.close(Sc::RxJunk);
            crate::vsl::minimal(rlog, 400, "Bad Request");
            let _ = write_minimal(&mut conn.stream, 400, "Bad Request").await;
            return close(conn.stream).await;
        }
        let mut close_after = connection_has(&msg.headers, "close")
            || (req.version == 10 && !connection_has(&msg.headers, "keep-alive"));
        if expect.is_some()
            && req.body != BodyFraming::None
            && conn.buf.is_empty()
            && conn
                .stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }
        let body = match conn.body(req.body).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                sess.close(Sc::RxBody);
                let _ = write_minimal(&mut conn.stream, 413, "Content Too Large").await;
                return close(conn.stream).await;
            }
            Err(BodyError::BadChunk) => {
                sess.close(Sc::RxBody);
                let _ = write_minimal(&mut conn.stream, 400, "Bad Request").await;
                return close(conn.stream).await;
            }
            Err(e) => {
                // The request still gets its answer (from cache or
                // synth), but the connection cannot be used again.
                tracing::debug!(%peer, "request body: {e}");
                sess.close(Sc::RxBody);
                close_after = true;
                Bytes::new()
            }
        };
        let ex = Exchange {
            head: msg.method == "HEAD",
            version: req.version,
            close: close_after,
        };
        crate::vsc::MAIN.client_req.inc();
        acct.req_bodybytes = body.len() as u64;
        if !body.is_empty() {
            rlog.ts("ReqBody", crate::vrt_ctx::now());
        }
        let rt0 = rlog.t_start;
        let mut reply = handle_txn(
            ctx.clone(),
            msg,
            body,
            peer.ip(),
            local.ip(),
            0,
            rlog.detach(),
        )
        .await;

        if let ReplyBody::Pipe(_) = reply.body {
            let ReplyBody::Pipe(job) =
                std::mem::replace(&mut reply.body, ReplyBody::Bytes(Bytes::new()))
            else {
                return;
            };
            let leftover = std::mem::take(&mut conn.buf);
            sess.close(Sc::TxPipe);
            if let Err(e) = crate::cache_pipe::run(conn.stream, &leftover, *job).await {
                tracing::debug!(%peer, "pipe: {e}");
            }
            crate::vsl::end_txn(&rxid);
            return;
        }
        let resp_close = crate::cache_session::resp_close(&reply, &ex);
        let written = tokio::time::timeout(
            send_timeout,
            write_reply(&mut conn.stream, reply, ex, &mut acct),
        )
        .await;
        acct.charge();
        sess.req_done(&rxid, rt0, &acct);
        match written {
            Ok(Ok(false)) => {}
            Ok(Ok(true)) => {
                sess.close(resp_close);
                return close(conn.stream).await;
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, "delivery: {e}");
                sess.close(Sc::TxError);
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "send_timeout");
                sess.close(Sc::TxError);
                return;
            }
        }
        if !conn.buf.is_empty() {
            crate::vsc::MAIN.sess_readahead.inc();
        }
    }
}

/// Closes after a response: the FIN goes out after everything written.
async fn close(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
}
