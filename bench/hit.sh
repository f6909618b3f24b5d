#!/usr/bin/env bash
# Cache-hit throughput and latency: varnishd 7.1 (Debian) and Shellac with
# the same VCL (bench/hit.vcl) in front of the same origin (Shellac's demo
# origin), run alternately (A B A B …), and the medians with the ratios
# Shellac/varnishd printed as a Markdown table.
#
# Usage: bench/hit.sh [ROUNDS] [SECONDS]     (default 3 rounds of 5 s)
# Env: SHELLAC=binary (else a release build), SIZES="1024 102400",
#      CONNS=32. SMOKE=1: one round of 1 s, for CI (checks the harness).
# The proxies run on CPU 0 and wrk on CPU 1, so the load generator does
# not starve the proxy on this 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-5}
if [ -n "${SMOKE:-}" ]; then ROUNDS=1; SECS=1; fi
SIZES=${SIZES:-"1024 102400"}
CONNS=${CONNS:-32}

. bench/common.sh varnish wrk

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$SHELLAC" demo-origin -a 127.0.0.1:8090 >/dev/null 2>&1 & pids+=($!)
taskset -c 0 varnishd -F -n "$work/varnishd" -a 127.0.0.1:6091 -f "$PWD/bench/hit.vcl" \
    -s malloc,256m >/dev/null 2>&1 & pids+=($!)
taskset -c 0 "$SHELLAC" serve -a 127.0.0.1:6092 -f bench/hit.vcl -s malloc,256m \
    >/dev/null 2>&1 & pids+=($!)
wait_http 8090 6091 6092

run() { wrk_run "$CONNS" "$SECS" "$@"; }

echo "| scenario | varnishd req/s | Shellac req/s | ratio | varnishd p50 / p99 ms | Shellac p50 / p99 ms |"
echo "| --- | --- | --- | --- | --- | --- |"
for size in $SIZES; do
    url=/bytes/$size
    curl -s -o /dev/null "http://127.0.0.1:6091$url"
    curl -s -o /dev/null "http://127.0.0.1:6092$url"
    : >"$work/v"; : >"$work/s"
    for _ in $(seq "$ROUNDS"); do
        run "http://127.0.0.1:6091$url" >>"$work/v"
        run "http://127.0.0.1:6092$url" >>"$work/s"
    done
    vr=$(cut -d' ' -f1 "$work/v" | median); sr=$(cut -d' ' -f1 "$work/s" | median)
    v50=$(cut -d' ' -f2 "$work/v" | median); s50=$(cut -d' ' -f2 "$work/s" | median)
    v99=$(cut -d' ' -f3 "$work/v" | median); s99=$(cut -d' ' -f3 "$work/s" | median)
    echo "| hit, $size B | $vr | $sr | $(ratio "$sr" "$vr") | $v50 / $v99 | $s50 / $s99 |"
done
