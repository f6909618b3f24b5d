//! Regular expressions (Varnish's `vre`): PCRE2 compiled once at load with
//! the JIT, and `regsub`/`regsuball` with `\0`..`\9` back-references.

use pcre2::bytes::{Captures, Regex, RegexBuilder};
use std::sync::atomic::{AtomicU32, Ordering};

/// `pcre2_match_limit` and `pcre2_depth_limit` (Varnish's defaults until
/// configured).
static MATCH_LIMIT: AtomicU32 = AtomicU32::new(10_000);
static DEPTH_LIMIT: AtomicU32 = AtomicU32::new(20);

/// Applies `pcre2_match_limit` and `pcre2_depth_limit` to the regexes
/// compiled from now on (a VCL's at its load, a ban's when it is added).
pub fn configure(p: &crate::mgt_param::Params) {
    let get = |n: &str| p.num(n).clamp(1.0, f64::from(u32::MAX)) as u32;
    MATCH_LIMIT.store(get("pcre2_match_limit"), Ordering::Relaxed);
    DEPTH_LIMIT.store(get("pcre2_depth_limit"), Ordering::Relaxed);
}

/// Compiles a VCL regex literal under Varnish's limits on matching:
/// `pcre2_match_limit` bounds the steps of one match (the CPU time it
/// can soak up), `pcre2_depth_limit` its backtracking depth (ignored by
/// the JIT, as in Varnish). A match over a limit fails with an error (a
/// `VCL_Error` and a failed request). The `pcre2` crate hides the match
/// context Varnish sets them in, so they go into the pattern's start
/// (`(*LIMIT_MATCH=N)`), where PCRE2 lets a pattern lower its own.
pub fn compile(pattern: &str) -> Result<Regex, String> {
    let limited = format!(
        "(*LIMIT_MATCH={})(*LIMIT_DEPTH={}){pattern}",
        MATCH_LIMIT.load(Ordering::Relaxed),
        DEPTH_LIMIT.load(Ordering::Relaxed)
    );
    RegexBuilder::new()
        .jit_if_available(true)
        .build(&limited)
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
