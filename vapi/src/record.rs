//! Log records and their wire form.
//!
//! A record is what varnishd's `VSLb()` writes: the transaction's VXID,
//! a tag, whether the transaction is a client's or a backend's, and a
//! line of data. On the wire (the ring and Shellac's `/log` stream) each
//! record is an 8-byte header — VXID (u32, little endian: VXIDs wrap at
//! 2^30, as Varnish's), tag (u8), kind (u8), data length (u16, little
//! endian) — followed by the data. (Varnish's records have 8-byte headers
//! too; a request logs about 40 records, and the header is a third of
//! the bytes the server writes for it.) A header with tag
//! 0 is not a record: its data is the decimal count of records the
//! reader lost because it fell behind the ring.
//!
//! Packed records: a kind byte with [`PACKED`] set carries its numbers
//! in binary, and readers write them out ([`decode`] gives the same
//! record the text form would). The writer packs the records every
//! request logs several of with numbers in them, `Timestamp` (three
//! `f64` then the label) and `Hit`/`HitPass`/`HitMiss` (the object's
//! VXID as a `u64`, then one or three `f64`), so formatting those costs
//! the reader, not the server.

use crate::tag::Tag;

/// Size of a record header on the wire.
pub const HEADER: usize = 8;
/// Where the header's tag byte is (after the VXID).
pub const TAG_AT: usize = 4;
/// Where the header's kind byte is.
pub const KIND_AT: usize = 5;
/// Where the header's data length (u16) is.
pub const LEN_AT: usize = 6;

/// In a record header's kind byte: the data is packed (see above).
pub const PACKED: u8 = 0x80;

/// Whose transaction a record belongs to (varnishlog's `c`, `b`, `-`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A session or client request (`c`).
    Client,
    /// A backend request (`b`).
    Backend,
    /// Not a transaction's (VXID 0: CLI, probes) (`-`).
    None,
}

impl Kind {
    /// The wire byte.
    pub fn byte(self) -> u8 {
        match self {
            Kind::Client => 1,
            Kind::Backend => 2,
            Kind::None => 0,
        }
    }

    /// From the wire byte (without [`PACKED`]).
    pub fn from_byte(b: u8) -> Kind {
        match b & !PACKED {
            1 => Kind::Client,
            2 => Kind::Backend,
            _ => Kind::None,
        }
    }

    /// varnishlog's letter.
    pub fn letter(self) -> char {
        match self {
            Kind::Client => 'c',
            Kind::Backend => 'b',
            Kind::None => '-',
        }
    }
}

/// One log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The transaction (0 for records outside any).
    pub vxid: u64,
    /// What the record says.
    pub tag: Tag,
    /// Client, backend or neither.
    pub kind: Kind,
    /// The data (usually text, without a trailing NUL).
    pub data: Vec<u8>,
}

impl Record {
    /// The data as text (lossily, for display and matching).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.data)
    }
}

/// What a reader gets from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A record.
    Record(Record),
    /// This many records were lost (the reader fell behind).
    Lost(u64),
}

/// A record header as one little-endian word (VXIDs are below 2^30).
#[inline(always)]
pub fn header_word(vxid: u64, tag: u8, kind: u8, len: u16) -> u64 {
    (vxid & 0xffff_ffff)
        | u64::from(tag) << (8 * TAG_AT)
        | u64::from(kind) << (8 * KIND_AT)
        | u64::from(len) << (8 * LEN_AT)
}

/// Writes a record header for `len` bytes of data.
#[inline]
pub fn encode_header(out: &mut Vec<u8>, vxid: u64, tag: u8, kind: Kind, len: u16) {
    out.extend_from_slice(&header_word(vxid, tag, kind.byte(), len).to_le_bytes());
}

/// Writes a whole record (data longer than 65535 bytes is cut).
pub fn encode(out: &mut Vec<u8>, r: &Record) {
    let len = r.data.len().min(usize::from(u16::MAX));
    encode_header(out, r.vxid, r.tag as u8, r.kind, len as u16);
    out.extend_from_slice(&r.data[..len]);
}

/// Writes a "lost records" marker.
pub fn encode_lost(out: &mut Vec<u8>, n: u64) {
    let s = n.to_string();
    encode_header(out, 0, 0, Kind::None, s.len() as u16);
    out.extend_from_slice(s.as_bytes());
}

/// Why bytes are not a record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A tag number no tag has.
    #[error("bad record: unknown tag {0}")]
    Tag(u8),
    /// A lost-marker whose count is not a number.
    #[error("bad record: malformed lost marker")]
    Lost,
    /// A packed record of a tag that is never packed, or too short.
    #[error("bad record: malformed packed {0} record")]
    Packed(&'static str),
}

/// Packed data's first byte: what follows (see [`Packed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Packed {
    /// Three `f64` then the label: `LABEL: A B C` (`Timestamp`).
    Timestamp = 1,
    /// A `u64` then one to three `f64`: `N A [B C]` (`Hit`, `HitPass`,
    /// `HitMiss`).
    Hit = 2,
    /// `u64`s: `N N …` (`ReqAcct`, `RespStatus`, `Length`).
    Numbers = 3,
    /// A `u64`, a byte `L`, `L` bytes of kind, the reason: `KIND N
    /// REASON` (`Begin`, `Link`).
    Link = 4,
    /// Headers, each a `u16` name length, a `u16` value length, the name
    /// and the value: one record `NAME: VALUE` per header.
    Headers = 5,
}

/// Where [`unpack_parts`] puts each record's text: the parts to write
/// one after the other (a fixed number per kind of record, so that a
/// copy of them unrolls).
pub trait Lines {
    /// One record's text, as `N` parts to write in order.
    fn line<const N: usize>(&mut self, parts: [&[u8]; N]);
}

/// Gives `sink` the text of each record a packed record's data holds
/// (see the module's documentation); returns how many. Nothing is given
/// for data that is not a valid packed record. The parts point into
/// buffers of this call: readers copy them where they want them
/// ([`unpack_lines`] next to a line's start in one copy, [`decode`]
/// into a record).
pub fn unpack_parts<S: Lines>(tag: Tag, data: &[u8], sink: &mut S) -> Result<usize, DecodeError> {
    use crate::fmt::{fmt_fixed6, fmt_u64, F6};
    let bad = || DecodeError::Packed(tag.name());
    let (&code, body) = data.split_first().ok_or_else(bad)?;
    let word = |i: usize| -> Result<[u8; 8], DecodeError> {
        body.get(i * 8..i * 8 + 8)
            .and_then(|w| w.try_into().ok())
            .ok_or_else(bad)
    };
    let real = |i: usize| word(i).map(f64::from_le_bytes);
    let int = |i: usize| word(i).map(u64::from_le_bytes);
    let mut d = [0u8; 20];
    let (mut f, mut g, mut h) = ([0u8; F6], [0u8; F6], [0u8; F6]);
    match code {
        c if c == Packed::Timestamp as u8 => {
            let label = body.get(24..).ok_or_else(bad)?;
            let (a, b, c) = (real(0)?, real(1)?, real(2)?);
            let (a, b, c) = (
                fmt_fixed6(&mut f, a),
                fmt_fixed6(&mut g, b),
                fmt_fixed6(&mut h, c),
            );
            sink.line([label, b": ", a, b" ", b, b" ", c]);
        }
        c if c == Packed::Hit as u8 => {
            let n = body.len() / 8;
            if !matches!(body.len(), 16 | 24 | 32) {
                return Err(bad());
            }
            let x = fmt_u64(&mut d, int(0)?);
            let a = fmt_fixed6(&mut f, real(1)?);
            if n == 2 {
                sink.line([x, b" ", a]);
            } else if n == 3 {
                sink.line([x, b" ", a, b" ", fmt_fixed6(&mut g, real(2)?)]);
            } else {
                let b = fmt_fixed6(&mut g, real(2)?);
                sink.line([x, b" ", a, b" ", b, b" ", fmt_fixed6(&mut h, real(3)?)]);
            }
        }
        c if c == Packed::Numbers as u8 => {
            if body.len() % 8 != 0 || body.len() > 6 * 8 {
                return Err(bad());
            }
            // Up to six numbers, written one after the other.
            let mut text = [0u8; 6 * 21];
            let mut end = 0;
            for i in 0..body.len() / 8 {
                if i > 0 {
                    text[end] = b' ';
                    end += 1;
                }
                let n = fmt_u64(&mut d, int(i)?);
                text[end..end + n.len()].copy_from_slice(n);
                end += n.len();
            }
            sink.line([&text[..end]]);
        }
        c if c == Packed::Link as u8 => {
            let n = usize::from(*body.get(8).ok_or_else(bad)?);
            let k = body.get(9..9 + n).ok_or_else(bad)?;
            let v = int(0)?;
            sink.line([k, b" ", fmt_u64(&mut d, v), b" ", &body[9 + n..]]);
        }
        c if c == Packed::Headers as u8 => {
            // Checked whole first: a bad block gives no records at all.
            let mut rest = body;
            let mut n = 0;
            while !rest.is_empty() {
                let l = |i: usize| {
                    rest.get(i..i + 2)
                        .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
                };
                let (nl, vl) = (l(0).ok_or_else(bad)?, l(2).ok_or_else(bad)?);
                rest = rest.get(4 + nl + vl..).ok_or_else(bad)?;
                n += 1;
            }
            let mut rest = body;
            while !rest.is_empty() {
                let nl = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
                let vl = usize::from(u16::from_le_bytes([rest[2], rest[3]]));
                sink.line([&rest[4..4 + nl], b": ", &rest[4 + nl..4 + nl + vl]]);
                rest = &rest[4 + nl + vl..];
            }
            return Ok(n);
        }
        _ => return Err(bad()),
    }
    Ok(1)
}

/// Appends the records a packed record holds to `out` as lines:
/// `prefix`, the text, a newline, each in one copy (varnishlog's
/// output, see [`crate::fast`]); returns how many.
pub fn unpack_lines(
    tag: Tag,
    data: &[u8],
    out: &mut Vec<u8>,
    prefix: &[u8],
) -> Result<usize, DecodeError> {
    struct Out<'a>(&'a mut Vec<u8>, &'a [u8]);
    impl Lines for Out<'_> {
        #[inline(always)]
        fn line<const N: usize>(&mut self, parts: [&[u8]; N]) {
            crate::fmt::append_around(self.0, self.1, parts, b"\n");
        }
    }
    unpack_parts(tag, data, &mut Out(out, prefix))
}

/// The records a packed record holds, appended to `out` as items.
fn unpack(
    vxid: u64,
    tag: Tag,
    kind: Kind,
    data: &[u8],
    out: &mut Vec<Item>,
) -> Result<usize, DecodeError> {
    struct Items<'a> {
        out: &'a mut Vec<Item>,
        vxid: u64,
        tag: Tag,
        kind: Kind,
    }
    impl Lines for Items<'_> {
        fn line<const N: usize>(&mut self, parts: [&[u8]; N]) {
            self.out.push(Item::Record(Record {
                vxid: self.vxid,
                tag: self.tag,
                kind: self.kind,
                data: parts.concat(),
            }))
        }
    }
    let mut items = Items {
        out,
        vxid,
        tag,
        kind,
    };
    unpack_parts(tag, data, &mut items)
}

/// A record in wire form at the front of `buf`: VXID, tag byte, kind
/// byte (with [`PACKED`]) and data; `None` when `buf` holds less than a
/// whole record.
#[inline]
pub fn peek(buf: &[u8]) -> Option<(u64, u8, u8, &[u8])> {
    let h = buf.get(..HEADER)?;
    let vxid = u64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
    let len = usize::from(u16::from_le_bytes([h[LEN_AT], h[LEN_AT + 1]]));
    let data = buf.get(HEADER..HEADER + len)?;
    Some((vxid, h[TAG_AT], h[KIND_AT], data))
}

/// Reads the item at the front of `buf` into `out` (a packed record
/// may hold several records): `Ok(None)` when more bytes are needed,
/// else how many bytes it took.
pub fn decode(buf: &[u8], out: &mut Vec<Item>) -> Result<Option<usize>, DecodeError> {
    let Some((vxid, tag, k, data)) = peek(buf) else {
        return Ok(None);
    };
    let kind = Kind::from_byte(k);
    if tag == 0 {
        let n = std::str::from_utf8(data)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(DecodeError::Lost)?;
        out.push(Item::Lost(n));
    } else {
        let tag = Tag::from_u8(tag).ok_or(DecodeError::Tag(tag))?;
        if k & PACKED != 0 {
            unpack(vxid, tag, kind, data, out)?;
        } else {
            out.push(Item::Record(Record {
                vxid,
                tag,
                kind,
                data: data.to_vec(),
            }));
        }
    }
    Ok(Some(HEADER + data.len()))
}

/// [`decode`] for exactly one item (tests and tools).
pub fn decode_one(buf: &[u8]) -> Result<Option<(Item, usize)>, DecodeError> {
    let mut out = Vec::new();
    Ok(decode(buf, &mut out)?.and_then(|n| out.pop().map(|i| (i, n))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r = Record {
            vxid: 1001,
            tag: Tag::ReqURL,
            kind: Kind::Client,
            data: b"/x".to_vec(),
        };
        let mut b = Vec::new();
        encode(&mut b, &r);
        encode_lost(&mut b, 42);
        let (i, n) = decode_one(&b).unwrap().unwrap();
        assert_eq!(i, Item::Record(r));
        let (j, m) = decode_one(&b[n..]).unwrap().unwrap();
        assert_eq!(j, Item::Lost(42));
        assert_eq!(n + m, b.len());
        assert_eq!(decode_one(&b[..5]), Ok(None));
        assert_eq!(decode_one(&b[..n - 1]), Ok(None));
        let mut bad = b.clone();
        bad[TAG_AT] = 250;
        assert_eq!(decode_one(&bad), Err(DecodeError::Tag(250)));
    }

    /// Packed records read as their text would.
    #[test]
    fn packed() {
        let rec = |tag: Tag, data: Vec<u8>| {
            let mut b = Vec::new();
            encode_header(&mut b, 7, tag as u8, Kind::Client, data.len() as u16);
            b[KIND_AT] |= PACKED;
            b.extend_from_slice(&data);
            b
        };
        let le = |xs: &[f64]| xs.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let texts = |b: &[u8]| {
            let mut out = Vec::new();
            let n = decode(b, &mut out).unwrap().unwrap();
            assert_eq!(n, b.len());
            out.into_iter()
                .map(|i| match i {
                    Item::Record(r) => {
                        assert_eq!((r.vxid, r.kind), (7, Kind::Client));
                        r.text().into_owned()
                    }
                    Item::Lost(_) => panic!(),
                })
                .collect::<Vec<_>>()
        };
        let mut ts = vec![Packed::Timestamp as u8];
        ts.extend(le(&[1_796_290_544.511_465, 0.000_054, 0.000_049]));
        ts.extend_from_slice(b"Process");
        assert_eq!(
            texts(&rec(Tag::Timestamp, ts)),
            ["Process: 1796290544.511465 0.000054 0.000049"]
        );
        let mut hit = vec![Packed::Hit as u8];
        hit.extend(1003u64.to_le_bytes());
        hit.extend(le(&[3599.9887, 10.0, 0.0]));
        assert_eq!(
            texts(&rec(Tag::Hit, hit)),
            ["1003 3599.988700 10.000000 0.000000"]
        );
        let mut ns = vec![Packed::Numbers as u8];
        for n in [88u64, 0, 88, 284, 1024, 1308] {
            ns.extend(n.to_le_bytes());
        }
        assert_eq!(texts(&rec(Tag::ReqAcct, ns)), ["88 0 88 284 1024 1308"]);
        let mut link = vec![Packed::Link as u8];
        link.extend(1005u64.to_le_bytes());
        link.push(3);
        link.extend_from_slice(b"reqrxreq");
        assert_eq!(texts(&rec(Tag::Link, link)), ["req 1005 rxreq"]);
        let mut hs = vec![Packed::Headers as u8];
        for (n, v) in [("Host", "example.com"), ("Accept", "")] {
            hs.extend((n.len() as u16).to_le_bytes());
            hs.extend((v.len() as u16).to_le_bytes());
            hs.extend_from_slice(n.as_bytes());
            hs.extend_from_slice(v.as_bytes());
        }
        assert_eq!(
            texts(&rec(Tag::ReqHeader, hs)),
            ["Host: example.com", "Accept: "]
        );
        // Unknown formats and short data are errors, not panics.
        for bad in [
            vec![9u8, 1, 2],
            vec![Packed::Hit as u8, 0, 0],
            vec![],
            vec![Packed::Headers as u8, 5, 0, 0, 0, b'a'],
        ] {
            assert!(decode(&rec(Tag::Hit, bad), &mut Vec::new()).is_err());
        }
    }
}
