//! varnishlog's default output (`-g vxid`, no query, every record shown)
//! straight from the log's bytes: a transaction whose records sit
//! together from its `Begin` to its `End` — nearly every request and
//! backend request, since the server hands a transaction's records over
//! in one batch — is printed as it is read, into one output buffer, with
//! no record, group or table built for it. Whatever else there is (a
//! transaction split over batches or interleaved with others, sessions,
//! records outside any transaction) goes through the
//! [`crate::Dispatcher`] as before, so the output is the same either way.
//! A reader that keeps up costs the machine less, and on a busy machine
//! that is CPU the server keeps.

use crate::dispatch::TxType;
use crate::fmt::append;
use crate::record::{peek, unpack_lines, unpack_parts, DecodeError, Lines, HEADER, PACKED};
use crate::tag::{self, Tag};
use std::sync::OnceLock;

/// If a whole transaction starts at the front of `buf` — a `Begin`,
/// then only records of its VXID up to its `End` — how many bytes it
/// takes.
pub fn whole_txn(buf: &[u8]) -> Option<usize> {
    let (vxid, t, _, _) = peek(buf)?;
    if t != Tag::Begin as u8 || vxid == 0 {
        return None;
    }
    let mut at = 0;
    loop {
        let (v, t, _, d) = peek(&buf[at..])?;
        if v != vxid {
            return None;
        }
        at += HEADER + d.len();
        if t == Tag::End as u8 {
            return Some(at);
        }
    }
}

/// A record line's start for each tag at level 1: `-   `, the name
/// padded to 14 columns, a space (what [`crate::print::group`] writes).
fn prefixes() -> &'static [Vec<u8>] {
    static P: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    P.get_or_init(|| {
        (0..=255u8)
            .map(|n| {
                let name = Tag::from_u8(n).map_or("", |t| t.name());
                format!("-   {name:<14} ").into_bytes()
            })
            .collect()
    })
}

/// Appends the transaction [`whole_txn`] found to `out` as varnishlog
/// `-g vxid` prints it (see [`crate::print::group`]): each line in one
/// copy, packed records written out next to their line's start.
pub fn print_txn(out: &mut Vec<u8>, txn: &[u8]) -> Result<(), DecodeError> {
    let prefixes = prefixes();
    let mut at = 0;
    let mut first = true;
    while let Some((vxid, t, k, d)) = peek(&txn[at..]) {
        at += HEADER + d.len();
        let tag = Tag::from_u8(t).ok_or(DecodeError::Tag(t))?;
        let prefix = &prefixes[usize::from(t)][..];
        let plain = tag.flags() & (tag::UNSAFE | tag::BINARY) == 0;
        if first {
            first = false;
            header_line(out, tag, k, d, vxid)?;
        }
        if k & PACKED != 0 && plain {
            unpack_lines(tag, d, out, prefix)?;
        } else if k & PACKED != 0 {
            unpack_parts(tag, d, &mut Escaped { out, tag, prefix })?;
        } else if plain {
            append(out, [prefix, d, b"\n"]);
        } else {
            out.extend_from_slice(prefix);
            let _ = crate::print::data_of(out, tag, d);
            out.push(b'\n');
        }
    }
    out.push(b'\n');
    Ok(())
}

/// Lines of a packed record whose tag's data is shown escaped.
struct Escaped<'a> {
    out: &'a mut Vec<u8>,
    tag: Tag,
    prefix: &'a [u8],
}

impl Lines for Escaped<'_> {
    fn line<const N: usize>(&mut self, parts: [&[u8]; N]) {
        let text = parts.concat();
        self.out.extend_from_slice(self.prefix);
        let _ = crate::print::data_of(self.out, self.tag, &text);
        self.out.push(b'\n');
    }
}

/// A transaction's header line, with the type its `Begin` (`d`, packed
/// or not) names: `*   << Request  >> 1002`.
fn header_line(out: &mut Vec<u8>, tag: Tag, k: u8, d: &[u8], vxid: u64) -> Result<(), DecodeError> {
    /// The type a `Begin` names: its first word.
    struct Type(TxType);
    impl Lines for Type {
        fn line<const N: usize>(&mut self, parts: [&[u8]; N]) {
            let w = parts.first().copied().unwrap_or(b"");
            self.0 = w
                .split(|&c| c == b' ')
                .next()
                .and_then(|w| std::str::from_utf8(w).ok())
                .map_or(TxType::Unknown, TxType::parse);
        }
    }
    let mut typ = Type(TxType::Unknown);
    if k & PACKED != 0 {
        // A packed `Begin`'s first part is its type.
        unpack_parts(tag, d, &mut typ)?;
    } else {
        typ.line([d]);
    }
    let typ = typ.0;
    let mut n = [0u8; 20];
    let n = crate::fmt::fmt_u64(&mut n, vxid);
    append(
        out,
        [
            b"*   ",
            typ.label().as_bytes(),
            b" ",
            n,
            &b"          "[n.len().min(10)..],
            b"\n",
        ],
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{decode, encode, encode_header, Item, Kind, Record};
    use crate::{Dispatcher, Filter, Grouping};

    fn rec(vxid: u64, tag: Tag, data: &str) -> Record {
        Record {
            vxid,
            tag,
            kind: Kind::Client,
            data: data.as_bytes().to_vec(),
        }
    }

    /// The fast path prints what the dispatcher and `print::group` do.
    #[test]
    fn same_as_the_dispatcher() {
        let mut b = Vec::new();
        for r in [
            rec(1005, Tag::Begin, "req 1004 rxreq"),
            rec(1005, Tag::ReqURL, "/x"),
            rec(1005, Tag::Hash, "a\u{1}"),
            rec(
                1005,
                Tag::BackendOpen,
                "a very long value, longer than sixteen bytes",
            ),
        ] {
            encode(&mut b, &r);
        }
        // Packed records: a block of headers and a timestamp.
        let mut hs = vec![crate::record::Packed::Headers as u8];
        for (n, v) in [("Host", "x"), ("Accept", "*/*")] {
            hs.extend((n.len() as u16).to_le_bytes());
            hs.extend((v.len() as u16).to_le_bytes());
            hs.extend_from_slice(n.as_bytes());
            hs.extend_from_slice(v.as_bytes());
        }
        let mut ts = vec![crate::record::Packed::Timestamp as u8];
        for x in [1_796_290_544.511_465f64, 0.000_054, 0.000_049] {
            ts.extend(x.to_le_bytes());
        }
        ts.extend_from_slice(b"Resp");
        for (tag, data) in [(Tag::RespHeader, hs), (Tag::Timestamp, ts)] {
            encode_header(&mut b, 1005, tag as u8, Kind::Client, data.len() as u16);
            let p = b.len() - 3;
            b[p] |= PACKED;
            b.extend_from_slice(&data);
        }
        encode(&mut b, &rec(1005, Tag::End, ""));
        let n = whole_txn(&b).expect("a whole transaction");
        assert_eq!(n, b.len());
        let mut fast = Vec::new();
        print_txn(&mut fast, &b).unwrap();

        let mut d = Dispatcher::new(Grouping::Vxid);
        let mut slow = Vec::new();
        let mut at = 0;
        while at < b.len() {
            let mut items = Vec::new();
            at += decode(&b[at..], &mut items).unwrap().unwrap();
            for i in items {
                let Item::Record(r) = i else { panic!() };
                for g in d.feed(r) {
                    crate::print::group(&mut slow, &g, &Filter::new(), false).unwrap();
                }
            }
        }
        let (fast, slow) = (
            String::from_utf8(fast).unwrap(),
            String::from_utf8(slow).unwrap(),
        );
        assert_eq!(fast, slow);
        assert!(fast.contains("RespHeader     Accept: */*\n"), "{fast}");

        // Another VXID inside, or no End: not a whole transaction.
        let mut mixed = Vec::new();
        encode(&mut mixed, &rec(7, Tag::Begin, "req 1 rxreq"));
        encode(&mut mixed, &rec(8, Tag::ReqURL, "/"));
        encode(&mut mixed, &rec(7, Tag::End, ""));
        assert_eq!(whole_txn(&mixed), None);
        assert_eq!(whole_txn(&mixed[..mixed.len() - 5]), None);
    }
}
