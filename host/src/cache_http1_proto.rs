//! Dissecting a client's HTTP/1 request head (Varnish's
//! `cache_http1_proto`), with Varnish's rules rather than a generic
//! parser's: leading blank lines skipped, bare-LF line ends and obsolete
//! line folding accepted, header names restricted to token characters,
//! `http_req_size`, `http_req_hdr_len` and `http_max_hdr` enforced, and
//! only HTTP/1.0 and HTTP/1.1 served.

use crate::vrt_ctx::ReqMsg;

/// The limits a head is checked against (parameters of the same names).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// `http_req_size`: the whole head, request line to blank line.
    pub req_size: usize,
    /// `http_req_hdr_len`: one header, folded lines included.
    pub hdr_len: usize,
    /// `http_max_hdr`: headers in one request.
    pub max_hdr: usize,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// A dissected request head.
#[derive(Debug)]
pub struct Request {
    pub msg: ReqMsg,
    /// 10 or 11.
    pub version: u8,
    pub body: BodyFraming,
}

/// Why a head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Over `http_req_size`: Varnish closes without an answer.
    #[error("request head exceeds http_req_size")]
    Overflow,
    /// Malformed: answered with a 400 and the connection closed.
    #[error("bad request: {0}")]
    Bad(String),
    /// A malformed header: Varnish's `BogoHeader` text for the log.
    #[error("bad header: {0}")]
    BadHeader(String),
}

/// A bad header, with Varnish's `BogoHeader` text (`what`, then up to 20
/// bytes of the line when `line` is given).
fn bogo(what: &str, line: Option<&[u8]>) -> HeadError {
    HeadError::BadHeader(match line {
        Some(l) => format!("{what}{}", String::from_utf8_lossy(&l[..l.len().min(20)])),
        None => what.to_string(),
    })
}

fn bad(why: impl Into<String>) -> HeadError {
    HeadError::Bad(why.into())
}

/// RFC 9110 `tchar`: what a method and a header name may contain.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn is_ctl(c: u8) -> bool {
    c < 0x20 || c == 0x7f
}

/// Bytes before the request line that Varnish skips (blank lines left
/// over from a previous request, stray whitespace).
pub fn leading_space(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|c| matches!(c, b'\r' | b'\n' | b' ' | b'\t'))
        .count()
}

/// The end of the head in `buf` (just past the blank line), if it is
/// complete. Lines may end in CRLF or a bare LF.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(off) = buf[i..].iter().position(|&c| c == b'\n') {
        let nl = i + off;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// Dissects the head at the start of `buf` (leading blank lines already
/// skipped). `Ok(None)`: not complete yet. `Ok(Some((req, n)))`: the head
/// took `n` bytes; what follows is the body or the next request.
pub fn dissect(buf: &[u8], lim: &HeadLimits) -> Result<Option<(Request, usize)>, HeadError> {
    let Some(end) = head_end(buf) else {
        if buf.len() > lim.req_size {
            return Err(HeadError::Overflow);
        }
        return Ok(None);
    };
    if end > lim.req_size {
        return Err(HeadError::Overflow);
    }
    let mut lines = head_lines(&buf[..end]);
    let (first, _) = lines.next().unwrap_or_default();
    let (method, url, proto) = request_line(first)?;
    let version = match proto {
        "HTTP/1.1" => 11,
        "HTTP/1.0" => 10,
        _ => return Err(bad(format!("unsupported protocol {proto:?}"))),
    };
    let headers = dissect_headers(lines, lim)?;
    let body = body_framing(&headers)?;
    let mut msg = ReqMsg {
        method: method.to_string(),
        url: url.to_string(),
        proto: proto.to_string(),
        headers,
    };
    absolute_url(&mut msg);
    Ok(Some((Request { msg, version, body }, end)))
}

/// The header lines after the start line, up to the blank line, as
/// Varnish's `http1_dissect_hdrs` takes them (for requests and responses
/// alike): obsolete line folding joins a continuation to the header
/// before it, the line end and the continuation's leading blanks each
/// becoming a space; `hdr_len` bounds one header, folds included;
/// `max_hdr` is `http_max_hdr`, of whose slots the start line takes five.
fn dissect_headers<'a>(
    lines: impl Iterator<Item = (&'a [u8], usize)>,
    lim: &HeadLimits,
) -> Result<Vec<(String, String)>, HeadError> {
    let mut headers: Vec<(String, String)> = Vec::new();
    // The raw length of the header being built, for the length limit.
    let mut cur_len = 0usize;
    // The end of the line before, which a continuation turns into spaces.
    let mut prev_end = 0usize;
    for (line, end) in lines {
        let ended = std::mem::replace(&mut prev_end, end);
        if line.is_empty() {
            break;
        }
        if let Some(&c) = line.iter().find(|&&c| is_ctl(c) && c != b'\t') {
            return Err(bogo(&format!("Header has ctrl char 0x{c:02x}"), None));
        }
        if matches!(line[0], b' ' | b'\t') {
            let Some((_, v)) = headers.last_mut() else {
                return Err(bogo("1st header has white space: ", Some(line)));
            };
            cur_len += ended + line.len();
            if cur_len > lim.hdr_len {
                return Err(bogo("Header too long: ", Some(line)));
            }
            let blanks = line
                .iter()
                .take_while(|c| matches!(c, b' ' | b'\t'))
                .count();
            v.extend(std::iter::repeat_n(' ', ended + blanks));
            v.push_str(&String::from_utf8_lossy(&line[blanks..]));
            continue;
        }
        if line.len() > lim.hdr_len {
            return Err(bogo("Header too long: ", Some(line)));
        }
        // The name is checked up to the colon or the line's end first,
        // as Varnish does ("Bad Header" has an illegal space).
        let colon = line.iter().position(|&c| c == b':');
        let name = &line[..colon.unwrap_or(line.len())];
        if let Some(&c) = name.iter().find(|&&c| !is_tchar(c)) {
            return Err(bogo(
                &format!("Illegal char 0x{c:02x} in header name"),
                None,
            ));
        }
        let Some(colon) = colon else {
            return Err(bogo("Header without ':' ", Some(line)));
        };
        if name.is_empty() {
            return Err(bogo("Missing header name: ", Some(line)));
        }
        if headers.len() + HDR_FIRST >= lim.max_hdr {
            return Err(bogo("Too many headers: ", Some(line)));
        }
        cur_len = line.len();
        let value = &line[colon + 1..];
        let lead = value
            .iter()
            .take_while(|c| matches!(c, b' ' | b'\t'))
            .count();
        // (Header names are tchars, hence ASCII.)
        headers.push((
            crate::vrt::utf8_lossy(name).into_owned(),
            crate::vrt::utf8_lossy(&value[lead..]).into_owned(),
        ));
    }
    for (_, v) in headers.iter_mut() {
        let keep = v.trim_end_matches([' ', '\t']).len();
        v.truncate(keep);
    }
    Ok(headers)
}

/// The header slots Varnish's start lines take (`HTTP_HDR_FIRST`): a
/// message holds at most `http_max_hdr` minus these headers.
pub const HDR_FIRST: usize = 5;

/// Each line of a complete head (request or status line first) without
/// its end, and the length of that end (1 or 2).
fn head_lines(head: &[u8]) -> impl Iterator<Item = (&[u8], usize)> {
    head.split(|&c| c == b'\n')
        .map(|l| match l.strip_suffix(b"\r") {
            Some(l) => (l, 2),
            None => (l, 1),
        })
}

/// Dissects a backend's response head at the start of `buf` (Varnish's
/// `HTTP1_DissectResponse`): `hdr_len` is `http_resp_hdr_len`, `req_size`
/// `http_resp_size`. The status line is `PROTO SP STATUS [SP REASON]`
/// with a three-digit status and an HTTP/1.x or later protocol.
/// `Ok(None)`: not complete yet; `Ok(Some((resp, n)))`: the head took
/// `n` bytes.
pub fn dissect_response(
    buf: &[u8],
    lim: &HeadLimits,
) -> Result<Option<(crate::vrt_ctx::RespMsg, usize)>, HeadError> {
    let skip = leading_space(buf);
    let Some(end) = head_end(&buf[skip..]).map(|e| e + skip) else {
        if buf.len() > lim.req_size {
            return Err(HeadError::Overflow);
        }
        return Ok(None);
    };
    if end > lim.req_size {
        return Err(HeadError::Overflow);
    }
    let mut lines = head_lines(&buf[skip..end]);
    let (first, _) = lines.next().unwrap_or_default();
    if let Some(&c) = first.iter().find(|&&c| is_ctl(c) && c != b'\t') {
        return Err(bad(format!(
            "control character 0x{c:02x} in the status line"
        )));
    }
    let blank = |c: &u8| matches!(c, b' ' | b'\t');
    let p_end = first.iter().position(blank).unwrap_or(first.len());
    let proto = &first[..p_end];
    let rest = &first[p_end..];
    let rest = &rest[rest.iter().take_while(|c| blank(c)).count()..];
    let s_end = rest.iter().position(blank).unwrap_or(rest.len());
    let status = &rest[..s_end];
    let reason = &rest[s_end..];
    let reason = &reason[reason.iter().take_while(|c| blank(c)).count()..];
    let version = match proto {
        b"HTTP/1.0" => 10,
        b"HTTP/1.1" => 11,
        p if p.starts_with(b"HTTP/") && p.len() > 5 && p[5].is_ascii_digit() && p[5] >= b'2' => 20,
        _ => return Err(bad("unsupported protocol in the status line")),
    };
    let status = match status {
        [a @ b'1'..=b'9', b @ b'0'..=b'9', c @ b'0'..=b'9'] => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(bad("status is not three digits")),
    };
    let headers = dissect_headers(lines, lim)?;
    let reason = String::from_utf8_lossy(reason).trim_end().to_string();
    Ok(Some((
        crate::vrt_ctx::RespMsg {
            status,
            // A backend that sends no reason gets the standard one.
            reason: if reason.is_empty() {
                crate::cache_http::status_reason(status).to_string()
            } else {
                reason
            },
            // A later protocol than the request's is answered as 1.1.
            proto: if version == 10 {
                "HTTP/1.0"
            } else {
                "HTTP/1.1"
            }
            .to_string(),
            headers,
        },
        end,
    )))
}

/// `METHOD SP URL SP PROTO`, fields separated by one or more spaces.
fn request_line(line: &[u8]) -> Result<(&str, &str, &str), HeadError> {
    if let Some(&c) = line.iter().find(|&&c| is_ctl(c)) {
        return Err(bad(format!(
            "control character 0x{c:02x} in the request line"
        )));
    }
    let s = std::str::from_utf8(line).map_err(|_| bad("request line is not UTF-8"))?;
    let mut fields = s.split(' ').filter(|f| !f.is_empty());
    let (Some(method), Some(url), Some(proto), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(bad("request line is not METHOD URL PROTO"));
    };
    // Any characters but blanks and controls, as Varnish's splitline
    // (a method like ":x" is VCL's business).
    Ok((method, url, proto))
}

/// Content-Length or chunked; both at once, an unknown coding or a bad
/// length is a 400, as in Varnish.
fn body_framing(headers: &[(String, String)]) -> Result<BodyFraming, HeadError> {
    let te = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
    let mut lengths = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.as_str());
    let cl = lengths.next();
    if let Some((_, v)) = te {
        if cl.is_some() {
            return Err(bad("both Content-Length and Transfer-Encoding"));
        }
        if !v.eq_ignore_ascii_case("chunked") {
            return Err(bad(format!("unknown Transfer-Encoding {v:?}")));
        }
        return Ok(BodyFraming::Chunked);
    }
    let Some(cl) = cl else {
        return Ok(BodyFraming::None);
    };
    if lengths.any(|other| other != cl) {
        return Err(bad("conflicting Content-Length headers"));
    }
    if cl.is_empty() || !cl.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad(format!("bad Content-Length {cl:?}")));
    }
    // Varnish's lengths are signed 64-bit.
    match cl.parse::<u64>() {
        Ok(n) if n <= i64::MAX as u64 => Ok(BodyFraming::Length(n)),
        _ => Err(bad(format!("bad Content-Length {cl:?}"))),
    }
}

/// An absolute URL names the host (RFC 9112 3.2.2): it replaces `Host`
/// and the URL keeps only its path.
fn absolute_url(msg: &mut ReqMsg) {
    let lower = msg.url.get(..8).unwrap_or(&msg.url).to_ascii_lowercase();
    let skip = if lower.starts_with("http://") {
        7
    } else if lower.starts_with("https://") {
        8
    } else {
        return;
    };
    let rest = &msg.url[skip..];
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, path) = (host.to_string(), path.to_string());
    msg.headers.retain(|(n, _)| !n.eq_ignore_ascii_case("host"));
    msg.headers.push(("host".to_string(), host));
    msg.url = path;
}

/// Whether a `Connection` header names `token`.
pub fn connection_has(headers: &[(String, String)], token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: HeadLimits = HeadLimits {
        req_size: 256,
        hdr_len: 40,
        max_hdr: 8,
    };

    fn ok(s: &str) -> (Request, usize) {
        match dissect(s.as_bytes(), &LIM) {
            Ok(Some(x)) => x,
            other => panic!("{s:?}: {other:?}"),
        }
    }

    fn err(s: &str) -> HeadError {
        match dissect(s.as_bytes(), &LIM) {
            Err(e) => e,
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn plain_request() {
        let (r, n) = ok("GET /a HTTP/1.1\r\nHost: x\r\nFoo:  bar \r\n\r\nrest");
        assert_eq!(n, 40);
        assert_eq!(r.msg.method, "GET");
        assert_eq!(r.msg.url, "/a");
        assert_eq!(r.version, 11);
        assert_eq!(r.msg.headers[1], ("Foo".into(), "bar".into()));
        assert_eq!(r.body, BodyFraming::None);
    }

    #[test]
    fn partial_and_bare_lf() {
        assert!(matches!(dissect(b"GET / HTTP/1.1\r\nHost", &LIM), Ok(None)));
        let (r, _) = ok("GET / HTTP/1.0\nHost: x\n\n");
        assert_eq!(r.version, 10);
    }

    #[test]
    fn folding_joins_lines() {
        let (r, _) = ok("POST / HTTP/1.1\r\nAsdf: b\n \r\n\r\n");
        assert_eq!(r.msg.headers[0].1, "b");
        let (r, _) = ok("GET / HTTP/1.1\r\nA: 1\r\n  2\r\n\r\n");
        assert_eq!(r.msg.headers[0].1, "1    2");
    }

    #[test]
    fn header_length_counts_folds() {
        ok("GET / HTTP/1.1\r\n1...5: ..0....5\n ..0....5....0....5....0\r\n\r\n");
        assert!(matches!(
            err("GET / HTTP/1.1\r\n1...5: ..0....5\n ..0....5....0....5....0.\r\n\r\n"),
            HeadError::BadHeader(_)
        ));
        ok("GET / HTTP/1.1\r\n1...5: ..0....5....0....5....0....5....0\r\n\r\n");
        assert!(matches!(
            err("GET / HTTP/1.1\r\n1...5: ..0....5....0....5....0....5....0.\r\n\r\n"),
            HeadError::BadHeader(_)
        ));
    }

    #[test]
    fn refusals() {
        for s in [
            "GET /\r\n\r\n",
            "GET / HTTP/0.5\r\n\r\n",
            "GET / HTTP/1.2\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET    \nHost: example.com\n\n",
            "GET / HTTP/1.1\r\nAccept-Encoding : gzip\r\n\r\n",
            "GET / HTTP/1.1\r\nAccept/Encoding: gzip\r\n\r\n",
            "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 9223372036854775808\r\n\r\n",
            "GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        ] {
            assert!(
                matches!(err(s), HeadError::Bad(_) | HeadError::BadHeader(_)),
                "{s:?}"
            );
        }
    }

    #[test]
    fn overflow() {
        let big = format!("GET / HTTP/1.1\r\nA: {}\r\n\r\n", "x".repeat(300));
        assert_eq!(err(&big), HeadError::Overflow);
        assert_eq!(err(&"x".repeat(300)), HeadError::Overflow);
    }

    #[test]
    fn absolute_url_sets_host() {
        let (r, _) = ok("GET http://example.com/p?q HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(r.msg.url, "/p?q");
        assert_eq!(r.msg.headers, vec![("host".into(), "example.com".into())]);
    }

    #[test]
    fn framing() {
        let (r, _) = ok("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(r.body, BodyFraming::Length(12));
        let (r, _) = ok("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(r.body, BodyFraming::Chunked);
    }

    #[test]
    fn response_heads() {
        let r = |s: &str| dissect_response(s.as_bytes(), &LIM);
        let Ok(Some((m, n))) = r("\r\nHTTP/1.1 404 Gone Away\r\nA: 1\r\n\r\nbody") else {
            panic!("not dissected");
        };
        assert_eq!((m.status, m.reason.as_str(), n), (404, "Gone Away", 34));
        let Ok(Some((m, _))) = r("HTTP/1.0 200\nFoo: bar,\n \t\n\tbarf: x\n\n") else {
            panic!("not dissected");
        };
        assert_eq!((m.reason.as_str(), m.proto.as_str()), ("OK", "HTTP/1.0"));
        assert_eq!(m.headers[0].1, "bar,     barf: x");
        assert!(matches!(r("HTTP/1.1 200 OK\r\nA: 1"), Ok(None)));
        for bad in [
            "HTTP/0.9 200 OK\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/1.1 099 OK\r\n\r\n",
            "FOO 200 OK\r\n\r\n",
        ] {
            assert!(matches!(r(bad), Err(HeadError::Bad(_))), "{bad:?}");
        }
        // http_max_hdr 8: three headers, the status line takes five slots.
        assert!(r("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n").is_ok());
        assert!(r("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n").is_err());
        assert!(matches!(
            r(&format!("HTTP/1.1 200 OK\r\n{}", "A: 1\r\n".repeat(60))),
            Err(HeadError::Overflow)
        ));
    }

    #[test]
    fn connection_tokens() {
        let h = vec![("Connection".to_string(), "Keep-Alive, close".to_string())];
        assert!(connection_has(&h, "close"));
        assert!(connection_has(&h, "keep-alive"));
        assert!(!connection_has(&h, "upgrade"));
    }
}
