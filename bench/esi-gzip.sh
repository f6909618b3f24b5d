#!/usr/bin/env bash
# Content composition on cache hits: an ESI page of 10 cached 1 KiB
# fragments (plain, and stored gzipped for a gzip client), and a 100 KiB
# object stored gzipped served to a client without gzip (gunzipped on
# delivery). varnishd 7.1 (Debian) and Shellac with the same VCL
# (bench/esi-gzip.vcl) in front of Shellac's demo origin, run alternately
# (A B A B …); medians and the ratios Shellac/varnishd as a Markdown table.
#
# Usage: bench/esi-gzip.sh [ROUNDS] [SECONDS]   (default 3 rounds of 5 s)
# Env: SHELLAC=binary (else a release build), CONNS=32, FRAGMENTS=10,
#      GZSIZE=102400. SMOKE=1: one round of 1 s, for CI (checks the harness).
# The proxies run on CPU 0 and wrk on CPU 1, as in hit.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-5}
if [ -n "${SMOKE:-}" ]; then ROUNDS=1; SECS=1; fi
CONNS=${CONNS:-32}
FRAGMENTS=${FRAGMENTS:-10}
GZSIZE=${GZSIZE:-102400}

. bench/common.sh varnish wrk

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$SHELLAC" demo-origin -a 127.0.0.1:8090 >/dev/null 2>&1 & pids+=($!)
taskset -c 0 varnishd -F -n "$work/varnishd" -a 127.0.0.1:6091 -f "$PWD/bench/esi-gzip.vcl" \
    -s malloc,256m >/dev/null 2>&1 & pids+=($!)
taskset -c 0 "$SHELLAC" serve -a 127.0.0.1:6092 -f bench/esi-gzip.vcl -s malloc,256m \
    >/dev/null 2>&1 & pids+=($!)
# varnishd compiles the VCL with cc on a shared CPU: give it time.
for port in 8090 6091 6092; do
    for _ in $(seq 3000); do
        curl -s -o /dev/null "http://127.0.0.1:$port/bytes/1" && break
        sleep 0.1
    done
done

# One wrk run: "req/s p50_ms p99_ms". $2: an extra header or "".
run() {
    local hdr=()
    [ -n "$2" ] && hdr=(-H "$2")
    wrk_run "$CONNS" "$SECS" "${hdr[@]}" "$1"
}

# Both proxies must give the same content before they are timed.
check() {
    local url=$1 hdr=$2 a b
    a=$(curl -s --compressed ${hdr:+-H "$hdr"} "http://127.0.0.1:6091$url" | md5sum)
    b=$(curl -s --compressed ${hdr:+-H "$hdr"} "http://127.0.0.1:6092$url" | md5sum)
    if [ "$a" != "$b" ]; then
        echo "esi-gzip: varnishd and Shellac differ on $url ($hdr)" >&2
        exit 1
    fi
}

echo "| scenario | varnishd req/s | Shellac req/s | ratio | varnishd p50 / p99 ms | Shellac p50 / p99 ms |"
echo "| --- | --- | --- | --- | --- | --- |"
while IFS='|' read -r name url hdr; do
    check "$url" "$hdr"
    : >"$work/v"; : >"$work/s"
    for _ in $(seq "$ROUNDS"); do
        run "http://127.0.0.1:6091$url" "$hdr" >>"$work/v"
        run "http://127.0.0.1:6092$url" "$hdr" >>"$work/s"
    done
    vr=$(cut -d' ' -f1 "$work/v" | median); sr=$(cut -d' ' -f1 "$work/s" | median)
    v50=$(cut -d' ' -f2 "$work/v" | median); s50=$(cut -d' ' -f2 "$work/s" | median)
    v99=$(cut -d' ' -f3 "$work/v" | median); s99=$(cut -d' ' -f3 "$work/s" | median)
    echo "| $name | $vr | $sr | $(ratio "$sr" "$vr") | $v50 / $v99 | $s50 / $s99 |"
done <<SCENARIOS
ESI page, $FRAGMENTS fragments, plain|/esi/page/$FRAGMENTS|
ESI page, $FRAGMENTS fragments, stored gzipped, gzip client|/esi/gzpage/$FRAGMENTS|Accept-Encoding: gzip
$GZSIZE B gzipped, client without gzip|/gzip/$GZSIZE|
SCENARIOS
