//! A VMOD that misbehaves on purpose. Each function attacks one limit of
//! the sandbox; the host must fail only the request that called it.

wit_bindgen::generate!({
    world: "vmod:hostile/vmod-hostile",
    path: ["../../wit", "wit"],
    generate_all,
});

use exports::vmod::hostile::hostile::Guest;
use shellac::vmod::task;
use shellac::vmod::types::Http;

struct Component;
shellac_vmod_sdk::lifecycle!(Component);
export!(Component);

#[inline(never)]
fn down(depth: i64, reached: i64) -> i64 {
    // black_box keeps the optimiser from turning this into a loop.
    let frame = core::hint::black_box([reached; 16]);
    if depth == 0 {
        return frame[0];
    }
    down(depth - 1, reached + 1) + core::hint::black_box(0)
}

impl Guest for Component {
    fn spin() {
        let mut n: u64 = 0;
        loop {
            n = core::hint::black_box(n.wrapping_add(1));
        }
    }

    fn alloc() {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
            core::hint::black_box(&hoard);
        }
    }

    fn crash() {
        // The wasm `unreachable` instruction itself, not a Rust panic: the
        // host must cope with a bare trap. Off wasm32 (unit tests) a panic
        // stands in for it.
        #[cfg(target_arch = "wasm32")]
        core::arch::wasm32::unreachable();
        #[cfg(not(target_arch = "wasm32"))]
        panic!("crash");
    }

    fn recurse(depth: i64) -> i64 {
        down(depth, 0)
    }

    fn big(bytes: i64) -> String {
        "x".repeat(usize::try_from(bytes).unwrap_or(0))
    }

    fn bad_header() -> Result<(), String> {
        task::set_header(Http::Beresp, "X-Hostile", "1")
    }

    fn ok(s: String) -> String {
        s
    }

    fn spin_str(s: String) -> String {
        Self::spin();
        s
    }

    fn alloc_str(s: String) -> String {
        Self::alloc();
        s
    }
}
