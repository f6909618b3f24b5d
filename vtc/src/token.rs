//! The VTC tokenizer: splits a specification into commands exactly the way
//! varnishtest's `parse_string()` does.
//!
//! The rules, all observable in varnishtest 7.1:
//!
//! * A command is the tokens from its first token to the end of that line.
//!   Tokens are separated by C `isspace()` characters other than newline.
//! * `#` starts a comment **only as the first character of a command**; a `#`
//!   after a token is an ordinary token (`txreq # x` has three tokens).
//! * `"…"` is one token. Backslash sequences `\n \r \t \" \\`, octal
//!   `\N`, `\NN`, `\NNN` (digits 0-7) and `\xHH` are decoded; any other
//!   sequence is an error. A newline inside the quotes is an error. Because
//!   varnishtest keeps tokens as C strings, a decoded NUL ends the token.
//!   A quoted token does not need whitespace after it: `"a"b` is two tokens.
//! * `{…}` is one token holding everything up to the matching `}`, verbatim
//!   (newlines, quotes, backslashes and `#` included; braces nest, and
//!   nothing, not even a quote, hides a brace from the count).
//! * Anything else is a bare token running to the next whitespace, taken as
//!   is (`"`, `{` and `\` inside it are plain characters).
//! * A backslash immediately followed by a newline, where a token could
//!   start, continues the command on the next line. Inside a bare token it
//!   does not (`foo\` is a token ending in a backslash).
//! * At most 199 tokens per command.
//!
//! Macros (`${…}`) are *not* expanded here: varnishtest expands them per
//! command, when the command runs, so that macros defined by earlier commands
//! (`${s1_port}` after `server s1 -start`) are visible. See
//! [`Command::expand`].

use std::borrow::Cow;
use std::fmt;

use crate::error::VtcError;
use crate::macros::Macros;

/// varnishtest's token array has 200 slots, one of them the terminator.
pub const MAX_TOKENS: usize = 199;

/// How a token was written; the runner sometimes cares (a brace token is a
/// nested specification, a quoted one is a plain string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Written without quotes or braces.
    Bare,
    /// Written as `"…"`; the text is already unescaped.
    Quoted,
    /// Written as `{…}`; the text is what was between the braces, verbatim.
    Braced,
}

/// One token of a command.
///
/// The text is bytes, not a `String`, because quoted tokens may hold any
/// byte (`txresp -body "\xeb\xbb\xbf"` sends a UTF-8 BOM and some tests send
/// invalid UTF-8 on purpose). Use [`Token::as_str`] where text is required.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token {
    /// How the token was written.
    pub kind: TokenKind,
    /// 1-based line of the token's first character; for a braced token the
    /// line of the `{`, which is also the line of the first byte of
    /// [`Token::bytes`], so re-tokenizing from that line keeps numbering.
    pub line: u32,
    /// The token's value (unescaped for quoted tokens, verbatim otherwise).
    pub bytes: Vec<u8>,
}

impl Token {
    /// Makes a token; mostly for tests and for runners synthesising commands.
    pub fn new(kind: TokenKind, line: u32, bytes: impl Into<Vec<u8>>) -> Token {
        Token {
            kind,
            line,
            bytes: bytes.into(),
        }
    }

    /// The text, or an error naming the line if it is not UTF-8.
    pub fn as_str(&self) -> Result<&str, VtcError> {
        std::str::from_utf8(&self.bytes).map_err(|_| VtcError::NotUtf8 { line: self.line })
    }

    /// The text with invalid UTF-8 replaced, for messages and comparisons
    /// against ASCII keywords.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }

    /// Whether the token is exactly `s` (how varnishtest's `strcmp` matches
    /// option names).
    pub fn is(&self, s: &str) -> bool {
        self.bytes == s.as_bytes()
    }

    /// Whether the token starts with `-`, which varnishtest takes as an
    /// option whatever the quoting.
    pub fn is_option(&self) -> bool {
        self.bytes.first() == Some(&b'-')
    }

    /// Expands `${…}` macros in this token, as varnishtest does for every
    /// token containing `${` just before the command runs.
    pub fn expand(&self, macros: &Macros) -> Result<Token, VtcError> {
        Ok(Token {
            kind: self.kind,
            line: self.line,
            bytes: macros.expand(&self.bytes, self.line)?,
        })
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{}:{:?}", self.kind, self.line, self.text())
    }
}

/// One command: a name and its arguments, as split from one logical line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// 1-based line of the command's first token.
    pub line: u32,
    /// All tokens, the command name first; never empty.
    pub tokens: Vec<Token>,
}

impl Command {
    /// The command name (first token).
    pub fn name(&self) -> &Token {
        // `tokenize` never yields an empty command; the fallback keeps this
        // total for hand-built values.
        match self.tokens.first() {
            Some(t) => t,
            None => &EMPTY_TOKEN,
        }
    }

    /// The arguments (all tokens after the name).
    pub fn args(&self) -> &[Token] {
        self.tokens.get(1..).unwrap_or(&[])
    }

    /// Expands macros in every token. varnishtest does this per command at
    /// execution time, with the macro table as it is at that moment; a
    /// brace token is expanded as a whole here, *before* it is parsed as a
    /// nested spec (so macros inside a `client` spec take the values current
    /// when the `client` command runs).
    pub fn expand(&self, macros: &Macros) -> Result<Command, VtcError> {
        let tokens = self
            .tokens
            .iter()
            .map(|t| t.expand(macros))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Command {
            line: self.line,
            tokens,
        })
    }
}

static EMPTY_TOKEN: Token = Token {
    kind: TokenKind::Bare,
    line: 0,
    bytes: Vec::new(),
};

/// C `isspace()` in the C locale.
pub(crate) fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Decodes one backslash sequence at the start of `s` (which begins with
/// `\`), the way varnish's `VAV_BackSlash` does. Returns the byte and the
/// number of input bytes used, or `None` for an unknown sequence.
pub(crate) fn backslash(s: &[u8]) -> Option<(u8, usize)> {
    if s.len() < 2 {
        return None;
    }
    match s[1] {
        b'n' => Some((b'\n', 2)),
        b'r' => Some((b'\r', 2)),
        b't' => Some((b'\t', 2)),
        b'"' => Some((b'"', 2)),
        b'\\' => Some((b'\\', 2)),
        b'0'..=b'7' => {
            // Up to three octal digits; the value wraps at 8 bits like C's
            // `char` arithmetic.
            let mut v: u8 = 0;
            let mut r = 1;
            while r < 4 && r < s.len() && (b'0'..=b'7').contains(&s[r]) {
                v = v.wrapping_shl(3) | (s[r] - b'0');
                r += 1;
            }
            Some((v, r))
        }
        b'x' => {
            let hi = s.get(2).and_then(|c| (*c as char).to_digit(16))?;
            let lo = s.get(3).and_then(|c| (*c as char).to_digit(16))?;
            Some(((hi * 16 + lo) as u8, 4))
        }
        _ => None,
    }
}

/// Splits `src` into commands, numbering lines from `first_line`.
///
/// Use `first_line = 1` for a whole .vtc file and `token.line` to parse the
/// contents of a braced token (see [`crate::parse_spec`]).
pub fn tokenize(src: &[u8], first_line: u32) -> Result<Vec<Command>, VtcError> {
    let mut out = Vec::new();
    let mut line = first_line;
    let mut i = 0;
    let n = src.len();
    while i < n {
        let c = src[i];
        if is_space(c) {
            if c == b'\n' {
                line += 1;
            }
            i += 1;
            continue;
        }
        if c == b'#' {
            while i < n && src[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let cmd_line = line;
        let mut tokens: Vec<Token> = Vec::new();
        while i < n {
            let c = src[i];
            if c == b'\n' {
                break;
            }
            if is_space(c) {
                i += 1;
                continue;
            }
            if c == b'\\' && src.get(i + 1) == Some(&b'\n') {
                i += 2;
                line += 1;
                continue;
            }
            if tokens.len() >= MAX_TOKENS {
                return Err(VtcError::TooManyTokens {
                    line: cmd_line,
                    max: MAX_TOKENS,
                });
            }
            if c == b'"' {
                let (tok, next) = quoted(src, i, line)?;
                tokens.push(tok);
                i = next;
            } else if c == b'{' {
                let start_line = line;
                let start = i + 1;
                let mut depth = 0usize;
                loop {
                    let Some(&b) = src.get(i) else {
                        return Err(VtcError::UnterminatedBrace { line: start_line });
                    };
                    match b {
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        b'\n' => line += 1,
                        _ => {}
                    }
                    i += 1;
                }
                tokens.push(Token::new(TokenKind::Braced, start_line, &src[start..i]));
                i += 1;
            } else {
                let start = i;
                while i < n && !is_space(src[i]) {
                    i += 1;
                }
                tokens.push(Token::new(TokenKind::Bare, line, &src[start..i]));
            }
        }
        if !tokens.is_empty() {
            out.push(Command {
                line: cmd_line,
                tokens,
            });
        }
    }
    Ok(out)
}

/// Reads the quoted token whose `"` is at `src[start]`; returns it and the
/// index just after the closing quote.
fn quoted(src: &[u8], start: usize, line: u32) -> Result<(Token, usize), VtcError> {
    let mut i = start + 1;
    let mut buf = Vec::new();
    loop {
        let Some(&c) = src.get(i) else {
            return Err(VtcError::UnterminatedQuote { line });
        };
        match c {
            b'"' => break,
            b'\n' => return Err(VtcError::UnterminatedQuote { line }),
            b'\\' => {
                let Some((v, used)) = backslash(&src[i..]) else {
                    let end = (i + 2).min(src.len());
                    return Err(VtcError::InvalidEscape {
                        line,
                        sequence: String::from_utf8_lossy(&src[i..end]).into_owned(),
                    });
                };
                buf.push(v);
                i += used;
            }
            _ => {
                buf.push(c);
                i += 1;
            }
        }
    }
    // varnishtest's tokens are C strings: a decoded NUL ends the value.
    if let Some(nul) = buf.iter().position(|&b| b == 0) {
        buf.truncate(nul);
    }
    Ok((Token::new(TokenKind::Quoted, line, buf), i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Vec<String>> {
        tokenize(src.as_bytes(), 1)
            .unwrap()
            .iter()
            .map(|c| c.tokens.iter().map(|t| t.text().into_owned()).collect())
            .collect()
    }

    #[test]
    fn words_and_lines() {
        let cmds = tokenize(b"  a b\tc\n\n  d e\r\n", 1).unwrap();
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[0].line, 1);
        assert_eq!(cmds[1].line, 3);
        assert_eq!(toks("a b\tc\n d"), vec![vec!["a", "b", "c"], vec!["d"]]);
    }

    #[test]
    fn comment_only_at_command_start() {
        assert_eq!(
            toks("# a comment\n  # another\ntxreq # not a comment\n"),
            vec![vec!["txreq", "#", "not", "a", "comment"]]
        );
    }

    #[test]
    fn quoted_escapes() {
        let cmds = tokenize(br#"x "a\tb\r\n\"\\\101\x41\1z" "#, 1).unwrap();
        let t = &cmds[0].tokens[1];
        assert_eq!(t.kind, TokenKind::Quoted);
        assert_eq!(t.bytes, b"a\tb\r\n\"\\AA\x01z");
    }

    #[test]
    fn quoted_non_utf8_and_nul() {
        let cmds = tokenize(br#"x "\xeb\xbc" "ab\0cd" "\001""#, 1).unwrap();
        assert_eq!(cmds[0].tokens[1].bytes, vec![0xeb, 0xbc]);
        assert!(cmds[0].tokens[1].as_str().is_err());
        assert_eq!(cmds[0].tokens[2].bytes, b"ab");
        assert_eq!(cmds[0].tokens[3].bytes, b"\x01");
    }

    #[test]
    fn quoted_errors() {
        assert_eq!(
            tokenize(b"x \"abc\ny\"", 1),
            Err(VtcError::UnterminatedQuote { line: 1 })
        );
        assert!(matches!(
            tokenize(b"\n x \"a\\d\"", 1),
            Err(VtcError::InvalidEscape { line: 2, .. })
        ));
        assert!(matches!(
            tokenize(b"x \"\\xg1\"", 1),
            Err(VtcError::InvalidEscape { .. })
        ));
        assert_eq!(
            tokenize(b"x \"abc", 1),
            Err(VtcError::UnterminatedQuote { line: 1 })
        );
    }

    #[test]
    fn quote_needs_no_separator() {
        assert_eq!(toks(r#"a "b"c{d}e"#), vec![vec!["a", "b", "c{d}e"]]);
        assert_eq!(toks(r#"a "b"{c}"d""#), vec![vec!["a", "b", "c", "d"]]);
    }

    #[test]
    fn bare_tokens_keep_specials() {
        assert_eq!(toks(r#"a\"b c\d"#), vec![vec![r#"a\"b"#, r"c\d"]]);
    }

    #[test]
    fn braces_nest_and_keep_everything() {
        let src = "server s1 {\n\trxreq # {x}\n\t\"a\\tb\"\n\t{ inner }\n} -start\nnext";
        let cmds = tokenize(src.as_bytes(), 1).unwrap();
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[0].tokens[2].kind, TokenKind::Braced);
        assert_eq!(cmds[0].tokens[2].line, 1);
        assert_eq!(
            cmds[0].tokens[2].text(),
            "\n\trxreq # {x}\n\t\"a\\tb\"\n\t{ inner }\n"
        );
        assert_eq!(cmds[0].tokens[3].text(), "-start");
        assert_eq!(cmds[1].line, 6);
    }

    #[test]
    fn quotes_do_not_hide_braces() {
        // The `}` inside the quotes closes the brace; what follows is a
        // quoted token that runs into the newline.
        let src = "server s1 {\n txresp -body \"}\"\n}\n";
        assert_eq!(
            tokenize(src.as_bytes(), 1),
            Err(VtcError::UnterminatedQuote { line: 2 })
        );
        assert_eq!(toks("a {b}}c"), vec![vec!["a", "b", "}c"]]);
    }

    #[test]
    fn braces_multiline_line_numbers() {
        let src = "varnish v1 -vcl {\n  a { b }\n  c\n} -start\nclient c1 {\n} -run\n";
        let cmds = tokenize(src.as_bytes(), 10).unwrap();
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[0].line, 10);
        assert_eq!(cmds[0].tokens[3].text(), "\n  a { b }\n  c\n");
        assert_eq!(cmds[0].tokens[4].text(), "-start");
        assert_eq!(cmds[0].tokens[4].line, 13);
        assert_eq!(cmds[1].line, 14);
    }

    #[test]
    fn unbalanced_brace() {
        assert_eq!(
            tokenize(b"a\nb { { }\n", 1),
            Err(VtcError::UnterminatedBrace { line: 2 })
        );
    }

    #[test]
    fn line_continuation() {
        let cmds = tokenize(b"a b \\\n  c\nd\n", 1).unwrap();
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[0].tokens.len(), 3);
        assert_eq!(cmds[0].tokens[2].line, 2);
        assert_eq!(cmds[1].line, 3);
        // Glued to a bare token, the backslash is part of it.
        assert_eq!(toks("a b\\\nc"), vec![vec!["a", "b\\"], vec!["c"]]);
        // After a quoted token it continues.
        assert_eq!(toks("a \"b\"\\\nc"), vec![vec!["a", "b", "c"]]);
    }

    #[test]
    fn too_many_tokens() {
        let src = "x ".repeat(MAX_TOKENS);
        assert!(tokenize(src.as_bytes(), 1).is_ok());
        let src = "x ".repeat(MAX_TOKENS + 1);
        assert_eq!(
            tokenize(src.as_bytes(), 1),
            Err(VtcError::TooManyTokens {
                line: 1,
                max: MAX_TOKENS
            })
        );
    }

    #[test]
    fn octal_and_hex_edges() {
        assert_eq!(backslash(b"\\0"), Some((0, 2)));
        assert_eq!(backslash(b"\\08"), Some((0, 2)));
        assert_eq!(backslash(b"\\0123"), Some((0o12, 4)));
        assert_eq!(backslash(b"\\777"), Some((0xff, 4)));
        assert_eq!(backslash(b"\\8"), None);
        assert_eq!(backslash(b"\\x4"), None);
        assert_eq!(backslash(b"\\xFf"), Some((0xff, 4)));
        assert_eq!(backslash(b"\\"), None);
    }
}
