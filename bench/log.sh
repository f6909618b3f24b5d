#!/usr/bin/env bash
# The transaction log's cost on the hit path: Shellac with the log off
# (every tag masked: nothing is formatted), on with nobody reading, and on
# with `shellac log` attached (its output thrown away), same VCL
# (bench/hit.vcl) and origin, run alternately; the medians and the ratios
# to "off" printed as a Markdown table. The goal is on+reader/off >= 0.9.
# Besides req/s, the proxy's CPU time per request (from /proc, user +
# system) and, when perf(1) can count them, its instructions per request
# are shown: on a machine shared with other work they say more than req/s
# about what the log costs (instructions hardly depend on the load).
#
# Usage: bench/log.sh [ROUNDS] [SECONDS]     (default 3 rounds of 5 s)
# Env: SHELLAC=binary (else a release build), SIZE=1024, CONNS=32,
#      READER_CPU=1 (the CPU shellac log runs on; the proxies run on CPU 0
#      and wrk on CPU 1), READER_NICE=19 (its nice level), READER_SCHED=idle
#      (the idle scheduling class instead of a nice level),
#      LOG_PARAMS (more -p for the servers with the log on). SMOKE=1: one
#      round of 1 s, for CI.
# Where the reader runs changes what is measured: on CPU 1 it takes CPU
# from wrk (the client), on CPU 0 (READER_CPU=0 READER_NICE=0: at nice 19
# there it starves and loses records) from the proxy, as it would on a
# server. Both are in BENCHMARKS.md.
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

"$SHELLAC" demo-origin -a 127.0.0.1:8181 >/dev/null 2>&1 & pids+=($!)
sed 's/8090/8181/' bench/hit.vcl >"$work/hit.vcl"
declare -A pid
serve() { # port name extra-args…
    local port=$1 name=$2; shift 2
    taskset -c 0 "$SHELLAC" serve -a "127.0.0.1:$port" -f "$work/hit.vcl" -s malloc,256m \
        -n "$work/$name" "$@" >/dev/null 2>&1 & pids+=($!)
    pid[$port]=$!
}
serve 6181 off -p 'vsl_mask=-*'
serve 6182 on ${LOG_PARAMS:-}
serve 6183 reader ${LOG_PARAMS:-}
for port in 8181 6181 6182 6183; do
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$port/bytes/1" && break
        sleep 0.1
    done
done
# The reader runs niced: on this 2-core machine it shares a CPU with wrk,
# and a reader that cannot keep up must lose records, not slow the proxy.
# READER_SCHED=idle puts it in the idle scheduling class instead (chrt
# -i: it runs only on CPU time nothing else wants).
sched=(nice -n "${READER_NICE:-19}")
[ "${READER_SCHED:-}" = idle ] && sched=(chrt -i 0)
taskset -c "$READER_CPU" "${sched[@]}" "$SHELLAC" log -n "$work/reader" \
    >/dev/null 2>"$work/log.err" &
pids+=($!)
reader=$!

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
perf=
if command -v perf >/dev/null &&
    perf stat -x, -e instructions -- true 2>&1 | grep -q '^[0-9]*,,instructions'; then
    perf=1
fi
# One wrk run against PORT: prints "req/s p50_ms p99_ms cpu_us_per_req
# instructions_per_req".
run() {
    local port=$1 t0 t1 ppid=
    t0=$(ticks "${pid[$port]}")
    : >"$work/perf.out"
    if [ -n "$perf" ]; then
        perf stat -x, -e instructions -p "${pid[$port]}" -o "$work/perf.out" -- sleep "$SECS" &
        ppid=$!
    fi
    taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$port$url" \
        2>/dev/null >"$work/wrk.out"
    [ -n "$ppid" ] && wait "$ppid"
    t1=$(ticks "${pid[$port]}")
    ins=$(awk -F, '$3 ~ /instructions/ { print $1 }' "$work/perf.out")
    awk -v dt=$((t1 - t0)) -v hz="$hz" -v secs="$SECS" -v ins="${ins:-0}" '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /Requests\/sec/ { rps = $2 }
        $1 == "50.000%" || $1 == "50%" { p50 = ms($2) }
        $1 == "99.000%" || $1 == "99%" { p99 = ms($2) }
        END { n = rps * secs; cpu = (n > 0) ? dt / hz * 1e6 / n : 0; ipr = (n > 0) ? ins / n : 0
              printf "%s %s %s %.2f %.0f\n", rps, p50, p99, cpu, ipr }' "$work/wrk.out"
}

url=/bytes/$SIZE
for port in 6181 6182 6183; do curl -s -o /dev/null "http://127.0.0.1:$port$url"; done
: >"$work/r.off"; : >"$work/r.on"; : >"$work/r.rd"
# The reader's own CPU time, per request it was shown (its runs only).
rt=0
for _ in $(seq "$ROUNDS"); do
    run 6181 >>"$work/r.off"
    run 6182 >>"$work/r.on"
    r0=$(ticks "$reader")
    run 6183 >>"$work/r.rd"
    rt=$((rt + $(ticks "$reader") - r0))
done
o=$(cut -d' ' -f1 "$work/r.off" | median)
oc=$(cut -d' ' -f4 "$work/r.off" | median)
oi=$(cut -d' ' -f5 "$work/r.off" | median)
echo "| log, hit $SIZE B | req/s | ratio to off | p50 / p99 ms | proxy CPU µs/req | off/this | instructions/req | off/this |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
[ -n "$perf" ] || echo "(perf cannot count instructions here: those columns are empty)" >&2
for f in off on rd; do
    r=$(cut -d' ' -f1 "$work/r.$f" | median)
    p50=$(cut -d' ' -f2 "$work/r.$f" | median); p99=$(cut -d' ' -f3 "$work/r.$f" | median)
    c=$(cut -d' ' -f4 "$work/r.$f" | median)
    i=$(cut -d' ' -f5 "$work/r.$f" | median)
    ratio=$(awk -v a="$r" -v b="$o" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
    cratio=$(awk -v a="$oc" -v b="$c" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
    iratio=$(awk -v a="$oi" -v b="$i" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }')
    case $f in off) name="off (vsl_mask=-*)" ;; on) name="on, no reader" ;; rd) name="on, shellac log attached" ;; esac
    echo "| $name | $r | $ratio | $p50 / $p99 | $c | $cratio | $i | $iratio |"
done
echo
# The same ratios taken within each round (its runs are seconds apart)
# and then the median: on a VM whose speed drifts between rounds this is
# steadier than the ratio of the medians above.
for f in on rd; do
    pr=$(paste -d' ' <(cut -d' ' -f1 "$work/r.$f") <(cut -d' ' -f1 "$work/r.off") |
        awk '$2 > 0 { print $1 / $2 }' | median)
    printf 'per-round median of %s/off: %.2f (rounds: %s)\n' "$f" "$pr" \
        "$(paste -d' ' <(cut -d' ' -f1 "$work/r.$f") <(cut -d' ' -f1 "$work/r.off") |
            awk '$2 > 0 { printf "%.2f ", $1 / $2 }')"
done
lost=$(awk '/Log overrun/ { n += $3 } END { print n + 0 }' "$work/log.err")
reqs=$(awk -v s="$SECS" '{ n += $1 * s } END { print n + 0 }' "$work/r.rd")
rcpu=$(awk -v t="$rt" -v hz="$hz" -v n="$reqs" 'BEGIN { if (n > 0) printf "%.2f", t / hz * 1e6 / n; else print "n/a" }')
echo "shellac log (${READER_SCHED:-nice ${READER_NICE:-19}}, on CPU $READER_CPU) lost $lost records to overruns; its CPU: $rcpu µs per request"
