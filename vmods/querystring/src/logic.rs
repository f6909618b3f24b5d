//! Query-string handling as plain functions (unit-tested off wasm32).

/// What a filter tests parameters against.
pub enum Criterion {
    Exact(String),
    Glob(String),
    Regex(String),
}

/// A URL split at its `?`: the path and the parameters, in order.
pub struct Query<'a> {
    pub path: &'a str,
    pub params: Vec<&'a str>,
}

impl<'a> Query<'a> {
    pub fn parse(url: &'a str) -> Query<'a> {
        match url.split_once('?') {
            None => Query {
                path: url,
                params: Vec::new(),
            },
            Some((path, q)) => Query {
                path,
                params: q.split('&').collect(),
            },
        }
    }

    /// The parameters for which `f` holds.
    pub fn keep(self, mut f: impl FnMut(&str) -> bool) -> Query<'a> {
        Query {
            path: self.path,
            params: self.params.into_iter().filter(|p| f(p)).collect(),
        }
    }

    /// Sorts by name (stable: equal names keep their order); with `uniq`,
    /// drops repeated identical parameters. Empty parameters go.
    pub fn sort(&mut self, uniq: bool) {
        self.params.retain(|p| !p.is_empty());
        self.params.sort_by(|a, b| name(a).cmp(name(b)));
        if uniq {
            self.params.dedup();
        }
    }

    /// The query-string without `?`.
    pub fn query(&self) -> String {
        self.params.join("&")
    }

    /// The URL again; no `?` when no parameter is left.
    pub fn to_url(&self) -> String {
        if self.params.iter().all(|p| p.is_empty()) {
            return self.path.to_string();
        }
        format!("{}?{}", self.path, self.query())
    }
}

fn name(p: &str) -> &str {
    p.split_once('=').map_or(p, |(n, _)| n)
}

/// fnmatch(3) without flags: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`, `\x`.
pub fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, next)) = class(&pat[p..], s[i]) {
                        if ok {
                            p += next;
                            i += 1;
                            continue;
                        }
                    } else if s[i] == b'[' {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pat.len() => {
                    if pat[p + 1] == s[i] {
                        p += 2;
                        i += 1;
                        continue;
                    }
                }
                c if c == s[i] => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// A bracket expression at the start of `pat`: whether `c` is in it and its
/// length; `None` when it is not closed.
fn class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut j = 1;
    let neg = matches!(pat.get(j), Some(b'!' | b'^'));
    if neg {
        j += 1;
    }
    let mut hit = false;
    let mut first = true;
    while j < pat.len() {
        let a = pat[j];
        if a == b']' && !first {
            return Some((hit != neg, j + 1));
        }
        first = false;
        if pat.get(j + 1) == Some(&b'-') && pat.get(j + 2).is_some_and(|&b| b != b']') {
            let b = pat[j + 2];
            hit |= a <= c && c <= b;
            j += 3;
        } else {
            hit |= a == c;
            j += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_and_cleans() {
        let mut q = Query::parse("/a?b=2&a=1&&c&a=0");
        q.sort(false);
        assert_eq!(q.to_url(), "/a?a=1&a=0&b=2&c");
        let mut q = Query::parse("/a?b=1&b=1&a");
        q.sort(true);
        assert_eq!(q.to_url(), "/a?a&b=1");
        assert_eq!(Query::parse("/a?").keep(|p| !p.is_empty()).to_url(), "/a");
    }

    #[test]
    fn globs() {
        assert!(glob(b"utm_*", b"utm_source"));
        assert!(!glob(b"utm_*", b"xutm_source"));
        assert!(glob(b"a?c", b"abc"));
        assert!(glob(b"[a-c]x", b"bx"));
        assert!(!glob(b"[!a-c]x", b"bx"));
        assert!(glob(b"*", b""));
    }
}
