//! `expect A OP B`: the comparison shared by client/server specs (and later
//! other expect commands), with varnishtest's operator semantics.
//!
//! * `==`, `!=`: exact string comparison (an undefined side is the text
//!   `<undef>`).
//! * `~`, `!~`: PCRE2 match of the left side against the right side.
//! * `<`, `>`, `<=`, `>=`: numeric comparison as doubles; false when a side
//!   is undefined or not a number.
//! * `-lt -le -eq -ne -ge -gt`: unsigned integer comparison (`strtoul`).

/// Result of evaluating an expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectResult {
    /// The comparison holds.
    Match,
    /// It does not.
    Fail,
    /// The operator is unknown or the regex does not compile.
    Error(String),
}

/// Evaluates `lhs op rhs`; `None` means undefined (`<undef>`).
pub fn compare(lhs: Option<&str>, op: &str, rhs: Option<&str>) -> ExpectResult {
    let undef = lhs.is_none() || rhs.is_none();
    let l = lhs.unwrap_or("<undef>");
    let r = rhs.unwrap_or("<undef>");
    let b = match op {
        "~" | "!~" => {
            let re = match pcre2::bytes::RegexBuilder::new().build(r) {
                Ok(re) => re,
                Err(e) => return ExpectResult::Error(format!("REGEXP error: {e} ({r})")),
            };
            let m = re.is_match(l.as_bytes()).unwrap_or(false);
            m == (op == "~")
        }
        "==" => l == r,
        "!=" => l != r,
        "-lt" => strtoul(l) < strtoul(r),
        "-le" => strtoul(l) <= strtoul(r),
        "-eq" => strtoul(l) == strtoul(r),
        "-ne" => strtoul(l) != strtoul(r),
        "-ge" => strtoul(l) >= strtoul(r),
        "-gt" => strtoul(l) > strtoul(r),
        "<" | ">" | "<=" | ">=" => {
            if undef {
                false
            } else {
                let (a, c) = (vnum(l), vnum(r));
                match op {
                    "<" => a < c,
                    ">" => a > c,
                    "<=" => a <= c,
                    _ => a >= c,
                }
            }
        }
        _ => {
            return ExpectResult::Error(format!("test not implemented: {op}"));
        }
    };
    if b {
        ExpectResult::Match
    } else {
        ExpectResult::Fail
    }
}

/// C `strtoul(s, NULL, 0)`: leading blanks, optional sign, `0x` hex, `0`
/// octal, decimal; stops at the first non-digit; 0 if none.
pub fn strtoul(s: &str) -> u64 {
    let s = s.trim_start();
    let (neg, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (16, h)
    } else if s.starts_with('0') {
        (8, s)
    } else {
        (10, s)
    };
    let mut v: u64 = 0;
    for c in digits.chars() {
        match c.to_digit(radix) {
            Some(d) => v = v.wrapping_mul(radix as u64).wrapping_add(d as u64),
            None => break,
        }
    }
    if neg {
        v.wrapping_neg()
    } else {
        v
    }
}

/// Varnish's `VNUM`: a decimal number with optional blanks around it;
/// anything else is NaN.
pub fn vnum(s: &str) -> f64 {
    let t = s.trim_matches(|c: char| c == ' ' || c == '\t');
    if t.is_empty() || t.contains(|c: char| c.is_ascii_alphabetic()) {
        return f64::NAN;
    }
    t.parse::<f64>().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators() {
        assert_eq!(compare(Some("200"), "==", Some("200")), ExpectResult::Match);
        assert_eq!(compare(None, "==", Some("<undef>")), ExpectResult::Match);
        assert_eq!(
            compare(Some("abc"), "~", Some("^a.c$")),
            ExpectResult::Match
        );
        assert_eq!(compare(Some("abc"), "!~", Some("x")), ExpectResult::Match);
        assert_eq!(compare(Some("10"), ">", Some("9")), ExpectResult::Match);
        assert_eq!(compare(None, "<", Some("9")), ExpectResult::Fail);
        assert_eq!(
            compare(Some("0x10"), "-eq", Some("16")),
            ExpectResult::Match
        );
        assert!(matches!(
            compare(Some("a"), "=~", Some("b")),
            ExpectResult::Error(_)
        ));
    }
}
