//! The VSL tags of Varnish 7.1, in Varnish's order (so a tag's number is
//! the one varnishd gives it), with their flags and one-line
//! descriptions.

/// The tag is not written by Varnish (kept for the numbering).
pub const UNUSED: u8 = 1;
/// The data may hold any byte; printed with `%XX` escapes in quotes.
pub const UNSAFE: u8 = 2;
/// The data is binary; printed as hex in brackets.
pub const BINARY: u8 = 4;

macro_rules! tags {
    ($($name:ident = $n:literal, $flags:expr, $desc:literal;)*) => {
        /// A VSL record tag.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        #[allow(non_camel_case_types)]
        pub enum Tag {
            $(#[doc = $desc] $name = $n,)*
        }

        /// Every tag in order, with its name, flags and description.
        pub const TAGS: &[(Tag, &str, u8, &str)] = &[
            $((Tag::$name, stringify!($name), $flags, $desc),)*
        ];
    };
}

tags! {
    Debug = 1, UNSAFE, "Debug messages";
    Error = 2, 0, "Error messages";
    CLI = 3, 0, "CLI communication";
    SessOpen = 4, 0, "Client connection opened";
    SessClose = 5, 0, "Client connection closed";
    BackendOpen = 6, 0, "Backend connection opened";
    BackendReuse = 7, 0, "Backend connection put up for reuse";
    BackendClose = 8, 0, "Backend connection closed";
    HttpGarbage = 9, UNSAFE, "Unparseable HTTP request";
    Proxy = 10, 0, "PROXY protocol information";
    ProxyGarbage = 11, 0, "Unparseable PROXY request";
    Backend = 12, 0, "Backend selected";
    Length = 13, 0, "Size of object body";
    FetchError = 14, 0, "Error while fetching object";
    ReqMethod = 15, 0, "Client request method";
    ReqURL = 16, 0, "Client request URL";
    ReqProtocol = 17, 0, "Client request protocol";
    ReqStatus = 18, UNUSED, "Client request status";
    ReqReason = 19, UNUSED, "Client request reason";
    ReqHeader = 20, 0, "Client request header";
    ReqUnset = 21, 0, "Client request unset header";
    ReqLost = 22, UNUSED, "Client request lost header";
    RespMethod = 23, UNUSED, "Client response method";
    RespURL = 24, UNUSED, "Client response URL";
    RespProtocol = 25, 0, "Client response protocol";
    RespStatus = 26, 0, "Client response status";
    RespReason = 27, 0, "Client response reason";
    RespHeader = 28, 0, "Client response header";
    RespUnset = 29, 0, "Client response unset header";
    RespLost = 30, UNUSED, "Client response lost header";
    BereqMethod = 31, 0, "Backend request method";
    BereqURL = 32, 0, "Backend request URL";
    BereqProtocol = 33, 0, "Backend request protocol";
    BereqStatus = 34, UNUSED, "Backend request status";
    BereqReason = 35, UNUSED, "Backend request reason";
    BereqHeader = 36, 0, "Backend request header";
    BereqUnset = 37, 0, "Backend request unset header";
    BereqLost = 38, UNUSED, "Backend request lost header";
    BerespMethod = 39, UNUSED, "Backend response method";
    BerespURL = 40, UNUSED, "Backend response URL";
    BerespProtocol = 41, 0, "Backend response protocol";
    BerespStatus = 42, 0, "Backend response status";
    BerespReason = 43, 0, "Backend response reason";
    BerespHeader = 44, 0, "Backend response header";
    BerespUnset = 45, 0, "Backend response unset header";
    BerespLost = 46, UNUSED, "Backend response lost header";
    ObjMethod = 47, UNUSED, "Object method";
    ObjURL = 48, UNUSED, "Object URL";
    ObjProtocol = 49, 0, "Object protocol";
    ObjStatus = 50, 0, "Object status";
    ObjReason = 51, 0, "Object reason";
    ObjHeader = 52, 0, "Object header";
    ObjUnset = 53, 0, "Object unset header";
    ObjLost = 54, UNUSED, "Object lost header";
    BogoHeader = 55, 0, "Bogus HTTP received";
    LostHeader = 56, 0, "Failed attempt to set HTTP header";
    TTL = 57, 0, "TTL set on object";
    Fetch_Body = 58, 0, "Body fetched from backend";
    VCL_acl = 59, 0, "VCL ACL check results";
    VCL_call = 60, 0, "VCL method called";
    VCL_trace = 61, 0, "VCL trace data";
    VCL_return = 62, 0, "VCL method return value";
    ReqStart = 63, 0, "Client request start";
    Hit = 64, 0, "Hit object in cache";
    HitPass = 65, 0, "Hit for pass object in cache.";
    ExpBan = 66, 0, "Object evicted due to ban";
    ExpKill = 67, 0, "Object expiry event";
    WorkThread = 68, 0, "Logs thread start/stop events";
    ESI_xmlerror = 69, 0, "ESI parser error or warning message";
    Hash = 70, UNSAFE, "Value added to hash";
    Backend_health = 71, 0, "Backend health check";
    VCL_Log = 72, 0, "Log statement from VCL";
    VCL_Error = 73, 0, "VCL execution error message";
    Gzip = 74, 0, "G(un)zip performed on object";
    Link = 75, 0, "Links to a child VXID";
    Begin = 76, 0, "Marks the start of a VXID";
    End = 77, 0, "Marks the end of a VXID";
    VSL = 78, 0, "VSL API warnings and error message";
    Storage = 79, 0, "Where object is stored";
    Timestamp = 80, 0, "Timing information";
    ReqAcct = 81, 0, "Request handling byte counts";
    PipeAcct = 82, 0, "Pipe byte counts";
    BereqAcct = 83, 0, "Backend request accounting";
    VfpAcct = 84, 0, "Fetch filter accounting";
    Witness = 85, 0, "Lock order witness records";
    BackendStart = 86, 0, "Backend request start";
    H2RxHdr = 87, BINARY, "Received HTTP2 frame header";
    H2RxBody = 88, BINARY, "Received HTTP2 frame body";
    H2TxHdr = 89, BINARY, "Transmitted HTTP2 frame header";
    H2TxBody = 90, BINARY, "Transmitted HTTP2 frame body";
    HitMiss = 91, 0, "Hit for miss object in cache.";
    Filters = 92, 0, "Body filters";
    SessError = 93, 0, "Client connection accept failed";
    VCL_use = 94, 0, "VCL in use";
    Notice = 95, 0, "Informational messages about request handling";
    VdpAcct = 96, 0, "Deliver filter accounting";
}

impl Tag {
    /// The tag with number `n`.
    pub fn from_u8(n: u8) -> Option<Tag> {
        TAGS.get(usize::from(n).checked_sub(1)?).map(|t| t.0)
    }

    /// The tag's name (`ReqURL`).
    pub fn name(self) -> &'static str {
        TAGS[self as usize - 1].1
    }

    /// The tag's flags ([`UNUSED`], [`UNSAFE`], [`BINARY`]).
    pub fn flags(self) -> u8 {
        TAGS[self as usize - 1].2
    }

    /// The tag named `name`, ignoring case; a unique prefix names its
    /// tag too (`ReqUR` is `ReqURL`), as in varnishlog.
    pub fn lookup(name: &str) -> Result<Tag, TagError> {
        let mut found = None;
        for t in TAGS {
            if t.1.len() >= name.len() && t.1[..name.len()].eq_ignore_ascii_case(name) {
                if t.1.len() == name.len() {
                    return Ok(t.0);
                }
                found = match found {
                    None => Some(Ok(t.0)),
                    Some(_) => Some(Err(TagError::Ambiguous(name.to_string()))),
                };
            }
        }
        if name.is_empty() {
            return Err(TagError::NoMatch(String::new()));
        }
        found.unwrap_or_else(|| Err(TagError::NoMatch(name.to_string())))
    }

    /// Every tag whose name matches `glob` (ignoring case): a name (or
    /// unique prefix), or a name with one `*` for any text (`Req*`,
    /// `*Header`, `Be*Header`), as varnishlog's `-i`.
    pub fn glob(glob: &str) -> Result<Vec<Tag>, TagError> {
        let Some((pre, post)) = glob.split_once('*') else {
            return Tag::lookup(glob).map(|t| vec![t]);
        };
        if post.contains('*') {
            return Err(TagError::Syntax(glob.to_string()));
        }
        let out: Vec<Tag> = TAGS
            .iter()
            .filter(|t| {
                let n = t.1;
                n.len() >= pre.len() + post.len()
                    && n[..pre.len()].eq_ignore_ascii_case(pre)
                    && n[n.len() - post.len()..].eq_ignore_ascii_case(post)
            })
            .map(|t| t.0)
            .collect();
        if out.is_empty() {
            return Err(TagError::NoMatch(glob.to_string()));
        }
        Ok(out)
    }

    /// A comma-separated list of globs (`ReqURL,Resp*`).
    pub fn list(list: &str) -> Result<Vec<Tag>, TagError> {
        let mut out = Vec::new();
        for g in list.split(',').filter(|g| !g.is_empty()) {
            out.extend(Tag::glob(g)?);
        }
        if out.is_empty() {
            return Err(TagError::NoMatch(list.to_string()));
        }
        Ok(out)
    }
}

/// Why a tag name or glob names no tag.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// No tag has that name.
    #[error("\"{0}\" matches zero tags")]
    NoMatch(String),
    /// A prefix of more than one tag's name.
    #[error("\"{0}\" is ambiguous")]
    Ambiguous(String),
    /// More than one `*`.
    #[error("Syntax error in \"{0}\"")]
    Syntax(String),
}

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_and_names() {
        assert_eq!(Tag::Debug as u8, 1);
        assert_eq!(Tag::Begin as u8, 76);
        assert_eq!(Tag::VdpAcct as u8, 96);
        assert_eq!(Tag::from_u8(16), Some(Tag::ReqURL));
        assert_eq!(Tag::from_u8(0), None);
        assert_eq!(Tag::from_u8(200), None);
        assert_eq!(Tag::lookup("requrl"), Ok(Tag::ReqURL));
        assert_eq!(Tag::lookup("ReqUR"), Ok(Tag::ReqURL));
        assert!(matches!(Tag::lookup("ReqU"), Err(TagError::Ambiguous(_))));
        assert!(matches!(Tag::lookup("Req"), Err(TagError::Ambiguous(_))));
        assert!(matches!(Tag::lookup("Nope"), Err(TagError::NoMatch(_))));
        assert_eq!(Tag::ReqURL.name(), "ReqURL");
        assert_eq!(Tag::Hash.flags(), UNSAFE);
    }

    #[test]
    fn globs() {
        let req = Tag::glob("Req*").unwrap();
        assert!(req.contains(&Tag::ReqURL) && req.contains(&Tag::ReqAcct));
        assert!(!req.contains(&Tag::RespHeader));
        assert_eq!(Tag::glob("*Header").unwrap().len(), 7);
        assert_eq!(
            Tag::glob("Be*Header").unwrap(),
            vec![Tag::BereqHeader, Tag::BerespHeader]
        );
        assert!(Tag::glob("Nope*").is_err());
        assert!(matches!(Tag::glob("a*b*"), Err(TagError::Syntax(_))));
        assert_eq!(
            Tag::list("ReqURL,,Begin").unwrap(),
            vec![Tag::ReqURL, Tag::Begin]
        );
    }
}
