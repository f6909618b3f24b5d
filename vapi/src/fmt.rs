//! Numbers as the log writes them, without the formatter: the writer
//! formats timestamps and counts for every request, and readers expand
//! packed records (see [`crate::record`]) with the same functions, so
//! both give the bytes `{:.6}` and `{}` would.

/// Room for [`fmt_fixed6`]'s result.
pub const F6: usize = 32;

/// `x` with six decimals, as `{:.6}` writes it, in `buf` (the
/// magnitudes timestamps have without the formatter; others through it,
/// cut at `F6` bytes).
pub fn fmt_fixed6(buf: &mut [u8; F6], x: f64) -> &[u8] {
    if !x.is_finite() || x.abs() >= 9.0e12 {
        let mut w: &mut [u8] = &mut buf[..];
        let _ = std::io::Write::write_fmt(&mut w, format_args!("{x:.6}"));
        let n = F6 - w.len();
        return &buf[..n];
    }
    // Rounded half away from zero as `{:.6}` does (a cast, not `round()`,
    // which is a libm call on baseline x86-64).
    // Through i64: below 9e18 it is exact, and the signed conversion is
    // one instruction where the unsigned one is a dozen.
    let us = (x.abs() * 1e6 + 0.5) as i64 as u64;
    let (secs, frac) = (us / 1_000_000, (us % 1_000_000) as usize);
    // Digits from the end, at fixed places: six decimals, the point;
    // then the seconds (one digit for most durations).
    let (a, b, c) = (frac / 10_000 * 2, frac / 100 % 100 * 2, frac % 100 * 2);
    buf[F6 - 7..].copy_from_slice(&[
        b'.',
        DIGITS2[a],
        DIGITS2[a + 1],
        DIGITS2[b],
        DIGITS2[b + 1],
        DIGITS2[c],
        DIGITS2[c + 1],
    ]);
    let mut i = if secs < 10 {
        buf[F6 - 8] = b'0' + secs as u8;
        F6 - 8
    } else if (1_000_000_000..10_000_000_000).contains(&secs) {
        // An absolute time: the log's timestamps come in runs of the
        // same second, so its ten digits are made once per second.
        let digits = LAST_SECS.with(|c| {
            let (s, d) = c.get();
            if s == secs {
                return d;
            }
            let mut w = [0u8; 20];
            digits_before(&mut w, 20, secs);
            let mut d = [0u8; 10];
            d.copy_from_slice(&w[10..]);
            c.set((secs, d));
            d
        });
        buf[F6 - 17..F6 - 7].copy_from_slice(&digits);
        F6 - 17
    } else {
        digits_before(buf, F6 - 7, secs)
    };
    if x < 0.0 && us != 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

thread_local! {
    /// The last ten-digit second [`fmt_fixed6`] wrote, and its digits.
    static LAST_SECS: std::cell::Cell<(u64, [u8; 10])> =
        const { std::cell::Cell::new((u64::MAX, [0; 10])) };
}

/// Two decimal digits per entry, for writing numbers two at a time.
const DIGITS2: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes `v` in decimal into `buf` so that it ends before `end`;
/// returns where it starts. `buf` must have 20 bytes before `end`.
#[inline]
fn digits_before(buf: &mut [u8], end: usize, mut v: u64) -> usize {
    let mut i = end;
    while v >= 100 {
        let d = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGITS2[d..d + 2]);
    }
    if v >= 10 {
        let d = v as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGITS2[d..d + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + v as u8;
    }
    i
}

/// `v` in decimal, in `buf`.
#[inline]
pub fn fmt_u64(buf: &mut [u8; 20], v: u64) -> &[u8] {
    let i = digits_before(buf, 20, v);
    &buf[i..]
}

/// Copies `n` bytes, short ones without calling `memcpy` (whose call
/// and dispatch cost more than copying a header name): the log's writer
/// and its readers copy a few dozen bytes at a time, millions of times a
/// second.
///
/// # Safety
/// As [`std::ptr::copy_nonoverlapping`].
#[inline(always)]
pub unsafe fn copy_short(src: *const u8, dst: *mut u8, n: usize) {
    use std::ptr::{read_unaligned as rd, write_unaligned as wr};
    // SAFETY: each access lies within `src..src+n` / `dst..dst+n` (the
    // pairs overlap in the middle when `n` is not a power of two).
    unsafe {
        if n >= 8 {
            if n > 32 {
                std::ptr::copy_nonoverlapping(src, dst, n);
            } else if n > 16 {
                let (a, b) = (rd(src as *const u128), rd(src.add(n - 16) as *const u128));
                wr(dst as *mut u128, a);
                wr(dst.add(n - 16) as *mut u128, b);
            } else {
                let (a, b) = (rd(src as *const u64), rd(src.add(n - 8) as *const u64));
                wr(dst as *mut u64, a);
                wr(dst.add(n - 8) as *mut u64, b);
            }
        } else if n >= 4 {
            let (a, b) = (rd(src as *const u32), rd(src.add(n - 4) as *const u32));
            wr(dst as *mut u32, a);
            wr(dst.add(n - 4) as *mut u32, b);
        } else if n > 0 {
            *dst = *src;
            *dst.add(n / 2) = *src.add(n / 2);
            *dst.add(n - 1) = *src.add(n - 1);
        }
    }
}

/// Appends `parts` to `out`: one reservation, short parts copied with
/// [`copy_short`].
#[inline(always)]
pub fn append<const N: usize>(out: &mut Vec<u8>, parts: [&[u8]; N]) {
    append_around(out, b"", parts, b"");
}

/// Appends `head`, `parts` and `tail` to `out`: one reservation, short
/// pieces copied with [`copy_short`] (a line of log output: its start,
/// the record's text in pieces, its end).
#[inline(always)]
pub fn append_around<const N: usize>(
    out: &mut Vec<u8>,
    head: &[u8],
    parts: [&[u8]; N],
    tail: &[u8],
) {
    let mut total = head.len() + tail.len();
    for p in &parts {
        total += p.len();
    }
    out.reserve(total);
    let at0 = out.len();
    // SAFETY: `total` bytes were reserved past the length; exactly those
    // are written before `set_len` takes them in.
    unsafe {
        let dst = out.as_mut_ptr().add(at0);
        copy_short(head.as_ptr(), dst, head.len());
        let mut at = head.len();
        for p in &parts {
            copy_short(p.as_ptr(), dst.add(at), p.len());
            at += p.len();
        }
        copy_short(tail.as_ptr(), dst.add(at), tail.len());
        out.set_len(at0 + total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed6_is_like_the_formatter() {
        for x in [
            0.0,
            -0.0,
            1.5,
            0.000_000_4,
            0.000_000_6,
            -0.25,
            1_796_256_816.791_924,
            1_796_256_816.000_001,
            1_796_256_817.5,
            -1_796_256_817.5,
            1_000_000_000.0,
            9_999_999_999.999_999,
            123.456_789_49,
            1e13,
            f64::NAN,
        ] {
            let mut b = [0u8; F6];
            let o = fmt_fixed6(&mut b, x).to_vec();
            let want = format!("{x:.6}");
            let want = if want == "-0.000000" {
                "0.000000".to_string()
            } else {
                want
            };
            assert_eq!(String::from_utf8(o).unwrap(), want, "{x}");
        }
    }

    #[test]
    fn append_around_copies_every_length() {
        let src: Vec<u8> = (0..100u8).collect();
        for n in 0..100 {
            let mut out = vec![7u8];
            append_around(&mut out, &src[..n / 2], [&src[..n], b"|"], &src[..n / 3]);
            let want = [&[7u8][..], &src[..n / 2], &src[..n], b"|", &src[..n / 3]].concat();
            assert_eq!(out, want, "{n}");
        }
    }

    #[test]
    fn append_copies_every_length() {
        let src: Vec<u8> = (0..100u8).collect();
        for n in 0..100 {
            let mut out = vec![7u8];
            append(&mut out, [&src[..n], b"|", &src[..n / 3]]);
            let want = [&[7u8][..], &src[..n], b"|", &src[..n / 3]].concat();
            assert_eq!(out, want, "{n}");
        }
    }

    #[test]
    fn fmt_u64_is_like_display() {
        for v in [0, 7, 10, 99, 100, 101, 999, 1000, 123_456_789, u64::MAX] {
            let mut b = [0u8; 20];
            assert_eq!(fmt_u64(&mut b, v), v.to_string().as_bytes());
        }
    }
}
