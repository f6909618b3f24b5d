//! Shared test support: a wasmtime host implementing every `shellac`
//! import over in-memory state, and builders for hand-written programs.
#![allow(dead_code)]

pub mod build;
pub mod testhost;
