//! VCL variables (Varnish's `cache_vrt_var.c`): reads and writes by
//! `VarId`, resolved through the compiler's `VARS` table.

use crate::vrt_ctx::Task;
use vcl_to_wasm::vars::VARS;

type R<T> = Result<T, String>;

fn name(id: i32) -> R<&'static str> {
    usize::try_from(id)
        .ok()
        .and_then(|i| VARS.get(i))
        .map(|d| d.name)
        .ok_or_else(|| format!("bad variable id {id}"))
}

fn unsupported(op: &str, n: &str) -> String {
    format!("{op} of {n} is not supported yet")
}

fn now() -> f64 {
    crate::vrt_ctx::now()
}

/// STRING variables; `None` when unset.
pub fn get_string(t: &mut Task, id: i32) -> R<Option<String>> {
    let n = name(id)?;
    Ok(Some(match n {
        "req.method" => t.req.method.clone(),
        "req.url" => t.req.url.clone(),
        "req.proto" => t.req.proto.clone(),
        "req_top.method" => t.req.method.clone(),
        "req_top.url" => t.req.url.clone(),
        "req_top.proto" => t.req.proto.clone(),
        "req.xid" | "bereq.xid" => t.xid.to_string(),
        "sess.xid" => t.xid.to_string(),
        "req.transport" => "HTTP/1".into(),
        "req.hash" | "bereq.hash" => return Ok(None),
        "bereq.method" => t.bereq.method.clone(),
        "bereq.url" => t.bereq.url.clone(),
        "bereq.proto" => t.bereq.proto.clone(),
        "beresp.proto" => t.beresp.proto.clone(),
        "beresp.reason" => t.beresp.reason.clone(),
        "beresp.backend.name" => return Ok(None),
        "beresp.filters" | "resp.filters" => String::new(),
        "resp.proto" => t.resp.proto.clone(),
        "resp.reason" => t.resp.reason.clone(),
        "obj.proto" => t.obj.as_ref().map(|o| o.proto.clone()).unwrap_or_default(),
        "obj.reason" => t.obj.as_ref().map(|o| o.reason.clone()).unwrap_or_default(),
        "client.identity" => t
            .client_identity
            .clone()
            .unwrap_or_else(|| t.client_ip.to_string()),
        "server.hostname" => std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
        "server.identity" => std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
        "local.endpoint" => t.server_ip.to_string(),
        "local.socket" => "a0".into(),
        _ => return Err(unsupported("reading", n)),
    }))
}

fn text(v: Option<Vec<u8>>) -> String {
    String::from_utf8_lossy(&v.unwrap_or_default()).into_owned()
}

/// Assigns a STRING (or BODY) variable.
pub fn set_string(t: &mut Task, id: i32, v: Option<Vec<u8>>) -> R<()> {
    let n = name(id)?;
    crate::vsl::vrt_set(
        &mut t.vsl,
        n,
        &String::from_utf8_lossy(v.as_deref().unwrap_or_default()),
    );
    match n {
        "req.method" => t.req.method = text(v),
        "req.url" => t.req.url = text(v),
        "req.proto" => t.req.proto = text(v),
        "bereq.method" => t.bereq.method = text(v),
        "bereq.url" => t.bereq.url = text(v),
        "bereq.proto" => t.bereq.proto = text(v),
        "beresp.proto" => t.beresp.proto = text(v),
        "beresp.reason" => t.beresp.reason = text(v),
        "resp.proto" => t.resp.proto = text(v),
        "resp.reason" => t.resp.reason = text(v),
        "client.identity" => t.client_identity = Some(text(v)),
        "resp.body" | "beresp.body" => t.synth_body = v.unwrap_or_default(),
        "beresp.filters" | "resp.filters" => {}
        _ => return Err(unsupported("setting", n)),
    }
    Ok(())
}

/// INT and BYTES variables.
pub fn get_int(t: &mut Task, id: i32) -> R<i64> {
    let n = name(id)?;
    Ok(match n {
        "req.restarts" => i64::from(t.restarts),
        "req.esi_level" => i64::from(t.esi_level),
        "bereq.retries" => i64::from(t.retries),
        "beresp.status" => i64::from(t.beresp.status),
        "resp.status" => i64::from(t.resp.status),
        "obj.status" => t.obj.as_ref().map_or(0, |o| i64::from(o.status)),
        "obj.hits" => t.obj.as_ref().map_or(0, |o| {
            o.hits.load(std::sync::atomic::Ordering::Relaxed) as i64
        }),
        _ => return Err(unsupported("reading", n)),
    })
}

fn status(v: i64) -> R<u16> {
    // Varnish keeps the low three digits of a larger status for the wire.
    let s = if v > 999 { v % 1000 } else { v };
    u16::try_from(s)
        .ok()
        .filter(|s| (100..=999).contains(s))
        .ok_or_else(|| format!("illegal status {v}"))
}

/// Assigns an INT variable.
pub fn set_int(t: &mut Task, id: i32, v: i64) -> R<()> {
    let n = name(id)?;
    crate::vsl::vrt_set(&mut t.vsl, n, &v);
    match n {
        "beresp.status" => t.beresp.status = status(v)?,
        "resp.status" => t.resp.status = status(v)?,
        _ => return Err(unsupported("setting", n)),
    }
    Ok(())
}

/// REAL, DURATION and TIME variables.
pub fn get_real(t: &mut Task, id: i32) -> R<f64> {
    let n = name(id)?;
    let obj = |f: fn(&crate::cache_obj::Object) -> f64| t.obj.as_deref().map_or(0.0, f);
    Ok(match n {
        "now" => now(),
        "req.time" | "req_top.time" => t.req_time,
        "bereq.time" => t.req_time,
        "beresp.time" => t.beresp_time,
        "resp.time" => now(),
        "req.ttl" => t.req_ttl.unwrap_or(-1.0),
        "req.grace" => t.req_grace.unwrap_or(-1.0),
        // Relative to now, as Varnish shows it: an `Age` shortens it.
        "beresp.ttl" => t.ttl - t.beresp_age,
        "beresp.grace" => t.grace,
        "beresp.keep" => t.keep,
        "beresp.age" => t.beresp_age,
        "obj.ttl" => obj(|o| o.t_origin + o.ttl - now()),
        "obj.grace" => obj(|o| o.grace),
        "obj.keep" => obj(|o| o.keep),
        "obj.age" => obj(|o| now() - o.t_origin),
        "obj.time" => obj(|o| o.t_origin),
        "bereq.connect_timeout" => t.connect_timeout.unwrap_or(0.0),
        "bereq.first_byte_timeout" => t.first_byte_timeout.unwrap_or(0.0),
        "bereq.between_bytes_timeout" => t.between_bytes_timeout.unwrap_or(0.0),
        "sess.timeout_idle"
        | "sess.send_timeout"
        | "sess.idle_send_timeout"
        | "sess.timeout_linger" => 0.0,
        _ => return Err(unsupported("reading", n)),
    })
}

/// Assigns a REAL/DURATION/TIME variable.
pub fn set_real(t: &mut Task, id: i32, v: f64) -> R<()> {
    let n = name(id)?;
    match n {
        "req.ttl" => t.req_ttl = Some(v),
        "req.grace" => t.req_grace = Some(v),
        "beresp.ttl" => t.ttl = v + t.beresp_age,
        "beresp.grace" => t.grace = v,
        "beresp.keep" => t.keep = v,
        "bereq.connect_timeout" => t.connect_timeout = Some(v),
        "bereq.first_byte_timeout" => t.first_byte_timeout = Some(v),
        "bereq.between_bytes_timeout" => t.between_bytes_timeout = Some(v),
        "sess.timeout_idle"
        | "sess.send_timeout"
        | "sess.idle_send_timeout"
        | "sess.timeout_linger" => {}
        _ => return Err(unsupported("setting", n)),
    }
    Ok(())
}

/// BOOL variables.
pub fn get_bool(t: &mut Task, id: i32) -> R<bool> {
    let n = name(id)?;
    Ok(match n {
        "req.can_gzip" => crate::cache_obj::hdr_get(&t.req.headers, "accept-encoding")
            .is_some_and(|v| v.contains("gzip")),
        "req.hash_always_miss" => t.hash_always_miss,
        "req.hash_ignore_busy" => t.hash_ignore_busy,
        "req.hash_ignore_vary" => t.hash_ignore_vary,
        "req.is_hitmiss" | "bereq.is_hitmiss" => t.is_hitmiss,
        "req.is_hitpass" | "bereq.is_hitpass" => t.is_hitpass,
        "req.esi" => t.req_esi,
        "resp.do_esi" => t.resp_do_esi,
        "obj.can_esi" => t.obj.as_ref().is_some_and(|o| o.esi),
        "bereq.uncacheable" => t.bereq_uncacheable,
        "bereq.is_bgfetch" => t.is_bgfetch,
        "beresp.uncacheable" => t.uncacheable,
        "beresp.do_stream" => t.do_stream,
        "beresp.was_304" => t.was_304,
        "beresp.do_esi" => t.do_esi,
        "beresp.do_gzip" => t.do_gzip,
        "beresp.do_gunzip" => t.do_gunzip,
        "obj.uncacheable" => t
            .obj
            .as_ref()
            .is_some_and(|o| o.kind != crate::cache_obj::ObjKind::Normal),
        "resp.is_streaming" => false,
        _ => return Err(unsupported("reading", n)),
    })
}

/// Assigns a BOOL variable.
pub fn set_bool(t: &mut Task, id: i32, v: bool) -> R<()> {
    let n = name(id)?;
    match n {
        "req.hash_always_miss" => t.hash_always_miss = v,
        "req.hash_ignore_busy" => t.hash_ignore_busy = v,
        "req.hash_ignore_vary" => t.hash_ignore_vary = v,
        "beresp.uncacheable" => {
            // Once uncacheable, always uncacheable (Varnish ignores `false`).
            t.uncacheable |= v;
        }
        "beresp.do_stream" => t.do_stream = v,
        "req.esi" => t.req_esi = v,
        "resp.do_esi" => t.resp_do_esi = v,
        "beresp.do_esi" => t.do_esi = v,
        "beresp.do_gzip" => t.do_gzip = v,
        "beresp.do_gunzip" => t.do_gunzip = v,
        _ => return Err(unsupported("setting", n)),
    }
    Ok(())
}

/// BACKEND, IP and STEVEDORE variables.
pub fn get_handle(t: &mut Task, id: i32) -> R<i32> {
    let n = name(id)?;
    Ok(match n {
        "client.ip" | "remote.ip" => 1,
        "server.ip" | "local.ip" => 2,
        "req.backend_hint" => t.backend_hint,
        "bereq.backend" | "beresp.backend" => t.bereq_backend,
        "req.storage" | "beresp.storage" | "obj.storage" => 1,
        _ => return Err(unsupported("reading", n)),
    })
}

/// Assigns a BACKEND/STEVEDORE variable.
pub fn set_handle(t: &mut Task, id: i32, v: i32) -> R<()> {
    let n = name(id)?;
    match n {
        "req.backend_hint" => t.backend_hint = v,
        "bereq.backend" => t.bereq_backend = v,
        "req.storage" | "beresp.storage" => {}
        _ => return Err(unsupported("setting", n)),
    }
    Ok(())
}

/// `unset` of a variable.
pub fn unset(t: &mut Task, id: i32) -> R<()> {
    let n = name(id)?;
    match n {
        "bereq.body" => {}
        "resp.body" | "beresp.body" => t.synth_body.clear(),
        _ => return Err(unsupported("unset", n)),
    }
    Ok(())
}
