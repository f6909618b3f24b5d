//! Run-time parameters (varnishd's `mgt_param`): the names, defaults and
//! units Varnish 7.1 uses, so `-p name=value` means the same thing here.

use std::collections::BTreeMap;

/// Why a `-p` was refused.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    #[error("Unknown parameter \"{0}\".")]
    Unknown(String),
    #[error("parameter \"{name}\": {why}")]
    BadValue { name: String, why: String },
    #[error("-p expects NAME=VALUE, got \"{0}\"")]
    Syntax(String),
}

/// The unit of a parameter, which decides how its value is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Bytes,
    Count,
    Bool,
    Text,
    /// A set of named bits changed with `+name`/`-name` (`feature`).
    Bits(&'static [&'static str]),
}

/// One parameter's definition.
struct Def {
    name: &'static str,
    unit: Unit,
    default: &'static str,
    min: Option<f64>,
}

const fn d(name: &'static str, unit: Unit, default: &'static str, min: Option<f64>) -> Def {
    Def {
        name,
        unit,
        default,
        min,
    }
}

/// Varnish 7.1's `feature` bits.
const FEATURES: &[&str] = &[
    "http2",
    "short_panic",
    "no_coredump",
    "https_scheme",
    "http_date_postel",
    "esi_ignore_https",
    "esi_disable_xml_check",
    "esi_ignore_other_elements",
    "esi_remove_bom",
    "esi_include_onerror",
    "wait_silo",
    "validate_headers",
    "busy_stats_rate",
];

/// Applies a bits argument (`none`, or `+a,-b,…`) to the set `cur` (kept
/// as `+a,+b` in table order, or `none`), as varnishd's `bit_tweak`.
fn tweak_bits(tags: &[&str], cur: &str, arg: &str) -> Result<String, String> {
    let mut on: Vec<bool> = tags
        .iter()
        .map(|t| cur.split(',').any(|c| c.strip_prefix('+') == Some(t)))
        .collect();
    if arg.trim() == "none" {
        on.iter_mut().for_each(|b| *b = false);
    } else {
        for item in arg.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (set, name) = match item.split_at(1) {
                ("+", n) => (true, n),
                ("-", n) => (false, n),
                _ => return Err(format!("Missing '+' or '-' ({item})")),
            };
            let i = tags
                .iter()
                .position(|t| t.eq_ignore_ascii_case(name))
                .ok_or_else(|| format!("Unknown feature bit ({item})"))?;
            on[i] = set;
        }
    }
    let s: Vec<String> = tags
        .iter()
        .zip(on)
        .filter(|(_, b)| *b)
        .map(|(t, _)| format!("+{t}"))
        .collect();
    Ok(if s.is_empty() {
        "none".to_string()
    } else {
        s.join(",")
    })
}

/// Varnish 7.1's defaults for the parameters Shellac implements.
const DEFS: &[Def] = &[
    d("default_ttl", Unit::Seconds, "120", Some(0.0)),
    d("default_grace", Unit::Seconds, "10", Some(0.0)),
    d("default_keep", Unit::Seconds, "0", Some(0.0)),
    d("max_restarts", Unit::Count, "4", Some(0.0)),
    // Applied to regexes as they are compiled (see `vre::compile`).
    d("pcre2_match_limit", Unit::Count, "10000", Some(1.0)),
    d("pcre2_depth_limit", Unit::Count, "20", Some(1.0)),
    d("max_retries", Unit::Count, "4", Some(0.0)),
    d("connect_timeout", Unit::Seconds, "3.5", Some(0.0)),
    d("first_byte_timeout", Unit::Seconds, "60", Some(0.0)),
    d("between_bytes_timeout", Unit::Seconds, "60", Some(0.0)),
    d("backend_idle_timeout", Unit::Seconds, "60", Some(1.0)),
    d("timeout_idle", Unit::Seconds, "5", Some(0.0)),
    d("send_timeout", Unit::Seconds, "600", Some(0.0)),
    d("http_gzip_support", Unit::Bool, "on", None),
    d("http_range_support", Unit::Bool, "on", None),
    d("http_req_hdr_len", Unit::Bytes, "8k", Some(40.0)),
    d("http_req_size", Unit::Bytes, "32k", Some(256.0)),
    d("http_resp_hdr_len", Unit::Bytes, "8k", Some(40.0)),
    d("http_resp_size", Unit::Bytes, "32k", Some(256.0)),
    d("http_max_hdr", Unit::Count, "64", Some(32.0)),
    d("workspace_client", Unit::Bytes, "64k", Some(9216.0)),
    d("workspace_backend", Unit::Bytes, "64k", Some(1024.0)),
    d("ban_lurker_sleep", Unit::Seconds, "0.010", Some(0.0)),
    d("ban_lurker_age", Unit::Seconds, "60", Some(0.0)),
    d("max_esi_depth", Unit::Count, "5", Some(0.0)),
    d("shortlived", Unit::Seconds, "10", Some(0.0)),
    d("vsl_buffer", Unit::Bytes, "4k", Some(267.0)),
    d("vsl_reclen", Unit::Bytes, "255b", Some(16.0)),
    d("vsl_space", Unit::Bytes, "80M", Some(1048576.0)),
    d("vsl_mask", Unit::Text, "default", None),
    d(
        "backend_local_error_holddown",
        Unit::Seconds,
        "10",
        Some(0.0),
    ),
    d(
        "backend_remote_error_holddown",
        Unit::Seconds,
        "0.25",
        Some(0.0),
    ),
    d(
        "vcl_path",
        Unit::Text,
        "/etc/varnish:/usr/share/varnish/vcl",
        None,
    ),
    d("vmod_path", Unit::Text, "/usr/lib/varnish/vmods", None),
    d("feature", Unit::Bits(FEATURES), "+validate_headers", None),
    d("pipe_timeout", Unit::Seconds, "60", Some(0.0)),
    d("idle_send_timeout", Unit::Seconds, "60", Some(0.0)),
    d("timeout_linger", Unit::Seconds, "0.050", Some(0.0)),
    d("lru_interval", Unit::Seconds, "2.000", Some(0.0)),
    d("vcc_err_unref", Unit::Bool, "on", None),
    d("vcc_allow_inline_c", Unit::Bool, "off", None),
    d("vcc_unsafe_path", Unit::Bool, "on", None),
    d("ban_dups", Unit::Bool, "on", None),
    d("ban_cutoff", Unit::Count, "0", Some(0.0)),
    d("gzip_level", Unit::Count, "6", Some(0.0)),
    d("nuke_limit", Unit::Count, "50", Some(0.0)),
    d("max_vcl", Unit::Count, "100", Some(0.0)),
    // How long an `auto` VCL that is not in use stays warm.
    d("vcl_cooldown", Unit::Seconds, "600", Some(1.0)),
    // The pools' sizing as Varnish's (see `cache_pool`: Shellac counts
    // sessions as its workers), checked against each other as Varnish
    // does (see `dynamic_bounds`).
    d("thread_pools", Unit::Count, "2", Some(1.0)),
    d("thread_pool_min", Unit::Count, "100", Some(5.0)),
    d("thread_pool_max", Unit::Count, "5000", None),
    d("thread_pool_reserve", Unit::Count, "0", None),
    d("thread_pool_timeout", Unit::Seconds, "300.000", Some(10.0)),
    // Shellac's own: CPU budget of one call into VCL, in milliseconds.
    d("vcl_cpu_budget_ms", Unit::Count, "100", Some(1.0)),
    // Shellac's own: linear memory cap of one VMOD instance.
    d("vmod_memory_cap", Unit::Bytes, "64m", Some(1048576.0)),
    // Shellac's own: per-VMOD overrides of the two above,
    // `name=CPU_MS/MEMORY,...` (either half may be empty).
    d("vmod_limits", Unit::Text, "", None),
    // Shellac's own: the directories `std.fileread()` and
    // `std.file_exists()` may look into (colon-separated), so an
    // untrusted VCL cannot read the host's files.
    d(
        "fileread_path",
        Unit::Text,
        "/etc/varnish:/usr/share/varnish",
        None,
    ),
];

/// The other parameters of Varnish 7.1: accepted and shown (so configs and
/// test scripts written for varnishd start unchanged) but without effect,
/// because they tune machinery Shellac does not have (thread pools, the
/// shared-memory log, HTTP/2, the C compiler).
const INERT: &[&str] = &[
    "accept_filter",
    "acceptor_sleep_decay",
    "acceptor_sleep_incr",
    "acceptor_sleep_max",
    "auto_restart",
    "ban_lurker_batch",
    "ban_lurker_holdoff",
    "cc_command",
    "cc_warnings",
    "cli_limit",
    "cli_timeout",
    "clock_skew",
    "clock_step",
    "critbit_cooloff",
    "debug",
    "experimental",
    "fetch_chunksize",
    "fetch_maxchunksize",
    "gzip_buffer",
    "gzip_memlevel",
    "h2_header_table_size",
    "h2_initial_window_size",
    "h2_max_concurrent_streams",
    "h2_max_frame_size",
    "h2_max_header_list_size",
    "h2_rx_window_increment",
    "h2_rx_window_low_water",
    "h2_rxbuf_storage",
    "http1_iovs",
    "listen_depth",
    "max_vcl_handling",
    "pcre2_jit_compilation",
    "ping_interval",
    "pipe_sess_max",
    "pool_req",
    "pool_sess",
    "pool_vbo",
    "prefer_ipv6",
    "rush_exponent",
    "sigsegv_handler",
    "syslog_cli_traffic",
    "tcp_fastopen",
    "tcp_keepalive_intvl",
    "tcp_keepalive_probes",
    "tcp_keepalive_time",
    "thread_pool_add_delay",
    "thread_pool_destroy_delay",
    "thread_pool_fail_delay",
    "thread_pool_stack",
    "thread_pool_watchdog",
    "thread_queue_limit",
    "thread_stats_rate",
    "vary_notice",
    "vsm_free_cooldown",
    "workspace_session",
    "workspace_thread",
];

/// A parsed value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Num(f64),
    Bool(bool),
    Text(String),
}

/// The parameter set of one running instance.
#[derive(Clone, Debug)]
pub struct Params {
    values: BTreeMap<&'static str, Value>,
    hot: Hot,
}

/// The parameters every request reads, kept as plain fields: a lookup by
/// name costs a handful of string comparisons, and a cache hit made some
/// seventy of them.
#[derive(Clone, Debug, Default)]
pub struct Hot {
    pub timeout_idle: f64,
    pub send_timeout: f64,
    pub http_req_size: usize,
    pub http_req_hdr_len: usize,
    pub http_max_hdr: usize,
    pub workspace_client: u32,
    pub max_restarts: u32,
    pub http_gzip_support: bool,
    pub http_range_support: bool,
}

impl Default for Params {
    fn default() -> Self {
        let mut values = BTreeMap::new();
        for def in DEFS {
            // The defaults are constants of this file; the unit test checks them.
            if let Ok(v) = parse(def, def.default) {
                values.insert(def.name, v);
            }
        }
        let mut p = Params {
            values,
            hot: Hot::default(),
        };
        p.refresh_hot();
        p
    }
}

/// Parses `10`, `10s`, `1.5m`, `2h`, `1d`, `1w` into seconds.
pub fn parse_duration(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else {
        match s.char_indices().last()? {
            (i, 's') => (&s[..i], 1.0),
            (i, 'm') => (&s[..i], 60.0),
            (i, 'h') => (&s[..i], 3600.0),
            (i, 'd') => (&s[..i], 86400.0),
            (i, 'w') => (&s[..i], 604800.0),
            (i, 'y') => (&s[..i], 31_536_000.0),
            _ => (s, 1.0),
        }
    };
    let v: f64 = num.trim().parse().ok()?;
    v.is_finite().then_some(v * mult)
}

/// Parses `64k`, `1M`, `2G`, `512b`, `100` into bytes.
pub fn parse_bytes(s: &str) -> Option<f64> {
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    let t = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1024.0),
        'm' => (&t[..t.len() - 1], 1024.0 * 1024.0),
        'g' => (&t[..t.len() - 1], 1024.0 * 1024.0 * 1024.0),
        't' => (&t[..t.len() - 1], 1024f64.powi(4)),
        _ => (t, 1.0),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some((v * mult).floor())
}

fn parse(def: &Def, v: &str) -> Result<Value, String> {
    let num = |x: Option<f64>, what: &str| -> Result<Value, String> {
        let x = x.ok_or_else(|| format!("\"{v}\" is not a valid {what}"))?;
        if let Some(min) = def.min {
            if x < min {
                return Err(format!("must be at least {min} (got \"{v}\")"));
            }
        }
        Ok(Value::Num(x))
    };
    match def.unit {
        Unit::Seconds => num(parse_duration(v), "duration"),
        Unit::Bytes => num(parse_bytes(v), "byte size"),
        Unit::Count => num(
            v.trim().parse::<u64>().ok().map(|n| n as f64),
            "non-negative integer",
        ),
        Unit::Bool => match v.trim() {
            "on" | "true" | "yes" | "enable" => Ok(Value::Bool(true)),
            "off" | "false" | "no" | "disable" => Ok(Value::Bool(false)),
            _ => Err(format!("\"{v}\" is not a boolean (use on or off)")),
        },
        Unit::Text => Ok(Value::Text(v.to_string())),
        Unit::Bits(tags) => tweak_bits(tags, "none", v).map(Value::Text),
    }
}

impl Params {
    /// Applies `-p NAME=VALUE`.
    pub fn set_arg(&mut self, arg: &str) -> Result<(), ParamError> {
        let (name, value) = arg
            .split_once('=')
            .ok_or_else(|| ParamError::Syntax(arg.to_string()))?;
        self.set(name, value)
    }

    /// Sets one parameter, refusing unknown names and bad values.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ParamError> {
        let Some(def) = DEFS.iter().find(|d| d.name == name) else {
            let inert = INERT
                .iter()
                .find(|n| **n == name)
                .ok_or_else(|| ParamError::Unknown(name.to_string()))?;
            // `debug` is a set of bits: `+x`/`-x` change the set in
            // force, anything else replaces it.
            let value = match self.values.get(inert) {
                Some(Value::Text(old)) if *inert == "debug" && value.starts_with(['+', '-']) => {
                    format!("{old},{value}")
                }
                _ => value.to_string(),
            };
            self.values.insert(inert, Value::Text(value));
            self.refresh_hot();
            return Ok(());
        };
        let bad = |why| ParamError::BadValue {
            name: name.to_string(),
            why,
        };
        let v = if name == "vsl_mask" {
            // Changes apply to the mask in force, as in varnishd; the
            // value kept is the resulting list of masked tags.
            let cur = crate::vsl::parse_mask(self.text("vsl_mask"), [0, 0]).map_err(bad)?;
            let m = crate::vsl::parse_mask(value, cur).map_err(bad)?;
            Value::Text(crate::vsl::show_mask(m))
        } else {
            match def.unit {
                // Relative to the bits set now; `default` is the default set.
                Unit::Bits(tags) => {
                    let (cur, arg) = match value.trim() {
                        "default" => ("none", def.default),
                        _ => (self.text(name), value),
                    };
                    tweak_bits(tags, cur, arg).map(Value::Text)
                }
                _ => parse(def, value),
            }
            .map_err(bad)?
        };
        if let Value::Num(x) = v {
            let (lo, hi) = self.dynamic_bounds(name);
            if let Some((lo, why)) = lo.filter(|(lo, _)| x < *lo) {
                return Err(bad(format!("must be at least {lo} ({why})")));
            }
            if let Some((hi, why)) = hi.filter(|(hi, _)| x > *hi) {
                return Err(bad(format!("must be no more than {hi} ({why})")));
            }
        }
        self.values.insert(def.name, v);
        self.refresh_hot();
        Ok(())
    }

    /// The parameters every request reads (see [`Hot`]).
    pub fn hot(&self) -> &Hot {
        &self.hot
    }

    fn refresh_hot(&mut self) {
        self.hot = Hot {
            timeout_idle: self.num("timeout_idle"),
            send_timeout: self.num("send_timeout"),
            http_req_size: self.num("http_req_size") as usize,
            http_req_hdr_len: self.num("http_req_hdr_len") as usize,
            http_max_hdr: self.num("http_max_hdr") as usize,
            workspace_client: self.num("workspace_client") as u32,
            max_restarts: self.num("max_restarts") as u32,
            http_gzip_support: self.flag("http_gzip_support"),
            http_range_support: self.flag("http_range_support"),
        };
    }

    /// Bounds that depend on other parameters, as in Varnish:
    /// `thread_pool_min` <= `thread_pool_max`, and `thread_pool_reserve`
    /// at most 95% of `thread_pool_min`.
    #[allow(clippy::type_complexity)]
    fn dynamic_bounds(
        &self,
        name: &str,
    ) -> (Option<(f64, &'static str)>, Option<(f64, &'static str)>) {
        match name {
            "thread_pool_min" => (None, Some((self.num("thread_pool_max"), "thread_pool_max"))),
            "thread_pool_max" => (Some((self.num("thread_pool_min"), "thread_pool_min")), None),
            "thread_pool_reserve" => (
                None,
                Some((
                    (self.num("thread_pool_min") * 950.0 / 1000.0).floor(),
                    "95% of thread_pool_min",
                )),
            ),
            _ => (None, None),
        }
    }

    /// Back to the default (`param.reset`).
    pub fn reset(&mut self, name: &str) -> Result<(), ParamError> {
        match DEFS.iter().find(|d| d.name == name) {
            Some(def) => self.set(name, def.default),
            None if INERT.contains(&name) => {
                self.values.remove(name);
                self.refresh_hot();
                Ok(())
            }
            None => Err(ParamError::Unknown(name.to_string())),
        }
    }

    /// A numeric parameter (seconds, bytes or a count); 0 if not numeric.
    pub fn num(&self, name: &str) -> f64 {
        match self.values.get(name) {
            Some(Value::Num(x)) => *x,
            _ => 0.0,
        }
    }

    /// Whether bit `bit` of the `debug` parameter is set (`+bit` added
    /// it after any `none` or `-bit`).
    pub fn debug(&self, bit: &str) -> bool {
        let Some(Value::Text(v)) = self.values.get("debug") else {
            return false;
        };
        let mut on = false;
        for tok in v.split(',').map(str::trim) {
            if tok == "none" {
                on = false;
            } else if let Some(b) = tok.strip_prefix('-') {
                on &= b != bit;
            } else if tok.strip_prefix('+').unwrap_or(tok) == bit {
                on = true;
            }
        }
        on
    }

    /// A boolean parameter.
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.values.get(name), Some(Value::Bool(true)))
    }

    /// A parameter's value as `param.show` prints it.
    pub fn show(&self, name: &str) -> Option<String> {
        let Some(def) = DEFS.iter().find(|d| d.name == name) else {
            return INERT.contains(&name).then(|| match self.values.get(name) {
                Some(Value::Text(t)) => format!("\"{t}\""),
                _ => "(default)".to_string(),
            });
        };
        Some(match (self.values.get(name)?, def.unit) {
            (Value::Num(x), Unit::Seconds) => format!("{x:.3} [seconds]"),
            (Value::Num(x), Unit::Bytes) => format!("{x} [bytes]"),
            (Value::Num(x), _) => format!("{x}"),
            (Value::Bool(b), _) => (if *b { "on" } else { "off" }).to_string(),
            (Value::Text(t), Unit::Bits(_)) => t.clone(),
            (Value::Text(t), _) => format!("\"{t}\""),
        })
    }

    /// Whether feature bit `name` is on (`-p feature=+name`).
    pub fn feature(&self, name: &str) -> bool {
        self.text("feature")
            .split(',')
            .any(|b| b.strip_prefix('+') == Some(name))
    }

    /// `param.show` without a name: every parameter and its value.
    pub fn show_all(&self) -> String {
        let mut names: Vec<&str> = DEFS
            .iter()
            .map(|d| d.name)
            .chain(INERT.iter().copied())
            .collect();
        names.sort_unstable();
        names
            .iter()
            .filter_map(|n| self.show(n).map(|v| format!("{n:<32} {v}")))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A text parameter.
    pub fn text(&self, name: &str) -> &str {
        match self.values.get(name) {
            Some(Value::Text(s)) => s,
            _ => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_bits_accumulate() {
        let mut p = Params::default();
        assert!(!p.debug("vtc_mode"));
        p.set("debug", "+vtc_mode").unwrap_or_default();
        p.set("debug", "+syncvsl").unwrap_or_default();
        assert!(p.debug("vtc_mode") && p.debug("syncvsl"));
        p.set("debug", "-vtc_mode").unwrap_or_default();
        assert!(!p.debug("vtc_mode") && p.debug("syncvsl"));
        p.set("debug", "none").unwrap_or_default();
        assert!(!p.debug("syncvsl"));
    }

    #[test]
    fn defaults_parse() {
        let p = Params::default();
        assert_eq!(p.values.len(), DEFS.len());
        assert_eq!(p.num("default_ttl"), 120.0);
        assert_eq!(p.num("workspace_client"), 65536.0);
        assert!(p.flag("http_gzip_support"));
    }

    #[test]
    fn set_and_refuse() {
        let mut p = Params::default();
        p.set_arg("default_ttl=1m").expect("1m");
        assert_eq!(p.num("default_ttl"), 60.0);
        p.set_arg("connect_timeout=500ms").expect("ms");
        assert!((p.num("connect_timeout") - 0.5).abs() < 1e-9);
        assert!(matches!(p.set_arg("nope=1"), Err(ParamError::Unknown(_))));
        assert!(p.set_arg("default_ttl=abc").is_err());
        assert!(p.set_arg("default_ttl=-1").is_err());
        assert!(p.set_arg("http_gzip_support=maybe").is_err());
        assert!(p.feature("validate_headers"));
        p.set_arg("feature=+esi_ignore_https,+esi_disable_xml_check")
            .expect("bits");
        assert!(p.feature("esi_ignore_https") && p.feature("validate_headers"));
        p.set("feature", "-esi_ignore_https").expect("bits");
        assert!(!p.feature("esi_ignore_https") && p.feature("esi_disable_xml_check"));
        assert!(p.set("feature", "+nonesuch").is_err());
        assert!(p.set("feature", "esi_ignore_https").is_err());
        p.set("feature", "none").expect("none");
        assert_eq!(p.show("feature").as_deref(), Some("none"));
        assert!(p.set_arg("default_ttl").is_err());
    }

    #[test]
    fn thread_pool_bounds() {
        let mut p = Params::default();
        p.set_arg("thread_pool_min=10").expect("min");
        p.set_arg("thread_pool_reserve=9").expect("95%");
        assert!(p.set_arg("thread_pool_reserve=10").is_err());
        p.set_arg("thread_pool_max=100").expect("max");
        assert!(p.set_arg("thread_pool_min=101").is_err());
        assert!(p.set_arg("thread_pool_max=9").is_err());
        assert!(p.set_arg("thread_pool_min=4").is_err());
        p.set_arg("thread_pool_min=100").expect("min = max");
        p.set_arg("thread_pool_reserve=95").expect("95%");
        assert!(p.set_arg("thread_pool_reserve=96").is_err());
    }
}
