#!/usr/bin/env bash
# Many VCLs in one process (issue 8): loads COUNT small, distinct VCLs
# (each a backend, a few lines of vcl_recv/vcl_deliver and a string of
# its own, so the whole-module cache never hits) over one admin CLI
# connection, then reports the load time per VCL (round trip of
# `vcl.inline`, median and p99) and the resident memory per loaded VCL
# (VmRSS after minus before, over COUNT), after one request through a
# label to each of the first 10 (so some carry warm instances too).
# Goal: <= 1 MiB and <= 10 ms per VCL.
#
# Usage: bench/many-vcl.sh [COUNT]     (default 1000)
# Env: SHELLAC=binary (else a release build), PORT_BASE=18400.
# SMOKE=1: 20 VCLs.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-1000}
if [ -n "${SMOKE:-}" ]; then COUNT=20; fi
BASE=${PORT_BASE:-18400}
ORIGIN=$((BASE)); PROXY=$((BASE + 1)); CLI=$((BASE + 2))

. bench/common.sh

bench_workdir

"$SHELLAC" demo-origin -a "127.0.0.1:$ORIGIN" >/dev/null 2>&1 & pids+=($!)
"$SHELLAC" serve -n "$work/inst" -a "127.0.0.1:$PROXY" -T "127.0.0.1:$CLI" \
    -b "127.0.0.1:$ORIGIN" -s malloc,256m >/dev/null 2>&1 & pids+=($!)
serve_pid=$!
wait_http $ORIGIN $PROXY

python3 - "$CLI" "$COUNT" "$ORIGIN" "$serve_pid" "$PROXY" <<'EOF'
import socket, sys, time, statistics, urllib.request

cli, count, origin, pid, proxy = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]

def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0

s = socket.create_connection(("127.0.0.1", cli))
f = s.makefile("rb")

def answer():
    head = f.readline().split()
    status, length = int(head[0]), int(head[1])
    body = f.read(length + 1)[:-1]
    return status, body.decode(errors="replace")

def cmd(line):
    s.sendall(line.encode() + b"\n")
    return answer()

answer()  # banner
before = rss()
times = []
for i in range(count):
    vcl = (
        'vcl 4.1; backend o { .host = "127.0.0.1"; .port = "%s"; } '
        'sub vcl_recv { if (req.url ~ "^/t%d/") { set req.url = regsub(req.url, "^/t%d", ""); } '
        'set req.http.X-Tenant = "tenant-%d"; } '
        'sub vcl_deliver { set resp.http.X-Tenant = req.http.X-Tenant; }'
    ) % (origin, i, i, i)
    quoted = vcl.replace("\\", "\\\\").replace('"', '\\"')
    t0 = time.perf_counter()
    st, body = cmd('vcl.inline t%d "%s"' % (i, quoted))
    times.append(time.perf_counter() - t0)
    if st != 200:
        sys.exit(f"vcl.inline t{i}: {st} {body}")
loaded = rss()
# Route through labels to the first 10, so they have warm instances.
for i in range(min(10, count)):
    st, body = cmd("vcl.label l%d t%d" % (i, i))
    if st != 200:
        sys.exit(f"vcl.label: {st} {body}")
router = 'vcl 4.1; backend o { .host = "127.0.0.1"; .port = "%s"; } sub vcl_recv { %s }' % (
    origin,
    " ".join('if (req.url ~ "^/t%d/") { return (vcl(l%d)); }' % (i, i) for i in range(min(10, count))),
)
st, body = cmd('vcl.inline router "%s"' % router.replace('"', '\\"'))
assert st == 200, body
assert cmd("vcl.use router")[0] == 200
for i in range(min(10, count)):
    r = urllib.request.urlopen(f"http://127.0.0.1:{proxy}/t{i}/bytes/10")
    assert r.headers["X-Tenant"] == f"tenant-{i}", r.headers
after = rss()
times.sort()
ms = [t * 1000 for t in times]
print(f"| VCLs | load ms median | load ms p99 | load ms mean | RSS before | RSS after loads | RSS per VCL |")
print(f"| --- | --- | --- | --- | --- | --- | --- |")
print(
    f"| {count} | {statistics.median(ms):.2f} | {ms[int(len(ms) * 0.99) - 1]:.2f} | {statistics.mean(ms):.2f} "
    f"| {before / 2**20:.1f} MiB | {loaded / 2**20:.1f} MiB | {(loaded - before) / count / 2**10:.0f} KiB |"
)
print(f"\nafter 10 labels and requests through them: {after / 2**20:.1f} MiB "
      f"({(after - before) / count / 2**10:.0f} KiB per VCL)")
EOF
