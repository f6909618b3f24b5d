//! Every Varnish 7.1.1 test case must tokenize, classify, and have its
//! nested specs and VCLs extracted without error.
//!
//! The cases live outside the repository (`../shared/conformance`); when the
//! directory is absent the tests print a note and pass.

use std::fs;
use std::path::{Path, PathBuf};

use vtc::{extract_vcls, parse_script, parse_spec, ExtractEnv, TopKind};

fn corpus_dir() -> Option<PathBuf> {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/varnish-7.1.1/tests");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!(
            "note: {} not found; skipping the conformance corpus test",
            dir.display()
        );
        None
    }
}

fn vtc_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("corpus directory is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "vtc"))
        .collect();
    files.sort();
    files
}

#[test]
fn parse_every_vtc_file() {
    let Some(dir) = corpus_dir() else { return };
    let files = vtc_files(&dir);
    assert!(
        files.len() > 600,
        "expected the whole corpus, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    let mut specs = 0usize;
    for f in &files {
        let src = fs::read(f).expect("test file is readable");
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let script = match parse_script(&src) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        if script.description().is_none() {
            failures.push(format!("{name}: no varnishtest description"));
        }
        // Nested client/server specs must tokenize too (they are the bulk
        // of every test).
        for c in &script.commands {
            if matches!(c.kind, TopKind::Server | TopKind::Client | TopKind::Loop) {
                if let Some(spec) = c.spec() {
                    specs += 1;
                    if let Err(e) = parse_spec(spec) {
                        failures.push(format!("{name}: spec of line {}: {e}", c.line()));
                    }
                }
            }
        }
        if let Err(e) = extract_vcls(&script, &ExtractEnv::default()) {
            failures.push(format!("{name}: VCL extraction: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("parsed {} files, {specs} nested specs", files.len());
}

#[test]
fn known_shapes() {
    let Some(dir) = corpus_dir() else { return };
    // b00001 is the canonical first test: server, varnish, client.
    let src = fs::read(dir.join("b00001.vtc")).expect("b00001.vtc is readable");
    let s = parse_script(&src).expect("b00001 parses");
    assert!(s.commands.iter().any(|c| c.kind == TopKind::Server));
    assert!(s.commands.iter().any(|c| c.kind == TopKind::Varnish));
    let vcls = extract_vcls(&s, &ExtractEnv::default()).expect("b00001 extracts");
    assert!(!vcls.is_empty());
    assert!(vcls[0]
        .source
        .starts_with("vcl 4.1;\nbackend s1 { .host = \"127.0.0.1\"; .port = \""));
}
