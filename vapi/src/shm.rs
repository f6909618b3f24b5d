//! The transaction log in shared memory: the ring `shellac serve` writes
//! is a file in its instance directory (`-n DIR/_.vsl`) mapped by the
//! writer and by every reader, as varnishd's log is. Readers cost the
//! server nothing: they copy what they want from the mapping and check
//! afterwards that the writer did not go over it meanwhile.
//!
//! Layout: a 4096-byte header, then the ring of `space` bytes. The header
//! holds (little-endian u64s, after an 8-byte magic): the ring's size,
//! `head` (bytes ever written; everything below it is complete),
//! `reserved` (what the writer may be writing now: bytes below
//! `reserved - space` may be overwritten at any time), the oldest batch
//! still whole and the number of its first record, and the number of the
//! next record. The ring holds batches: a 24-byte batch header (magic,
//! data length, record count, padding, number of the first record) and
//! the records in the wire form of [`crate::record`], both wrapping
//! around the ring's end.

use std::io;
use std::path::Path;
use std::sync::atomic::{fence, AtomicU64, Ordering};

/// The file's magic.
pub const MAGIC: [u8; 8] = *b"SHLCVSL2";
/// Size of the header before the ring.
pub const HDR: usize = 4096;
/// Size of a batch header.
pub const BATCH_HDR: usize = 24;
/// A batch header's magic.
pub const BATCH_MAGIC: u32 = 0x4253_4c56;

/// The header's fields, as atomics over the mapping.
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// The ring's size in bytes.
    pub space: AtomicU64,
    /// Bytes ever written; all below is complete.
    pub head: AtomicU64,
    /// Bytes the writer may be writing now (its new head).
    pub reserved: AtomicU64,
    /// Where the oldest whole batch starts.
    pub oldest: AtomicU64,
    /// The number of that batch's first record.
    pub oldest_rec: AtomicU64,
    /// The number the next record gets.
    pub next_rec: AtomicU64,
}

/// A batch header as written into the ring.
pub fn batch_header(len: usize, nrec: u64, first_rec: u64) -> [u8; BATCH_HDR] {
    let mut h = [0u8; BATCH_HDR];
    h[0..4].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    h[8..12].copy_from_slice(&(nrec as u32).to_le_bytes());
    h[16..24].copy_from_slice(&first_rec.to_le_bytes());
    h
}

/// A read-only mapping of another process's log.
pub struct Reader {
    map: *const u8,
    len: usize,
    space: u64,
    next: u64,
    next_rec: u64,
    scratch: Vec<u8>,
}

// SAFETY: the mapping is only read, through `&mut self`.
unsafe impl Send for Reader {}

impl Drop for Reader {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `open` mapped.
        unsafe {
            libc::munmap(self.map as *mut libc::c_void, self.len);
        }
    }
}

impl Reader {
    /// Maps the log file at `path`, placed at the next record written
    /// (or, with `head`, the oldest one the ring holds).
    pub fn open(path: &Path, head: bool) -> io::Result<Reader> {
        let f = std::fs::File::open(path)?;
        let len = f.metadata()?.len() as usize;
        if len < HDR + BATCH_HDR {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "log file too short",
            ));
        }
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh read-only shared mapping of a file we opened;
        // the result is checked before use.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut r = Reader {
            map: map as *const u8,
            len,
            space: 0,
            next: 0,
            next_rec: 0,
            scratch: Vec::new(),
        };
        let (magic, space, pos) = {
            let h = r.header();
            let pos = if head {
                (
                    h.oldest.load(Ordering::Acquire),
                    h.oldest_rec.load(Ordering::Acquire),
                )
            } else {
                (
                    h.head.load(Ordering::Acquire),
                    h.next_rec.load(Ordering::Acquire),
                )
            };
            (h.magic, h.space.load(Ordering::Acquire), pos)
        };
        if magic != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a Shellac log file",
            ));
        }
        if space == 0 || HDR as u64 + space > len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "log file size mismatch",
            ));
        }
        r.space = space;
        (r.next, r.next_rec) = pos;
        Ok(r)
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HDR bytes and page-aligned;
        // Header is plain bytes and atomics.
        unsafe { &*(self.map as *const Header) }
    }

    /// Whether the reader has read everything written so far.
    pub fn at_end(&self) -> bool {
        self.next >= self.header().head.load(Ordering::Acquire)
    }

    fn copy(&self, at: u64, len: usize, out: &mut Vec<u8>) {
        let cap = self.space as usize;
        let pos = (at % self.space) as usize;
        let first = len.min(cap - pos);
        // SAFETY: both ranges lie within the ring part of the mapping
        // (pos + first <= cap, len - first <= cap).
        unsafe {
            let ring = self.map.add(HDR);
            out.extend_from_slice(std::slice::from_raw_parts(ring.add(pos), first));
            out.extend_from_slice(std::slice::from_raw_parts(ring, len - first));
        }
    }

    /// Whether bytes from `at` on may have been written over.
    fn gone(&self, at: u64) -> bool {
        let reserved = self.header().reserved.load(Ordering::Acquire);
        at < reserved.saturating_sub(self.space)
    }

    /// Jumps to the oldest whole batch; returns the records skipped.
    fn resync(&mut self) -> u64 {
        let h = self.header();
        let oldest = h.oldest.load(Ordering::Acquire);
        let rec = h.oldest_rec.load(Ordering::Acquire);
        let lost = rec.saturating_sub(self.next_rec);
        self.next = oldest.max(self.next);
        self.next_rec = rec.max(self.next_rec);
        lost
    }

    /// Jumps to the newest end of the ring (what varnishlog does after
    /// an overrun); returns the records skipped.
    pub fn skip_to_head(&mut self) -> u64 {
        let h = self.header();
        let (head, rec) = (
            h.head.load(Ordering::Acquire),
            h.next_rec.load(Ordering::Acquire),
        );
        let skipped = rec.saturating_sub(self.next_rec);
        if head > self.next {
            self.next = head;
            self.next_rec = rec.max(self.next_rec);
        }
        skipped
    }

    /// Appends the records of the batches written since the last read
    /// (about `max` bytes at most) to `out`; returns how many records were
    /// lost because the writer went over them first.
    ///
    /// The header (which the writer updates for every batch) is read
    /// twice per call, not per batch: before, for where the written
    /// part ends, and after copying, to check that the writer did not
    /// reach what was copied. A reader that keeps up so shares that
    /// cache line with the writer as little as it can.
    pub fn read(&mut self, max: usize, out: &mut Vec<u8>) -> u64 {
        let mut lost = 0;
        for _ in 0..16 {
            let head = self.header().head.load(Ordering::Acquire);
            if self.next >= head {
                break;
            }
            if self.gone(self.next) {
                lost += self.resync();
                continue;
            }
            let mark = out.len();
            let (mut at, mut rec) = (self.next, self.next_rec);
            let mut torn = false;
            let mut skipped = 0;
            let mut bh = std::mem::take(&mut self.scratch);
            while at < head && out.len() - mark < max {
                bh.clear();
                self.copy(at, BATCH_HDR, &mut bh);
                let magic = u32::from_le_bytes([bh[0], bh[1], bh[2], bh[3]]);
                let len = u32::from_le_bytes([bh[4], bh[5], bh[6], bh[7]]) as usize;
                let nrec = u64::from(u32::from_le_bytes([bh[8], bh[9], bh[10], bh[11]]));
                let mut fr = [0u8; 8];
                fr.copy_from_slice(&bh[16..24]);
                let first_rec = u64::from_le_bytes(fr);
                let end = at + (BATCH_HDR + len) as u64;
                if magic != BATCH_MAGIC || end > head || len as u64 > self.space {
                    // Not a batch start: written over while we looked.
                    torn = true;
                    break;
                }
                self.copy(at + BATCH_HDR as u64, len, out);
                skipped += first_rec.saturating_sub(rec);
                at = end;
                rec = first_rec + nrec;
            }
            self.scratch = bh;
            // The copies are good only if the writer did not reach them.
            fence(Ordering::Acquire);
            if torn || self.gone(self.next) {
                out.truncate(mark);
                lost += self.resync();
                continue;
            }
            lost += skipped;
            self.next = at;
            self.next_rec = rec;
            break;
        }
        lost
    }
}
