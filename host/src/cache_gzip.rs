//! gzip as Varnish does it with `http_gzip_support` (its `cache_gzip` and
//! `rfc2616` parts): clients' `Accept-Encoding` is reduced to "gzip" or
//! nothing, cacheable fetches ask the backend for gzip, objects may be
//! (un)compressed at fetch time (`beresp.do_gzip`, `beresp.do_gunzip`), and
//! a gzipped object is gunzipped for a client that does not accept gzip.
//!
//! This first version transforms whole bodies (the fetch is not streamed
//! when it has to transform); streaming transforms are the next step.

use crate::cache_obj::{hdr_get, hdr_set, hdr_unset, Headers};
use bytes::Bytes;
use std::io::{Read, Write};

/// Whether a client's `Accept-Encoding` accepts gzip (`gzip` or `x-gzip`
/// with a nonzero q), as Varnish's `RFC2616_Req_Gzip`.
pub fn accepts_gzip(ae: &str) -> bool {
    ae.split(',').any(|part| {
        let mut it = part.split(';');
        let coding = it.next().unwrap_or("").trim();
        if !coding.eq_ignore_ascii_case("gzip") && !coding.eq_ignore_ascii_case("x-gzip") {
            return false;
        }
        !it.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f64>().ok())
                .is_some_and(|q| q <= 0.0)
        })
    })
}

/// `Accept-Encoding` as the request reaches `vcl_recv`.
pub fn normalize_req(h: &mut Headers) {
    match hdr_get(h, "accept-encoding") {
        Some(ae) if accepts_gzip(ae) => hdr_set(h, "Accept-Encoding", "gzip"),
        Some(_) => hdr_unset(h, "accept-encoding"),
        None => {}
    }
}

/// Whether a response's body is gzipped.
pub fn is_gzip(h: &Headers) -> bool {
    hdr_get(h, "content-encoding").is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"))
}

/// Compresses a whole body.
pub fn gzip(b: &[u8], level: u32) -> Result<Bytes, String> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level.min(9)));
    e.write_all(b).map_err(|e| e.to_string())?;
    e.finish().map(Bytes::from).map_err(|e| e.to_string())
}

/// Decompresses a whole body; corrupt gzip is an error (a fetch error at
/// fetch time).
pub fn gunzip(b: &[u8]) -> Result<Bytes, String> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(b)
        .read_to_end(&mut out)
        .map_err(|e| format!("Invalid gzip data: {e}"))?;
    Ok(Bytes::from(out))
}

/// A strong ETag becomes weak when the body's encoding changes.
pub fn weaken_etag(h: &mut Headers) {
    if let Some(e) = hdr_get(h, "etag") {
        if !e.starts_with("W/") {
            let w = format!("W/{e}");
            hdr_set(h, "ETag", &w);
        }
    }
}

/// Adds `Accept-Encoding` to `Vary` unless it is there.
pub fn vary_ae(h: &mut Headers) {
    match hdr_get(h, "vary") {
        Some(v)
            if v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding")) => {}
        Some(v) => {
            let nv = format!("{v}, Accept-Encoding");
            hdr_set(h, "Vary", &nv);
        }
        None => h.push(("Vary".into(), "Accept-Encoding".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_rules() {
        assert!(accepts_gzip("gzip, deflate"));
        assert!(accepts_gzip("x-gzip"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("deflate, br"));
    }

    #[test]
    fn round_trip() {
        let z = gzip(b"hello", 6).expect("gzip");
        assert_eq!(&gunzip(&z).expect("gunzip")[..], b"hello");
        assert!(gunzip(b"not gzip").is_err());
    }
}
