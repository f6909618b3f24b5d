//! Tenant administration: the `tenant.*` commands of the admin CLI (and
//! so of the HTTP admin API) and the `--tenants FILE` configuration.
//!
//! * `tenant.add LABEL`: declares LABEL a tenant: requests that reach
//!   it by `return (vcl(LABEL))` get their own cache, bans and shared
//!   state (without quotas until some are set).
//! * `tenant.remove LABEL`: the reverse; its objects go.
//! * `tenant.list [-j]`: every tenant with its objects, bytes, quota and
//!   what its quotas refused so far.
//! * `tenant.quota TENANT [KEY=VALUE ...]`: sets quotas (`none` lifts
//!   one), declaring the tenant if need be; without `KEY=VALUE` shows
//!   them. Keys: `cache_bytes`, `cpu_ms`, `wasm_memory`,
//!   `backend_conns`, `requests`, `request_queue`, `request_rate`.
//! * `tenant.ban TENANT FIELD OP ARG [&& ...]`: `ban` in one tenant.
//!
//! `TENANT` is a label's name, or `*` for the default tenant (requests
//! routed through no tenant's label). A tenant may be declared before
//! its label exists.

use crate::cache_req_fsm::Ctx;
use crate::cache_tenant::{Quota, Tenant, DEFAULT, KEYS};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// CLI status codes (Varnish's `CLIS_*`).
const OK: u16 = 200;
const TOOFEW: u16 = 104;
const PARAM: u16 = 106;

/// Answers a `tenant.*` command; `None` if `cmd` is not one.
pub fn command(ctx: &Ctx, cmd: &str, args: &[String]) -> Option<(u16, String)> {
    Some(match cmd {
        "tenant.list" => (OK, list(ctx, args.iter().any(|a| a == "-j"))),
        "tenant.add" | "tenant.remove" => {
            let Some(name) = args.first() else {
                return Some((TOOFEW, "Too few parameters\n".into()));
            };
            if name == DEFAULT {
                return Some((PARAM, "The default tenant is always there".into()));
            }
            if let Some(e) = crate::mgt_vcl::invalid_name(name) {
                return Some(e);
            }
            if cmd == "tenant.add" {
                ctx.tenants.get_or_make(name);
            } else if !ctx.tenants.remove(name) {
                return Some((PARAM, format!("No tenant named {name}")));
            }
            ctx.vcls.refresh();
            (OK, String::new())
        }
        "tenant.quota" => match args.split_first() {
            None => (TOOFEW, "Too few parameters\n".into()),
            Some((name, sets)) => quota(ctx, name, sets),
        },
        "tenant.ban" => {
            if args.len() < 4 {
                return Some((TOOFEW, "Too few parameters\n".into()));
            }
            let Some(t) = ctx.tenants.get(&args[0]) else {
                return Some((PARAM, format!("No tenant named {}", args[0])));
            };
            match crate::cache_ban::parse_words(&args[1..], crate::vrt_ctx::now()) {
                Ok(b) => {
                    t.cache.bans.add(b, ctx.params().flag("ban_dups"));
                    (OK, String::new())
                }
                Err(e) => (PARAM, e),
            }
        }
        _ => return None,
    })
}

/// Checks a tenant name: `*` or a valid label name.
fn check_name(name: &str) -> Result<(), (u16, String)> {
    if name == DEFAULT {
        return Ok(());
    }
    match crate::mgt_vcl::invalid_name(name) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn quota(ctx: &Ctx, name: &str, sets: &[String]) -> (u16, String) {
    if let Err(e) = check_name(name) {
        return e;
    }
    if sets.is_empty() {
        let q = ctx.tenants.get(name).map(|t| t.quota()).unwrap_or_default();
        let out: Vec<String> = KEYS.iter().map(|k| format!("{k}={}", q.show(k))).collect();
        return (OK, out.join("\n"));
    }
    let t = match ctx.tenants.get(name) {
        Some(t) => t,
        None => {
            let t = ctx.tenants.get_or_make(name);
            ctx.vcls.refresh();
            t
        }
    };
    let mut q = t.quota();
    for kv in sets {
        let Some((k, v)) = kv.split_once('=') else {
            return (PARAM, format!("{kv}: expected KEY=VALUE"));
        };
        if let Err(e) = q.set(k.trim(), v.trim()) {
            return (PARAM, e);
        }
    }
    t.set_quota(q);
    (OK, String::new())
}

/// The program each tenant's labels name, `label->vcl`, comma separated.
fn labels_of(ctx: &Ctx, t: &Tenant) -> String {
    if t.name == DEFAULT {
        return format!("active->{}", ctx.active_name());
    }
    ctx.vcls
        .tenant_labels()
        .into_iter()
        .filter(|(tenant, _)| *tenant == t.name)
        .map(|(tenant, vcl)| format!("{tenant}->{vcl}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn list(ctx: &Ctx, json: bool) -> String {
    let tenants: Vec<Arc<Tenant>> = ctx.tenants.all();
    let show = |q: Option<u64>| q.map_or_else(|| "-".to_string(), |v| v.to_string());
    if json {
        let rows: Vec<serde_json::Value> = tenants
            .iter()
            .map(|t| {
                let q = t.quota();
                serde_json::json!({
                    "name": t.name,
                    "routes": labels_of(ctx, t),
                    "objects": t.cache.objects_held(),
                    "bytes": t.cache.used(),
                    "nuked": t.cache.nuked(),
                    "backend_conns": t.conns(),
                    "backend_conns_refused": t.conns_refused.load(Ordering::Relaxed),
                    "cpu_503": t.cpu_503.load(Ordering::Relaxed),
                    "requests": t.requests().0,
                    "requests_waiting": t.requests().1,
                    "requests_queued": t.requests_queued.load(Ordering::Relaxed),
                    "requests_refused": t.requests_refused.load(Ordering::Relaxed),
                    "quota": {
                        "cache_bytes": q.cache_bytes,
                        "cpu_ms": q.cpu_ms,
                        "wasm_memory": q.wasm_memory,
                        "backend_conns": q.backend_conns,
                        "requests": q.requests,
                        "request_queue": q.request_queue,
                        "request_rate": q.request_rate,
                    },
                })
            })
            .collect();
        return serde_json::to_string_pretty(&rows).unwrap_or_default();
    }
    let mut out = format!(
        "{:<20} {:>8} {:>12} {:>12} {:>8} {:>6} {:>8} {:>8} {:>6} {:>8} {:>9}  routes",
        "tenant",
        "objects",
        "bytes",
        "quota",
        "nuked",
        "conns",
        "refused",
        "cpu_503",
        "reqs",
        "queued",
        "queue_503"
    );
    for t in &tenants {
        let q = t.quota();
        out.push_str(&format!(
            "\n{:<20} {:>8} {:>12} {:>12} {:>8} {:>6} {:>8} {:>8} {:>6} {:>8} {:>9}  {}",
            t.name,
            t.cache.objects_held(),
            t.cache.used(),
            show(q.cache_bytes),
            t.cache.nuked(),
            t.conns(),
            t.conns_refused.load(Ordering::Relaxed),
            t.cpu_503.load(Ordering::Relaxed),
            t.requests().0,
            t.requests_queued.load(Ordering::Relaxed),
            t.requests_refused.load(Ordering::Relaxed),
            labels_of(ctx, t),
        ));
    }
    out
}

/// The tenants' gauges and counters in Prometheus' text format, appended
/// to `/metrics` (label `tenant`, `*` for the default tenant).
pub fn prometheus(ctx: &Ctx) -> String {
    let tenants = ctx.tenants.all();
    type Get = fn(&Tenant) -> u64;
    let families: [(&str, &str, &str, Get); 11] = [
        (
            "shellac_tenant_objects",
            "gauge",
            "Objects in the tenant's cache",
            |t| t.cache.objects_held() as u64,
        ),
        (
            "shellac_tenant_bytes",
            "gauge",
            "Bytes the tenant's objects hold",
            |t| t.cache.used(),
        ),
        (
            "shellac_tenant_cache_bytes_quota",
            "gauge",
            "The tenant's cache budget in bytes",
            |t| t.cache.budget(),
        ),
        (
            "shellac_tenant_lru_nuked_total",
            "counter",
            "Objects evicted from the tenant's cache to fit",
            |t| t.cache.nuked(),
        ),
        (
            "shellac_tenant_backend_conns",
            "gauge",
            "Backend connections the tenant's fetches hold",
            |t| u64::from(t.conns()),
        ),
        (
            "shellac_tenant_backend_conns_refused_total",
            "counter",
            "Fetches failed for the tenant's backend_conns quota",
            |t| t.conns_refused.load(Ordering::Relaxed),
        ),
        (
            "shellac_tenant_cpu_503_total",
            "counter",
            "Requests failed for the tenant's cpu_ms quota",
            |t| t.cpu_503.load(Ordering::Relaxed),
        ),
        (
            "shellac_tenant_requests",
            "gauge",
            "Client requests in progress under the tenant's requests quota",
            |t| u64::from(t.requests().0),
        ),
        (
            "shellac_tenant_requests_waiting",
            "gauge",
            "Client requests waiting in the tenant's queue",
            |t| u64::from(t.requests().1),
        ),
        (
            "shellac_tenant_requests_queued_total",
            "counter",
            "Client requests that waited for the tenant's requests quota",
            |t| t.requests_queued.load(Ordering::Relaxed),
        ),
        (
            "shellac_tenant_requests_refused_total",
            "counter",
            "Client requests refused (503) because the tenant's queue was full",
            |t| t.requests_refused.load(Ordering::Relaxed),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, get) in families {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for t in &tenants {
            let v = get(t);
            if v == u64::MAX {
                // No budget.
                continue;
            }
            out.push_str(&format!(
                "{name}{{tenant={}}} {}\n",
                crate::vmod_directors::json_str(&t.name),
                v
            ));
        }
    }
    out
}

/// Errors in a `--tenants` file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Syntax(#[from] toml::de::Error),
    #[error("[{section}]: {why}")]
    Bad { section: String, why: String },
}

/// Reads a `--tenants` file (TOML) into quotas by tenant name:
///
/// ```toml
/// [default]            # the default tenant (`*`)
/// cache_bytes = "1G"
///
/// [label.shop_a]       # declares label shop_a a tenant
/// cache_bytes = "64M"
/// cpu_ms = 20
/// wasm_memory = "16M"
/// backend_conns = 10
/// ```
pub fn parse_config(text: &str) -> Result<Vec<(String, Quota)>, ConfigError> {
    let table: toml::Table = toml::from_str(text)?;
    let bad = |section: &str, why: String| ConfigError::Bad {
        section: section.to_string(),
        why,
    };
    let quota = |section: &str, v: &toml::Value| -> Result<Quota, ConfigError> {
        let Some(t) = v.as_table() else {
            return Err(bad(section, "not a table".into()));
        };
        let mut q = Quota::default();
        for (k, v) in t {
            let s = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                _ => return Err(bad(section, format!("{k}: a string or an integer"))),
            };
            q.set(k, &s).map_err(|e| bad(section, e))?;
        }
        Ok(q)
    };
    let mut out = Vec::new();
    for (k, v) in &table {
        match k.as_str() {
            "default" => out.push((DEFAULT.to_string(), quota("default", v)?)),
            "label" => {
                let Some(labels) = v.as_table() else {
                    return Err(bad("label", "not a table".into()));
                };
                for (name, q) in labels {
                    let section = format!("label.{name}");
                    if let Some((_, why)) = crate::mgt_vcl::invalid_name(name) {
                        return Err(bad(&section, why));
                    }
                    out.push((name.clone(), quota(&section, q)?));
                }
            }
            other => {
                return Err(bad(
                    other,
                    "unknown section (use [default] or [label.NAME])".into(),
                ))
            }
        }
    }
    Ok(out)
}

/// Applies quotas read by [`parse_config`].
pub fn apply(ctx: &Ctx, quotas: Vec<(String, Quota)>) {
    for (name, q) in quotas {
        ctx.tenants.get_or_make(&name).set_quota(q);
    }
    ctx.vcls.refresh();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_default_and_labels() {
        let q = parse_config(
            "[default]\ncache_bytes = \"1M\"\n[label.shop_a]\ncpu_ms = 20\nbackend_conns = 3\nrequests = 8\nrequest_queue = 0\n",
        )
        .expect("parses");
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].0, "*");
        assert_eq!(q[0].1.cache_bytes, Some(1 << 20));
        assert_eq!(q[1].0, "shop_a");
        assert_eq!(q[1].1.cpu_ms, Some(20));
        assert_eq!(q[1].1.backend_conns, Some(3));
        assert_eq!(q[1].1.requests, Some(8));
        // A queue of 0 is a bound (nobody waits), not "no limit".
        assert_eq!(q[1].1.request_queue, Some(0));
    }

    #[test]
    fn config_errors_say_where() {
        let e = parse_config("[label.a]\ncpu_ms = \"x\"\n").expect_err("bad value");
        assert!(e.to_string().contains("label.a"), "{e}");
        assert!(parse_config("[tenant]\n").is_err());
        assert!(parse_config("[label.\"9x\"]\n").is_err());
        assert!(parse_config("[default\n").is_err());
        assert!(parse_config("[default]\ncolour = 1\n").is_err());
    }
}
