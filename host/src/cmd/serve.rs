//! `shellac serve`: varnishd's command line. Always runs in the
//! foreground for now (`-F` is accepted and implied).

use anyhow::{bail, Context};
use shellac::cache_req_fsm::Ctx;
use shellac::cache_vcl::Vcl;
use shellac::mgt_child::Child;
use shellac::mgt_param::{parse_bytes, Params};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// Listen address ADDR:PORT; may repeat.
    #[arg(short = 'a', value_name = "ADDR:PORT")]
    pub listen: Vec<String>,
    /// The VCL file; `''` starts without VCL (the admin CLI loads one).
    #[arg(short = 'f', value_name = "FILE")]
    pub file: Option<String>,
    /// A backend HOST:PORT, without a VCL file.
    #[arg(short = 'b', value_name = "HOST:PORT")]
    pub backend: Option<String>,
    /// A parameter NAME=VALUE; may repeat.
    #[arg(short = 'p', value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Foreground (the only mode for now).
    #[arg(short = 'F')]
    pub foreground: bool,
    /// Instance directory: created, and the listen and admin addresses
    /// written there, so `shellac adm|stat|log -n DIR` find this instance
    /// (default: `shellac` in the temporary directory).
    #[arg(short = 'n', value_name = "DIR")]
    pub name: Option<PathBuf>,
    /// The admin HTTP listener (Prometheus `/metrics`, and what `shellac
    /// stat` and `shellac log` read); `none` turns it off.
    #[arg(
        long = "admin-http",
        value_name = "ADDR:PORT",
        default_value = "127.0.0.1:0"
    )]
    pub admin_http: String,
    /// Let anyone who reaches the admin HTTP listener read `/metrics`,
    /// `/stats` and `/log` without the `-S` token (e.g. a Prometheus
    /// scraper without credentials); `/cli` always needs it.
    #[arg(long = "admin-http-open-reads")]
    pub admin_http_open_reads: bool,
    /// Storage: malloc,SIZE.
    #[arg(short = 's', value_name = "malloc,SIZE")]
    pub storage: Vec<String>,
    /// Admin CLI listen address (varnishadm's protocol; first commands only).
    #[arg(short = 'T', value_name = "ADDR:PORT")]
    pub admin: Option<String>,
    /// Admin secret file for the challenge-response (and, hashed, the
    /// bearer token of the HTTP admin API).
    #[arg(short = 'S', value_name = "FILE")]
    pub secret: Option<PathBuf>,
    /// Tenants and their quotas (TOML; see docs/tenancy.md).
    #[arg(long = "tenants", value_name = "FILE")]
    pub tenants: Option<PathBuf>,
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

/// Where `-n DIR` keeps what `adm`, `stat` and `log` need to find this
/// instance: the admin address and the secret file.
fn write_instance(
    dir: &std::path::Path,
    listens: &[String],
    admin: Option<&str>,
    secret: Option<&std::path::Path>,
    http: Option<&str>,
    vsl: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("-n {}", dir.display()))?;
    std::fs::write(dir.join("listen"), listens.join("\n") + "\n")?;
    let mut a = String::new();
    if let Some(t) = admin {
        a.push_str(&format!("T {t}\n"));
    }
    if let Some(h) = http {
        a.push_str(&format!("H {h}\n"));
    }
    if let Some(v) = vsl {
        a.push_str(&format!("V {}\n", v.display()));
    }
    if let Some(s) = secret {
        let s = std::fs::canonicalize(s).unwrap_or_else(|_| s.to_path_buf());
        a.push_str(&format!("S {}\n", s.display()));
    }
    // Written whole under another name first: a tool reading it never
    // sees half of it.
    let tmp = dir.join("_.admin.new");
    std::fs::write(&tmp, a)?;
    std::fs::rename(&tmp, dir.join("_.admin"))?;
    Ok(())
}

/// The instance directory when `-n` is not given: `shellac` in the
/// temporary directory (as varnishd's default names one per host).
pub fn default_instance() -> PathBuf {
    std::env::temp_dir().join("shellac")
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    shellac::vsc::process_started();
    let mut params = Params::default();
    for p in &args.params {
        params.set_arg(p)?;
    }
    let storage = storage_budget(&args.storage)?;
    let secret = match &args.secret {
        Some(f) => Some(std::fs::read(f).with_context(|| format!("-S {}", f.display()))?),
        None => None,
    };
    let tenants = match &args.tenants {
        Some(f) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("--tenants {}", f.display()))?;
            shellac::mgt_tenant::parse_config(&text)
                .with_context(|| format!("--tenants {}", f.display()))?
        }
        None => Vec::new(),
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
        // `-f ''` (as varnishtest starts varnishd): no VCL yet, the admin
        // CLI loads one and says `start`.
        let vcl = match (&args.file, &args.backend) {
            (Some(f), None) if f.is_empty() => None,
            (Some(f), None) => {
                Some(Vcl::load_file(std::path::Path::new(f), &params, storage).await?)
            }
            (None, Some(b)) => {
                Some(Vcl::load_source("<-b>", &backend_vcl(b)?, &params, storage).await?)
            }
            _ => bail!("give exactly one of -f FILE and -b HOST:PORT"),
        };
        if vcl.is_none() && args.admin.is_none() {
            bail!("-f '' needs -T: without VCL the admin CLI must load one");
        }
        let listens = shellac::mgt_child::bind(&listen).context("binding -a")?;
        let addrs: Vec<String> = listens.iter().map(|l| l.addr.to_string()).collect();
        let ctx = Arc::new(match vcl {
            Some(v) => Ctx::new(params, v),
            None => Ctx::empty(params, storage),
        });
        shellac::mgt_tenant::apply(&ctx, tenants);
        tokio::spawn(shellac::cache_ban::lurker(Arc::downgrade(&ctx)));
        tokio::spawn(shellac::mgt_vcl::poker(Arc::downgrade(&ctx)));
        tokio::spawn(shellac::cache_expire::expiry(Arc::downgrade(&ctx)));
        tokio::spawn(shellac::cache_pool::herder(Arc::downgrade(&ctx)));
        // The transaction log in shared memory, where `shellac log` and
        // logexpect map it (the instance directory says where).
        let vsl = match shellac::vsl::attach_shm() {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!("transaction log not shared (readers use /log): {e}");
                None
            }
        };
        let dir = args.name.clone().unwrap_or_else(default_instance);
        let child = Arc::new(Child::new(ctx.clone(), listens));
        let mut tasks = Vec::new();
        let mut admin_addr = None;
        let mut cli = None;
        if let Some(t) = &args.admin {
            let l = tokio::net::TcpListener::bind(t.as_str())
                .await
                .with_context(|| format!("-T {t}"))?;
            let a = l.local_addr()?.to_string();
            eprintln!("shellac: admin CLI on {a}");
            admin_addr = Some(a);
            cli = Some(l);
        }
        let mut http_addr = None;
        if args.admin_http != "none" {
            let h = args.admin_http.as_str();
            let l = tokio::net::TcpListener::bind(h)
                .await
                .with_context(|| format!("--admin-http {h}"))?;
            http_addr = Some(l.local_addr()?.to_string());
            tokio::spawn(shellac::mgt_http::serve(
                child.clone(),
                l,
                secret.clone(),
                args.admin_http_open_reads,
            ));
        }
        write_instance(
            &dir,
            &addrs,
            admin_addr.as_deref(),
            args.secret.as_deref(),
            http_addr.as_deref(),
            vsl.as_deref(),
        )?;
        // The CLI answers only once the instance directory tells where
        // everything is (varnishtest reads counters right after `start`).
        if let Some(l) = cli {
            tasks.push(tokio::spawn(shellac::mgt_cli::serve(
                child.clone(),
                l,
                secret,
            )));
        }
        if ctx.has_active_vcl() {
            child.start().context("starting")?;
            eprintln!("shellac: listening on {}", addrs.join(" "));
        }
        for t in tasks {
            let _ = t.await;
        }
        // Without an admin CLI, serve until killed.
        std::future::pending::<()>().await;
        Ok(ExitCode::SUCCESS)
    })
}
