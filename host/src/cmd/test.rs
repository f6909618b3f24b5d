//! `shellac test`: varnishtest for Shellac. Runs .vtc files; all the work
//! is in the `vtc` crate's runner, this module only maps the command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

#[derive(clap::Args)]
pub struct Args {
    /// The .vtc files to run.
    pub files: Vec<PathBuf>,
    /// Print the log of every test, not only of failed ones.
    #[arg(short = 'v')]
    pub verbose: bool,
    /// Print only failures and the summary.
    #[arg(short = 'q')]
    pub quiet: bool,
    /// Run this many tests in parallel.
    #[arg(short = 'j', default_value_t = 1)]
    pub jobs: usize,
    /// Time limit of one test in seconds (sessions time out after half).
    #[arg(short = 't', default_value_t = 60.0)]
    pub timeout: f64,
    /// Keep going after a failed test.
    #[arg(short = 'k')]
    pub keep_going: bool,
    /// Define a macro: -D name=value.
    #[arg(short = 'D', value_name = "NAME=VALUE")]
    pub defines: Vec<String>,
    /// Read test file names from this list (one per line; relative names
    /// are taken from the list's directory or its tests/).
    #[arg(short = 'f', value_name = "LIST")]
    pub lists: Vec<PathBuf>,
    /// Run the real varnishd at PATH instead of `shellac serve`.
    #[arg(long, value_name = "PATH")]
    pub varnishd: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut files = args.files.clone();
    for l in &args.lists {
        files.extend(vtc::read_list(l).with_context(|| format!("reading {}", l.display()))?);
    }
    if files.is_empty() {
        bail!("no test files given");
    }
    let mut defines = Vec::new();
    for d in &args.defines {
        match d.split_once('=') {
            Some((k, v)) => defines.push((k.to_string(), v.to_string())),
            None => bail!("-D wants name=value, got {d:?}"),
        }
    }
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        bail!("-t wants a positive number of seconds");
    }
    let opts = vtc::RunOptions {
        verbose: args.verbose,
        quiet: args.quiet,
        jobs: args.jobs.max(1),
        keep_going: args.keep_going,
        config: vtc::TestConfig {
            max_duration: Duration::from_secs_f64(args.timeout),
            varnishd: args.varnishd.clone(),
            shellac: std::env::current_exe().context("locating the shellac binary")?,
            defines,
        },
    };
    let sum = vtc::run_all(&files, &opts, &mut std::io::stdout());
    Ok(if sum.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
