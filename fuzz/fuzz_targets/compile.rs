//! Any byte string given as a VCL file gives a module or an error message:
//! never a panic, a hang or a stack overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vcl_to_wasm::{compile_source, CompileOptions};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = compile_source("fuzz.vcl", &text, None, &CompileOptions::new());
});
