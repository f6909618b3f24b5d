//! `shellac`: a Varnish-compatible HTTP cache whose VCL runs as WebAssembly.
//!
//! One binary with varnishd-style subcommands. Each subcommand lives in its
//! own module under `cmd/`.

mod cmd;
mod sandbox;

/// mimalloc rather than glibc's malloc: the request path allocates and
/// frees many small strings, and glibc's consolidation of its fast bins on
/// every larger allocation showed up as a tenth of a cache hit's CPU.
/// Built with `no_thp`: with transparent huge pages each arena region a
/// thread touches became 2 MiB resident, 22 MiB more at 100,000 cached
/// objects (and 16 of an idle process's 34), for no measurable speed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "shellac",
    version,
    about = "Varnish-compatible HTTP cache; VCL runs as WebAssembly"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a VCL file and compile it to a WebAssembly module (like `varnishd -C`).
    Compile(cmd::compile::Args),
    /// Run .vtc test files (like `varnishtest`).
    Test(cmd::test::Args),
    /// Send one admin command to a running instance (like `varnishadm`).
    Adm(cmd::adm::Args),
    /// Run the cache (like `varnishd`).
    Serve(cmd::serve::Args),
    /// Show a running instance's counters (like `varnishstat`).
    Stat(cmd::stat::Args),
    /// Show a running instance's transaction log (like `varnishlog`; with
    /// `--ncsa`, `varnishncsa`).
    Log(cmd::log::Args),
    /// Run the bundled demo origin.
    #[command(hide = true)]
    DemoOrigin(cmd::demo_origin::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHELLAC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Compile(args) => cmd::compile::run(args),
        Command::Test(args) => cmd::test::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Adm(args) => cmd::adm::run(args),
        Command::Stat(args) => cmd::stat::run(args),
        Command::Log(args) => cmd::log::run(args),
        Command::DemoOrigin(args) => cmd::demo_origin::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shellac: {e:#}");
            ExitCode::from(2)
        }
    }
}
