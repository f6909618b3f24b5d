//! gzip as Varnish does it with `http_gzip_support` (its `cache_gzip` and
//! `rfc2616` parts): clients' `Accept-Encoding` is reduced to "gzip" or
//! nothing, cacheable fetches ask the backend for gzip, objects may be
//! (un)compressed at fetch time (`beresp.do_gzip`, `beresp.do_gunzip`), and
//! a gzipped object is gunzipped for a client that does not accept gzip.
//!
//! Everything here streams: [`Gzipper`] and [`Gunzipper`] take a body a
//! piece at a time (flate2 on the zlib-rs backend). What Shellac gzips
//! itself ends in a known way (a sync flush, then an empty final block and
//! the trailer), recorded in [`GzipInfo`], so ESI can splice such an
//! object into a gzipped page without inflating it.

use crate::cache_obj::{hdr_get, hdr_set, hdr_unset, Headers};
use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Whether a client's `Accept-Encoding` accepts gzip (`gzip` or `x-gzip`
/// with a nonzero q), as Varnish's `RFC2616_Req_Gzip`.
pub fn accepts_gzip(ae: &str) -> bool {
    ae.split(',').any(|part| {
        let mut it = part.split(';');
        let coding = it.next().unwrap_or("").trim();
        if !coding.eq_ignore_ascii_case("gzip") && !coding.eq_ignore_ascii_case("x-gzip") {
            return false;
        }
        !it.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f64>().ok())
                .is_some_and(|q| q <= 0.0)
        })
    })
}

/// Whether a request's headers accept gzip.
pub fn req_accepts_gzip(h: &Headers) -> bool {
    hdr_get(h, "accept-encoding").is_some_and(accepts_gzip)
}

/// `Accept-Encoding` as the request reaches `vcl_recv`.
pub fn normalize_req(h: &mut Headers) {
    match hdr_get(h, "accept-encoding") {
        Some(ae) if accepts_gzip(ae) => hdr_set(h, "Accept-Encoding", "gzip"),
        Some(_) => hdr_unset(h, "accept-encoding"),
        None => {}
    }
}

/// Whether a response's body is gzipped.
pub fn is_gzip(h: &Headers) -> bool {
    hdr_get(h, "content-encoding").is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"))
}

/// A strong ETag becomes weak when the body's encoding changes.
pub fn weaken_etag(h: &mut Headers) {
    if let Some(w) = weak_etag(h) {
        hdr_set(h, "ETag", &w);
    }
}

/// The weak form of a strong ETag in `h` (`None`: none, or weak already).
pub fn weak_etag(h: &Headers) -> Option<String> {
    hdr_get(h, "etag")
        .filter(|e| !e.starts_with("W/"))
        .map(|e| format!("W/{e}"))
}

/// Adds `Accept-Encoding` to `Vary` unless it is there.
pub fn vary_ae(h: &mut Headers) {
    match hdr_get(h, "vary") {
        Some(v)
            if v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding")) => {}
        Some(v) => {
            let nv = format!("{v}, Accept-Encoding");
            hdr_set(h, "Vary", &nv);
        }
        None => h.push(("Vary".into(), "Accept-Encoding".into())),
    }
}

/// Why (un)compressing failed; at fetch time a fetch error.
#[derive(Debug, thiserror::Error)]
pub enum GzError {
    #[error("Invalid Gzip data: {0}")]
    Invalid(String),
    #[error("Junk after gzip data")]
    Junk,
    #[error("Gunzip error at the very end")]
    Truncated,
    #[error("Gzip failed: {0}")]
    Deflate(String),
}

/// The gzip header Shellac writes (zlib's: no name, no time, Unix).
pub const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

/// An empty stored block with the final bit: what ends an assembled gzip
/// stream whose deflate data ends byte-aligned (after a sync flush).
pub const FINAL_STORED_BLOCK: [u8; 5] = [1, 0, 0, 0xff, 0xff];

/// Output pieces are cut at this size.
const PIECE: usize = 64 << 10;

/// The layout of a gzip body Shellac made: its deflate data from byte 10
/// to `body_end` ends on a byte boundary without the final bit, so it can
/// be spliced into another gzip stream; `crc` and `plain_len` are those of
/// the uncompressed content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GzipInfo {
    pub body_end: u64,
    pub crc: u32,
    pub plain_len: u64,
    /// The whole stream's length (header and trailer included).
    pub out_len: u64,
}

impl GzipInfo {
    /// Varnish's `Gzip` record of the context that made it: `ID in out
    /// start_bit last_bit stop_bit` (the final block, an empty fixed one,
    /// starts at `body_end` and is 10 bits long).
    pub fn record(&self, id: &str) -> String {
        let last = self.body_end * 8;
        let stop = if self.out_len == self.body_end + 2 + 8 {
            last + 10
        } else {
            self.out_len.saturating_sub(8) * 8
        };
        format!(
            "{id} {} {} {} {last} {stop}",
            self.plain_len,
            self.out_len,
            GZIP_HEADER.len() * 8
        )
    }
}

/// The CRC-32 of `a` followed by `b`, from the CRC and length of each.
pub fn crc_combine(crc_a: u32, len_a: u64, crc_b: u32, len_b: u64) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial_len(crc_a, len_a);
    h.combine(&crc32fast::Hasher::new_with_initial_len(crc_b, len_b));
    h.finalize()
}

/// A running CRC-32 and length of uncompressed content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Crc {
    pub crc: u32,
    pub len: u64,
}

impl Crc {
    /// Adds bytes.
    pub fn update(&mut self, b: &[u8]) {
        let mut h = crc32fast::Hasher::new_with_initial_len(self.crc, self.len);
        h.update(b);
        self.crc = h.finalize();
        self.len += b.len() as u64;
    }

    /// Adds a piece known by its CRC and length.
    pub fn combine(&mut self, crc: u32, len: u64) {
        self.crc = crc_combine(self.crc, self.len, crc, len);
        self.len += len;
    }

    /// The gzip trailer closing a stream of this content.
    pub fn trailer(&self) -> [u8; 8] {
        let mut t = [0u8; 8];
        t[..4].copy_from_slice(&self.crc.to_le_bytes());
        t[4..].copy_from_slice(&(self.len as u32).to_le_bytes());
        t
    }
}

/// Streaming gzip: a header, raw deflate data, a trailer.
pub struct Gzipper {
    z: Compress,
    crc: crc32fast::Hasher,
    started: bool,
    /// Input since the last flush (a flush without input writes nothing
    /// unless asked at the start, as Varnish's ESI does).
    dirty: bool,
    out_len: u64,
}

impl Gzipper {
    /// A compressor at zlib level `level` (0-9).
    pub fn new(level: u32) -> Gzipper {
        Gzipper {
            z: Compress::new(Compression::new(level.min(9)), false),
            crc: crc32fast::Hasher::new(),
            started: false,
            dirty: false,
            out_len: 0,
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            out.extend_from_slice(&GZIP_HEADER);
            self.out_len += GZIP_HEADER.len() as u64;
        }
    }

    fn run(
        &mut self,
        mut input: &[u8],
        flush: FlushCompress,
        out: &mut Vec<u8>,
    ) -> Result<(), GzError> {
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(input.len() / 2 + 4096);
            }
            let (in0, out0) = (self.z.total_in(), self.z.total_out());
            let st = self
                .z
                .compress_vec(input, out, flush)
                .map_err(|e| GzError::Deflate(e.to_string()))?;
            let used = (self.z.total_in() - in0) as usize;
            self.out_len += self.z.total_out() - out0;
            input = &input[used..];
            if st == Status::StreamEnd {
                return Ok(());
            }
            let room = out.capacity() > out.len();
            if input.is_empty() && room && flush != FlushCompress::Finish {
                return Ok(());
            }
        }
    }

    /// Compresses `data`, appending whatever output is ready to `out`.
    pub fn write(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), GzError> {
        self.start(out);
        if data.is_empty() {
            return Ok(());
        }
        self.crc.update(data);
        self.dirty = true;
        self.run(data, FlushCompress::None, out)
    }

    /// Ends the deflate data so far on a byte boundary: a sync flush, or
    /// with `full` one that also forgets the history, so what follows
    /// decodes without what came before.
    pub fn flush(&mut self, full: bool, out: &mut Vec<u8>) -> Result<(), GzError> {
        self.start(out);
        self.dirty = false;
        let f = if full {
            FlushCompress::Full
        } else {
            FlushCompress::Sync
        };
        self.run(&[], f, out)
    }

    /// A sync flush if anything came in since the last flush.
    pub fn align(&mut self, out: &mut Vec<u8>) -> Result<(), GzError> {
        if self.dirty {
            self.flush(false, out)?;
        }
        Ok(())
    }

    /// Compressed bytes written so far, the header included.
    pub fn out_len(&self) -> u64 {
        self.out_len
    }

    /// The CRC and length of the content so far.
    pub fn crc(&self) -> Crc {
        Crc {
            crc: self.crc.clone().finalize(),
            len: self.z.total_in(),
        }
    }

    /// Ends the stream: a sync flush (where [`GzipInfo::body_end`] is),
    /// the final block and the trailer.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<GzipInfo, GzError> {
        self.start(out);
        self.align(out)?;
        let body_end = self.out_len;
        self.run(&[], FlushCompress::Finish, out)?;
        let crc = self.crc();
        out.extend_from_slice(&crc.trailer());
        Ok(GzipInfo {
            body_end,
            crc: crc.crc,
            plain_len: crc.len,
            out_len: self.out_len + 8,
        })
    }
}

/// Streaming gunzip of one gzip member, checked as zlib checks it (header,
/// CRC, length); bytes after the end are an error, as in Varnish.
pub struct Gunzipper {
    z: Decompress,
    ended: bool,
    /// The gzip header's length in bits, once its first bytes were seen
    /// (0 if it could not be told from the first piece).
    start_bit: u64,
    /// The first deflate block is the last (its BFINAL bit, seen with
    /// the header).
    one_block: bool,
}

impl Default for Gunzipper {
    fn default() -> Self {
        Gunzipper::new()
    }
}

impl Gunzipper {
    /// A decompressor for a gzip stream.
    pub fn new() -> Gunzipper {
        Gunzipper {
            z: Decompress::new_gzip(15),
            ended: false,
            start_bit: 0,
            one_block: false,
        }
    }

    fn first(&mut self, data: &[u8]) {
        if self.z.total_in() == 0 {
            let n = header_len(data);
            self.start_bit = n.map_or(0, |n| n as u64 * 8);
            self.one_block = n.and_then(|n| data.get(n)).is_some_and(|b| b & 1 == 1);
        }
    }

    /// Varnish's `Gzip` record of this context: `ID in out start_bit
    /// last_bit stop_bit`. The inflater does not tell where deflate
    /// blocks begin and end: `last_bit` is known when the first block is
    /// the last (else 0, as Varnish's is while it does not know it);
    /// once the stream ended, its deflate data is known to end in the
    /// byte before the 8-byte trailer, so `stop_bit` is that byte's end
    /// (Varnish's exact bit may be up to 7 lower).
    pub fn record(&self, id: &str) -> String {
        let last = if self.one_block { self.start_bit } else { 0 };
        let stop = if self.ended {
            self.z.total_in().saturating_sub(8) * 8
        } else {
            0
        };
        format!(
            "{id} {} {} {} {last} {stop}",
            self.z.total_in(),
            self.z.total_out(),
            self.start_bit
        )
    }

    /// Inflates `data`, appending the output to `out` in pieces of at most
    /// 64 KiB.
    pub fn write(&mut self, data: &[u8], out: &mut Vec<Bytes>) -> Result<(), GzError> {
        self.first(data);
        inflate_into(&mut self.z, data, &mut self.ended, out)
    }

    /// Inflates from `data` until about `max_out` bytes came out; returns
    /// how much of `data` was used (the rest is for the next call).
    pub fn write_some(
        &mut self,
        data: &[u8],
        out: &mut Vec<Bytes>,
        max_out: usize,
    ) -> Result<usize, GzError> {
        self.first(data);
        inflate_bounded(&mut self.z, data, &mut self.ended, out, max_out)
    }

    /// Inflates `data` and forgets the output (Varnish's testgunzip).
    pub fn test(&mut self, data: &[u8]) -> Result<(), GzError> {
        self.first(data);
        let mut input = data;
        let mut buf = Vec::with_capacity(PIECE);
        while !input.is_empty() {
            if self.ended {
                return Err(GzError::Junk);
            }
            buf.clear();
            let in0 = self.z.total_in();
            let st = self
                .z
                .decompress_vec(input, &mut buf, FlushDecompress::None)
                .map_err(|e| GzError::Invalid(e.to_string()))?;
            let used = (self.z.total_in() - in0) as usize;
            input = &input[used..];
            if st == Status::StreamEnd {
                self.ended = true;
            } else if used == 0 && buf.is_empty() {
                return Err(GzError::Invalid("no progress".into()));
            }
        }
        Ok(())
    }

    /// Checks that the stream ended.
    pub fn finish(&self) -> Result<(), GzError> {
        if self.ended {
            Ok(())
        } else {
            Err(GzError::Truncated)
        }
    }

    /// Uncompressed bytes so far.
    pub fn total_out(&self) -> u64 {
        self.z.total_out()
    }
}

fn inflate_into(
    z: &mut Decompress,
    data: &[u8],
    ended: &mut bool,
    out: &mut Vec<Bytes>,
) -> Result<(), GzError> {
    inflate_bounded(z, data, ended, out, usize::MAX).map(|_| ())
}

/// The length of the gzip header at the start of `b` (RFC 1952: the
/// fixed 10 bytes and the optional fields its flags announce), if `b`
/// holds all of it.
fn header_len(b: &[u8]) -> Option<usize> {
    let flg = *b.get(3)?;
    let mut n = 10;
    if flg & 4 != 0 {
        let x = usize::from(*b.get(n)?) | usize::from(*b.get(n + 1)?) << 8;
        n += 2 + x;
    }
    for bit in [8, 16] {
        if flg & bit != 0 {
            n += b.get(n..)?.iter().position(|&c| c == 0)? + 1;
        }
    }
    if flg & 2 != 0 {
        n += 2;
    }
    (b.len() >= n).then_some(n)
}

/// Inflates from `data` until all of it is used or about `max_out` bytes
/// came out; returns how much of `data` was used. A caller that cannot
/// hold a chunk's whole expansion (a client without gzip, reading a
/// hostile gzip) takes it in bounded steps.
fn inflate_bounded(
    z: &mut Decompress,
    data: &[u8],
    ended: &mut bool,
    out: &mut Vec<Bytes>,
    max_out: usize,
) -> Result<usize, GzError> {
    let mut input = data;
    let mut produced = 0usize;
    loop {
        if input.is_empty() || produced >= max_out {
            return Ok(data.len() - input.len());
        }
        if *ended {
            return Err(GzError::Junk);
        }
        let mut buf = Vec::with_capacity(PIECE.min(input.len().saturating_mul(4).max(4096)));
        let in0 = z.total_in();
        let st = z
            .decompress_vec(input, &mut buf, FlushDecompress::None)
            .map_err(|e| GzError::Invalid(e.to_string()))?;
        let used = (z.total_in() - in0) as usize;
        input = &input[used..];
        let progress = used > 0 || !buf.is_empty();
        produced += buf.len();
        if !buf.is_empty() {
            out.push(Bytes::from(buf));
        }
        if st == Status::StreamEnd {
            *ended = true;
        } else if !progress {
            return Err(GzError::Invalid("no progress".into()));
        }
    }
}

/// Inflates a piece of raw deflate data that ends on a flush (a verbatim
/// segment of a gzipped ESI object, possibly spread over several body
/// chunks), with a fresh history.
pub fn inflate_segment(
    z: &mut Decompress,
    data: &[Bytes],
    out: &mut Vec<Bytes>,
) -> Result<(), GzError> {
    z.reset(false);
    let mut ended = false;
    for d in data {
        inflate_into(z, d, &mut ended, out)?;
    }
    // What the segment's flush released may still sit in the inflater.
    loop {
        let mut buf = Vec::with_capacity(4096);
        let o0 = z.total_out();
        z.decompress_vec(&[], &mut buf, FlushDecompress::Sync)
            .map_err(|e| GzError::Invalid(e.to_string()))?;
        if z.total_out() == o0 {
            return Ok(());
        }
        out.push(Bytes::from(buf));
    }
}

/// `data` as non-final stored deflate blocks (what ESI wraps a plain
/// fragment in inside a gzipped page).
pub fn stored_blocks(data: &[u8], out: &mut Vec<Bytes>) {
    for piece in data.chunks(65535) {
        let n = piece.len() as u16;
        let mut b = Vec::with_capacity(5 + piece.len());
        b.push(0);
        b.extend_from_slice(&n.to_le_bytes());
        b.extend_from_slice(&(!n).to_le_bytes());
        b.extend_from_slice(piece);
        out.push(Bytes::from(b));
    }
}

/// Compresses a whole body.
pub fn gzip(b: &[u8], level: u32) -> Result<Bytes, GzError> {
    let mut g = Gzipper::new(level);
    let mut out = Vec::new();
    g.write(b, &mut out)?;
    g.finish(&mut out)?;
    Ok(Bytes::from(out))
}

/// Decompresses a whole body.
pub fn gunzip(b: &[u8]) -> Result<Bytes, GzError> {
    let mut g = Gunzipper::new();
    let mut out = Vec::new();
    g.write(b, &mut out)?;
    g.finish()?;
    let mut all = bytes::BytesMut::new();
    for p in out {
        all.extend_from_slice(&p);
    }
    Ok(all.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_rules() {
        assert!(accepts_gzip("gzip, deflate"));
        assert!(accepts_gzip("x-gzip"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("deflate, br"));
    }

    #[test]
    fn round_trip() {
        let z = gzip(b"hello", 6).expect("gzip");
        assert_eq!(&gunzip(&z).expect("gunzip")[..], b"hello");
        assert!(gunzip(b"not gzip").is_err());
        assert!(matches!(gunzip(&z[..z.len() - 3]), Err(GzError::Truncated)));
        let mut junk = z.to_vec();
        junk.push(0);
        assert!(matches!(gunzip(&junk), Err(GzError::Junk)));
    }

    /// `Gzip` records as Varnish lays them out: mode, bytes in and out,
    /// then the bits where the deflate data starts, where its last block
    /// starts and where it stops.
    #[test]
    fn gzip_records() {
        // Shellac's own stream: aligned data, then an empty final block
        // of 10 bits.
        let mut g = Gzipper::new(6);
        let mut out = Vec::new();
        g.write(b"hello hello hello", &mut out).expect("gzip");
        let info = g.finish(&mut out).expect("finish");
        assert_eq!(info.out_len, out.len() as u64);
        let last = info.body_end * 8;
        assert_eq!(
            info.record("G F -"),
            format!("G F - 17 {} 80 {last} {}", out.len(), last + 10)
        );
        // Another gzip writer's single-block stream, with a file name in
        // its header (10 + 4 bytes): the last block is the first.
        let mut z = Vec::new();
        let mut w = flate2::GzBuilder::new()
            .filename("abc")
            .write(&mut z, flate2::Compression::new(9));
        std::io::Write::write_all(&mut w, b"some text, some text").expect("write");
        w.finish().expect("finish");
        let mut u = Gunzipper::new();
        assert_eq!(u.record("U F -"), "U F - 0 0 0 0 0");
        let mut plain = Vec::new();
        u.write(&z, &mut plain).expect("gunzip");
        let stop = (z.len() as u64 - 8) * 8;
        assert_eq!(
            u.record("U F -"),
            format!("U F - {} 20 112 112 {stop}", z.len())
        );
    }

    /// Splicing the deflate data of two Shellac-made gzip bodies, as ESI
    /// does, gives a valid gzip stream of both contents.
    #[test]
    fn splice() {
        let mut parts = Vec::new();
        let mut crc = Crc::default();
        for s in [&b"Hello, "[..], &b"world"[..]] {
            let mut g = Gzipper::new(6);
            let mut out = Vec::new();
            g.write(s, &mut out).expect("gzip");
            let info = g.finish(&mut out).expect("finish");
            parts.extend_from_slice(&out[10..info.body_end as usize]);
            crc.combine(info.crc, info.plain_len);
        }
        let mut plain = Vec::new();
        stored_blocks(b"!", &mut plain);
        crc.update(b"!");
        let mut all = GZIP_HEADER.to_vec();
        all.extend_from_slice(&parts);
        for p in plain {
            all.extend_from_slice(&p);
        }
        all.extend_from_slice(&FINAL_STORED_BLOCK);
        all.extend_from_slice(&crc.trailer());
        assert_eq!(&gunzip(&all).expect("valid")[..], b"Hello, world!");
    }

    /// What Varnish's ESI stores for a body without ESI: a full flush at
    /// the start, a sync flush at the end (e00028 counts these bytes).
    #[test]
    fn esi_layout_length() {
        let mut g = Gzipper::new(6);
        let mut out = Vec::new();
        g.flush(true, &mut out).expect("flush");
        g.write(b"bar", &mut out).expect("write");
        g.finish(&mut out).expect("finish");
        assert_eq!(out.len(), 34);
    }
}
