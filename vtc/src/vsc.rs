//! Counters for `varnish vN -expect` and `-vsc`: read from the running
//! instance by its stat tool (`shellac stat -n DIR -1`, or Debian's
//! `varnishstat -n DIR -1` for the real varnishd), which prints
//! varnishstat's one-line format: the name, then the value.
//!
//! varnishtest's rules: a name without a dot means `MAIN.<name>`; names
//! are globs (`*.s1.req`, `SM?.s0.c_req`), the first counter matching
//! wins; the right-hand side is a number or another counter; the
//! comparison is retried every 0.1 s, 50 times, until it holds.

use std::path::Path;
use std::process::Command;

/// Whether `name` matches the shell glob `pat` (`*`, `?`, `[…]`), as
/// fnmatch(3) without flags.
pub fn fnmatch(pat: &str, name: &str) -> bool {
    fn m(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') => (0..=s.len()).any(|i| m(&p[1..], &s[i..])),
            Some(b'?') => !s.is_empty() && m(&p[1..], &s[1..]),
            Some(b'[') => {
                let Some(&c) = s.first() else { return false };
                let mut i = 1;
                let neg = matches!(p.get(1), Some(b'!') | Some(b'^'));
                if neg {
                    i += 1;
                }
                let mut hit = false;
                let mut first = true;
                while i < p.len() && (first || p[i] != b']') {
                    first = false;
                    if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
                        hit |= p[i] <= c && c <= p[i + 2];
                        i += 3;
                    } else {
                        hit |= p[i] == c;
                        i += 1;
                    }
                }
                if i >= p.len() {
                    // No closing bracket: a literal '['.
                    return c == b'[' && m(&p[1..], &s[1..]);
                }
                hit != neg && m(&p[i + 1..], &s[1..])
            }
            Some(&c) => s.first() == Some(&c) && m(&p[1..], &s[1..]),
        }
    }
    m(pat.as_bytes(), name.as_bytes())
}

/// varnishtest's `stat_match`: a pattern without a dot is one of `MAIN`.
pub fn stat_match(pattern: &str, name: &str) -> bool {
    if !pattern.contains('.') {
        return match name.strip_prefix("MAIN.") {
            Some(n) => fnmatch(pattern, n),
            None => false,
        };
    }
    fnmatch(pattern, name)
}

/// Reads every counter of the instance in `workdir`: `(name, value)` in
/// the stat tool's order. `tool` is `shellac` (run as `shellac stat`) or
/// a varnishstat binary.
pub fn read(tool: &Path, is_shellac: bool, workdir: &Path) -> Result<Vec<(String, u64)>, String> {
    let mut cmd = Command::new(tool);
    if is_shellac {
        cmd.arg("stat");
    }
    let out = cmd
        .arg("-n")
        .arg(workdir)
        .arg("-1")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((name.to_string(), v))
        })
        .collect())
}

/// The first counter matching `pattern`.
pub fn find(points: &[(String, u64)], pattern: &str) -> Option<u64> {
    points
        .iter()
        .find(|(n, _)| stat_match(pattern, n))
        .map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(fnmatch("*.s1.req", "VBE.vcl1.s1.req"));
        assert!(!fnmatch("*.s1.req", "VBE.vcl1.s1.reqx"));
        assert!(fnmatch("SM?.s0.c_req", "SMA.s0.c_req"));
        assert!(fnmatch("a[bc]d", "acd"));
        assert!(!fnmatch("a[!bc]d", "acd"));
        assert!(fnmatch("a[x-z]", "ay"));
        assert!(stat_match("n_object", "MAIN.n_object"));
        assert!(!stat_match("n_object", "MGT.n_object"));
        assert!(stat_match("MAIN.n_*", "MAIN.n_object"));
    }
}
