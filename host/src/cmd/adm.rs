//! `shellac adm`: varnishadm for Shellac: connects to `-T` (or the admin
//! CLI of the instance `-n DIR` names), answers the `-S` challenge, runs
//! one command and prints the answer. With `--http` it speaks the HTTP
//! admin API instead (`POST /cli` with the bearer token derived from
//! `-S`).

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Admin address ADDR:PORT (serve's -T).
    #[arg(short = 'T', value_name = "ADDR:PORT")]
    pub admin: Option<String>,
    /// The instance directory (serve's `-n`): its `-T` and `-S`.
    #[arg(short = 'n', value_name = "DIR")]
    pub name: Option<PathBuf>,
    /// Secret file (serve's -S).
    #[arg(short = 'S', value_name = "FILE")]
    pub secret: Option<PathBuf>,
    /// Use the HTTP admin API: `--http=ADDR:PORT`, or bare `--http` for
    /// the instance's (`-n`).
    #[arg(
        long = "http",
        value_name = "ADDR:PORT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = ""
    )]
    pub http: Option<String>,
    /// The command and its arguments, e.g. `ban req.url ~ /foo`.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn answer(r: &mut BufReader<TcpStream>) -> anyhow::Result<(u16, String)> {
    let mut head = String::new();
    r.read_line(&mut head).context("reading the answer")?;
    let mut it = head.split_whitespace();
    let (Some(st), Some(len)) = (it.next(), it.next()) else {
        bail!("bad CLI answer {head:?}");
    };
    let st: u16 = st.parse().context("status")?;
    let len: usize = len.parse().context("length")?;
    let mut body = vec![0u8; len + 1];
    r.read_exact(&mut body).context("reading the body")?;
    body.truncate(len);
    Ok((st, String::from_utf8_lossy(&body).into_owned()))
}

/// Prints a command's answer and maps its status to the exit code, as
/// varnishadm does.
fn finish(st: u16, body: &str) -> ExitCode {
    println!("{body}");
    if st == 200 {
        ExitCode::SUCCESS
    } else {
        eprintln!("Command failed with error code {st}");
        ExitCode::from(1)
    }
}

/// `--http`: one `POST /cli`.
fn run_http(args: &Args, addr: &str) -> anyhow::Result<ExitCode> {
    let (addr, secret) = if addr.is_empty() {
        let i = super::instance::find(args.name.as_deref(), std::time::Duration::ZERO)?;
        let Some(h) = i.http else {
            bail!("the instance has no admin HTTP listener");
        };
        (h, args.secret.clone().or(i.secret))
    } else {
        (addr.to_string(), args.secret.clone())
    };
    let body = serde_json::json!({ "argv": args.command }).to_string();
    let mut head = format!(
        "POST /cli HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(f) = &secret {
        let secret = std::fs::read(f).with_context(|| format!("-S {}", f.display()))?;
        head.push_str(&format!(
            "Authorization: Bearer {}\r\n",
            shellac::mgt_auth::http_token(&secret)
        ));
    }
    head.push_str("\r\n");
    let mut s = TcpStream::connect(&addr).with_context(|| format!("connecting to {addr}"))?;
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).context("reading the answer")?;
    let resp = String::from_utf8_lossy(&resp);
    let Some((status_line, rest)) = resp.split_once("\r\n") else {
        bail!("bad HTTP answer");
    };
    let body = rest.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value =
        serde_json::from_str(body).with_context(|| format!("bad answer: {status_line}"))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("{status_line}: {e}");
    }
    let st = v.get("status").and_then(|s| s.as_u64()).unwrap_or(0) as u16;
    Ok(finish(
        st,
        v.get("text").and_then(|t| t.as_str()).unwrap_or(""),
    ))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(addr) = args.http.clone() {
        return run_http(&args, &addr);
    }
    let (admin, secret) = match args.admin {
        Some(t) => (t, args.secret),
        None => {
            let i = super::instance::find(args.name.as_deref(), std::time::Duration::ZERO)?;
            let Some(t) = i.cli else {
                bail!("the instance has no admin CLI (serve without -T)");
            };
            (t, args.secret.or(i.secret))
        }
    };
    let s = TcpStream::connect(&admin).with_context(|| format!("connecting to {admin}"))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let (mut st, body) = answer(&mut r)?;
    if st == 107 {
        let Some(f) = &secret else {
            bail!("authentication required: give -S SECRETFILE");
        };
        let secret = std::fs::read(f).with_context(|| format!("-S {}", f.display()))?;
        let ch = body.lines().next().unwrap_or("");
        let resp = shellac::mgt_cli::auth_response(ch, &secret);
        writeln!(w, "auth {resp}")?;
        st = answer(&mut r)?.0;
        if st != 200 {
            bail!("authentication failed");
        }
    }
    writeln!(w, "{}", args.command.join(" "))?;
    let (st, body) = answer(&mut r)?;
    Ok(finish(st, &body))
}
