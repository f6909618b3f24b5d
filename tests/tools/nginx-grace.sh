#!/usr/bin/env bash
# Shellac in front of Debian's nginx with samples/default.vcl: the second
# request is a hit (two XIDs, Age), and once nginx is stopped the object is
# still served in grace. Usage: tests/tools/nginx-grace.sh [SHELLAC]
set -euo pipefail
cd "$(dirname "$0")/../.."
shellac=${1:-target/debug/shellac}
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
work=$(mktemp -d)
trap 'kill $(cat "$work/nginx.pid" 2>/dev/null) $serve 2>/dev/null || true; rm -rf "$work"' EXIT
chmod 755 "$work"
mkdir -p "$work/www"
echo "hello from nginx" > "$work/www/index.html"
cat > "$work/nginx.conf" <<CONF
daemon on; pid $work/nginx.pid; error_log $work/error.log;
events {}
http { access_log off; server { listen 127.0.0.1:8080; root $work/www; } }
CONF
nginx -c "$work/nginx.conf"
# A short TTL and a long grace, so the object is stale but in grace soon.
"$shellac" serve -a 127.0.0.1:6081 -f samples/default.vcl -p default_ttl=2 -p default_grace=60 &
serve=$!
# The probe makes the backend healthy first (it starts sick, as varnishd).
for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:6081/)" = 200 ] && break
    sleep 0.1
done
hit=$(curl -s -D - -o /dev/null http://127.0.0.1:6081/)
echo "$hit" | grep -i '^x-varnish: [0-9]* [0-9]*' || { echo "second request not a hit"; exit 1; }
echo "$hit" | grep -i '^age:' || { echo "no Age"; exit 1; }
kill "$(cat "$work/nginx.pid")"; rm -f "$work/nginx.pid"
sleep 3
stale=$(curl -s -D - http://127.0.0.1:6081/)
echo "$stale" | grep -q "hello from nginx" || { echo "not served in grace"; exit 1; }
echo "$stale" | grep -i '^age:'
echo "nginx-grace: hit and grace OK"
