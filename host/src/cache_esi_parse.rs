//! The ESI parser (Varnish's `cache_esi_parse`, "VEP"): reads a body as it
//! arrives from the backend and tells, byte range by byte range, what is
//! delivered as is (verbatim), what is left out (skip: ESI markup,
//! `<esi:remove>` content) and where includes go.
//!
//! It follows Varnish 7.1's rules, errors and features: a body whose first
//! non-blank byte is not `<` is not processed (unless
//! `feature=+esi_disable_xml_check`); `<!--esi … -->` keeps its content;
//! `<esi:remove>`, `<esi:comment/>` and `<esi:include src=… onerror=…/>`
//! are understood and anything else `esi:` is an error; other elements are
//! skipped whole or, with `+esi_ignore_other_elements`, not looked into;
//! `https://` includes are dropped unless `+esi_ignore_https`. Broken markup
//! never stops the parse: it is counted as an error or warning, logged, and
//! the bytes are classified as Varnish does.

/// How a byte range is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Verbatim,
    Skip,
}

/// An `<esi:include>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    /// The URL to request, resolved against the fetch's URL and with XML
    /// entities decoded.
    pub url: String,
    /// The `Host` of an absolute `src`.
    pub host: Option<String>,
    /// No `onerror="continue"`: with `feature=+esi_include_onerror` a
    /// failed include aborts the whole delivery.
    pub abort: bool,
}

/// What the parser reports, in body order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The next `n` bytes of the body are delivered or skipped.
    Mark(Mark, u64),
    Include(Include),
}

/// The `feature` bits the parser obeys.
#[derive(Debug, Clone, Copy, Default)]
pub struct Features {
    pub disable_xml_check: bool,
    pub ignore_other_elements: bool,
    pub ignore_https: bool,
    pub remove_bom: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    StartTag,
    Esi,
    IncludeAttr,
    Bom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttrKind {
    Src,
    OnError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Doer {
    Include,
    Remove,
    Comment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Start,
    Bom,
    TestXml,
    NotXml,
    NextTag,
    NotMyTag,
    StartTag,
    Comment,
    CommentEsi,
    Cdata,
    EsiEndTag,
    EsiTag,
    EsiInclude,
    EsiRemove,
    EsiComment,
    EsiBogon,
    InTag,
    TagError,
    Attr,
    SkipAttr,
    AttrGetVal(AttrKind),
    AttrDelim,
    AttrVal,
    Until,
    Match(Table),
}

fn table(t: Table) -> (&'static [(&'static [u8], St)], St) {
    match t {
        Table::StartTag => (
            &[
                (b"!--esi", St::CommentEsi),
                (b"!---->", St::NextTag),
                (b"!--", St::Comment),
                (b"/esi:", St::EsiEndTag),
                (b"esi:", St::EsiTag),
                (b"![CDATA[", St::Cdata),
            ],
            St::NotMyTag,
        ),
        Table::Esi => (
            &[
                (b"include", St::EsiInclude),
                (b"remove", St::EsiRemove),
                (b"comment", St::EsiComment),
            ],
            St::EsiBogon,
        ),
        Table::IncludeAttr => (
            &[
                (b"src=", St::AttrGetVal(AttrKind::Src)),
                (b"onerror=", St::AttrGetVal(AttrKind::OnError)),
            ],
            St::SkipAttr,
        ),
        Table::Bom => (&[(b"\xeb\xbb\xbf", St::Start)], St::Bom),
    }
}

/// Line white space (Varnish's `vct_islws`).
fn lws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Space or tab (`vct_issp`).
fn sp(c: u8) -> bool {
    matches!(c, b' ' | b'\t')
}

fn xml_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':' || c >= 0x80
}

fn xml_name(c: u8) -> bool {
    xml_name_start(c) || c.is_ascii_digit() || c == b'-' || c == b'.'
}

/// One `ESI_xmlerror` record. Errors and warnings say where the run of
/// alike bytes they are in began (Varnish's `o_last`): an offset into
/// the stored body, which the compressing stage translates when the
/// body is stored gzipped.
pub struct XmlNote {
    /// That offset in the parsed (plain) body, if the text has one.
    pub after: Option<u64>,
    /// The record, with `{}` where the offset goes.
    pub text: String,
}

impl XmlNote {
    /// The record with the offset `at` put in.
    pub fn render(&self, at: u64) -> String {
        match self.after {
            Some(_) => self.text.replacen("{}", &at.to_string(), 1),
            None => self.text.clone(),
        }
    }
}

/// The streaming ESI parser of one body.
pub struct Parser {
    url: String,
    f: Features,
    st: St,
    /// Bytes held back because a match needs more input.
    carry: Vec<u8>,
    /// Absolute offset of the first byte of the current buffer.
    base: u64,
    /// Everything before this absolute offset is classified.
    marked: u64,
    last_mark: Mark,
    /// Where the run of bytes being classified alike began (Varnish's
    /// `o_last`, the offset its error records give), and its length.
    run_start: u64,
    run_len: u64,
    events: Vec<Event>,
    /// Some ESI element or comment was seen: the body is processed.
    pub esi_found: bool,
    /// `esi_errors` and `esi_warnings`, as Varnish counts them.
    pub errors: u32,
    pub warnings: u32,
    /// `ESI_xmlerror` records for the fetch's log, in order (taken by
    /// whoever logs them).
    pub log: Vec<XmlNote>,
    endtag: bool,
    emptytag: bool,
    canattr: bool,
    remove: bool,
    in_esi_tag: bool,
    /// Progress through "-->" ending a `<!--esi` comment.
    esicmt: Option<usize>,
    until: &'static [u8],
    until_i: usize,
    until_next: St,
    attr: Option<Table>,
    attr_buf: Option<(AttrKind, Vec<u8>)>,
    attr_delim: u8,
    doer: Option<Doer>,
    src: Option<Vec<u8>>,
    cont: bool,
}

impl Parser {
    /// A parser for a body fetched for `url` (relative includes resolve
    /// against it).
    pub fn new(url: &str, f: Features) -> Parser {
        Parser {
            url: url.to_string(),
            f,
            st: St::Start,
            carry: Vec::new(),
            base: 0,
            marked: 0,
            // Varnish starts in skip mode (its gzip header is skipped).
            last_mark: Mark::Skip,
            run_start: 0,
            run_len: 0,
            events: Vec::new(),
            esi_found: false,
            errors: 0,
            warnings: 0,
            log: Vec::new(),
            endtag: false,
            emptytag: false,
            canattr: false,
            remove: false,
            in_esi_tag: false,
            esicmt: None,
            until: b"",
            until_i: 0,
            until_next: St::NextTag,
            attr: None,
            attr_buf: None,
            attr_delim: 0,
            doer: None,
            src: None,
            cont: false,
        }
    }

    /// The events so far (taken).
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// An error, logged with where the current run of alike bytes
    /// began, as Varnish does (`_at`, the parser's position, is kept for
    /// debugging).
    fn error(&mut self, _at: u64, msg: &str) {
        self.errors += 1;
        crate::vsc::MAIN.esi_errors.inc();
        self.log.push(XmlNote {
            after: Some(self.run_start),
            text: format!("ERR after {{}} {msg}"),
        });
    }

    fn warn(&mut self, _at: u64, msg: &str) {
        self.warnings += 1;
        crate::vsc::MAIN.esi_warnings.inc();
        self.log.push(XmlNote {
            after: Some(self.run_start),
            text: format!("WARN after {{}} {msg}"),
        });
    }

    /// Classifies everything up to absolute offset `pos` as `m`.
    fn mark(&mut self, m: Mark, pos: u64) {
        if m != self.last_mark && self.run_len > 0 {
            self.run_start += self.run_len;
            self.run_len = 0;
        }
        self.run_len += pos.saturating_sub(self.marked);
        if pos > self.marked {
            let n = pos - self.marked;
            match self.events.last_mut() {
                Some(Event::Mark(k, l)) if *k == m => *l += n,
                _ => self.events.push(Event::Mark(m, n)),
            }
            self.marked = pos;
        }
        self.last_mark = m;
    }

    /// Feeds the next piece of the body.
    pub fn parse(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        if self.carry.is_empty() {
            self.run(chunk);
        } else {
            let mut buf = std::mem::take(&mut self.carry);
            buf.extend_from_slice(chunk);
            self.run(&buf);
        }
    }

    /// Ends the body.
    pub fn finish(&mut self) {
        let end = self.base + self.carry.len() as u64;
        if !matches!(
            self.st,
            St::Start | St::Bom | St::TestXml | St::NotXml | St::NextTag
        ) || !self.carry.is_empty()
        {
            let at = self.marked;
            self.error(at, "VEP ended inside a tag");
        }
        let m = if self.in_esi_tag || self.remove {
            Mark::Skip
        } else {
            self.last_mark
        };
        self.mark(m, end);
        self.carry.clear();
    }

    fn run(&mut self, b: &[u8]) {
        let e = b.len();
        let mut p = 0usize;
        let base = self.base;
        let at = |p: usize| base + p as u64;
        while p < e {
            match self.st {
                St::Start => {
                    if self.f.remove_bom && b[p] == 0xeb {
                        self.st = St::Match(Table::Bom);
                    } else {
                        self.st = St::Bom;
                    }
                }
                St::Bom => {
                    self.mark(Mark::Skip, at(p));
                    self.st = if self.f.disable_xml_check {
                        St::NextTag
                    } else {
                        St::TestXml
                    };
                }
                St::TestXml => {
                    while p < e && lws(b[p]) {
                        p += 1;
                    }
                    self.mark(Mark::Verbatim, at(p));
                    if p < e {
                        if b[p] == b'<' {
                            p += 1;
                            self.st = St::StartTag;
                        } else {
                            let text = if b[p] == 0xeb {
                                "No ESI processing, first char not '<' but BOM. (See feature esi_remove_bom)"
                            } else {
                                "No ESI processing, first char not '<'. (See feature esi_disable_xml_check)"
                            };
                            self.log.push(XmlNote {
                                after: None,
                                text: text.into(),
                            });
                            self.st = St::NotXml;
                        }
                    }
                }
                St::NotXml => {
                    p = e;
                    self.mark(Mark::Verbatim, at(p));
                }
                St::NotMyTag => {
                    if self.f.ignore_other_elements {
                        p += 1;
                        self.st = St::NextTag;
                    } else {
                        while p < e {
                            let c = b[p];
                            p += 1;
                            if c == b'>' {
                                self.st = St::NextTag;
                                break;
                            }
                        }
                    }
                    if p == e && !self.remove {
                        self.mark(Mark::Verbatim, at(p));
                    }
                }
                St::NextTag => {
                    self.emptytag = false;
                    self.attr = None;
                    self.doer = None;
                    while p < e && b[p] != b'<' {
                        let Some(i) = self.esicmt else {
                            p += 1;
                            continue;
                        };
                        if b[p] != b"-->"[i] {
                            p += 1;
                            self.esicmt = Some(0);
                            continue;
                        }
                        if !self.remove && i == 0 {
                            self.mark(Mark::Verbatim, at(p));
                        }
                        p += 1;
                        if i + 1 == 3 {
                            self.esi_found = true;
                            self.esicmt = None;
                            // The end of the comment is left out, what
                            // was before it is not.
                            self.mark(Mark::Skip, at(p));
                        } else {
                            self.esicmt = Some(i + 1);
                        }
                    }
                    if p < e {
                        if !self.remove {
                            self.mark(Mark::Verbatim, at(p));
                        }
                        p += 1;
                        self.st = St::StartTag;
                    } else if matches!(self.esicmt, None | Some(0)) && !self.remove {
                        self.mark(Mark::Verbatim, at(p));
                    }
                }
                St::StartTag => {
                    self.endtag = false;
                    self.st = St::Match(Table::StartTag);
                }
                St::Comment => {
                    self.esicmt = None;
                    self.until = b"-->";
                    self.until_i = 0;
                    self.until_next = St::NextTag;
                    self.st = St::Until;
                }
                St::CommentEsi => {
                    if self.remove {
                        self.error(at(p), "ESI 1.0 Nested <!--esi element in <esi:remove>");
                    }
                    self.esicmt = Some(0);
                    self.st = St::NextTag;
                    self.mark(Mark::Skip, at(p));
                }
                St::Cdata => {
                    self.until = b"]]>";
                    self.until_i = 0;
                    self.until_next = St::NextTag;
                    self.st = St::Until;
                }
                St::EsiEndTag => {
                    self.endtag = true;
                    self.st = St::EsiTag;
                }
                St::EsiTag => {
                    self.in_esi_tag = true;
                    self.esi_found = true;
                    self.mark(Mark::Skip, at(p));
                    self.st = St::Match(Table::Esi);
                }
                St::EsiInclude => {
                    if self.remove {
                        self.error(
                            at(p),
                            "ESI 1.0 <esi:include> element nested in <esi:remove>",
                        );
                        self.st = St::TagError;
                    } else if self.endtag {
                        self.error(at(p), "ESI 1.0 </esi:include> illegal end-tag");
                        self.st = St::TagError;
                    } else {
                        self.doer = Some(Doer::Include);
                        self.attr = Some(Table::IncludeAttr);
                        self.st = St::InTag;
                    }
                }
                St::EsiRemove => {
                    self.doer = Some(Doer::Remove);
                    self.st = St::InTag;
                }
                St::EsiComment => {
                    if self.remove {
                        self.error(
                            at(p),
                            "ESI 1.0 <esi:comment> element nested in <esi:remove>",
                        );
                        self.st = St::TagError;
                    } else if self.endtag {
                        self.error(at(p), "ESI 1.0 </esi:comment> illegal end-tag");
                        self.st = St::TagError;
                    } else {
                        self.doer = Some(Doer::Comment);
                        self.st = St::InTag;
                    }
                }
                St::EsiBogon => {
                    self.error(at(p), "ESI 1.0 <esi:bogus> element");
                    self.st = St::TagError;
                }
                St::InTag => {
                    while p < e && lws(b[p]) && !self.emptytag {
                        p += 1;
                        self.canattr = true;
                    }
                    if p < e && b[p] == b'/' && !self.emptytag {
                        p += 1;
                        self.emptytag = true;
                        self.canattr = false;
                    }
                    if p < e && b[p] == b'>' {
                        p += 1;
                        self.mark(Mark::Skip, at(p));
                        self.do_tag(at(p));
                        self.in_esi_tag = false;
                        self.st = St::NextTag;
                    } else if p < e && self.emptytag {
                        self.error(at(p), "XML 1.0 '>' does not follow '/' in tag");
                        self.st = St::TagError;
                    } else if p < e && self.canattr && xml_name_start(b[p]) {
                        self.st = St::Attr;
                    } else if p < e {
                        self.error(at(p), "XML 1.0 Illegal attribute start char");
                        self.st = St::TagError;
                    }
                }
                St::TagError => {
                    while p < e && b[p] != b'>' {
                        p += 1;
                    }
                    if p < e {
                        p += 1;
                        self.mark(Mark::Skip, at(p));
                        self.in_esi_tag = false;
                        self.st = St::NextTag;
                        self.attr_buf = None;
                    }
                }
                St::Attr => match self.attr {
                    None => {
                        p += 1;
                        self.st = St::SkipAttr;
                    }
                    Some(t) => self.st = St::Match(t),
                },
                St::SkipAttr => {
                    while p < e && xml_name(b[p]) {
                        p += 1;
                    }
                    if p < e {
                        let c = b[p];
                        if c == b'=' {
                            p += 1;
                            self.st = St::AttrDelim;
                        } else if c == b'>' || c == b'/' || sp(c) {
                            self.st = St::InTag;
                        } else {
                            self.error(at(p), "XML 1.0 Illegal attr char");
                            self.st = St::TagError;
                        }
                    }
                }
                St::AttrGetVal(k) => {
                    self.attr_buf = Some((k, Vec::new()));
                    self.st = St::AttrDelim;
                }
                St::AttrDelim => {
                    let c = b[p];
                    if c == b'"' || c == b'\'' {
                        self.attr_delim = c;
                        p += 1;
                        self.st = St::AttrVal;
                    } else if !sp(c) {
                        self.attr_delim = b' ';
                        self.st = St::AttrVal;
                    } else {
                        self.error(at(p), "XML 1.0 Illegal attribute delimiter");
                        self.st = St::TagError;
                    }
                }
                St::AttrVal => {
                    let d = self.attr_delim;
                    let start = p;
                    while p < e && b[p] != b'>' && b[p] != d && (d != b' ' || !sp(b[p])) {
                        p += 1;
                    }
                    if let Some((_, v)) = self.attr_buf.as_mut() {
                        v.extend_from_slice(&b[start..p]);
                    }
                    if p < e && b[p] == b'>' {
                        self.error(at(p), "XML 1.0 Missing end attribute delimiter");
                        self.st = St::TagError;
                        self.attr_delim = 0;
                        self.attr_buf = None;
                    } else if p < e {
                        self.attr_delim = 0;
                        p += 1;
                        self.st = St::InTag;
                        if let Some((k, v)) = self.attr_buf.take() {
                            self.do_attr(at(p), k, v);
                        }
                    }
                }
                St::Until => {
                    while p < e {
                        let c = b[p];
                        p += 1;
                        if c != self.until[self.until_i] {
                            self.until_i = 0;
                        } else {
                            self.until_i += 1;
                            if self.until_i == self.until.len() {
                                self.st = self.until_next;
                                break;
                            }
                        }
                    }
                    if p == e && !self.remove {
                        self.mark(Mark::Verbatim, at(p));
                    }
                }
                St::Match(t) => {
                    let (entries, default) = table(t);
                    let rest = &b[p..];
                    let mut hit = None;
                    let mut more = false;
                    for (m, next) in entries {
                        let n = m.len().min(rest.len());
                        if rest[..n] != m[..n] {
                            continue;
                        }
                        if n == m.len() {
                            hit = Some((m.len(), *next));
                        } else {
                            more = true;
                        }
                        break;
                    }
                    if more {
                        // Keep the rest for the next piece of the body.
                        self.carry = rest.to_vec();
                        self.base = at(p);
                        self.chunk_end();
                        return;
                    }
                    match hit {
                        Some((n, next)) => {
                            p += n;
                            self.st = next;
                        }
                        None => self.st = default,
                    }
                }
            }
        }
        self.base = at(e);
        self.chunk_end();
    }

    /// What Varnish marks when a piece of input is used up.
    fn chunk_end(&mut self) {
        let end = self.base;
        if self.in_esi_tag || self.remove {
            self.mark(Mark::Skip, end);
        }
    }

    fn do_attr(&mut self, at: u64, k: AttrKind, v: Vec<u8>) {
        match k {
            AttrKind::Src => {
                if self.src.is_some() {
                    self.error(at, "ESI 1.0 <esi:include> has multiple src= attributes");
                    self.st = St::TagError;
                    self.src = None;
                } else if v.iter().any(|c| lws(*c)) {
                    self.error(at, "ESI 1.0 <esi:include> has whitespace in src= attribute");
                    self.st = St::TagError;
                } else {
                    self.src = Some(v);
                }
            }
            AttrKind::OnError => self.cont = v == b"continue",
        }
    }

    fn do_tag(&mut self, at: u64) {
        match self.doer {
            Some(Doer::Comment) if !self.emptytag => {
                self.error(at, "ESI 1.0 <esi:comment> needs final '/'");
            }
            Some(Doer::Comment) => {}
            Some(Doer::Remove) => {
                if self.emptytag {
                    self.error(at, "ESI 1.0 <esi:remove/> not legal");
                } else if self.remove && !self.endtag {
                    self.error(at, "ESI 1.0 <esi:remove> already open");
                } else if !self.remove && self.endtag {
                    self.error(at, "ESI 1.0 <esi:remove> not open");
                } else {
                    self.remove = !self.endtag;
                }
            }
            Some(Doer::Include) => self.do_include(at),
            None => {}
        }
    }

    fn do_include(&mut self, at: u64) {
        if !self.emptytag {
            self.warn(at, "ESI 1.0 <esi:include> lacks final '/'");
        }
        let Some(src) = self.src.take() else {
            self.error(at, "ESI 1.0 <esi:include> lacks src attr");
            return;
        };
        let abort = !std::mem::take(&mut self.cont);
        let src = String::from_utf8_lossy(&src).into_owned();
        let (path, host) = if let Some(rest) = src.strip_prefix("http://").filter(|_| src.len() > 7)
        {
            match rest.find('/') {
                Some(i) => (rest[i..].to_string(), Some(rest[..i].to_string())),
                None => {
                    self.error(at, "ESI 1.0 <esi:include> invalid src= URL");
                    return;
                }
            }
        } else if let Some(rest) = src.strip_prefix("https://").filter(|_| src.len() > 8) {
            if !self.f.ignore_https {
                self.warn(at, "ESI 1.0 <esi:include> with https:// ignored");
                return;
            }
            self.warn(at, "ESI 1.0 <esi:include> https:// treated as http://");
            match rest.find('/') {
                Some(i) => (rest[i..].to_string(), Some(rest[..i].to_string())),
                None => {
                    self.error(at, "ESI 1.0 <esi:include> invalid src= URL");
                    return;
                }
            }
        } else if src.starts_with('/') {
            (src, None)
        } else {
            let base = self.url.split('?').next().unwrap_or("");
            let dir = match base.rfind('/') {
                Some(i) => &base[..i],
                None => base,
            };
            (format!("{dir}/{src}"), None)
        };
        self.events.push(Event::Include(Include {
            url: decode_entities(&path),
            host,
            abort,
        }));
    }
}

/// XML's five entities, as Varnish decodes them in `src`.
fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    'outer: while let Some(c) = rest.chars().next() {
        if c == '&' {
            for (ent, ch) in [
                ("&apos;", '\''),
                ("&quot;", '"'),
                ("&lt;", '<'),
                ("&gt;", '>'),
                ("&amp;", '&'),
            ] {
                if let Some(r) = rest.strip_prefix(ent) {
                    out.push(ch);
                    rest = r;
                    continue 'outer;
                }
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The delivered text and includes of `body` parsed in pieces of
    /// `step` bytes.
    fn run(body: &[u8], step: usize, f: Features) -> (String, Parser) {
        let mut p = Parser::new("/a/b?c", f);
        for c in body.chunks(step) {
            p.parse(c);
        }
        p.finish();
        let mut out = String::new();
        let mut pos = 0usize;
        for ev in p.take_events() {
            match ev {
                Event::Mark(m, n) => {
                    let n = n as usize;
                    if m == Mark::Verbatim {
                        out.push_str(&String::from_utf8_lossy(&body[pos..pos + n]));
                    }
                    pos += n;
                }
                Event::Include(i) => out.push_str(&format!("[{}|{:?}|{}]", i.url, i.host, i.abort)),
            }
        }
        assert_eq!(pos, body.len(), "every byte classified");
        (out, p)
    }

    #[test]
    fn elements() {
        let b = b"<a><esi:include src=\"/x\"/>b<esi:remove>gone</esi:remove>c<!--esi <p/>-->d<esi:comment text=\"x\"/>e</a>";
        for step in [1, 2, 3, 7, 1000] {
            let (out, p) = run(b, step, Features::default());
            assert_eq!(out, "<a>[/x|None|true]bc <p/>de</a>", "step {step}");
            assert!(p.esi_found);
            assert_eq!(p.errors, 0);
        }
    }

    #[test]
    fn not_xml_unless_disabled() {
        let (out, p) = run(b"x<esi:include src=\"/x\"/>", 4, Features::default());
        assert_eq!(out, "x<esi:include src=\"/x\"/>");
        assert!(!p.esi_found);
        let f = Features {
            disable_xml_check: true,
            ..Features::default()
        };
        let (out, _) = run(b"x<esi:include src=\"/x\"/>", 4, f);
        assert_eq!(out, "x[/x|None|true]");
    }

    #[test]
    fn sources_and_errors() {
        let (out, _) = run(
            b"<esi:include src=\"y?q=1&amp;r\" onerror=\"continue\"/><esi:include src=\"http://h/p\"/>",
            5,
            Features::default(),
        );
        assert_eq!(out, "[/a/y?q=1&r|None|false][/p|Some(\"h\")|true]");
        // https is dropped, unless allowed.
        let (out, p) = run(
            b"<esi:include src=\"https://h/p\"/>",
            3,
            Features::default(),
        );
        assert_eq!(out, "");
        assert_eq!(p.warnings, 1);
        // Bogus elements and unclosed tags are errors, not crashes.
        let (out, p) = run(b"<p><esi:bogus/>x<esi:include src=", 2, Features::default());
        assert_eq!(out, "<p>x");
        assert_eq!(p.errors, 2);
        // CDATA hides markup.
        let (out, _) = run(
            b"<esi:remove><![CDATA[</esi:remove>]]>u</esi:remove>ok",
            3,
            Features::default(),
        );
        assert_eq!(out, "ok");
    }
}
