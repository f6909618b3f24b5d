//! The VCL lexer (Varnish's `vcc_token`) and `include` resolution.
//!
//! As in Varnish, `include "file";` is resolved on the token stream, so an
//! include may appear anywhere, even inside a subroutine body.

use crate::error::{Diagnostic, Source, Span};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokKind {
    /// An identifier; may contain `.`, `-` and `_` (`req.http.X-Foo`).
    Id,
    /// An integer literal.
    Int,
    /// A literal with a decimal point.
    Real,
    /// A string in any of the three quoting styles; `value` is its content.
    Str,
    /// Punctuation or an operator; `value` is the operator text.
    Op,
    /// A BLOB literal `:base64:`; `value` is the base64 text.
    Blob,
    /// End of input.
    Eof,
}

/// One token.
#[derive(Clone, Debug)]
pub struct Token {
    pub kind: TokKind,
    /// Identifier text, operator text, number text, or string content.
    pub value: String,
    pub span: Span,
}

impl Token {
    pub fn is_op(&self, op: &str) -> bool {
        self.kind == TokKind::Op && self.value == op
    }

    pub fn is_id(&self, id: &str) -> bool {
        self.kind == TokKind::Id && self.value == id
    }

    /// The token as varnishd quotes it in "Found: …" messages.
    pub fn describe(&self) -> String {
        match self.kind {
            TokKind::Eof => "EOF".to_string(),
            TokKind::Str => format!("\"{}\"", self.value),
            _ => self.value.clone(),
        }
    }
}

fn is_ident1(c: u8) -> bool {
    c.is_ascii_alphabetic()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

fn is_symbol(c: u8) -> bool {
    is_ident(c) || c == b'.'
}

const OPS3: &[&str] = &[];
const OPS2: &[&str] = &[
    "==", "!=", "<=", ">=", "&&", "||", "!~", "+=", "-=", "*=", "/=", "++", "--", "<<", ">>",
];
const OPS1: &[u8] = b"!%&+*,-./;<=>?[]^{|}~()";

/// Splits one source into tokens (without resolving includes).
pub fn tokenize(source: &Arc<Source>, allow_inline_c: bool) -> Result<Vec<Token>, Diagnostic> {
    let text = source.text.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    let span = |start: usize, end: usize| Span {
        source: source.clone(),
        start,
        end,
    };
    while i < text.len() {
        let c = text[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        // Comments.
        if c == b'#' || (c == b'/' && text.get(i + 1) == Some(&b'/')) {
            while i < text.len() && text[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && text.get(i + 1) == Some(&b'*') {
            let start = i;
            i += 2;
            loop {
                if i + 1 >= text.len() {
                    return Err(Diagnostic::new(
                        "Unterminated /* ... */ comment, starting at",
                        Some(span(start, start + 2)),
                    ));
                }
                if text[i] == b'*' && text[i + 1] == b'/' {
                    i += 2;
                    break;
                }
                if text[i] == b'/' && text[i + 1] == b'*' {
                    return Err(Diagnostic::new(
                        "/* ... */ comment contains /*",
                        Some(span(i, i + 2)),
                    ));
                }
                i += 1;
            }
            continue;
        }
        // Inline C.
        if c == b'C' && text.get(i + 1) == Some(&b'{') {
            let start = i;
            let end = find(text, i + 2, b"}C");
            let Some(end) = end else {
                return Err(Diagnostic::new(
                    "Unterminated inline C source, starting at",
                    Some(span(start, start + 2)),
                ));
            };
            let msg = if allow_inline_c {
                "Inline-C is not supported by Shellac: VCL runs as WebAssembly"
            } else {
                "Inline-C not allowed"
            };
            let _ = end;
            return Err(Diagnostic::new(msg, Some(span(start, start + 2))));
        }
        // Long strings.
        if c == b'{' && text.get(i + 1) == Some(&b'"') {
            let start = i;
            let Some(end) = find(text, i + 2, b"\"}") else {
                return Err(Diagnostic::new(
                    "Unterminated long-string, starting at",
                    Some(span(start, start + 2)),
                ));
            };
            toks.push(Token {
                kind: TokKind::Str,
                value: source.text[i + 2..end].to_string(),
                span: span(start, end + 2),
            });
            i = end + 2;
            continue;
        }
        if c == b'"' && text.get(i + 1) == Some(&b'"') && text.get(i + 2) == Some(&b'"') {
            let start = i;
            let Some(end) = find(text, i + 3, b"\"\"\"") else {
                return Err(Diagnostic::new(
                    "Unterminated long-string, starting at",
                    Some(span(start, start + 3)),
                ));
            };
            toks.push(Token {
                kind: TokKind::Str,
                value: source.text[i + 3..end].to_string(),
                span: span(start, end + 3),
            });
            i = end + 3;
            continue;
        }
        if c == b'"' {
            let start = i;
            let mut j = i + 1;
            while j < text.len() && text[j] != b'"' && text[j] != b'\n' {
                j += 1;
            }
            if j >= text.len() || text[j] != b'"' {
                return Err(Diagnostic::new(
                    "Unterminated string, starting at",
                    Some(span(start, start + 1)),
                ));
            }
            toks.push(Token {
                kind: TokKind::Str,
                value: source.text[i + 1..j].to_string(),
                span: span(start, j + 1),
            });
            i = j + 1;
            continue;
        }
        if c == b':' {
            // A BLOB literal (RFC 8941 byte sequence): `:` base64 `:`.
            // In VCL a colon begins nothing else.
            let start = i;
            let mut j = i + 1;
            while j < text.len() && (is_base64(text[j]) || text[j] == b'=') {
                j += 1;
            }
            if j >= text.len() {
                let end = (text.len().saturating_sub(1)).max(start + 1);
                return Err(Diagnostic::new(
                    "Missing colon at end of BLOB:",
                    Some(span(start, end)),
                ));
            }
            if text[j] != b':' {
                return Err(Diagnostic::new(
                    "Illegal BLOB character:",
                    Some(span(start, j + 1)),
                ));
            }
            if let Err(e) = decode_blob(&text[i + 1..j]) {
                let end = match e.upto {
                    Some(k) => i + 1 + k,
                    None => j + 1,
                };
                return Err(Diagnostic::new(e.message, Some(span(start, end))));
            }
            toks.push(Token {
                kind: TokKind::Blob,
                value: source.text[i + 1..j].to_string(),
                span: span(start, j + 1),
            });
            i = j + 1;
            continue;
        }
        if is_ident1(c) {
            let start = i;
            while i < text.len() && is_symbol(text[i]) {
                i += 1;
            }
            // A trailing '.' is not part of a symbol.
            while i > start + 1 && text[i - 1] == b'.' {
                i -= 1;
            }
            toks.push(Token {
                kind: TokKind::Id,
                value: source.text[start..i].to_string(),
                span: span(start, i),
            });
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < text.len() && text[i].is_ascii_digit() {
                i += 1;
            }
            let mut kind = TokKind::Int;
            // `1.5` and `123.` are reals; `1.x` is not (a dotted name can't
            // start with a digit anyway).
            if i < text.len()
                && text[i] == b'.'
                && !text.get(i + 1).is_some_and(|c| c.is_ascii_alphabetic())
            {
                kind = TokKind::Real;
                i += 1;
                while i < text.len() && text[i].is_ascii_digit() {
                    i += 1;
                }
            }
            toks.push(Token {
                kind,
                value: source.text[start..i].to_string(),
                span: span(start, i),
            });
            continue;
        }
        let rest = &source.text[i..];
        if let Some(op) = OPS3
            .iter()
            .chain(OPS2.iter())
            .find(|op| rest.starts_with(**op))
        {
            toks.push(Token {
                kind: TokKind::Op,
                value: op.to_string(),
                span: span(i, i + op.len()),
            });
            i += op.len();
            continue;
        }
        if OPS1.contains(&c) {
            toks.push(Token {
                kind: TokKind::Op,
                value: (c as char).to_string(),
                span: span(i, i + 1),
            });
            i += 1;
            continue;
        }
        let ch_len = source.text[i..].chars().next().map_or(1, |c| c.len_utf8());
        return Err(Diagnostic::new(
            format!(
                "Syntax error at\n  '{}'",
                &source.text[i..i + ch_len].escape_debug()
            ),
            Some(span(i, i + ch_len)),
        ));
    }
    toks.push(Token {
        kind: TokKind::Eof,
        value: String::new(),
        span: span(text.len(), text.len()),
    });
    Ok(toks)
}

fn is_base64(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'+' || c == b'/'
}

fn base64_value(c: u8) -> u32 {
    match c {
        b'A'..=b'Z' => u32::from(c - b'A'),
        b'a'..=b'z' => u32::from(c - b'a') + 26,
        b'0'..=b'9' => u32::from(c - b'0') + 52,
        b'+' => 62,
        _ => 63,
    }
}

/// Why the text of a BLOB literal is not strict base64.
#[derive(Debug, PartialEq, Eq)]
pub struct BlobError {
    /// varnishd's message.
    pub message: &'static str,
    /// How many bytes of the text the error marker covers (none: the whole
    /// literal).
    pub upto: Option<usize>,
}

/// Decodes the text between the colons of a BLOB literal as varnishd 7.1
/// does: standard alphabet, padded to a multiple of four, `=` only at the
/// end of the last group, and no stray bits before the padding.
pub fn decode_blob(body: &[u8]) -> Result<Vec<u8>, BlobError> {
    let mut out = Vec::with_capacity(body.len() / 4 * 3);
    let (mut acc, mut bits, mut pad) = (0u32, 0u32, 0usize);
    let wrong_padding = |k: usize| BlobError {
        message: "Wrong padding ('=') in BLOB:",
        upto: Some(k + 1),
    };
    for (k, &c) in body.iter().enumerate() {
        let pos = k % 4;
        if c == b'=' {
            match pos {
                0 | 1 => return Err(wrong_padding(k)),
                2 | 3 if pad == 0 => {
                    if acc & ((1 << bits) - 1) != 0 {
                        return Err(BlobError {
                            message: "Illegal BLOB character:",
                            upto: Some(k),
                        });
                    }
                    pad = 1;
                }
                _ => pad += 1,
            }
            continue;
        }
        if pad > 0 {
            return Err(wrong_padding(k));
        }
        acc = (acc << 6) | base64_value(c);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if !body.len().is_multiple_of(4) {
        return Err(BlobError {
            message: "BLOB must have n*4 base64 characters",
            upto: None,
        });
    }
    Ok(out)
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Loads VCL files: reads them and resolves `include` on the token stream.
pub struct Loader<'a> {
    pub include_path: &'a [PathBuf],
    pub allow_inline_c: bool,
    /// `vcc_unsafe_path`: absolute include paths are allowed.
    pub unsafe_path: bool,
    /// Every source read, in order, for `vcl.show` and diagnostics.
    pub sources: Vec<Arc<Source>>,
}

/// How deep includes may nest before we call it a cycle.
const MAX_INCLUDE_DEPTH: usize = 32;

impl<'a> Loader<'a> {
    pub fn new(include_path: &'a [PathBuf], allow_inline_c: bool) -> Self {
        Loader {
            include_path,
            allow_inline_c,
            unsafe_path: true,
            sources: Vec::new(),
        }
    }

    /// Tokenizes `source` and splices in the tokens of every included file.
    /// `dir` is where relative includes are looked up first.
    pub fn load(
        &mut self,
        source: Arc<Source>,
        dir: Option<&Path>,
    ) -> Result<Vec<Token>, Diagnostic> {
        let mut stack = Vec::new();
        self.load_inner(source, dir, &mut stack)
    }

    fn load_inner(
        &mut self,
        source: Arc<Source>,
        dir: Option<&Path>,
        stack: &mut Vec<PathBuf>,
    ) -> Result<Vec<Token>, Diagnostic> {
        self.sources.push(source.clone());
        let toks = tokenize(&source, self.allow_inline_c)?;
        let mut out = Vec::with_capacity(toks.len());
        let mut i = 0;
        while i < toks.len() {
            if toks[i].is_id("include") {
                let inc = &toks[i];
                // `include +glob "pattern";` includes every match, in order.
                let glob = toks.get(i + 1).is_some_and(|t| t.is_op("+"))
                    && toks.get(i + 2).is_some_and(|t| t.is_id("glob"));
                let at = if glob { i + 3 } else { i + 1 };
                let Some(name) = toks.get(at).filter(|t| t.kind == TokKind::Str) else {
                    let t = toks.get(at).unwrap_or(inc);
                    return Err(Diagnostic::new(
                        "include not followed by string constant.",
                        Some(t.span.clone()),
                    ));
                };
                if !toks.get(at + 1).is_some_and(|t| t.is_op(";")) {
                    let t = toks.get(at + 1).unwrap_or(name);
                    return Err(Diagnostic::new(
                        "include <string> not followed by semicolon.",
                        Some(t.span.clone()),
                    ));
                }
                if name.value.starts_with("./") && dir.is_none() {
                    return Err(Diagnostic::new(
                        "include \"./...\" needs absolute filename of including file.",
                        Some(name.span.clone()),
                    ));
                }
                let paths = if glob {
                    let matches = self.glob(&name.value, dir);
                    if matches.is_empty() {
                        return Err(Diagnostic::new(
                            "glob pattern matched no files.",
                            Some(name.span.clone()),
                        ));
                    }
                    matches
                } else {
                    match self.resolve(&name.value, dir) {
                        Some(p) => vec![p],
                        None => {
                            return Err(Diagnostic::new(
                                format!(
                                    "Cannot read file '{}' (No such file or directory)",
                                    name.value
                                ),
                                Some(name.span.clone()),
                            ))
                        }
                    }
                };
                for path in paths {
                    if !self.unsafe_path && Path::new(&name.value).is_absolute() {
                        return Err(Diagnostic::new(
                            format!("VCL filename '{}' is unsafe.", path.display()),
                            Some(name.span.clone()),
                        ));
                    }
                    let sub = self.include_file(&path, &name.value, &name.span, stack)?;
                    out.extend(sub);
                }
                i = at + 2;
                continue;
            }
            out.push(toks[i].clone());
            i += 1;
        }
        Ok(out)
    }

    /// Reads one included file and returns its tokens (without its Eof).
    fn include_file(
        &mut self,
        path: &Path,
        name: &str,
        span: &Span,
        stack: &mut Vec<PathBuf>,
    ) -> Result<Vec<Token>, Diagnostic> {
        let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if stack.contains(&canon) || stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(Diagnostic::new("Recursive use of file", Some(span.clone())));
        }
        let text = match std::fs::read(path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                return Err(Diagnostic::new(
                    format!("Cannot read file '{}' ({})", name, e),
                    Some(span.clone()),
                ))
            }
        };
        let inc_source = Arc::new(Source {
            name: path.display().to_string(),
            text,
        });
        stack.push(canon);
        let sub_dir = path.parent().map(Path::to_path_buf);
        let sub = self.load_inner(inc_source, sub_dir.as_deref(), stack);
        stack.pop();
        let mut sub = sub?;
        sub.pop(); // its Eof
        Ok(sub)
    }

    /// The files `include +glob` names, sorted: a `./` pattern is relative
    /// to the including file, any other is taken as written.
    fn glob(&self, pattern: &str, dir: Option<&Path>) -> Vec<PathBuf> {
        let mut full = match (pattern.strip_prefix("./"), dir) {
            (Some(rest), Some(d)) => d.join(rest).display().to_string(),
            _ => pattern.to_string(),
        };
        // glob(3), which varnishd uses, has no recursive `**`: it is `*`.
        while full.contains("**") {
            full = full.replace("**", "*");
        }
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: true,
        };
        let mut found: Vec<PathBuf> = match glob::glob_with(&full, opts) {
            Ok(paths) => paths.flatten().filter(|p| p.is_file()).collect(),
            Err(_) => Vec::new(),
        };
        found.sort();
        found
    }

    fn resolve(&self, name: &str, dir: Option<&Path>) -> Option<PathBuf> {
        let p = Path::new(name);
        if p.is_absolute() {
            return p.is_file().then(|| p.to_path_buf());
        }
        dir.into_iter()
            .map(Path::to_path_buf)
            .chain(self.include_path.iter().cloned())
            .map(|d| d.join(p))
            .find(|c| c.is_file())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<(TokKind, String)> {
        let src = Arc::new(Source {
            name: "t.vcl".into(),
            text: s.into(),
        });
        tokenize(&src, false)
            .map(|v| v.into_iter().map(|t| (t.kind, t.value)).collect())
            .unwrap_or_default()
    }

    /// The message and marker width of a lexer error, or the BLOB's bytes.
    fn blob(s: &str) -> Result<Vec<u8>, (String, usize)> {
        let src = Arc::new(Source {
            name: "t.vcl".into(),
            text: s.into(),
        });
        match tokenize(&src, false) {
            Ok(t) => Ok(decode_blob(t[0].value.as_bytes()).unwrap_or_default()),
            Err(d) => {
                let w = d.span.map(|s| s.end - s.start).unwrap_or(0);
                Err((d.message, w))
            }
        }
    }

    #[test]
    fn blob_literals_as_varnishd_reads_them() {
        // Widths of the markers are those varnishd 7.1.1 prints.
        assert_eq!(blob(":aGk=:"), Ok(b"hi".to_vec()));
        assert_eq!(blob(":AAEC/w==:"), Ok(vec![0, 1, 2, 255]));
        assert_eq!(blob("::"), Ok(vec![]));
        assert_eq!(blob(":aaE=:").map(|b| b.len()), Ok(2));
        let n4 = "BLOB must have n*4 base64 characters".to_string();
        let illegal = "Illegal BLOB character:".to_string();
        let padding = "Wrong padding ('=') in BLOB:".to_string();
        assert_eq!(blob(":a:"), Err((n4.clone(), 3)));
        assert_eq!(blob(":aQ=:"), Err((n4, 5)));
        assert_eq!(blob(":aa?:"), Err((illegal.clone(), 4)));
        assert_eq!(blob(": aGk=:"), Err((illegal.clone(), 2)));
        assert_eq!(blob(":AB==:"), Err((illegal.clone(), 3)));
        assert_eq!(blob(":aaa=:"), Err((illegal.clone(), 4)));
        assert_eq!(blob(":aa==aaaa:"), Err((illegal, 3)));
        assert_eq!(blob(":aaaa=aa:"), Err((padding.clone(), 6)));
        assert_eq!(blob(":a===:"), Err((padding.clone(), 3)));
        assert_eq!(blob(":====:"), Err((padding.clone(), 2)));
        assert_eq!(blob(":aQ==aaaa:").map_err(|e| e.0), Err(padding));
        assert_eq!(
            blob(":aaaa").map_err(|e| e.0),
            Err("Missing colon at end of BLOB:".to_string())
        );
        assert_eq!(
            blob(":").map_err(|e| e.0),
            Err("Missing colon at end of BLOB:".to_string())
        );
    }

    #[test]
    fn identifiers_keep_dots_and_dashes() {
        let t = toks("set req.http.X-Foo = a-b;");
        assert_eq!(t[1], (TokKind::Id, "req.http.X-Foo".into()));
        assert_eq!(t[3], (TokKind::Id, "a-b".into()));
    }

    #[test]
    fn strings_of_all_kinds() {
        let t = toks(
            r#""a" {"b
c"} """d"e""""#,
        );
        assert_eq!(t[0].1, "a");
        assert_eq!(t[1].1, "b\nc");
        assert_eq!(t[2].1, "d\"e");
    }

    #[test]
    fn numbers_and_units() {
        let t = toks("1.5s 10 KB");
        assert_eq!(t[0], (TokKind::Real, "1.5".into()));
        assert_eq!(t[1], (TokKind::Id, "s".into()));
        assert_eq!(t[2], (TokKind::Int, "10".into()));
    }

    #[test]
    fn comments_are_skipped() {
        let t = toks("a # x\n b // y\n /* z \n */ c");
        let ids: Vec<_> = t.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", ""]);
    }

    #[test]
    fn unterminated_things_are_errors() {
        let src = Arc::new(Source {
            name: "t.vcl".into(),
            text: "\"abc\n".into(),
        });
        assert!(tokenize(&src, false).is_err());
        let src = Arc::new(Source {
            name: "t.vcl".into(),
            text: "/* abc".into(),
        });
        assert!(tokenize(&src, false).is_err());
        let src = Arc::new(Source {
            name: "t.vcl".into(),
            text: "C{ x }C".into(),
        });
        assert!(tokenize(&src, false).is_err());
    }
}
