//! Every VCL in Varnish's own test cases (tier A and B accepted ones, and
//! every `-errvcl` case) checked against varnishd 7.1.1's verdict, recorded
//! in `tests/conformance-vcl/verdicts.tsv` (see `tests/tools/`).
//!
//! - A VCL varnishd accepts must compile, unless it imports a VMOD Shellac
//!   does not have (`debug`, `vtc`: Varnish's own test VMODs).
//! - An `-errvcl` VCL that varnishd refuses must be refused; the test also
//!   counts how often our message contains the text the test expects.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use vcl_to_wasm::{compile_source, CompileOptions};
use vtc::{extract_vcls, parse_script, ExtractEnv};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tests_dir() -> Option<PathBuf> {
    let d = repo().join("../shared/conformance/varnish-7.1.1/tests");
    d.is_dir().then_some(d)
}

/// Cases where Shellac deliberately differs from varnishd's compiler.
const KNOWN_DIFFERENCES: &[(&str, usize, &str)] = &[
    (
        "v00022.vtc",
        1,
        "varnishd resolves backend names with DNS while compiling; Shellac resolves them when the VCL is loaded",
    ),
    (
        "m00053.vtc",
        3,
        "`call` of a SUB that the `debug` test VMOD returns: Shellac has no `debug` VMOD",
    ),
    (
        "m00054.vtc",
        2,
        "`call` of a SUB that the `debug` test VMOD returns: Shellac has no `debug` VMOD",
    ),
    (
        "m00008.vtc",
        7,
        "imports std from a file of Varnish's build tree (`feature topbuild`): std is built into Shellac",
    ),
];

struct Row {
    kind: String,
    tier: String,
    varnishd: String,
    note: String,
}

#[test]
fn conformance_vcls_match_varnishd() {
    let Some(tests) = tests_dir() else {
        eprintln!("conformance cases not found next to the repository; skipping");
        return;
    };
    let tsv = std::fs::read_to_string(repo().join("tests/conformance-vcl/verdicts.tsv"))
        .expect("verdicts.tsv");
    let mut rows: HashMap<(String, usize), Row> = HashMap::new();
    for line in tsv.lines().skip(1) {
        let c: Vec<&str> = line.split('\t').collect();
        if c.len() < 6 {
            continue;
        }
        let n: usize = c[1].parse().expect("index");
        rows.insert(
            (c[0].to_string(), n),
            Row {
                kind: c[2].to_string(),
                tier: c[3].to_string(),
                varnishd: c[5].to_string(),
                note: c.get(8).unwrap_or(&"").to_string(),
            },
        );
    }
    let mut files: Vec<&String> = rows.keys().map(|(f, _)| f).collect();
    files.sort();
    files.dedup();

    let env = ExtractEnv::new("/tmp/vtc.shellac", &tests.to_string_lossy());
    let (mut acc_ok, mut acc_total, mut acc_vmod, mut acc_inline_c) = (0, 0, 0, 0);
    let (mut rej_ok, mut rej_total, mut rej_msg) = (0, 0, 0);
    let mut per_tier: HashMap<String, (u32, u32)> = HashMap::new();
    let mut failures = Vec::new();
    for file in files {
        let src = std::fs::read(tests.join(file)).expect("vtc file");
        let script = parse_script(&src).expect("parse vtc");
        let vcls = extract_vcls(&script, &env).expect("extract");
        for (i, v) in vcls.iter().enumerate() {
            let Some(row) = rows.get(&(file.clone(), i + 1)) else {
                continue;
            };
            let mut opts = CompileOptions::new();
            for (k, val) in &v.params {
                let on = matches!(val.as_str(), "on" | "true" | "1");
                match k.as_str() {
                    "vcc_err_unref" => opts.err_unref = on,
                    "vcc_allow_inline_c" => opts.allow_inline_c = on,
                    "vcc_unsafe_path" => opts.unsafe_path = on,
                    _ => {}
                }
            }
            let result = compile_source("<vcl.inline>", &v.source, None, &opts);
            let what = format!("{file} #{} (line {})", i + 1, v.line);
            if KNOWN_DIFFERENCES
                .iter()
                .any(|(f, n, _)| f == file && *n == i + 1)
            {
                continue;
            }
            if row.kind == "errvcl" {
                if row.varnishd != "reject" {
                    continue; // refused only when loaded, not by the compiler
                }
                rej_total += 1;
                match &result {
                    Err(e) => {
                        rej_ok += 1;
                        let text = e.to_string();
                        if v.error_substring
                            .as_ref()
                            .is_some_and(|s| text.contains(s.as_str()))
                        {
                            rej_msg += 1;
                        } else if std::env::var_os("SHELLAC_SHOW_MESSAGES").is_some() {
                            let ours = text.lines().next().unwrap_or("");
                            eprintln!(
                                "MSG {what}\n  want: {:?}\n  got:  {ours}",
                                v.error_substring
                            );
                        }
                    }
                    Ok(_) => failures.push(format!(
                        "{what}: compiled, but varnishd refuses it ({:?})",
                        v.error_substring
                    )),
                }
            } else if row.varnishd == "accept" {
                acc_total += 1;
                let t = per_tier.entry(row.tier.clone()).or_default();
                t.1 += 1;
                match &result {
                    Ok(_) => {
                        acc_ok += 1;
                        t.0 += 1;
                    }
                    Err(e) => {
                        let first = e.0.first().map(|d| d.message.clone()).unwrap_or_default();
                        if first.starts_with("Could not find VMOD")
                            && (row.note.contains("vmod")
                                || first.contains("debug")
                                || first.contains("vtc"))
                        {
                            acc_vmod += 1;
                        } else if first.starts_with("Inline-C") {
                            // By design: no C in a WebAssembly sandbox.
                            acc_inline_c += 1;
                        } else {
                            failures.push(format!("{what}: refused, varnishd accepts it:\n{e}"));
                        }
                    }
                }
            }
        }
    }
    let mut tiers: Vec<_> = per_tier.into_iter().collect();
    tiers.sort();
    println!(
        "conformance VCL: {acc_ok}/{acc_total} accepted VCLs compile ({acc_vmod} need a test VMOD, {acc_inline_c} inline C); \
         {rej_ok}/{rej_total} -errvcl VCLs refused ({rej_msg} with the expected message); per tier {tiers:?}"
    );
    for f in &failures {
        eprintln!("{f}\n");
    }
    assert!(
        failures.is_empty(),
        "{} VCLs disagree with varnishd",
        failures.len()
    );
}
