//! `shellac compile`: varnishd -C for Shellac. Checks a VCL file, prints
//! errors the way varnishd does (message, file, line, column, the source
//! line and a marker), and writes the WebAssembly module.

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::ExitCode;
use vcl_to_wasm::CompileOptions;

#[derive(clap::Args)]
pub struct Args {
    /// The VCL file to compile.
    pub file: PathBuf,
    /// Where to write the module. Without it the VCL is only checked.
    #[arg(short = 'o', value_name = "OUT.wasm")]
    pub output: Option<PathBuf>,
    /// Print the module as WebAssembly text on standard output.
    #[arg(long)]
    pub wat: bool,
    /// A directory searched for `include` files (Varnish's vcl_path); may repeat.
    #[arg(short = 'I', value_name = "DIR")]
    pub include: Vec<PathBuf>,
    /// A compiler parameter, as varnishd's: vcc_err_unref, vcc_allow_inline_c,
    /// vcc_unsafe_path, vmod_path (where `import` finds VMOD components,
    /// after the bundled ones).
    #[arg(short = 'p', value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Also compile the module to native code with wasmtime, as loading it
    /// in `shellac serve` does (checks it and measures the full cost).
    #[arg(long)]
    pub native: bool,
}

/// Parses varnishd's boolean parameter spellings.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "on" | "true" | "yes" | "enable" => Some(true),
        "off" | "false" | "no" | "disable" => Some(false),
        _ => None,
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut opts = CompileOptions::new();
    opts.include_path = args.include.clone();
    let mut vmod_path = String::from("/usr/lib/varnish/vmods");
    for p in &args.params {
        let Some((name, value)) = p.split_once('=') else {
            bail!("-p expects NAME=VALUE, got '{p}'");
        };
        if name == "vmod_path" {
            vmod_path = value.to_string();
            continue;
        }
        let Some(b) = parse_bool(value) else {
            bail!("parameter {name}: '{value}' is not a boolean (on/off)");
        };
        match name {
            "vcc_err_unref" => opts.err_unref = b,
            "vcc_allow_inline_c" => opts.allow_inline_c = b,
            "vcc_unsafe_path" => opts.unsafe_path = b,
            _ => bail!("unknown compiler parameter '{name}'"),
        }
    }
    opts.vmod_resolver = Some(vcl_to_wasm::VmodResolverRef(std::sync::Arc::new(
        shellac::cache_vmod::Resolver { vmod_path },
    )));
    match vcl_to_wasm::compile_file(&args.file, &opts) {
        Ok(compiled) => {
            for w in &compiled.warnings {
                eprint!("{w}");
            }
            if args.native {
                let engine = crate::sandbox::engine()?;
                wasmtime::Module::new(&engine, &compiled.wasm)
                    .map_err(|e| anyhow::anyhow!("compiling the module to native code: {e}"))?;
            }
            if let Some(out) = &args.output {
                std::fs::write(out, &compiled.wasm)
                    .with_context(|| format!("writing {}", out.display()))?;
            }
            if args.wat {
                let wat = vcl_to_wasm::codegen::to_wat(&compiled.wasm)
                    .context("printing the module as text")?;
                print!("{wat}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            eprintln!("Message from VCC-compiler:");
            eprint!("{diags}");
            eprintln!("VCL compilation failed");
            Ok(ExitCode::from(1))
        }
    }
}
