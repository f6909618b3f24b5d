#!/usr/bin/env bash
# The transaction log's cost on the hit path: Shellac with the log off
# (every tag masked: nothing is formatted), on with nobody reading, and on
# with `shellac log` attached (its output thrown away), same VCL
# (bench/hit.vcl) and origin, run alternately; the medians and the ratios
# to "off" printed as a Markdown table. The goal is on+reader/off >= 0.9.
#
# Usage: bench/log.sh [ROUNDS] [SECONDS]     (default 3 rounds of 5 s)
# Env: SHELLAC=binary (else a release build), SIZE=1024, CONNS=32,
#      READER_CPU=1 (the CPU shellac log runs on; the proxies run on CPU 0
#      and wrk on CPU 1). SMOKE=1: one round of 1 s, for CI.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-5}
if [ -n "${SMOKE:-}" ]; then ROUNDS=1; SECS=1; fi
SIZE=${SIZE:-1024}
CONNS=${CONNS:-32}
READER_CPU=${READER_CPU:-1}

. bench/common.sh wrk

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$SHELLAC" demo-origin -a 127.0.0.1:8091 >/dev/null 2>&1 & pids+=($!)
sed 's/8090/8091/' bench/hit.vcl >"$work/hit.vcl"
serve() { # port name extra-args…
    local port=$1 name=$2; shift 2
    taskset -c 0 "$SHELLAC" serve -a "127.0.0.1:$port" -f "$work/hit.vcl" -s malloc,256m \
        -n "$work/$name" "$@" >/dev/null 2>&1 & pids+=($!)
}
serve 6093 off -p 'vsl_mask=-*'
serve 6094 on
serve 6095 reader
for port in 8091 6093 6094 6095; do
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$port/bytes/1" && break
        sleep 0.1
    done
done
taskset -c "$READER_CPU" "$SHELLAC" log -n "$work/reader" >"$work/log.out" 2>"$work/log.err" &
pids+=($!)

run() {
    taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "$1" 2>/dev/null | awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /Requests\/sec/ { rps = $2 }
        $1 == "50.000%" || $1 == "50%" { p50 = ms($2) }
        $1 == "99.000%" || $1 == "99%" { p99 = ms($2) }
        END { printf "%s %s %s\n", rps, p50, p99 }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

url=/bytes/$SIZE
for port in 6093 6094 6095; do curl -s -o /dev/null "http://127.0.0.1:$port$url"; done
: >"$work/off"; : >"$work/on"; : >"$work/rd"
for _ in $(seq "$ROUNDS"); do
    run "http://127.0.0.1:6093$url" >>"$work/off"
    run "http://127.0.0.1:6094$url" >>"$work/on"
    run "http://127.0.0.1:6095$url" >>"$work/rd"
done
lines=$(wc -l <"$work/log.out")
o=$(cut -d' ' -f1 "$work/off" | median)
echo "| log, hit $SIZE B | req/s | ratio to off | p50 / p99 ms |"
echo "| --- | --- | --- | --- |"
for f in off on rd; do
    r=$(cut -d' ' -f1 "$work/$f" | median)
    p50=$(cut -d' ' -f2 "$work/$f" | median); p99=$(cut -d' ' -f3 "$work/$f" | median)
    ratio=$(awk -v a="$r" -v b="$o" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
    case $f in off) name="off (vsl_mask=-*)" ;; on) name="on, no reader" ;; rd) name="on, shellac log attached" ;; esac
    echo "| $name | $r | $ratio | $p50 / $p99 |"
done
echo
echo "shellac log printed $lines lines; it reported: $(grep -c overrun "$work/log.err" || true) overruns"
