#!/usr/bin/env bash
# Compile time, Shellac vs varnishd, over the shared corpus of real VCL.
#
# For every corpus file that both compilers accept, it times, in alternating
# rounds (A B A B …):
#   shellac compile FILE --native    VCL → wasm → native code (what vcl.load costs)
#   varnishd -C -f FILE              VCL → C only (varnishd then still runs cc)
#   varnishd -C + cc                 VCL → C → shared object (what vcl.load costs)
# and prints the median of each and the ratios.
#
# Usage: bench/compile.sh [ROUNDS]     (default 5; installs varnish if missing)
# Env: SHELLAC=path to a built binary (else it builds one), CORPUS=dir.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
CORPUS=${CORPUS:-../shared/corpus}

# varnish-modules: the corpus's verdicts were taken with it (xkey, cookie, …).
if ! command -v varnishd >/dev/null || [ ! -e /usr/lib/x86_64-linux-gnu/varnish/vmods/libvmod_xkey.so ]; then
    apt-get update -qq && apt-get install -y -qq varnish varnish-modules >/dev/null
fi
if [ -z "${SHELLAC:-}" ]; then
    cargo build --release --locked -p shellac -q
    SHELLAC=$PWD/target/release/shellac
fi
SHELLAC=$(realpath "$SHELLAC")  # the loop below runs from the work directory

work=$(mktemp -d)
chmod 755 "$work"  # varnishd reads the files as its unprivileged user
trap 'rm -rf "$work"' EXIT
# Lay the files out at their paths in their repositories (they include each
# other by those paths); /etc/varnish/ includes map to the repository root.
files=()
while IFS=$'\t' read -r file repo path _commit _license kind verdict _err; do
    [ "$file" = file ] && continue
    # A raw template shares its path with its rendered form; only the
    # rendered one is valid VCL.
    [ "$kind" = template-raw ] && continue
    root="$work/$(echo "$file" | awk -F'__' '{print $1"__"$2}')"
    mkdir -p "$root/$(dirname "$path")"
    # Backend host names become 127.0.0.1, as for the manifest's verdicts:
    # varnishd resolves them while compiling and this machine has no DNS.
    sed -e "s|\"/etc/varnish/|\"$root/|g" \
        -e 's/\(\.host[[:space:]]*=[[:space:]]*\)"[^"]*"/\1"127.0.0.1"/' \
        "$CORPUS/vcl/$file" > "$root/$path"
    if [ "$verdict" = accept ] && [ "$kind" != include-fragment ]; then
        files+=("$root/$path")
    fi
done < "$CORPUS/MANIFEST.tsv"

cd "$work"
both=()
for f in "${files[@]}"; do
    if ! "$SHELLAC" compile "$f" --native >/dev/null 2>"$work/err"; then
        echo "shellac refuses ${f#"$work"/}: $(grep -v "^Message from" "$work/err" | head -2 | tr "\\n" " ")"
    elif ! varnishd -C -p vcl_path="$(dirname "$f")" -f "$f" >/dev/null 2>"$work/err"; then
        echo "varnishd refuses ${f#"$work"/}: $(grep -v '^Could not delete' "$work/err" | head -2 | tr '\n' ' ')"
    else
        both+=("$f")
    fi
done
echo "files compiled by both: ${#both[@]} of ${#files[@]} accepted by varnishd"

cc_cmd() { gcc -std=gnu99 -O2 -g -Wall -pthread -fpic -shared -o "$work/vgc.so" -x c "$1"; }

now() { date +%s.%N; }
declare -a t_shellac t_vcc t_vcc_cc
for ((r = 0; r < ROUNDS; r++)); do
    s=$(now)
    for f in "${both[@]}"; do "$SHELLAC" compile "$f" --native >/dev/null 2>&1; done
    t_shellac+=("$(echo "$(now) - $s" | bc)")
    s=$(now)
    for f in "${both[@]}"; do varnishd -C -p vcl_path="$(dirname "$f")" -f "$f" >/dev/null 2>&1; done
    t_vcc+=("$(echo "$(now) - $s" | bc)")
    s=$(now)
    for f in "${both[@]}"; do
        varnishd -C -p vcl_path="$(dirname "$f")" -f "$f" 2>&1 >/dev/null | grep -v '^Could not delete' >"$work/vgc.c" || true
        cc_cmd "$work/vgc.c" 2>/dev/null || true
    done
    t_vcc_cc+=("$(echo "$(now) - $s" | bc)")
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ms=$(median "${t_shellac[@]}")
mv=$(median "${t_vcc[@]}")
mvc=$(median "${t_vcc_cc[@]}")
n=${#both[@]}
printf '\n%-34s %10s %12s\n' "compiler (over $n files)" "total s" "per file ms"
printf '%-34s %10.3f %12.1f\n' "shellac compile --native" "$ms" "$(echo "$ms * 1000 / $n" | bc -l)"
printf '%-34s %10.3f %12.1f\n' "varnishd -C" "$mv" "$(echo "$mv * 1000 / $n" | bc -l)"
printf '%-34s %10.3f %12.1f\n' "varnishd -C + cc (full load)" "$mvc" "$(echo "$mvc * 1000 / $n" | bc -l)"
printf '\nratio shellac / varnishd -C:        %.3f\n' "$(echo "$ms / $mv" | bc -l)"
printf 'ratio shellac / varnishd -C + cc:   %.3f\n' "$(echo "$ms / $mvc" | bc -l)"
