//! Writing a response to an HTTP/1 client (Varnish's
//! `cache_http1_deliver`): the status line with VCL's reason, the headers
//! as VCL left them, and the body framed by Content-Length when its size
//! is known, chunked for HTTP/1.1 otherwise, or by closing the connection.

use crate::cache_deliver::RespBody;
use crate::cache_req_fsm::Reply;
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// A first body chunk up to this size is copied behind the head, so a
/// small response leaves in one write.
const COALESCE: usize = 16 << 10;

/// What the request asked of the response.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    /// The request was HEAD: headers only.
    pub head: bool,
    /// 10 or 11.
    pub version: u8,
    /// The client side wants the connection closed after this response.
    pub close: bool,
}

/// Writes `reply`; returns whether the connection must close afterwards.
/// An error (client gone, fetch failed mid-body) also means close.
pub async fn write_reply<W: AsyncWrite + Unpin>(
    out: &mut W,
    reply: Reply,
    ex: Exchange,
    acct: &mut crate::cache_session::ReqAcct,
    log: Option<std::sync::Arc<crate::vsl::Follow>>,
) -> std::io::Result<bool> {
    let no_body = ex.head || reply.status / 100 == 1 || reply.status == 204 || reply.status == 304;
    let says_close = reply.headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")
    });
    let mut close = ex.close || reply.close || says_close;
    let mut body = RespBody::from_reply(reply.body);
    if let (RespBody::Filtered(f), Some(log)) = (&mut body, log.as_ref()) {
        f.log_to(log.clone());
    }
    let length = if no_body {
        reply.head_length
    } else {
        http_body::Body::size_hint(&body).exact()
    };
    let chunked = !no_body && length.is_none() && ex.version >= 11;
    if !no_body && length.is_none() && !chunked {
        // HTTP/1.0 and no length: the end of the body is the close.
        close = true;
    }
    let mut head = BytesMut::with_capacity(512);
    head.put_slice(b"HTTP/1.1 ");
    head.put_slice(format!("{:03} ", reply.status % 1000).as_bytes());
    head.put_slice(reply.reason.as_bytes());
    head.put_slice(b"\r\n");
    for (n, v) in &reply.headers {
        if n.eq_ignore_ascii_case("content-length")
            || n.eq_ignore_ascii_case("transfer-encoding")
            || (close && n.eq_ignore_ascii_case("connection"))
            || !valid_header(n, v)
        {
            continue;
        }
        head.put_slice(n.as_bytes());
        head.put_slice(b": ");
        head.put_slice(v.as_bytes());
        head.put_slice(b"\r\n");
    }
    if let Some(n) = length {
        head.put_slice(format!("Content-Length: {n}\r\n").as_bytes());
    }
    if chunked {
        head.put_slice(b"Transfer-Encoding: chunked\r\n");
    }
    // What the transport adds is logged as Varnish logs it: the
    // `Connection` it settles on, then the chunked framing.
    let has_connection = reply
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("connection"));
    let added = if close {
        head.put_slice(b"Connection: close\r\n");
        (!says_close).then_some("close")
    } else if !has_connection {
        // Varnish says a connection it keeps open stays open.
        head.put_slice(b"Connection: keep-alive\r\n");
        Some("keep-alive")
    } else {
        None
    };
    if let Some(f) = &log {
        if added.is_some() || chunked {
            f.append(|b| {
                if let Some(v) = added {
                    b.header(crate::vsl::Http::Resp, "Connection", v);
                }
                if chunked {
                    b.header(crate::vsl::Http::Resp, "Transfer-Encoding", "chunked");
                }
            });
        }
    }
    head.put_slice(b"\r\n");
    acct.resp_hdrbytes += head.len() as u64;
    if no_body {
        out.write_all(&head).await?;
        out.flush().await?;
        return Ok(close);
    }
    let mut pending: Option<Bytes> = Some(head.freeze());
    let mut ended = false;
    while !ended {
        // Wait for one frame, then take every frame that is ready without
        // waiting (a cached object's chunks all are), so a complete body
        // leaves in one writev, as varnishd's does.
        let mut batch: Vec<Bytes> = Vec::new();
        let mut failed = None;
        let frame = match ready_frame(&mut body) {
            Poll::Ready(f) => f,
            Poll::Pending => {
                // Nothing to send yet (a body still arriving): the head
                // goes out now, as Varnish flushes before it waits.
                if let Some(h) = pending.take() {
                    out.write_all(&h).await?;
                    out.flush().await?;
                }
                body.frame().await
            }
        };
        match frame {
            None => ended = true,
            Some(Ok(f)) => batch.extend(f.into_data().ok()),
            Some(Err(e)) => failed = Some(e),
        }
        let mut total: usize = batch.iter().map(Bytes::len).sum();
        while !ended && failed.is_none() && batch.len() < MAX_BATCH && total < MAX_BATCH_BYTES {
            match ready_frame(&mut body) {
                Poll::Pending => break,
                Poll::Ready(None) => ended = true,
                Poll::Ready(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        total += d.len();
                        batch.push(d);
                    }
                }
                Poll::Ready(Some(Err(e))) => failed = Some(e),
            }
        }
        batch.retain(|d| !d.is_empty());
        let prefix = pending.take();
        acct.resp_bodybytes += batch.iter().map(|d| d.len() as u64).sum::<u64>();
        let last = ended && failed.is_none();
        if !chunked && batch.len() == 1 && prefix.is_some() && batch[0].len() <= COALESCE {
            // A small response: one buffer, one write.
            let h = prefix.unwrap_or_default();
            let mut b = BytesMut::with_capacity(h.len() + batch[0].len());
            b.put_slice(&h);
            b.put_slice(&batch[0]);
            out.write_all(&b).await?;
        } else {
            let sizes: Vec<String> = if chunked {
                batch.iter().map(|d| format!("{:x}\r\n", d.len())).collect()
            } else {
                Vec::new()
            };
            let mut parts: Vec<&[u8]> = Vec::with_capacity(batch.len() * 3 + 2);
            parts.extend(prefix.as_deref());
            for (i, d) in batch.iter().enumerate() {
                if chunked {
                    parts.push(sizes[i].as_bytes());
                    parts.push(d);
                    parts.push(b"\r\n");
                } else {
                    parts.push(d);
                }
            }
            if chunked && last {
                parts.push(b"0\r\n\r\n");
            }
            write_parts(out, parts).await?;
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
    out.flush().await?;
    Ok(close)
}

/// At most this many body frames, or about this many bytes, go into one
/// writev (Linux's IOV_MAX is 1024; three slices a frame when chunked).
const MAX_BATCH: usize = 128;
const MAX_BATCH_BYTES: usize = 1 << 20;

/// The next frame if it is ready now, without waiting. Polling with a
/// no-op waker is sound: a body registers the waker of its latest poll,
/// and the next wait polls again with the task's own.
fn ready_frame(body: &mut RespBody) -> Poll<Option<std::io::Result<http_body::Frame<Bytes>>>> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    http_body::Body::poll_frame(Pin::new(body), &mut cx)
}

/// A header that cannot be written as is (VCL can set anything) is left
/// out rather than breaking the response's framing.
fn valid_header(n: &str, v: &str) -> bool {
    !n.is_empty()
        && !n.bytes().any(|c| c <= b' ' || c == b':' || c == 0x7f)
        && !v.bytes().any(|c| c == b'\r' || c == b'\n' || c == 0)
}

/// Writes the present parts in as few system calls as the socket allows.
async fn write_parts<W: AsyncWrite + Unpin>(
    out: &mut W,
    mut parts: Vec<&[u8]>,
) -> std::io::Result<()> {
    parts.retain(|b| !b.is_empty());
    let mut first = 0;
    while first < parts.len() {
        let slices: Vec<IoSlice<'_>> = parts[first..].iter().map(|b| IoSlice::new(b)).collect();
        let mut n = out.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 && first < parts.len() {
            let len = parts[first].len();
            if n >= len {
                n -= len;
                first += 1;
            } else {
                parts[first] = &parts[first][n..];
                n = 0;
            }
        }
    }
    Ok(())
}

/// The answer to a request refused before any VCL ran (Varnish's minimal
/// response); the connection closes after it.
pub async fn write_minimal<W: AsyncWrite + Unpin>(
    out: &mut W,
    status: u16,
    reason: &str,
) -> std::io::Result<()> {
    // Exactly Varnish's: a status line and nothing else; the close ends it.
    let msg = format!("HTTP/1.1 {status:03} {reason}\r\n\r\n");
    out.write_all(msg.as_bytes()).await?;
    out.flush().await
}
