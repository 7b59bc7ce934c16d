# shellcheck shell=bash disable=SC2034 # the variables are used by the scripts that source this
# netns-topology.sh: shell functions shared by packaging/demo/demo.sh and
# gui/screenshot.sh (source it from bash): a client, a router, a server and
# a host in network namespaces, and a mirage-server in the server namespace.
#
#   cli --192.0.2.0/25-- rtr --192.0.2.128/25-- srv --203.0.113.0/24-- host
#
# Only documentation address ranges (RFC 5737) and fd00::/8 are used.
# Set NS_PREFIX before sourcing for other namespace names (default
# mirage-demo). The caller defines say and die, and sets BIN (where the
# binaries are) and WORK (a temp dir) before calling start_server.

# shellcheck source=packaging/scripts/proc.sh
source "$(dirname "${BASH_SOURCE[0]}")/proc.sh"

NS_PREFIX="${NS_PREFIX:-mirage-demo}"
readonly NS_CLI=$NS_PREFIX-cli NS_RTR=$NS_PREFIX-rtr NS_SRV=$NS_PREFIX-srv NS_HOST=$NS_PREFIX-host
readonly SRV_ADDR=192.0.2.130 SRV_PORT=443 HOST_ADDR=203.0.113.2 TUN_SRV=198.51.100.1
readonly NAT_IF=to-host
SERVER_PID=""




# delete_namespaces removes the four namespaces and their resolv.conf dirs.
delete_namespaces() {
	local ns
	for ns in $NS_CLI $NS_RTR $NS_SRV $NS_HOST; do
		ip netns del "$ns" 2>/dev/null
		rm -rf "/etc/netns/$ns"
	done
	return 0
}

topology() {
	say "Creating namespaces $NS_CLI, $NS_RTR, $NS_SRV, $NS_HOST"
	local ns
	for ns in $NS_CLI $NS_RTR $NS_SRV $NS_HOST; do
		ip netns del "$ns" 2>/dev/null || true # left over from an interrupted run
		mkdir -p "/etc/netns/$ns"
		echo "nameserver 192.0.2.53" >"/etc/netns/$ns/resolv.conf" # DNS changes stay in the namespace
		ip netns add "$ns"
		in_ns "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
		ip -n "$ns" link set lo up
	done
	ip -n $NS_CLI link add to-rtr type veth peer name to-cli netns $NS_RTR
	ip -n $NS_RTR link add to-srv type veth peer name to-rtr netns $NS_SRV
	ip -n $NS_SRV link add $NAT_IF type veth peer name to-srv netns $NS_HOST

	ip -n $NS_CLI addr add 192.0.2.2/25 dev to-rtr
	ip -n $NS_CLI addr add fd00:6d:a::2/64 dev to-rtr nodad
	ip -n $NS_RTR addr add 192.0.2.1/25 dev to-cli
	ip -n $NS_RTR addr add fd00:6d:a::1/64 dev to-cli nodad
	ip -n $NS_RTR addr add 192.0.2.129/25 dev to-srv
	ip -n $NS_RTR addr add fd00:6d:b::1/64 dev to-srv nodad
	ip -n $NS_SRV addr add $SRV_ADDR/25 dev to-rtr
	ip -n $NS_SRV addr add fd00:6d:b::2/64 dev to-rtr nodad
	ip -n $NS_SRV addr add 203.0.113.1/24 dev $NAT_IF
	ip -n $NS_SRV addr add fd00:6d:c::1/64 dev $NAT_IF nodad
	ip -n $NS_HOST addr add $HOST_ADDR/24 dev to-srv
	ip -n $NS_HOST addr add fd00:6d:c::2/64 dev to-srv nodad

	ip -n $NS_CLI link set to-rtr up
	ip -n $NS_RTR link set to-cli up
	ip -n $NS_RTR link set to-srv up
	ip -n $NS_SRV link set to-rtr up
	ip -n $NS_SRV link set $NAT_IF up
	ip -n $NS_HOST link set to-srv up

	ip -n $NS_CLI route add default via 192.0.2.1
	ip -n $NS_CLI -6 route add default via fd00:6d:a::1
	ip -n $NS_SRV route add 192.0.2.0/25 via 192.0.2.129
	ip -n $NS_SRV -6 route add fd00:6d:a::/64 via fd00:6d:b::1
	in_ns $NS_RTR sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
	# host gets no route to the client or tunnel networks: only the server's
	# NAT makes its replies come back.
}

# start_server runs mirage-server in $NS_SRV with a generated config in
# $WORK/server and writes the client config it prints to $WORK/client.toml.
start_server() {
	say "Starting mirage-server in $NS_SRV (generated config in a temp dir)"
	# ip netns exec directly (not a shell function) so $! is the server itself.
	ip netns exec $NS_SRV "$BIN/mirage-server" run --data-dir "$WORK/server" \
		--bind $SRV_ADDR --port $SRV_PORT --host $SRV_ADDR \
		--tunnel-network 198.51.100.1/24 --tunnel-network-v6 fd00:6d:1::1/64 \
		--nat-interface $NAT_IF >"$WORK/server.out" 2>"$WORK/server.log" &
	SERVER_PID=$!
	if ! wait_for 10 in_ns $NS_CLI timeout 1 bash -c "exec 3<>/dev/tcp/$SRV_ADDR/$SRV_PORT"; then
		die "the server is not listening on $SRV_ADDR:$SRV_PORT after 10 s"
	fi
	# The printed client.toml (stdout); fall back to the copy in the data dir.
	wait_for 5 grep -q connection_string "$WORK/server.out" || true
	if grep -q connection_string "$WORK/server.out"; then
		grep -v '^mirage://' "$WORK/server.out" >"$WORK/client.toml"
	elif [[ -s $WORK/server/client.toml ]]; then
		cp "$WORK/server/client.toml" "$WORK/client.toml"
	else
		die "the server printed no client.toml"
	fi
	chmod 600 "$WORK/client.toml"
}
