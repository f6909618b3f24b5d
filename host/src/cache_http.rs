//! HTTP message helpers shared by the client and backend sides (Varnish's
//! `cache_http`): the status reason table and header collection.

use crate::cache_obj::Headers;

/// The reason phrase Varnish uses for `status` (its `http_Status2Reason`
/// table), or "Unknown HTTP Status".
pub fn status_reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        306 => "(Unused)",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Requested Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Entity",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "Unknown HTTP Status",
    }
}

/// Joins every `name` header into the first one, values separated by
/// ", " (Varnish's `http_CollectHdr`).
pub fn collect(h: &mut Headers, name: &str) {
    crate::vmod_std::collect_with(h, name, ", ");
}

/// Removes `Connection` and the headers it names: all Varnish filters
/// from a piped request (its `Transfer-Encoding` stays, the body follows
/// on the tunnel as the client frames it).
pub fn filter_connection_named(h: &mut Headers) {
    let named: Vec<String> = h
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .filter(|t| !t.is_empty())
        .collect();
    h.retain(|(n, _)| {
        let n = n.to_ascii_lowercase();
        n != "connection" && !named.contains(&n)
    });
}

/// The headers an object keeps of its backend response (Varnish's
/// `http_FilterResp` with `HTTPH_A_INS`, or for an uncacheable object
/// `HTTPH_A_PASS`): what describes the backend's connection goes, and
/// for a cacheable object also what delivery recomputes (`Age`,
/// `Accept-Ranges`) or what only made sense to the backend's client.
pub fn filter_obj_headers(
    proto: &str,
    reason: &str,
    h: &Headers,
    uncacheable: bool,
) -> crate::cache_obj::ObjHeaders {
    const PASS: &[&str] = &[
        "age",
        "connection",
        "http2-settings",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    const INS: &[&str] = &[
        "accept-ranges",
        "content-range",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
    ];
    let named: Vec<String> = h
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .filter(|t| !t.is_empty())
        .collect();
    let is = |list: &[&str], n: &str| list.iter().any(|x| x.eq_ignore_ascii_case(n));
    let kept = h
        .iter()
        .filter(|(n, _)| {
            !is(PASS, n)
                && (uncacheable || !is(INS, n))
                && !named.iter().any(|x| x.eq_ignore_ascii_case(n))
        })
        .map(|(n, v)| (n.as_str(), v.as_str()));
    crate::cache_obj::ObjHeaders::new(proto, reason, kept)
}

/// Headers that describe one connection and never travel from the
/// client's request to the backend's, plus those the request's own
/// `Connection` header names (Varnish's HTTPH_R_FETCH filtering).
pub fn filter_hop_by_hop(h: &mut Headers) {
    let named: Vec<String> = h
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .filter(|t| !t.is_empty())
        .collect();
    const HOP: &[&str] = &[
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    h.retain(|(n, _)| {
        let n = n.to_ascii_lowercase();
        !HOP.contains(&n.as_str()) && !named.contains(&n)
    });
}

/// An IP address as text, on the stack: IPv4 (nearly every client)
/// without the formatter, which costs about a thousand instructions a
/// request for `X-Forwarded-For`.
pub struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl std::ops::Deref for IpText {
    type Target = str;
    fn deref(&self) -> &str {
        // Only ASCII digits, dots, colons and hex letters are written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Display for IpText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

/// `ip` as [`IpText`].
pub fn ip_text(ip: std::net::IpAddr) -> IpText {
    let mut t = IpText {
        buf: [0; 48],
        len: 0,
    };
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    t.buf[t.len] = b'.';
                    t.len += 1;
                }
                if o >= 100 {
                    t.buf[t.len] = b'0' + o / 100;
                    t.len += 1;
                }
                if o >= 10 {
                    t.buf[t.len] = b'0' + o / 10 % 10;
                    t.len += 1;
                }
                t.buf[t.len] = b'0' + o % 10;
                t.len += 1;
            }
        }
        v6 => {
            let mut w: &mut [u8] = &mut t.buf[..];
            let _ = std::io::Write::write_fmt(&mut w, format_args!("{v6}"));
            t.len = 48 - w.len();
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &[(&str, &str)]) -> Headers {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn collect_joins_in_order() {
        let mut x = h(&[("Cache-Control", "a"), ("X", "1"), ("cache-control", "b")]);
        collect(&mut x, "cache-control");
        assert_eq!(x, h(&[("Cache-Control", "a, b"), ("X", "1")]));
    }

    #[test]
    fn connection_names_are_filtered() {
        let mut x = h(&[("Connection", "hdr3, close"), ("hdr3", "3"), ("hdr4", "4")]);
        filter_hop_by_hop(&mut x);
        assert_eq!(x, h(&[("hdr4", "4")]));
    }

    #[test]
    fn reasons() {
        assert_eq!(status_reason(413), "Request Entity Too Large");
        assert_eq!(status_reason(999), "Unknown HTTP Status");
    }

    #[test]
    fn ip_text_is_like_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "::1",
            "2001:db8::ff00:42:8329",
            "::ffff:192.0.2.128",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(&*super::ip_text(ip), ip.to_string());
        }
    }
}
