//! vmod-querystring as a Shellac component.

wit_bindgen::generate!({
    world: "vmod:querystring/vmod-querystring",
    path: ["../../wit", "wit"],
    generate_all,
});

mod logic;

use exports::vmod::querystring::querystring::{Guest, GuestFilter, MatchKind, Mode};
use logic::{Criterion, Query};
use shellac::vmod::{host, task};
use shellac_vmod_sdk::InitOnly;

struct Component;
shellac_vmod_sdk::lifecycle!(Component);
export!(Component);

impl Guest for Component {
    type Filter = Filter;

    fn clean(url: String) -> String {
        let q = Query::parse(&url);
        q.keep(|p| !p.is_empty() && !p.starts_with('=')).to_url()
    }

    fn sort(url: String, uniq: Option<bool>) -> String {
        let mut q = Query::parse(&url);
        q.sort(uniq.unwrap_or(false));
        q.to_url()
    }

    fn remove(url: String) -> String {
        Query::parse(&url).path.to_string()
    }
}

/// `querystring.filter`: criteria added in vcl_init, applied in tasks.
struct Filter {
    sort: bool,
    uniq: bool,
    by_param: bool,
    criteria: InitOnly<Vec<Criterion>>,
}

impl Filter {
    fn add(&self, c: Criterion) -> Result<(), String> {
        self.criteria.modify(|v| v.push(c))
    }

    fn matches(&self, param: &str) -> bool {
        let subject = if self.by_param {
            param
        } else {
            param.split_once('=').map_or(param, |(n, _)| n)
        };
        self.criteria.get().iter().any(|c| match c {
            Criterion::Exact(s) => s == subject,
            Criterion::Glob(g) => logic::glob(g.as_bytes(), subject.as_bytes()),
            Criterion::Regex(r) => host::regex_match(r, subject).unwrap_or(false),
        })
    }

    fn filtered(&self, url: Option<String>, mode: Option<Mode>) -> (String, String) {
        let url = url.unwrap_or_else(task::url);
        let keep = matches!(mode, Some(Mode::Keep));
        let q = Query::parse(&url);
        let mut q = q.keep(|p| !p.is_empty() && self.matches(p) == keep);
        if self.sort {
            q.sort(self.uniq);
        }
        (q.to_url(), q.query())
    }
}

impl GuestFilter for Filter {
    fn new(sort: Option<bool>, uniq: Option<bool>, r#match: Option<MatchKind>) -> Self {
        Filter {
            sort: sort.unwrap_or(false),
            uniq: uniq.unwrap_or(false),
            by_param: matches!(r#match, Some(MatchKind::Param)),
            criteria: InitOnly::default(),
        }
    }

    fn add_string(&self, string: String) -> Result<(), String> {
        self.add(Criterion::Exact(string))
    }

    fn add_glob(&self, glob: String) -> Result<(), String> {
        self.add(Criterion::Glob(glob))
    }

    fn add_regex(&self, regex: String) -> Result<(), String> {
        host::regex_match(&regex, "")?;
        self.add(Criterion::Regex(regex))
    }

    fn apply(&self, url: Option<String>, mode: Option<Mode>) -> String {
        self.filtered(url, mode).0
    }

    fn extract(&self, url: Option<String>, mode: Option<Mode>) -> Option<String> {
        Some(self.filtered(url, mode).1).filter(|q| !q.is_empty())
    }
}
