//! Edge Side Includes (Varnish's `cache_esi_parse` and
//! `cache_esi_deliver`): an object fetched with `beresp.do_esi` is parsed
//! once into literal text and includes; delivering it streams the text and
//! runs a sub-request (`vcl_recv` … `vcl_deliver`, `req.esi_level` + 1)
//! for every include, inlining the fragment's body.
//!
//! Recognised, as Varnish 7.1 does: `<esi:include src="…"/>`,
//! `<esi:remove>…</esi:remove>`, `<esi:comment …/>` and `<!--esi …-->`
//! (whose content is kept and parsed). A body that does not start with
//! `<` is not XML and is delivered unprocessed (Varnish's XML check).

use bytes::Bytes;

/// One piece of a parsed ESI object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Bytes delivered as they are.
    Text(Bytes),
    /// `<esi:include src=…>`: the URL as written.
    Include(String),
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// The value of attribute `name` in a tag's text.
fn attr(tag: &str, name: &str) -> Option<String> {
    let mut rest = tag;
    while let Some(i) = rest.find(name) {
        let before_ok = i == 0 || rest.as_bytes()[i - 1].is_ascii_whitespace();
        let after = rest[i + name.len()..].trim_start();
        if before_ok {
            if let Some(v) = after.strip_prefix('=') {
                let v = v.trim_start();
                let q = v.chars().next()?;
                if q == '"' || q == '\'' {
                    let end = v[1..].find(q)?;
                    return Some(v[1..1 + end].to_string());
                }
            }
        }
        rest = &rest[i + name.len()..];
    }
    None
}

/// Parses an ESI body. `None` when it is not to be processed (not XML).
pub fn parse(body: &[u8]) -> Option<Vec<Segment>> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'<' {
        return None;
    }
    let mut out = Vec::new();
    parse_into(body, &mut out);
    Some(out)
}

fn push_text(out: &mut Vec<Segment>, b: &[u8]) {
    if !b.is_empty() {
        out.push(Segment::Text(Bytes::copy_from_slice(b)));
    }
}

fn parse_into(body: &[u8], out: &mut Vec<Segment>) {
    let mut pos = 0;
    let mut text_start = 0;
    while let Some(lt) = find(body, b"<", pos) {
        let rest = &body[lt..];
        if rest.starts_with(b"<!--esi") {
            push_text(out, &body[text_start..lt]);
            let inner_start = lt + 7;
            let end = find(body, b"-->", inner_start).unwrap_or(body.len());
            parse_into(&body[inner_start..end], out);
            pos = (end + 3).min(body.len());
            text_start = pos;
        } else if rest.starts_with(b"<esi:remove") {
            push_text(out, &body[text_start..lt]);
            let end = find(body, b"</esi:remove>", lt).map_or(body.len(), |e| e + 13);
            pos = end;
            text_start = pos;
        } else if rest.starts_with(b"<esi:") {
            push_text(out, &body[text_start..lt]);
            let Some(gt) = find(body, b">", lt) else {
                pos = body.len();
                text_start = pos;
                break;
            };
            let tag = String::from_utf8_lossy(&body[lt + 1..gt]).into_owned();
            if tag.starts_with("esi:include") {
                if let Some(src) = attr(&tag, "src") {
                    out.push(Segment::Include(src));
                }
            }
            // Other elements (`esi:comment`, closing tags) vanish.
            pos = gt + 1;
            text_start = pos;
        } else {
            pos = lt + 1;
        }
    }
    push_text(out, &body[text_start.min(body.len())..]);
}

/// The URL of an include relative to the including request's URL, and
/// the Host it names if it is absolute (`http://host/path`).
pub fn resolve(src: &str, parent_url: &str) -> (String, Option<String>) {
    // The attribute is XML: its entities stand for characters.
    let decoded = src
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    for scheme in ["http://", "https://"] {
        if let Some(rest) = decoded.strip_prefix(scheme) {
            let (host, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            return (path.to_string(), Some(host.to_string()));
        }
    }
    if decoded.starts_with('/') {
        return (decoded, None);
    }
    let base = parent_url.split('?').next().unwrap_or("");
    let dir = match base.rfind('/') {
        Some(i) => &base[..=i],
        None => "/",
    };
    (format!("{dir}{decoded}"), None)
}

/// What delivering one ESI object needs: the object, and the request it
/// is delivered for (whose headers its includes' sub-requests copy).
pub struct EsiJob {
    pub ctx: std::sync::Arc<crate::cache_req_fsm::Ctx>,
    pub obj: std::sync::Arc<crate::cache_obj::Object>,
    pub req: crate::vrt_ctx::ReqMsg,
    pub client: std::net::IpAddr,
    pub server: std::net::IpAddr,
    pub level: u32,
}

/// Where assembled bytes go; an error closes the client's connection.
pub type Sink = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Sends `body`'s bytes to `sink`; false when the client went away or the
/// body failed (then an error has been sent).
pub async fn send_body(body: crate::cache_req_fsm::ReplyBody, sink: &Sink) -> bool {
    use crate::cache_req_fsm::ReplyBody;
    match body {
        ReplyBody::Bytes(b) => b.is_empty() || sink.send(Ok(b)).await.is_ok(),
        ReplyBody::Object(o) => {
            let mut i = 0;
            loop {
                match o.body.chunk(i).await {
                    Ok(Some(c)) => {
                        if sink.send(Ok(c)).await.is_err() {
                            return false;
                        }
                        i += 1;
                    }
                    Ok(None) => return true,
                    Err(()) => {
                        let _ = sink.send(Err(std::io::Error::other("fetch failed"))).await;
                        return false;
                    }
                }
            }
        }
        ReplyBody::Esi(job) => Box::pin(deliver(*job, sink)).await,
        // A pipe inside an include has nothing to include.
        ReplyBody::Pipe(_) => true,
        ReplyBody::Gunzip(o) => match o.body.collect().await.map(|b| crate::vsc::gunzip(&b)) {
            Some(Ok(b)) => b.is_empty() || sink.send(Ok(b)).await.is_ok(),
            _ => {
                let _ = sink.send(Err(std::io::Error::other("gunzip failed"))).await;
                false
            }
        },
    }
}

/// Streams an ESI object to `sink`: its text, and for each include the
/// body of a sub-request one level down (up to `max_esi_depth`).
pub async fn deliver(job: EsiJob, sink: &Sink) -> bool {
    let Some(body) = job.obj.body.collect().await else {
        let _ = sink.send(Err(std::io::Error::other("fetch failed"))).await;
        return false;
    };
    // A gzipped ESI object is parsed (and delivered) as plain text.
    let body = if crate::cache_gzip::is_gzip(&job.obj.headers) {
        match crate::cache_gzip::gunzip(&body) {
            Ok(b) => b,
            Err(_) => body,
        }
    } else {
        body
    };
    let parsed = job.obj.esi_parsed.get_or_init(|| parse(&body));
    let Some(segments) = parsed else {
        return sink.send(Ok(body)).await.is_ok();
    };
    let max_depth = job.ctx.params().num("max_esi_depth") as u32;
    for seg in segments {
        match seg {
            Segment::Text(t) => {
                if sink.send(Ok(t.clone())).await.is_err() {
                    return false;
                }
            }
            Segment::Include(src) => {
                if job.level >= max_depth {
                    tracing::debug!("ESI include {src} beyond max_esi_depth");
                    continue;
                }
                let (url, host) = resolve(src, &job.req.url);
                let mut req = job.req.clone();
                req.method = "GET".into();
                req.url = url;
                if let Some(h) = host {
                    crate::cache_obj::hdr_set(&mut req.headers, "Host", &h);
                }
                // A fragment is fetched whole, never conditionally.
                for h in ["if-none-match", "if-modified-since", "range", "if-range"] {
                    crate::cache_obj::hdr_unset(&mut req.headers, h);
                }
                let reply = Box::pin(crate::cache_req_fsm::handle_at_level(
                    job.ctx.clone(),
                    req,
                    Bytes::new(),
                    job.client,
                    job.server,
                    job.level + 1,
                ))
                .await;
                // The page is assembled as plain text: so are fragments.
                let body = match reply.body {
                    crate::cache_req_fsm::ReplyBody::Object(o)
                        if crate::cache_gzip::is_gzip(&reply.headers) =>
                    {
                        crate::cache_req_fsm::ReplyBody::Gunzip(o)
                    }
                    b => b,
                };
                if !send_body(body, sink).await {
                    return false;
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Segment {
        Segment::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn includes_removes_and_comments() {
        let b = b"<a><esi:include src=\"/x\"/>b<esi:remove>gone</esi:remove>c<!--esi <p/>-->d<esi:comment text=\"x\"/>e</a>";
        assert_eq!(
            parse(b).expect("xml"),
            vec![
                t("<a>"),
                Segment::Include("/x".into()),
                t("b"),
                t("c"),
                t(" <p/>"),
                t("d"),
                t("e</a>"),
            ]
        );
        assert_eq!(parse(b"not xml <esi:include src=\"/x\"/>"), None);
    }

    #[test]
    fn relative_and_absolute_sources() {
        assert_eq!(resolve("/a", "/b/c"), ("/a".into(), None));
        assert_eq!(resolve("a", "/b/c?x"), ("/b/a".into(), None));
        assert_eq!(
            resolve("http://h.example/p?q=1&amp;r=2", "/"),
            ("/p?q=1&r=2".into(), Some("h.example".into()))
        );
    }
}
