//! Regular expressions (Varnish's `vre`): PCRE2 compiled once at load with
//! the JIT, and `regsub`/`regsuball` with `\0`..`\9` back-references.

use pcre2::bytes::{Captures, Regex, RegexBuilder};

/// Compiles a VCL regex literal.
pub fn compile(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new()
        .jit_if_available(true)
        .build(pattern)
        .map_err(|e| format!("regex \"{pattern}\": {e}"))
}

fn expand(caps: &Captures<'_>, repl: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < repl.len() {
        let c = repl[i];
        if c != b'\\' || i + 1 == repl.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let n = repl[i + 1];
        if n.is_ascii_digit() {
            if let Some(m) = caps.get(usize::from(n - b'0')) {
                out.extend_from_slice(m.as_bytes());
            }
        } else {
            out.push(n);
        }
        i += 2;
    }
}

/// `regsub` (first match) or `regsuball` (every match).
pub fn regsub(re: &Regex, all: bool, subject: &[u8], repl: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(subject.len());
    let mut last = 0;
    for caps in re.captures_iter(subject) {
        let caps = caps.map_err(|e| e.to_string())?;
        let Some(m) = caps.get(0) else { break };
        out.extend_from_slice(&subject[last..m.start()]);
        expand(&caps, repl, &mut out);
        last = m.end();
        if !all {
            break;
        }
    }
    out.extend_from_slice(&subject[last..]);
    Ok(out)
}
