//! `shellac adm`: varnishadm for Shellac: connects to `-T` (or the admin
//! CLI of the instance `-n DIR` names), answers the `-S` challenge, runs
//! one command and prints the answer.

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

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
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
    println!("{body}");
    Ok(if st == 200 {
        ExitCode::SUCCESS
    } else {
        eprintln!("Command failed with error code {st}");
        ExitCode::from(1)
    })
}
