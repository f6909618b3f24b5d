//! The checker's verdicts and messages on small VCL snippets, compared with
//! what varnishd 7.1 says about the same text (found with `varnishd -C`).

use vcl_to_wasm::{check_source, CompileOptions};

const BACKEND: &str = "backend b { .host = \"127.0.0.1\"; }\n";

/// Checks `body` (after a `vcl 4.1;` line and one backend) and returns the
/// first error's message, or `None` when it is accepted.
fn verdict(body: &str) -> Option<String> {
    let text = format!("vcl 4.1;\n{BACKEND}{body}");
    match check_source("t.vcl", &text, None, &CompileOptions::new()) {
        Ok(_) => None,
        Err(e) => Some(e.0[0].to_string()),
    }
}

fn accepts(body: &str) {
    if let Some(e) = verdict(body) {
        panic!("refused:\n{body}\n{e}");
    }
}

fn refuses(body: &str, message: &str) {
    match verdict(body) {
        None => panic!("accepted but should be refused with {message:?}:\n{body}"),
        Some(e) => assert!(e.contains(message), "expected {message:?} in:\n{e}"),
    }
}

#[test]
fn expressions_typecheck_like_varnishd() {
    accepts("sub vcl_recv { if (req.restarts) {} if (req.url) {} if (b) {} }");
    accepts("sub vcl_recv { set req.http.x = 1 + \"a\"; set req.http.y = req.http.x + 1; }");
    accepts("sub vcl_recv { set req.http.x = -1; set req.ttl = -1s; set req.http.z = 1 m; }");
    accepts("sub vcl_recv { if (client.ip == \"1.2.3.4\" && req.url < \"b\" && b == b) {} }");
    accepts("sub vcl_recv { if (now - now > 1s && 2s * 2 > 1s && 1 + 1.5 > 2.0) {} }");
    refuses(
        "sub vcl_recv { if (client.ip) {} }",
        "Expression has type IP, expected BOOL",
    );
    refuses(
        "sub vcl_recv { if (2s + 1) {} }",
        "DURATION + INT not possible.",
    );
    refuses(
        "sub vcl_recv { if (2 * 2s) {} }",
        "INT * DURATION not possible.",
    );
    refuses(
        "sub vcl_recv { if (1 + \"a\") {} }",
        "INT + STRING not possible.",
    );
    refuses(
        "sub vcl_recv { if (req.restarts == 1.0) {} }",
        "Comparison of different types: INT '==' REAL",
    );
    refuses(
        "sub vcl_recv { set req.http.y = req.url - 1; }",
        "STRING - INT not possible.",
    );
    refuses(
        "sub vcl_recv { if (req.http.x ~ req.url) {} }",
        "expected REGEX",
    );
    refuses(
        "sub vcl_recv { set req.http.x = 1234567890123456; }",
        "Too many digits for integer.",
    );
    refuses(
        "sub vcl_recv { set req.http.b = 1 KB; }",
        "Unknown duration unit 'KB'",
    );
    refuses(
        "sub vcl_recv { if (req.url ~ \"(\") {} }",
        "Regexp compilation error",
    );
    refuses(
        "sub vcl_recv { set req.http.x = foo; }",
        "Symbol not found: 'foo'",
    );
    refuses(
        "sub vcl_recv { set req.http.x = req.url.foo(); }",
        "Unknown property 'foo' for type STRINGS",
    );
    accepts("sub vcl_recv { set req.http.x = req.url.upper() + (req.url + \"b\").lower(); }");
}

#[test]
fn variables_are_checked_per_subroutine() {
    refuses(
        "sub vcl_recv { set req.http.x = beresp.ttl; }",
        "Not available in subroutine 'vcl_recv'.",
    );
    refuses(
        "sub foo { set req.http.x = beresp.ttl; }\nsub vcl_recv { call foo; }",
        "Not available from subroutine 'vcl_recv'.",
    );
    refuses(
        "sub vcl_recv { set client.ip = \"1\"; }",
        "Variable is read only.",
    );
    refuses(
        "sub vcl_recv { unset req.url; }",
        "Variable cannot be unset.",
    );
    refuses(
        "sub vcl_recv { set beresp.ttl = 1s; }",
        "in subroutine 'vcl_recv'.",
    );
    accepts("sub vcl_backend_response { set beresp.ttl = 1s; unset beresp.http.Set-Cookie; }");
}

#[test]
fn returns_are_checked_per_subroutine() {
    refuses(
        "sub vcl_recv { return (deliver); }",
        "Invalid return \"deliver\"",
    );
    refuses(
        "sub vcl_recv { return (miss); }",
        "Expected return action name.",
    );
    refuses("sub vcl_recv { return; }", "Expected '(' got ';'");
    refuses("sub vcl_recv { return (synth); }", "Missing argument.");
    refuses(
        "sub vcl_recv { return (hash(1)); }",
        "Arguments not allowed.",
    );
    accepts("sub vcl_recv { return (synth(404, \"x\")); }");
    accepts("sub vcl_backend_response { return (pass(10s)); }");
}

#[test]
fn declarations_and_references() {
    refuses(
        "backend c { .host = \"127.0.0.1\"; }",
        "Unused backend c, defined:",
    );
    refuses("acl a { \"1.2.3.4\"; }", "Unused acl a, defined:");
    refuses("acl b { \"1.2.3.4\"; }", "Name 'b' already defined.");
    refuses(
        "sub vcl_recv { call nope; }",
        "Undefined sub nope, first reference:",
    );
    refuses(
        "sub foo { call bar; }\nsub bar { call foo; }\nsub vcl_recv { call foo; }",
        "Subroutine recurses on",
    );
    refuses(
        "sub foo { }\nsub foo {}\nsub vcl_recv { call foo; }",
        "Subroutine 'foo' redefined",
    );
    refuses(
        "sub vcl_foo { }",
        "The names 'vcl_*' are reserved for subroutines.",
    );
    refuses("foo bar;", "Expected one of");
    accepts("sub vcl_req_cookie { set req.http.x = \"1\"; }");
    accepts("sub vcl_recv { if (req.url) { } elif (req.url) { } elsif (req.url) {} elseif (req.url) {} else if (req.url) {} }");
    accepts("sub vcl_recv { set req.url = \"a\"; }\nsub vcl_recv { set req.url = \"b\"; }");
}

#[test]
fn version_line_is_required() {
    let r = check_source("t.vcl", BACKEND, None, &CompileOptions::new());
    let e = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("VCL version declaration missing"), "{e}");
    let r = check_source(
        "t.vcl",
        &format!("vcl 4.2;\n{BACKEND}"),
        None,
        &CompileOptions::new(),
    );
    let e = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("VCL version 4.2 not supported."), "{e}");
}

#[test]
fn errors_point_at_file_line_and_column() {
    let text = format!("vcl 4.1;\n{BACKEND}sub vcl_recv {{\n\tset req.http.x = foo;\n}}\n");
    let e = check_source("/tmp/c.vcl", &text, None, &CompileOptions::new())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    // varnishd: ('/tmp/c.vcl' Line 4 Pos 26), tabs counting to the next stop of 8.
    assert!(e.contains("('/tmp/c.vcl' Line 4 Pos 26)"), "{e}");
    assert!(e.contains("-------------------------###-"), "{e}");
}

#[test]
fn hostile_nesting_is_an_error_not_a_crash() {
    let deep = format!(
        "sub vcl_recv {{ if ({}req.url{}) {{}} }}",
        "(".repeat(100_000),
        ")".repeat(100_000)
    );
    assert!(verdict(&deep).is_some());
    let deep_ifs = format!(
        "sub vcl_recv {{ {} }}",
        "if (req.url) {".repeat(50_000) + &"}".repeat(50_000)
    );
    assert!(verdict(&deep_ifs).is_some());
    let not = format!(
        "sub vcl_recv {{ if ({}req.url) {{}} }}",
        "!".repeat(100_000)
    );
    assert!(verdict(&not).is_some());
    let neg = format!(
        "sub vcl_recv {{ set req.http.x = {}1; }}",
        "-".repeat(100_000)
    );
    assert!(verdict(&neg).is_some());
    // Long flat chains are fine: generated configs have them.
    let chain = vec!["req.url == \"a\""; 20_000].join(" || ");
    accepts(&format!("sub vcl_recv {{ if ({chain}) {{}} }}"));
    let concat = vec!["req.url"; 20_000].join(" + ");
    accepts(&format!("sub vcl_recv {{ set req.http.x = {concat}; }}"));
}

#[test]
fn quoted_header_names() {
    accepts("sub vcl_recv { set req.http.\"a.b\" = req.http.\"xy\"; unset req.http.\"c.d\"; }");
    refuses(
        "sub vcl_recv { set req.http.\"a.b\" = req.http.\"x:y\"; }",
        "Invalid character ':' in header name.",
    );
    let text = format!("vcl 4.0;\n{BACKEND}sub vcl_recv {{ set req.http.\"a.b\" = \"1\"; }}\n");
    let e = check_source("t.vcl", &text, None, &CompileOptions::new())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("Quoted headers are available for VCL >= 4.1."),
        "{e}"
    );
}
