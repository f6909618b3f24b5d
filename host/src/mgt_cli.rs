//! The admin CLI (varnishd's `-T`/`-S`, spoken by `varnishadm`): a text
//! protocol where every answer is `STATUS LENGTH\n BODY\n`, with the
//! secret-file challenge-response when `-S` is given. First part: `ping`,
//! `status`, `vcl.load`, `vcl.inline`, `vcl.use`, `vcl.list`,
//! `vcl.discard`, `ban`, `ban.list`, `backend.list`, `param.show NAME`.

use crate::cache_req_fsm::Ctx;
use sha2::{Digest, Sha256};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// CLI status codes (Varnish's `CLIS_*`).
const OK: u16 = 200;
const UNKNOWN: u16 = 101;
const PARAM: u16 = 106;
const AUTH: u16 = 107;
const CANT: u16 = 300;

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
pub fn auth_response(challenge: &str, secret: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(challenge.as_bytes());
    h.update(b"\n");
    h.update(secret);
    h.update(challenge.as_bytes());
    h.update(b"\n");
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Serves the CLI on `listener`.
pub async fn serve(ctx: Arc<Ctx>, listener: TcpListener, secret: Option<Vec<u8>>) {
    let secret = secret.map(Arc::new);
    while let Ok((s, _)) = listener.accept().await {
        tokio::spawn(session(ctx.clone(), s, secret.clone()));
    }
}

async fn session(ctx: Arc<Ctx>, s: TcpStream, secret: Option<Arc<Vec<u8>>>) {
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
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(cmd) = words.first().copied() else {
            continue;
        };
        let reply = if !authed {
            match (cmd, words.get(1), &secret) {
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
            command(&ctx, cmd, &words[1..], &line).await
        };
        if w.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
        if cmd == "quit" {
            return;
        }
    }
}

async fn command(ctx: &Ctx, cmd: &str, args: &[&str], line: &str) -> String {
    let done = |r: Result<(), String>| match r {
        Ok(()) => frame(OK, ""),
        Err(e) => frame(CANT, &e),
    };
    match cmd {
        "vcl.load" | "vcl.inline" => {
            let (Some(name), Some(_)) = (args.first(), args.get(1)) else {
                return frame(
                    PARAM,
                    &format!(
                        "{cmd} NAME {}",
                        if cmd == "vcl.load" { "FILE" } else { "SOURCE" }
                    ),
                );
            };
            let rest = line
                .trim_start()
                .split_once(char::is_whitespace)
                .and_then(|(_, r)| r.trim_start().split_once(char::is_whitespace))
                .map_or("", |(_, r)| r.trim());
            let storage = ctx.vcl().map_or(u64::MAX, |v| v.shared.storage_budget);
            let loaded = if cmd == "vcl.load" {
                crate::cache_vcl::Vcl::load_file(std::path::Path::new(rest), &ctx.params, storage)
                    .await
            } else {
                let src = rest
                    .strip_prefix("<< ")
                    .or_else(|| rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
                    .unwrap_or(rest);
                crate::cache_vcl::Vcl::load_source(name, src, &ctx.params, storage).await
            };
            match loaded {
                Ok(v) => done(ctx.add_vcl(name, v).map(|_| ())),
                // A failing load leaves the running VCL in service.
                Err(e) => frame(106, &e.to_string()),
            }
        }
        "vcl.use" => match args.first() {
            Some(n) => done(ctx.use_vcl(n)),
            None => frame(PARAM, "vcl.use NAME"),
        },
        "vcl.discard" => match args.first() {
            Some(n) => done(ctx.discard_vcl(n)),
            None => frame(PARAM, "vcl.discard NAME"),
        },
        "vcl.list" => {
            let out: Vec<String> = ctx
                .list_vcls()
                .into_iter()
                .map(|(active, n)| {
                    format!(
                        "{:<10} {:<5} {:>6} {n}",
                        if active { "active" } else { "available" },
                        "auto",
                        "warm"
                    )
                })
                .collect();
            frame(OK, &out.join("\n"))
        }
        "ping" => frame(OK, &format!("PONG {} 1.0", crate::vrt_ctx::now() as u64)),
        "status" => frame(OK, "Child in state running"),
        "quit" => frame(500, "Closing CLI connection"),
        "ban" => {
            let expr = line.trim_start().strip_prefix("ban").unwrap_or("").trim();
            match crate::cache_ban::parse(expr, crate::vrt_ctx::now()) {
                Ok(b) => {
                    ctx.cache.bans.add(b);
                    frame(OK, "")
                }
                Err(e) => frame(PARAM, &e),
            }
        }
        "ban.list" => {
            let mut out = String::from("Present bans:\n");
            for (t, text) in ctx.cache.bans.list() {
                out.push_str(&format!("{t:.6}     0 -  {text}\n"));
            }
            frame(OK, out.trim_end())
        }
        "backend.list" => {
            let mut out = format!("{:<30} {:<10} {:<10}", "Backend name", "Admin", "Probe");
            let vcl = ctx.vcl();
            for b in vcl.iter().flat_map(|v| v.shared.backends.iter()) {
                let h = if b.healthy.load(Ordering::Relaxed) {
                    "healthy"
                } else {
                    "sick"
                };
                out.push_str(&format!(
                    "\n{:<30} {:<10} {:<10}",
                    format!("boot.{}", b.name),
                    "probe",
                    h
                ));
            }
            frame(OK, &out)
        }
        "param.show" => match args.first() {
            Some(name) => match ctx.params.show(name) {
                Some(v) => frame(OK, &format!("{name}\n        Value is: {v}")),
                None => frame(PARAM, &format!("Unknown parameter \"{name}\".")),
            },
            None => frame(
                PARAM,
                "param.show NAME (the full listing is not implemented yet)",
            ),
        },
        _ => frame(
            UNKNOWN,
            &format!(
                "Unknown request.\nType 'help' for more info.\n(\"{cmd}\" is not implemented yet)"
            ),
        ),
    }
}
