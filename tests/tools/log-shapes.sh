#!/usr/bin/env bash
# Side by side: the tags varnishd and Shellac log for the same requests.
# Both serve the same VCL in front of Shellac's demo origin; a fixed list
# of requests (miss, hit, pass, synth, 404, 417, pipe, bad request, gunzip,
# ranges) goes
# to each (ESI pages too, which a VCL with beresp.do_esi assembles);
# then each log is read with `-d -g request` and reduced to one
# line per transaction: its type and its tags in order (values dropped,
# runs of the same tag folded into `Tag*N`). The two lists are diffed.
# Exit status 1 when they differ.
#
# Usage: tests/tools/log-shapes.sh [VCL]    (default samples/default.vcl;
#        tests/tools/log-shapes.vcl reaches ESI, do_gzip, uncacheable, keep)
# Env: SHELLAC=binary (else target/debug/shellac), VARNISHD=/usr/sbin/varnishd,
#      KEEP=PREFIX: also keep both logs as PREFIX.varnishd, PREFIX.shellac
set -euo pipefail
cd "$(dirname "$0")/../.."
SHELLAC=${SHELLAC:-target/debug/shellac}
VARNISHD=${VARNISHD:-/usr/sbin/varnishd}
vcl=${1:-samples/default.vcl}
work=$(mktemp -d)
chmod 755 "$work" # varnishd reads the VCL as its own user
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    if [ -f "$work/v/varnishd.pid" ]; then
        # The manager stops its child (which holds the port) before it
        # exits: wait for that, so a next run can have the port.
        local v
        v=$(cat "$work/v/varnishd.pid")
        kill "$v" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$v" 2>/dev/null || break; sleep 0.1; done
    fi
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$SHELLAC" demo-origin -a 127.0.0.1:18180 >/dev/null 2>&1 &
pids+=($!)
# Every backend to the demo origin, but one marked `# down` (a closed port).
sed -E '/# down/!{s/"(127\.0\.0\.1|localhost)"/"127.0.0.1"/; s/\.port = "[0-9]+"/.port = "18180"/}' "$vcl" >"$work/t.vcl"
"$VARNISHD" -n "$work/v" -a 127.0.0.1:18181 -f "$work/t.vcl" -P "$work/v/varnishd.pid" \
    -p vsl_mask=+Hash >/dev/null
"$SHELLAC" serve -a 127.0.0.1:18182 -f "$work/t.vcl" -n "$work/s" -p vsl_mask=+Hash >"$work/s.out" 2>&1 &
pids+=($!)
for port in 18180 18181 18182; do
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$port/" && break
        sleep 0.1
    done
done
curl -s -o /dev/null http://127.0.0.1:18181/ # one request each to warm up; not shown
curl -s -o /dev/null http://127.0.0.1:18182/

requests() { # port
    local u=http://127.0.0.1:$1
    curl -s -o /dev/null "$u/static/app.css"
    curl -s -o /dev/null "$u/static/app.css"
    curl -s -o /dev/null -X POST -d x=1 "$u/echo"
    curl -s -o /dev/null "$u/bytes/nope"
    curl -s -o /dev/null -H 'Expect: bogus' "$u/echo"
    curl -s -o /dev/null -H 'Cookie: a=b' "$u/private"
    # A request with a header line without a colon: 400.
    timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/'"$1"'
        printf "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n" >&3; cat <&3' >/dev/null || true
    curl -s -o /dev/null "$u/gzip/100"
    curl -s -o /dev/null -H 'Accept-Encoding: gzip' "$u/gzip/100"
    curl -s -o /dev/null -r 0-3 "$u/gzip/100"
    curl -s -o /dev/null -r 0-3 "$u/bytes/100"
    curl -s -o /dev/null -r 200-300 "$u/bytes/100"
    curl -s -o /dev/null "$u/esi/page/2"
    curl -s -o /dev/null -I "$u/bytes/10"
    curl -s -o /dev/null --http1.0 -I "$u/bytes/11"
    curl -s -o /dev/null "$u/synth"
    curl -s -o /dev/null "$u/down"
    curl -s -o /dev/null "$u/restart"
    curl -s -o /dev/null "$u/log"
    curl -s -o /dev/null -X POST -d 'a=b' "$u/cached-body"
    # (A gzipped ESI page for a client without gzip is left out: varnishd
    # logs a `Gzip` record for the gunzip of the assembled page, which
    # Shellac, inflating it piece by piece, does not.)
    curl -s -o /dev/null -H 'Accept-Encoding: gzip' "$u/esi/gzpage/2"
    curl -s -o /dev/null -H 'Accept-Encoding: gzip' "$u/esi/gzpage/2"
    curl -s -o /dev/null "$u/bytes/13?grace"
    curl -s -o /dev/null "$u/bytes/12?hfp"
    curl -s -o /dev/null "$u/bytes/12?hfp"
    curl -s -o /dev/null -H 'If-None-Match: "css-1"' "$u/static/app.css"
    curl -s -o /dev/null -H 'If-Modified-Since: Thu, 01 Jan 2099 00:00:00 GMT' "$u/static/app.css"
    curl -s -o /dev/null "$u/bytes/99"
    curl -s -o /dev/null -H 'Accept-Encoding: gzip' "$u/bytes/99"
    curl -s -o /dev/null "$u/bytes/10?unc"
    curl -s -o /dev/null "$u/bytes/10?keep"
    curl -s -o /dev/null -X PURGE "$u/"
    curl -s -o /dev/null -X FOO "$u/"
}
requests 18181
requests 18182
# The grace object expires (its TTL is 1 s): a stale hit and a background
# fetch on each.
sleep 1.2
curl -s -o /dev/null "http://127.0.0.1:18181/bytes/13?grace"
curl -s -o /dev/null "http://127.0.0.1:18182/bytes/13?grace"

# Reduces `-g request` output to one line per transaction. Within a
# group, the request comes first and its children follow sorted: the
# order children are logged in is the order they end, which races in
# varnishd as much as in Shellac (a streaming fetch against the ESI
# includes it feeds, say), so only which children there are is compared.
shapes() {
    awk '
        function flush() { if (last != "") line = line " " last (n > 1 ? "*" n : ""); last = ""; n = 0
                           if (line != "") print g, (seen++ ? 1 : 0), line; line = "" }
        /^\*+ +<< / || /^-+ +<< / { flush(); line = $3; next }
        /^[-*]+ +[A-Za-z_]+/ {
            t = $2
            if (t == last) { n++; next }
            if (last != "") line = line " " last (n > 1 ? "*" n : "")
            last = t; n = 1; next }
        /^$/ { flush(); g++; seen = 0 }
        END { flush() }
    ' | LC_ALL=C sort -t' ' -k1,1n -k2,2n -k3 | cut -d' ' -f3-
}
# Wait until both logs have the last request's End.
for _ in $(seq 50); do
    varnishlog -d -n "$work/v" -g request 2>/dev/null | grep -q 'ReqMethod *FOO' &&
        "$SHELLAC" log -d -n "$work/s" -g request 2>/dev/null | grep -q 'ReqMethod *FOO' && break
    sleep 0.1
done
varnishlog -d -n "$work/v" -g request | shapes >"$work/varnishd.shapes"
"$SHELLAC" log -d -n "$work/s" -g request | shapes >"$work/shellac.shapes"
if [ -n "${KEEP:-}" ]; then
    varnishlog -d -n "$work/v" -g request >"$KEEP.varnishd"
    "$SHELLAC" log -d -n "$work/s" -g request >"$KEEP.shellac"
fi
if diff -u "$work/varnishd.shapes" "$work/shellac.shapes"; then
    echo "same tags in the same order ($(wc -l <"$work/varnishd.shapes") transactions)"
else
    exit 1
fi
