//! The VTC language — the test scripts of `varnishtest` — as a front end for
//! `shellac test`.
//!
//! Varnish's own test cases are Shellac's conformance suite, so this crate
//! reads them exactly the way varnishtest 7.1 does:
//!
//! 1. [`tokenize`] splits a script into [`Command`]s (one per logical line;
//!    `"…"` strings, `{…}` blocks, comments, line continuations; see the
//!    [`token`] module for the precise rules).
//! 2. [`parse_script`] classifies the top-level commands into a [`Script`]
//!    of [`TopCommand`]s: the kind (`server`, `client`, `varnish`, …), the
//!    instance name, and the options with their values. Nested specs stay
//!    raw tokens (text + starting line); [`parse_spec`] tokenizes them when
//!    the runner gets to them.
//! 3. Macros (`${s1_port}`, `${string,repeat,3,x}`) are expanded per command
//!    right before it runs, with the [`Macros`] table as it is then —
//!    varnishtest's semantics, since earlier commands define macros that
//!    later ones use ([`Command::expand`], [`TopCommand::expand`]).
//!
//! The runner (`shellac test`) lives in [`runner`]: it executes scripts
//! with client/server threads ([`client`], [`server`], on the HTTP/1
//! engine in [`http`]), drives cache instances over the admin CLI
//! ([`varnish`], [`cli`]), and prints varnishtest-style results.
//!
//! [`extract_vcls`] lists every VCL a test makes varnishd compile, in the
//! exact form varnishtest sends it, so the VCL compiler can be checked
//! against `varnishd -C` without running the tests.

#![warn(missing_docs)]

pub mod barrier;
pub mod cli;
pub mod client;
pub mod ctx;
pub mod error;
pub mod expect;
pub mod http;
pub mod logexp;
pub mod macros;
pub mod misc;
pub mod runner;
pub mod script;
pub mod server;
pub mod token;
pub mod varnish;
pub mod vcl;
pub mod vsc;

pub use ctx::{Outcome, TestConfig};
pub use error::VtcError;
pub use macros::{http_date, split_args, Macros, SplitError};
pub use runner::{read_list, run_all, run_test, RunOptions, Summary, TestResult};
pub use script::{parse_script, parse_spec, Arg, Script, TopCommand, TopKind};
pub use token::{tokenize, Command, Token, TokenKind, MAX_TOKENS};
pub use vcl::{cli_inline_vcl, extract_vcls, Expectation, ExtractEnv, ExtractedVcl, VclKind};
