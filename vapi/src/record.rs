//! Log records and their wire form.
//!
//! A record is what varnishd's `VSLb()` writes: the transaction's VXID,
//! a tag, whether the transaction is a client's or a backend's, and a
//! line of data. On the wire (Shellac's `/log` stream) each record is a
//! 12-byte header — VXID (u64, little endian), tag (u8), kind (u8), data
//! length (u16, little endian) — followed by the data. A header with tag
//! 0 is not a record: its data is the decimal count of records the
//! reader lost because it fell behind the ring.

use crate::tag::Tag;

/// Size of a record header on the wire.
pub const HEADER: usize = 12;

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

    /// From the wire byte.
    pub fn from_byte(b: u8) -> Kind {
        match b {
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

/// Writes a record header for `len` bytes of data.
#[inline]
pub fn encode_header(out: &mut Vec<u8>, vxid: u64, tag: u8, kind: Kind, len: u16) {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(&vxid.to_le_bytes());
    h[8] = tag;
    h[9] = kind.byte();
    h[10..].copy_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&h);
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
}

/// Reads one item from the front of `buf`: `Ok(None)` when more bytes
/// are needed, else the item and how many bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(Item, usize)>, DecodeError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&buf[..8]);
    let vxid = u64::from_le_bytes(v);
    let tag = buf[8];
    let kind = Kind::from_byte(buf[9]);
    let len = usize::from(u16::from_le_bytes([buf[10], buf[11]]));
    if buf.len() < HEADER + len {
        return Ok(None);
    }
    let data = &buf[HEADER..HEADER + len];
    let item = if tag == 0 {
        let n = std::str::from_utf8(data)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(DecodeError::Lost)?;
        Item::Lost(n)
    } else {
        Item::Record(Record {
            vxid,
            tag: Tag::from_u8(tag).ok_or(DecodeError::Tag(tag))?,
            kind,
            data: data.to_vec(),
        })
    };
    Ok(Some((item, HEADER + len)))
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
        let (i, n) = decode(&b).unwrap().unwrap();
        assert_eq!(i, Item::Record(r));
        let (j, m) = decode(&b[n..]).unwrap().unwrap();
        assert_eq!(j, Item::Lost(42));
        assert_eq!(n + m, b.len());
        assert_eq!(decode(&b[..5]), Ok(None));
        assert_eq!(decode(&b[..n - 1]), Ok(None));
        let mut bad = b.clone();
        bad[8] = 250;
        assert_eq!(decode(&bad), Err(DecodeError::Tag(250)));
    }
}
