//! varnishlog's default output (`-g vxid`, no query, every record shown)
//! straight from the log's bytes: a transaction whose records sit
//! together from its `Begin` to its `End` — nearly every request and
//! backend request, since the server hands a transaction's records over
//! in one batch — is printed as it is read, with no record, group or
//! table built for it. Whatever else there is (a transaction split over
//! batches or interleaved with others, sessions, records outside any
//! transaction) goes through the [`crate::Dispatcher`] as before, so the
//! output is the same either way. A reader that keeps up costs the
//! machine less, and on a busy machine that is CPU the server keeps.

use crate::dispatch::TxType;
use crate::record::{peek, unpack_each, DecodeError, Kind, PACKED};
use crate::tag::Tag;
use std::io::{self, Write};

/// If a whole transaction starts at the front of `buf` — a `Begin`,
/// then only records of its VXID up to its `End` — how many bytes it
/// takes.
pub fn whole_txn(buf: &[u8]) -> Option<usize> {
    let (vxid, tag, _, _) = peek(buf)?;
    if tag != Tag::Begin as u8 || vxid == 0 {
        return None;
    }
    let mut at = 0;
    loop {
        let (v, t, _, d) = peek(&buf[at..])?;
        if v != vxid {
            return None;
        }
        at += crate::record::HEADER + d.len();
        if t == Tag::End as u8 {
            return Some(at);
        }
    }
}

/// Prints the transaction [`whole_txn`] found as varnishlog `-g vxid`
/// does (see [`crate::print::group`]); `scratch` holds packed records'
/// text.
pub fn print_txn(out: &mut impl Write, txn: &[u8], scratch: &mut Vec<u8>) -> io::Result<()> {
    let bad = |e: DecodeError| io::Error::new(io::ErrorKind::InvalidData, e);
    let mut at = 0;
    let mut first = true;
    while let Some((vxid, t, k, d)) = peek(&txn[at..]) {
        at += crate::record::HEADER + d.len();
        let tag = Tag::from_u8(t).ok_or_else(|| bad(DecodeError::Tag(t)))?;
        let kind = Kind::from_byte(k);
        let mut each = |text: &[u8]| -> io::Result<()> {
            if first {
                first = false;
                let typ = text
                    .split(|&c| c == b' ')
                    .next()
                    .and_then(|w| std::str::from_utf8(w).ok())
                    .map_or(TxType::Unknown, TxType::parse);
                out.write_all(b"*   ")?;
                out.write_all(typ.label().as_bytes())?;
                out.write_all(b" ")?;
                let mut n = [0u8; 20];
                let n = crate::fmt::fmt_u64(&mut n, vxid);
                out.write_all(n)?;
                out.write_all(&b"          "[n.len().min(10)..])?;
                out.write_all(b"\n")?;
            }
            out.write_all(b"-   ")?;
            crate::print::line(out, vxid, tag, kind, text, false)
        };
        if k & PACKED != 0 {
            let mut r = Ok(());
            unpack_each(tag, d, scratch, |text| {
                if r.is_ok() {
                    r = each(text);
                }
            })
            .map_err(bad)?;
            r?;
        } else {
            each(d)?;
        }
    }
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{decode, encode, Item, Record};
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
            rec(1005, Tag::End, ""),
        ] {
            encode(&mut b, &r);
        }
        // A packed block of headers.
        let mut hs = vec![crate::record::Packed::Headers as u8];
        for (n, v) in [("Host", "x"), ("Accept", "*/*")] {
            hs.extend((n.len() as u16).to_le_bytes());
            hs.extend((v.len() as u16).to_le_bytes());
            hs.extend_from_slice(n.as_bytes());
            hs.extend_from_slice(v.as_bytes());
        }
        let at = b.len() - crate::record::HEADER;
        let end = b.split_off(at);
        crate::record::encode_header(
            &mut b,
            1005,
            Tag::RespHeader as u8,
            Kind::Client,
            hs.len() as u16,
        );
        let p = b.len() - 3;
        b[p] |= PACKED;
        b.extend_from_slice(&hs);
        b.extend_from_slice(&end);
        let n = whole_txn(&b).expect("a whole transaction");
        assert_eq!(n, b.len());
        let mut fast = Vec::new();
        print_txn(&mut fast, &b, &mut Vec::new()).unwrap();

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
        assert_eq!(
            String::from_utf8(fast).unwrap(),
            String::from_utf8(slow).unwrap()
        );

        // Another VXID inside, or no End: not a whole transaction.
        let mut mixed = Vec::new();
        encode(&mut mixed, &rec(7, Tag::Begin, "req 1 rxreq"));
        encode(&mut mixed, &rec(8, Tag::ReqURL, "/"));
        encode(&mut mixed, &rec(7, Tag::End, ""));
        assert_eq!(whole_txn(&mixed), None);
        assert_eq!(whole_txn(&mixed[..mixed.len() - 5]), None);
    }
}
