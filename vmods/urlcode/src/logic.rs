//! Percent-encoding, without bindings (unit-testable).

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 percent-encoding: every byte but the unreserved ones as %XX.
pub fn encode(input: &[u8]) -> String {
    let mut s = String::with_capacity(input.len());
    for &b in input {
        if unreserved(b) {
            s.push(b as char);
        } else {
            s.push('%');
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 15)] as char);
        }
    }
    s
}

fn hexval(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes %XX and `+` (a space); `None` for a `%` not followed by two hex
/// digits.
pub fn decode(input: &str) -> Option<Vec<u8>> {
    let b = input.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = hexval(*b.get(i + 1)?)?;
                let lo = hexval(*b.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(encode(b"hello world!"), "hello%20world%21");
        assert_eq!(encode("é/~".as_bytes()), "%C3%A9%2F~");
        assert_eq!(decode("hello%20world%21+x").unwrap(), b"hello world! x");
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%4"), None);
    }
}
