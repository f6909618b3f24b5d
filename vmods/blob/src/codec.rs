//! vmod_blob's binary-to-text schemes, as plain functions (unit-tested off
//! wasm32).

/// A scheme of vmod_blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Identity,
    Base64,
    Base64Url,
    Base64UrlNoPad,
    Base64Cf,
    Hex,
    Url,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Identity => "IDENTITY",
            Scheme::Base64 => "BASE64",
            Scheme::Base64Url => "BASE64URL",
            Scheme::Base64UrlNoPad => "BASE64URLNOPAD",
            Scheme::Base64Cf => "BASE64CF",
            Scheme::Hex => "HEX",
            Scheme::Url => "URL",
        }
    }

    /// The two last characters of the alphabet and the padding.
    fn base64(self) -> Option<(u8, u8, Option<u8>)> {
        match self {
            Scheme::Base64 => Some((b'+', b'/', Some(b'='))),
            Scheme::Base64Url => Some((b'-', b'_', Some(b'='))),
            Scheme::Base64UrlNoPad => Some((b'-', b'_', None)),
            Scheme::Base64Cf => Some((b'-', b'~', Some(b'_'))),
            _ => None,
        }
    }
}

const ALNUM: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn hex_char(n: u8, upper: bool) -> char {
    let d = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    d[usize::from(n & 15)] as char
}

/// Text → bytes. `Err` names what is wrong.
pub fn decode(s: Scheme, text: &str) -> Result<Vec<u8>, String> {
    let t = text.as_bytes();
    match s {
        Scheme::Identity => Ok(t.to_vec()),
        Scheme::Hex => {
            let mut out = Vec::with_capacity(t.len().div_ceil(2));
            let mut digits = t.iter().map(|&b| hex_digit(b).ok_or("illegal character"));
            if t.len() % 2 == 1 {
                out.push(digits.next().unwrap_or(Ok(0))?);
            }
            while let Some(hi) = digits.next() {
                let lo = digits.next().unwrap_or(Ok(0))?;
                out.push((hi? << 4) | lo);
            }
            Ok(out)
        }
        Scheme::Url => {
            let mut out = Vec::with_capacity(t.len());
            let mut i = 0;
            while i < t.len() {
                if t[i] == b'%' {
                    let h = t.get(i + 1).copied().and_then(hex_digit);
                    let l = t.get(i + 2).copied().and_then(hex_digit);
                    match (h, l) {
                        (Some(h), Some(l)) => out.push((h << 4) | l),
                        _ => return Err("illegal percent-encoding".into()),
                    }
                    i += 3;
                } else {
                    out.push(t[i]);
                    i += 1;
                }
            }
            Ok(out)
        }
        _ => {
            let (c62, c63, pad) = s.base64().ok_or("no such scheme")?;
            let val = |b: u8| -> Option<u32> {
                if b == c62 {
                    Some(62)
                } else if b == c63 {
                    Some(63)
                } else {
                    ALNUM.iter().position(|&a| a == b).map(|p| p as u32)
                }
            };
            let body = match pad {
                Some(p) => {
                    let n = t.iter().rev().take_while(|&&b| b == p).count();
                    if n > 2 {
                        return Err("illegal padding".into());
                    }
                    &t[..t.len() - n]
                }
                None => t,
            };
            let mut out = Vec::with_capacity(body.len() * 3 / 4);
            let mut acc: u32 = 0;
            let mut bits = 0;
            for &b in body {
                let v = val(b).ok_or("illegal character")?;
                acc = (acc << 6) | v;
                bits += 6;
                if bits >= 8 {
                    bits -= 8;
                    out.push((acc >> bits) as u8);
                    acc &= (1 << bits) - 1;
                }
            }
            if bits >= 6 {
                return Err("illegal length".into());
            }
            Ok(out)
        }
    }
}

/// Bytes → text. Only IDENTITY can fail (bytes that are not UTF-8 cannot
/// be a VCL string here).
pub fn encode(s: Scheme, upper: bool, b: &[u8]) -> Result<String, String> {
    match s {
        Scheme::Identity => {
            String::from_utf8(b.to_vec()).map_err(|_| "BLOB is not text".to_string())
        }
        Scheme::Hex => {
            let mut out = String::with_capacity(b.len() * 2);
            for &x in b {
                out.push(hex_char(x >> 4, upper));
                out.push(hex_char(x, upper));
            }
            Ok(out)
        }
        Scheme::Url => {
            let mut out = String::with_capacity(b.len());
            for &x in b {
                if x.is_ascii_alphanumeric() || matches!(x, b'-' | b'.' | b'_' | b'~') {
                    out.push(x as char);
                } else {
                    out.push('%');
                    out.push(hex_char(x >> 4, upper));
                    out.push(hex_char(x, upper));
                }
            }
            Ok(out)
        }
        _ => {
            let (c62, c63, pad) = s.base64().ok_or("no such scheme")?;
            let ch = |v: u32| -> char {
                match v {
                    62 => c62 as char,
                    63 => c63 as char,
                    v => ALNUM[v as usize] as char,
                }
            };
            let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
            for chunk in b.chunks(3) {
                let n = chunk.len();
                let w = (u32::from(chunk[0]) << 16)
                    | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
                    | u32::from(*chunk.get(2).unwrap_or(&0));
                for i in 0..=n {
                    out.push(ch((w >> (18 - 6 * i)) & 63));
                }
                if let Some(p) = pad {
                    for _ in n..3 {
                        out.push(p as char);
                    }
                }
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for (s, plain, enc) in [
            (Scheme::Base64, "foobar", "Zm9vYmFy"),
            (Scheme::Base64, "fooba", "Zm9vYmE="),
            (Scheme::Base64, "foob", "Zm9vYg=="),
            (Scheme::Base64UrlNoPad, "foob", "Zm9vYg"),
            (Scheme::Base64Cf, "foob", "Zm9vYg__"),
        ] {
            assert_eq!(encode(s, false, plain.as_bytes()).unwrap(), enc);
            assert_eq!(decode(s, enc).unwrap(), plain.as_bytes());
        }
        assert_eq!(
            encode(Scheme::Base64, false, &[0xfb, 0xff]).unwrap(),
            "+/8="
        );
        assert_eq!(
            encode(Scheme::Base64Url, false, &[0xfb, 0xff]).unwrap(),
            "-_8="
        );
        assert!(decode(Scheme::Base64, "Zm9v!").is_err());
    }

    #[test]
    fn hex_and_url() {
        assert_eq!(
            decode(Scheme::Hex, "abcdef0").unwrap(),
            [0x0a, 0xbc, 0xde, 0xf0]
        );
        assert_eq!(encode(Scheme::Hex, true, b"foo").unwrap(), "666F6F");
        assert_eq!(
            encode(Scheme::Url, false, b"foo bar/").unwrap(),
            "foo%20bar%2f"
        );
        assert_eq!(decode(Scheme::Url, "foo%20bar").unwrap(), b"foo bar");
        assert!(decode(Scheme::Url, "%2").is_err());
        assert!(decode(Scheme::Hex, "0x12").is_err());
    }
}
