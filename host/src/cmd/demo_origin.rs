//! `shellac demo-origin`: the bundled demo origin (used by scripts/run).

use anyhow::Context;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// Listen address.
    #[arg(short = 'a', default_value = "127.0.0.1:8080")]
    pub listen: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        eprintln!("demo origin on {}", l.local_addr()?);
        shellac::demo_origin::serve(l, Arc::new(Default::default())).await;
        Ok(ExitCode::SUCCESS)
    })
}
