//! varnishncsa's access log lines from transactions: the default format
//! `%h %l %u %t "%r" %s %b "%{Referer}i" "%{User-agent}i"` or one given
//! with `-F`. A line per client request (or per backend request with
//! `-b`), from the records Varnish logs for it.

use crate::dispatch::{Transaction, TxType};
use crate::tag::Tag;

/// varnishncsa's default format.
pub const DEFAULT_FORMAT: &str = r#"%h %l %u %t "%r" %s %b "%{Referer}i" "%{User-agent}i""#;

#[derive(Clone, Debug, PartialEq)]
enum Item {
    Lit(String),
    /// A one-letter field (`%h`).
    F(char),
    /// `%{X}i`, `%{X}o`, `%{X}t`, `%{X}x`.
    Named(String, char),
}

/// A parsed format; with `json` (varnishncsa's `-j`) values are escaped
/// for JSON strings rather than as `\xHH`.
#[derive(Clone, Debug)]
pub struct Format(Vec<Item>, bool);

impl Format {
    /// Values escaped for JSON strings (`-j`).
    pub fn json(mut self) -> Format {
        self.1 = true;
        self
    }

    /// Parses a varnishncsa format string.
    pub fn new(f: &str) -> Result<Format, String> {
        let mut out = Vec::new();
        let mut lit = String::new();
        let mut it = f.chars().peekable();
        while let Some(c) = it.next() {
            if c == '\\' {
                match it.next() {
                    Some('n') => lit.push('\n'),
                    Some('t') => lit.push('\t'),
                    Some(o) => lit.push(o),
                    None => lit.push('\\'),
                }
                continue;
            }
            if c != '%' {
                lit.push(c);
                continue;
            }
            if !lit.is_empty() {
                out.push(Item::Lit(std::mem::take(&mut lit)));
            }
            match it.next() {
                Some('%') => lit.push('%'),
                Some('{') => {
                    let mut name = String::new();
                    loop {
                        match it.next() {
                            Some('}') => break,
                            Some(x) => name.push(x),
                            None => return Err(format!("Unmatched bracket in format: {f}")),
                        }
                    }
                    match it.next() {
                        Some(k @ ('i' | 'o' | 't' | 'x')) => out.push(Item::Named(name, k)),
                        Some(k) => {
                            return Err(format!("Unknown format specifier at: {{{name}}}{k}"))
                        }
                        None => return Err(format!("Unknown format specifier at: {{{name}}}")),
                    }
                }
                Some(
                    k @ ('b' | 'D' | 'H' | 'h' | 'I' | 'l' | 'm' | 'O' | 'q' | 'r' | 's' | 't'
                    | 'T' | 'U' | 'u'),
                ) => out.push(Item::F(k)),
                Some(k) => return Err(format!("Unknown format specifier at: %{k}")),
                None => return Err("Unknown format specifier at end of format".into()),
            }
        }
        if !lit.is_empty() {
            out.push(Item::Lit(lit));
        }
        Ok(Format(out, false))
    }
}

/// What the records of one transaction say.
#[derive(Default)]
struct Facts<'a> {
    h: Option<String>,
    m: Option<String>,
    u: Option<String>,
    q: Option<String>,
    proto: Option<String>,
    status: Option<String>,
    acct: Option<Vec<String>>,
    t_start: Option<f64>,
    t_end: Option<f64>,
    ttfb: Option<String>,
    host: Option<String>,
    auth: Option<String>,
    req_headers: Vec<&'a str>,
    resp_headers: Vec<&'a str>,
    vcl_log: Vec<&'a str>,
    hitmiss: &'static str,
    handling: &'static str,
    skip: bool,
}

fn first(slot: &mut Option<String>, v: &str) {
    if slot.is_none() {
        *slot = Some(v.to_string());
    }
}

fn header<'a>(list: &[&'a str], name: &str) -> Option<&'a str> {
    list.iter().rev().find_map(|h| {
        let (n, v) = h.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim_start())
    })
}

fn local_time(t: f64, fmt: &str) -> String {
    // SAFETY: localtime_r and strftime on locals of the right types; the
    // format is NUL-terminated and strftime writes within the buffer.
    unsafe {
        let tt = t as libc::time_t;
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&tt, &mut tm).is_null() {
            return "-".into();
        }
        let Ok(f) = std::ffi::CString::new(fmt) else {
            return "-".into();
        };
        let mut buf = [0u8; 128];
        let n = libc::strftime(
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            f.as_ptr(),
            &tm,
        );
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

fn base64_decode(s: &str) -> Option<String> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.trim().bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    String::from_utf8(out).ok()
}

/// The access log lines of a group: one per client request (with
/// `backend`, per backend request).
pub fn lines(g: &[Transaction], fmt: &Format, backend: bool) -> Vec<String> {
    let mut out = Vec::new();
    for t in g {
        let want = if backend { TxType::Bereq } else { TxType::Req };
        if t.typ != want {
            continue;
        }
        let mut f = Facts {
            hitmiss: "-",
            handling: "-",
            ..Facts::default()
        };
        for r in &t.records {
            if r.tag.flags() != 0 {
                continue;
            }
            let d = std::str::from_utf8(&r.data).unwrap_or("");
            match r.tag {
                Tag::HttpGarbage => f.skip = true,
                Tag::ReqStart => first(&mut f.h, d.split_whitespace().next().unwrap_or("")),
                Tag::BackendOpen => {
                    if let Some(ip) = d.split_whitespace().nth(2) {
                        f.h = Some(ip.to_string());
                    }
                }
                Tag::ReqMethod | Tag::BereqMethod => first(&mut f.m, d),
                Tag::ReqURL | Tag::BereqURL => {
                    let (u, q) = match d.find('?') {
                        Some(i) => d.split_at(i),
                        None => (d, ""),
                    };
                    first(&mut f.u, u);
                    first(&mut f.q, q);
                }
                Tag::ReqProtocol | Tag::BereqProtocol => first(&mut f.proto, d),
                Tag::RespStatus | Tag::BerespStatus => f.status = Some(d.to_string()),
                Tag::ReqAcct | Tag::BereqAcct | Tag::PipeAcct if f.acct.is_none() => {
                    f.acct = Some(d.split_whitespace().map(str::to_string).collect());
                }
                Tag::Timestamp => {
                    let (label, rest) = d.split_once(':').unwrap_or((d, ""));
                    let mut fields = rest.split_whitespace();
                    match label {
                        "Start" => f.t_start = fields.next().and_then(|x| x.parse().ok()),
                        "Resp" | "PipeSess" | "BerespBody" => {
                            f.t_end = fields.next().and_then(|x| x.parse().ok())
                        }
                        "Process" | "Pipe" | "Beresp" => f.ttfb = fields.nth(1).map(str::to_string),
                        _ => {}
                    }
                }
                Tag::ReqHeader | Tag::BereqHeader => {
                    f.req_headers.push(d);
                    if let Some((n, v)) = d.split_once(':') {
                        let v = v.trim_start();
                        if n.eq_ignore_ascii_case("host") {
                            first(&mut f.host, v);
                        } else if n.eq_ignore_ascii_case("authorization") {
                            if let Some(b) = v
                                .strip_prefix("basic ")
                                .or_else(|| v.strip_prefix("Basic "))
                            {
                                first(&mut f.auth, b);
                            }
                        }
                    }
                }
                Tag::RespHeader | Tag::BerespHeader => f.resp_headers.push(d),
                Tag::VCL_Log => f.vcl_log.push(d),
                Tag::VCL_call => {
                    (f.hitmiss, f.handling) = match d.to_ascii_lowercase().as_str() {
                        "hit" => ("hit", "hit"),
                        "miss" => ("miss", "miss"),
                        "pass" => ("miss", "pass"),
                        "synth" => ("miss", "synth"),
                        "recv" => ("-", "-"),
                        _ => (f.hitmiss, f.handling),
                    }
                }
                Tag::VCL_return => {
                    if d.eq_ignore_ascii_case("pipe") {
                        (f.hitmiss, f.handling) = ("miss", "pipe");
                    } else if d.eq_ignore_ascii_case("restart") {
                        f.skip = true;
                    }
                }
                _ => {}
            }
        }
        if f.skip {
            continue;
        }
        out.push(render(fmt, &f, t, backend));
    }
    out
}

fn render(fmt: &Format, f: &Facts<'_>, t: &Transaction, backend: bool) -> String {
    let dash = || "-".to_string();
    let acct = |i: usize| f.acct.as_ref().and_then(|a| a.get(i).cloned());
    let mut s = String::new();
    for item in &fmt.0 {
        let v = match item {
            Item::Lit(l) => l.clone(),
            Item::F('h') => f.h.clone().unwrap_or_else(dash),
            Item::F('l') => dash(),
            Item::F('u') => f
                .auth
                .as_deref()
                .and_then(base64_decode)
                .and_then(|u| u.split(':').next().map(str::to_string))
                .unwrap_or_else(dash),
            Item::F('t') => f
                .t_start
                .map(|x| format!("[{}]", local_time(x, "%d/%b/%Y:%T %z")))
                .unwrap_or_else(dash),
            Item::F('r') => {
                let host = match &f.host {
                    Some(h) if h.starts_with("http://") => h.clone(),
                    Some(h) => format!("http://{h}"),
                    None => "http://localhost".into(),
                };
                format!(
                    "{} {host}{}{} {}",
                    f.m.as_deref().unwrap_or("-"),
                    f.u.as_deref().unwrap_or(""),
                    f.q.as_deref().unwrap_or(""),
                    f.proto.as_deref().unwrap_or("HTTP/1.0")
                )
            }
            Item::F('s') => f.status.clone().unwrap_or_else(dash),
            Item::F('b') => match acct(4) {
                Some(b) if b != "0" => b,
                _ => dash(),
            },
            Item::F('I') => acct(2).unwrap_or_else(dash),
            Item::F('O') => acct(5).unwrap_or_else(dash),
            Item::F('m') => f.m.clone().unwrap_or_else(dash),
            Item::F('U') => f.u.clone().unwrap_or_else(dash),
            Item::F('q') => f.q.clone().unwrap_or_default(),
            Item::F('H') => f.proto.clone().unwrap_or_else(dash),
            Item::F('D') => match (f.t_start, f.t_end) {
                (Some(a), Some(b)) => format!("{:.0}", ((b - a) * 1e6).max(0.0).floor()),
                _ => dash(),
            },
            Item::F('T') => match (f.t_start, f.t_end) {
                (Some(a), Some(b)) => format!("{:.0}", (b - a).max(0.0).floor()),
                _ => dash(),
            },
            Item::F(_) => dash(),
            Item::Named(n, 'i') => header(&f.req_headers, n).map_or_else(dash, str::to_string),
            Item::Named(n, 'o') => header(&f.resp_headers, n).map_or_else(dash, str::to_string),
            Item::Named(n, 't') => f.t_start.map(|x| local_time(x, n)).unwrap_or_else(dash),
            Item::Named(n, _) => match n.as_str() {
                "Varnish:time_firstbyte" => f.ttfb.clone().unwrap_or_else(dash),
                "Varnish:hitmiss" => f.hitmiss.to_string(),
                "Varnish:handling" => f.handling.to_string(),
                "Varnish:side" => (if backend { "b" } else { "c" }).to_string(),
                "Varnish:vxid" => t.vxid.to_string(),
                n => match n.strip_prefix("VCL_Log:") {
                    Some(key) => f
                        .vcl_log
                        .iter()
                        .rev()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            (k == key).then(|| v.trim_start().to_string())
                        })
                        .unwrap_or_else(dash),
                    None => dash(),
                },
            },
        };
        match item {
            Item::Lit(_) => s.push_str(&v),
            _ => quote(&mut s, v.as_bytes(), fmt.1),
        }
    }
    s
}

/// A value as varnishncsa writes it (libvarnish's `VSB_quote`): `"` and
/// `\` escaped, control characters as `\n`, `\r`, `\t`, `\v` or (by
/// default) `\xHH` and bytes above 0x7e as `\xHH`; for JSON, the other
/// control characters as `\u00HH` and bytes above 0x7e as they are.
fn quote(s: &mut String, v: &[u8], json: bool) {
    let plain = |c: u8| c >= 0x20 && c != b'"' && c != b'\\' && (c <= 0x7e || json);
    if v.iter().all(|&c| plain(c)) {
        s.push_str(&String::from_utf8_lossy(v));
        return;
    }
    let mut raw = Vec::with_capacity(v.len() + 8);
    for &c in v {
        match c {
            b'"' | b'\\' => raw.extend_from_slice(&[b'\\', c]),
            b'\n' => raw.extend_from_slice(b"\\n"),
            b'\r' => raw.extend_from_slice(b"\\r"),
            b'\t' => raw.extend_from_slice(b"\\t"),
            0x0b => raw.extend_from_slice(b"\\v"),
            0x20..=0x7e => raw.push(c),
            0x7f.. if json => raw.push(c),
            _ if json => raw.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
            _ => raw.extend_from_slice(format!("\\x{c:02x}").as_bytes()),
        }
    }
    s.push_str(&String::from_utf8_lossy(&raw));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Kind, Record};

    #[test]
    fn default_format() {
        let r = |tag, d: &str| Record {
            vxid: 1001,
            tag,
            kind: Kind::Client,
            data: d.as_bytes().to_vec(),
        };
        let t = Transaction {
            level: 1,
            vxid: 1001,
            parent: 0,
            typ: TxType::Req,
            reason: "rxreq".into(),
            records: vec![
                r(Tag::Timestamp, "Start: 0.000000 0.000000 0.000000"),
                r(Tag::ReqStart, "127.0.0.1 5000 a0"),
                r(Tag::ReqMethod, "GET"),
                r(Tag::ReqURL, "/x?y=1"),
                r(Tag::ReqProtocol, "HTTP/1.1"),
                r(Tag::ReqHeader, "Host: example.com"),
                r(Tag::ReqHeader, "User-Agent: curl"),
                r(Tag::VCL_call, "MISS"),
                r(Tag::RespStatus, "200"),
                r(Tag::ReqAcct, "79 0 79 256 2802 3058"),
            ],
        };
        let f = Format::new(DEFAULT_FORMAT).unwrap();
        let l = lines(std::slice::from_ref(&t), &f, false);
        assert_eq!(l.len(), 1);
        assert!(l[0].starts_with("127.0.0.1 - - ["));
        assert!(
            l[0].ends_with(r#""GET http://example.com/x?y=1 HTTP/1.1" 200 2802 "-" "curl""#),
            "{}",
            l[0]
        );
        let f = Format::new("%{Varnish:hitmiss}x %m %U%q %I %O").unwrap();
        assert_eq!(lines(&[t], &f, false), vec!["miss GET /x?y=1 79 3058"]);
        assert!(Format::new("%Z").is_err());
        assert!(Format::new("%{x").is_err());
    }

    /// Values are escaped as varnishncsa escapes them, for JSON with -j.
    #[test]
    fn values_are_quoted() {
        let q = |v: &str, json: bool| {
            let mut s = String::new();
            quote(&mut s, v.as_bytes(), json);
            s
        };
        assert_eq!(q("plain", false), "plain");
        assert_eq!(q("a\"b\\c", false), "a\\\"b\\\\c");
        assert_eq!(q("\u{2203}", false), "\\xe2\\x88\\x83");
        assert_eq!(q("\u{2203}", true), "\u{2203}");
        assert_eq!(q("nul\u{0}\tx", false), "nul\\x00\\tx");
        assert_eq!(q("nul\u{0}", true), "nul\\u0000");
    }
}
