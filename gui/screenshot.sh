#!/usr/bin/env bash
# screenshot.sh OUTDIR: run the tray app under Xvfb against a real helper
# (its own socket and directories in a temp dir, no tunnel), import the
# example profile through the helper's API and save PNGs of the window.
# Needs root (the helper), bin/mirage and bin/mirage-helper (make build gui).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist/screenshots}"
mkdir -p "$out"
sh packaging/scripts/apt-ensure.sh xvfb imagemagick curl python3
tmp="$(mktemp -d /tmp/mirage-shot.XXXXXX)"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
sock="$tmp/helper.sock"
bin/mirage-helper run --socket "$sock" --state-dir "$tmp/state" --profiles-dir "$tmp/profiles" >"$tmp/helper.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { echo "helper did not start:"; cat "$tmp/helper.log"; exit 1; }
body="$(python3 -c 'import json,sys; print(json.dumps({"name": "example", "toml": open(sys.argv[1]).read()}))' packaging/examples/client.toml)"
curl -sS --unix-socket "$sock" -X POST -H 'Content-Type: application/json' --data "$body" http://helper/v1/profiles/import >"$tmp/import.json" ||
	echo "import failed (screenshot without a profile): $(cat "$tmp/import.json" 2>/dev/null)"

disp=":$((90 + RANDOM % 9))"
Xvfb "$disp" -screen 0 1024x700x24 -nolisten tcp >"$tmp/xvfb.log" 2>&1 &
pids+=($!)
sleep 1
mkdir -m 0700 "$tmp/xdg"
DISPLAY="$disp" XDG_RUNTIME_DIR="$tmp/xdg" HOME="$tmp" bin/mirage --socket "$sock" >"$tmp/gui.log" 2>&1 &
pids+=($!)
sleep 6
DISPLAY="$disp" import -window root "$out/mirage-window.png"
echo "saved $out/mirage-window.png"
