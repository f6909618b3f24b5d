#!/bin/sh
# Ask the real varnishd (Debian's 7.1.1) whether it compiles each VCL that
# the conformance cases load, and record the answers in
# tests/conformance-vcl/verdicts.tsv. See tests/tools/README.md.
#
# Usage: tests/tools/varnishd-verdicts.sh [OUT.tsv]
# Env:   VARNISHD (default: varnishd), CORPUS (default: ../shared/conformance/varnish-7.1.1),
#        EXTRACT_ARGS (extra arguments for the extractor, e.g. --all).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/tests/conformance-vcl/verdicts.tsv}
varnishd=${VARNISHD:-varnishd}
corpus=${CORPUS:-$root/../shared/conformance/varnish-7.1.1}

command -v "$varnishd" >/dev/null 2>&1 || { echo "varnishd not found" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/vcl-verdicts.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
# varnishd reads the VCL as an unprivileged user.
chmod 755 "$work"

# 1. Extract the VCLs (the extractor prints per-tier counts on stderr).
(cd "$root" && cargo run -q -p vtc --example extract_vcls -- "$work/vcl" ${EXTRACT_ARGS:-} "$corpus")

# 2. Compile each with varnishd -C in a private work directory.
mkdir -p "$work/n" "$(dirname "$out")"
tab=$(printf '\t')
{
    printf 'vtc\tn\tkind\ttier\texpected\tvarnishd\tfirst_error\terrvcl_msg_found\tnote\n'
    tail -n +2 "$work/vcl/manifest.tsv" |
    while IFS="$tab" read -r vtc n kind tier expected line instance file params msg; do
        vcl="$work/vcl/$file"
        # Parameters the test set on the instance before loading this VCL,
        # as far as they steer VCC (others may not even exist on Linux).
        set --
        if [ "$params" != - ]; then
            for kv in $params; do
                case "$kv" in
                vcc_*=* | vmod_path=* | vcl_path=*) set -- "$@" -p "$kv" ;;
                esac
            done
        fi
        if "$varnishd" -n "$work/n" "$@" -C -f "$vcl" >/dev/null 2>"$work/err"; then
            verdict=accept
        else
            verdict=reject
        fi
        # The message proper is the line after "Message from VCC-compiler:";
        # otherwise the first line that is not varnishd's boot-dir noise.
        first=$(awk '/^Message from VCC-compiler:/ { getline; print; exit }' "$work/err")
        if [ -z "$first" ] && [ "$verdict" = reject ]; then
            first=$(grep -v "^Could not delete 'vcl_boot" "$work/err" | grep -v '^[[:space:]]*$' | head -n 1 || true)
        fi
        [ "$verdict" = accept ] && first=""
        # Report paths the way varnishtest would see them.
        first=$(printf '%s' "$first" | tr '\t' ' ' |
            sed -e "s|'$vcl'|'<vcl.inline>'|g" -e "s|$work/vcl/||g")
        # varnishtest loads VCL as '<vcl.inline>'; -errvcl messages quote it.
        found=-
        if [ "$kind" = errvcl ]; then
            # -errvcl MSG is a substring match over the whole (multi-line)
            # answer; awk -v undoes the manifest's backslash escapes.
            found=$(sed "s|'$vcl'|'<vcl.inline>'|g" "$work/err" |
                awk -v m="$msg" '{ s = s $0 "\n" } END { print (index(s, m) ? "yes" : "no") }')
        fi
        note=""
        mods=$(sed -n 's/^[[:space:]]*import[[:space:]]\{1,\}\([A-Za-z0-9_]\{1,\}\).*/\1/p' "$vcl" |
            grep -v -x -e std -e directors | sort -u | tr '\n' ' ' | sed 's/ $//')
        [ -n "$mods" ] && note="vmods: $mods"
        if grep -q 'Could not find VMOD\|Could not open VMOD\|Could not load VMOD' "$work/err"; then
            note="${note:+$note; }vmod not found by Debian's varnishd"
        fi
        case "$verdict:$first" in
        reject:*"Cannot read file"* | reject:*"glob pattern matched no files"*)
            note="${note:+$note; }includes a file the test creates at run time" ;;
        reject:*"Symbol not found"*)
            if grep -q 'vcl(' "$vcl"; then
                note="${note:+$note; }names VCL labels that exist only in the running varnishd"
            fi ;;
        reject:*"could not be resolved"* | reject:*"resolves to too many addresses"*)
            note="${note:+$note; }depends on DNS" ;;
        esac
        if [ "$kind" = errvcl ] && [ "$verdict" = accept ]; then
            note="${note:+$note; }VCC accepts it: the test's failure comes when loading (vcl_init, backend checks) or from its environment"
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
            "$vtc" "$n" "$kind" "$tier" "$expected" "$verdict" "$first" "$found" "$note"
    done
} >"$out.tmp"
mv "$out.tmp" "$out"

# 3. Summary.
awk -F'\t' 'NR > 1 {
        t[$4]++; if ($6 == "accept") a[$4]++
        if ($5 != "unknown" && $5 != $6) d[$4]++
        if ($3 == "errvcl") { e[$4]++; if ($8 == "yes") m[$4]++ }
    }
    END {
        for (k in t)
            printf "tier %s: %d VCLs, varnishd accepts %d, disagrees with the test %d, -errvcl %d (message found %d)\n",
                k, t[k], a[k], d[k], e[k], m[k]
    }' "$out" | sort >&2
echo "wrote $out" >&2
