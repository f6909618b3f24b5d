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
