//! The admin CLI (varnishd's `-T`/`-S`, spoken by `varnishadm` and
//! varnishtest): a text protocol where every answer is `STATUS LENGTH\n
//! BODY\n`, with the secret-file challenge-response when `-S` is given.
//! Requests are words with varnishd's quoting (`"…"` with backslash
//! escapes); a request ending in `<< TOKEN` takes the lines up to `TOKEN`
//! as its last argument (how varnishtest sends VCL).

use crate::cache_req_fsm::Ctx;
use crate::mgt_child::Child;
use sha2::{Digest, Sha256};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// CLI status codes (Varnish's `CLIS_*`).
const OK: u16 = 200;
const SYNTAX: u16 = 100;
const UNKNOWN: u16 = 101;
const TOOFEW: u16 = 104;
const TOOMANY: u16 = 105;
const PARAM: u16 = 106;
const AUTH: u16 = 107;
const CANT: u16 = 300;
const CLOSE: u16 = 500;

fn frame(status: u16, body: &str) -> String {
    format!("{status:<3} {:<8}\n{body}\n", body.len())
}

fn challenge() -> String {
    // 32 lowercase letters from the clock and the address of a fresh
    // allocation; unpredictability for a loopback-only CLI.
    let seed = crate::vrt_ctx::now().to_bits() ^ (Box::into_raw(Box::new(0u8)) as u64);
    let digest = Sha256::digest(seed.to_le_bytes());
    digest
        .iter()
        .take(32)
        .map(|b| char::from(b'a' + b % 26))
        .collect()
}

/// The expected answer to a challenge: SHA-256 over challenge, newline,
/// the secret file's bytes, challenge, newline (as varnishadm computes it).
/// One implementation serves both ends: the `vtc` crate's client side.
pub fn auth_response(challenge: &str, secret: &[u8]) -> String {
    vtc::cli::auth_response(challenge, secret)
}

/// Splits a request into words with varnishd's quoting rules.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut it = line.chars().peekable();
    loop {
        while it.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            it.next();
        }
        let Some(&c) = it.peek() else {
            return Ok(out);
        };
        let mut w = String::new();
        if c == '"' {
            it.next();
            loop {
                match it.next() {
                    None => return Err("Missing '\"'".into()),
                    Some('"') => break,
                    Some('\\') => match it.next() {
                        Some('n') => w.push('\n'),
                        Some('r') => w.push('\r'),
                        Some('t') => w.push('\t'),
                        Some(o) => w.push(o),
                        None => return Err("Missing '\"'".into()),
                    },
                    Some(o) => w.push(o),
                }
            }
        } else {
            while let Some(&c) = it.peek() {
                if c.is_ascii_whitespace() {
                    break;
                }
                w.push(c);
                it.next();
            }
        }
        out.push(w);
    }
}

/// Serves the CLI on `listener`.
/// Authentication failures are counted by client address: one that keeps
/// failing is locked out for a while (see [`crate::mgt_auth::Limiter`]).
pub async fn serve(child: Arc<Child>, listener: TcpListener, secret: Option<Vec<u8>>) {
    let secret = secret.map(Arc::new);
    let limiter = Arc::new(crate::mgt_auth::Limiter::default());
    while let Ok((s, peer)) = listener.accept().await {
        tokio::spawn(session(
            child.clone(),
            s,
            secret.clone(),
            peer.ip(),
            limiter.clone(),
        ));
    }
}

async fn session(
    child: Arc<Child>,
    s: TcpStream,
    secret: Option<Arc<Vec<u8>>>,
    peer: std::net::IpAddr,
    limiter: Arc<crate::mgt_auth::Limiter>,
) {
    let (r, mut w) = s.into_split();
    let mut lines = BufReader::new(r).lines();
    let mut authed = secret.is_none();
    let ch = challenge();
    let hello = if authed {
        frame(OK, "Shellac admin CLI\nType 'help' for command list.")
    } else {
        frame(AUTH, &format!("{ch}\n\nAuthentication required."))
    };
    if w.write_all(hello.as_bytes()).await.is_err() {
        return;
    }
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = match split_words(&line) {
            Ok(w) => w,
            Err(e) => {
                if w.write_all(frame(SYNTAX, &e).as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
        };
        // A here-document: `… << TOKEN`, then lines up to TOKEN.
        if words.len() >= 2 && words[words.len() - 2] == "<<" {
            let token = words.pop().unwrap_or_default();
            words.pop();
            let mut doc = Vec::new();
            loop {
                match lines.next_line().await {
                    Ok(Some(l)) if l == token => break,
                    Ok(Some(l)) => doc.push(l),
                    _ => return,
                }
            }
            words.push(doc.join("\n"));
        }
        if words.is_empty() {
            continue;
        }
        let reply = if !authed {
            match (words[0].as_str(), words.get(1), &secret) {
                ("auth", Some(resp), Some(sec))
                    if limiter.allowed(peer, crate::vrt_ctx::now())
                        && crate::mgt_auth::same(
                            resp.as_bytes(),
                            auth_response(&ch, sec).as_bytes(),
                        ) =>
                {
                    limiter.succeeded(peer);
                    authed = true;
                    frame(OK, "Authenticated.")
                }
                ("auth", _, _) => {
                    limiter.failed(peer, crate::vrt_ctx::now());
                    let _ = w
                        .write_all(frame(CANT, "Authentication failed.").as_bytes())
                        .await;
                    return;
                }
                _ => frame(AUTH, "Authentication required."),
            }
        } else {
            crate::vsl::cli_rd(&words);
            let reply = command(&child, &words).await;
            crate::vsl::cli_wr(&reply);
            reply
        };
        if w.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
        if words[0] == "quit" {
            return;
        }
    }
}

/// `ban.list -j`, in varnishd's JSON layout.
fn ban_list_json(args: &[String], list: &[crate::cache_ban::BanEntry]) -> String {
    let q = |s: &str| {
        let mut o = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => o.push_str("\\\""),
                '\\' => o.push_str("\\\\"),
                c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
                c => o.push(c),
            }
        }
        o.push('"');
        o
    };
    let argv: Vec<String> = std::iter::once("ban.list")
        .chain(args.iter().map(String::as_str))
        .map(q)
        .collect();
    let mut out = format!("[ 2, [{}], {:.3}", argv.join(", "), crate::vrt_ctx::now());
    for b in list {
        out.push_str(&format!(
            ",\n  {{\n    \"time\": {:.6},\n    \"refs\": {},\n    \"completed\": {},\n    \"spec\": {}\n}}",
            b.time,
            b.refs,
            b.completed,
            q(&b.text)
        ));
    }
    out.push_str("\n]");
    out
}

/// Varnish's `VCL_IterDirector` patterns: none (or `*`) is every backend
/// and director of the active VCL, a pattern without a dot is matched
/// against names in the active VCL, one with a dot against `vcl.name` in
/// every VCL.
fn backend_matches(active: &str, pat: Option<&str>, vname: &str, name: &str) -> bool {
    match pat {
        None | Some("") | Some("*") => vname == active,
        Some(p) if !p.contains('.') => vname == active && crate::vmod_std::fnmatch(p, name, false),
        Some(p) => crate::vmod_std::fnmatch(p, &format!("{vname}.{name}"), false),
    }
}

/// One row of `backend.list`: a backend or a director.
struct ListRow {
    name: String,
    kind: &'static str,
    admin: &'static str,
    /// (good, of, health) for the Probe and Health columns.
    probe: (usize, usize, &'static str),
    last_change: f64,
    /// What `-p` adds, as table text and as JSON (`None`: nothing).
    details: Option<String>,
    details_json: Option<String>,
}

/// The rows of `backend.list` for `pattern`, in Varnish's order: each
/// VCL's backends, then its directors.
fn list_rows(ctx: &Ctx, pattern: Option<&str>, details: bool, json: bool) -> Vec<ListRow> {
    use crate::cache_backend::{ADMIN_HEALTHY, ADMIN_SICK};
    let active = ctx.active_name();
    let mut rows = Vec::new();
    for (vname, vcl) in ctx.vcl_table() {
        for b in vcl.shared.backends.iter() {
            if !backend_matches(&active, pattern, &vname, &b.name) {
                continue;
            }
            let admin = match b.admin_health.load(Ordering::Relaxed) {
                ADMIN_HEALTHY => "healthy",
                ADMIN_SICK => "sick",
                _ if b.probe.is_some() => "probe",
                _ => "healthy",
            };
            // The probe's own verdict; a backend without one lists as
            // healthy whatever the admin said (Varnish's vbe_list).
            let probe = match &b.probe {
                Some(p) => (
                    p.stats().good as usize,
                    p.cfg.window as usize,
                    if b.healthy.load(Ordering::Relaxed) {
                        "healthy"
                    } else {
                        "sick"
                    },
                ),
                None => (0, 0, "healthy"),
            };
            rows.push(ListRow {
                name: format!("{vname}.{}", b.name),
                kind: "backend",
                admin,
                probe,
                last_change: b.health_changed(),
                details: details.then(|| b.probe.as_ref().map(|p| p.details()).unwrap_or_default()),
                details_json: (details && json).then(|| {
                    b.probe
                        .as_ref()
                        .map_or_else(|| "{},\n".to_string(), |p| p.details_json(6))
                }),
            });
        }
        // Directors are backends too, listed after the declared ones.
        for d in vcl.shared.directors.all() {
            if !backend_matches(&active, pattern, &vname, &d.name) {
                continue;
            }
            let (probe, health) = d.probe_label(&vcl.shared);
            let (good, of) = probe
                .split_once('/')
                .map(|(a, b)| (a.parse().unwrap_or(0), b.parse().unwrap_or(0)))
                .unwrap_or((0, 0));
            rows.push(ListRow {
                name: format!("{vname}.{}", d.name),
                kind: d.type_name(),
                admin: d.admin_label(),
                probe: (good, of, health),
                last_change: d.changed(),
                details: if details {
                    d.details(&vcl.shared)
                } else {
                    None
                },
                details_json: if details && json {
                    d.details_json(&vcl.shared, 6)
                } else {
                    None
                },
            });
        }
    }
    rows
}

/// `backend.list [-j] [-p] [PATTERN]`, laid out as varnishd's (a text
/// table, or JSON).
fn backend_list(ctx: &Ctx, args: &[String]) -> String {
    let (mut json, mut details) = (false, false);
    let mut i = 0;
    while let Some(a) = args.get(i).filter(|a| a.starts_with('-')) {
        for c in a.chars().skip(1) {
            match c {
                'j' => json = true,
                'p' => details = !details,
                c => return frame(PARAM, &format!("Invalid flag {c}")),
            }
        }
        i += 1;
    }
    if args.len() > i + 1 {
        return frame(PARAM, "Too many arguments");
    }
    let rows = list_rows(ctx, args.get(i).map(String::as_str), details, json);
    if json {
        let argv: Vec<String> = std::iter::once("backend.list")
            .chain(args.iter().map(String::as_str))
            .map(crate::vmod_directors::json_str)
            .collect();
        let mut out = format!(
            "[ 3, [{}], {:.3},\n  {{\n",
            argv.join(", "),
            crate::vrt_ctx::now()
        );
        let entries: Vec<String> = rows
            .iter()
            .map(|r| {
                let (good, of, health) = r.probe;
                let mut e = format!(
                    "    {}: {{\n      \"type\": \"{}\",\n      \"admin_health\": \"{}\",\n      \"probe_message\": [{good}, {of}, \"{health}\"],\n",
                    crate::vmod_directors::json_str(&r.name),
                    r.kind,
                    r.admin
                );
                if let Some(d) = &r.details_json {
                    e.push_str("      \"probe_details\": ");
                    e.push_str(d);
                }
                e.push_str(&format!(
                    "      \"last_change\": {:.3}\n    }}",
                    r.last_change
                ));
                e
            })
            .collect();
        if entries.is_empty() {
            out.push_str("    ");
        }
        out.push_str(&entries.join(",\n"));
        out.push_str("\n  }\n]\n");
        return frame(OK, &out);
    }
    let mut raw = String::from("Backend name\tAdmin\tProbe\tHealth\tLast change\n");
    for r in &rows {
        let (good, of, health) = r.probe;
        raw.push_str(&format!(
            "{}\t{}\t{good}/{of}\t{health}\t{}",
            r.name,
            r.admin,
            crate::cache_expire::http_date(r.last_change)
        ));
        if let Some(d) = &r.details {
            raw.push_str(d);
        }
        raw.push('\n');
    }
    frame(OK, &crate::vte::vte(&raw, 80))
}

/// `backend.set_health PATTERN STATE`.
fn set_health(ctx: &Ctx, args: &[String]) -> String {
    let (Some(pat), Some(state)) = (args.first(), args.get(1)) else {
        return frame(TOOFEW, "Too few parameters\n");
    };
    let v = match state.as_str() {
        "auto" => crate::cache_backend::ADMIN_AUTO,
        "healthy" => crate::cache_backend::ADMIN_HEALTHY,
        "sick" => crate::cache_backend::ADMIN_SICK,
        _ => return frame(PARAM, &format!("Invalid state {state}")),
    };
    let mut n = 0;
    let active = ctx.active_name();
    for (vname, vcl) in ctx.vcl_table() {
        for b in vcl.shared.backends.iter() {
            if backend_matches(&active, Some(pat), &vname, &b.name) {
                b.set_admin_health(v);
                n += 1;
            }
        }
        for d in vcl.shared.directors.all() {
            if backend_matches(&active, Some(pat), &vname, &d.name) {
                d.set_admin_health(v);
                n += 1;
            }
        }
    }
    if n == 0 {
        frame(PARAM, "No Backends matches")
    } else {
        frame(OK, "")
    }
}

fn answer((status, body): crate::mgt_vcl::Answer) -> String {
    frame(status, &body)
}

/// `vcl.load NAME FILE [STATE]` and `vcl.inline NAME SOURCE [STATE]`: a
/// VCL that fails to compile or to initialise is not added, and what is
/// in service stays in service; the answer says why, as varnishd's.
async fn vcl_load(child: &Child, cmd: &str, args: &[String]) -> String {
    let ctx = child.ctx();
    if args.len() < 2 {
        return frame(TOOFEW, "Too few parameters\n");
    }
    if args.len() > 3 {
        return frame(TOOMANY, "Too many parameters\n");
    }
    let (name, what) = (&args[0], &args[1]);
    if let Some(e) = crate::mgt_vcl::invalid_name(name) {
        return answer(e);
    }
    if ctx.vcls.contains(name) {
        return frame(PARAM, &format!("Already a VCL named {name}"));
    }
    let state = match args.get(2) {
        None => crate::mgt_vcl::State::Auto,
        Some(s) => match crate::mgt_vcl::State::parse(s) {
            Some(s) => s,
            None => return frame(PARAM, "State must be one of auto, cold or warm."),
        },
    };
    let params = ctx.params();
    let labels = ctx.label_names();
    let loaded = if cmd == "vcl.load" {
        crate::cache_vcl::Vcl::load_file_with_labels(
            std::path::Path::new(what),
            &params,
            ctx.storage_budget,
            labels,
        )
        .await
    } else {
        crate::cache_vcl::Vcl::load_source_with_labels(
            "<vcl.inline>",
            what,
            &params,
            ctx.storage_budget,
            labels,
        )
        .await
    };
    match loaded {
        Ok(v) => match ctx.vcls.add(name, v, state) {
            // varnishd's manager says so; with a child running the child
            // answers, and says nothing.
            Ok(()) if child.running() => frame(OK, ""),
            Ok(()) => frame(OK, "VCL compiled.\n"),
            Err(e) => answer(e),
        },
        Err(crate::cache_vcl::LoadError::Compile(msg)) => frame(
            PARAM,
            &format!(
                "Message from VCC-compiler:\n{}\nRunning VCC-compiler failed, exited with 2\nVCL compilation failed",
                msg.trim_end()
            ),
        ),
        Err(e) => frame(PARAM, &e.to_string()),
    }
}

/// Runs one command (`words`: the command and its arguments) as the CLI
/// would, logged as the CLI logs it: (status, text). The HTTP admin API
/// runs its commands through here.
pub async fn execute(child: &Child, words: &[String]) -> (u16, String) {
    if words.is_empty() {
        return (SYNTAX, "Empty command".into());
    }
    crate::vsl::cli_rd(words);
    let reply = command(child, words).await;
    crate::vsl::cli_wr(&reply);
    unframe(&reply)
}

/// Status and text of an answer made by [`frame`].
fn unframe(reply: &str) -> (u16, String) {
    let (head, body) = reply.split_once('\n').unwrap_or((reply, ""));
    let status = head
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CANT);
    (status, body.strip_suffix('\n').unwrap_or(body).to_string())
}

async fn command(child: &Child, words: &[String]) -> String {
    let ctx = child.ctx();
    let cmd = words[0].as_str();
    let args = &words[1..];
    let need = |n: usize| args.len() < n;
    if let Some((st, text)) = crate::mgt_tenant::command(ctx, cmd, args) {
        return frame(st, &text);
    }
    match cmd {
        "vcl.load" | "vcl.inline" => vcl_load(child, cmd, args).await,
        "vcl.use" if !need(1) => answer(ctx.vcls.use_(&args[0])),
        "vcl.discard" if !need(1) => answer(
            ctx.vcls
                .discard(args, ctx.params().hot().workspace_client),
        ),
        "vcl.label" if !need(2) => answer(ctx.vcls.label(&args[0], &args[1])),
        "vcl.state" if !need(2) => answer(ctx.vcls.state(&args[0], &args[1])),
        "vcl.list" => answer(ctx.vcls.list(args, child.running())),
        "vcl.deps" => answer(ctx.vcls.deps(args)),
        "vcl.show" if !child.running() => frame(
            UNKNOWN,
            "Unknown request in manager process (child not running).\nType 'help' for more info.",
        ),
        "vcl.show" => answer(ctx.vcls.show(args)),
        "vcl.use" | "vcl.discard" | "vcl.label" | "vcl.state" => {
            frame(TOOFEW, "Too few parameters\n")
        }
        "ping" => frame(OK, &format!("PONG {} 1.0", crate::vrt_ctx::now() as u64)),
        "status" => frame(
            OK,
            if child.running() {
                "Child in state running"
            } else {
                "Child in state stopped"
            },
        ),
        "start" => match child.start() {
            Ok(()) => frame(OK, ""),
            Err(e) => frame(CANT, &e.to_string()),
        },
        "stop" => {
            if child.running() {
                child.stop();
                frame(OK, "")
            } else {
                frame(CANT, "Child in state stopped")
            }
        }
        "quit" => frame(CLOSE, "Closing CLI connection"),
        "help" => frame(
            OK,
            "auth <response>\nbackend.list [-j] [-p] [<backend_pattern>]\nbackend.set_health <backend_pattern> [auto|healthy|sick]\nban <field> <operator> <arg> [&& <field> <oper> <arg> ...]\nban.list [-j]\ndebug.listen_address\nhelp [<command>]\npanic.show\nparam.reset <param>\nparam.set <param> <value>\nparam.show [<param>]\nping [<timestamp>]\nquit\nstart\nstatus\nstop\ntenant.add <label>\ntenant.ban <tenant> <field> <operator> <arg> [&& ...]\ntenant.list [-j]\ntenant.quota <tenant> [<key>=<value>...]\ntenant.remove <label>\nvcl.deps [-j]\nvcl.discard <name_pattern>...\nvcl.inline <configname> <quoted_VCLstring> [auto|cold|warm]\nvcl.label <label> <configname>\nvcl.list [-j]\nvcl.load <configname> <filename> [auto|cold|warm]\nvcl.show [-v] [<configname>]\nvcl.state <configname> [auto|cold|warm]\nvcl.use <configname|label>",
        ),
        "ban" => {
            if need(3) {
                return frame(TOOFEW, "Too few parameters\n");
            }
            let words: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            // The operator owns the whole cache: a ban from the CLI goes
            // to every tenant's (`tenant.ban` reaches one).
            let (now, dups) = (crate::vrt_ctx::now(), ctx.params().flag("ban_dups"));
            for t in ctx.tenants.all() {
                match crate::cache_ban::parse_words(&words, now) {
                    Ok(b) => {
                        t.cache.bans.add(b, dups);
                    }
                    Err(e) => return frame(PARAM, &e),
                }
            }
            frame(OK, "")
        }
        "ban.list" => {
            let list = ctx.cache.ban_list();
            if args.iter().any(|a| a == "-j") {
                return frame(OK, &ban_list_json(args, &list));
            }
            let mut out = String::from("Present bans:\n");
            for b in &list {
                let flag = if b.completed { "C" } else { "-" };
                out.push_str(&format!("{:.6} {:>5} {flag}  {}\n", b.time, b.refs, b.text));
            }
            frame(OK, out.trim_end())
        }
        "backend.list" => backend_list(ctx, args),
        "backend.set_health" => set_health(ctx, args),
        "param.show" => match args.iter().find(|a| !a.starts_with('-')) {
            Some(name) => match ctx.params().show(name) {
                Some(v) => frame(OK, &format!("{name}\n        Value is: {v}")),
                None => frame(PARAM, &format!("Unknown parameter \"{name}\".")),
            },
            None => frame(OK, &ctx.params().show_all()),
        },
        "param.set" => {
            if need(2) {
                return frame(TOOFEW, "Too few parameters\n");
            }
            match ctx.update_params(|p| p.set(&args[0], &args[1])) {
                Ok(()) => frame(OK, ""),
                Err(e) => frame(PARAM, &e.to_string()),
            }
        }
        "param.reset" | "debug.xid" if need(1) => frame(TOOFEW, "Too few parameters\n"),
        "param.reset" => match ctx.update_params(|p| p.reset(&args[0])) {
            Ok(()) => frame(OK, ""),
            Err(e) => frame(PARAM, &e.to_string()),
        },
        "debug.listen_address" => {
            let out: Vec<String> = child
                .listens()
                .iter()
                .map(|l| format!("{} {} {}", l.name, l.addr.ip(), l.addr.port()))
                .collect();
            frame(OK, &out.join("\n"))
        }
        "debug.xid" => match args[0].parse::<u64>() {
            Ok(x) => {
                ctx.set_xid(x);
                frame(OK, &format!("XID is {x}"))
            }
            Err(_) => frame(PARAM, "Bad XID"),
        },
        "panic.show" => frame(CANT, "Child has not panicked or panic has been cleared"),
        "panic.clear" => frame(OK, ""),
        "storage.list" => frame(OK, "Storage devices:\n\tstorage.s0 = malloc"),
        _ => frame(
            UNKNOWN,
            &format!("Unknown request.\nType 'help' for more info.\n(\"{cmd}\" is not implemented)"),
        ),
    }
}
