//! Real VCL written by others (`../shared/corpus/`), checked against
//! varnishd 7.1.1's verdict per file (MANIFEST.tsv). It lives with the host
//! because `import` finds the bundled VMOD components (`target/vmods`,
//! built by `scripts/build-wasm`) through the host's resolver, as
//! `shellac compile` does.
//!
//! - Every `accept` file that is not an include fragment compiles, unless it
//!   imports a VMOD Shellac does not have: then the error names that
//!   import.
//! - Every `reject` file is refused; the test reports whether the error is
//!   on the same line varnishd points at.
//! - Include fragments are compiled inside a minimal wrapper (a `vcl 4.1;`
//!   line, one backend, and the include), as a soft check for `accept` ones.
//!
//! Files include each other by their paths in their own repositories, so
//! the test lays every repository's files out again under a temporary
//! directory first. Configs that include from `/etc/varnish/` were checked
//! by varnishd with their repository installed there; the layout maps that
//! prefix to the repository's root.

use std::path::{Path, PathBuf};
use vcl_to_wasm::{compile_source, CompileOptions, VmodResolverRef};

fn corpus_dir() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    d.join("MANIFEST.tsv").is_file().then_some(d)
}

/// The bundled VMODs, as `shellac compile` finds them.
fn resolver() -> VmodResolverRef {
    let dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("vmods");
    if !dir.join("xkey.wasm").is_file() {
        eprintln!(
            "{}: no bundled VMODs (run scripts/build-wasm)",
            dir.display()
        );
    }
    VmodResolverRef(std::sync::Arc::new(shellac::cache_vmod::Resolver {
        vmod_path: dir.display().to_string(),
    }))
}

/// VMODs that exist for varnishd (varnish-modules) but not yet in Shellac.
fn missing_vmod(msg: &str) -> Option<String> {
    msg.strip_prefix("Could not find VMOD ")
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
}

/// `('file.vcl' Line 3 Pos 5)` → ("file.vcl", 3)
fn varnishd_location(err: &str) -> Option<(String, usize)> {
    let start = err.find("('")?;
    let rest = &err[start + 2..];
    let q = rest.find('\'')?;
    let file = rest[..q].to_string();
    let line = rest[q..].split("Line ").nth(1)?;
    let line: usize = line.split_whitespace().next()?.parse().ok()?;
    Some((file, line))
}

#[test]
fn corpus_matches_varnishd_verdicts() {
    let Some(dir) = corpus_dir() else {
        eprintln!("corpus not found next to the repository; skipping");
        return;
    };
    let manifest = std::fs::read_to_string(dir.join("MANIFEST.tsv")).expect("manifest");
    let tree = std::env::temp_dir().join(format!("shellac-corpus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tree);
    // Lay out every file at its path inside its repository.
    let mut laid_out = std::collections::HashMap::new();
    for row in manifest.lines().skip(1) {
        let cols: Vec<&str> = row.split('\t').collect();
        if cols.len() < 7 {
            continue;
        }
        let repo_key = cols[0].split("__").take(2).collect::<Vec<_>>().join("__");
        let root = tree.join(&repo_key);
        let dest = root.join(cols[2]);
        let bytes = std::fs::read(dir.join("vcl").join(cols[0])).expect("corpus file");
        let text = String::from_utf8_lossy(&bytes)
            .replace("\"/etc/varnish/", &format!("\"{}/", root.display()));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::write(&dest, text).expect("write");
        laid_out.insert(cols[0].to_string(), dest);
    }
    let resolver = resolver();
    let mut failures = Vec::new();
    let (mut compiled, mut total_accept, mut missing, mut refused, mut total_reject) =
        (0, 0, 0, 0, 0);
    let mut same_line = 0;
    let mut inline_c_refused = 0;
    let mut missing_names = std::collections::BTreeSet::new();
    let mut fragments_ok = 0;
    let mut fragments = 0;
    for row in manifest.lines().skip(1) {
        let cols: Vec<&str> = row.split('\t').collect();
        if cols.len() < 7 {
            continue;
        }
        let (file, kind, verdict) = (cols[0], cols[5], cols[6]);
        let expected_err = cols.get(7).copied().unwrap_or("");
        let path = laid_out[file].clone();
        // A rendered template and its raw form share one path: put this
        // file's own text there before compiling it.
        let own = std::fs::read(dir.join("vcl").join(file)).expect("corpus file");
        let root = tree.join(file.split("__").take(2).collect::<Vec<_>>().join("__"));
        let own = String::from_utf8_lossy(&own)
            .replace("\"/etc/varnish/", &format!("\"{}/", root.display()));
        std::fs::write(&path, &own).expect("write");
        let fragment = kind == "include-fragment";
        // Inline C cannot run in a WebAssembly sandbox; varnishd accepted
        // this one with vcc_allow_inline_c on.
        let inline_c = file.contains("@2016-08-07__resources__config__varnish-4__fos_custom_ttl");
        let mut opts = CompileOptions::new();
        opts.vmod_resolver = Some(resolver.clone());
        let (name, text) = if fragment {
            (
                "wrapper.vcl".to_string(),
                format!(
                    "vcl 4.1;\nimport std;\nbackend default {{ .host = \"127.0.0.1\"; }}\ninclude \"{}\";\n",
                    path.display()
                ),
            )
        } else {
            let bytes = std::fs::read(&path).expect("corpus file");
            (
                path.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        };
        if fragment && verdict == "accept" {
            // Fragments are written for a parent that uses their symbols.
            opts.err_unref = false;
        }
        let result = compile_source(&name, &text, path.parent(), &opts);
        match (verdict, fragment, &result) {
            ("accept", false, Ok(_)) => {
                total_accept += 1;
                compiled += 1;
            }
            ("accept", false, Err(e)) => {
                total_accept += 1;
                let msg = e.0.first().map(|d| d.message.clone()).unwrap_or_default();
                match missing_vmod(&msg) {
                    Some(v) if !matches!(v.as_str(), "std" | "directors") => {
                        // The error points at the import line.
                        let line = e.0.first().and_then(|d| d.span.as_ref()).and_then(|s| {
                            let l = s.line_col().0;
                            s.source
                                .text
                                .lines()
                                .nth(l.saturating_sub(1))
                                .map(str::to_string)
                        });
                        if !line.is_some_and(|l| l.contains("import")) {
                            failures.push(format!(
                                "{file}: missing VMOD {v} not reported at its import:\n{e}"
                            ));
                        }
                        missing += 1;
                        missing_names.insert(v);
                    }
                    _ if inline_c && msg.starts_with("Inline-C") => inline_c_refused += 1,
                    _ => failures.push(format!("{file}: refused but varnishd accepts:\n{e}")),
                }
            }
            ("accept", true, r) => {
                fragments += 1;
                if r.is_ok() {
                    fragments_ok += 1;
                } else if let Err(e) = r {
                    let msg = e.0.first().map(|d| d.message.clone()).unwrap_or_default();
                    if missing_vmod(&msg).is_some() {
                        fragments_ok += 1;
                    } else {
                        eprintln!("fragment {file} does not compile standalone:\n{e}");
                    }
                }
            }
            (_, _, Ok(_)) => {
                total_reject += 1;
                failures.push(format!(
                    "{file}: compiled but varnishd refuses it: {expected_err}"
                ));
            }
            (_, _, Err(e)) => {
                total_reject += 1;
                refused += 1;
                let ours = e.0.first().and_then(|d| d.span.as_ref()).map(|s| {
                    let name = Path::new(&s.source.name)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    (name, s.line_col().0)
                });
                let theirs = varnishd_location(expected_err);
                let theirs_base = theirs.as_ref().map(|(f, l)| {
                    (
                        Path::new(f)
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        *l,
                    )
                });
                let same = match (&ours, &theirs_base) {
                    (Some((of, ol)), Some((tf, tl))) => {
                        (tf.ends_with(of.as_str()) || of.ends_with(tf.as_str())) && ol == tl
                    }
                    _ => false,
                };
                if same {
                    same_line += 1;
                } else {
                    eprintln!("{file}: refused, varnishd said {expected_err:?}; we said:\n{e}");
                }
            }
        }
    }
    println!(
        "corpus: {compiled}/{total_accept} accepted files compile ({missing} need a VMOD Shellac lacks: {missing_names:?}); \
         {refused}/{total_reject} rejected files refused ({same_line} at varnishd's line); \
         {fragments_ok}/{fragments} accepted fragments compile standalone; \
         {inline_c_refused} refused for inline C"
    );
    let _ = std::fs::remove_dir_all(&tree);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
