#!/usr/bin/env bash
# A noisy neighbour (issue 8, "a tenant over quota degrades alone"): tenant
# b's cache hits (1 KiB, CONNS connections) measured alone, then while
# tenant a floods its 1 MiB cache quota with unique 16 KiB misses
# (FLOOD connections). Prints b's req/s, p50/p99, its evictions (must
# stay 0) and a's. Both wrks share CPU 1 and Shellac has CPU 0, so the
# flood also takes CPU from b: the quota keeps b's objects, not its
# share of the CPU.
#
# Usage: bench/tenant-noisy.sh [SECONDS]     (default 10)
# Env: SHELLAC=binary (else a release build), CONNS=8, FLOOD=16,
# A_QUOTA="cache_bytes=1m" (tenant a's quota, e.g. add backend_conns=2),
# PORT_BASE=18500. SMOKE=1: 2 s.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
if [ -n "${SMOKE:-}" ]; then SECS=2; fi
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

alone=$(wrk_run "$CONNS" "$SECS" -H "Host: b" "$url")
taskset -c 1 wrk -t1 -c"$FLOOD" -d"$((SECS + 2))s" -s "$work/flood.lua" \
    "http://127.0.0.1:$PROXY" >"$work/flood.out" 2>&1 & flood=$!
sleep 1
noisy=$(wrk_run "$CONNS" "$SECS" -H "Host: b" "$url")
wait "$flood"
read -r a_rps a_p50 a_p99 <<<"$alone"
read -r n_rps n_p50 n_p99 <<<"$noisy"
flood_rps=$(awk '/Requests\/sec/ { print $2 }' "$work/flood.out")
flood_bad=$(awk '/Non-2xx/ { print $NF }' "$work/flood.out")
echo "| tenant b's 1 KiB hits ($CONNS conns, $SECS s) | req/s | p50 ms | p99 ms |"
echo "| --- | --- | --- | --- |"
echo "| alone | $a_rps | $a_p50 | $a_p99 |"
echo "| while a floods ($FLOOD conns, $flood_rps req/s of 16 KiB misses, ${flood_bad:-0} of them 503; a's quota: $A_QUOTA) | $n_rps | $n_p50 | $n_p99 |"
echo
echo "evictions: tenant a $(nuked la), tenant b $(nuked lb), default $(nuked '*')"
