//! Writing a response to an HTTP/1 client (Varnish's
//! `cache_http1_deliver`): the status line with VCL's reason, the headers
//! as VCL left them, and the body framed by Content-Length when its size
//! is known, chunked for HTTP/1.1 otherwise, or by closing the connection.

use crate::cache_deliver::RespBody;
use crate::cache_req_fsm::Reply;
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use std::io::IoSlice;
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
) -> std::io::Result<bool> {
    let no_body = ex.head || reply.status / 100 == 1 || reply.status == 204 || reply.status == 304;
    let mut close = ex.close
        || reply.close
        || reply.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")
        });
    let mut body = RespBody::from_reply(reply.body);
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
    if close {
        head.put_slice(b"Connection: close\r\n");
    }
    head.put_slice(b"\r\n");
    acct.resp_hdrbytes += head.len() as u64;
    if no_body {
        out.write_all(&head).await?;
        out.flush().await?;
        return Ok(close);
    }
    let mut pending: Option<Bytes> = Some(head.freeze());
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                if let Some(h) = pending.take() {
                    out.write_all(&h).await?;
                }
                return Err(e);
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let prefix = pending.take();
        acct.resp_bodybytes += data.len() as u64;
        if chunked {
            let size = format!("{:x}\r\n", data.len());
            write_parts(
                out,
                &[
                    prefix.as_deref(),
                    Some(size.as_bytes()),
                    Some(&data),
                    Some(b"\r\n"),
                ],
            )
            .await?;
        } else if let Some(h) = prefix {
            if data.len() <= COALESCE {
                let mut b = BytesMut::with_capacity(h.len() + data.len());
                b.put_slice(&h);
                b.put_slice(&data);
                out.write_all(&b).await?;
            } else {
                write_parts(out, &[Some(&h), Some(&data)]).await?;
            }
        } else {
            out.write_all(&data).await?;
        }
    }
    let prefix = pending.take();
    if chunked {
        write_parts(out, &[prefix.as_deref(), Some(b"0\r\n\r\n")]).await?;
    } else if let Some(h) = prefix {
        out.write_all(&h).await?;
    }
    out.flush().await?;
    Ok(close)
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
    parts: &[Option<&[u8]>],
) -> std::io::Result<()> {
    let mut bufs: Vec<&[u8]> = parts
        .iter()
        .flatten()
        .copied()
        .filter(|b| !b.is_empty())
        .collect();
    while !bufs.is_empty() {
        let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        let mut n = out.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let first = bufs[0].len();
            if n >= first {
                n -= first;
                bufs.remove(0);
            } else {
                bufs[0] = &bufs[0][n..];
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
