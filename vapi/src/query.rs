//! The VSL query language (`varnishlog -q`, vsl-query(7)): tests on the
//! records of a group of transactions, combined with `and`, `or`, `not`
//! and parentheses; several lines are several queries, any of which may
//! match.
//!
//! A test is `[{LEVEL}] TAGLIST [:PREFIX] [[FIELD]] [OP VALUE]`, or
//! `vxid OP NUMBER`. It holds when one record of a transaction at the
//! level (`{2}`, `{2+}`, `{2-}`) with a tag of the list (globs allowed)
//! whose data starts with `PREFIX:` (headers) has, in its FIELD-th
//! whitespace-separated field (quotes group), a value such that `OP`
//! holds: `== != < > <= >=` compare numbers (integer or decimal, as the
//! value is written), `eq ne` strings, `~ !~` regular expressions; with
//! no operator the record's presence is enough.

use crate::dispatch::Transaction;
use crate::tag::Tag;
use pcre2::bytes::{Regex, RegexBuilder};

/// A parse error, in varnishlog's words with the position marked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Query expression error:\n{0}")]
pub struct QueryError(pub String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Val,
    Eoi,
    Eq,
    Neq,
    Leq,
    Geq,
    Lt,
    Gt,
    SEq,
    SNeq,
    Match,
    NoMatch,
    And,
    Or,
    Not,
    Vxid,
    LBrace,
    RBrace,
    LParen,
    RParen,
    LBrack,
    RBrack,
    Colon,
    Comma,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    b: usize,
    e: usize,
    dec: String,
}

fn isword(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'+' | b'.' | b'*')
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    i: usize,
    caseless: bool,
}

impl Parser<'_> {
    /// varnishlog's error text: the message, the position, the query
    /// and a marker under the offending token.
    fn err_at(&self, msg: &str, b: usize, e: usize, tokoff: Option<usize>) -> QueryError {
        let pos = b + tokoff.unwrap_or(0) + 1;
        let mut s = format!("{msg}(Pos {pos})\n");
        for c in self.src.chars() {
            s.push(if c.is_whitespace() { ' ' } else { c });
        }
        s.push('\n');
        for (i, _) in self.src.char_indices() {
            s.push(if i >= b && i < e {
                if Some(i - b) == tokoff {
                    '^'
                } else {
                    '#'
                }
            } else {
                '-'
            });
        }
        s.push('\n');
        QueryError(s)
    }

    fn err(&self, msg: &str) -> QueryError {
        let t = &self.toks[self.i];
        self.err_at(msg, t.b, t.e, None)
    }

    fn got(&self) -> String {
        let t = &self.toks[self.i];
        format!("'{}' ", &self.src[t.b..t.e])
    }

    fn lex(src: &str) -> Result<Vec<Token>, QueryError> {
        let s = src.as_bytes();
        let mut out = Vec::new();
        let mut p = 0;
        let fixed: &[(&str, Tok)] = &[
            ("==", Tok::Eq),
            ("!=", Tok::Neq),
            ("<=", Tok::Leq),
            (">=", Tok::Geq),
            ("!~", Tok::NoMatch),
            ("<", Tok::Lt),
            (">", Tok::Gt),
            ("~", Tok::Match),
            ("[", Tok::LBrack),
            ("]", Tok::RBrack),
            ("{", Tok::LBrace),
            ("}", Tok::RBrace),
            ("(", Tok::LParen),
            (")", Tok::RParen),
            (":", Tok::Colon),
            (",", Tok::Comma),
        ];
        let tok = |tok, b, e, dec: String| Token { tok, b, e, dec };
        while p < s.len() {
            let c = s[p];
            if c == b' ' || c == b'\t' {
                p += 1;
                continue;
            }
            if c == b'\\' && s.get(p + 1) == Some(&b'\n') {
                p += 2;
                continue;
            }
            if c == b'#' {
                while p < s.len() && s[p] != b'\n' {
                    p += 1;
                }
                continue;
            }
            if let Some((f, t)) = fixed.iter().find(|(f, _)| s[p..].starts_with(f.as_bytes())) {
                out.push(tok(*t, p, p + f.len(), String::new()));
                p += f.len();
                continue;
            }
            if c == b'"' || c == b'\'' {
                let mut q = p + 1;
                let mut dec = Vec::new();
                let mut closed = false;
                while q < s.len() {
                    match s[q] {
                        b'\\' => {
                            q += 1;
                            if q >= s.len() || s[q] == b'\n' {
                                break;
                            }
                            dec.push(s[q]);
                        }
                        b'\n' => break,
                        x if x == c => {
                            q += 1;
                            closed = true;
                            break;
                        }
                        x => dec.push(x),
                    }
                    q += 1;
                }
                if !closed {
                    let p2 = Parser {
                        src,
                        toks: vec![],
                        i: 0,
                        caseless: false,
                    };
                    return Err(p2.err_at("Unterminated string ", p, q, Some(q - p)));
                }
                out.push(tok(
                    Tok::Val,
                    p,
                    q,
                    String::from_utf8_lossy(&dec).into_owned(),
                ));
                p = q;
                continue;
            }
            if isword(c) {
                let mut q = p;
                while q < s.len() && isword(s[q]) {
                    q += 1;
                }
                let w = &src[p..q];
                let t = match w {
                    "eq" => Tok::SEq,
                    "ne" => Tok::SNeq,
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    "not" => Tok::Not,
                    "vxid" => Tok::Vxid,
                    _ => Tok::Val,
                };
                out.push(tok(t, p, q, w.to_string()));
                p = q;
                continue;
            }
            if c == b'\n' {
                out.push(tok(Tok::Eoi, p, p + 1, String::new()));
                p += 1;
                continue;
            }
            let p2 = Parser {
                src,
                toks: vec![],
                i: 0,
                caseless: false,
            };
            let end = src[p..]
                .chars()
                .next()
                .map_or(p + 1, |ch| p + ch.len_utf8());
            return Err(p2.err_at("Syntax error ", p, end, None));
        }
        out.push(tok(Tok::Eoi, s.len(), s.len(), String::new()));
        Ok(out)
    }

    fn peek(&self) -> Tok {
        self.toks[self.i].tok
    }

    fn next(&mut self) -> Result<(), QueryError> {
        if self.i + 1 >= self.toks.len() {
            return Err(QueryError(
                "Ran out of input, something is missing or maybe unbalanced parenthesis\n".into(),
            ));
        }
        self.i += 1;
        Ok(())
    }

    fn expect(&mut self, t: Tok, name: &str) -> Result<(), QueryError> {
        if self.peek() != t {
            let got = if self.peek() == Tok::Eoi {
                "end of input ".to_string()
            } else {
                self.got()
            };
            return Err(self.err(&format!("Expected {name} got {got}")));
        }
        self.next()
    }

    fn expr_or(&mut self) -> Result<Expr, QueryError> {
        let mut a = self.expr_and()?;
        while self.peek() == Tok::Or {
            self.next()?;
            let b = self.expr_and()?;
            a = Expr::Or(Box::new(a), Box::new(b));
        }
        Ok(a)
    }

    fn expr_and(&mut self) -> Result<Expr, QueryError> {
        let mut a = self.expr_not()?;
        while self.peek() == Tok::And {
            self.next()?;
            let b = self.expr_not()?;
            a = Expr::And(Box::new(a), Box::new(b));
        }
        Ok(a)
    }

    fn expr_not(&mut self) -> Result<Expr, QueryError> {
        if self.peek() == Tok::Not {
            self.next()?;
            return Ok(Expr::Not(Box::new(self.expr_group()?)));
        }
        self.expr_group()
    }

    fn expr_group(&mut self) -> Result<Expr, QueryError> {
        if self.peek() == Tok::LParen {
            self.next()?;
            let e = self.expr_or()?;
            self.expect(Tok::RParen, "')'")?;
            return Ok(e);
        }
        self.expr_cmp()
    }

    fn int_val(&self) -> Option<i64> {
        let d = &self.toks[self.i].dec;
        let d = d.trim_end();
        if let Some(h) = d.strip_prefix("0x").or_else(|| d.strip_prefix("0X")) {
            return i64::from_str_radix(h, 16).ok();
        }
        if d.len() > 1 && d.starts_with('0') && d.bytes().all(|c| c.is_ascii_digit()) {
            return i64::from_str_radix(&d[1..], 8).ok();
        }
        d.parse().ok()
    }

    fn expr_cmp(&mut self) -> Result<Expr, QueryError> {
        let mut lhs = Lhs {
            level: None,
            tags: Vec::new(),
            vxid: false,
            prefix: None,
            field: 0,
        };
        let mut ntags = 0;
        if self.peek() == Tok::LBrace {
            self.next()?;
            if self.peek() != Tok::Val {
                return Err(self.err(&format!("Expected integer got {}", self.got())));
            }
            let d = self.toks[self.i].dec.clone();
            let (num, pm) = match d.as_bytes().last() {
                Some(b'+') => (&d[..d.len() - 1], 1),
                Some(b'-') => (&d[..d.len() - 1], -1),
                _ => (&d[..], 0),
            };
            let n: u32 = num
                .parse()
                .map_err(|_| self.err("Syntax error in level limit "))?;
            lhs.level = Some((n, pm));
            self.next()?;
            self.expect(Tok::RBrace, "'}'")?;
        }
        loop {
            match self.peek() {
                Tok::Vxid => lhs.vxid = true,
                Tok::Val => {
                    ntags += 1;
                    let g = self.toks[self.i].dec.clone();
                    match Tag::glob(&g) {
                        Ok(t) => lhs.tags.extend(t),
                        Err(crate::tag::TagError::NoMatch(_)) => {
                            return Err(self.err("Tag name matches zero tags "))
                        }
                        Err(crate::tag::TagError::Ambiguous(_)) => {
                            return Err(self.err("Tag name is ambiguous "))
                        }
                        Err(crate::tag::TagError::Syntax(_)) => {
                            return Err(self.err("Syntax error in tag name "))
                        }
                    }
                }
                _ => return Err(self.err(&format!("Expected VSL tag name got {}", self.got()))),
            }
            self.next()?;
            if self.peek() != Tok::Comma {
                break;
            }
            self.next()?;
        }
        if self.peek() == Tok::Colon {
            self.next()?;
            if self.peek() != Tok::Val {
                return Err(self.err(&format!("Expected string got {}", self.got())));
            }
            lhs.prefix = Some(self.toks[self.i].dec.clone());
            self.next()?;
        }
        if self.peek() == Tok::LBrack {
            self.next()?;
            match (self.peek(), self.int_val()) {
                (Tok::Val, Some(n)) if n > 0 => lhs.field = n as usize,
                (Tok::Val, _) => return Err(self.err("Expected positive integer ")),
                _ => return Err(self.err(&format!("Expected integer got {}", self.got()))),
            }
            self.next()?;
            self.expect(Tok::RBrack, "']'")?;
        }
        if lhs.vxid && (ntags > 0 || lhs.level.is_some() || lhs.field > 0 || lhs.prefix.is_some()) {
            return Err(self.err("Unexpected taglist selection for vxid "));
        }
        let op = self.peek();
        if lhs.vxid
            && !matches!(
                op,
                Tok::Eq | Tok::Neq | Tok::Lt | Tok::Gt | Tok::Leq | Tok::Geq
            )
        {
            return Err(self.err(&format!("Expected vxid operator got {}", self.got())));
        }
        let op = match op {
            Tok::Eoi | Tok::And | Tok::Or | Tok::RParen => {
                return Ok(Expr::Test(lhs, Op::True));
            }
            Tok::Eq
            | Tok::Neq
            | Tok::Lt
            | Tok::Gt
            | Tok::Leq
            | Tok::Geq
            | Tok::SEq
            | Tok::SNeq
            | Tok::Match
            | Tok::NoMatch => op,
            _ => return Err(self.err(&format!("Expected operator got {}", self.got()))),
        };
        self.next()?;
        let op = match op {
            Tok::Eq | Tok::Neq | Tok::Lt | Tok::Gt | Tok::Leq | Tok::Geq => {
                if self.peek() != Tok::Val {
                    return Err(self.err(&format!("Expected number got {}", self.got())));
                }
                let d = self.toks[self.i].dec.clone();
                let n = if d.contains('.') {
                    if lhs.vxid {
                        return Err(self.err(&format!("Expected integer got {}", self.got())));
                    }
                    let f: f64 = d
                        .trim()
                        .parse()
                        .map_err(|_| self.err("Floating point parse error "))?;
                    Num::Float(f)
                } else {
                    Num::Int(
                        self.int_val()
                            .ok_or_else(|| self.err("Integer parse error "))?,
                    )
                };
                Op::Num(op, n)
            }
            Tok::SEq | Tok::SNeq => {
                if self.peek() != Tok::Val {
                    return Err(self.err(&format!("Expected string got {}", self.got())));
                }
                Op::Str(op == Tok::SEq, self.toks[self.i].dec.clone())
            }
            _ => {
                if self.peek() != Tok::Val {
                    return Err(
                        self.err(&format!("Expected regular expression got {}", self.got()))
                    );
                }
                let t = self.toks[self.i].clone();
                let re = RegexBuilder::new()
                    .caseless(self.caseless)
                    .build(&t.dec)
                    .map_err(|e| {
                        let off = e.offset().map(|o| o + 1);
                        let full = e.to_string();
                        let msg = full.rsplit(": ").next().unwrap_or(&full).to_string();
                        self.err_at(&format!("Regular expression error: {msg} "), t.b, t.e, off)
                    })?;
                Op::Re(op == Tok::Match, re)
            }
        };
        self.next()?;
        Ok(Expr::Test(lhs, op))
    }
}

#[derive(Clone, Copy, Debug)]
enum Num {
    Int(i64),
    Float(f64),
}

#[derive(Debug)]
enum Op {
    True,
    Num(Tok, Num),
    Str(bool, String),
    Re(bool, Regex),
}

#[derive(Debug)]
struct Lhs {
    /// `{N}`, `{N+}` (1), `{N-}` (-1).
    level: Option<(u32, i32)>,
    tags: Vec<Tag>,
    vxid: bool,
    prefix: Option<String>,
    field: usize,
}

#[derive(Debug)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Test(Lhs, Op),
}

/// A compiled query.
#[derive(Debug)]
pub struct Query {
    /// One per line of the query text: any may match.
    exprs: Vec<Expr>,
    caseless: bool,
}

impl Query {
    /// Compiles `src`; `caseless` (varnishlog's `-C`) makes `eq`/`ne`
    /// and regular expressions ignore case.
    pub fn new(src: &str, caseless: bool) -> Result<Query, QueryError> {
        let toks = Parser::lex(src)?;
        let mut p = Parser {
            src,
            toks,
            i: 0,
            caseless,
        };
        let mut exprs = Vec::new();
        loop {
            while p.peek() == Tok::Eoi && p.i + 1 < p.toks.len() {
                p.i += 1;
            }
            if p.peek() == Tok::Eoi {
                break;
            }
            let e = p.expr_or()?;
            if p.peek() != Tok::Eoi {
                return Err(p.err(&format!("Expected end of input got {}", p.got())));
            }
            exprs.push(e);
        }
        if exprs.is_empty() {
            return Err(p.err("Expected VSL tag name got '' "));
        }
        Ok(Query { exprs, caseless })
    }

    /// Whether the group matches.
    pub fn matches(&self, g: &[Transaction]) -> bool {
        self.exprs.iter().any(|e| self.exec(e, g))
    }

    fn exec(&self, e: &Expr, g: &[Transaction]) -> bool {
        match e {
            Expr::Or(a, b) => self.exec(a, g) || self.exec(b, g),
            Expr::And(a, b) => self.exec(a, g) && self.exec(b, g),
            Expr::Not(a) => !self.exec(a, g),
            Expr::Test(lhs, op) => self.test(lhs, op, g),
        }
    }

    fn test(&self, lhs: &Lhs, op: &Op, g: &[Transaction]) -> bool {
        if lhs.vxid {
            let Op::Num(o, Num::Int(n)) = op else {
                return false;
            };
            return g.iter().any(|t| cmp(*o, t.vxid as i64, *n));
        }
        for t in g {
            if let Some((lvl, pm)) = lhs.level {
                let ok = match pm {
                    -1 => t.level <= lvl,
                    1 => t.level >= lvl,
                    _ => t.level == lvl,
                };
                if !ok {
                    continue;
                }
            }
            for r in &t.records {
                if lhs.tags.contains(&r.tag) && self.test_rec(lhs, op, &r.data) {
                    return true;
                }
            }
        }
        false
    }

    fn test_rec(&self, lhs: &Lhs, op: &Op, data: &[u8]) -> bool {
        let mut b = data;
        if let Some(pre) = &lhs.prefix {
            let pl = pre.len();
            if b.len() < pl || !b[..pl].eq_ignore_ascii_case(pre.as_bytes()) {
                return false;
            }
            if b.get(pl) != Some(&b':') {
                return false;
            }
            b = &b[pl + 1..];
            while b.first().is_some_and(|c| c.is_ascii_whitespace()) {
                b = &b[1..];
            }
        }
        if lhs.field > 0 {
            match field(b, lhs.field) {
                Some(f) => b = f,
                None => return false,
            }
        }
        match op {
            Op::True => true,
            Op::Num(o, n) => {
                if b.is_empty() {
                    return false;
                }
                let Some(v) = parse_number(b) else {
                    return false;
                };
                match n {
                    Num::Int(n) => cmp(*o, v as i64, *n),
                    Num::Float(f) => cmpf(*o, v, *f),
                }
            }
            Op::Str(eq, s) => {
                let same = if self.caseless {
                    b.eq_ignore_ascii_case(s.as_bytes())
                } else {
                    b == s.as_bytes()
                };
                same == *eq
            }
            Op::Re(m, re) => re.is_match(b).unwrap_or(false) == *m,
        }
    }
}

/// The `n`-th whitespace-separated field of `b` (1-based); a field
/// starting with `"` runs to the next `"`.
fn field(b: &[u8], n: usize) -> Option<&[u8]> {
    let mut rest = b;
    let mut cur: &[u8] = &[];
    for i in 0..n {
        let start = rest.iter().position(|c| !c.is_ascii_whitespace())?;
        rest = &rest[start..];
        if rest.first() == Some(&b'"') {
            let end = rest[1..].iter().position(|&c| c == b'"')?;
            cur = &rest[1..1 + end];
            rest = &rest[end + 2..];
            if i + 1 < n && rest.first().is_some_and(|c| !c.is_ascii_whitespace()) {
                return None;
            }
        } else {
            let end = rest
                .iter()
                .position(|c| c.is_ascii_whitespace())
                .unwrap_or(rest.len());
            cur = &rest[..end];
            rest = &rest[end..];
        }
    }
    (!cur.is_empty()).then_some(cur)
}

/// A number at the start of `b` as Varnish reads it (an integer of at
/// most 15 digits, optionally with up to 3 decimals counted).
fn parse_number(b: &[u8]) -> Option<f64> {
    let mut i = 0;
    while b.get(i).is_some_and(|c| *c == b' ' || *c == b'\t') {
        i += 1;
    }
    let neg = b.get(i) == Some(&b'-');
    if neg {
        i += 1;
    }
    let start = i;
    let mut v: f64 = 0.0;
    while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
        v = v * 10.0 + f64::from(c - b'0');
        i += 1;
    }
    let nd = i - start;
    if nd > 15 {
        return None;
    }
    if b.get(i) == Some(&b'.') {
        let mut scale = 0.1;
        let mut j = i + 1;
        let mut k = 0;
        while let Some(c) = b.get(j).filter(|c| c.is_ascii_digit()) {
            if k < 3 {
                v += scale * f64::from(c - b'0');
                scale *= 0.1;
            }
            k += 1;
            j += 1;
        }
        if nd == 0 && k == 0 {
            return None;
        }
    } else if nd == 0 {
        return None;
    }
    Some(if neg { -v } else { v })
}

fn cmp(o: Tok, a: i64, b: i64) -> bool {
    match o {
        Tok::Eq => a == b,
        Tok::Neq => a != b,
        Tok::Lt => a < b,
        Tok::Gt => a > b,
        Tok::Leq => a <= b,
        Tok::Geq => a >= b,
        _ => false,
    }
}

fn cmpf(o: Tok, a: f64, b: f64) -> bool {
    match o {
        Tok::Eq => a == b,
        Tok::Neq => a != b,
        Tok::Lt => a < b,
        Tok::Gt => a > b,
        Tok::Leq => a <= b,
        Tok::Geq => a >= b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::TxType;
    use crate::record::{Kind, Record};

    fn group() -> Vec<Transaction> {
        let r = |vxid, tag, d: &str| Record {
            vxid,
            tag,
            kind: Kind::Client,
            data: d.as_bytes().to_vec(),
        };
        vec![
            Transaction {
                level: 1,
                vxid: 1001,
                parent: 0,
                typ: TxType::Req,
                reason: "rxreq".into(),
                records: vec![
                    r(1001, Tag::ReqURL, "/x"),
                    r(1001, Tag::ReqHeader, "Host: example.com"),
                    r(1001, Tag::VCL_Log, "float1: 123.456"),
                    r(1001, Tag::RespStatus, "200"),
                    r(1001, Tag::Timestamp, "Resp: 1.5 0.25 \"q q\" 7"),
                ],
            },
            Transaction {
                level: 2,
                vxid: 1002,
                parent: 1001,
                typ: TxType::Bereq,
                reason: "fetch".into(),
                records: vec![r(1002, Tag::BereqURL, "/x")],
            },
        ]
    }

    fn q(s: &str) -> bool {
        Query::new(s, false).unwrap().matches(&group())
    }

    #[test]
    fn tests() {
        assert!(q(r#"ReqURL eq "/x""#));
        assert!(!q(r#"ReqURL eq "/y""#));
        assert!(q("ReqURL ne '/y'"));
        assert!(q("ReqURL ~ \"^/\""));
        assert!(Query::new("ReqURL ~ ^/", false).is_err());
        assert!(q("ReqHeader:host eq example.com"));
        assert!(!q("ReqHeader:hos eq example.com"));
        assert!(q("VCL_Log:float1 >= 123"));
        assert!(q("VCL_Log:float1 > 123.4"));
        assert!(!q("VCL_Log:float1 == 0"));
        assert!(q("RespStatus == 200 and not RespStatus == 503"));
        assert!(q("vxid == 1002"));
        assert!(!q("vxid == 1003"));
        assert!(q("{2}BereqURL"));
        assert!(!q("{1}BereqURL"));
        assert!(q("{1+}BereqURL"));
        assert!(q("Timestamp:Resp[2] == 0.25"));
        assert!(q("Timestamp:Resp[3] eq \"q q\""));
        assert!(q("Req*,Beresp* ~ example"));
        assert!(q(
            "(ReqURL eq '/z' or RespStatus < 300) and Begin or ReqURL"
        ));
        assert!(q("RespStatus eq 404\nReqURL"));
    }

    #[test]
    fn errors_look_like_varnishlogs() {
        let e = Query::new(r#"ReqURL eqq "/""#, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Query expression error:\nExpected operator got 'eqq' (Pos 8)\nReqURL eqq \"/\"\n-------###----\n"
        );
        let e = Query::new("Nope == 1", false).unwrap_err();
        assert!(e.0.starts_with("Tag name matches zero tags (Pos 1)"));
        assert!(Query::new("ReqURL ~ \"(\"", false).is_err());
        assert!(Query::new("ReqURL eq \"/\" and", false).is_err());
        assert!(Query::new("(ReqURL", false).is_err());
        assert!(Query::new("vxid ~ 1", false).is_err());
        assert!(Query::new("ReqURL eq 'x", false).is_err());
        assert!(Query::new("ReqURL @", false).is_err());
    }
}
