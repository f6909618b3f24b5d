//! Fetch processors (Varnish's `cache_fetch_proc` and its VFPs): what is
//! done to a backend body on its way into the cache, as a chain of
//! filters named by `beresp.filters` — `gunzip`, `gzip`, `testgunzip`,
//! `esi`, `esi_gzip` — run piece by piece while the body streams in.
//!
//! The default chain is Varnish's (`vbf_default_filter_list`): gunzip for
//! `do_gunzip` or ESI on gzip, gzip for `do_gzip`, ESI parsing for
//! `do_esi` (stored gzipped again if it came gzipped or `do_gzip` asks),
//! and a test gunzip of whatever arrives gzipped, so corrupt gzip is a
//! fetch error rather than a cached object.

use crate::cache_esi::{EsiData, EsiOp};
use crate::cache_esi_parse::{Event, Features, Mark, Parser};
use crate::cache_gzip::{Crc, Gunzipper, GzError, GzipInfo, Gzipper};
use crate::cache_obj::{hdr_get, hdr_unset, Headers};
use crate::mgt_param::Params;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

/// One fetch filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Gunzip,
    Gzip,
    TestGunzip,
    Esi,
    EsiGzip,
}

impl Filter {
    fn name(self) -> &'static str {
        match self {
            Filter::Gunzip => "gunzip",
            Filter::Gzip => "gzip",
            Filter::TestGunzip => "testgunzip",
            Filter::Esi => "esi",
            Filter::EsiGzip => "esi_gzip",
        }
    }
}

/// What decides the default filters of a fetch.
pub struct Want<'a> {
    pub do_esi: bool,
    pub do_gzip: bool,
    pub do_gunzip: bool,
    /// The backend response has a body (not none, not `Content-Length: 0`).
    pub has_body: bool,
    pub gzip_support: bool,
    pub beresp: &'a Headers,
}

/// The default `beresp.filters` (Varnish's `vbf_default_filter_list`).
pub fn default_list(w: &Want<'_>) -> String {
    if !w.has_body {
        return String::new();
    }
    let (mut do_gzip, mut do_gunzip) = (w.do_gzip, w.do_gunzip);
    if !w.gzip_support {
        do_gzip = false;
        do_gunzip = false;
    }
    let ce = hdr_get(w.beresp, "content-encoding");
    let is_gzip = ce.is_some_and(|c| c.eq_ignore_ascii_case("gzip"));
    let is_plain = ce.is_none();
    do_gunzip &= is_gzip;
    do_gzip &= is_plain;
    let mut l: Vec<&str> = Vec::new();
    if do_gunzip || (is_gzip && w.do_esi) {
        l.push("gunzip");
    }
    if w.do_esi && (do_gzip || (is_gzip && !do_gunzip)) {
        l.push("esi_gzip");
    } else if w.do_esi {
        l.push("esi");
    } else {
        if do_gzip {
            l.push("gzip");
        }
        if is_gzip && !do_gunzip {
            l.push("testgunzip");
        }
    }
    // Varnish's list has each name after a blank.
    l.iter().map(|f| format!(" {f}")).collect()
}

/// Parses a filter list; an unknown name fails the fetch, as in Varnish.
pub fn parse_list(s: &str) -> Result<Vec<Filter>, String> {
    s.split_ascii_whitespace()
        .map(|n| match n {
            "gunzip" => Ok(Filter::Gunzip),
            "gzip" => Ok(Filter::Gzip),
            "testgunzip" => Ok(Filter::TestGunzip),
            "esi" => Ok(Filter::Esi),
            "esi_gzip" => Ok(Filter::EsiGzip),
            other => Err(format!("Filter '{other}' not found")),
        })
        .collect()
}

/// What the filters found out about a body, kept with the object
/// (Varnish's OA_ESIDATA and OA_GZIPBITS).
#[derive(Debug, Clone, Default)]
pub struct BodyAttrs {
    /// The parsed ESI instructions, if the body has ESI markup.
    pub esi: Option<Arc<EsiData>>,
    /// The layout of a gzip body Shellac made itself.
    pub gzip: Option<GzipInfo>,
    /// The uncompressed length of a gzip body.
    pub plain_len: Option<u64>,
}

struct EsiStage {
    parser: Parser,
    ops: Vec<EsiOp>,
    /// `esi_gzip`: the stored body is compressed here, flushed where the
    /// marks change so verbatim pieces can be cut out as they are.
    gz: Option<EsiGz>,
    /// What `gz` made, once finished.
    gz_info: Option<GzipInfo>,
}

struct EsiGz {
    z: Gzipper,
    /// Input the parser has not classified yet.
    pending: BytesMut,
    cur: Mark,
    /// Uncompressed bytes in the current mark since the last op.
    wait: u64,
    /// Compressed offset where the current op began.
    op_start: u64,
    crc: Crc,
    /// Uncompressed bytes taken so far.
    plain: u64,
    /// Where ops began: (uncompressed, compressed) offsets, to say where
    /// an ESI error is in the stored body.
    bounds: Vec<(u64, u64)>,
}

/// The response's headers as the filters edit them when they open,
/// each change logged as Varnish's `http_Unset`/`http_SetHeader` do.
struct HeadEdit<'a, 'b> {
    h: &'a mut Headers,
    vsl: Option<&'b mut crate::vsl::Buf>,
}

impl HeadEdit<'_, '_> {
    fn unset(&mut self, name: &str) {
        if let Some(b) = self.vsl.as_deref_mut() {
            b.unset(crate::vsl::Http::Beresp, self.h, name);
        }
        hdr_unset(self.h, name);
    }

    fn add(&mut self, name: &str, value: &str) {
        if let Some(b) = self.vsl.as_deref_mut() {
            b.header(crate::vsl::Http::Beresp, name, value);
        }
        self.h.push((name.into(), value.into()));
    }

    /// A strong ETag becomes weak (the body changes).
    fn weaken_etag(&mut self) {
        if let Some(e) = hdr_get(self.h, "etag").filter(|e| !e.starts_with("W/")) {
            let w = format!("W/{e}");
            self.unset("etag");
            self.add("ETag", &w);
        }
    }

    /// `Accept-Encoding` added to `Vary` unless it is there.
    fn vary_ae(&mut self) {
        match hdr_get(self.h, "vary") {
            Some(v)
                if v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding")) => {}
            Some(v) => {
                let nv = format!("{v}, Accept-Encoding");
                self.unset("vary");
                self.add("Vary", &nv);
            }
            None => self.add("Vary", "Accept-Encoding"),
        }
    }
}

enum Stage {
    Gunzip(Gunzipper),
    /// The compressor, and what it made once finished.
    Gzip(Option<Gzipper>, Option<GzipInfo>),
    TestGunzip(Gunzipper),
    Esi(Box<EsiStage>),
}

/// An opened filter chain.
pub struct Vfps {
    stages: Vec<Stage>,
    /// The object's gzip flags after opening (OF_GZIPED, OF_CHGCE).
    pub gzipped: bool,
    pub chgce: bool,
    /// Records for the fetch's log, in order (`ESI_xmlerror` as the body
    /// is parsed, `Gzip` when a (un)zip context closes), taken by whoever
    /// logs them.
    pub log: Vec<(vapi::Tag, String)>,
    closed: bool,
}

fn gz_err(e: GzError) -> String {
    e.to_string()
}

impl Vfps {
    /// Opens `list` on a response (Varnish's `VFP_Open`): each filter may
    /// decline (gzip of what is encoded already, gunzip of what is not),
    /// changes the headers it makes untrue, or fails the fetch (ESI on a
    /// 206). `url` is the backend request's, for relative includes.
    pub fn open(
        list: &[Filter],
        status: u16,
        headers: &mut Headers,
        url: &str,
        params: &Params,
        mut vsl: Option<&mut crate::vsl::Buf>,
    ) -> Result<Vfps, String> {
        let mut v = Vfps {
            stages: Vec::new(),
            gzipped: false,
            chgce: false,
            log: Vec::new(),
            closed: false,
        };
        let level = params.num("gzip_level") as u32;
        for f in list {
            let ce = hdr_get(headers, "content-encoding").map(str::to_string);
            let is_gzip = ce
                .as_deref()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("gzip"));
            let stage = match f {
                Filter::Gzip | Filter::Gunzip | Filter::TestGunzip if status == 206 => continue,
                Filter::Gzip => {
                    if ce.is_some() {
                        continue;
                    }
                    v.gzipped = true;
                    v.chgce = true;
                    Stage::Gzip(Some(Gzipper::new(level)), None)
                }
                Filter::Gunzip => {
                    if !is_gzip {
                        continue;
                    }
                    v.gzipped = false;
                    v.chgce = true;
                    Stage::Gunzip(Gunzipper::new())
                }
                Filter::TestGunzip => {
                    if !is_gzip {
                        continue;
                    }
                    v.gzipped = true;
                    Stage::TestGunzip(Gunzipper::new())
                }
                Filter::Esi | Filter::EsiGzip if status == 206 => {
                    return Err("Attempted ESI on partial (206) response".into())
                }
                Filter::Esi | Filter::EsiGzip => {
                    let feat = Features {
                        disable_xml_check: params.feature("esi_disable_xml_check"),
                        ignore_other_elements: params.feature("esi_ignore_other_elements"),
                        ignore_https: params.feature("esi_ignore_https"),
                        remove_bom: params.feature("esi_remove_bom"),
                    };
                    let gz = (*f == Filter::EsiGzip).then(|| {
                        v.gzipped = true;
                        v.chgce = true;
                        EsiGz {
                            z: Gzipper::new(level),
                            pending: BytesMut::new(),
                            cur: Mark::Skip,
                            wait: 0,
                            op_start: 0,
                            crc: Crc::default(),
                            plain: 0,
                            bounds: Vec::new(),
                        }
                    });
                    Stage::Esi(Box::new(EsiStage {
                        parser: Parser::new(url, feat),
                        ops: Vec::new(),
                        gz,
                        gz_info: None,
                    }))
                }
            };
            let mut e = HeadEdit {
                h: &mut *headers,
                vsl: vsl.as_deref_mut(),
            };
            match f {
                Filter::Gzip | Filter::Gunzip => {
                    e.unset("content-encoding");
                    e.unset("content-length");
                    e.weaken_etag();
                    if *f == Filter::Gzip {
                        e.add("Content-Encoding", "gzip");
                        e.vary_ae();
                    }
                }
                Filter::TestGunzip => e.vary_ae(),
                Filter::EsiGzip => {
                    e.weaken_etag();
                    e.unset("content-length");
                    e.unset("content-encoding");
                    e.add("Content-Encoding", "gzip");
                    e.vary_ae();
                }
                Filter::Esi => {}
            }
            tracing::trace!("VFP_Open({})", f.name());
            // Varnish counts a (un)zip context when it is made.
            match &stage {
                Stage::Gunzip(_) => crate::vsc::MAIN.n_gunzip.inc(),
                Stage::TestGunzip(_) => crate::vsc::MAIN.n_test_gunzip.inc(),
                Stage::Gzip(..) => crate::vsc::MAIN.n_gzip.inc(),
                Stage::Esi(e) if e.gz.is_some() => crate::vsc::MAIN.n_gzip.inc(),
                Stage::Esi(_) => {}
            }
            v.stages.push(stage);
        }
        Ok(v)
    }

    /// Whether the body goes through unchanged (no filter, or only a
    /// test gunzip): its backend length then still holds.
    pub fn keeps_length(&self) -> bool {
        self.stages.iter().all(|s| {
            matches!(s, Stage::TestGunzip(_)) || matches!(s, Stage::Esi(e) if e.gz.is_none())
        })
    }

    /// Passes a piece of the backend body through the chain; what comes
    /// out is appended to `out`.
    pub fn push(&mut self, data: Bytes, out: &mut Vec<Bytes>) -> Result<(), String> {
        let r = self.push_through(data, out);
        self.take_parser_log();
        r
    }

    fn push_through(&mut self, data: Bytes, out: &mut Vec<Bytes>) -> Result<(), String> {
        let mut cur = vec![data];
        for s in self.stages.iter_mut() {
            let mut next = Vec::new();
            for d in cur {
                s.push(d, &mut next)?;
            }
            cur = next;
            if cur.is_empty() {
                return Ok(());
            }
        }
        out.extend(cur.into_iter().filter(|b| !b.is_empty()));
        Ok(())
    }

    /// The ESI parser's `ESI_xmlerror` records so far.
    fn take_parser_log(&mut self) {
        for s in self.stages.iter_mut() {
            if let Stage::Esi(e) = s {
                for n in e.parser.log.drain(..) {
                    let at = n.after.unwrap_or(0);
                    let at = match e.gz.as_mut() {
                        Some(g) => g.stored_offset(at),
                        None => at,
                    };
                    self.log.push((vapi::Tag::ESI_xmlerror, n.render(at)));
                }
                if let Some(g) = e.gz.as_mut() {
                    g.trim_bounds();
                }
            }
        }
    }

    /// Closes the chain (Varnish's `VFP_Close`), done or not: each
    /// (un)zip context logs its `Gzip` record. Once.
    pub fn close(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        self.take_parser_log();
        if !crate::vsl::enabled(vapi::Tag::Gzip) {
            return;
        }
        // Varnish closes its filter stack from the last filter pushed.
        for s in self.stages.iter().rev() {
            let rec = match s {
                Stage::Gunzip(g) => g.record("U F -"),
                Stage::TestGunzip(g) => g.record("u F -"),
                Stage::Gzip(_, Some(i)) => i.record("G F -"),
                Stage::Esi(e) => match e.gz_info {
                    Some(i) => i.record("G F E"),
                    None => continue,
                },
                Stage::Gzip(_, None) => continue,
            };
            self.log.push((vapi::Tag::Gzip, rec));
        }
    }

    /// Ends the body: every filter flushes what it holds (into the ones
    /// after it) and checks that its input ended properly.
    pub fn finish(&mut self, out: &mut Vec<Bytes>) -> Result<BodyAttrs, String> {
        let mut attrs = BodyAttrs::default();
        let n = self.stages.len();
        for i in 0..n {
            let mut produced = Vec::new();
            self.stages[i].finish(&mut produced, &mut attrs)?;
            for s in self.stages[i + 1..].iter_mut() {
                let mut next = Vec::new();
                for d in produced {
                    s.push(d, &mut next)?;
                }
                produced = next;
            }
            out.extend(produced.into_iter().filter(|b| !b.is_empty()));
        }
        self.close();
        Ok(attrs)
    }
}

impl Stage {
    fn push(&mut self, d: Bytes, out: &mut Vec<Bytes>) -> Result<(), String> {
        match self {
            Stage::Gunzip(g) => g.write(&d, out).map_err(gz_err),
            Stage::Gzip(g, _) => {
                let Some(g) = g.as_mut() else {
                    return Err("gzip after its end".into());
                };
                let mut o = Vec::new();
                g.write(&d, &mut o).map_err(gz_err)?;
                if !o.is_empty() {
                    out.push(Bytes::from(o));
                }
                Ok(())
            }
            Stage::TestGunzip(g) => {
                g.test(&d).map_err(gz_err)?;
                out.push(d);
                Ok(())
            }
            Stage::Esi(e) => e.push(d, out),
        }
    }

    fn finish(&mut self, out: &mut Vec<Bytes>, attrs: &mut BodyAttrs) -> Result<(), String> {
        match self {
            Stage::Gunzip(g) => {
                g.finish().map_err(gz_err)?;
                attrs.gzip = None;
                attrs.plain_len = None;
            }
            Stage::Gzip(g, made) => {
                let Some(g) = g.take() else {
                    return Err("gzip after its end".into());
                };
                let mut o = Vec::new();
                let info = g.finish(&mut o).map_err(gz_err)?;
                *made = Some(info);
                out.push(Bytes::from(o));
                attrs.gzip = Some(info);
                attrs.plain_len = Some(info.plain_len);
            }
            Stage::TestGunzip(g) => {
                g.finish().map_err(|_| "tGunzip failed".to_string())?;
                attrs.plain_len = Some(g.total_out());
            }
            Stage::Esi(e) => e.finish(out, attrs)?,
        }
        Ok(())
    }
}

impl EsiStage {
    fn push(&mut self, d: Bytes, out: &mut Vec<Bytes>) -> Result<(), String> {
        self.parser.parse(&d);
        match self.gz.as_mut() {
            None => {
                out.push(d);
                let evs = self.parser.take_events();
                plain_ops(&mut self.ops, evs);
                Ok(())
            }
            Some(g) => {
                g.pending.extend_from_slice(&d);
                let evs = self.parser.take_events();
                let mut o = Vec::new();
                g.events(evs, &mut self.ops, &mut o)?;
                if !o.is_empty() {
                    out.push(Bytes::from(o));
                }
                Ok(())
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<Bytes>, attrs: &mut BodyAttrs) -> Result<(), String> {
        self.parser.finish();
        let evs = self.parser.take_events();
        let gzip = self.gz.is_some();
        if let Some(mut g) = self.gz.take() {
            let mut o = Vec::new();
            g.events(evs, &mut self.ops, &mut o)?;
            if g.wait > 0 {
                g.z.align(&mut o).map_err(gz_err)?;
                g.emit(&mut self.ops);
            }
            let info = g.z.finish(&mut o).map_err(gz_err)?;
            self.gz_info = Some(info);
            out.push(Bytes::from(o));
            attrs.gzip = Some(info);
            attrs.plain_len = Some(info.plain_len);
        } else {
            plain_ops(&mut self.ops, evs);
        }
        attrs.esi = self.parser.esi_found.then(|| {
            Arc::new(EsiData {
                gzip,
                ops: std::mem::take(&mut self.ops),
            })
        });
        Ok(())
    }
}

/// Ops of an uncompressed ESI body: the parser's lengths as they are.
fn plain_ops(ops: &mut Vec<EsiOp>, evs: Vec<Event>) {
    for ev in evs {
        match ev {
            Event::Mark(Mark::Verbatim, n) => match ops.last_mut() {
                Some(EsiOp::Verbatim { len, .. }) => *len += n,
                _ => ops.push(EsiOp::Verbatim {
                    len: n,
                    plain: Crc::default(),
                }),
            },
            Event::Mark(Mark::Skip, n) => match ops.last_mut() {
                Some(EsiOp::Skip(l)) => *l += n,
                _ => ops.push(EsiOp::Skip(n)),
            },
            Event::Include(i) => ops.push(EsiOp::Include(i)),
        }
    }
}

impl EsiGz {
    /// The op for what was compressed since the last one.
    fn emit(&mut self, ops: &mut Vec<EsiOp>) {
        let len = self.z.out_len() - self.op_start;
        self.op_start = self.z.out_len();
        if len > 0 {
            ops.push(match self.cur {
                Mark::Verbatim => EsiOp::Verbatim {
                    len,
                    plain: self.crc,
                },
                Mark::Skip => EsiOp::Skip(len),
            });
        }
        self.wait = 0;
        self.crc = Crc::default();
        self.bounds.push((self.plain, self.op_start));
    }

    /// The stored (compressed) offset of the op that began at
    /// uncompressed offset `plain` (or the last one before it).
    fn stored_offset(&self, plain: u64) -> u64 {
        self.bounds
            .iter()
            .rev()
            .find(|b| b.0 <= plain)
            .map_or(0, |b| b.1)
    }

    /// Forgets op starts no error can refer to any more.
    fn trim_bounds(&mut self) {
        if self.bounds.len() > 1 {
            let n = self.bounds.len() - 1;
            self.bounds.drain(..n);
        }
    }

    fn events(
        &mut self,
        evs: Vec<Event>,
        ops: &mut Vec<EsiOp>,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        if self.z.out_len() == 0 {
            // The header and a full flush open the stream and are skipped
            // (so an include at the very start comes out in place).
            self.z.flush(true, out).map_err(gz_err)?;
            self.cur = Mark::Skip;
            self.emit(ops);
            self.cur = Mark::Verbatim;
        }
        for ev in evs {
            match ev {
                Event::Mark(m, n) => {
                    if m != self.cur && self.wait > 0 {
                        // Verbatim text after skipped text must not refer
                        // back into it: a full flush; skipped text after
                        // verbatim only needs the cut on a byte boundary.
                        self.z.flush(m == Mark::Verbatim, out).map_err(gz_err)?;
                        self.emit(ops);
                    }
                    self.cur = m;
                    let n = (n as usize).min(self.pending.len());
                    let piece = self.pending.split_to(n).freeze();
                    if m == Mark::Verbatim {
                        self.crc.update(&piece);
                    }
                    self.z.write(&piece, out).map_err(gz_err)?;
                    self.wait += n as u64;
                    self.plain += n as u64;
                }
                Event::Include(i) => ops.push(EsiOp::Include(i)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(h: &Headers, esi: bool, gz: bool, gunz: bool) -> String {
        default_list(&Want {
            do_esi: esi,
            do_gzip: gz,
            do_gunzip: gunz,
            has_body: true,
            gzip_support: true,
            beresp: h,
        })
    }

    #[test]
    fn defaults_as_varnish() {
        let plain: Headers = vec![];
        let gz: Headers = vec![("Content-Encoding".into(), "gzip".into())];
        assert_eq!(want(&plain, false, false, false), "");
        assert_eq!(want(&gz, false, false, false), " testgunzip");
        assert_eq!(want(&plain, false, true, false), " gzip");
        assert_eq!(want(&gz, false, false, true), " gunzip");
        assert_eq!(want(&gz, true, false, false), " gunzip esi_gzip");
        assert_eq!(want(&plain, true, true, false), " esi_gzip");
        assert_eq!(want(&plain, true, false, false), " esi");
        assert_eq!(want(&gz, true, false, true), " gunzip esi");
        assert!(parse_list("gzip bogus").is_err());
    }

    /// An esi_gzip body: a gzip stream whose verbatim ops are standalone
    /// deflate pieces.
    #[test]
    fn esi_gzip_layout() {
        let params = Params::default();
        let mut h: Headers = vec![];
        let mut v = Vfps::open(&[Filter::EsiGzip], 200, &mut h, "/", &params, None).expect("open");
        let mut body = Vec::new();
        for piece in [&b"<p>a<esi:incl"[..], b"ude src=\"/x\"/>b</p>"] {
            v.push(Bytes::copy_from_slice(piece), &mut body)
                .expect("push");
        }
        let attrs = v.finish(&mut body).expect("finish");
        let all: Vec<u8> = body.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(
            &crate::cache_gzip::gunzip(&all).expect("valid gzip")[..],
            b"<p>a<esi:include src=\"/x\"/>b</p>"
        );
        let esi = attrs.esi.expect("esi");
        let mut pos = 0usize;
        let mut text = Vec::new();
        let mut z = flate2::Decompress::new(false);
        for op in &esi.ops {
            match op {
                EsiOp::Skip(n) => pos += *n as usize,
                EsiOp::Verbatim { len, .. } => {
                    let mut o = Vec::new();
                    crate::cache_gzip::inflate_segment(
                        &mut z,
                        &[Bytes::copy_from_slice(&all[pos..pos + *len as usize])],
                        &mut o,
                    )
                    .expect("segment");
                    text.extend(o.iter().flat_map(|b| b.iter().copied()));
                    pos += *len as usize;
                }
                EsiOp::Include(_) => text.extend_from_slice(b"[I]"),
            }
        }
        assert_eq!(text, b"<p>a[I]b</p>");
        assert_eq!(hdr_get(&h, "content-encoding"), Some("gzip"));
    }
}
