#!/bin/sh
# Builds the C hello VMOD into a component: ./build.sh OUT.wasm
#
# Needs: wit-bindgen (cargo install --locked wit-bindgen-cli@0.63.0),
# wasm-tools (cargo install --locked wasm-tools@1.262.0), clang and wasm-ld
# (Debian: clang lld), compiler-rt's wasm32 builtins (Debian:
# libclang-rt-dev-wasm32), and wasi-libc (Debian: wasi-libc) for the C headers,
# string.h functions and crt1-reactor.o. No WASI import may remain: the
# host refuses them, and `wasm-tools component new` fails on them.
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 OUT.wasm" >&2
	exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
out=$1
# The shellac:vmod package first (a dependency), this VMOD's WIT last. The
# interface is the Rust sample's (vmod:hello/hello).
SHELLAC_WIT=${SHELLAC_WIT:-$here/../../wit}
HELLO_WIT=${HELLO_WIT:-$here/../vmod-hello/wit}
CC=${CC:-clang}
WIT_BINDGEN=${WIT_BINDGEN:-wit-bindgen}
WASM_TOOLS=${WASM_TOOLS:-wasm-tools}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# gen/vmod_hello.h, gen/vmod_hello.c, gen/vmod_hello_component_type.o
"$WIT_BINDGEN" c --world vmod:hello/vmod-hello --out-dir "$tmp/gen" \
	"$SHELLAC_WIT" "$HELLO_WIT"

# --target=wasm32-wasi: Debian's clang then finds wasi-libc's headers and
# libc.a (only pure functions such as memcpy and strlen get linked; anything
# that needs WASI, like stdio, shows up as a wasi_snapshot_preview1 import).
# -mexec-model=reactor: no main; crt1-reactor.o exports _initialize (C
# constructors), which wasm-tools turns into the component's start function.
"$CC" --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra \
	-I"$tmp/gen" -Wl,--strip-debug -o "$tmp/hello.core.wasm" \
	"$here/hello.c" "$tmp/gen/vmod_hello.c" "$tmp/gen/vmod_hello_component_type.o"

"$WASM_TOOLS" component new "$tmp/hello.core.wasm" -o "$tmp/hello.wasm"
if "$WASM_TOOLS" component wit "$tmp/hello.wasm" | grep -q 'import wasi:'; then
	echo "$0: the component imports WASI; the host would refuse it" >&2
	exit 1
fi
mkdir -p "$(dirname "$out")"
cp "$tmp/hello.wasm" "$out"
echo "wrote $out"
