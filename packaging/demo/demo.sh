#!/usr/bin/env bash
# Mirage demo: a server and a client in network namespaces on this machine.
#
#   cli --192.0.2.0/25-- rtr --192.0.2.128/25-- srv --203.0.113.0/24-- host
#
# The server generates its config, certificate and first user, the client
# connects with the printed client.toml, then the script measures ping RTT
# and iperf3 throughput through the tunnel and shows that host sees the
# server's address (NAT). Everything is removed on exit, even on failure.
# Needs root; installs iproute2, iperf3, nftables and iputils-ping if missing.
# Only documentation address ranges (RFC 5737) and fd00::/8 are used.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Namespaces, addresses, topology and start_server (shared with gui/screenshot.sh).
source "$REPO/packaging/scripts/netns-topology.sh"
BIN="${MIRAGE_DEMO_BIN:-$REPO/bin}" # where the binaries are built
WORK=""
CLIENT_PID="" IPERF_PID=""
START=$SECONDS

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

cleanup() {
	local status=$?
	set +e
	if ((status != 0)) && [[ -n $WORK ]]; then
		for f in server.log client.log client.out iperf3-server.log; do
			[[ -s $WORK/$f ]] && { echo "--- last lines of $f"; tail -n 15 "$WORK/$f"; }
		done >&2
	fi
	stop "$CLIENT_PID"
	stop "$SERVER_PID"
	stop "$IPERF_PID"
	delete_namespaces
	[[ -n $WORK ]] && rm -rf "$WORK"
	if ((status != 0)); then
		echo "demo: FAILED (exit status $status); everything was torn down" >&2
	fi
	exit "$status"
}

check_root() {
	if ((EUID != 0)); then
		die "needs root (it creates network namespaces, TUN devices and NAT rules): sudo $0"
	fi
	[[ -c /dev/net/tun ]] || die "/dev/net/tun is missing (modprobe tun?)"
}

install_packages() {
	local -A pkg_for=([ip]=iproute2 [iperf3]=iperf3 [nft]=nftables [ping]=iputils-ping)
	local missing=() cmd
	for cmd in "${!pkg_for[@]}"; do
		command -v "$cmd" >/dev/null || missing+=("${pkg_for[$cmd]}")
	done
	((${#missing[@]} == 0)) && return 0
	command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
	say "Installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

build() {
	command -v go >/dev/null || die "go is not in PATH (needed to build the binaries)"
	say "Building mirage-server and mirage-helper into $BIN"
	(cd "$REPO" && CGO_ENABLED=0 go build -o "$BIN/" ./server/cmd/mirage-server ./platform/cmd/mirage-helper)
}

start_client() {
	say "Connecting mirage-helper in $NS_CLI"
	ip netns exec $NS_CLI "$BIN/mirage-helper" connect "$WORK/client.toml" --state-dir "$WORK/helper-state" \
		>"$WORK/client.out" 2>"$WORK/client.log" &
	CLIENT_PID=$!
	wait_for 20 grep -q '^connected' "$WORK/client.out" || die "the client did not connect within 20 s"
	CONNECTED=$(grep -m1 '^connected' "$WORK/client.out")
	wait_for 5 in_ns $NS_CLI ping -c 1 -W 1 $TUN_SRV || die "no ping reply from $TUN_SRV through the tunnel"
}

measure() {
	say "Ping through the tunnel (10 x $TUN_SRV)"
	local out
	out=$(in_ns $NS_CLI ping -n -c 10 -i 0.2 $TUN_SRV)
	RTT=$(sed -n 's|.* = [0-9.]*/\([0-9.]*\)/.*|\1|p' <<<"$out")
	RTT_MIN=$(sed -n 's|.* = \([0-9.]*\)/.*|\1|p' <<<"$out")
	LOSS=$(sed -n 's/.* \([0-9.]*%\) packet loss.*/\1/p' <<<"$out")
	out=$(in_ns $NS_CLI ping -n -c 5 -i 0.2 $SRV_ADDR)
	RTT_DIRECT=$(sed -n 's|.* = [0-9.]*/\([0-9.]*\)/.*|\1|p' <<<"$out")

	say "iperf3 through the tunnel and the server's NAT to $HOST_ADDR (5 s each way)"
	ip netns exec $NS_HOST iperf3 -s -B $HOST_ADDR >"$WORK/iperf3-server.log" 2>&1 &
	IPERF_PID=$!
	wait_for 5 in_ns $NS_SRV timeout 1 bash -c "exec 3<>/dev/tcp/$HOST_ADDR/5201" || die "iperf3 server did not start"
	UP=$(in_ns $NS_CLI iperf3 -c $HOST_ADDR -t 5 -f m | sed -n 's|.* \([0-9.]*\) Mbits/sec.*receiver.*|\1|p')
	DOWN=$(in_ns $NS_CLI iperf3 -c $HOST_ADDR -t 5 -f m -R | sed -n 's|.* \([0-9.]*\) Mbits/sec.*receiver.*|\1|p')
	SEEN=$(sed -n 's/.*Accepted connection from \([^,]*\),.*/\1/p' "$WORK/iperf3-server.log" | sort -u | paste -sd, -)
}

field() { tr ' ' '\n' <<<"$CONNECTED" | sed -n "s/^$1=//p"; }

summary() {
	local nat_ok="NO (expected 203.0.113.1)"
	[[ $SEEN == 203.0.113.1 ]] && nat_ok="yes"
	cat <<EOF

================ Mirage demo summary ================
 client tunnel IPv4   ${V4:-?}
 client tunnel IPv6   ${V6:-?}
 transport            $(field transport) to $(field server)
 ping RTT (10 pings)  avg ${RTT:-?} ms, min ${RTT_MIN:-?} ms to $TUN_SRV through the tunnel (loss ${LOSS:-?})
                      ${RTT_DIRECT:-?} ms to $SRV_ADDR directly, for comparison
 iperf3 upload        ${UP:-?} Mbit/s  cli -> host
 iperf3 download      ${DOWN:-?} Mbit/s  host -> cli
 NAT                  host $HOST_ADDR saw ${SEEN:-nothing} as the source (server's address: $nat_ok)
 runtime              $((SECONDS - START)) s
=====================================================
EOF
	[[ $nat_ok == yes && -n $UP && -n $DOWN && -n $RTT ]]
}

main() {
	check_root
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	install_packages
	build
	WORK=$(mktemp -d /tmp/mirage-demo.XXXXXX)
	topology
	start_server
	start_client
	V4=$(field ipv4)
	V6=$(field ipv6)
	say "Connected: ipv4 $V4, ipv6 $V6"
	in_ns $NS_CLI ip -brief addr show dev mirage0 || true
	measure
	summary
}

main "$@"
