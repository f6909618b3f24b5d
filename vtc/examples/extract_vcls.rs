//! Writes every VCL that the conformance cases make varnishd compile, one
//! file each, plus a manifest, so `tests/tools/varnishd-verdicts.sh` can ask
//! the real `varnishd -C` what it thinks of each.
//!
//! Usage: `cargo run -p vtc --example extract_vcls -- OUTDIR [--all] [CORPUS]`
//!
//! * OUTDIR receives `<case>.<n>.vcl` (n counts the VCLs of one case from 1,
//!   in execution order) and `manifest.tsv`.
//! * Cases come from `tierA.txt` and `tierB.txt` (every VCL) and `tierC.txt`
//!   (only `-errvcl` VCLs, unless `--all`).
//! * CORPUS defaults to `../shared/conformance/varnish-7.1.1` next to the
//!   workspace.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use vtc::{extract_vcls, parse_script, ExtractEnv, VclKind};

/// Manifest columns, tab-separated, one header line.
/// `errvcl_msg` is escaped (`\\`, `\n`, `\t`, `\r`) because -errvcl messages
/// may span lines; `params` is `k=v` words separated by spaces (parameters
/// whose value holds whitespace are left out). Empty fields are written
/// as `-`.
const HEADER: &str = "vtc\tn\tkind\ttier\texpected\tline\tinstance\tvcl_file\tparams\terrvcl_msg";

fn main() -> ExitCode {
    let mut out_dir = None;
    let mut all = false;
    let mut corpus = None;
    for a in std::env::args().skip(1) {
        if a == "--all" {
            all = true;
        } else if out_dir.is_none() {
            out_dir = Some(PathBuf::from(a));
        } else {
            corpus = Some(PathBuf::from(a));
        }
    }
    let Some(out_dir) = out_dir else {
        eprintln!("usage: extract_vcls OUTDIR [--all] [CORPUS]");
        return ExitCode::from(2);
    };
    let corpus = corpus.unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/varnish-7.1.1")
    });
    match run(&out_dir, &corpus, all) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("extract_vcls: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(out_dir: &Path, corpus: &Path, all: bool) -> Result<(), String> {
    fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let tests = corpus.join("tests");
    let env = ExtractEnv::new("/tmp/vtc.shellac", &tests.to_string_lossy());
    let mut manifest = String::from(HEADER);
    manifest.push('\n');
    let mut failures = 0usize;
    for tier in ["A", "B", "C"] {
        let list_path = corpus.join(format!("tier{tier}.txt"));
        let list =
            fs::read_to_string(&list_path).map_err(|e| format!("{}: {e}", list_path.display()))?;
        let (mut files, mut vcls, mut errvcls) = (0, 0, 0);
        for name in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let path = tests.join(name);
            let src = match fs::read(&path) {
                Ok(s) => s,
                Err(e) => {
                    // Some tier A/B cases are deliberately held out.
                    eprintln!("skip {name}: {e}");
                    continue;
                }
            };
            files += 1;
            let extracted = parse_script(&src).and_then(|s| extract_vcls(&s, &env));
            let extracted = match extracted {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("{name}: {e}");
                    failures += 1;
                    continue;
                }
            };
            let stem = name.strip_suffix(".vtc").unwrap_or(name);
            for (i, v) in extracted.iter().enumerate() {
                if tier == "C" && !all && v.kind != VclKind::ErrVcl {
                    continue;
                }
                let n = i + 1;
                let file = format!("{stem}.{n}.vcl");
                fs::write(out_dir.join(&file), &v.source).map_err(|e| format!("{file}: {e}"))?;
                // Never an empty field: `read` in sh merges adjacent tabs.
                let msg = v
                    .error_substring
                    .as_deref()
                    .map_or_else(|| "-".into(), escape);
                let params = v
                    .params
                    .iter()
                    .filter(|(k, v)| {
                        !k.contains(char::is_whitespace) && !v.contains(char::is_whitespace)
                    })
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                let params = if params.is_empty() {
                    "-".into()
                } else {
                    params
                };
                let _ = writeln!(
                    manifest,
                    "{name}\t{n}\t{}\t{tier}\t{}\t{}\t{}\t{file}\t{params}\t{msg}",
                    v.kind, v.expect, v.line, v.instance
                );
                vcls += 1;
                if v.kind == VclKind::ErrVcl {
                    errvcls += 1;
                }
            }
        }
        eprintln!("tier {tier}: {files} files, {vcls} VCLs written ({errvcls} -errvcl)");
    }
    fs::write(out_dir.join("manifest.tsv"), manifest).map_err(|e| format!("manifest: {e}"))?;
    if failures > 0 {
        return Err(format!("{failures} case(s) could not be extracted"));
    }
    Ok(())
}

/// Backslash-escapes a field so it stays on one TSV line (awk's `-v`
/// undoes exactly this).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}
