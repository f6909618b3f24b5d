//! The code generator's output runs: hand-built TIR programs compiled to
//! wasm and executed in the test host (tests/common/testhost.rs).

mod common;

use common::build::*;
use common::testhost::{run, RunError, Slot, State, Value};
use vcl_to_wasm::abi::{self, Tag};
use vcl_to_wasm::codegen;
use vcl_to_wasm::tir::*;
use vcl_to_wasm::types::{Action, Method, Type};

use HttpWhere::Req;

/// Compiles `p` and runs `sub`, panicking on anything but a return.
fn exec(p: &Program, sub: &str, st: &mut State) -> Option<Action> {
    let wasm = compile(p);
    match run(&wasm, sub, st) {
        Ok(a) => a,
        Err(e) => panic!("{sub} failed: {e:?}"),
    }
}

/// Runs `vcl_recv` of a program made of `body`.
fn recv_run(body: Vec<Stmt>, st: &mut State) -> Option<Action> {
    exec(&recv(body), "vcl_recv", st)
}

/// Evaluates STRING expressions into headers `r0`, `r1`, … and returns them.
fn strings(meta: Metadata, exprs: Vec<Expr>, st: &mut State) -> Vec<Option<String>> {
    let n = exprs.len();
    let body = exprs
        .into_iter()
        .enumerate()
        .map(|(i, e)| set_req(&format!("r{i}"), e))
        .collect();
    exec(
        &program_with(vec![method(Method::Recv, body)], meta),
        "vcl_recv",
        st,
    );
    (0..n)
        .map(|i| st.header(Req, &format!("r{i}")).map(str::to_string))
        .collect()
}

/// Evaluates BOOL expressions; each result is "true"/"false".
fn bools(meta: Metadata, exprs: Vec<Expr>, st: &mut State) -> Vec<bool> {
    strings(meta, exprs.into_iter().map(to_s).collect(), st)
        .into_iter()
        .map(|v| v.as_deref() == Some("true"))
        .collect()
}

fn some(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[test]
fn empty_program_validates_and_carries_metadata() {
    let mut meta = with_regexes(&["^/x"]);
    meta.vcl_version = 41;
    let p = program_with(vec![method(Method::Recv, vec![])], meta);
    let (wasm, meta) = codegen::generate(&p).expect("generate");
    let back = abi::read_metadata(&wasm).expect("metadata");
    assert_eq!(back.vcl_version, 41);
    assert_eq!(back.regexes, vec!["^/x".to_string()]);
    assert!(meta.natives.is_empty());
    let wat = codegen::to_wat(&wasm).expect("wat");
    assert!(wat.contains("(export \"vcl_recv\""), "{wat}");
    assert!(wat.contains("(import \"shellac\" \"header_get\""), "{wat}");
    let mut st = State::default();
    assert_eq!(run(&wasm, "vcl_recv", &mut st).ok(), Some(None));
}

#[test]
fn header_set_unset_append() {
    let mut st = State::default();
    st.set_header(Req, "X-Old", "gone");
    st.set_header(Req, "X-Append", "a");
    st.add_header(Req, "Dup", "1");
    st.add_header(Req, "dup", "2");
    st.set_header(Req, "In", "copied");
    let a = recv_run(
        vec![
            set_req("x-new", s("value")),
            set_req("X-Copy", req("in")),
            set_req("X-Null", req("missing")),
            unset_req("x-old"),
            add_req("x-append", s("b")),
            add_req("x-fresh", s("c")),
            set_req("DUP", s("3")),
            set_req("self", s("s")),
            set_req("self", concat(vec![req("self"), s("-"), req("SELF")])),
        ],
        &mut st,
    );
    assert_eq!(a, None);
    assert_eq!(st.header(Req, "X-New"), Some("value"));
    assert_eq!(st.header(Req, "x-copy"), Some("copied"));
    assert_eq!(st.header(Req, "x-null"), Some(""));
    assert_eq!(st.header(Req, "x-old"), None);
    assert_eq!(st.header(Req, "x-append"), Some("ab"));
    assert_eq!(st.header(Req, "x-fresh"), Some("c"));
    assert_eq!(st.headers_named(Req, "dup"), vec!["3"]);
    assert_eq!(st.header(Req, "self"), Some("s-s"));
}

#[test]
fn concatenation_with_null_parts() {
    let mut st = State::default();
    st.set_header(Req, "a", "A");
    st.set_header(Req, "empty", "");
    let out = strings(
        Metadata::default(),
        vec![
            concat(vec![s("x"), req("missing"), s("y")]),
            concat(vec![req("missing"), req("missing")]),
            concat(vec![req("missing")]),
            concat(vec![req("a"), req("missing"), req("a"), req("empty")]),
            concat(vec![s("n="), to_s(int(42)), s(" "), to_s(boolean(false))]),
            concat(vec![req("a"), concat(vec![s("1"), s("2")]), s("3")]),
            concat(vec![]),
        ],
        &mut st,
    );
    assert_eq!(
        out,
        vec![
            some("xy"),
            some(""),
            some(""),
            some("AA"),
            some("n=42 false"),
            some("A123"),
            some("")
        ]
    );
}

#[test]
fn string_conversions() {
    let mut st = State::default();
    let (i, r, d, b, t, bytes) = (1, 2, 3, 4, 5, 6);
    st.vars.insert(i, Value::Int(-1234567890123));
    st.vars.insert(r, Value::Real(1.5));
    st.vars.insert(d, Value::Real(10.0));
    st.vars.insert(b, Value::Bool(true));
    st.vars.insert(t, Value::Real(784111777.0));
    st.vars.insert(bytes, Value::Int(10240));
    st.vars.insert(7, Value::Int(i64::MIN));
    st.vars.insert(8, Value::Int(0));
    st.vars.insert(9, Value::Int(9));
    st.vars.insert(10, Value::Int(10));
    let ip = st.ip("192.0.2.1");
    st.vars.insert(11, Value::Handle(ip));
    let out = strings(
        Metadata::default(),
        vec![
            to_s(var(i, Type::Int)),
            to_s(var(r, Type::Real)),
            to_s(var(d, Type::Duration)),
            to_s(var(b, Type::Bool)),
            to_s(var(t, Type::Time)),
            to_s(var(bytes, Type::Bytes)),
            to_s(var(7, Type::Int)),
            to_s(var(8, Type::Int)),
            to_s(var(9, Type::Int)),
            to_s(var(10, Type::Int)),
            to_s(var(11, Type::Ip)),
            to_s(real(2.0)),
            to_s(dur(0.25)),
            to_s(int(-7)),
            to_s(e(Type::Time, ExprKind::Real(0.0))),
            to_s(not(var(b, Type::Bool))),
        ],
        &mut st,
    );
    assert_eq!(
        out,
        vec![
            some("-1234567890123"),
            some("1.500"),
            some("10.000"),
            some("true"),
            some("Sun, 06 Nov 1994 08:49:37 GMT"),
            some("10240"),
            some("-9223372036854775808"),
            some("0"),
            some("9"),
            some("10"),
            some("192.0.2.1"),
            some("2.000"),
            some("0.250"),
            some("-7"),
            some("Thu, 01 Jan 1970 00:00:00 GMT"),
            some("false"),
        ]
    );
}

#[test]
fn backend_values() {
    let meta = Metadata {
        backends: vec![
            BackendDef {
                name: "one".into(),
                ..BackendDef::default()
            },
            BackendDef {
                name: "two".into(),
                ..BackendDef::default()
            },
        ],
        ..Metadata::default()
    };
    let be = |id| e(Type::Backend, ExprKind::Backend(id));
    let mut st = State::default();
    let hint = 20;
    let p = program_with(
        vec![method(
            Method::Recv,
            vec![
                set_var(hint, SetOp::Assign, be(1)),
                set_req("name", to_s(var(hint, Type::Backend))),
                set_req("eq", to_s(cmp(CmpOp::Eq, var(hint, Type::Backend), be(1)))),
                set_req("ne", to_s(cmp(CmpOp::Ne, var(hint, Type::Backend), be(0)))),
                set_req("bool", to_s(to_bool(var(hint, Type::Backend)))),
                set_req("none", to_s(to_bool(e(Type::Backend, ExprKind::Null)))),
            ],
        )],
        meta,
    );
    exec(&p, "vcl_recv", &mut st);
    assert_eq!(
        st.vars.get(&hint),
        Some(&Value::Handle(abi::backend_handle(1)))
    );
    assert_eq!(st.header(Req, "name"), Some("two"));
    assert_eq!(st.header(Req, "eq"), Some("true"));
    assert_eq!(st.header(Req, "ne"), Some("true"));
    assert_eq!(st.header(Req, "bool"), Some("true"));
    assert_eq!(st.header(Req, "none"), Some("false"));
}

#[test]
fn string_comparisons_and_null_rule() {
    let mut st = State::default();
    st.set_header(Req, "a", "abc");
    st.set_header(Req, "a2", "abc");
    st.set_header(Req, "long1", "0123456789abcdefX");
    st.set_header(Req, "long2", "0123456789abcdefY");
    st.set_header(Req, "empty", "");
    use CmpOp::*;
    let null = || req("missing");
    let out = bools(
        Metadata::default(),
        vec![
            cmp(Eq, req("a"), req("a2")),
            cmp(Eq, req("a"), s("abc")),
            cmp(Ne, req("a"), s("abd")),
            cmp(Eq, req("a"), s("ab")),
            cmp(Eq, req("long1"), req("long2")),
            cmp(Lt, req("long1"), req("long2")),
            cmp(Gt, req("long1"), req("long2")),
            cmp(Le, req("a"), req("a2")),
            cmp(Lt, s("ab"), req("a")),
            cmp(Ge, s("b"), req("a")),
            cmp(Eq, req("empty"), s("")),
            // VRT_strcmp with a NULL operand returns 1.
            cmp(Eq, null(), null()),
            cmp(Ne, null(), null()),
            cmp(Eq, null(), s("")),
            cmp(Ne, req("a"), null()),
            cmp(Lt, null(), s("x")),
            cmp(Gt, null(), s("x")),
            cmp(Ge, s("x"), null()),
            cmp(Le, s("x"), null()),
        ],
        &mut st,
    );
    assert_eq!(
        out,
        vec![
            true, true, true, false, false, true, false, true, true, true, true, //
            false, true, false, true, false, true, true, false
        ]
    );
}

#[test]
fn numeric_comparisons() {
    use CmpOp::*;
    let mut st = State::default();
    st.vars.insert(1, Value::Int(5));
    st.vars.insert(2, Value::Real(2.5));
    st.vars.insert(3, Value::Real(120.0));
    let i = || var(1, Type::Int);
    let r = || var(2, Type::Real);
    let d = || var(3, Type::Duration);
    let out = bools(
        Metadata::default(),
        vec![
            cmp(Eq, i(), int(5)),
            cmp(Lt, i(), int(-5)),
            cmp(Ge, i(), int(5)),
            cmp(Gt, r(), real(2.25)),
            cmp(Le, r(), real(2.5)),
            cmp(Ne, r(), real(2.5)),
            cmp(Gt, d(), dur(60.0)),
            cmp(Eq, d(), dur(120.0)),
            cmp(Lt, d(), dur(119.999)),
            cmp(Eq, boolean(true), to_bool(i())),
            cmp(Ne, to_bool(int(0)), boolean(false)),
        ],
        &mut st,
    );
    assert_eq!(
        out,
        vec![true, false, true, true, true, false, true, true, false, true, false]
    );
}

#[test]
fn boolean_logic_short_circuits() {
    let mut st = State::default();
    st.natives
        .insert("test.tick".into(), |_| Some(Value::Bool(true)));
    let tick = || native("test", "tick", Type::Bool, vec![]);
    let out = bools(
        Metadata::default(),
        vec![
            and(boolean(false), tick()),
            or(boolean(true), tick()),
            and(boolean(true), tick()),
            or(boolean(false), not(tick())),
            to_bool(req("missing")),
            to_bool(s("")),
        ],
        &mut st,
    );
    assert_eq!(out, vec![false, true, true, false, false, true]);
    // Only the two right-hand sides that had to be evaluated ran.
    assert_eq!(st.native_calls.len(), 2);
}

#[test]
fn regex_match_and_negation() {
    let meta = with_regexes(&["^/static/", "^$", "(?i)^www\\."]);
    let mut st = State::default();
    st.set_header(Req, "url", "/static/x.png");
    st.set_header(Req, "host", "WWW.example.com");
    let out = bools(
        meta,
        vec![
            matches(req("url"), 0, false),
            matches(req("url"), 0, true),
            matches(req("host"), 0, false),
            matches(req("host"), 2, false),
            // A NULL subject matches as "".
            matches(req("missing"), 1, false),
            matches(req("missing"), 0, true),
        ],
        &mut st,
    );
    assert_eq!(out, vec![true, false, false, true, true, true]);
}

#[test]
fn regsub_and_regsuball() {
    let meta = with_regexes(&["b(c)", "^(\\w+)\\.(\\w+)$", "x", "^"]);
    let mut st = State::default();
    st.set_header(Req, "s", "abcabc");
    st.set_header(Req, "host", "www.example");
    let out = strings(
        meta,
        vec![
            regsub(false, req("s"), 0, "[\\1]"),
            regsub(true, req("s"), 0, "[\\1]"),
            regsub(true, req("s"), 0, "<\\0>"),
            regsub(false, req("host"), 1, "\\2.\\1"),
            regsub(false, req("s"), 2, "no match"),
            regsub(false, req("missing"), 3, "from-null"),
            regsub(false, req("s"), 0, "\\x\\\\"),
            regsub(true, req("s"), 0, ""),
        ],
        &mut st,
    );
    assert_eq!(
        out,
        vec![
            some("a[c]abc"),
            some("a[c]a[c]"),
            some("a<bc>a<bc>"),
            some("example.www"),
            some("abcabc"),
            some("from-null"),
            some("ax\\abc"),
            some("aa"),
        ]
    );
}

#[test]
fn acl_match() {
    let meta = Metadata {
        acls: vec![AclDef {
            name: "local".into(),
            entries: vec![
                AclEntry {
                    addr: "10.0.0.0".into(),
                    mask: Some(8),
                    ..AclEntry::default()
                },
                AclEntry {
                    negated: true,
                    addr: "10.1.0.0".into(),
                    mask: Some(16),
                    ..AclEntry::default()
                },
                AclEntry {
                    addr: "::1".into(),
                    ..AclEntry::default()
                },
            ],
            ..AclDef::default()
        }],
        ..Metadata::default()
    };
    let mut st = State::default();
    let ips = ["10.2.3.4", "10.1.2.3", "192.168.0.1", "::1"];
    for (i, ip) in ips.iter().enumerate() {
        let h = st.ip(ip);
        st.vars.insert(i as u32, Value::Handle(h));
    }
    let acl = |v: u32, negate| {
        e(
            Type::Bool,
            ExprKind::AclMatch {
                ip: Box::new(var(v, Type::Ip)),
                acl: 0,
                negate,
            },
        )
    };
    let ip_eq = cmp(CmpOp::Eq, var(0, Type::Ip), var(0, Type::Ip));
    let ip_ne = cmp(CmpOp::Ne, var(0, Type::Ip), var(1, Type::Ip));
    let out = bools(
        meta,
        vec![
            acl(0, false),
            acl(1, false),
            acl(2, false),
            acl(3, false),
            acl(2, true),
            ip_eq,
            ip_ne,
        ],
        &mut st,
    );
    assert_eq!(out, vec![true, false, false, true, true, true, true]);
}

#[test]
fn arithmetic() {
    use ArithOp::*;
    let mut st = State::default();
    st.vars.insert(1, Value::Int(7));
    st.vars.insert(2, Value::Real(1000.5));
    st.vars.insert(3, Value::Real(1000.0));
    st.vars.insert(4, Value::Int(i64::MIN));
    let i = || var(1, Type::Int);
    let t = |v| var(v, Type::Time);
    let out = strings(
        Metadata::default(),
        vec![
            to_s(arith(Type::Int, Add, i(), int(3))),
            to_s(arith(Type::Int, Sub, i(), int(10))),
            to_s(arith(Type::Int, Mul, i(), int(-6))),
            to_s(arith(Type::Int, Div, i(), int(2))),
            to_s(arith(Type::Int, Div, int(-7), int(2))),
            to_s(arith(Type::Int, Div, var(4, Type::Int), int(-1))),
            to_s(arith(Type::Duration, Sub, t(2), t(3))),
            to_s(arith(Type::Time, Add, t(3), dur(86400.0))),
            to_s(arith(Type::Duration, Mul, dur(10.0), real(1.5))),
            to_s(arith(Type::Real, Div, real(1.0), real(8.0))),
            to_s(e(Type::Int, ExprKind::Neg(Box::new(i())))),
            to_s(e(Type::Duration, ExprKind::Neg(Box::new(dur(2.0))))),
            to_s(arith(
                Type::Real,
                Add,
                e(Type::Real, ExprKind::IntToReal(Box::new(i()))),
                real(0.5),
            )),
        ],
        &mut st,
    );
    assert_eq!(
        out,
        vec![
            some("10"),
            some("-3"),
            some("-42"),
            some("3"),
            some("-3"),
            some("-9223372036854775808"),
            some("0.500"),
            some("Fri, 02 Jan 1970 00:16:40 GMT"),
            some("15.000"),
            some("0.125"),
            some("-7"),
            some("-2.000"),
            some("7.500"),
        ]
    );
}

#[test]
fn int_division_by_zero_fails_the_task() {
    let mut st = State::default();
    st.vars.insert(1, Value::Int(0));
    let p = program(vec![
        method(
            Method::Recv,
            vec![
                set_req("before", s("1")),
                Stmt::Call(1),
                set_req("after", s("1")),
            ],
        ),
        user(
            "divide",
            vec![set_req(
                "q",
                to_s(arith(Type::Int, ArithOp::Div, int(10), var(1, Type::Int))),
            )],
        ),
    ]);
    let a = exec(&p, "vcl_recv", &mut st);
    assert_eq!(a, Some(Action::Fail));
    assert_eq!(st.failed, vec!["INT division by zero".to_string()]);
    assert_eq!(st.header(Req, "before"), Some("1"));
    assert_eq!(st.header(Req, "q"), None);
    assert_eq!(st.header(Req, "after"), None);
}

#[test]
fn call_propagates_return() {
    let mut st = State::default();
    st.set_header(Req, "go", "yes");
    let p = program(vec![
        method(
            Method::Recv,
            vec![
                Stmt::Call(1),
                set_req("after-plain", s("1")),
                Stmt::Call(2),
                set_req("after-return", s("1")),
                ret(Action::Hash),
            ],
        ),
        user("plain", vec![set_req("in-plain", s("1"))]),
        user(
            "returns",
            vec![Stmt::Call(3), set_req("in-returns-after-call", s("1"))],
        ),
        user(
            "deep",
            vec![if_(
                to_bool(req("go")),
                vec![ret(Action::Pass), set_req("dead", s("1"))],
                vec![],
            )],
        ),
    ]);
    assert_eq!(exec(&p, "vcl_recv", &mut st), Some(Action::Pass));
    assert_eq!(st.header(Req, "in-plain"), Some("1"));
    assert_eq!(st.header(Req, "after-plain"), Some("1"));
    assert_eq!(st.header(Req, "in-returns-after-call"), None);
    assert_eq!(st.header(Req, "after-return"), None);

    let mut st = State::default();
    assert_eq!(exec(&p, "vcl_recv", &mut st), Some(Action::Hash));
    assert_eq!(st.header(Req, "in-returns-after-call"), Some("1"));
    assert_eq!(st.header(Req, "after-return"), Some("1"));
}

#[test]
fn if_else_chains() {
    let body = |v: &str| {
        let mut st = State::default();
        st.set_header(Req, "v", v);
        recv_run(
            vec![if_(
                cmp(CmpOp::Eq, req("v"), s("a")),
                vec![set_req("r", s("A"))],
                vec![if_(
                    cmp(CmpOp::Eq, req("v"), s("b")),
                    vec![set_req("r", s("B"))],
                    vec![set_req("r", s("other"))],
                )],
            )],
            &mut st,
        );
        st.header(Req, "r").map(str::to_string)
    };
    assert_eq!(body("a"), some("A"));
    assert_eq!(body("b"), some("B"));
    assert_eq!(body("c"), some("other"));
}

#[test]
fn every_return_variant_reaches_the_host() {
    // Plain actions.
    for a in Action::ALL {
        let mut st = State::default();
        assert_eq!(recv_run(vec![ret(a)], &mut st), Some(a));
    }
    // synth with and without reason.
    let mut st = State::default();
    st.set_header(Req, "why", "Teapot");
    let a = recv_run(
        vec![synth(418, Some(concat(vec![s("I'm a "), req("why")])))],
        &mut st,
    );
    assert_eq!(a, Some(Action::Synth));
    assert_eq!(st.synth, Some((418, some("I'm a Teapot"))));
    let mut st = State::default();
    assert_eq!(
        recv_run(vec![synth(404, None)], &mut st),
        Some(Action::Synth)
    );
    assert_eq!(st.synth, Some((404, None)));
    // error(status, reason) in a backend sub.
    let p = program(vec![method(
        Method::BackendFetch,
        vec![Stmt::Return(Return::Synth {
            action: Action::Error,
            status: Box::new(int(503)),
            reason: Some(Box::new(s("down"))),
        })],
    )]);
    let mut st = State::default();
    assert_eq!(exec(&p, "vcl_backend_fetch", &mut st), Some(Action::Error));
    assert_eq!(st.synth, Some((503, some("down"))));
    // pass(DURATION) in vcl_backend_response.
    let p = program(vec![method(
        Method::BackendResponse,
        vec![Stmt::Return(Return::PassFor(Box::new(dur(120.0))))],
    )]);
    let mut st = State::default();
    assert_eq!(
        exec(&p, "vcl_backend_response", &mut st),
        Some(Action::Pass)
    );
    assert_eq!(st.pass_ttl, Some(120.0));
    // vcl(label).
    let meta = Metadata {
        labels: vec!["a".into(), "b".into()],
        ..Metadata::default()
    };
    let p = program_with(
        vec![method(Method::Recv, vec![Stmt::Return(Return::Vcl(1))])],
        meta,
    );
    let mut st = State::default();
    assert_eq!(exec(&p, "vcl_recv", &mut st), Some(Action::Vcl));
    assert_eq!(st.vcl_label, Some(1));
}

#[test]
fn variables_of_every_representation() {
    let mut st = State::default();
    st.vars.insert(1, Value::Str(some("/path")));
    st.vars.insert(2, Value::Int(5));
    st.vars.insert(3, Value::Real(10.0));
    st.vars.insert(6, Value::Real(1.0));
    let p = recv(vec![
        set_var(1, SetOp::Add, s("?q=1")),
        set_var(2, SetOp::Add, int(3)),
        set_var(2, SetOp::Mul, int(10)),
        set_var(2, SetOp::Sub, int(1)),
        set_var(2, SetOp::Div, int(2)),
        set_var(3, SetOp::Mul, real(1.5)),
        set_var(4, SetOp::Assign, boolean(true)),
        set_var(5, SetOp::Assign, concat(vec![s("x"), req("missing")])),
        set_var(6, SetOp::Add, dur(2.5)),
        set_var(7, SetOp::Assign, s("gone")),
        Stmt::Unset(Target::Var(7)),
        set_req("url", var(1, Type::String)),
    ]);
    exec(&p, "vcl_recv", &mut st);
    assert_eq!(st.vars.get(&1), Some(&Value::Str(some("/path?q=1"))));
    assert_eq!(st.vars.get(&2), Some(&Value::Int(39)));
    assert_eq!(st.vars.get(&3), Some(&Value::Real(15.0)));
    assert_eq!(st.vars.get(&4), Some(&Value::Bool(true)));
    assert_eq!(st.vars.get(&5), Some(&Value::Str(some("x"))));
    assert_eq!(st.vars.get(&6), Some(&Value::Real(3.5)));
    assert_eq!(st.vars.get(&7), None);
    assert_eq!(st.unset_vars, vec![7]);
    assert_eq!(st.header(Req, "url"), Some("/path?q=1"));
}

#[test]
fn workspace_overflow_is_a_named_error() {
    let mut st = State::default();
    st.set_header(Req, "big", &"x".repeat(100));
    st.workspace = 250;
    // Each header read copies 100 bytes; the concatenation needs 200 more:
    // the module's own allocation overflows.
    let wasm = compile(&recv(vec![set_req(
        "r",
        concat(vec![req("big"), req("big")]),
    )]));
    match run(&wasm, "vcl_recv", &mut st) {
        Err(RunError::WsOverflow) => {}
        other => panic!("expected workspace overflow, got {other:?}"),
    }
    assert_eq!(st.header(Req, "r"), None);
    // Same module, enough workspace: fine, and the arena usage is exact.
    let mut st = State::default();
    st.set_header(Req, "big", &"x".repeat(100));
    st.workspace = 400;
    assert_eq!(run(&wasm, "vcl_recv", &mut st).ok(), Some(None));
    assert_eq!(st.header(Req, "r").map(str::len), Some(200));
    assert_eq!(st.ws_used, 400);
    // The host's allocation (copying the header) overflows.
    let mut st = State::default();
    st.set_header(Req, "big", &"x".repeat(100));
    st.workspace = 50;
    assert!(matches!(
        run(&wasm, "vcl_recv", &mut st),
        Err(RunError::WsOverflow)
    ));
    // Overflow inside the module's own INT formatting.
    let mut st = State::default();
    st.vars.insert(1, Value::Int(1234567));
    st.workspace = 3;
    let wasm = compile(&recv(vec![set_req("r", to_s(var(1, Type::Int)))]));
    assert!(matches!(
        run(&wasm, "vcl_recv", &mut st),
        Err(RunError::WsOverflow)
    ));
}

#[test]
fn hash_data_synthetic_ban() {
    let mut st = State::default();
    st.set_header(Req, "host", "example.com");
    recv_run(
        vec![
            Stmt::HashData(req("host")),
            Stmt::HashData(req("missing")),
            // Strand by strand, as Varnish hashes and logs them.
            Stmt::HashData(concat(vec![s("1"), req("host"), s("3"), req("missing")])),
            Stmt::Synthetic(s("<html>")),
            Stmt::Synthetic(concat(vec![req("host"), s("</html>")])),
            Stmt::Ban(concat(vec![s("obj.http.host == "), req("host")])),
        ],
        &mut st,
    );
    assert_eq!(
        st.hash,
        vec![
            some("example.com"),
            None,
            some("1"),
            some("example.com"),
            some("3"),
            None
        ]
    );
    assert_eq!(st.synthetic, "<html>example.com</html>");
    assert_eq!(st.bans, vec!["obj.http.host == example.com".to_string()]);
}

#[test]
fn native_calls_use_the_slot_layout() {
    let mut st = State::default();
    st.natives
        .insert("std.toupper".into(), |a: &[Slot]| match &a[0].value {
            Some(Value::Str(s)) => Some(Value::Str(s.as_ref().map(|s| s.to_uppercase()))),
            _ => None,
        });
    st.natives.insert("std.integer".into(), |a: &[Slot]| {
        let fallback = match a[1].value {
            Some(Value::Int(n)) => n,
            _ => -1,
        };
        match &a[0].value {
            Some(Value::Str(Some(s))) => Some(Value::Int(s.parse().unwrap_or(fallback))),
            _ => Some(Value::Int(fallback)),
        }
    });
    st.set_header(Req, "name", "shellac");
    st.set_header(Req, "n", "12");
    let header_ref = e(
        Type::Header,
        ExprKind::HeaderRef(HttpWhere::Beresp, "Vary".into()),
    );
    let p = recv(vec![
        set_req(
            "upper",
            native("std", "toupper", Type::String, vec![Some(req("name"))]),
        ),
        set_req(
            "n2",
            to_s(arith(
                Type::Int,
                ArithOp::Mul,
                native(
                    "std",
                    "integer",
                    Type::Int,
                    vec![Some(req("n")), Some(int(0))],
                ),
                int(2),
            )),
        ),
        set_req(
            "nested",
            native(
                "std",
                "toupper",
                Type::String,
                vec![Some(concat(vec![
                    native("std", "toupper", Type::String, vec![Some(s("a"))]),
                    s("b"),
                ]))],
            ),
        ),
        set_req(
            "fallback",
            to_s(native(
                "std",
                "integer",
                Type::Int,
                vec![Some(req("missing")), None],
            )),
        ),
        Stmt::Expr(native(
            "std",
            "collect",
            Type::Void,
            vec![Some(header_ref), Some(s(", "))],
        )),
        Stmt::Expr(native(
            "std",
            "log",
            Type::Void,
            vec![Some(concat(vec![s("hello "), req("name")]))],
        )),
        Stmt::Expr(native(
            "test",
            "mixed",
            Type::Void,
            vec![
                Some(real(1.25)),
                Some(boolean(true)),
                Some(e(Type::Backend, ExprKind::Backend(0))),
                Some(e(Type::Time, ExprKind::Real(5.0))),
                Some(e(Type::Enum, ExprKind::Str("HASH".into()))),
            ],
        )),
        Stmt::Expr(e(
            Type::Void,
            ExprKind::MethodCall {
                object: 3,
                func: NativeFn {
                    vmod: "directors".into(),
                    func: "round_robin.add_backend".into(),
                },
                args: vec![Some(e(Type::Backend, ExprKind::Backend(1)))],
            },
        )),
    ]);
    let (wasm, meta) = codegen::generate(&p).expect("generate");
    let names: Vec<_> = meta
        .natives
        .iter()
        .map(|f| format!("{}.{}", f.vmod, f.func))
        .collect();
    assert_eq!(
        names,
        vec![
            "std.toupper",
            "std.integer",
            "std.collect",
            "test.mixed",
            "directors.round_robin.add_backend"
        ]
    );
    assert_eq!(run(&wasm, "vcl_recv", &mut st).ok(), Some(None));
    assert_eq!(st.header(Req, "upper"), Some("SHELLAC"));
    assert_eq!(st.header(Req, "n2"), Some("24"));
    assert_eq!(st.header(Req, "nested"), Some("AB"));
    assert_eq!(st.header(Req, "fallback"), Some("-1"));
    assert_eq!(st.logs, vec!["hello shellac".to_string()]);
    let calls = &st.native_calls;
    let slot = |tag, value| Slot {
        tag,
        aux: 0,
        value: Some(value),
    };
    // std.integer(req.http.missing) with the fallback not given.
    assert_eq!(
        calls[4].args,
        vec![
            slot(Tag::String, Value::Str(None)),
            Slot {
                tag: Tag::None,
                aux: 0,
                value: None
            }
        ]
    );
    assert_eq!(calls[4].object, abi::NO_OBJECT);
    assert_eq!(calls[5].name, "std.collect");
    assert_eq!(
        calls[5].args[0],
        Slot {
            tag: Tag::Header,
            aux: HttpWhere::Beresp as u32,
            value: Some(Value::Str(some("Vary"))),
        }
    );
    assert_eq!(
        calls[6].args,
        vec![
            slot(Tag::Real, Value::Real(1.25)),
            slot(Tag::Bool, Value::Bool(true)),
            slot(Tag::Backend, Value::Handle(1)),
            slot(Tag::Time, Value::Real(5.0)),
            slot(Tag::Enum, Value::Str(some("HASH"))),
        ]
    );
    assert_eq!(calls[7].name, "directors.round_robin.add_backend");
    assert_eq!(calls[7].object, 3);
    assert_eq!(calls[7].args, vec![slot(Tag::Backend, Value::Handle(2))]);
}

#[test]
fn new_in_vcl_init_calls_the_constructor() {
    let p = program(vec![method(
        Method::Init,
        vec![Stmt::New {
            object: 0,
            ctor: NativeFn {
                vmod: "directors".into(),
                func: "round_robin".into(),
            },
            args: vec![],
        }],
    )]);
    let mut st = State::default();
    assert_eq!(exec(&p, "vcl_init", &mut st), None);
    assert_eq!(st.native_calls.len(), 1);
    assert_eq!(st.native_calls[0].name, "directors.round_robin");
    assert_eq!(st.native_calls[0].object, 0);
}

#[test]
fn sub_values_are_exported_for_callbacks() {
    let p = program(vec![
        method(
            Method::Recv,
            vec![Stmt::Expr(native(
                "test",
                "takes_sub",
                Type::Void,
                vec![Some(e(Type::Sub, ExprKind::SubRef(1)))],
            ))],
        ),
        user("cb", vec![synth(200, None)]),
    ]);
    let wasm = compile(&p);
    let mut st = State::default();
    assert_eq!(
        run(&wasm, &abi::sub_export_name(1), &mut st).ok(),
        Some(Some(Action::Synth))
    );
}

#[test]
fn invalid_programs_are_errors_not_panics() {
    // Call of a subroutine that does not exist.
    assert!(codegen::generate(&recv(vec![Stmt::Call(9)])).is_err());
    // Two subs for one method.
    let p = program(vec![
        method(Method::Recv, vec![]),
        method(Method::Recv, vec![]),
    ]);
    assert!(codegen::generate(&p).is_err());
    // A VOID value where a string is needed.
    let p = recv(vec![set_req(
        "x",
        native("test", "void", Type::Void, vec![]),
    )]);
    assert!(codegen::generate(&p).is_err());
    // Ordering of BACKENDs.
    let be = || e(Type::Backend, ExprKind::Backend(0));
    let p = recv(vec![if_(cmp(CmpOp::Lt, be(), be()), vec![], vec![])]);
    assert!(codegen::generate(&p).is_err());
}

#[test]
fn constants_are_deduplicated() {
    let p = recv(vec![
        set_req("x-some-long-header-name", s("some long constant value")),
        set_req("x-some-long-header-name", s("some long constant value")),
        unset_req("x-some-long-header-name"),
    ]);
    let wasm = compile(&p);
    let needle = b"some long constant value";
    let count = wasm.windows(needle.len()).filter(|w| w == needle).count();
    assert_eq!(count, 1);
    let needle = b"x-some-long-header-name";
    let count = wasm.windows(needle.len()).filter(|w| w == needle).count();
    assert_eq!(count, 1);
}

#[test]
#[ignore]
fn print_sample_wat() {
    let p = recv(vec![
        set_req("x", concat(vec![s("a"), req("b"), to_s(var(1, Type::Int))])),
        if_(
            cmp(CmpOp::Eq, req("host"), s("example.com")),
            vec![synth(404, None)],
            vec![],
        ),
    ]);
    let wasm = compile(&p);
    println!(
        "{} bytes\n{}",
        wasm.len(),
        codegen::to_wat(&wasm).unwrap_or_default()
    );
}
