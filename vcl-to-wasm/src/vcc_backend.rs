//! Backend and probe declarations (Varnish's `vcc_backend`).
//!
//! Host names are kept as written: resolving them is the host's job at load
//! time, so compiling never needs DNS.

use crate::ast::{self, FieldValue};
use crate::tir::{BackendDef, ProbeDef, ProbeId};
use crate::vcc_compile::{err, CResult, Checker, SymKind};

/// Turns a number with an optional unit into seconds.
pub(crate) fn duration_value(
    text: &str,
    unit: Option<&str>,
    span: &crate::error::Span,
) -> CResult<f64> {
    let v: f64 = text
        .parse()
        .map_err(|_| err(format!("Bad number '{}'", text), span))?;
    let Some(unit) = unit else {
        return Err(err(
            "Expected a duration unit\nLegal duration units are 'ms', 's', 'm', 'h', 'd', 'w' and 'y'",
            span,
        ));
    };
    let f = duration_unit(unit).ok_or_else(|| {
        err(
            format!(
                "Unknown duration unit '{}'\nLegal duration units are 'ms', 's', 'm', 'h', 'd', 'w' and 'y'",
                unit
            ),
            span,
        )
    })?;
    Ok(v * f)
}

/// Whether `s` can name an address: an IP literal, `host:port`,
/// `[v6]:port`, or a syntactically valid host name. Names are resolved
/// when the VCL is loaded (compiling needs no DNS), so only their shape is
/// checked here.
pub(crate) fn plausible_address(s: &str) -> bool {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    if let Some(rest) = s.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((v6, port)) => {
                v6.parse::<std::net::Ipv6Addr>().is_ok()
                    && (port.is_empty() || port.strip_prefix(':').is_some_and(valid_port))
            }
            None => false,
        };
    }
    // "host port", as Varnish's address parser also takes it.
    if let Some((h, p)) = s.rsplit_once(' ') {
        return !h.contains(' ') && valid_port(p) && plausible_address(h) && !h.contains(']');
    }
    let (host, port) = match s.rsplit_once(':') {
        // `:80` is the local host's port 80.
        Some(("", p)) => return valid_port(p),
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        Some(_) => return false,
        None => (s, None),
    };
    if let Some(p) = port {
        if !valid_port(p) {
            return false;
        }
    }
    valid_hostname(host)
}

fn valid_port(p: &str) -> bool {
    !p.is_empty()
        && (p.parse::<u16>().is_ok() || p.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
}

/// RFC 1123 host name shape: dot-separated non-empty labels of letters,
/// digits, `-` and `_`.
pub(crate) fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
}

/// Checks a backend's `.host` the way varnishd does before resolving it.
fn check_host(host: &str, span: &crate::error::Span) -> CResult<()> {
    if let Some(rest) = host.strip_prefix('[') {
        let Some((_, after)) = rest.split_once(']') else {
            return Err(err("IPv6 address lacks ']'", span));
        };
        if !after.is_empty() && !after.starts_with(':') && !after.starts_with(' ') {
            return Err(err("IPv6 address has wrong port separator", span));
        }
    }
    if host.is_empty() {
        // varnishtest declares not-yet-started servers with empty hosts.
        return Ok(());
    }
    let bare = host.split_once(' ').map(|(h, _)| h).unwrap_or(host);
    if !plausible_address(bare) {
        return Err(err(
            format!(
                "Backend host '\"{}\"' could not be resolved to an IP address:",
                host
            ),
            span,
        ));
    }
    Ok(())
}

/// Seconds per duration unit.
pub(crate) fn duration_unit(unit: &str) -> Option<f64> {
    Some(match unit {
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "w" => 604800.0,
        "y" => 31536000.0,
        _ => return None,
    })
}

/// Bytes per size unit.
pub(crate) fn bytes_unit(unit: &str) -> Option<f64> {
    Some(match unit {
        "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    })
}

/// A field value as varnishd quotes it in "Expected CNUM got '…'".
fn field_text(v: &FieldValue) -> String {
    match v {
        FieldValue::Strings(s) => format!("\"{}\"", s[0].0),
        FieldValue::Number { text, .. } => text.clone(),
        FieldValue::Name(i) => i.name.clone(),
        FieldValue::Block(..) => "{".into(),
        FieldValue::Blob(b, _) => format!(":{b}:"),
    }
}

fn string_field(f: &ast::Field) -> CResult<String> {
    match &f.value {
        FieldValue::Strings(v) if v.len() == 1 => Ok(v[0].0.clone()),
        FieldValue::Strings(v) => Err(err("Expected one string", &v[1].1)),
        other => Err(err(
            format!("Expected a string for .{}", f.name.name),
            other.span(),
        )),
    }
}

fn duration_field(f: &ast::Field) -> CResult<f64> {
    match &f.value {
        FieldValue::Number { text, unit, span } => duration_value(text, unit.as_deref(), span),
        other => Err(err(
            format!("Expected CNUM got '{}'", field_text(other)),
            other.span(),
        )),
    }
}

fn uint_field(f: &ast::Field) -> CResult<u32> {
    match &f.value {
        FieldValue::Number {
            text,
            unit: None,
            span,
        } => text.parse::<u32>().map_err(|_| {
            err(
                format!("Expected an unsigned integer for .{}", f.name.name),
                span,
            )
        }),
        other => Err(err(
            format!("Expected CNUM got '{}'", field_text(other)),
            other.span(),
        )),
    }
}

impl Checker {
    pub(crate) fn declare_backend(&mut self, b: &ast::Backend) -> CResult<()> {
        let id = self.meta.backends.len() as u32;
        self.define(&b.name, SymKind::Backend(id), false)?;
        let (line, col) = b.name.span.line_col();
        let mut def = BackendDef {
            name: b.name.name.clone(),
            location: format!("{}:{}:{}", b.name.span.source.name, line, col),
            ..BackendDef::default()
        };
        match &b.fields {
            None => def.none = true,
            Some(fields) => {
                let mut seen: Vec<&str> = Vec::new();
                for f in fields {
                    let name = f.name.name.as_str();
                    if seen.contains(&name) {
                        return Err(err(format!("Field '{}' redefined at:", name), &f.name.span));
                    }
                    seen.push(name);
                    match name {
                        "host" => {
                            let h = string_field(f)?;
                            check_host(&h, f.value.span())?;
                            def.host = Some(h)
                        }
                        "port" => {
                            def.port = Some(match &f.value {
                                FieldValue::Number { text, .. } => text.clone(),
                                _ => string_field(f)?,
                            })
                        }
                        "path" => {
                            let p = string_field(f)?;
                            if self.version < 41 {
                                return Err(err(
                                    "Unix socket backends only supported in VCL4.1 and higher.",
                                    &f.name.span,
                                ));
                            }
                            if !p.starts_with('/') {
                                return Err(err(
                                    format!("Must be an absolute path:\n'{}'", p),
                                    f.value.span(),
                                ));
                            }
                            def.path = Some(p)
                        }
                        "host_header" => def.host_header = Some(string_field(f)?),
                        "connect_timeout" => def.connect_timeout = Some(duration_field(f)?),
                        "first_byte_timeout" => def.first_byte_timeout = Some(duration_field(f)?),
                        "between_bytes_timeout" => {
                            def.between_bytes_timeout = Some(duration_field(f)?)
                        }
                        "max_connections" => def.max_connections = Some(uint_field(f)?),
                        "preamble" => match &f.value {
                            FieldValue::Blob(b, _) => def.preamble = Some(b.clone()),
                            other => return Err(err("Expected a BLOB", other.span())),
                        },
                        "proxy_header" => {
                            let v = uint_field(f)?;
                            if v != 1 && v != 2 {
                                return Err(err(
                                    "Illegal .proxy_header version (must be 1 or 2)",
                                    f.value.span(),
                                ));
                            }
                            def.proxy_header = Some(v)
                        }
                        "probe" => {
                            def.probe = Some(match &f.value {
                                FieldValue::Block(fields, span) => {
                                    let _ = span;
                                    self.probe_def(format!("vgc_probe_{}", b.name.name), fields)?
                                }
                                FieldValue::Name(n) => match self.symbols.get(&n.name) {
                                    Some(s) => match s.kind {
                                        SymKind::Probe(p) => {
                                            self.reference(&n.name);
                                            p
                                        }
                                        other => {
                                            return Err(err(
                                                format!(
                                                    "Expected a probe, '{}' is a {}",
                                                    n.name,
                                                    other.describe()
                                                ),
                                                &n.span,
                                            ))
                                        }
                                    },
                                    // Probes resolve in file order, as in varnishd.
                                    None if n.name == "default" => {
                                        return Err(err("No default probe defined", &n.span))
                                    }
                                    None => {
                                        return Err(err(
                                            format!("Symbol not found: '{}'", n.name),
                                            &n.span,
                                        ))
                                    }
                                },
                                other => {
                                    return Err(err(
                                        "Expected '{' or name of probe, got",
                                        other.span(),
                                    ));
                                }
                            })
                        }
                        _ => {
                            let mut d = err(format!("Unknown field: '{}' at", name), &f.name.span);
                            d.notes.push(
                                "Expected one of\n\t.host\n\t.port\n\t.path\n\t.host_header\n\t.connect_timeout\n\t.first_byte_timeout\n\t.between_bytes_timeout\n\t.probe\n\t.max_connections\n\t.proxy_header".into(),
                            );
                            return Err(d);
                        }
                    }
                }
                if def.host.is_none() && def.path.is_none() {
                    return Err(err("Expected .host or .path.", &b.name.span));
                }
                if def.host.is_some() && def.path.is_some() {
                    let at = fields
                        .iter()
                        .filter(|f| f.name.name == "host" || f.name.name == "path")
                        .nth(1)
                        .map(|f| f.name.span.clone())
                        .unwrap_or_else(|| b.name.span.clone());
                    return Err(err("Address redefinition at:", &at));
                }
            }
        }
        // The default backend is the one named `default`, else the first;
        // either way it counts as used.
        if self.meta.default_backend.is_none() || b.name.name == "default" {
            if let Some(prev) = self.meta.default_backend {
                if let Some(name) = self
                    .meta
                    .backends
                    .get(prev as usize)
                    .map(|d| d.name.clone())
                {
                    if let Some(sym) = self.symbols.get_mut(&name) {
                        sym.refs = sym.refs.saturating_sub(1);
                    }
                }
            }
            self.meta.default_backend = Some(id);
            self.reference(&b.name.name);
        }
        self.meta.backends.push(def);
        Ok(())
    }

    pub(crate) fn declare_probe(&mut self, p: &ast::Probe) -> CResult<()> {
        let id = self.probe_def(p.name.name.clone(), &p.fields)?;
        self.define(&p.name, SymKind::Probe(id), false)?;
        Ok(())
    }

    fn probe_def(&mut self, name: String, fields: &[ast::Field]) -> CResult<ProbeId> {
        let mut def = ProbeDef {
            name,
            ..ProbeDef::default()
        };
        let mut window_span = None;
        for f in fields {
            match f.name.name.as_str() {
                "url" => def.url = Some(string_field(f)?),
                "request" => match &f.value {
                    FieldValue::Strings(v) => {
                        let mut req = String::new();
                        for (s, _) in v {
                            req.push_str(s);
                            req.push_str("\r\n");
                        }
                        req.push_str("\r\n");
                        def.request = Some(req);
                    }
                    other => return Err(err("Expected a string", other.span())),
                },
                "expected_response" => {
                    let v = uint_field(f)?;
                    if !(100..=999).contains(&v) {
                        return Err(err(
                            "Must specify .expected_response with exactly three digits (100 <= x <= 999)",
                            f.value.span(),
                        ));
                    }
                    def.expected_response = Some(v)
                }
                "timeout" => def.timeout = Some(duration_field(f)?),
                "interval" => def.interval = Some(duration_field(f)?),
                "window" => {
                    let w = uint_field(f)?;
                    if w > 64 {
                        return Err(err("Window must be 64 or less", f.value.span()));
                    }
                    window_span = Some(f.value.span().clone());
                    def.window = Some(w)
                }
                "threshold" => {
                    let t = uint_field(f)?;
                    if t > 64 {
                        return Err(err("Threshold must be 64 or less", f.value.span()));
                    }
                    def.threshold = Some(t)
                }
                "initial" => def.initial = Some(uint_field(f)?),
                other => {
                    let mut d = err(format!("Unknown field: '{}' at", other), &f.name.span);
                    d.notes.push(
                        "Expected one of\n\t.url\n\t.request\n\t.expected_response\n\t.timeout\n\t.interval\n\t.window\n\t.threshold\n\t.initial".into(),
                    );
                    return Err(d);
                }
            }
        }
        if def.url.is_some() && def.request.is_some() {
            if let Some(f) = fields.iter().find(|f| f.name.name == "request") {
                return Err(err("Probe request redefinition at:", &f.name.span));
            }
        }
        if def.window.is_some() && def.threshold.is_none() {
            if let Some(span) = &window_span {
                return Err(err("Must specify .threshold with .window", span));
            }
        }
        let window = def.window.unwrap_or(8);
        let threshold = def.threshold.unwrap_or(3);
        if threshold > window {
            if let Some(span) = window_span.as_ref().or_else(|| {
                fields
                    .iter()
                    .find(|f| f.name.name == "threshold")
                    .map(|f| f.value.span())
            }) {
                return Err(err("Threshold can not be greater than window", span));
            }
        }
        let id = self.meta.probes.len() as ProbeId;
        self.meta.probes.push(def);
        Ok(id)
    }
}
