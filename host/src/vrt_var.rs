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

/// STRING and BLOB variables as bytes; `None` when unset. The BLOBs
/// `req.hash` and `bereq.hash` are the object's digest.
pub fn get_bytes(t: &mut Task, id: i32) -> R<Option<Vec<u8>>> {
    match name(id)? {
        "req.hash" | "bereq.hash" => Ok(Some(t.hash.to_vec())),
        _ => Ok(get_string(t, id)?.map(String::into_bytes)),
    }
}

/// STRING variables; `None` when unset.
pub fn get_string(t: &mut Task, id: i32) -> R<Option<String>> {
    let n = name(id)?;
    Ok(Some(match n {
        "req.method" => t.req.method.clone(),
        "req.url" => t.req.url.clone(),
        "req.proto" => t.req.proto.clone(),
        "req_top.method" => t.req_top.as_ref().map_or(&t.req, |x| &x.0).method.clone(),
        "req_top.url" => t.req_top.as_ref().map_or(&t.req, |x| &x.0).url.clone(),
        "req_top.proto" => t.req_top.as_ref().map_or(&t.req, |x| &x.0).proto.clone(),
        "req.xid" | "bereq.xid" => t.xid.to_string(),
        "sess.xid" => t.xid.to_string(),
        "req.transport" => "HTTP/1".into(),
        "req.hash" | "bereq.hash" => return Ok(None),
        "bereq.method" => t.bereq.method.clone(),
        "bereq.url" => t.bereq.url.clone(),
        "bereq.proto" => t.bereq.proto.clone(),
        "beresp.proto" => t.beresp.proto.clone(),
        "beresp.reason" => t.beresp.reason.clone(),
        "beresp.backend.name" => return Ok(t.beresp_backend_name.clone()),
        "beresp.filters" => match &t.vfp_filters {
            Some(f) => f.clone(),
            None => crate::cache_fetch_proc::default_list(&crate::cache_fetch_proc::Want {
                do_esi: t.do_esi,
                do_gzip: t.do_gzip,
                do_gunzip: t.do_gunzip,
                has_body: t.beresp_has_body,
                gzip_support: t.gzip_support,
                beresp: &t.beresp.headers,
            }),
        },
        "resp.filters" => match (&t.vdp_filters, &t.obj) {
            (Some(f), _) => f.clone(),
            (None, Some(o)) => crate::cache_deliver::default_filters(
                &crate::cache_deliver::FilterWant {
                    req: &t.req.headers,
                    disable_esi: !t.resp_do_esi,
                    gzip_support: t.gzip_support,
                    range_support: t.range_support,
                },
                &t.resp,
                o,
            ),
            (None, None) => String::new(),
        },
        "resp.proto" => t.resp.proto.clone(),
        "resp.reason" => t.resp.reason.clone(),
        "obj.proto" => t
            .obj
            .as_ref()
            .map(|o| o.headers.proto().to_string())
            .unwrap_or_default(),
        "obj.reason" => t
            .obj
            .as_ref()
            .map(|o| o.headers.reason().to_string())
            .unwrap_or_default(),
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

/// A start-line field (`req.url`, `resp.reason`, …): never empty, as
/// in Varnish, where setting one to an empty string (or a missing
/// header) fails the VCL.
fn line1(n: &str, v: Option<Vec<u8>>) -> R<String> {
    let s = text(v);
    if s.is_empty() {
        return Err(format!("Setting {n} to empty string"));
    }
    Ok(s)
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
        "req.method" => t.req.method = line1(n, v)?,
        "req.url" => t.req.url = line1(n, v)?,
        "req.proto" => t.req.proto = line1(n, v)?,
        "bereq.method" => t.bereq.method = line1(n, v)?,
        "bereq.url" => t.bereq.url = line1(n, v)?,
        "bereq.proto" => t.bereq.proto = line1(n, v)?,
        "beresp.proto" => t.beresp.proto = line1(n, v)?,
        "beresp.reason" => t.beresp.reason = line1(n, v)?,
        "resp.proto" => t.resp.proto = line1(n, v)?,
        "resp.reason" => t.resp.reason = line1(n, v)?,
        "client.identity" => t.client_identity = Some(text(v)),
        "resp.body" | "beresp.body" => t.synth_body = v.unwrap_or_default(),
        "beresp.filters" => t.vfp_filters = Some(text(v)),
        "resp.filters" => t.vdp_filters = Some(text(v)),
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
        // The hits of an object this request found; 0 for one it
        // fetched itself, even when others hit it meanwhile (Varnish's
        // VRT_r_obj_hits).
        "obj.hits" => match &t.obj {
            Some(o) if t.is_hit || t.method == vcl_to_wasm::types::Method::Hit => {
                o.hits.load(std::sync::atomic::Ordering::Relaxed) as i64
            }
            _ => 0,
        },
        _ => return Err(unsupported("reading", n)),
    })
}

/// A status VCL sets, as Varnish's VRT_l_*_status checks it: up to
/// 65535, the digits above the last three are VCL's own (the wire gets
/// the last three, which must be 100 or more).
fn status(obj: &str, v: i64) -> R<u16> {
    if v < 0 {
        return Err(format!("{obj}.status ({v}) is negative"));
    }
    if v > 65535 {
        return Err(format!("{obj}.status ({v}) > 65535"));
    }
    if v % 1000 < 100 {
        return Err(format!("illegal {obj}.status ({v}) (..0##)"));
    }
    Ok(v as u16)
}

/// Assigns an INT variable.
pub fn set_int(t: &mut Task, id: i32, v: i64) -> R<()> {
    let n = name(id)?;
    crate::vsl::vrt_set(&mut t.vsl, n, &v);
    match n {
        // A new status brings its standard reason (Varnish's
        // http_SetStatus).
        "beresp.status" => {
            t.beresp.status = status("beresp", v)?;
            t.beresp.reason = crate::cache_http::status_reason(t.beresp.status % 1000).into();
        }
        "resp.status" => {
            t.resp.status = status("resp", v)?;
            t.resp.reason = crate::cache_http::status_reason(t.resp.status % 1000).into();
        }
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
        "req.time" => t.req_time,
        "req_top.time" => t.req_top.as_ref().map_or(t.req_time, |x| x.1),
        "bereq.time" => t.req_time,
        "beresp.time" => t.beresp_time,
        "resp.time" => now(),
        "req.ttl" => t.req_ttl.unwrap_or(-1.0),
        "req.grace" => t.req_grace.unwrap_or(-1.0),
        // Relative to now, as Varnish shows it: an `Age` shortens it.
        "beresp.ttl" => t.ttl.max(0.0) - t.beresp_age,
        "beresp.grace" => t.grace.max(0.0),
        "beresp.keep" => t.keep.max(0.0),
        "beresp.age" => t.beresp_age,
        // Relative to the request's start, but in vcl_deliver to now.
        "obj.ttl" => {
            let at = if t.method == vcl_to_wasm::types::Method::Deliver {
                now()
            } else {
                t.req_time
            };
            t.obj
                .as_deref()
                .map_or(0.0, |o| o.ttl.max(0.0) - (at - o.t_origin))
        }
        "obj.grace" => obj(|o| o.grace.max(0.0)),
        "obj.keep" => obj(|o| o.keep.max(0.0)),
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
        // Stored relative to the object's origin, never below zero.
        "beresp.ttl" | "beresp.grace" | "beresp.keep" => {
            match n {
                "beresp.ttl" => t.ttl = (v + t.beresp_age).max(0.0),
                "beresp.grace" => t.grace = v.max(0.0),
                _ => t.keep = v.max(0.0),
            }
            crate::vsl::ttl_vcl(t);
        }
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
        "resp.do_esi" => {
            resp_filters_fixed(t, n)?;
            t.resp_do_esi
        }
        "obj.can_esi" => t.obj.as_ref().is_some_and(|o| o.can_esi()),
        "bereq.uncacheable" => t.bereq_uncacheable,
        "bereq.is_bgfetch" => t.is_bgfetch,
        "beresp.uncacheable" => t.uncacheable,
        "beresp.do_stream" => t.do_stream,
        "beresp.was_304" => t.was_304,
        "beresp.do_esi" | "beresp.do_gzip" | "beresp.do_gunzip" => {
            beresp_filters_fixed(t, n)?;
            match n {
                "beresp.do_esi" => t.do_esi,
                "beresp.do_gzip" => t.do_gzip,
                _ => t.do_gunzip,
            }
        }
        "obj.uncacheable" => t
            .obj
            .as_ref()
            .is_some_and(|o| o.uncacheable || o.kind != crate::cache_obj::ObjKind::Normal),
        "resp.is_streaming" => t
            .obj
            .as_ref()
            .is_some_and(|o| matches!(o.body.progress(), crate::cache_obj::Progress::Streaming(_))),
        _ => return Err(unsupported("reading", n)),
    })
}

/// Once VCL set `beresp.filters`, the `do_*` flags that would have
/// chosen them are undefined (a VCL failure, as in Varnish).
fn beresp_filters_fixed(t: &Task, n: &str) -> R<()> {
    match t.vfp_filters {
        Some(_) => Err(format!(
            "beresp.filters are already fixed, {n} is undefined"
        )),
        None => Ok(()),
    }
}

/// The same for `resp.do_esi` after `resp.filters`.
fn resp_filters_fixed(t: &Task, n: &str) -> R<()> {
    match t.vdp_filters {
        Some(_) => Err(format!("resp.filters are already fixed, {n} is undefined")),
        None => Ok(()),
    }
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
            if t.uncacheable && !v {
                t.vsl.log(
                    vapi::Tag::VCL_Error,
                    "Ignoring attempt to reset beresp.uncacheable",
                );
            }
            t.uncacheable |= v;
            crate::vsl::ttl_vcl(t);
        }
        "beresp.do_stream" => t.do_stream = v,
        // VCL 4.0's req.esi only counts for the top request.
        "req.esi" => {
            if t.esi_level == 0 {
                t.req_esi = v
            }
        }
        "resp.do_esi" => {
            resp_filters_fixed(t, n)?;
            t.resp_do_esi = v
        }
        "beresp.do_esi" | "beresp.do_gzip" | "beresp.do_gunzip" => {
            beresp_filters_fixed(t, n)?;
            match n {
                "beresp.do_esi" => t.do_esi = v,
                "beresp.do_gzip" => t.do_gzip = v,
                _ => t.do_gunzip = v,
            }
        }
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
        "bereq.backend" => t.bereq_backend,
        "beresp.backend" => t.beresp_backend,
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
