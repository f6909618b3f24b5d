#!/usr/bin/env bash
# Call overhead of a string->string VMOD function: the component
# `hello.lower()` (samples/vmod-hello, a wasm component) against the
# host-native `std.tolower()`, both called from compiled VCL, and
# varnishd's C `std.tolower()` on the same VCL for reference.
#
# Each VCL makes N calls in vcl_recv (`set req.http.y = F(req.http.x);`)
# and answers with synth(200); a baseline VCL does the same N header copies
# without a call. ns per call = (time per request - baseline) / N, from
# wrk's req/s at one connection.
#
# Usage: bench/vmod-call.sh [ROUNDS] [SECONDS]    (default 3 rounds of 4 s)
# Env: SHELLAC=binary (else a release build), CALLS=N (default 1000),
#      SHELLAC_B=binary: also run a second build (e.g. the one before a
#      change) in the same rounds, for an A/B comparison under the same load.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-4}
N=${CALLS:-1000}
# Smoke mode: 100 calls, so varnishd's C compile of the VCL stays short.
if [ -n "${SMOKE:-}" ]; then ROUNDS=1; SECS=1; N=${CALLS:-100}; fi

. bench/common.sh varnish wrk
[ -f target/samples/hello.wasm ] || scripts/build-wasm

work=$(mktemp -d)
chmod 755 "$work"  # varnishd reads the VCL as its unprivileged user
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# vcl NAME IMPORT CALL: N statements `set req.http.y = CALL;`.
vcl() {
    {
        echo 'vcl 4.1;'
        echo "$2"
        echo 'backend default none;'
        echo 'sub vcl_recv {'
        for _ in $(seq "$N"); do echo "    set req.http.y = $3;"; done
        echo '    return (synth(200));'
        echo '}'
    } >"$work/$1.vcl"
}
vcl base 'import std;' 'req.http.x'
vcl std 'import std;' 'std.tolower(req.http.x)'
vcl vmod "import hello from \"$PWD/target/samples/hello.wasm\";" 'hello.lower(req.http.x)'

taskset -c 0 "$SHELLAC" serve -a 127.0.0.1:6201 -f "$work/base.vcl" >"$work/s1.log" 2>&1 & pids+=($!)
taskset -c 0 "$SHELLAC" serve -a 127.0.0.1:6202 -f "$work/std.vcl" >"$work/s2.log" 2>&1 & pids+=($!)
taskset -c 0 "$SHELLAC" serve -a 127.0.0.1:6203 -f "$work/vmod.vcl" >"$work/s3.log" 2>&1 & pids+=($!)
ports="6201 6202 6203 6204 6205"
if [ -n "${SHELLAC_B:-}" ]; then
    taskset -c 0 "$SHELLAC_B" serve -a 127.0.0.1:6206 -f "$work/base.vcl" >"$work/s6.log" 2>&1 & pids+=($!)
    taskset -c 0 "$SHELLAC_B" serve -a 127.0.0.1:6207 -f "$work/vmod.vcl" >"$work/s7.log" 2>&1 & pids+=($!)
    ports="$ports 6206 6207"
fi
taskset -c 0 varnishd -F -n "$work/v1" -a 127.0.0.1:6204 -f "$work/base.vcl" >"$work/v1.log" 2>&1 & pids+=($!)
taskset -c 0 varnishd -F -n "$work/v2" -a 127.0.0.1:6205 -f "$work/std.vcl" >"$work/v2.log" 2>&1 & pids+=($!)
# varnishd runs cc on a VCL of N statements, pinned to the same CPU as the
# rest: on a loaded 2-core CI machine that has taken over 30 s. Wait up to
# 5 minutes; an answer ends the wait at once.
for port in $ports; do
    ok=
    for _ in $(seq 3000); do
        if curl -sf -o /dev/null "http://127.0.0.1:$port/"; then ok=1; break; fi
        sleep 0.1
    done
    [ -n "$ok" ] || { echo "port $port never answered" >&2; cat "$work"/*.log >&2; exit 1; }
done
got=$(curl -s -D - -o /dev/null -H 'X: Hello-World-AbC' http://127.0.0.1:6203/ | head -1)
case "$got" in *200*) ;; *) echo "vmod VCL answered: $got" >&2; exit 1 ;; esac

rps() {
    taskset -c 1 wrk -t1 -c1 -d"${SECS}s" -H 'X: Hello-World-AbC' "http://127.0.0.1:$1/" 2>/dev/null |
        awk '/Requests\/sec/ { print $2 }'
}
for port in $ports; do : >"$work/r$port"; done
for _ in $(seq "$ROUNDS"); do
    for port in $ports; do rps "$port" >>"$work/r$port"; done
done
for port in $ports; do median <"$work/r$port" >"$work/m$port"; done
ns() { awk -v x="$(cat "$work/m$1")" -v b="$(cat "$work/m$2")" -v n="$N" \
    'BEGIN { printf "%.0f", (1e9 / x - 1e9 / b) / n }'; }

echo "$N calls per request, one connection, median of $ROUNDS rounds of ${SECS} s"
echo
echo "| VCL | server | req/s | ns per call |"
echo "| --- | --- | --- | --- |"
echo "| $N header copies (baseline) | Shellac | $(cat "$work/m6201") | – |"
echo "| std.tolower() (host-native) | Shellac | $(cat "$work/m6202") | $(ns 6202 6201) |"
echo "| hello.lower() (wasm component) | Shellac | $(cat "$work/m6203") | $(ns 6203 6201) |"
echo "| $N header copies (baseline) | varnishd | $(cat "$work/m6204") | – |"
echo "| std.tolower() (C) | varnishd | $(cat "$work/m6205") | $(ns 6205 6204) |"
if [ -n "${SHELLAC_B:-}" ]; then
    echo "| $N header copies (baseline) | Shellac B | $(cat "$work/m6206") | – |"
    echo "| hello.lower() (wasm component) | Shellac B | $(cat "$work/m6207") | $(ns 6207 6206) |"
fi
