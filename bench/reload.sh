#!/usr/bin/env bash
# Reload under load (issue 8): wrk at full speed on a cached 1 KiB object
# for SECONDS while `vcl.use` alternates between two VCLs SWAPS times
# (evenly spread), then the same run without swaps. Prints failed
# requests (non-2xx/3xx), connection errors (wrk's socket errors), failed
# `vcl.use` commands (all must be 0) and req/s during swaps vs without.
#
# Usage: bench/reload.sh [SECONDS] [SWAPS]     (default 60 s, 100 swaps)
# Env: SHELLAC=binary (else a release build), CONNS=32, PORT_BASE=18300.
# SMOKE=1: 3 s and 10 swaps (checks the harness).
# Shellac runs on CPU 0, wrk on CPU 1 (as hit.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
SWAPS=${2:-100}
if [ -n "${SMOKE:-}" ]; then SECS=3; SWAPS=10; fi
CONNS=${CONNS:-32}
BASE=${PORT_BASE:-18300}
ORIGIN=$((BASE)); PROXY=$((BASE + 1)); CLI=$((BASE + 2))

. bench/common.sh wrk

bench_workdir

for v in a b; do
    cat >"$work/$v.vcl" <<EOF
vcl 4.1;
backend origin { .host = "127.0.0.1"; .port = "$ORIGIN"; }
sub vcl_recv { set req.http.X-Vcl = "$v"; }
sub vcl_deliver { set resp.http.X-Vcl = "$v"; }
EOF
done

"$SHELLAC" demo-origin -a "127.0.0.1:$ORIGIN" >/dev/null 2>&1 & pids+=($!)
taskset -c 0 "$SHELLAC" serve -n "$work/inst" -a "127.0.0.1:$PROXY" -T "127.0.0.1:$CLI" \
    -f "$work/a.vcl" -s malloc,256m >/dev/null 2>&1 & pids+=($!)
wait_http $ORIGIN $PROXY
adm() { "$SHELLAC" adm -T "127.0.0.1:$CLI" "$@"; }
adm vcl.load b "$work/b.vcl" >/dev/null
url=http://127.0.0.1:$PROXY/bytes/1024
curl -s -o /dev/null "$url"

# wrk_full SECS: the whole wrk report.
wrk_full() { taskset -c 1 wrk -t1 -c"$CONNS" -d"${1}s" --latency "$url" 2>&1; }
# summary REPORT: "req/s non2xx socket_errors p99".
summary() {
    awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /Requests\/sec/ { rps = $2 }
        /Non-2xx or 3xx responses/ { bad = $NF }
        /Socket errors/ { gsub(/,/, ""); err = $4 + $6 + $8 + $10 }
        $1 == "99.000%" || $1 == "99%" { p99 = ms($2) }
        END { printf "%s %d %d %s\n", rps, bad, err, p99 }' <<<"$1"
}

# The swapper: SWAPS `vcl.use`s spread over the run, counting failures.
swapper() {
    local gap fails=0 i
    gap=$(awk -v s="$SECS" -v n="$SWAPS" 'BEGIN { printf "%.3f", s / (n + 1) }')
    for i in $(seq "$SWAPS"); do
        sleep "$gap"
        # The VCL of -f is named boot, as in varnishd.
        if [ $((i % 2)) -eq 1 ]; then v=b; else v=boot; fi
        adm vcl.use "$v" >/dev/null 2>&1 || fails=$((fails + 1))
    done
    echo "$fails" >"$work/swap_fails"
}

swapper & swap_pid=$!
during=$(wrk_full "$SECS")
wait "$swap_pid"
swap_fails=$(cat "$work/swap_fails")
# Both VCLs served: the active one answers now.
active=$(curl -s -D - -o /dev/null "$url" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-vcl" { print $2 }')
without=$(wrk_full "$SECS")

read -r d_rps d_bad d_err d_p99 <<<"$(summary "$during")"
read -r w_rps w_bad w_err w_p99 <<<"$(summary "$without")"
echo "| run ($SECS s, $CONNS conns) | req/s | failed requests | connection errors | p99 ms |"
echo "| --- | --- | --- | --- | --- |"
echo "| $SWAPS vcl.use swaps | $d_rps | $d_bad | $d_err | $d_p99 |"
echo "| no swaps | $w_rps | $w_bad | $w_err | $w_p99 |"
echo
echo "swaps during vs without: $(ratio "$d_rps" "$w_rps"); failed vcl.use: $swap_fails; active after the swaps: $active"
if [ "$d_bad" -ne 0 ] || [ "$d_err" -ne 0 ] || [ "$swap_fails" -ne 0 ]; then
    echo "FAILED: requests or swaps failed during reloads" >&2
    exit 1
fi
