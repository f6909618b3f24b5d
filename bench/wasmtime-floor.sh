#!/usr/bin/env bash
# The floor of a VMOD call in a given wasmtime version: an empty component
# call and `hello.lower()` from the host, with Shellac's engine settings and
# no Shellac code (bench/wasmtime-floor/). Builds the harness against
# VERSION in a copy; wasmtime 49 and later need rustc >= 1.96, for which it
# uses Debian's rustc-web (/usr/bin/rustc) when rustup's is older.
#
# Usage: bench/wasmtime-floor.sh [VERSION] [CALLS]   (default 48.0.8, 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:-48.0.8}
CALLS=${2:-1000000}
[ -f target/samples/hello.wasm ] || scripts/build-wasm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r bench/wasmtime-floor/. "$work/"
# Start from the workspace's lock file: the same versions as Shellac where they fit.
cp Cargo.lock "$work/"
sed -i "s/version = \"=48.0.8\"/version = \"=$VERSION\"/" "$work/Cargo.toml"
export CARGO_TARGET_DIR=$PWD/target/wasmtime-floor-$VERSION
major=${VERSION%%.*}
if [ "$major" -ge 49 ] && [ -x /usr/bin/rustc ]; then
    export RUSTC=/usr/bin/rustc
    cargo=/usr/bin/cargo
else
    cargo=cargo
fi
(cd "$work" && "$cargo" build --release -q)
taskset -c 1 "$CARGO_TARGET_DIR/release/wasmtime-floor" target/samples/hello.wasm "$CALLS"
