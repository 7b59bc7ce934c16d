#!/usr/bin/env bash
# screenshot.sh [OUTDIR]: screenshots of the tray app against a real tunnel.
#
# Builds the demo's namespaces (packaging/scripts/netns-topology.sh, with
# the prefix mirage-shot), runs mirage-server in the server namespace and
# `mirage-helper run` in the client namespace (its API socket is a file in a
# temp dir, so the GUI runs outside the namespace), imports the server's
# client.toml as profile "demo", and runs the GUI under Xvfb with an
# xfce4-panel as the StatusNotifierItem tray host, all in a private D-Bus
# session (dbus-run-session). It saves, in OUTDIR (default dist/screenshots):
#   01-connected.png     the window, connected, with iperf3 traffic on the graph
#   02-import-error.png  the window after pasting a client.toml with a bad key
#   03-tray-menu.png     the screen with the tray menu open
# Everything is torn down on exit. Needs root, bin/mirage, bin/mirage-server
# and bin/mirage-helper (make build gui); installs the Debian packages it uses.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$REPO/bin"
OUT="$(realpath -m "${1:-$REPO/dist/screenshots}")"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'screenshot: %s\n' "$*" >&2; exit 1; }

((EUID == 0)) || die "needs root (network namespaces, TUN devices, the helper): sudo $0 $*"

# Outer run: install what is missing, then start over inside a private
# D-Bus session, which the tray (StatusNotifierItem) and xfce4-panel need.
if [[ -z ${MIRAGE_SHOT_INNER:-} ]]; then
	sh "$REPO/packaging/scripts/apt-ensure.sh" xvfb imagemagick xdotool dbus-x11 xfce4-panel x11-utils xclip \
		iproute2 iperf3 nftables curl python3
	for b in mirage mirage-server mirage-helper; do
		[[ -x $BIN/$b ]] || die "$BIN/$b is missing (make build gui)"
	done
	[[ -c /dev/net/tun ]] || die "/dev/net/tun is missing (modprobe tun?)"
	# The bus daemon and the services it starts are chatty: their stderr
	# goes to /dev/null, ours comes back through fd 3.
	exec 3>&2
	exec env MIRAGE_SHOT_INNER=1 dbus-run-session -- bash "${BASH_SOURCE[0]}" "$OUT" 2>/dev/null
fi
exec 2>&3 3>&-

NS_PREFIX=mirage-shot
source "$REPO/packaging/scripts/netns-topology.sh"

WORK=""
HELPER_PID="" XVFB_PID="" PANEL_PID="" GUI_PID="" IPERF_UP_PID="" IPERF_DOWN_PID="" IPERF_C_PIDS=() XCLIP_PID=""
SOCK="" DISPLAY_NUM="" WIN=""
readonly WIN_W=860 WIN_H=690 # window size; the Paste link button is WIN_H-103 from its top

cleanup() {
	local status=$? p
	set +e
	if ((status != 0)) && [[ -n $WORK ]]; then
		for f in server.log helper.log gui.log panel.log xvfb.log; do
			[[ -s $WORK/$f ]] && { echo "--- last lines of $f"; tail -n 15 "$WORK/$f"; }
		done >&2
	fi
	for p in "${IPERF_C_PIDS[@]}"; do stop "$p"; done
	stop "$XCLIP_PID"
	stop "$GUI_PID"
	stop "$PANEL_PID"
	stop "$XVFB_PID"
	stop "$HELPER_PID" # takes the tunnel down
	stop "$SERVER_PID"
	stop "$IPERF_UP_PID"
	stop "$IPERF_DOWN_PID"
	delete_namespaces
	[[ -n $WORK ]] && rm -rf "$WORK"
	((status != 0)) && echo "screenshot: FAILED (exit status $status); everything was torn down" >&2
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# api METHOD PATH [JSON]: one request to the helper's API; prints the body,
# fails on an HTTP error.
api() {
	curl -sS --fail-with-body --max-time 30 --unix-socket "$SOCK" -X "$1" -H 'Content-Type: application/json' \
		${3:+--data "$3"} "http://helper$2"
}

json_import() { # json_import NAME FILE: an ImportRequest body
	python3 -c 'import json,sys; print(json.dumps({"name": sys.argv[1], "toml": open(sys.argv[2]).read()}))' "$1" "$2"
}

start_helper() {
	say "Starting mirage-helper run in $NS_CLI (API socket $SOCK)"
	ip netns exec $NS_CLI "$BIN/mirage-helper" run --socket "$SOCK" --state-dir "$WORK/helper-state" \
		--profiles-dir "$WORK/profiles" >"$WORK/helper.log" 2>&1 &
	HELPER_PID=$!
	wait_for 10 test -S "$SOCK" || die "the helper did not create $SOCK within 10 s"
	say "Importing the server's client.toml as profile \"demo\""
	api POST /v1/profiles/import "$(json_import demo "$WORK/client.toml")" >"$WORK/import.json" ||
		die "import failed: $(cat "$WORK/import.json")"
}

start_x() {
	local n
	for n in $(seq 90 99); do [[ -e /tmp/.X11-unix/X$n || -e /tmp/.X$n-lock ]] || break; done
	DISPLAY_NUM=":$n"
	say "Starting Xvfb $DISPLAY_NUM, xfce4-panel (tray host) and the GUI"
	Xvfb "$DISPLAY_NUM" -screen 0 1024x800x24 -nolisten tcp >"$WORK/xvfb.log" 2>&1 &
	XVFB_PID=$!
	# NO_AT_BRIDGE: no accessibility bus for the panel.
	export DISPLAY=$DISPLAY_NUM HOME=$WORK/home XDG_RUNTIME_DIR=$WORK/xdg NO_AT_BRIDGE=1
	mkdir -p "$HOME"
	mkdir -m 0700 "$XDG_RUNTIME_DIR"
	wait_for 10 xdpyinfo || die "Xvfb did not start on $DISPLAY"
	xfce4-panel >"$WORK/panel.log" 2>&1 &
	PANEL_PID=$!
	wait_for 10 xdotool search --class xfce4-panel || die "xfce4-panel did not map a window"
	sleep 2
	"$BIN/mirage" --socket "$SOCK" >"$WORK/gui.log" 2>&1 &
	GUI_PID=$!
	wait_for 15 xdotool search --onlyvisible --name '^Mirage$' || die "the GUI window did not appear within 15 s"
	WIN=$(xdotool search --onlyvisible --name '^Mirage$' | head -n1)
	# No window manager: put the window below the panel, tall enough for
	# the whole connection tab (graph included).
	xdotool windowmove "$WIN" 0 30 windowsize "$WIN" $WIN_W $WIN_H
	sleep 3
}

connect() {
	say "Connecting profile \"demo\" through the API"
	api POST /v1/connect '{"profile":"demo"}' >"$WORK/connect.json" || die "connect failed: $(cat "$WORK/connect.json")"
	wait_for 20 bash -c "curl -sS --unix-socket '$SOCK' http://helper/v1/status | grep -q '\"state\":\"connected\"'" ||
		die "not connected after 20 s: $(api GET /v1/status)"
	wait_for 5 in_ns $NS_CLI ping -c 1 -W 1 $TUN_SRV || die "no ping reply from $TUN_SRV through the tunnel"
}

# traffic SECONDS: iperf3 upload and download at once, through the tunnel
# and the server's NAT to host (rate limited so both curves show).
traffic() {
	ip netns exec $NS_HOST iperf3 -s -B $HOST_ADDR -p 5201 >"$WORK/iperf3-up.log" 2>&1 &
	IPERF_UP_PID=$!
	ip netns exec $NS_HOST iperf3 -s -B $HOST_ADDR -p 5202 >"$WORK/iperf3-down.log" 2>&1 &
	IPERF_DOWN_PID=$!
	wait_for 5 in_ns $NS_SRV timeout 1 bash -c "exec 3<>/dev/tcp/$HOST_ADDR/5201" || die "iperf3 server did not start"
	wait_for 5 in_ns $NS_SRV timeout 1 bash -c "exec 3<>/dev/tcp/$HOST_ADDR/5202" || die "iperf3 server did not start"
	say "iperf3 through the tunnel for $1 s (up 200 Mbit/s, down 120 Mbit/s)"
	ip netns exec $NS_CLI iperf3 -c $HOST_ADDR -p 5201 -t "$1" -b 200M >"$WORK/iperf3-c-up.log" 2>&1 &
	IPERF_C_PIDS+=($!)
	ip netns exec $NS_CLI iperf3 -c $HOST_ADDR -p 5202 -t "$1" -b 120M -R >"$WORK/iperf3-c-down.log" 2>&1 &
	IPERF_C_PIDS+=($!)
}

shot_window() { # shot_window FILE
	import -window "$WIN" "$1"
	echo "saved $1"
}

import_error() {
	say "Pasting a client.toml with a misspelt key (Paste link)"
	local bad="$WORK/bad-client.toml"
	if grep -q '^\[connection\]' "$WORK/client.toml"; then
		sed '/^\[connection\]/a paralel_connections = 4' "$WORK/client.toml" >"$bad"
	else
		{ cat "$WORK/client.toml"; printf '\n[connection]\nparalel_connections = 4\n'; } >"$bad"
	fi
	xclip -quiet -selection clipboard -i "$bad" >/dev/null 2>&1 & # owns the clipboard until stopped
	XCLIP_PID=$!
	sleep 0.5
	# "Paste link" in the profiles pane, anchored to the window's bottom left.
	xdotool mousemove --window "$WIN" 208 $((WIN_H - 103)) click 1
	sleep 2
}

tray_menu() {
	say "Opening the tray menu"
	local x y
	read -r x y < <(tray_icon_position)
	# Button 3: a left click on the icon shows or hides the window.
	xdotool mousemove "$x" "$y" click 3
	sleep 2
	import -window root "$OUT/03-tray-menu.png"
	echo "saved $OUT/03-tray-menu.png"
}

# tray_icon_position prints the screen position of the app's tray icon:
# xfce4-panel's default top panel on a 1024 px wide screen has the
# StatusNotifierItem buttons at its right end, left of the clock, and ours
# is the only one. MIRAGE_SHOT_TRAY_XY="X Y" overrides it.
tray_icon_position() {
	echo "${MIRAGE_SHOT_TRAY_XY:-898 12}"
}

main() {
	mkdir -p "$OUT"
	rm -f "$OUT"/0[123]-*.png
	WORK=$(mktemp -d /tmp/mirage-shot.XXXXXX)
	SOCK=$WORK/helper.sock
	topology
	start_server
	start_helper
	start_x
	connect
	traffic 16
	sleep 13
	shot_window "$OUT/01-connected.png"
	for p in "${IPERF_C_PIDS[@]}"; do wait "$p" || true; done
	IPERF_C_PIDS=()
	import_error
	shot_window "$OUT/02-import-error.png"
	tray_menu
	cat <<EOF

Screenshots in $OUT:
  $OUT/01-connected.png
  $OUT/02-import-error.png
  $OUT/03-tray-menu.png
EOF
}

main
