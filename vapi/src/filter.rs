//! Which records are shown (libvarnishapi's `VSL_Match` and varnishlog's
//! `-i -x -I -X -b -c -C`): tag lists and regular expressions. A filter
//! decides what is printed, not which transactions (that is `-q`).

use crate::record::{Kind, Record};
use crate::tag::Tag;
use pcre2::bytes::{Regex, RegexBuilder};

/// A record filter built from varnishlog's options.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Tags not shown (by number).
    suppress: Vec<bool>,
    /// `-I [tags:]regex`: shown when matching.
    select: Vec<(Option<Vec<Tag>>, Regex)>,
    /// `-X [tags:]regex`: hidden when matching.
    hide: Vec<(Option<Vec<Tag>>, Regex)>,
    /// Whether an `-i`/`-I`/`-x`/`-X` was given yet.
    seen_ix: bool,
    /// `-b`: backend records only.
    pub backend: bool,
    /// `-c`: client records only.
    pub client: bool,
    /// `-C`: regular expressions ignore case.
    pub caseless: bool,
}

impl Filter {
    /// A filter that shows everything.
    pub fn new() -> Filter {
        Filter {
            suppress: vec![false; 256],
            ..Filter::default()
        }
    }

    /// Applies one option (`'i'`, `'x'`, `'I'`, `'X'`, `'b'`, `'c'`,
    /// `'C'`) with its argument. The first `-i`/`-I` hides every tag
    /// not named, as in varnishlog.
    pub fn arg(&mut self, opt: char, val: &str) -> Result<(), String> {
        if self.suppress.is_empty() {
            self.suppress = vec![false; 256];
        }
        if (opt == 'i' || opt == 'I') && !self.seen_ix {
            self.suppress.iter_mut().for_each(|s| *s = true);
        }
        match opt {
            'b' => self.backend = true,
            'c' => self.client = true,
            'C' => self.caseless = true,
            'i' | 'x' => {
                self.seen_ix = true;
                let tags = Tag::list(val).map_err(|e| format!("-{opt}: {e}"))?;
                for t in tags {
                    self.suppress[t as usize] = opt == 'x';
                }
            }
            'I' | 'X' => {
                self.seen_ix = true;
                let (tags, re) = match val.split_once(':') {
                    Some((l, re)) => (Some(Tag::list(l).map_err(|e| format!("-{opt}: {e}"))?), re),
                    None => (None, val),
                };
                let re = RegexBuilder::new()
                    .caseless(self.caseless)
                    .build(re)
                    .map_err(|e| format!("-{opt}: Regex error ({e})"))?;
                if opt == 'I' {
                    self.select.push((tags, re));
                } else {
                    self.hide.push((tags, re));
                }
            }
            _ => return Err(format!("unknown filter option -{opt}")),
        }
        Ok(())
    }

    fn matches_ix(list: &[(Option<Vec<Tag>>, Regex)], r: &Record) -> bool {
        list.iter().any(|(tags, re)| {
            tags.as_ref().is_none_or(|t| t.contains(&r.tag))
                && re.is_match(&r.data).unwrap_or(false)
        })
    }

    /// Whether it shows every record (no option given).
    pub fn shows_all(&self) -> bool {
        !self.seen_ix && !self.client && !self.backend
    }

    /// Whether record `r` is shown.
    pub fn matches(&self, r: &Record) -> bool {
        if self.client && r.kind != Kind::Client {
            return false;
        }
        if self.backend && r.kind != Kind::Backend {
            return false;
        }
        if !self.select.is_empty() && Self::matches_ix(&self.select, r) {
            return true;
        }
        if !self.hide.is_empty() && Self::matches_ix(&self.hide, r) {
            return false;
        }
        !self.suppress.get(r.tag as usize).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(tag: Tag, data: &str) -> Record {
        Record {
            vxid: 1,
            tag,
            kind: Kind::Client,
            data: data.as_bytes().to_vec(),
        }
    }

    #[test]
    fn include_exclude() {
        let mut f = Filter::new();
        f.arg('i', "ReqURL,Resp*").unwrap();
        assert!(f.matches(&r(Tag::ReqURL, "/")));
        assert!(f.matches(&r(Tag::RespStatus, "200")));
        assert!(!f.matches(&r(Tag::ReqMethod, "GET")));
        let mut f = Filter::new();
        f.arg('x', "ReqURL").unwrap();
        assert!(!f.matches(&r(Tag::ReqURL, "/")));
        assert!(f.matches(&r(Tag::ReqMethod, "GET")));
        let mut f = Filter::new();
        f.arg('I', "ReqHeader:^Host").unwrap();
        assert!(f.matches(&r(Tag::ReqHeader, "Host: x")));
        assert!(!f.matches(&r(Tag::ReqHeader, "Accept: x")));
        assert!(!f.matches(&r(Tag::ReqURL, "/")));
        let mut f = Filter::new();
        f.arg('b', "").unwrap();
        assert!(!f.matches(&r(Tag::ReqURL, "/")));
        assert!(Filter::new().arg('i', "Nope").is_err());
        assert!(Filter::new().arg('I', "(").is_err());
    }
}
