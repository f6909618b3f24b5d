//! `Range` requests on delivery (Varnish's `cache_range`): one byte range
//! of a 200 response becomes a 206, also of an object still streaming in
//! when its length is known (the `Content-Length` the backend announced);
//! without a known length the whole response is sent (200); a malformed
//! `Range` (several ranges included) or one starting past the end gets a
//! 416.
//! `If-Range` is honoured with a strong validator, as Varnish does.

use crate::cache_obj::{hdr_get, Headers};

/// The `Range` header as Varnish's `http_GetRange` reads it: `(low,
/// high)` with -1 for a missing side, or why it is malformed.
pub fn get_range(h: &Headers) -> Result<Option<(i64, i64)>, &'static str> {
    let Some(v) = hdr_get(h, "range") else {
        return Ok(None);
    };
    let (unit, spec) = v.split_once('=').ok_or("Missing '='")?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return Err("Not Bytes");
    }
    let b = spec.as_bytes();
    let num = |i: &mut usize| -> Result<i64, ()> {
        let start = *i;
        let mut n: i64 = 0;
        while *i < b.len() && b[*i].is_ascii_digit() {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(i64::from(b[*i] - b'0')))
                .ok_or(())?;
            *i += 1;
        }
        Ok(if *i == start { -1 } else { n })
    };
    let mut i = 0;
    let lo = num(&mut i).map_err(|_| "Low number too big")?;
    if b.get(i) != Some(&b'-') {
        return Err("Missing hyphen");
    }
    i += 1;
    let hi = num(&mut i).map_err(|_| "High number too big")?;
    if lo == -1 && hi == -1 {
        return Err("Neither high nor low");
    }
    if lo == -1 && hi == 0 {
        return Err("No low, high is zero");
    }
    if hi >= 0 && hi < lo {
        return Err("high smaller than low");
    }
    if b[i..]
        .iter()
        .any(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
    {
        return Err("Trailing stuff");
    }
    Ok(Some((lo, hi)))
}

/// What a range request makes of a response of `len` bytes (`None`:
/// unknown yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Range {
    /// Send the whole response (200).
    Ignore,
    /// 416, with this `Content-Range`.
    Unsatisfiable(Option<String>),
    /// 206: bytes `low..=high`, with this `Content-Range`.
    Bytes {
        low: u64,
        high: u64,
        content_range: String,
    },
}

/// Varnish's `vrg_dorange`.
pub fn dorange(h: &Headers, len: Option<u64>) -> Range {
    let unsat = |len: Option<u64>| Range::Unsatisfiable(len.map(|l| format!("bytes */{l}")));
    let (mut low, mut high) = match get_range(h) {
        Ok(Some(r)) => r,
        Ok(None) => return Range::Ignore,
        Err(why) => {
            tracing::debug!("RANGE_FAIL {why}");
            return unsat(len);
        }
    };
    let l = len.map(|l| l as i64);
    if low < 0 {
        let Some(l) = l.filter(|_| high >= 0) else {
            return Range::Ignore;
        };
        low = (l - high).max(0);
        high = l - 1;
    } else if let Some(l) = l.filter(|l| high >= *l || high < 0) {
        high = l - 1;
    } else if high < 0 || l.is_none() {
        return Range::Ignore;
    }
    if let Some(l) = l {
        if low >= l {
            tracing::debug!("RANGE_FAIL low range beyond object");
            return unsat(len);
        }
    }
    let content_range = match len {
        Some(l) => format!("bytes {low}-{high}/{l}"),
        None => format!("bytes {low}-{high}/*"),
    };
    Range::Bytes {
        low: low as u64,
        high: high as u64,
        content_range,
    }
}

/// Varnish's `vrg_ifrange`: whether `If-Range` (if any) lets the range
/// apply to the response with headers `resp`.
pub fn if_range(req: &Headers, resp: &Headers) -> bool {
    let Some(p) = hdr_get(req, "if-range") else {
        return true;
    };
    if p.starts_with("W/") {
        return false;
    }
    if p.starts_with('"') {
        return match hdr_get(resp, "etag") {
            Some(e) if !e.starts_with("W/") => e == p,
            _ => false,
        };
    }
    let date = |s: Option<&str>| s.and_then(crate::cache_expire::parse_http_date);
    let (Some(ims), Some(d), Some(lm)) = (
        date(Some(p)),
        date(hdr_get(resp, "date")),
        date(hdr_get(resp, "last-modified")),
    ) else {
        return false;
    };
    lm <= d + 60.0 && lm == ims
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(v: &str, len: Option<u64>) -> Range {
        dorange(&vec![("Range".into(), v.into())], len)
    }

    fn b(low: u64, high: u64, cr: &str) -> Range {
        Range::Bytes {
            low,
            high,
            content_range: cr.into(),
        }
    }

    #[test]
    fn forms() {
        let u = |l: u64| Range::Unsatisfiable(Some(format!("bytes */{l}")));
        assert_eq!(r("bytes=0-4", Some(10)), b(0, 4, "bytes 0-4/10"));
        assert_eq!(r("bytes=5-", Some(10)), b(5, 9, "bytes 5-9/10"));
        assert_eq!(r("bytes=-3", Some(10)), b(7, 9, "bytes 7-9/10"));
        assert_eq!(r("bytes=8-100", Some(10)), b(8, 9, "bytes 8-9/10"));
        assert_eq!(r("bytes=10-", Some(10)), u(10));
        assert_eq!(r("bytes=0-1,3-4", Some(10)), u(10));
        assert_eq!(r("bytes = 0-1", Some(10)), u(10));
        assert_eq!(r("0-1", Some(10)), u(10));
        assert_eq!(r("bytes=x-1", Some(10)), u(10));
        assert_eq!(r("bytes=4-2", Some(10)), u(10));
        assert_eq!(r("bytes=-0", Some(10)), u(10));
        assert_eq!(r("bytes=99999999999999999999-", Some(10)), u(10));
        // Length unknown (streaming without Content-Length): 200.
        assert_eq!(r("bytes=0-4", None), Range::Ignore);
        assert_eq!(r("bytes=3-", None), Range::Ignore);
        assert_eq!(r("bytes=-3", None), Range::Ignore);
    }
}
