#!/usr/bin/env bash
# Mirage benchmark (make bench): raw veth, wireguard-go and Mirage per
# transport (obfuscation off and on) in two network namespaces, in one run.
#
#   mbench-c-ID  192.0.2.2/24 --veth-- 192.0.2.1/24  mbench-s-ID
#   tunnels:  mirage 198.51.100.0/24, wireguard-go 203.0.113.0/24
#
# Per row and repetition: iperf3 single stream client->server and
# server->client (-R), 4 streams (-P 4), idle ping RTT (avg/p50/p99 of 100
# pings), ping RTT and CPU of the tunnel processes during a single-stream
# upload, and single-stream upload under 1 % random loss on the outer link
# (iptables statistic match; this kernel has no netem). Medians over
# BENCH_REPS repetitions with min-max, ratios to wireguard-go and raw veth.
# Results: dist/bench/bench-DATE.json and .md.
#
# Environment: BENCH_REPS (3), BENCH_TIME (5, seconds per iperf3 test),
# BENCH_MAX_SECONDS (900: no row starts that would end after this),
# BENCH_ROWS (all: space-separated subset of raw wg tcp-tls reality quic),
# BENCH_MUX (flow, round_robin or active_standby: the client's mux_mode) and
# BENCH_CONNS (1-8: parallel_connections and quic_parallel_connections; the
# generated profile's own values when unset), BENCH_TUN_QUEUES (1-16: TUN
# queues of both ends, exported as MIRAGE_TUN_QUEUES; one per core when unset),
# BENCH_FEC (auto or off: [connection] fec on both ends; the default when unset).
# Needs root, Go (builds wireguard-go from the module proxy into a temp dir,
# never into the repository) and installs missing Debian packages.
# Only documentation address ranges (RFC 5737) are used.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=packaging/scripts/proc.sh
source "$REPO/packaging/scripts/proc.sh"
BIN="$REPO/bin"
REPS="${BENCH_REPS:-3}"
T="${BENCH_TIME:-5}"
MAX_SECONDS="${BENCH_MAX_SECONDS:-900}"
ROWS_WANTED="${BENCH_ROWS:-raw wg tcp-tls reality quic}"
MUX="${BENCH_MUX:-}" CONNS="${BENCH_CONNS:-}" TUNQ="${BENCH_TUN_QUEUES:-}" FEC="${BENCH_FEC:-}"
WG_VERSION=v0.0.0-20260522210424-ecfc5a8d5446

ID=$$
NS_C=mbench-c-$ID NS_S=mbench-s-$ID
VETH_S=mbs$ID VETH_C=mbc$ID # veth ends in the server / client namespace
WG_S=wgbs$ID WG_C=wgbc$ID   # unique: wireguard-go's UAPI sockets live in the shared /var/run/wireguard
SRV=192.0.2.1 CLI=192.0.2.2
TUN_MIRAGE=198.51.100.1 TUN_WG=203.0.113.1
MIRAGE_PORT=443 WG_PORT=51820
CLK_TCK=$(getconf CLK_TCK)

WORK="" SERVER_PID="" CLIENT_PID="" IPERF_PID="" WG_S_PID="" WG_C_PID="" LOAD_PID=""
LOSS_RULE=0
START=$SECONDS

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
warn() { printf 'bench: warning: %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }



loss_rule() { # loss_rule -A|-D
	in_ns $NS_S iptables -w 5 "$1" INPUT -i $VETH_S -m statistic --mode random --probability 0.01 -j DROP
}

# offloads on|off: TSO/GSO and UDP segmentation offload on both veth ends
# (GRO stays off, the veth default). UDP GSO is a feature of its own: with
# it on, a UDP tunnel's burst of up to 64 packets crosses the veth as one
# packet, and the loss rule would drop all of them at once.
offloads() {
	in_ns $NS_S ethtool -K $VETH_S tso "$1" gso "$1" tx-udp-segmentation "$1" gro off
	in_ns $NS_C ethtool -K $VETH_C tso "$1" gso "$1" tx-udp-segmentation "$1" gro off
}

cleanup() {
	local status=$?
	set +e
	trap - EXIT INT TERM
	if ((status != 0)) && [[ -n $WORK ]]; then
		for f in server.log client.log wg-s.log wg-c.log iperf3-server.log; do
			[[ -s $WORK/$f ]] && { echo "--- last lines of $f"; tail -n 15 "$WORK/$f"; }
		done >&2
	fi
	((LOSS_RULE)) && loss_rule -D 2>/dev/null
	stop "$LOAD_PID"
	stop "$CLIENT_PID"
	stop "$SERVER_PID"
	stop "$IPERF_PID"
	stop "$WG_C_PID"
	stop "$WG_S_PID"
	rm -f /var/run/wireguard/$WG_S.sock /var/run/wireguard/$WG_C.sock
	ip netns del $NS_C 2>/dev/null
	ip netns del $NS_S 2>/dev/null
	[[ -n $WORK ]] && rm -rf "$WORK"
	((status != 0)) && echo "bench: FAILED (exit status $status); everything was torn down" >&2
	exit "$status"
}

check_root() {
	((EUID == 0)) || die "needs root (network namespaces, TUN devices, iptables): sudo $0"
	[[ -c /dev/net/tun ]] || die "/dev/net/tun is missing (modprobe tun?)"
	[[ $REPS =~ ^[1-9][0-9]?$ ]] || die "BENCH_REPS must be 1-99, got '$REPS'"
	[[ $T =~ ^[1-9][0-9]?$ ]] || die "BENCH_TIME must be 1-99 seconds, got '$T'"
	[[ $MAX_SECONDS =~ ^[0-9]+$ ]] || die "BENCH_MAX_SECONDS must be a number, got '$MAX_SECONDS'"
	[[ -z $MUX || $MUX =~ ^(flow|round_robin|active_standby)$ ]] || die "BENCH_MUX must be flow, round_robin or active_standby, got '$MUX'"
	[[ -z $CONNS || $CONNS =~ ^[1-8]$ ]] || die "BENCH_CONNS must be 1-8, got '$CONNS'"
	[[ -z $TUNQ || $TUNQ =~ ^([1-9]|1[0-6])$ ]] || die "BENCH_TUN_QUEUES must be 1-16, got '$TUNQ'"
	[[ -z $FEC || $FEC =~ ^(auto|off)$ ]] || die "BENCH_FEC must be auto or off, got '$FEC'"
	if [[ -n $TUNQ ]]; then export MIRAGE_TUN_QUEUES=$TUNQ; fi
	local r
	for r in $ROWS_WANTED; do
		[[ $r =~ ^(raw|wg|tcp-tls|reality|quic)$ ]] || die "BENCH_ROWS: unknown row '$r' (raw wg tcp-tls reality quic)"
	done
}

want() { [[ " $ROWS_WANTED " == *" $1 "* ]]; }

build() {
	say "Installing missing Debian packages"
	sh "$REPO/packaging/scripts/apt-ensure.sh" iperf3 wireguard-tools iproute2 iptables nftables iputils-ping jq procps ethtool
	local c
	for c in iperf3 wg ip iptables ping jq ethtool; do
		command -v $c >/dev/null || die "$c is missing (apt-get install failed?)"
	done
	command -v go >/dev/null || die "go is not in PATH (needed to build the binaries)"
	say "Building mirage-server and mirage-helper (make build)"
	make -s -C "$REPO" build >&2
	[[ -x $BIN/mirage-server && -x $BIN/mirage-helper ]] || die "make build did not produce bin/mirage-server and bin/mirage-helper"
	if want wg; then
		say "Building wireguard-go $WG_VERSION from the module proxy (temp module)"
		# go install pkg@version fails here (403 on @v/list), so build it from a
		# throwaway module (GO-STACK.md 1.1).
		mkdir -p "$WORK/wgmod"
		(
			cd "$WORK/wgmod"
			export GOFLAGS=-mod=mod GOWORK=off
			timeout 300 go mod init bench.invalid/wg &&
				timeout 300 go get golang.zx2c4.com/wireguard@$WG_VERSION &&
				CGO_ENABLED=0 timeout 300 go build -o "$WORK/wireguard-go" golang.zx2c4.com/wireguard
		) >"$WORK/wg-build.log" 2>&1 || { cat "$WORK/wg-build.log" >&2; die "could not build wireguard-go $WG_VERSION"; }
	fi
}

topology() {
	say "Creating namespaces $NS_C and $NS_S"
	local ns
	for ns in $NS_C $NS_S; do
		ip netns add "$ns"
		ip -n "$ns" link set lo up
	done
	ip -n $NS_S link add $VETH_S type veth peer name $VETH_C netns $NS_C
	ip -n $NS_S addr add $SRV/24 dev $VETH_S
	ip -n $NS_C addr add $CLI/24 dev $VETH_C
	ip -n $NS_S link set $VETH_S up
	ip -n $NS_C link set $VETH_C up
	wait_for 5 in_ns $NS_C ping -c 1 -W 1 $SRV || die "no ping reply over the veth"
	start_iperf
}

# start_iperf runs the iperf3 server in the server namespace (ip netns exec
# directly, not in_ns, so that $! is iperf3 itself).
start_iperf() {
	ip netns exec $NS_S iperf3 -s >"$WORK/iperf3-server.log" 2>&1 &
	IPERF_PID=$!
	wait_for 5 in_ns $NS_C timeout 1 bash -c "exec 3<>/dev/tcp/$SRV/5201" || die "iperf3 server did not start"
}

# restart_iperf replaces an iperf3 server that a killed test may have wedged.
restart_iperf() {
	stop "$IPERF_PID"
	ip netns exec $NS_S iperf3 -s >>"$WORK/iperf3-server.log" 2>&1 &
	IPERF_PID=$!
	wait_for 5 in_ns $NS_C timeout 1 bash -c "exec 3<>/dev/tcp/$SRV/5201" || warn "iperf3 server did not restart"
}

start_wireguard() {
	say "Starting wireguard-go in both namespaces"
	local sk ck
	sk=$(wg genkey) ck=$(wg genkey)
	ip netns exec $NS_S "$WORK/wireguard-go" -f $WG_S >"$WORK/wg-s.log" 2>&1 &
	WG_S_PID=$!
	ip netns exec $NS_C "$WORK/wireguard-go" -f $WG_C >"$WORK/wg-c.log" 2>&1 &
	WG_C_PID=$!
	wait_for 10 ip -n $NS_S link show $WG_S || die "wireguard-go did not create $WG_S"
	wait_for 10 ip -n $NS_C link show $WG_C || die "wireguard-go did not create $WG_C"
	wait_for 10 test -S /var/run/wireguard/$WG_S.sock || die "no UAPI socket for $WG_S"
	wait_for 10 test -S /var/run/wireguard/$WG_C.sock || die "no UAPI socket for $WG_C"
	(umask 077; cat >"$WORK/wg-s.conf" <<EOF
[Interface]
PrivateKey = $sk
ListenPort = $WG_PORT

[Peer]
PublicKey = $(wg pubkey <<<"$ck")
AllowedIPs = 203.0.113.2/32
EOF
	cat >"$WORK/wg-c.conf" <<EOF
[Interface]
PrivateKey = $ck

[Peer]
PublicKey = $(wg pubkey <<<"$sk")
Endpoint = $SRV:$WG_PORT
AllowedIPs = 203.0.113.0/24
EOF
	)
	in_ns $NS_S wg setconf $WG_S "$WORK/wg-s.conf"
	in_ns $NS_C wg setconf $WG_C "$WORK/wg-c.conf"
	ip -n $NS_S addr add $TUN_WG/24 dev $WG_S
	ip -n $NS_C addr add 203.0.113.2/24 dev $WG_C
	ip -n $NS_S link set $WG_S up
	ip -n $NS_C link set $WG_C up
	wait_for 10 in_ns $NS_C ping -c 1 -W 1 $TUN_WG || die "no ping reply through wireguard-go"
}

# init_mirage generates the server config and client profile once.
init_mirage() {
	say "Generating the Mirage server config (reality + tcp-tls on TCP, quic on UDP $SRV:$MIRAGE_PORT)"
	start_server
	stop "$SERVER_PID"
	SERVER_PID=""
	[[ -s $WORK/server/server.toml && -s $WORK/server/client.toml ]] || die "mirage-server wrote no server.toml/client.toml"
}

# start_server runs mirage-server (generating the config on the first call).
start_server() {
	ip netns exec $NS_S "$BIN/mirage-server" run --data-dir "$WORK/server" \
		--bind $SRV --port $MIRAGE_PORT --host $SRV \
		--tunnel-network $TUN_MIRAGE/24 --tunnel-network-v6 fd00:6d:1::1/64 \
		--reality-target www.example.com --reality-dest $SRV:9 \
		>"$WORK/server.out" 2>>"$WORK/server.log" &
	SERVER_PID=$!
	wait_for 10 in_ns $NS_C timeout 1 bash -c "exec 3<>/dev/tcp/$SRV/$MIRAGE_PORT" ||
		die "mirage-server is not listening on $SRV:$MIRAGE_PORT after 10 s"
}

# set_obfuscation FILE true|false edits [obfuscation] enabled.
set_obfuscation() {
	sed -i "/^\[obfuscation\]/,/^\[/ s/^enabled = .*/enabled = $2/" "$1"
}

# start_mirage TRANSPORT OBFS: server and client with that transport only.
start_mirage() {
	local transport=$1 obfs=$2
	set_obfuscation "$WORK/server/server.toml" "$obfs"
	if [[ -n $FEC ]]; then sed -i "s/^fec = .*/fec = \"$FEC\"/" "$WORK/server/server.toml"; fi
	start_server
	sed -e "s/^enabled_protocols = .*/enabled_protocols = [\"$transport\"]/" \
		-e 's/^routes = .*/routes = []/' -e 's/^set_dns = .*/set_dns = false/' \
		${MUX:+-e "s/^mux_mode = .*/mux_mode = \"$MUX\"/"} \
		${CONNS:+-e "s/^parallel_connections = .*/parallel_connections = $CONNS/"} \
		${CONNS:+-e "s/^quic_parallel_connections = .*/quic_parallel_connections = $CONNS/"} \
		${FEC:+-e "s/^fec = .*/fec = \"$FEC\"/"} \
		"$WORK/server/client.toml" >"$WORK/client.toml"
	set_obfuscation "$WORK/client.toml" "$obfs"
	chmod 600 "$WORK/client.toml"
	rm -rf "$WORK/helper-state"
	ip netns exec $NS_C "$BIN/mirage-helper" connect "$WORK/client.toml" --state-dir "$WORK/helper-state" \
		>"$WORK/client.out" 2>>"$WORK/client.log" &
	CLIENT_PID=$!
	wait_for 20 grep -q '^connected' "$WORK/client.out" || die "mirage-helper ($transport) did not connect within 20 s"
	grep -q "^connected.* transport=$transport" "$WORK/client.out" ||
		die "mirage-helper connected with another transport: $(grep -m1 '^connected' "$WORK/client.out")"
	wait_for 10 in_ns $NS_C ping -c 1 -W 1 $TUN_MIRAGE || die "no ping reply from $TUN_MIRAGE through mirage ($transport)"
}

stop_mirage() {
	stop "$CLIENT_PID"
	CLIENT_PID=""
	stop "$SERVER_PID"
	SERVER_PID=""
}

# record ROW REP METRIC VALUE appends one sample (VALUE may be null).
record() {
	jq -cn --arg row "$1" --argjson rep "$2" --arg metric "$3" --argjson value "$4" \
		'{row: $row, rep: $rep, metric: $metric, value: $value}' >>"$WORK/samples.jsonl"
}

# iperf ADDR OUTFILE ARGS...: one iperf3 test as JSON; prints Mbit/s or null.
iperf() {
	local addr=$1 out=$2 v
	shift 2
	if ! timeout $((T + 20)) ip netns exec $NS_C iperf3 -c "$addr" -t "$T" -J --connect-timeout 3000 "$@" >"$out" 2>&1; then
		warn "iperf3 -c $addr $* failed: $(jq -r '.error? // empty' "$out" 2>/dev/null | head -c 200)"
		restart_iperf
		echo null
		return
	fi
	v=$(jq '.end.sum_received.bits_per_second / 1e6 * 100 | round / 100' "$out" 2>/dev/null) || v=null
	echo "${v:-null}"
}

# ping_stats ADDR COUNT: {avg,p50,p99,loss} in ms from per-packet times.
ping_stats() {
	local out
	out=$(timeout $((${2} / 10 + 15)) ip netns exec $NS_C ping -n -c "$2" -i 0.05 -W 1 "$1" 2>/dev/null || true)
	sed -n 's/.* time=\([0-9.]*\) ms.*/\1/p' <<<"$out" | sort -n | awk -v sent="$2" '
		{ t[NR] = $1; s += $1 }
		function pct(p,  i) { i = int(p / 100 * NR + 0.999999); if (i < 1) i = 1; return t[i] }
		END {
			if (NR == 0) { print "{\"avg\":null,\"p50\":null,\"p99\":null,\"loss\":100}"; exit }
			printf "{\"avg\":%.3f,\"p50\":%.3f,\"p99\":%.3f,\"loss\":%.1f}\n", s / NR, pct(50), pct(99), (sent - NR) * 100 / sent
		}'
}

ticks() { # ticks PID...: utime+stime of the processes, in clock ticks
	local pid sum=0 v
	for pid in "$@"; do
		v=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}') || v=0
		sum=$((sum + ${v:-0}))
	done
	echo $sum
}

# measure ROW REP ADDR PIDS...: all metrics of one row once.
measure() {
	local row=$1 rep=$2 addr=$3 v p c0 c1 w0 w1 n
	shift 3
	local f="$WORK/$row.$rep"
	say "[$row] rep $rep/$REPS"
	record "$row" "$rep" up "$(iperf "$addr" "$f.up.json")"
	# Retransmits on a clean link: a tunnel that drops packets it took
	# (a full queue) shows here.
	v=$(jq '.end.sum_sent.retransmits // null' "$f.up.json" 2>/dev/null) || v=null
	record "$row" "$rep" up_retrans "${v:-null}"
	record "$row" "$rep" down "$(iperf "$addr" "$f.down.json" -R)"
	record "$row" "$rep" p4 "$(iperf "$addr" "$f.p4.json" -P 4)"
	p=$(ping_stats "$addr" 100)
	record "$row" "$rep" idle_avg "$(jq .avg <<<"$p")"
	record "$row" "$rep" idle_p50 "$(jq .p50 <<<"$p")"
	record "$row" "$rep" idle_p99 "$(jq .p99 <<<"$p")"
	record "$row" "$rep" idle_loss "$(jq .loss <<<"$p")"

	# Loaded: a single-stream upload; ping and CPU over its middle part.
	timeout $((T + 20)) ip netns exec $NS_C iperf3 -c "$addr" -t "$T" -J --connect-timeout 3000 >"$f.load.json" 2>&1 &
	LOAD_PID=$!
	sleep 0.7
	n=$(awk -v t="$T" 'BEGIN { n = int((t - 1.4) / 0.05); print (n < 10 ? 10 : n) }')
	c0=$(ticks "$@") w0=$(date +%s.%N)
	p=$(ping_stats "$addr" "$n")
	c1=$(ticks "$@") w1=$(date +%s.%N)
	wait "$LOAD_PID" || warn "[$row] loaded iperf3 failed"
	LOAD_PID=""
	record "$row" "$rep" load_p50 "$(jq .p50 <<<"$p")"
	record "$row" "$rep" load_p99 "$(jq .p99 <<<"$p")"
	record "$row" "$rep" load_loss "$(jq .loss <<<"$p")"
	v=$(jq '.end.sum_received.bits_per_second / 1e6 * 100 | round / 100' "$f.load.json" 2>/dev/null) || v=null
	record "$row" "$rep" load_up "${v:-null}"
	if (($# > 0)); then
		record "$row" "$rep" cpu "$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" -v w0="$w0" -v w1="$w1" \
			'BEGIN { printf "%.1f", (b - a) / hz / (w1 - w0) * 100 }')"
	else
		record "$row" "$rep" cpu null
	fi

	# With TSO/GSO (TCP or UDP) a veth skb can carry up to 64 KB, so "1 % of
	# packets" would drop far more than 1 % of the wire segments, in bursts:
	# offloads off.
	offloads off
	loss_rule -A
	LOSS_RULE=1
	v=$(iperf "$addr" "$f.loss.json")
	# Packets the rule dropped: proves the loss really happened.
	n=$(in_ns $NS_S iptables -w 5 -L INPUT -v -x -n | awk '/statistic/ { print $1; exit }')
	loss_rule -D
	LOSS_RULE=0
	offloads on
	record "$row" "$rep" loss_up "$v"
	record "$row" "$rep" loss_dropped "${n:-null}"
	# Retransmits of the inner TCP stream (0 when the tunnel hides the loss).
	v=$(jq '.end.sum_sent.retransmits // null' "$f.loss.json" 2>/dev/null) || v=null
	record "$row" "$rep" loss_retrans "${v:-null}"
}

# rows in display order: id|label|kind
ROWS=()
plan_rows() {
	want raw && ROWS+=("raw|raw veth|raw")
	want wg && ROWS+=("wg|wireguard-go|wg")
	local t
	for t in tcp-tls reality quic; do
		want $t || continue
		ROWS+=("$t-off|mirage $t, obfuscation off|$t")
		ROWS+=("$t-on|mirage $t, obfuscation on (padding p=0.1)|$t")
	done
}

run() {
	local rep r id kind
	for ((rep = 1; rep <= REPS; rep++)); do
		DONE_REPS=$rep
		for r in "${ROWS[@]}"; do
			IFS="|" read -r id _ kind <<<"$r"
			# A row takes about 6 x BENCH_TIME + 15 s; start none that would end
			# after the budget.
			if ((SECONDS - START + 6 * T + 15 > MAX_SECONDS)); then
				warn "time budget of $MAX_SECONDS s (BENCH_MAX_SECONDS) used up: stopping in repetition $rep"
				return 0
			fi
			case $kind in
			raw) measure "$id" $rep $SRV ;;
			wg) measure "$id" $rep $TUN_WG $WG_S_PID $WG_C_PID ;;
			*)
				start_mirage "$kind" "$([[ $id == *-on ]] && echo true || echo false)"
				measure "$id" $rep $TUN_MIRAGE $SERVER_PID $CLIENT_PID
				stop_mirage
				;;
			esac
		done
	done
}

# report writes the JSON and markdown results and prints the table.
report() {
	local stamp out rows_json
	stamp=$(date -u +%Y%m%d-%H%M%S)
	out="$REPO/dist/bench"
	mkdir -p "$out"
	rows_json=$(printf '%s\n' "${ROWS[@]}" | jq -Rn '[inputs | split("|") | {id: .[0], label: .[1]}]')
	jq -s --argjson rows "$rows_json" --arg date "$(date -u +%FT%TZ)" --argjson reps "$DONE_REPS" \
		--argjson t "$T" --arg kernel "$(uname -r)" --arg cpu "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)" \
		--argjson ncpu "$(nproc)" --arg version "$("$BIN/mirage-server" version 2>/dev/null | awk '{print $2}')" \
		--arg wg "$WG_VERSION" --arg mux "${MUX:-profile default}" --arg conns "${CONNS:-profile default}" --arg tunq "${TUNQ:-one per core}" '
		def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
			else (.[length / 2 - 1] + .[length / 2]) / 2 end;
		def stats: map(select(. != null)) | {median: median, min: min, max: max, n: length};
		. as $s
		| ($rows | map(.id as $id | {key: $id, value: ($s | map(select(.row == $id)) | group_by(.metric)
			| map({key: .[0].metric, value: (map(.value) | stats)}) | from_entries)}) | from_entries) as $m
		| def ratio($id; $ref; $k): if $m[$id][$k].median != null and ($m[$ref][$k].median // 0) > 0
			then ($m[$id][$k].median / $m[$ref][$k].median * 100 | round / 100) else null end;
		{date: $date, mirage_version: $version, wireguard_go: $wg, kernel: $kernel, cpu: $cpu, ncpu: $ncpu,
		 reps: $reps, iperf_seconds: $t, mux_mode: $mux, connections: $conns, tun_queues: $tunq,
		 units: {up: "Mbit/s", down: "Mbit/s", p4: "Mbit/s", load_up: "Mbit/s", loss_up: "Mbit/s",
		         loss_dropped: "packets dropped by the 1 % rule", loss_retrans: "inner TCP retransmits under 1 % loss",
		         up_retrans: "inner TCP retransmits of the clean single-stream upload",
		         idle_loss: "% of pings lost", load_loss: "% of pings lost", idle_avg: "ms", idle_p50: "ms", idle_p99: "ms", load_p50: "ms", load_p99: "ms",
		         cpu: "% of one core, sum of both tunnel processes"},
		 rows: [$rows[] | . + {metrics: $m[.id]}],
		 samples: $s}
		| .rows |= map(.id as $id | .vs_wireguard_go = ({up: 0, down: 0, p4: 0, loss_up: 0} | with_entries(.value = ratio($id; "wg"; .key)))
			| .vs_raw = ({up: 0, down: 0, p4: 0, loss_up: 0} | with_entries(.value = ratio($id; "raw"; .key))))
		' "$WORK/samples.jsonl" >"$out/bench-$stamp.json"

	jq -r '
		def num: if . == null then "-" elif (. | type) == "number" then (if . >= 100 then (. | round | tostring) else (. * 100 | round / 100 | tostring) end) else tostring end;
		def cell: if . == null or .n == 0 then "-" elif .n == 1 or .min == .max then (.median | num)
			else "\(.median | num) (\(.min | num)–\(.max | num))" end;
		def r: if . == null then "-" else "\(. | tostring)×" end;
		"Mirage benchmark \(.date), \(.mirage_version), \(.reps) repetition(s) × \(.iperf_seconds) s, Mirage mux_mode \(.mux_mode), connections \(.connections), TUN queues \(.tun_queues), kernel \(.kernel), \(.ncpu) × \(.cpu). Median (min–max); throughput in Mbit/s, RTT in ms, CPU in % of one core (both tunnel processes, during the single-stream upload). Loss test: 1 % random drop of the packets entering the server namespace, veth TSO/GSO and UDP segmentation offload off so that 1 % of wire-sized packets is dropped; retransmits are those of the inner iperf3 TCP stream.",
		"",
		"| row | up 1 stream | down 1 stream | 4 streams | idle RTT avg / p50 / p99 | loaded RTT p50 / p99 | CPU % | retransmits, up | up, 1 % loss | retransmits, 1 % loss |",
		"|---|---|---|---|---|---|---|---|---|---|",
		(.rows[] | .metrics as $x |
		"| \(.label) | \($x.up | cell) | \($x.down | cell) | \($x.p4 | cell) | \($x.idle_avg | cell) / \($x.idle_p50 | cell) / \($x.idle_p99 | cell) | \($x.load_p50 | cell) / \($x.load_p99 | cell) | \($x.cpu | cell) | \($x.up_retrans | cell) | \($x.loss_up | cell) | \($x.loss_retrans | cell) |"),
		"",
		"Ratios of the medians (up / down / 4 streams / up with 1 % loss):",
		"",
		"| row | vs wireguard-go | vs raw veth |",
		"|---|---|---|",
		(.rows[] | "| \(.label) | \(.vs_wireguard_go | [.up, .down, .p4, .loss_up] | map(r) | join(" / ")) | \(.vs_raw | [.up, .down, .p4, .loss_up] | map(r) | join(" / ")) |")
		' "$out/bench-$stamp.json" >"$out/bench-$stamp.md"
	echo
	cat "$out/bench-$stamp.md"
	echo
	say "Results: $out/bench-$stamp.json and .md ($((SECONDS - START)) s)"
}

main() {
	check_root
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	WORK=$(mktemp -d /tmp/mirage-bench.XXXXXX)
	build
	plan_rows
	((${#ROWS[@]} > 0)) || die "no rows selected"
	topology
	want wg && start_wireguard
	if want tcp-tls || want reality || want quic; then init_mirage; fi
	: >"$WORK/samples.jsonl"
	DONE_REPS=0
	run
	report
}

# wan.sh sources this file for its functions; run main only when executed.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	main "$@"
fi
