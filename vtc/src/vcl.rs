//! Every VCL a .vtc file makes varnishd compile, in the exact text form
//! varnishtest sends, with plausible macro values.
//!
//! What varnishtest 7.1 sends (`vtc_varnish.c`), for `varnish vN …`:
//!
//! * `-vcl TEXT` and `-errvcl MSG TEXT`: `"vcl S;\n" + TEXT + "\n"`.
//! * `-vcl+backend TEXT`: `"vcl S;\n" + BACKENDS + "\n" + TEXT + "\n"`,
//!   where BACKENDS has one line per server declared *so far* in the file,
//!   in declaration order: `backend sN { .host = "ADDR"; .port = "PORT"; }`
//!   (or `backend sN { .path = "PATH"; }` for a server listening on a Unix
//!   socket). ADDR/PORT are what the server is bound to, i.e. empty strings
//!   for a server never `-start`ed yet.
//! * S is `4.1`, or what `-syntax` set earlier **on the same `varnish`
//!   command line** (each `varnish` command resets it to 4.1), printed with
//!   one decimal (`%.1f`).
//! * The `vcl S;` line is always prepended, even when TEXT starts with its
//!   own `vcl 4.0;` (VCC accepts a later `vcl` declaration that is not
//!   higher than the first one).
//! * TEXT is the braced token after macro expansion, so it usually starts
//!   with the newline that followed `{`.
//!
//! `-errvcl` expects the compile to fail with MSG somewhere in the CLI
//! answer. Additionally, `-cli/-cliok/-clierr/-cliexpect "vcl.inline NAME
//! \"VCL\" …"` loads VCL through the CLI verbatim (no prefix); only
//! `-cliok` tells us it must compile.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::VtcError;
use crate::macros::{split_args, Macros};
use crate::script::{Arg, Script, TopCommand, TopKind};
use crate::token::Token;

/// How a VCL got to varnishd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VclKind {
    /// `varnish vN -vcl {…}`.
    Vcl,
    /// `varnish vN -vcl+backend {…}`.
    VclBackend,
    /// `varnish vN -errvcl MSG {…}`.
    ErrVcl,
    /// `varnish vN -cli… "vcl.inline NAME \"…\""`.
    CliInline,
}

impl VclKind {
    /// Short name used in manifests: `vcl`, `vcl+backend`, `errvcl`, `cli`.
    pub fn as_str(self) -> &'static str {
        match self {
            VclKind::Vcl => "vcl",
            VclKind::VclBackend => "vcl+backend",
            VclKind::ErrVcl => "errvcl",
            VclKind::CliInline => "cli",
        }
    }
}

impl fmt::Display for VclKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the test expects the compiler to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expectation {
    /// Must compile (`-vcl`, `-vcl+backend`, `-cliok vcl.inline`).
    Accept,
    /// Must be rejected (`-errvcl`).
    Reject,
    /// The test does not say (`-cli`, `-clierr` — which may fail for the
    /// VCL name rather than the VCL — and `-cliexpect`).
    Unknown,
}

impl Expectation {
    /// `accept`, `reject` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Expectation::Accept => "accept",
            Expectation::Reject => "reject",
            Expectation::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One VCL a test makes varnishd compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedVcl {
    /// Line of the option (`-vcl+backend`, `-errvcl`, `-cliok` …).
    pub line: u32,
    /// The varnish instance (`v1`).
    pub instance: String,
    /// How it is loaded.
    pub kind: VclKind,
    /// What the test expects.
    pub expect: Expectation,
    /// For `-errvcl`: the text that must appear in the compiler's answer.
    pub error_substring: Option<String>,
    /// The complete VCL source as varnishd receives it.
    pub source: String,
    /// Run-time parameters set on the instance before this VCL, in the
    /// order set (`-arg "-p k=v"`, `-cliok "param.set k v"`; a later
    /// `param.reset k` removes one). Some decide what VCC accepts
    /// (`vcc_err_unref`, `vcc_allow_inline_c`, `vcc_unsafe_path`).
    pub params: Vec<(String, String)>,
}

/// Macro values and address plan used for the extraction.
///
/// varnishtest binds real sockets and knows real ports; extraction only has
/// to produce text varnishd accepts as it would in the real run, so any
/// consistent, valid values do.
#[derive(Debug, Clone)]
pub struct ExtractEnv {
    /// Global macros (`localhost`, `bad_backend`, `tmpdir`, …).
    pub macros: Macros,
    /// Address servers and varnish instances "listen" on.
    pub addr: String,
    /// Port of the first server; later ones count up.
    pub first_server_port: u16,
    /// Port of the first varnish instance; later ones count up.
    pub first_varnish_port: u16,
}

impl Default for ExtractEnv {
    fn default() -> ExtractEnv {
        ExtractEnv::new("/tmp/vtc.shellac", "/tmp/vtc.shellac/tests")
    }
}

impl ExtractEnv {
    /// An environment with varnishtest's global macros set to plausible
    /// values for a test run in `tmpdir` from test directory `testdir`.
    pub fn new(tmpdir: &str, testdir: &str) -> ExtractEnv {
        let mut m = Macros::new();
        m.define("localhost", "127.0.0.1");
        m.define("bad_backend", "127.0.0.1:9");
        m.define("bad_ip", "192.0.2.255");
        m.define("listen_addr", "127.0.0.1:0");
        m.define("tmpdir", tmpdir);
        m.define("testdir", testdir);
        m.define("pwd", testdir);
        m.define("topbuild", "/usr/src/varnish-cache");
        ExtractEnv {
            macros: m,
            addr: "127.0.0.1".into(),
            first_server_port: 40001,
            first_varnish_port: 50001,
        }
    }
}

/// A server as varnishtest tracks it for `-vcl+backend`.
#[derive(Debug, Clone)]
struct Server {
    name: String,
    listen: Option<String>,
    port: u16,
    started: bool,
}

impl Server {
    fn is_uds(&self) -> bool {
        self.listen.as_deref().is_some_and(|l| l.starts_with('/'))
    }

    /// Address and port once bound.
    fn bound(&self, default_addr: &str) -> (String, String) {
        if self.is_uds() {
            return ("0.0.0.0".into(), "0".into());
        }
        let Some(l) = self.listen.as_deref() else {
            return (default_addr.into(), self.port.to_string());
        };
        let (host, port) = match l.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (l, "0"),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = if host.parse::<std::net::IpAddr>().is_ok() {
            host.to_string()
        } else {
            default_addr.to_string()
        };
        let port = match port.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => self.port,
        };
        (host, port.to_string())
    }

    fn define_macros(&self, m: &mut Macros, default_addr: &str) {
        let (a, p) = self.bound(default_addr);
        let sock = match self.listen.as_deref() {
            Some(l) if self.is_uds() => l.to_string(),
            _ if a.contains(':') => format!("[{a}]:{p}"),
            _ => format!("{a}:{p}"),
        };
        m.define_instance(&self.name, "addr", a);
        m.define_instance(&self.name, "port", p);
        m.define_instance(&self.name, "sock", sock);
    }

    fn backend_decl(&self, default_addr: &str) -> String {
        match self.listen.as_deref() {
            Some(l) if self.is_uds() => format!("backend {} {{ .path = \"{}\"; }}\n", self.name, l),
            _ => {
                let (a, p) = if self.started {
                    self.bound(default_addr)
                } else {
                    (String::new(), String::new())
                };
                format!(
                    "backend {} {{ .host = \"{}\"; .port = \"{}\"; }}\n",
                    self.name, a, p
                )
            }
        }
    }
}

/// Every VCL `script` makes varnishd compile, in execution order.
///
/// Top-level commands are simulated as far as VCL text depends on them:
/// servers (declaration order, `-listen`, `-start`), `feature
/// ignore_unknown_macro`, and the `varnish` arguments. Macros of every
/// server, varnish, barrier and process instance named anywhere in the file
/// are defined up front, so only truly unknown macros fail.
pub fn extract_vcls(script: &Script, env: &ExtractEnv) -> Result<Vec<ExtractedVcl>, VtcError> {
    let mut macros = env.macros.clone();
    let mut ports: BTreeMap<String, u16> = BTreeMap::new();
    let mut next_s = env.first_server_port;
    let mut next_v = env.first_varnish_port;
    let mut next_b = env.first_server_port.wrapping_add(5000);
    let tmpdir = macros.get("tmpdir").unwrap_or("/tmp").to_string();
    for c in &script.commands {
        let Some(name) = c.instance_name() else {
            continue;
        };
        let name = name.into_owned();
        if ports.contains_key(&name) {
            continue;
        }
        match c.kind {
            TopKind::Server => {
                let s = Server {
                    name: name.clone(),
                    listen: None,
                    port: next_s,
                    started: true,
                };
                s.define_macros(&mut macros, &env.addr);
                ports.insert(name, next_s);
                next_s = next_s.wrapping_add(1);
            }
            TopKind::Varnish => {
                let p = next_v.to_string();
                macros.define_instance(&name, "addr", env.addr.clone());
                macros.define_instance(&name, "port", p.clone());
                macros.define_instance(&name, "sock", format!("{}:{p}", env.addr));
                // Listen addresses named a0, a1, … (one per `-a`).
                for k in 0..10 {
                    macros.define_instance(&name, &format!("a{k}_addr"), env.addr.clone());
                    macros.define_instance(&name, &format!("a{k}_port"), p.clone());
                    macros.define_instance(
                        &name,
                        &format!("a{k}_sock"),
                        format!("{}:{p}", env.addr),
                    );
                }
                macros.define_instance(&name, "name", format!("{tmpdir}/{name}"));
                macros.define_instance(&name, "pid", "4242");
                ports.insert(name, next_v);
                next_v = next_v.wrapping_add(1);
            }
            TopKind::Barrier => {
                macros.define_instance(&name, "sock", format!("{}:{next_b}", env.addr));
                ports.insert(name, next_b);
                next_b = next_b.wrapping_add(1);
            }
            TopKind::Process => {
                macros.define_instance(&name, "dir", format!("{tmpdir}/{name}"));
                macros.define_instance(&name, "out", format!("{tmpdir}/{name}/stdout"));
                macros.define_instance(&name, "err", format!("{tmpdir}/{name}/stderr"));
                macros.define_instance(&name, "pid", "4243");
                ports.insert(name, 0);
            }
            _ => {}
        }
    }

    let mut servers: Vec<Server> = Vec::new();
    let mut params: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut out = Vec::new();
    for c in &script.commands {
        match c.kind {
            TopKind::Feature if c.positionals().any(|t| t.is("ignore_unknown_macro")) => {
                macros.set_ignore_unknown(true);
            }
            TopKind::Server => simulate_server(c, &mut servers, &ports, &mut macros, env)?,
            TopKind::Varnish => {
                let instance = c.instance_name().unwrap_or_default().into_owned();
                let params = params.entry(instance.clone()).or_default();
                let mut syntax = 4.1f64;
                for a in &c.args {
                    let Arg::Option { name, values } = a else {
                        continue;
                    };
                    let opt = name.text();
                    let snapshot = params.clone();
                    let mut push = |kind, expect, err: Option<String>, source| {
                        out.push(ExtractedVcl {
                            line: name.line,
                            instance: instance.clone(),
                            kind,
                            expect,
                            error_substring: err,
                            source,
                            params: snapshot.clone(),
                        })
                    };
                    match (opt.as_ref(), values.as_slice()) {
                        ("-syntax", [v]) => syntax = strtod(&expand_text(v, &macros)?),
                        ("-arg", [v]) => {
                            let words = sh_words(&v.expand(&macros)?.text());
                            let mut it = words.iter();
                            while let Some(w) = it.next() {
                                let kv = match w.strip_prefix("-p") {
                                    Some("") => it.next().map(String::as_str),
                                    Some(rest) => Some(rest),
                                    None => None,
                                };
                                if let Some((k, v)) = kv.and_then(|kv| kv.split_once('=')) {
                                    set_param(params, k, Some(v));
                                }
                            }
                        }
                        ("-vcl", [v]) => {
                            let text = expand_text(v, &macros)?;
                            push(
                                VclKind::Vcl,
                                Expectation::Accept,
                                None,
                                format!("vcl {syntax:.1};\n{text}\n"),
                            );
                        }
                        ("-errvcl", [msg, v]) => {
                            let msg = expand_text(msg, &macros)?;
                            let text = expand_text(v, &macros)?;
                            push(
                                VclKind::ErrVcl,
                                Expectation::Reject,
                                Some(msg),
                                format!("vcl {syntax:.1};\n{text}\n"),
                            );
                        }
                        ("-vcl+backend", [v]) => {
                            let text = expand_text(v, &macros)?;
                            let decls: String =
                                servers.iter().map(|s| s.backend_decl(&env.addr)).collect();
                            push(
                                VclKind::VclBackend,
                                Expectation::Accept,
                                None,
                                format!("vcl {syntax:.1};\n{decls}\n{text}\n"),
                            );
                        }
                        ("-cli" | "-cliok" | "-clierr" | "-cliexpect", [.., cmd]) => {
                            let cmd = cmd.expand(&macros)?;
                            if opt == "-cli" || opt == "-cliok" {
                                let argv = split_args(&cmd.bytes, false).unwrap_or_default();
                                let argv: Vec<_> =
                                    argv.iter().map(|a| String::from_utf8_lossy(a)).collect();
                                match argv.as_slice() {
                                    [verb, k, v, ..] if verb == "param.set" => {
                                        set_param(params, k, Some(v));
                                    }
                                    [verb, k, ..] if verb == "param.reset" => {
                                        set_param(params, k, None);
                                    }
                                    _ => {}
                                }
                            }
                            if let Some(vcl) = cli_inline_vcl(&cmd.bytes) {
                                let expect = if opt == "-cliok" {
                                    Expectation::Accept
                                } else {
                                    Expectation::Unknown
                                };
                                push(VclKind::CliInline, expect, None, vcl);
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn simulate_server(
    c: &TopCommand,
    servers: &mut Vec<Server>,
    ports: &BTreeMap<String, u16>,
    macros: &mut Macros,
    env: &ExtractEnv,
) -> Result<(), VtcError> {
    let name = c.instance_name().unwrap_or_default().into_owned();
    let idx = match servers.iter().position(|s| s.name == name) {
        Some(i) => i,
        None => {
            servers.push(Server {
                port: ports.get(&name).copied().unwrap_or(env.first_server_port),
                name,
                listen: None,
                started: false,
            });
            servers.len() - 1
        }
    };
    for a in &c.args {
        let Arg::Option { name, values } = a else {
            continue;
        };
        let s = &mut servers[idx];
        match (name.text().as_ref(), values.as_slice()) {
            ("-listen", [v]) => s.listen = Some(expand_text(v, macros)?),
            ("-start" | "-dispatch", []) => {
                s.started = true;
                s.define_macros(macros, &env.addr);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Records `k=v` (or removes `k`), keeping the order of first setting.
fn set_param(params: &mut Vec<(String, String)>, k: &str, v: Option<&str>) {
    let pos = params.iter().position(|(n, _)| n == k);
    match (pos, v) {
        (Some(i), Some(v)) => params[i].1 = v.to_string(),
        (None, Some(v)) => params.push((k.to_string(), v.to_string())),
        (Some(i), None) => {
            params.remove(i);
        }
        (None, None) => {}
    }
}

/// Splits a `-arg` string into words as `/bin/sh` would (varnishtest
/// passes it to the shell): blanks separate, `'…'` is literal, `"…"` and
/// unquoted text honour backslashes. Good enough to find `-p k=v`.
fn sh_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    cur.push(q);
                }
            }
            '"' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                if !matches!(n, '"' | '\\' | '$' | '`') {
                                    cur.push('\\');
                                }
                                cur.push(n);
                            }
                        }
                        _ => cur.push(q),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            _ => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

fn expand_text(t: &Token, macros: &Macros) -> Result<String, VtcError> {
    let e = t.expand(macros)?;
    Ok(e.as_str()?.to_string())
}

/// The VCL of a `vcl.inline NAME "VCL" [STATE]` CLI command, if that is
/// what `cmd` is.
pub fn cli_inline_vcl(cmd: &[u8]) -> Option<String> {
    let argv = split_args(cmd, false).ok()?;
    match argv.as_slice() {
        [verb, _name, vcl, ..] if verb == b"vcl.inline" && vcl != b"<<" => {
            String::from_utf8(vcl.clone()).ok()
        }
        _ => None,
    }
}

/// C `strtod` on the longest numeric prefix (0.0 if none), as varnishtest
/// reads `-syntax`.
fn strtod(s: &str) -> f64 {
    let t = s.trim_start();
    let mut best = 0.0;
    for end in 1..=t.len() {
        if !t.is_char_boundary(end) {
            continue;
        }
        if let Ok(v) = t[..end].parse::<f64>() {
            best = v;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::parse_script;

    fn extract(src: &str) -> Vec<ExtractedVcl> {
        let s = parse_script(src.as_bytes()).unwrap();
        extract_vcls(&s, &ExtractEnv::default()).unwrap()
    }

    #[test]
    fn vcl_backend_text() {
        let v = extract(
            "varnishtest \"x\"\nserver s1 {\n rxreq\n} -start\nserver s2 -listen \"${tmpdir}/s2.sock\" {} -start\nserver s3 {}\n\
             varnish v1 -vcl+backend {\n\tsub vcl_recv { set req.http.p = \"${s1_port}\"; }\n} -start\n\
             server s4 {} -start\n",
        );
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind, VclKind::VclBackend);
        assert_eq!(v[0].line, 7);
        assert_eq!(
            v[0].source,
            "vcl 4.1;\n\
             backend s1 { .host = \"127.0.0.1\"; .port = \"40001\"; }\n\
             backend s2 { .path = \"/tmp/vtc.shellac/s2.sock\"; }\n\
             backend s3 { .host = \"\"; .port = \"\"; }\n\
             \n\n\tsub vcl_recv { set req.http.p = \"40001\"; }\n\n"
        );
    }

    #[test]
    fn syntax_and_errvcl() {
        let v = extract(
            "varnish v1 -syntax 4.0 -vcl {backend b none;} -errvcl {Found: 'x'} {x}\n\
             varnish v1 -vcl {backend b none;}\n\
             varnish v1 -cliok {vcl.inline t \"vcl 4.0; backend b { .host = \\\"${localhost}\\\";}\"}\n\
             varnish v1 -clierr 106 {vcl.inline a00/ \"vcl 4.0;\"} -cliok \"vcl.list\"\n",
        );
        assert_eq!(v.len(), 5);
        assert_eq!(v[0].source, "vcl 4.0;\nbackend b none;\n");
        assert_eq!(v[1].kind, VclKind::ErrVcl);
        assert_eq!(v[1].expect, Expectation::Reject);
        assert_eq!(v[1].error_substring.as_deref(), Some("Found: 'x'"));
        assert_eq!(v[1].source, "vcl 4.0;\nx\n");
        assert_eq!(v[2].source, "vcl 4.1;\nbackend b none;\n");
        assert_eq!(v[3].kind, VclKind::CliInline);
        assert_eq!(v[3].expect, Expectation::Accept);
        assert_eq!(v[3].source, "vcl 4.0; backend b { .host = \"127.0.0.1\";}");
        assert_eq!(v[4].expect, Expectation::Unknown);
    }

    #[test]
    fn params() {
        let v = extract(
            "varnish v1 -arg \"-p vcc_err_unref=false -pa=1 -p 'b=x y' -b x\" -vcl {x}\n\
             varnish v1 -cliok \"param.set vcc_allow_inline_c on\" -cliok \"param.reset a\" -vcl {y}\n\
             varnish v2 -vcl {z}\n",
        );
        let p = |i: usize| {
            v[i].params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(p(0), vec!["vcc_err_unref=false", "a=1", "b=x y"]);
        assert_eq!(
            p(1),
            vec!["vcc_err_unref=false", "b=x y", "vcc_allow_inline_c=on"]
        );
        assert!(p(2).is_empty());
        assert_eq!(
            sh_words(r#"a "b\"c" 'd\' e\ f"#),
            vec!["a", "b\"c", "d\\", "e f"]
        );
    }

    #[test]
    fn strtod_prefix() {
        assert_eq!(strtod("4.0"), 4.0);
        assert_eq!(strtod(" 4x"), 4.0);
        assert_eq!(strtod("x"), 0.0);
        assert_eq!(format!("{:.1}", strtod("4")), "4.0");
    }
}
