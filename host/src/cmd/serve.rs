//! `shellac serve`: varnishd's command line. Always runs in the
//! foreground for now (`-F` is accepted and implied).

use anyhow::{bail, Context};
use shellac::cache_req_fsm::Ctx;
use shellac::cache_vcl::Vcl;
use shellac::mgt_param::{parse_bytes, Params};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// Listen address ADDR:PORT; may repeat.
    #[arg(short = 'a', value_name = "ADDR:PORT")]
    pub listen: Vec<String>,
    /// The VCL file.
    #[arg(short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A backend HOST:PORT, without a VCL file.
    #[arg(short = 'b', value_name = "HOST:PORT")]
    pub backend: Option<String>,
    /// A parameter NAME=VALUE; may repeat.
    #[arg(short = 'p', value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Foreground (the only mode for now).
    #[arg(short = 'F')]
    pub foreground: bool,
    /// Instance directory: created, and the listen addresses written there.
    #[arg(short = 'n', value_name = "DIR")]
    pub name: Option<PathBuf>,
    /// Storage: malloc,SIZE.
    #[arg(short = 's', value_name = "malloc,SIZE")]
    pub storage: Vec<String>,
    /// Admin CLI listen address (varnishadm's protocol; first commands only).
    #[arg(short = 'T', value_name = "ADDR:PORT")]
    pub admin: Option<String>,
    /// Admin secret file for the challenge-response.
    #[arg(short = 'S', value_name = "FILE")]
    pub secret: Option<PathBuf>,
}

fn storage_budget(specs: &[String]) -> anyhow::Result<u64> {
    let mut total = 0u64;
    for s in specs {
        let s = s.split_once('=').map_or(s.as_str(), |(_, v)| v);
        let mut parts = s.split(',');
        match parts.next() {
            Some("malloc") | Some("default") => {}
            other => bail!("-s {s}: unknown storage type {other:?} (only malloc)"),
        }
        let size = match parts.next() {
            Some(sz) => parse_bytes(sz).with_context(|| format!("-s {s}: bad size"))? as u64,
            None => u64::MAX,
        };
        total = total.saturating_add(size);
    }
    Ok(if specs.is_empty() { u64::MAX } else { total })
}

/// Builds the VCL source for `-b HOST:PORT`.
fn backend_vcl(b: &str) -> anyhow::Result<String> {
    let (host, port) = match b.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => (h, p),
        _ => (b, "80"),
    };
    if host.contains('"') || port.contains('"') {
        bail!("-b {b}: bad backend address");
    }
    Ok(format!(
        "vcl 4.1;\nbackend default {{ .host = \"{host}\"; .port = \"{port}\"; }}\n"
    ))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut params = Params::default();
    for p in &args.params {
        params.set_arg(p)?;
    }
    let storage = storage_budget(&args.storage)?;
    let secret = match &args.secret {
        Some(f) => Some(std::fs::read(f).with_context(|| format!("-S {}", f.display()))?),
        None => None,
    };
    let listen = if args.listen.is_empty() {
        vec![":80".to_string()]
    } else {
        args.listen.clone()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let vcl = match (&args.file, &args.backend) {
            (Some(f), None) => Vcl::load_file(f, &params, storage).await?,
            (None, Some(b)) => Vcl::load_source("<-b>", &backend_vcl(b)?, &params, storage).await?,
            _ => bail!("give exactly one of -f FILE and -b HOST:PORT"),
        };
        let listeners = shellac::cache_http1::bind(&listen)
            .await
            .context("binding -a")?;
        let addrs: Vec<String> = listeners.iter().map(|(_, a)| a.to_string()).collect();
        if let Some(dir) = &args.name {
            std::fs::create_dir_all(dir).with_context(|| format!("-n {}", dir.display()))?;
            std::fs::write(dir.join("listen"), addrs.join("\n") + "\n")?;
        }
        eprintln!("shellac: listening on {}", addrs.join(" "));
        let ctx = Arc::new(Ctx::new(params, vcl));
        let mut tasks = Vec::new();
        if let Some(t) = &args.admin {
            let l = tokio::net::TcpListener::bind(t.as_str())
                .await
                .with_context(|| format!("-T {t}"))?;
            eprintln!("shellac: admin CLI on {}", l.local_addr()?);
            tasks.push(tokio::spawn(shellac::mgt_cli::serve(
                ctx.clone(),
                l,
                secret,
            )));
        }
        for (l, _) in listeners {
            tasks.push(tokio::spawn(shellac::cache_http1::serve(ctx.clone(), l)));
        }
        for t in tasks {
            let _ = t.await;
        }
        Ok(ExitCode::SUCCESS)
    })
}
