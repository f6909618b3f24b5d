//! Bans (Varnish's `cache_ban`): expressions over `req.url`,
//! `req.http.*`, `obj.status` and `obj.http.*`, tested against an object
//! at lookup when the object is older than the ban.

use crate::cache_obj::{hdr_get, Headers, Object};
use pcre2::bytes::Regex;
use std::sync::{Arc, RwLock};

#[derive(Debug)]
enum Field {
    ReqUrl,
    ReqHttp(String),
    ObjStatus,
    ObjHttp(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Match,
    NoMatch,
}

#[derive(Debug)]
struct Cond {
    field: Field,
    op: Op,
    arg: String,
    re: Option<Regex>,
}

/// One ban: all conditions must hold (`&&`).
#[derive(Debug)]
pub struct Ban {
    pub time: f64,
    pub text: String,
    conds: Vec<Cond>,
}

/// Parses a ban expression; the error text is what `std.ban_error()`
/// and the log report.
pub fn parse(text: &str, time: f64) -> Result<Ban, String> {
    let mut conds = Vec::new();
    for part in text.split("&&") {
        let part = part.trim();
        let (field, rest) = part
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("Expected operator in \"{part}\""))?;
        let rest = rest.trim_start();
        let (op, arg) = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("!~", Op::NoMatch),
            ("~", Op::Match),
        ]
        .iter()
        .find_map(|(s, op)| rest.strip_prefix(s).map(|a| (*op, a.trim())))
        .ok_or_else(|| format!("Unknown or unsupported operator in \"{part}\""))?;
        let arg = arg
            .strip_prefix('"')
            .and_then(|a| a.strip_suffix('"'))
            .unwrap_or(arg)
            .to_string();
        let field = if field == "req.url" {
            Field::ReqUrl
        } else if field == "obj.status" {
            Field::ObjStatus
        } else if let Some(h) = field.strip_prefix("req.http.") {
            Field::ReqHttp(h.to_string())
        } else if let Some(h) = field.strip_prefix("obj.http.") {
            Field::ObjHttp(h.to_string())
        } else {
            return Err(format!("Unknown or unsupported field \"{field}\""));
        };
        let re = match op {
            Op::Match | Op::NoMatch => Some(crate::vre::compile(&arg)?),
            _ => None,
        };
        conds.push(Cond { field, op, arg, re });
    }
    Ok(Ban {
        time,
        text: text.to_string(),
        conds,
    })
}

impl Ban {
    /// Whether the ban matches `obj` looked up by a request with `url`
    /// and `req` headers.
    pub fn matches(&self, obj: &Object, url: &str, req: &Headers) -> bool {
        self.conds.iter().all(|c| {
            let status;
            let v: Option<&str> = match &c.field {
                Field::ReqUrl => Some(url),
                Field::ReqHttp(h) => hdr_get(req, h),
                Field::ObjHttp(h) => hdr_get(&obj.headers, h),
                Field::ObjStatus => {
                    status = obj.status.to_string();
                    Some(status.as_str())
                }
            };
            let v = v.unwrap_or("");
            match (c.op, &c.re) {
                (Op::Eq, _) => v == c.arg,
                (Op::Ne, _) => v != c.arg,
                (Op::Match, Some(re)) => re.is_match(v.as_bytes()).unwrap_or(false),
                (Op::NoMatch, Some(re)) => !re.is_match(v.as_bytes()).unwrap_or(true),
                _ => false,
            }
        })
    }
}

/// The ban list, newest last.
#[derive(Default)]
pub struct BanList {
    bans: RwLock<Vec<Arc<Ban>>>,
}

impl BanList {
    pub fn add(&self, ban: Ban) {
        if let Ok(mut b) = self.bans.write() {
            b.push(Arc::new(ban));
        }
    }

    /// Whether a ban newer than the object matches it.
    pub fn banned(&self, obj: &Object, url: &str, req: &Headers) -> bool {
        let Ok(b) = self.bans.read() else {
            return false;
        };
        b.iter()
            .rev()
            .take_while(|ban| ban.time > obj.t_insert)
            .any(|ban| ban.matches(obj, url, req))
    }

    /// The ban list, newest first, as `ban.list` shows it.
    pub fn list(&self) -> Vec<(f64, String)> {
        self.bans
            .read()
            .map(|b| b.iter().rev().map(|x| (x.time, x.text.clone())).collect())
            .unwrap_or_default()
    }
}
