//! `Range` requests on delivery (Varnish's `cache_range`): one byte range
//! of a complete body becomes a 206; a range past the end, another unit or
//! a malformed range a 416; several ranges are ignored and the whole body
//! is sent, as Varnish does.

/// What a `Range` header asks of a body of a given length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// Send the whole body.
    Ignore,
    /// 416.
    Unsatisfiable,
    /// Bytes `first..=last`.
    Bytes(u64, u64),
}

/// Interprets `header` for a body of `len` bytes.
pub fn parse(header: &str, len: u64) -> Range {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Range::Unsatisfiable;
    };
    if spec.contains(',') {
        return Range::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Unsatisfiable;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.is_empty(), b.is_empty()) {
        // "-N": the last N bytes.
        (true, false) => match num(b) {
            Some(0) => Range::Unsatisfiable,
            Some(n) if len == 0 => {
                let _ = n;
                Range::Unsatisfiable
            }
            Some(n) => Range::Bytes(len.saturating_sub(n), len - 1),
            None => Range::Unsatisfiable,
        },
        // "N-": from N to the end.
        (false, true) => match num(a) {
            Some(f) if f < len => Range::Bytes(f, len - 1),
            Some(_) | None => Range::Unsatisfiable,
        },
        (false, false) => match (num(a), num(b)) {
            (Some(f), Some(l)) if f > l || f >= len => Range::Unsatisfiable,
            (Some(f), Some(l)) => Range::Bytes(f, l.min(len - 1)),
            _ => Range::Unsatisfiable,
        },
        (true, true) => Range::Unsatisfiable,
    }
}

/// Applies `Range` to a response of `body` (status 200 only): sets the
/// status, reason and `Content-Range`, and returns the body to send, or
/// `None` to send the whole body.
pub fn apply(
    req: &crate::cache_obj::Headers,
    resp: &mut crate::vrt_ctx::RespMsg,
    body: &bytes::Bytes,
) -> Option<bytes::Bytes> {
    use crate::cache_obj::{hdr_get, hdr_set};
    if resp.status != 200 {
        return None;
    }
    let len = body.len() as u64;
    hdr_set(&mut resp.headers, "Accept-Ranges", "bytes");
    match parse(hdr_get(req, "range")?, len) {
        Range::Ignore => None,
        Range::Unsatisfiable => {
            resp.status = 416;
            resp.reason = crate::cache_http::status_reason(416).into();
            hdr_set(
                &mut resp.headers,
                "Content-Range",
                &format!("bytes */{len}"),
            );
            Some(bytes::Bytes::new())
        }
        Range::Bytes(a, b) => {
            resp.status = 206;
            resp.reason = crate::cache_http::status_reason(206).into();
            hdr_set(
                &mut resp.headers,
                "Content-Range",
                &format!("bytes {a}-{b}/{len}"),
            );
            Some(body.slice(a as usize..=b as usize))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse("bytes=0-4", 10), Range::Bytes(0, 4));
        assert_eq!(parse("bytes=5-", 10), Range::Bytes(5, 9));
        assert_eq!(parse("bytes=-3", 10), Range::Bytes(7, 9));
        assert_eq!(parse("bytes=8-100", 10), Range::Bytes(8, 9));
        assert_eq!(parse("bytes=10-", 10), Range::Unsatisfiable);
        assert_eq!(parse("bytes=0-1,3-4", 10), Range::Ignore);
        assert_eq!(parse("0-1", 10), Range::Unsatisfiable);
        assert_eq!(parse("bytes=x-1", 10), Range::Unsatisfiable);
        assert_eq!(parse("bytes=4-2", 10), Range::Unsatisfiable);
    }
}
