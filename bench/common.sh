# Sourced by the bench scripts (from the repository root): installs the
# Debian tools named as arguments when missing, and sets SHELLAC to a
# release build unless the caller gave one.
# Usage: . bench/common.sh varnish wrk
need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
for pkg in "$@"; do
    case "$pkg" in
        varnish) need varnishd varnish ;;
        *) need "$pkg" "$pkg" ;;
    esac
done
need taskset util-linux
if [ -z "${SHELLAC:-}" ]; then
    cargo build --release --locked -p shellac -q
    SHELLAC=$PWD/target/release/shellac
fi

# wrk_run CONNS SECS WRK_ARGS…: one wrk run (one thread, on CPU 1) and
# its "req/s p50_ms p99_ms".
wrk_run() {
    local conns=$1 secs=$2
    shift 2
    taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" --latency "$@" 2>/dev/null | awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /Requests\/sec/ { rps = $2 }
        $1 == "50.000%" || $1 == "50%" { p50 = ms($2) }
        $1 == "99.000%" || $1 == "99%" { p99 = ms($2) }
        END { printf "%s %s %s\n", rps, p50, p99 }'
}
# The median of the numbers on standard input (0 when there are none).
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print 0 }'; }
# ratio A B: A / B with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# wait_http PORT...: until each port answers HTTP (10 s at most each).
wait_http() {
    local port
    for port in "$@"; do
        for _ in $(seq 100); do
            curl -s -o /dev/null "http://127.0.0.1:$port/bytes/1" && break
            sleep 0.1
        done
    done
}

# bench_workdir: a scratch directory in $work and a $pids list, both cleaned
# up (processes killed, directory removed) when the script exits.
bench_workdir() {
    work=$(mktemp -d)
    pids=()
    trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
}
