#!/usr/bin/env bash
# A noisy neighbour (issue 8, "a tenant over quota degrades alone"): tenant
# b's cache hits (1 KiB, CONNS connections) measured alone, then while
# tenant a floods its 1 MiB cache quota with unique 16 KiB misses
# (FLOOD connections), once per variant of a's `requests` quota (the
# variants alternate, ROUNDS times, so the machine's noise spreads over
# all of them). Prints b's req/s, p50/p99 per phase, a's flood rate and
# 503s, and the evictions (b's must stay 0).
#
# Both wrks share CPU 1 and Shellac has CPU 0 (the origin floats): the
# flood takes CPU from b in the proxy, and a's wrk competes with b's wrk
# on CPU 1. A `requests` quota with a queue holds a's surplus requests
# (and so a's closed-loop wrk connections) waiting, which frees both.
#
# Usage: bench/tenant-noisy.sh [SECONDS]     (default 10)
# Env: SHELLAC=binary (else a release build), CONNS=8, FLOOD=16,
# A_QUOTA="cache_bytes=1m" (tenant a's standing quota),
# VARIANTS="requests=none|requests=1|request_rate=1000|requests=1 request_queue=0"
# (a's requests/request_rate/request_queue quota per flood phase,
# |-separated; the others are lifted first), ALONE="cpu_ms=none|cpu_ms=1000"
# (b's quota per phase alone: what CPU-time accounting costs), ROUNDS=2,
# PORT_BASE=18500. SMOKE=1: 2 s, one round.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ROUNDS=${ROUNDS:-2}
if [ -n "${SMOKE:-}" ]; then SECS=2; ROUNDS=1; fi
VARIANTS=${VARIANTS:-requests=none|requests=1|request_rate=1000|requests=1 request_queue=0}
ALONE=${ALONE:-cpu_ms=none|cpu_ms=1000}
CONNS=${CONNS:-8}
FLOOD=${FLOOD:-16}
A_QUOTA=${A_QUOTA:-cache_bytes=1m}
BASE=${PORT_BASE:-18500}
ORIGIN=$((BASE)); PROXY=$((BASE + 1)); CLI=$((BASE + 2))

. bench/common.sh wrk

bench_workdir

cat >"$work/tenant.vcl" <<EOF
vcl 4.1;
backend origin { .host = "127.0.0.1"; .port = "$ORIGIN"; }
sub vcl_backend_response { set beresp.ttl = 1h; }
EOF
cat >"$work/router.vcl" <<EOF
vcl 4.1;
backend origin { .host = "127.0.0.1"; .port = "$ORIGIN"; }
sub vcl_recv {
    if (req.http.host == "a") { return (vcl(la)); }
    if (req.http.host == "b") { return (vcl(lb)); }
}
EOF
cat >"$work/flood.lua" <<'EOF'
counter = 0
request = function()
    counter = counter + 1
    return wrk.format("GET", "/bytes/16384?n=" .. counter .. "-" .. math.random(1000000000), { ["Host"] = "a" })
end
EOF

"$SHELLAC" demo-origin -a "127.0.0.1:$ORIGIN" >/dev/null 2>&1 & pids+=($!)
taskset -c 0 "$SHELLAC" serve -n "$work/inst" -a "127.0.0.1:$PROXY" -T "127.0.0.1:$CLI" \
    -f "$work/tenant.vcl" -s malloc,256m >/dev/null 2>&1 & pids+=($!)
wait_http $ORIGIN $PROXY
adm() { "$SHELLAC" adm -T "127.0.0.1:$CLI" "$@" >/dev/null; }
adm vcl.label la boot
adm vcl.label lb boot
# shellcheck disable=SC2086
adm tenant.quota la $A_QUOTA
adm tenant.add lb
adm vcl.load router "$work/router.vcl"
adm vcl.use router
url=http://127.0.0.1:$PROXY/bytes/1024
curl -s -o /dev/null -H "Host: b" "$url"

nuked() {
    "$SHELLAC" adm -T "127.0.0.1:$CLI" tenant.list -j |
        python3 -c "import json,sys; print({t['name']: t['nuked'] for t in json.load(sys.stdin)}.get('$1', 0))"
}

# flood_phase QUOTA: a's quota set to QUOTA, b measured while a floods;
# prints "b_rps b_p50 b_p99 flood_rps flood_503".
flood_phase() {
    # shellcheck disable=SC2086
    adm tenant.quota la requests=none request_rate=none request_queue=none $1
    taskset -c 1 wrk -t1 -c"$FLOOD" -d"$((SECS + 2))s" -s "$work/flood.lua" \
        "http://127.0.0.1:$PROXY" >"$work/flood.out" 2>&1 &
    local flood=$!
    sleep 1
    local b
    b=$(wrk_run "$CONNS" "$SECS" -H "Host: b" "$url")
    wait "$flood"
    echo "$b $(awk '/Requests\/sec/ { print $2 }' "$work/flood.out") \
        $(awk '/Non-2xx/ { n = $NF } END { print n + 0 }' "$work/flood.out")"
}

IFS='|' read -r -a variants <<<"$VARIANTS"
IFS='|' read -r -a alone_variants <<<"$ALONE"
rows=()
for round in $(seq "$ROUNDS"); do
    for v in "${alone_variants[@]}"; do
        # shellcheck disable=SC2086
        adm tenant.quota lb $v
        read -r rps p50 p99 <<<"$(wrk_run "$CONNS" "$SECS" -H "Host: b" "$url")"
        rows+=("| $round | alone, b's \`$v\` | $rps | $p50 | $p99 | - | - |")
    done
    adm tenant.quota lb cpu_ms=none
    for v in "${variants[@]}"; do
        read -r rps p50 p99 frps f503 <<<"$(flood_phase "$v")"
        rows+=("| $round | a floods, a's \`$v\` | $rps | $p50 | $p99 | $frps | $f503 |")
    done
done
echo "| round | tenant b's 1 KiB hits ($CONNS conns, $SECS s); a: $A_QUOTA, $FLOOD conns of 16 KiB misses | b req/s | b p50 ms | b p99 ms | a req/s | a 503s |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
echo
echo "evictions: tenant a $(nuked la), tenant b $(nuked lb), default $(nuked '*')"
