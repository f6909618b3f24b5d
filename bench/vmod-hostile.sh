#!/usr/bin/env bash
# Hostile-VMOD containment under load. Shellac serves cached 1 KiB objects
# from the demo origin with a VCL that calls the hostile sample VMOD
# (samples/vmod-hostile) on every request: `hostile.ok()` for normal
# requests, one of its attacks for /attack/*. Three measurements:
#   1. each attack alone: status and time to answer (its CPU budget is
#      `-p vmod_limits=hostile=BUDGET_MS/MEM`);
#   2. CONNS (1000) concurrent normal connections, no attack: req/s, p50,
#      p99, non-2xx and socket errors;
#   3. the same while ATTACKERS connections replay every attack in a loop.
# Only Shellac: varnishd has no equivalent (a C VMOD that spins hangs its
# worker thread; one that crashes takes the child process down).
#
# Usage: bench/vmod-hostile.sh [SECONDS]         (default 10)
# Env: SHELLAC=binary (else a release build), CONNS=1000, ATTACKERS=6,
#      LIMITS=hostile=50/64m. SMOKE=1: 2 s runs with 100 connections.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CONNS=${CONNS:-1000}
ATTACKERS=${ATTACKERS:-6}
LIMITS=${LIMITS:-hostile=50/64m}
if [ -n "${SMOKE:-}" ]; then SECS=2; CONNS=100; fi

. bench/common.sh wrk
[ -f target/samples/hostile.wasm ] || scripts/build-wasm
ulimit -n $((CONNS * 2 + 1024)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
pids=()
attack_pids=()
cleanup() {
    kill "${attack_pids[@]}" "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

attacks="spin alloc crash recurse big bad_header spin_str alloc_str"
cat >"$work/hostile.vcl" <<VCL
vcl 4.1;
import hostile from "$PWD/target/samples/hostile.wasm";
backend default { .host = "127.0.0.1"; .port = "8090"; }
sub vcl_recv {
    if (req.url == "/attack/spin") {
        hostile.spin();
    } elsif (req.url == "/attack/alloc") {
        hostile.alloc();
    } elsif (req.url == "/attack/crash") {
        hostile.crash();
    } elsif (req.url == "/attack/recurse") {
        set req.http.depth = hostile.recurse(-1);
    } elsif (req.url == "/attack/big") {
        set req.http.big = hostile.big(104857600);
    } elsif (req.url == "/attack/bad_header") {
        hostile.bad_header();
    } elsif (req.url == "/attack/spin_str") {
        set req.http.x = hostile.spin_str("x");
    } elsif (req.url == "/attack/alloc_str") {
        set req.http.x = hostile.alloc_str("x");
    }
    if (req.url ~ "^/attack/") {
        return (synth(200, "attack survived"));
    }
    set req.http.x-ok = hostile.ok(req.url);
}
VCL

"$SHELLAC" demo-origin -a 127.0.0.1:8090 >/dev/null 2>&1 & pids+=($!)
taskset -c 0 "$SHELLAC" serve -a 127.0.0.1:6301 -f "$work/hostile.vcl" \
    -p "vmod_limits=$LIMITS" -s malloc,256m >"$work/serve.log" 2>&1 & pids+=($!)
serve_pid=$!
for port in 8090 6301; do
    ok=
    for _ in $(seq 300); do
        if curl -sf -o /dev/null "http://127.0.0.1:$port/bytes/1024"; then ok=1; break; fi
        sleep 0.1
    done
    [ -n "$ok" ] || { echo "port $port never answered" >&2; cat "$work/serve.log" >&2; exit 1; }
done

echo "Shellac, -p vmod_limits=$LIMITS; proxy on CPU 0, clients on CPU 1"
echo
echo "| attack (alone) | status | time to answer, ms (median of 5) |"
echo "| --- | --- | --- |"
for a in $attacks; do
    : >"$work/t"
    for _ in 1 2 3 4 5; do
        curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "http://127.0.0.1:6301/attack/$a" >>"$work/t"
    done
    status=$(cut -d' ' -f1 "$work/t" | sort | uniq -c | awk '{ printf "%s%s×%s", sep, $2, $1; sep = ", " }')
    ms=$(cut -d' ' -f2 "$work/t" | sort -g | awk '{ v[NR] = $1 * 1000 } END { printf "%.1f", v[3] }')
    echo "| $a | $status | $ms |"
done
kill -0 "$serve_pid" || { echo "shellac died" >&2; exit 1; }

# One wrk run of normal traffic: "req/s p50_ms p99_ms non2xx errors".
load() {
    taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 10s --latency \
        http://127.0.0.1:6301/bytes/1024 2>/dev/null | awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /Requests\/sec/ { rps = $2 }
        $1 == "50.000%" || $1 == "50%" { p50 = ms($2) }
        $1 == "99.000%" || $1 == "99%" { p99 = ms($2) }
        /Non-2xx/ { bad = $NF }
        /Socket errors/ { gsub(/[^0-9 ]/, " "); err = $1 + $2 + $3 + $4 }
        END { printf "%s %s %s %d %d\n", rps, p50, p99, bad, err }'
}

echo
echo "| $CONNS normal connections, ${SECS} s | req/s | p50 ms | p99 ms | non-2xx | socket errors | attacks answered (all 503?) |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
read -r rps p50 p99 bad err < <(load)
echo "| no attack | $rps | $p50 | $p99 | $bad | $err | – |"

# Attackers: each connection loops over every attack, one at a time.
for i in $(seq "$ATTACKERS"); do
    (
        while :; do
            for a in $attacks; do
                taskset -c 1 curl -s -o /dev/null -w "%{http_code}\n" "http://127.0.0.1:6301/attack/$a" || echo 000
            done
        done >"$work/attack.$i"
    ) & attack_pids+=($!)
done
read -r rps p50 p99 bad err < <(load)
kill "${attack_pids[@]}" 2>/dev/null || true
wait "${attack_pids[@]}" 2>/dev/null || true
attack_pids=()
answered=$(cat "$work"/attack.* | sort | uniq -c | awk '{ printf "%s%s×%s", sep, $2, $1; sep = ", " }')
echo "| $ATTACKERS attackers looping over all $(echo $attacks | wc -w) attacks | $rps | $p50 | $p99 | $bad | $err | $answered |"
kill -0 "$serve_pid" || { echo "shellac died" >&2; exit 1; }
echo
echo "shellac still serving: $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:6301/bytes/1024)"
