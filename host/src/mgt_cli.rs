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
pub async fn serve(child: Arc<Child>, listener: TcpListener, secret: Option<Vec<u8>>) {
    let secret = secret.map(Arc::new);
    while let Ok((s, _)) = listener.accept().await {
        tokio::spawn(session(child.clone(), s, secret.clone()));
    }
}

async fn session(child: Arc<Child>, s: TcpStream, secret: Option<Arc<Vec<u8>>>) {
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
                ("auth", Some(resp), Some(sec)) if *resp == auth_response(&ch, sec) => {
                    authed = true;
                    frame(OK, "Authenticated.")
                }
                ("auth", _, _) => {
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

/// `vcl.list`'s table.
fn vcl_list(ctx: &Ctx) -> String {
    ctx.list_vcls()
        .into_iter()
        .map(|(active, n)| {
            format!(
                "{:<10} {:>4}/{:<8} {:>6} {n}",
                if active { "active" } else { "available" },
                "auto",
                "warm",
                0
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `backend.list [-p] [PATTERN]`.
fn backend_list(ctx: &Ctx, args: &[String]) -> String {
    let pattern = args.iter().find(|a| !a.starts_with('-'));
    let mut out = format!(
        "{:<30} {:<10} {:<10} {:<10} {}",
        "Backend name", "Admin", "Probe", "Health", "Last change"
    );
    for (vname, vcl) in ctx.vcl_table() {
        for b in vcl.shared.backends.iter() {
            let full = format!("{vname}.{}", b.name);
            if pattern.is_some_and(|p| !crate::vmod_std::fnmatch(p, &full, false)) {
                continue;
            }
            let admin = match b.admin_health.load(Ordering::Relaxed) {
                crate::cache_backend::ADMIN_HEALTHY => "healthy",
                crate::cache_backend::ADMIN_SICK => "sick",
                _ => {
                    if b.probed {
                        "probe"
                    } else {
                        "healthy"
                    }
                }
            };
            let probe = if b.probed {
                if b.healthy.load(Ordering::Relaxed) {
                    "1/1"
                } else {
                    "0/1"
                }
            } else {
                "0/0"
            };
            let health = if b.is_healthy() { "healthy" } else { "sick" };
            out.push_str(&format!(
                "\n{full:<30} {admin:<10} {probe:<10} {health:<10} {}",
                crate::cache_expire::http_date(crate::vrt_ctx::now())
            ));
        }
    }
    out
}

/// `backend.set_health PATTERN STATE`.
fn set_health(ctx: &Ctx, args: &[String]) -> String {
    let (Some(pat), Some(state)) = (args.first(), args.get(1)) else {
        return frame(TOOFEW, "Too few parameters");
    };
    let v = match state.as_str() {
        "auto" => crate::cache_backend::ADMIN_AUTO,
        "healthy" => crate::cache_backend::ADMIN_HEALTHY,
        "sick" => crate::cache_backend::ADMIN_SICK,
        _ => return frame(PARAM, &format!("Invalid state {state}")),
    };
    let mut n = 0;
    for (vname, vcl) in ctx.vcl_table() {
        for b in vcl.shared.backends.iter() {
            let full = format!("{vname}.{}", b.name);
            // A bare name matches that backend of the active VCL.
            if crate::vmod_std::fnmatch(pat, &full, false)
                || (ctx.active_name() == vname && crate::vmod_std::fnmatch(pat, &b.name, false))
            {
                b.admin_health.store(v, Ordering::Relaxed);
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

async fn command(child: &Child, words: &[String]) -> String {
    let ctx = child.ctx();
    let cmd = words[0].as_str();
    let args = &words[1..];
    let done = |r: Result<(), String>| match r {
        Ok(()) => frame(OK, ""),
        Err(e) => frame(CANT, &e),
    };
    let need = |n: usize| args.len() < n;
    match cmd {
        "vcl.load" | "vcl.inline" => {
            if need(2) {
                return frame(TOOFEW, "Too few parameters");
            }
            let (name, what) = (&args[0], &args[1]);
            let params = ctx.params();
            let loaded = if cmd == "vcl.load" {
                crate::cache_vcl::Vcl::load_file(
                    std::path::Path::new(what),
                    &params,
                    ctx.storage_budget,
                )
                .await
            } else {
                crate::cache_vcl::Vcl::load_source_with_labels(
                    name,
                    what,
                    &params,
                    ctx.storage_budget,
                    ctx.label_names(),
                )
                .await
            };
            match loaded {
                Ok(v) => match ctx.add_vcl(name, v) {
                    Ok(()) => frame(OK, "VCL compiled."),
                    Err(e) => frame(PARAM, &e),
                },
                // A failing load leaves the running VCL in service.
                Err(e) => frame(PARAM, &e.to_string()),
            }
        }
        "vcl.use" if !need(1) => done(ctx.use_vcl(&args[0])),
        "vcl.discard" if !need(1) => done(ctx.discard_vcl(&args[0])),
        "vcl.label" if !need(2) => done(ctx.label_vcl(&args[0], &args[1])),
        "vcl.state" if !need(2) => match args[1].as_str() {
            "auto" | "cold" | "warm" => frame(OK, ""),
            s => frame(PARAM, &format!("State must be one of auto, cold or warm, not {s}")),
        },
        "vcl.list" => frame(OK, &vcl_list(ctx)),
        "vcl.use" | "vcl.discard" | "vcl.label" | "vcl.state" => {
            frame(TOOFEW, "Too few parameters")
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
            "auth <response>\nbackend.list [-p] [<backend_pattern>]\nbackend.set_health <backend_pattern> [auto|healthy|sick]\nban <field> <operator> <arg> [&& <field> <oper> <arg> ...]\nban.list\ndebug.listen_address\nhelp [<command>]\npanic.show\nparam.reset <param>\nparam.set <param> <value>\nparam.show [<param>]\nping [<timestamp>]\nquit\nstart\nstatus\nstop\nvcl.discard <configname|label>\nvcl.inline <configname> <quoted_VCLstring>\nvcl.label <label> <configname>\nvcl.list\nvcl.load <configname> <filename>\nvcl.state <configname> auto|cold|warm\nvcl.use <configname|label>",
        ),
        "ban" => {
            if need(3) {
                return frame(TOOFEW, "Too few parameters");
            }
            let words: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            match crate::cache_ban::parse_words(&words, crate::vrt_ctx::now()) {
                Ok(b) => {
                    ctx.cache.bans.add(b, ctx.params().flag("ban_dups"));
                    frame(OK, "")
                }
                Err(e) => frame(PARAM, &e),
            }
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
        "backend.list" => frame(OK, &backend_list(ctx, args)),
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
                return frame(TOOFEW, "Too few parameters");
            }
            match ctx.update_params(|p| p.set(&args[0], &args[1])) {
                Ok(()) => frame(OK, ""),
                Err(e) => frame(PARAM, &e.to_string()),
            }
        }
        "param.reset" | "debug.xid" if need(1) => frame(TOOFEW, "Too few parameters"),
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
