//! VCL source → checker → code generator → wasmtime: compiled subroutines
//! run against the test host, and their effects are checked.

mod common;

use common::testhost::{run, State, Value};
use vcl_to_wasm::tir::HttpWhere;
use vcl_to_wasm::types::Action;
use vcl_to_wasm::{compile_source, vars, CompileOptions};

/// Compiles `body` after a version line and one backend.
fn compile(body: &str) -> Vec<u8> {
    let text = format!("vcl 4.1;\nbackend b {{ .host = \"127.0.0.1\"; }}\n{body}");
    match compile_source("t.vcl", &text, None, &CompileOptions::new()) {
        Ok(c) => c.wasm,
        Err(e) => panic!("does not compile:\n{body}\n{e}"),
    }
}

fn state_with_req(url: &str, headers: &[(&str, &str)]) -> State {
    let mut st = State::default();
    let (url_id, _) = vars::lookup("req.url", 41).expect("req.url");
    let (method_id, _) = vars::lookup("req.method", 41).expect("req.method");
    let (proto_id, _) = vars::lookup("req.proto", 41).expect("req.proto");
    st.vars.insert(url_id, Value::Str(Some(url.into())));
    st.vars.insert(method_id, Value::Str(Some("GET".into())));
    st.vars
        .insert(proto_id, Value::Str(Some("HTTP/1.1".into())));
    for (k, v) in headers {
        st.add_header(HttpWhere::Req, k, v);
    }
    st
}

fn req_url(st: &State) -> Option<String> {
    let (id, _) = vars::lookup("req.url", 41).expect("req.url");
    match st.vars.get(&id) {
        Some(Value::Str(s)) => s.clone(),
        _ => None,
    }
}

#[test]
fn builtin_vcl_recv_decides_like_varnish() {
    let wasm = compile("");
    let mut st = state_with_req("/", &[("Host", "example.com")]);
    assert_eq!(
        run(&wasm, "vcl_recv", &mut st).expect("run"),
        Some(Action::Hash)
    );
    let mut st = state_with_req("/", &[("Host", "example.com"), ("Cookie", "a=b")]);
    assert_eq!(
        run(&wasm, "vcl_recv", &mut st).expect("run"),
        Some(Action::Pass)
    );
    // HTTP/1.1 without Host: 400 from the builtin VCL.
    let mut st = state_with_req("/", &[]);
    let (esi, _) = vars::lookup("req.esi_level", 41).expect("esi_level");
    st.vars.insert(esi, Value::Int(0));
    assert_eq!(
        run(&wasm, "vcl_recv", &mut st).expect("run"),
        Some(Action::Synth)
    );
    assert_eq!(st.synth, Some((400, None)));
    // Host names are lowered.
    let mut st = state_with_req("/", &[("Host", "Example.COM")]);
    st.natives
        .insert("vcl.lower".into(), |args| match &args[0].value {
            Some(Value::Str(Some(s))) => Some(Value::Str(Some(s.to_lowercase()))),
            _ => None,
        });
    assert_eq!(
        run(&wasm, "vcl_recv", &mut st).expect("run"),
        Some(Action::Hash)
    );
    assert_eq!(st.header(HttpWhere::Req, "host"), Some("example.com"));
}

#[test]
fn builtin_vcl_hash_hashes_url_and_host() {
    let wasm = compile("");
    let mut st = state_with_req("/x", &[("Host", "h")]);
    assert_eq!(
        run(&wasm, "vcl_hash", &mut st).expect("run"),
        Some(Action::Lookup)
    );
    assert_eq!(st.hash, vec![Some("/x".to_string()), Some("h".to_string())]);
}

#[test]
fn header_edits_regsub_and_user_return() {
    let wasm = compile(
        r##"
sub vcl_recv {
    set req.http.X-A = "a" + 1 + "-" + 2.5 + "-" + 10s + "-" + true;
    set req.http.X-B = regsub(req.url, "^/([a-z]+)/(\d+)$", "\2:\1");
    set req.http.X-C = regsuball(req.url, "[0-9]", "#");
    set req.http.X-D = req.http.missing + "|" + req.http.X-A;
    set req.http.X-E = "e";
    set req.http.X-E += "f";
    unset req.http.Drop-Me;
    set req.url = "/rewritten" + req.url;
    if (req.http.X-B ~ "^12:") {
        return (pass);
    }
}
"##,
    );
    let mut st = state_with_req("/abc/12", &[("Host", "h"), ("Drop-Me", "x")]);
    assert_eq!(
        run(&wasm, "vcl_recv", &mut st).expect("run"),
        Some(Action::Pass)
    );
    assert_eq!(
        st.header(HttpWhere::Req, "x-a"),
        Some("a1-2.500-10.000-true")
    );
    assert_eq!(st.header(HttpWhere::Req, "X-B"), Some("12:abc"));
    assert_eq!(st.header(HttpWhere::Req, "X-C"), Some("/abc/##"));
    assert_eq!(
        st.header(HttpWhere::Req, "X-D"),
        Some("|a1-2.500-10.000-true")
    );
    assert_eq!(st.header(HttpWhere::Req, "X-E"), Some("ef"));
    assert_eq!(st.header(HttpWhere::Req, "Drop-Me"), None);
    assert_eq!(req_url(&st).as_deref(), Some("/rewritten/abc/12"));
}

#[test]
fn comparisons_and_null_rules() {
    let wasm = compile(
        r##"
sub vcl_recv {
    if (req.http.absent == "x") { set req.http.r1 = "eq"; } else { set req.http.r1 = "ne"; }
    if (req.http.absent != "x") { set req.http.r2 = "ne"; }
    if (req.http.absent ~ "^$") { set req.http.r3 = "null-matches-empty"; }
    if (!req.http.absent) { set req.http.r4 = "unset-is-false"; }
    if (req.url < "/b" && req.url >= "/a") { set req.http.r5 = "ordered"; }
    if (1 + 2 * 3 == 7 && 10 / 3 == 3 && -(2) < 0) { set req.http.r6 = "int"; }
    if (1.5 * 2 == 3.0 && 1m > 59s && 2s * 1.5 == 3s) { set req.http.r7 = "real"; }
    return (synth(200 + 1, "made " + req.http.r6));
}
"##,
    );
    let mut st = state_with_req("/a1", &[("Host", "h")]);
    assert_eq!(
        run(&wasm, "vcl_recv", &mut st).expect("run"),
        Some(Action::Synth)
    );
    assert_eq!(st.header(HttpWhere::Req, "r1"), Some("ne"));
    assert_eq!(st.header(HttpWhere::Req, "r2"), Some("ne"));
    assert_eq!(st.header(HttpWhere::Req, "r3"), Some("null-matches-empty"));
    assert_eq!(st.header(HttpWhere::Req, "r4"), Some("unset-is-false"));
    assert_eq!(st.header(HttpWhere::Req, "r5"), Some("ordered"));
    assert_eq!(st.header(HttpWhere::Req, "r6"), Some("int"));
    assert_eq!(st.header(HttpWhere::Req, "r7"), Some("real"));
    assert_eq!(st.synth, Some((201, Some("made int".into()))));
}

#[test]
fn acl_match_and_custom_subs() {
    let wasm = compile(
        r##"
acl inside { "10.0.0.0"/8; ! "10.1.0.0"/16; "::1"; }
sub classify {
    if (client.ip ~ inside) {
        set req.http.who = "inside";
        return (synth(403));
    }
    set req.http.who = "outside";
}
sub vcl_recv {
    call classify;
    set req.http.after = "reached";
}
"##,
    );
    let (cip, _) = vars::lookup("client.ip", 41).expect("client.ip");
    for (addr, who, action) in [
        ("10.2.3.4", "inside", Some(Action::Synth)),
        ("10.1.2.3", "outside", Some(Action::Hash)),
        ("::1", "inside", Some(Action::Synth)),
        ("192.0.2.1", "outside", Some(Action::Hash)),
    ] {
        let mut st = state_with_req("/", &[("Host", "h")]);
        let h = st.ip(addr);
        st.vars.insert(cip, Value::Handle(h));
        assert_eq!(
            run(&wasm, "vcl_recv", &mut st).expect("run"),
            action,
            "{addr}"
        );
        assert_eq!(st.header(HttpWhere::Req, "who"), Some(who), "{addr}");
        // A return in the called sub stops the caller too.
        let reached = st.header(HttpWhere::Req, "after").is_some();
        assert_eq!(reached, action == Some(Action::Hash), "{addr}");
    }
}

#[test]
fn backend_response_ttl_arithmetic() {
    let wasm = compile(
        r##"
sub vcl_backend_response {
    set beresp.ttl = 10s;
    set beresp.ttl *= 3;
    set beresp.grace = beresp.ttl + 1m;
    if (beresp.http.Cache-Control ~ "(?i)private") {
        set beresp.uncacheable = true;
        return (pass(5s));
    }
    return (deliver);
}
"##,
    );
    let (ttl, _) = vars::lookup("beresp.ttl", 41).expect("ttl");
    let (grace, _) = vars::lookup("beresp.grace", 41).expect("grace");
    let (unc, _) = vars::lookup("beresp.uncacheable", 41).expect("uncacheable");
    let mut st = State::default();
    st.add_header(HttpWhere::Beresp, "Cache-Control", "PRIVATE, max-age=3");
    assert_eq!(
        run(&wasm, "vcl_backend_response", &mut st).expect("run"),
        Some(Action::Pass)
    );
    assert_eq!(st.vars.get(&ttl), Some(&Value::Real(30.0)));
    assert_eq!(st.vars.get(&grace), Some(&Value::Real(90.0)));
    assert_eq!(st.vars.get(&unc), Some(&Value::Bool(true)));
    assert_eq!(st.pass_ttl, Some(5.0));
}

#[test]
fn workspace_overflow_is_a_named_error() {
    let wasm = compile(
        r##"
sub vcl_recv {
    set req.http.a = req.url + req.url + req.url + req.url;
    set req.http.b = req.http.a + req.http.a + req.http.a + req.http.a;
    set req.http.c = req.http.b + req.http.b + req.http.b + req.http.b;
}
"##,
    );
    let big = format!("/{}", "x".repeat(2000));
    let mut st = state_with_req(&big, &[("Host", "h")]);
    st.workspace = 8 * 1024;
    let r = run(&wasm, "vcl_recv", &mut st);
    assert!(
        matches!(r, Err(common::testhost::RunError::WsOverflow)),
        "{r:?}"
    );
}

#[test]
fn numeric_plus_is_arithmetic_even_in_a_header() {
    // r02084: REAL + INT is REAL; a string operand makes it a concatenation.
    let wasm = compile(
        "sub vcl_recv {\n\
         set req.http.add = 10.0 + 3;\n\
         set req.http.int = 1 + 2;\n\
         set req.http.cat = 1 + \"x\";\n\
         set req.http.str = \"a\" + 1;\n\
         }",
    );
    let mut st = state_with_req("/", &[("Host", "h")]);
    run(&wasm, "vcl_recv", &mut st).expect("run");
    assert_eq!(st.header(HttpWhere::Req, "add"), Some("13.000"));
    assert_eq!(st.header(HttpWhere::Req, "int"), Some("3"));
    assert_eq!(st.header(HttpWhere::Req, "cat"), Some("1x"));
    assert_eq!(st.header(HttpWhere::Req, "str"), Some("a1"));
}

/// Trace points (Varnish's `VPI_count`): one at the start of every
/// compound and one after every `if` statement, numbered in parse order
/// (the builtin VCL's after the program's), each at the token that
/// follows; passed only while the host turns tracing on.
#[test]
fn trace_points_as_varnish_counts_them() {
    let wasm = compile("sub vcl_recv {\n\tif (req.http.x) {\n\t\treturn (pass);\n\t}\n}\n");
    let mut st = state_with_req("/", &[("Host", "h"), ("x", "1")]);
    st.trace = true;
    assert_eq!(
        run(&wasm, "vcl_recv", &mut st).expect("run"),
        Some(Action::Pass)
    );
    assert_eq!(st.traces, vec![1, 2]);
    assert_eq!(st.meta.traces[1], [0, 4, 9]);
    assert_eq!(st.meta.traces[2], [0, 5, 17]);
    assert_eq!(st.meta.traces[3], [0, 7, 1]);
    assert_eq!(st.meta.traces[4][0], 1, "the builtin VCL is source 1");

    let mut st = state_with_req("/", &[("Host", "h")]);
    st.trace = true;
    run(&wasm, "vcl_recv", &mut st).expect("run");
    assert_eq!(st.traces[..3], [1, 3, 4]);

    // Off: no calls.
    let mut st = state_with_req("/", &[("Host", "h")]);
    run(&wasm, "vcl_recv", &mut st).expect("run");
    assert!(st.traces.is_empty());
}
