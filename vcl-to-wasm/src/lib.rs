//! `vcl-to-wasm`: Shellac's VCL compiler.
//!
//! VCL source goes through the lexer (`vcc_token`), the parser
//! (`vcc_parse`, producing [`ast`]), the checker (`vcc_*`, producing the
//! typed [`tir`]) and the code generator ([`codegen`]), which emits a core
//! WebAssembly module that imports the host functions listed in [`abi`].
//! The module layout mirrors Varnish's `lib/libvcc` so a reader who knows
//! Varnish finds things where they expect them.

pub mod abi;
pub mod ast;
pub mod codegen;
pub mod error;
pub mod returns;
pub mod tir;
pub mod types;
pub mod vars;
mod vcc_acl;
mod vcc_action;
mod vcc_backend;
pub mod vcc_compile;
mod vcc_expr;
pub mod vcc_parse;
pub mod vcc_token;
mod vcc_xref;
pub mod vmods;

pub use error::{Diagnostic, Diagnostics};
pub use vcc_compile::{check_source, compile_file, compile_source, BUILTIN_VCL};

use std::path::PathBuf;

/// How to compile.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    /// Directories searched for `include "relative";` after the including
    /// file's own directory (Varnish's `vcl_path`).
    pub include_path: Vec<PathBuf>,
    /// Unreferenced backends, ACLs, probes and subs are errors
    /// (Varnish's `vcc_err_unref`, on by default).
    pub err_unref: bool,
    /// Whether inline C (`C{ … }C`) is allowed (`vcc_allow_inline_c`). Shellac
    /// can never run C, so this only changes the message.
    pub allow_inline_c: bool,
    /// VCL labels that exist where this VCL is loaded, for
    /// `return (vcl(label))`. As with varnishd, naming any other is an error.
    pub labels: Vec<String>,
    /// Storage backends that exist (`-s`), for `storage.NAME`: varnishd's
    /// defaults are `s0` and `Transient`.
    pub storages: Vec<String>,
    /// `import … from "path"` with a path is allowed (`vcc_unsafe_path`).
    pub unsafe_path: bool,
    /// Finds VMODs other than the built-in `std` and `directors` (the host's
    /// WebAssembly components, searched in `vmod_path`). Without one, only
    /// the built-in VMODs can be imported.
    pub vmod_resolver: Option<VmodResolverRef>,
}

/// Resolves `import name [from "path"];` to the VMOD's signatures.
///
/// The compiler does not know how VMODs are stored: the host reads a
/// component's exported WIT interface and describes it as a [`vmods::Vmod`].
pub trait VmodResolver: Send + Sync {
    /// The VMOD `name`, from `path` if the import names one. The error is
    /// the message varnishd would print (`Could not find VMOD …`, or why
    /// the file is not a usable VMOD).
    fn resolve(&self, name: &str, path: Option<&str>) -> Result<vmods::Vmod, String>;
}

/// A shared [`VmodResolver`], cloneable with the options.
#[derive(Clone)]
pub struct VmodResolverRef(pub std::sync::Arc<dyn VmodResolver>);

impl std::fmt::Debug for VmodResolverRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VmodResolver")
    }
}

impl CompileOptions {
    /// Varnish's defaults.
    pub fn new() -> Self {
        CompileOptions {
            include_path: Vec::new(),
            err_unref: true,
            allow_inline_c: false,
            labels: Vec::new(),
            storages: vec!["s0".to_string(), "Transient".to_string()],
            unsafe_path: true,
            vmod_resolver: None,
        }
    }
}

/// A compiled VCL program.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The validated WebAssembly module.
    pub wasm: Vec<u8>,
    /// Declarations the host needs (also embedded in `wasm`).
    pub meta: tir::Metadata,
    /// Warnings (e.g. unused symbols with `vcc_err_unref` off).
    pub warnings: Vec<Diagnostic>,
    /// Every source read, in the order read (the main file first, then
    /// what it includes), without the builtin VCL: `vcl.show` prints them.
    pub sources: Vec<std::sync::Arc<error::Source>>,
}
