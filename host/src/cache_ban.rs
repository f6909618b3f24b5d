//! Bans (Varnish's `cache_ban`, `cache_ban_build`, `cache_ban_lurker`):
//! the ban language, the ban list with completed and duplicate marking,
//! the test at lookup, and the lurker that tests obj-only bans in the
//! background so they complete without waiting for requests.
//!
//! A ban is `field op arg [&& field op arg …]`. Fields: `req.url`,
//! `req.http.NAME`, `obj.status`, `obj.http.NAME` (strings, compared with
//! `== != ~ !~`) and `obj.ttl`, `obj.age`, `obj.grace`, `obj.keep`
//! (durations, compared with `== != < <= > >=`). Bans naming `req.*` can
//! only be tested at lookup; the others (obj-only) by the lurker too.

use crate::cache_obj::{hdr_get, Headers, Object};
use pcre2::bytes::Regex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

#[derive(Debug)]
enum Field {
    ReqUrl,
    ReqHttp(String),
    ObjStatus,
    ObjHttp(String),
    ObjTtl,
    ObjAge,
    ObjGrace,
    ObjKeep,
}

impl Field {
    fn is_req(&self) -> bool {
        matches!(self, Field::ReqUrl | Field::ReqHttp(_))
    }

    fn is_duration(&self) -> bool {
        matches!(
            self,
            Field::ObjTtl | Field::ObjAge | Field::ObjGrace | Field::ObjKeep
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Match,
    NoMatch,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug)]
enum Arg {
    Str(String),
    Re(Regex),
    Secs(f64),
}

#[derive(Debug)]
struct Cond {
    field: Field,
    op: Op,
    arg: Arg,
}

/// One ban: all conditions must hold (`&&`).
#[derive(Debug)]
pub struct Ban {
    pub time: f64,
    /// The spec as given, which `ban.list` shows.
    pub text: String,
    conds: Vec<Cond>,
    /// Tested against every object it could apply to (by the lurker), or
    /// made redundant by a newer identical ban (`ban_dups`): skipped.
    completed: AtomicBool,
}

fn field(name: &str) -> Result<Field, String> {
    Ok(match name {
        "req.url" => Field::ReqUrl,
        "obj.status" => Field::ObjStatus,
        "obj.ttl" => Field::ObjTtl,
        "obj.age" => Field::ObjAge,
        "obj.grace" => Field::ObjGrace,
        "obj.keep" => Field::ObjKeep,
        _ => match (
            name.strip_prefix("req.http."),
            name.strip_prefix("obj.http."),
        ) {
            (Some(h), _) if !h.is_empty() => Field::ReqHttp(h.to_string()),
            (_, Some(h)) if !h.is_empty() => Field::ObjHttp(h.to_string()),
            _ => return Err(format!("Unknown or unsupported field \"{name}\"")),
        },
    })
}

/// A duration as bans write it: a number and a unit (`1.5h`, `10s`).
fn duration(s: &str) -> Option<f64> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "w" => 7.0 * 86400.0,
        "y" => 365.0 * 86400.0,
        _ => return None,
    };
    Some(n * mult)
}

fn cond(f: &str, op: &str, arg: &str) -> Result<Cond, String> {
    let field = field(f)?;
    let op = if field.is_duration() {
        match op {
            "==" => Op::Eq,
            "!=" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            _ => {
                return Err(format!(
                    "expected conditional (==, !=, >, >=, < or <=) got \"{op}\""
                ))
            }
        }
    } else {
        match op {
            "==" => Op::Eq,
            "!=" => Op::Ne,
            "~" => Op::Match,
            "!~" => Op::NoMatch,
            _ => {
                return Err(format!(
                    "expected conditional (==, !=, ~ or !~) got \"{op}\""
                ))
            }
        }
    };
    let arg = if field.is_duration() {
        Arg::Secs(
            duration(arg)
                .ok_or_else(|| format!("expected duration <n.nn>[ms|s|m|h|d|w|y] got \"{arg}\""))?,
        )
    } else if matches!(op, Op::Match | Op::NoMatch) {
        Arg::Re(crate::vre::compile(arg).map_err(|e| format!("Regex compile error: {e}"))?)
    } else {
        Arg::Str(arg.to_string())
    };
    Ok(Cond { field, op, arg })
}

fn build(conds: Vec<Cond>, text: String, time: f64) -> Ban {
    Ban {
        time,
        text,
        conds,
        completed: AtomicBool::new(false),
    }
}

/// Parses a ban given as one string (VCL's `ban()` and `std.ban()`): words
/// split at blanks. Errors are Varnish's, which `std.ban_error()` reports.
pub fn parse(text: &str, time: f64) -> Result<Ban, String> {
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    let mut conds = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let f = words[i];
        let op = words
            .get(i + 1)
            .ok_or_else(|| "Expected comparison operator.".to_string())?;
        let arg = words
            .get(i + 2)
            .ok_or_else(|| "Expected second operand.".to_string())?;
        conds.push(cond(f, op, arg)?);
        match words.get(i + 3) {
            None => break,
            Some(&"&&") if i + 4 < words.len() => i += 4,
            Some(&"&&") => break,
            Some(w) => return Err(format!("Expected && between conditions, found \"{w}\"")),
        }
        if i >= words.len() {
            break;
        }
    }
    if conds.is_empty() || words.last() == Some(&"&&") {
        return Err("No ban conditions found.".into());
    }
    Ok(build(conds, words.join(" "), time))
}

/// Parses a ban given as CLI words (`ban req.url ~ "a b"` has the three
/// words `req.url`, `~`, `a b`).
pub fn parse_words(words: &[String], time: f64) -> Result<Ban, String> {
    if words.len() < 3 || !(words.len() + 1).is_multiple_of(4) {
        return Err("Wrong number of arguments".into());
    }
    let mut conds = Vec::new();
    for (n, c) in words.chunks(4).enumerate() {
        if n > 0 && words[n * 4 - 1] != "&&" {
            return Err(format!(
                "Expected && between conditions, found \"{}\"",
                words[n * 4 - 1]
            ));
        }
        conds.push(cond(&c[0], &c[1], &c[2])?);
    }
    let text = words
        .iter()
        .map(|w| {
            if w.is_empty() || w.contains(char::is_whitespace) || w.contains('"') {
                format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    Ok(build(conds, text, time))
}

impl Ban {
    /// Whether it names `req.*` (then only a lookup can test it).
    pub fn is_req(&self) -> bool {
        self.conds.iter().any(|c| c.field.is_req())
    }

    pub fn is_completed(&self) -> bool {
        self.completed.load(Ordering::Relaxed)
    }

    /// Whether the ban matches `obj`, looked up by a request with `url` and
    /// `req` headers (`None`: the lurker, which has no request).
    pub fn matches(&self, obj: &Object, req: Option<(&str, &Headers)>, now: f64) -> bool {
        self.test(obj, req, now, &mut 0)
    }

    /// [`Ban::matches`], adding to `tested` how many of its conditions
    /// were evaluated (`MAIN.bans_tests_tested`).
    pub fn test(
        &self,
        obj: &Object,
        req: Option<(&str, &Headers)>,
        now: f64,
        tested: &mut u64,
    ) -> bool {
        self.conds.iter().all(|c| {
            *tested += 1;
            let secs = match c.field {
                Field::ObjTtl => Some(obj.fresh_until() - now),
                Field::ObjAge => Some(now - obj.t_origin),
                Field::ObjGrace => Some(obj.grace),
                Field::ObjKeep => Some(obj.keep),
                _ => None,
            };
            if let (Some(v), Arg::Secs(a)) = (secs, &c.arg) {
                return match c.op {
                    Op::Eq => v == *a,
                    Op::Ne => v != *a,
                    Op::Lt => v < *a,
                    Op::Le => v <= *a,
                    Op::Gt => v > *a,
                    Op::Ge => v >= *a,
                    Op::Match | Op::NoMatch => false,
                };
            }
            let status;
            let v: Option<&str> = match &c.field {
                Field::ReqUrl => match req {
                    Some((url, _)) => Some(url),
                    None => return false,
                },
                Field::ReqHttp(h) => match req {
                    Some((_, hdrs)) => hdr_get(hdrs, h),
                    None => return false,
                },
                Field::ObjHttp(h) => obj.headers.get(h),
                Field::ObjStatus => {
                    status = obj.status.to_string();
                    Some(status.as_str())
                }
                _ => None,
            };
            match (&c.arg, c.op) {
                (Arg::Str(a), Op::Eq) => v == Some(a.as_str()),
                (Arg::Str(a), Op::Ne) => v != Some(a.as_str()),
                // A missing header never matches a regex (and so `!~` holds).
                (Arg::Re(re), Op::Match) => {
                    v.is_some_and(|v| re.is_match(v.as_bytes()).unwrap_or(false))
                }
                (Arg::Re(re), Op::NoMatch) => {
                    !v.is_some_and(|v| re.is_match(v.as_bytes()).unwrap_or(false))
                }
                _ => false,
            }
        })
    }
}

/// The ban list, oldest first. It starts with one completed ban, as
/// Varnish's does, so an empty cache still lists a ban.
pub struct BanList {
    bans: RwLock<Vec<Arc<Ban>>>,
}

impl Default for BanList {
    fn default() -> Self {
        let first = build(Vec::new(), String::new(), crate::vrt_ctx::now());
        first.completed.store(true, Ordering::Relaxed);
        BanList {
            bans: RwLock::new(vec![Arc::new(first)]),
        }
    }
}

/// One line of `ban.list`.
pub struct BanEntry {
    pub time: f64,
    pub text: String,
    pub completed: bool,
    pub refs: usize,
}

impl BanList {
    /// Adds `ban`; with `dups` (the `ban_dups` parameter) older identical
    /// bans are marked completed. Returns how many were.
    pub fn add(&self, ban: Ban, dups: bool) -> usize {
        let Ok(mut b) = self.bans.write() else {
            return 0;
        };
        let mut n = 0;
        if dups {
            for old in b.iter().filter(|o| !o.is_completed() && o.text == ban.text) {
                old.completed.store(true, Ordering::Relaxed);
                n += 1;
            }
        }
        b.push(Arc::new(ban));
        crate::vsc::MAIN.bans_added.inc();
        crate::vsc::MAIN.bans_dups.add(n as u64);
        n
    }

    /// How many bans the list holds (completed ones included).
    pub fn len(&self) -> usize {
        self.bans.read().map_or(0, |b| b.len())
    }

    /// Whether the list holds no ban.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The newest ban's time.
    pub fn newest(&self) -> f64 {
        self.bans
            .read()
            .ok()
            .and_then(|b| b.last().map(|x| x.time))
            .unwrap_or(0.0)
    }

    /// Whether a ban newer than what `obj` was last checked against
    /// matches it. If none does, the object is marked checked up to the
    /// newest ban, so the next lookup tests nothing.
    pub fn banned(&self, obj: &Object, url: &str, req: &Headers, now: f64) -> bool {
        let Ok(b) = self.bans.read() else {
            return false;
        };
        let checked = obj.ban_checked();
        let mut tests = 0;
        let hit = b
            .iter()
            .rev()
            .take_while(|ban| ban.time > checked)
            .filter(|ban| !ban.is_completed())
            .any(|ban| {
                crate::vsc::MAIN.bans_tested.inc();
                ban.test(obj, Some((url, req)), now, &mut tests)
            });
        crate::vsc::MAIN.bans_tests_tested.add(tests);
        if hit {
            crate::vsc::MAIN.bans_obj_killed.inc();
        }
        if !hit {
            if let Some(last) = b.last() {
                obj.set_ban_checked(last.time);
            }
        }
        hit
    }

    /// The obj-only bans the lurker may test now: not completed, older
    /// than `age` seconds.
    pub fn lurkable(&self, now: f64, age: f64) -> Vec<Arc<Ban>> {
        self.bans
            .read()
            .map(|b| {
                b.iter()
                    .filter(|x| !x.is_completed() && !x.is_req() && !x.conds.is_empty())
                    .filter(|x| x.time <= now - age)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether an object last checked at `checked` is hit by one of the
    /// lurker's `bans`.
    pub fn lurk_hit(bans: &[Arc<Ban>], obj: &Object, now: f64) -> bool {
        let checked = obj.ban_checked();
        let mut tests = 0;
        let hit = bans
            .iter()
            .filter(|b| b.time > checked && !b.is_completed())
            .any(|b| {
                crate::vsc::MAIN.bans_lurker_tested.inc();
                b.test(obj, None, now, &mut tests)
            });
        crate::vsc::MAIN.bans_lurker_tests_tested.add(tests);
        if hit {
            crate::vsc::MAIN.bans_lurker_obj_killed.inc();
        }
        hit
    }

    /// Whether a req ban newer than `t` is still pending (then an object
    /// checked up to `t` must keep its mark for the lookup to test it).
    pub fn req_pending_after(&self, t: f64) -> bool {
        self.bans
            .read()
            .map(|b| {
                b.iter()
                    .rev()
                    .take_while(|x| x.time > t)
                    .any(|x| x.is_req() && !x.is_completed())
            })
            .unwrap_or(false)
    }

    /// Marks the lurker's bans completed: every object has been tested.
    pub fn complete(bans: &[Arc<Ban>]) {
        for b in bans {
            b.completed.store(true, Ordering::Relaxed);
        }
    }

    /// Drops the oldest bans that no object needs any more: those at or
    /// before `oldest_check` (the least checked object's mark), keeping the
    /// newest ban always.
    pub fn trim(&self, oldest_check: f64) {
        if let Ok(mut b) = self.bans.write() {
            let keep_from = b
                .iter()
                .position(|x| x.time >= oldest_check)
                .unwrap_or(b.len().saturating_sub(1))
                .min(b.len().saturating_sub(1));
            // The first kept ban is the one objects checked up to exactly.
            let keep_from = if keep_from > 0 && b[keep_from].time > oldest_check {
                keep_from - 1
            } else {
                keep_from
            };
            b.drain(..keep_from);
            crate::vsc::MAIN.bans_deleted.add(keep_from as u64);
        }
    }

    /// The list, newest first, with how many of `checks` (objects' ban
    /// marks) point at each ban, as `ban.list` shows.
    pub fn list(&self, checks: &[f64]) -> Vec<BanEntry> {
        let Ok(b) = self.bans.read() else {
            return Vec::new();
        };
        let mut refs = vec![0usize; b.len()];
        for &c in checks {
            // The newest ban at or before the mark.
            if let Some(i) = b.iter().rposition(|x| x.time <= c) {
                refs[i] += 1;
            }
        }
        b.iter()
            .zip(refs)
            .rev()
            .map(|(x, refs)| BanEntry {
                time: x.time,
                // Varnish drops a completed ban's spec.
                text: if x.is_completed() {
                    String::new()
                } else {
                    x.text.clone()
                },
                completed: x.is_completed(),
                refs,
            })
            .collect()
    }
}

/// The ban lurker: every `ban_lurker_sleep` seconds (0 disables it, as in
/// Varnish) one pass over the cache; ends when the context is gone.
pub async fn lurker(ctx: std::sync::Weak<crate::cache_req_fsm::Ctx>) {
    loop {
        let sleep = {
            let Some(ctx) = ctx.upgrade() else { return };
            let p = ctx.params();
            let (sleep, age) = (p.num("ban_lurker_sleep"), p.num("ban_lurker_age"));
            if sleep > 0.0 {
                let n: usize = ctx
                    .tenants
                    .all()
                    .iter()
                    .map(|t| t.cache.ban_lurk(crate::vrt_ctx::now(), age))
                    .sum();
                if n > 0 {
                    tracing::debug!("ban lurker removed {n} objects");
                }
            }
            // Disabled: look again later in case the parameter changes.
            if sleep > 0.0 {
                sleep.max(0.001)
            } else {
                1.0
            }
        };
        tokio::time::sleep(std::time::Duration::from_secs_f64(sleep)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_varnishs() {
        let e = |s: &str| parse(s, 0.0).err().unwrap_or_default();
        assert_eq!(e("req.url"), "Expected comparison operator.");
        assert_eq!(e("req.url ~"), "Expected second operand.");
        assert_eq!(
            e("req.url ~ a b"),
            "Expected && between conditions, found \"b\""
        );
        assert_eq!(e("req.url ~ a &&"), "No ban conditions found.");
        assert_eq!(e(""), "No ban conditions found.");
        assert_eq!(
            e("req.url < 3"),
            "expected conditional (==, !=, ~ or !~) got \"<\""
        );
        assert_eq!(
            e("obj.ttl ~ 3"),
            "expected conditional (==, !=, >, >=, < or <=) got \"~\""
        );
        assert_eq!(
            e("obj.ttl == 3x"),
            "expected duration <n.nn>[ms|s|m|h|d|w|y] got \"3x\""
        );
        assert_eq!(e("foo == 1"), "Unknown or unsupported field \"foo\"");
        assert!(e("req.url ~ [[").starts_with("Regex compile error: "));
        assert!(parse("obj.keep == 6.789s && obj.ttl > 1d", 0.0).is_ok());
        let w = |s: &[&str]| {
            let v: Vec<String> = s.iter().map(|x| x.to_string()).collect();
            parse_words(&v, 0.0).err().unwrap_or_default()
        };
        assert_eq!(w(&["req.url", "==", "a", "b"]), "Wrong number of arguments");
        assert_eq!(
            w(&["req.url", "==", "a", "||", "obj.ttl", ">", "1d"]),
            "Expected && between conditions, found \"||\""
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration("90m"), Some(5400.0));
        assert_eq!(duration("123ms"), Some(0.123));
        assert_eq!(duration("1y"), Some(365.0 * 86400.0));
        assert_eq!(duration("3"), None);
    }

    #[test]
    fn dups_complete_older_identical_bans() {
        let l = BanList::default();
        let t = crate::vrt_ctx::now();
        assert_eq!(l.add(parse("req.url ~ a", t + 1.0).unwrap(), true), 0);
        assert_eq!(l.add(parse("req.url ~ b", t + 2.0).unwrap(), true), 0);
        assert_eq!(l.add(parse("req.url ~ a", t + 3.0).unwrap(), true), 1);
        let list = l.list(&[]);
        assert_eq!(list.len(), 4);
        assert!(!list[0].completed && !list[1].completed && list[2].completed);
        // An object checked up to the second ban keeps it and newer ones.
        l.trim(t + 2.0);
        assert_eq!(l.list(&[t + 2.0]).len(), 2);
        assert_eq!(l.list(&[t + 2.0])[1].refs, 1);
        // No objects: only the newest stays.
        l.trim(f64::INFINITY);
        assert_eq!(l.list(&[]).len(), 1);
    }
}
