//! `${…}` macros: the table a test runner fills in as servers, clients and
//! varnish instances start, and varnishtest's expansion rules.
//!
//! Expansion rules (varnishtest 7.1 `macro_expand`):
//!
//! * Text is scanned for `${`; the macro ends at the **first** `}` after it
//!   (no nesting). A `${` with no `}` after it is left as is.
//! * The inside is split into arguments like a CLI line with commas as extra
//!   separators ([`split_args`] with `commas = true`): `${string,repeat,3,ab}`
//!   has the arguments `string`, `repeat`, `3`, `ab`. The first argument is
//!   the macro name.
//! * A plain macro takes no arguments. The function macros are `date`
//!   (the current time as an HTTP date) and `string,repeat,N,TEXT`.
//! * An unknown macro is an error, unless `feature ignore_unknown_macro` is
//!   in force, in which case `${…}` stays in the text unchanged.
//! * Expanded text is not scanned again.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::VtcError;
use crate::token::{backslash, is_space};

/// The macro table.
///
/// Names are flat strings; instance macros are `<instance>_<name>`
/// (`s1_addr`), which [`Macros::define_instance`] builds.
#[derive(Debug, Clone, Default)]
pub struct Macros {
    values: BTreeMap<String, String>,
    ignore_unknown: bool,
}

impl Macros {
    /// An empty table (the function macros `date` and `string` always
    /// exist).
    pub fn new() -> Macros {
        Macros::default()
    }

    /// Defines or replaces a plain macro.
    pub fn define(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values.insert(name.into(), value.into());
    }

    /// Defines `<instance>_<name>`, the form varnishtest uses for
    /// per-instance macros such as `s1_port` or `v1_name`.
    pub fn define_instance(&mut self, instance: &str, name: &str, value: impl Into<String>) {
        self.define(format!("{instance}_{name}"), value);
    }

    /// Removes a macro (varnishtest undefines `sN_*` when a server goes).
    pub fn undefine(&mut self, name: &str) {
        self.values.remove(name);
    }

    /// The value of a plain macro.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// All plain macros, sorted by name (for logging, as varnishtest logs
    /// its `extmacro def` lines).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Turns `feature ignore_unknown_macro` on or off.
    pub fn set_ignore_unknown(&mut self, on: bool) {
        self.ignore_unknown = on;
    }

    /// Whether unknown macros are left in place instead of failing.
    pub fn ignore_unknown(&self) -> bool {
        self.ignore_unknown
    }

    /// Expands every `${…}` in `text`. `line` is only used in errors.
    pub fn expand(&self, text: &[u8], line: u32) -> Result<Vec<u8>, VtcError> {
        let mut out = Vec::with_capacity(text.len());
        let mut rest = text;
        loop {
            let Some(p) = find(rest, b"${") else {
                out.extend_from_slice(rest);
                break;
            };
            let Some(q) = rest[p..].iter().position(|&c| c == b'}').map(|q| p + q) else {
                out.extend_from_slice(rest);
                break;
            };
            out.extend_from_slice(&rest[..p]);
            let inner = &rest[p + 2..q];
            match self.lookup(inner, line)? {
                Some(v) => out.extend_from_slice(&v),
                None => out.extend_from_slice(&rest[p..=q]),
            }
            rest = &rest[q + 1..];
        }
        Ok(out)
    }

    /// [`Macros::expand`] for text known to be UTF-8 (macro values are
    /// text, but `${string,repeat,…}` arguments may carry escapes).
    pub fn expand_str(&self, text: &str, line: u32) -> Result<String, VtcError> {
        let v = self.expand(text.as_bytes(), line)?;
        String::from_utf8(v).map_err(|_| VtcError::NotUtf8 { line })
    }

    /// Value of one `${inner}`; `None` if unknown and ignored.
    fn lookup(&self, inner: &[u8], line: u32) -> Result<Option<Vec<u8>>, VtcError> {
        let text = || String::from_utf8_lossy(inner).into_owned();
        let argv = split_args(inner, true).map_err(|e| VtcError::MacroParse {
            line,
            text: text(),
            reason: e.to_string(),
        })?;
        let Some(name) = argv.first() else {
            return Err(VtcError::MacroParse {
                line,
                text: text(),
                reason: "empty macro".into(),
            });
        };
        let failed = |reason: &str| VtcError::MacroFailed {
            line,
            text: text(),
            reason: reason.into(),
        };
        match name.as_slice() {
            b"date" => {
                if argv.len() > 1 {
                    return Err(failed("macro does not take arguments"));
                }
                Ok(Some(http_date(SystemTime::now()).into_bytes()))
            }
            b"string" => string_func(&argv[1..]).map(Some).map_err(failed),
            _ => {
                let found = std::str::from_utf8(name)
                    .ok()
                    .and_then(|n| self.values.get(n));
                match found {
                    Some(_) if argv.len() > 1 => Err(failed("macro does not take arguments")),
                    Some(v) => Ok(Some(v.clone().into_bytes())),
                    None if self.ignore_unknown => Ok(None),
                    None => Err(VtcError::UnknownMacro { line, text: text() }),
                }
            }
        }
    }
}

/// `${string,ACTION,…}`; only `repeat,N,TEXT` exists.
fn string_func(args: &[Vec<u8>]) -> Result<Vec<u8>, &'static str> {
    let Some(action) = args.first() else {
        return Err("missing action");
    };
    if action != b"repeat" {
        return Err("unknown action");
    }
    if args.len() != 3 {
        return Err("repeat takes 2 arguments");
    }
    let n = parse_sf_integer(&args[1])?;
    if n < 0 {
        return Err("invalid number of repetitions");
    }
    let n = usize::try_from(n).map_err(|_| "invalid number of repetitions")?;
    Ok(args[2].repeat(n))
}

/// An RFC 8941 integer as varnish's `SF_Parse_Integer` reads it: optional
/// blanks, optional `-`, 1 to 15 digits, optional blanks, nothing else.
fn parse_sf_integer(s: &[u8]) -> Result<i64, &'static str> {
    let t = s.trim_ascii();
    let (neg, digits) = match t.strip_prefix(b"-") {
        Some(d) => (true, d),
        None => (false, t),
    };
    let ndig = digits.iter().take_while(|c| c.is_ascii_digit()).count();
    if ndig == 0 {
        return Err("no digits");
    }
    if ndig > 15 {
        return Err("too many digits");
    }
    if ndig != digits.len() {
        return Err("invalid number of repetitions");
    }
    let mut v: i64 = 0;
    for &c in digits {
        v = v * 10 + i64::from(c - b'0');
    }
    Ok(if neg { -v } else { v })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Why [`split_args`] refused its input; the messages are varnish's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// A backslash sequence that is not one of the known ones.
    #[error("Invalid backslash sequence")]
    InvalidBackslash,
    /// A `"` in the middle of an unquoted argument.
    #[error("Invalid '\"'")]
    InvalidQuote,
    /// An opening `"` without its closing one.
    #[error("Missing '\"'")]
    MissingQuote,
    /// Two quoted arguments with nothing between them.
    #[error("Missing separator between arguments")]
    MissingSeparator,
}

/// Splits a line into arguments the way varnish's CLI does (`VAV_Parse`):
/// whitespace separates, `"…"` groups, backslash sequences are decoded in
/// both quoted and unquoted arguments. With `commas`, a comma also
/// separates (used inside `${…}`); a trailing comma yields a final empty
/// argument and a comma right after a quoted argument an empty one.
///
/// The runner needs this twice: for macros, and to read the CLI commands
/// it sends to the admin port (`vcl.inline name "…"`).
pub fn split_args(s: &[u8], commas: bool) -> Result<Vec<Vec<u8>>, SplitError> {
    let mut args = Vec::new();
    let mut b = 0;
    let e = s.len();
    // Index of the byte that ended the previous argument, if any.
    let mut sep: Option<usize> = None;
    while b < e {
        if is_space(s[b]) {
            b += 1;
            continue;
        }
        if let Some(sp) = sep {
            if is_space(s[sp]) && s[b] == b',' && commas {
                sep = None;
                b += 1;
                continue;
            }
            if s[sp] == b'"' && s[b] == b'"' {
                return Err(SplitError::MissingSeparator);
            }
        }
        sep = None;
        let quote = s[b] == b'"';
        if quote {
            b += 1;
        }
        let p = b;
        let mut in_quote = quote;
        while b < e {
            if s[b] == b'\\' {
                let (_, used) = backslash(&s[b..]).ok_or(SplitError::InvalidBackslash)?;
                b += used;
                continue;
            }
            if !in_quote {
                if is_space(s[b]) || (commas && s[b] == b',') {
                    sep = Some(b);
                    break;
                }
                if s[b] == b'"' {
                    return Err(SplitError::InvalidQuote);
                }
                b += 1;
                continue;
            }
            if s[b] == b'"' {
                sep = Some(b);
                in_quote = false;
                break;
            }
            b += 1;
        }
        if sep.is_none() && in_quote {
            return Err(SplitError::MissingQuote);
        }
        args.push(decode(&s[p..b.min(e)]));
        if b < e {
            b += 1;
        }
    }
    if let Some(sp) = sep {
        if s[sp] == b',' {
            args.push(Vec::new());
        }
    }
    Ok(args)
}

/// Decodes backslash sequences already validated by [`split_args`]; a NUL
/// ends the value (C strings).
fn decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' {
            if let Some((v, used)) = backslash(&s[i..]) {
                out.push(v);
                i += used;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    if let Some(nul) = out.iter().position(|&c| c == 0) {
        out.truncate(nul);
    }
    out
}

/// Formats a time as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the
/// value of `${date}`.
pub fn http_date(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // 1970-01-01 was a Thursday.
    let wday = (days + 4).rem_euclid(7) as usize;
    let (y, m, d) = civil_from_days(days);
    const WD: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WD[wday],
        d,
        MO[(m - 1) as usize],
        y,
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Gregorian date of a day count since 1970-01-01 (the well-known
/// era-based conversion).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn m() -> Macros {
        let mut m = Macros::new();
        m.define("s1_addr", "127.0.0.1");
        m.define_instance("s1", "port", "4711");
        m
    }

    fn ex(m: &Macros, s: &str) -> Result<String, VtcError> {
        m.expand_str(s, 7)
    }

    #[test]
    fn plain() {
        let m = m();
        assert_eq!(
            ex(&m, "${s1_addr}:${s1_port}/x").unwrap(),
            "127.0.0.1:4711/x"
        );
        assert_eq!(ex(&m, "no macro $ {x}").unwrap(), "no macro $ {x}");
        assert_eq!(ex(&m, "open ${s1_addr").unwrap(), "open ${s1_addr");
        // First `}` ends the macro; expansion is not rescanned.
        let mut m2 = m.clone();
        m2.define("a", "${s1_port}");
        assert_eq!(ex(&m2, "${a}").unwrap(), "${s1_port}");
        assert_eq!(ex(&m, "${ s1_port }").unwrap(), "4711");
    }

    #[test]
    fn unknown() {
        let mut m = m();
        assert_eq!(
            ex(&m, "x ${nope} y"),
            Err(VtcError::UnknownMacro {
                line: 7,
                text: "nope".into()
            })
        );
        m.set_ignore_unknown(true);
        assert_eq!(ex(&m, "x ${nope} ${s1_port}").unwrap(), "x ${nope} 4711");
        assert!(matches!(
            ex(&m, "${s1_port,3}"),
            Err(VtcError::MacroFailed { .. })
        ));
    }

    #[test]
    fn string_repeat() {
        let m = m();
        assert_eq!(ex(&m, "${string,repeat,3,ab}").unwrap(), "ababab");
        assert_eq!(ex(&m, "${string,repeat,0,ab}").unwrap(), "");
        assert_eq!(ex(&m, r#"${string,repeat,2," "}"#).unwrap(), "  ");
        assert_eq!(ex(&m, r#"${string,repeat,2,"1 "}"#).unwrap(), "1 1 ");
        assert_eq!(ex(&m, "${string, repeat , 2 ,x}").unwrap(), "xx");
        for bad in [
            "${string}",
            "${string,rep,2,a}",
            "${string,repeat,2}",
            "${string,repeat,-1,a}",
            "${string,repeat,2x,a}",
        ] {
            assert!(
                matches!(ex(&m, bad), Err(VtcError::MacroFailed { .. })),
                "{bad}"
            );
        }
        assert!(matches!(ex(&m, "${}"), Err(VtcError::MacroParse { .. })));
    }

    #[test]
    fn date() {
        let m = m();
        let d = ex(&m, "${date}").unwrap();
        assert!(d.ends_with(" GMT") && d.len() == 29, "{d}");
        assert_eq!(
            http_date(UNIX_EPOCH + Duration::from_secs(784_111_777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            http_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
    }

    #[test]
    fn split() {
        let s = |t: &str, c| {
            split_args(t.as_bytes(), c).map(|v| {
                v.into_iter()
                    .map(|a| String::from_utf8(a).unwrap())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            s(
                r#"vcl.inline v2 "vcl 4.0; backend b { .host = \"h\";}" cold"#,
                false
            )
            .unwrap(),
            vec![
                "vcl.inline",
                "v2",
                r#"vcl 4.0; backend b { .host = "h";}"#,
                "cold"
            ]
        );
        assert_eq!(s("a,b , c,", true).unwrap(), vec!["a", "b", "c", ""]);
        assert_eq!(s("a,,b", true).unwrap(), vec!["a", "", "b"]);
        assert_eq!(s(r#""a",b"#, true).unwrap(), vec!["a", "", "b"]);
        assert_eq!(s("a,b", false).unwrap(), vec!["a,b"]);
        assert_eq!(s(r"a\tb", false).unwrap(), vec!["a\tb"]);
        assert_eq!(s(r#""a""b""#, false), Err(SplitError::MissingSeparator));
        assert_eq!(s(r#"a"b"#, false), Err(SplitError::InvalidQuote));
        assert_eq!(s(r#""ab"#, false), Err(SplitError::MissingQuote));
        assert_eq!(s(r"a\qb", false), Err(SplitError::InvalidBackslash));
    }
}
