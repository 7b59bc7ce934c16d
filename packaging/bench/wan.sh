#!/usr/bin/env bash
# Mirage WAN benchmark (make bench-wan; make bench runs it after the LAN
# part): the links users really have, emulated in user space (this kernel
# has no netem) by mirage-linkem on a TUN in a router namespace:
#
#   mwan-c-ID 192.0.2.2/25 -- 192.0.2.1/25 [mwan-r-ID: wan0] 192.0.2.129/25 -- 192.0.2.130/25 mwan-s-ID
#   tunnels:  mirage 198.51.100.0/24, wireguard-go 203.0.113.0/24
#
# Policy routing in the router sends every forwarded packet through wan0;
# mirage-linkem applies per direction, independently, random loss, a rate
# bottleneck with a drop-tail queue of one BDP and half the RTT of delay,
# then hands the packet back to the kernel.
#
# Per scenario it first checks the emulator (ping RTT and loss against the
# settings); then per row and repetition: one inner TCP download (iperf3 -R,
# cubic unless the row says bbr) with ping during it (RTT under load), the
# bytes the link carried in both directions (router veth counters: tunnel
# byte overhead = link bytes / payload bytes), the inner retransmits, and a
# four-stream download. Rows: plain TCP cubic and bbr (no tunnel),
# wireguard-go, and every Mirage transport with the generated profile's
# default settings (only enabled_protocols changed).
#
# Environment: BENCH_WAN_REPS (3), BENCH_WAN_TIME (20 s per iperf3 test),
# BENCH_WAN_SCENARIOS (all: space-separated subset of the names below),
# BENCH_WAN_ROWS (all: subset of plain-cubic plain-bbr wg tcp-tls reality
# quic), BENCH_WAN_MAX_SECONDS (5400: no row starts that would end after it).
# Results: dist/bench/wan-DATE.json and .md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=packaging/bench/bench.sh
source "$REPO/packaging/bench/bench.sh"

# name|rtt|loss %|rate
SCENARIOS_ALL=("150ms-0|150ms|0|100mbit" "150ms-1|150ms|1|100mbit" "150ms-3|150ms|3|100mbit" "30ms-1-300|30ms|1|300mbit")
WAN_REPS="${BENCH_WAN_REPS:-3}"
WAN_T="${BENCH_WAN_TIME:-20}"
WAN_SCEN="${BENCH_WAN_SCENARIOS:-150ms-0 150ms-1 150ms-3 30ms-1-300}"
WAN_ROWS="${BENCH_WAN_ROWS:-plain-cubic plain-bbr wg tcp-tls reality quic}"
WAN_MAX="${BENCH_WAN_MAX_SECONDS:-5400}"
ROWS_WANTED="wg tcp-tls reality quic" # what bench.sh's build and want() look at

NS_C=mwan-c-$ID NS_R=mwan-r-$ID NS_S=mwan-s-$ID
SRV=192.0.2.130 CLI=192.0.2.2 RTR_C=192.0.2.1 RTR_S=192.0.2.129
LINKEM_PID=""

wan_cleanup() {
	local status=$?
	set +e
	stop "$LINKEM_PID"
	ip netns del $NS_R 2>/dev/null
	(exit $status)
	cleanup
}

wan_check() {
	((EUID == 0)) || die "needs root (network namespaces, TUN devices): sudo $0"
	[[ -c /dev/net/tun ]] || die "/dev/net/tun is missing (modprobe tun?)"
	[[ $WAN_REPS =~ ^[1-9][0-9]?$ ]] || die "BENCH_WAN_REPS must be 1-99, got '$WAN_REPS'"
	[[ $WAN_T =~ ^[1-9][0-9]{0,2}$ ]] || die "BENCH_WAN_TIME must be 1-999 seconds, got '$WAN_T'"
	[[ $WAN_MAX =~ ^[0-9]+$ ]] || die "BENCH_WAN_MAX_SECONDS must be a number, got '$WAN_MAX'"
	local s r ok
	for s in $WAN_SCEN; do
		ok=0
		for r in "${SCENARIOS_ALL[@]}"; do [[ ${r%%|*} == "$s" ]] && ok=1; done
		((ok)) || die "BENCH_WAN_SCENARIOS: unknown scenario '$s' (${SCENARIOS_ALL[*]%%|*})"
	done
	for r in $WAN_ROWS; do
		[[ $r =~ ^(plain-cubic|plain-bbr|wg|tcp-tls|reality|quic)$ ]] || die "BENCH_WAN_ROWS: unknown row '$r'"
	done
	ROWS_WANTED=$(for r in $WAN_ROWS; do [[ $r == plain-* ]] || echo "$r"; done | tr '\n' ' ')
}

wan_topology() {
	say "Creating namespaces $NS_C, $NS_R (emulator) and $NS_S"
	local ns
	for ns in $NS_C $NS_R $NS_S; do
		ip netns add "$ns"
		ip -n "$ns" link set lo up
	done
	ip -n $NS_R link add r0 type veth peer name c0 netns $NS_C
	ip -n $NS_R link add r1 type veth peer name s0 netns $NS_S
	ip -n $NS_C addr add $CLI/25 dev c0
	ip -n $NS_S addr add $SRV/25 dev s0
	ip -n $NS_R addr add $RTR_C/25 dev r0
	ip -n $NS_R addr add $RTR_S/25 dev r1
	for ns in "$NS_C c0" "$NS_S s0" "$NS_R r0" "$NS_R r1"; do
		# shellcheck disable=SC2086 # ns and device
		ip -n ${ns% *} link set ${ns#* } up
	done
	ip -n $NS_C route add default via $RTR_C
	ip -n $NS_S route add default via $RTR_S
	# Every forwarded packet goes to wan0; what the emulator writes back
	# arrives on wan0 and takes the main table to its veth.
	ip -n $NS_R tuntap add dev wan0 mode tun
	ip -n $NS_R link set wan0 up txqueuelen 10000
	in_ns $NS_R sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
		net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.wan0.rp_filter=0
	ip -n $NS_R route add default dev wan0 table 100
	ip -n $NS_R rule add iif r0 lookup 100 pref 100
	ip -n $NS_R rule add iif r1 lookup 100 pref 101
	start_linkem 0ms 0 0
	wait_for 5 in_ns $NS_C ping -c 1 -W 1 $SRV || die "no ping reply through the emulator"
	start_iperf
}

# start_linkem RTT LOSS% RATE: (re)starts the emulator with these settings.
start_linkem() {
	stop "$LINKEM_PID"
	rm -f "$WORK/linkem.json"
	ip netns exec $NS_R "$WORK/mirage-linkem" -dev wan0 -up 192.0.2.128/25 -rtt "$1" -loss "$2" -rate "$3" \
		-stats "$WORK/linkem.json" 2>>"$WORK/linkem.log" &
	LINKEM_PID=$!
	wait_for 5 test -s "$WORK/linkem.json" || die "mirage-linkem did not start (see $WORK/linkem.log)"
}

build_linkem() {
	say "Building mirage-linkem (the link emulator)"
	(cd "$REPO" && CGO_ENABLED=0 go build -o "$WORK/mirage-linkem" ./platform/internal/linkem/cmd/mirage-linkem) ||
		die "could not build mirage-linkem"
}

# link_bytes: bytes the router sent to both ends so far.
link_bytes() {
	ip -n $NS_R -j -s link show | jq '[.[] | select(.ifname == "r0" or .ifname == "r1") | .stats64.tx.bytes] | add'
}

# wan_iperf ROW SCEN REP ADDR CC KEY ARGS...: one download test; records
# KEY (Mbit/s), KEY_retrans and, for the single stream, bytes and overhead.
wan_iperf() {
	local row=$1 scen=$2 rep=$3 addr=$4 cc=$5 key=$6 f b0 b1 v
	shift 6
	f="$WORK/$scen.$row.$rep.$key.json"
	b0=$(link_bytes)
	if ! timeout $((WAN_T + 30)) ip netns exec $NS_C iperf3 -c "$addr" -t "$WAN_T" -R -C "$cc" -J --connect-timeout 5000 "$@" >"$f" 2>&1; then
		warn "[$scen $row] iperf3 $key failed: $(jq -r '.error? // empty' "$f" 2>/dev/null | head -c 200)"
		restart_iperf
		record "$scen/$row" "$rep" "$key" null
		return
	fi
	b1=$(link_bytes)
	v=$(jq '.end.sum_received.bits_per_second / 1e6 * 100 | round / 100' "$f" 2>/dev/null) || v=null
	record "$scen/$row" "$rep" "$key" "${v:-null}"
	v=$(jq '.end.sum_sent.retransmits // null' "$f" 2>/dev/null) || v=null
	record "$scen/$row" "$rep" "${key}_retrans" "${v:-null}"
	v=$(jq --argjson link $((b1 - b0)) 'if .end.sum_received.bytes > 0 then ($link / .end.sum_received.bytes * 1000 | round / 1000) else null end' "$f" 2>/dev/null) || v=null
	record "$scen/$row" "$rep" "${key}_link_per_payload" "${v:-null}"
}

# wan_measure ROW SCEN REP ADDR CC: the row's tests once.
wan_measure() {
	local row=$1 scen=$2 rep=$3 addr=$4 cc=$5 p n
	say "[$scen] $row rep $rep/$WAN_REPS"
	wan_iperf "$row" "$scen" "$rep" "$addr" "$cc" down1 &
	local job=$!
	# Ping over the middle of the transfer: RTT under load.
	sleep 2
	n=$(((WAN_T - 4) * 5))
	p=$(timeout $((WAN_T + 10)) ip netns exec $NS_C ping -n -c "$n" -i 0.2 -W 2 "$addr" 2>/dev/null | pingstats "$n")
	wait $job || true
	record "$scen/$row" "$rep" load_p50 "$(jq .p50 <<<"$p")"
	record "$scen/$row" "$rep" load_p99 "$(jq .p99 <<<"$p")"
	wan_iperf "$row" "$scen" "$rep" "$addr" "$cc" down4 -P 4
}

# pingstats SENT: ping output on stdin -> {avg,p50,p99,loss}.
pingstats() {
	sed -n 's/.* time=\([0-9.]*\) ms.*/\1/p' | sort -n | awk -v sent="$1" '
		{ t[NR] = $1; s += $1 }
		function pct(p,  i) { i = int(p / 100 * NR + 0.999999); if (i < 1) i = 1; return t[i] }
		END {
			if (NR == 0) { print "{\"avg\":null,\"p50\":null,\"p99\":null,\"loss\":100}"; exit }
			printf "{\"avg\":%.3f,\"p50\":%.3f,\"p99\":%.3f,\"loss\":%.1f}\n", s / NR, pct(50), pct(99), (sent - NR) * 100 / sent
		}'
}

# verify SCEN: ping the server through the bare emulator (RTT and loss
# against the settings).
verify() {
	local scen=$1 p
	p=$(timeout 60 ip netns exec $NS_C ping -n -c 200 -i 0.05 -W 2 $SRV 2>/dev/null | pingstats 200)
	record "$scen/link" 0 ping_avg "$(jq .avg <<<"$p")"
	record "$scen/link" 0 ping_loss "$(jq .loss <<<"$p")"
	say "[$scen] emulator check: ping $(jq -r '"avg \(.avg) ms, p99 \(.p99) ms, loss \(.loss) %"' <<<"$p")"
}

wan_run() {
	local s name rtt loss rate rep row obfs
	obfs=false # the generated profile's own value, when there is one
	if [[ -f $WORK/server/server.toml ]]; then
		obfs=$(sed -n '/^\[obfuscation\]/,/^\[/ s/^enabled = //p' "$WORK/server/server.toml")
	fi
	for s in "${SCENARIOS_ALL[@]}"; do
		IFS="|" read -r name rtt loss rate <<<"$s"
		[[ " $WAN_SCEN " == *" $name "* ]] || continue
		say "Scenario $name: RTT $rtt, loss $loss % each way, bottleneck $rate, queue one BDP"
		start_linkem "$rtt" "$loss" "$rate"
		jq -cn --arg s "$name" --arg rtt "$rtt" --argjson loss "$loss" --arg rate "$rate" \
			'{scenario: $s, rtt: $rtt, loss: $loss, rate: $rate}' >>"$WORK/scenarios.jsonl"
		verify "$name"
		for ((rep = 1; rep <= WAN_REPS; rep++)); do
			for row in $WAN_ROWS; do
				if ((SECONDS - START + 2 * WAN_T + 40 > WAN_MAX)); then
					warn "time budget of $WAN_MAX s (BENCH_WAN_MAX_SECONDS) used up"
					return 0
				fi
				case $row in
				plain-cubic) wan_measure "$row" "$name" $rep $SRV cubic ;;
				plain-bbr) wan_measure "$row" "$name" $rep $SRV bbr ;;
				wg) wan_measure "$row" "$name" $rep $TUN_WG cubic ;;
				*)
					start_mirage "$row" "$obfs"
					wan_measure "$row" "$name" $rep $TUN_MIRAGE cubic
					stop_mirage
					;;
				esac
			done
		done
	done
}

wan_report() {
	local stamp out
	stamp=$(date -u +%Y%m%d-%H%M%S)
	out="$REPO/dist/bench"
	mkdir -p "$out"
	jq -n --slurpfile s "$WORK/samples.jsonl" --slurpfile sc "$WORK/scenarios.jsonl" \
		--arg date "$(date -u +%FT%TZ)" --arg version "$("$BIN/mirage-server" version 2>/dev/null | awk '{print $2}')" \
		--argjson reps "$WAN_REPS" --argjson t "$WAN_T" --arg kernel "$(uname -r)" --argjson ncpu "$(nproc)" \
		--arg rows "$WAN_ROWS" '
		def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
			else (.[length / 2 - 1] + .[length / 2]) / 2 end;
		def stats: map(select(. != null)) | {median: median, min: min, max: max, n: length};
		def rate_mbit: if endswith("gbit") then (.[:-4] | tonumber * 1000) else (.[:-4] | tonumber) end;
		{date: $date, mirage_version: $version, kernel: $kernel, ncpu: $ncpu, reps: $reps, iperf_seconds: $t,
		 scenarios: [$sc[] | . as $x | ($x.rate | rate_mbit) as $mbit
			| ($s | map(select(.row | startswith($x.scenario + "/")))) as $mine
			| $x + {link_mbit: $mbit,
				check: ($mine | map(select(.row == $x.scenario + "/link")) | map({key: .metric, value: .value}) | from_entries),
				rows: [$rows | split(" ")[] | select(. != "") as $r
					| {row: $r, metrics: ($mine | map(select(.row == $x.scenario + "/" + $r)) | group_by(.metric)
						| map({key: .[0].metric, value: (map(.value) | stats)}) | from_entries)}
					| .pct_of_link = {down1: (if .metrics.down1.median then (.metrics.down1.median / $mbit * 100 | round) else null end),
						down4: (if .metrics.down4.median then (.metrics.down4.median / $mbit * 100 | round) else null end)}]}],
		 samples: $s}' >"$out/wan-$stamp.json"
	jq -r '
		def num: if . == null then "-" elif (. | type) == "number" then (if . >= 100 then (. | round | tostring) else (. * 100 | round / 100 | tostring) end) else tostring end;
		def cell: if . == null or .n == 0 then "-" elif .n == 1 or .min == .max then (.median | num)
			else "\(.median | num) (\(.min | num)–\(.max | num))" end;
		def pct: if . == null then "-" else "\(.) %" end;
		"Mirage WAN benchmark \(.date), \(.mirage_version), \(.reps) repetition(s) × \(.iperf_seconds) s per test, kernel \(.kernel), \(.ncpu) cores. Median (min–max). Downloads (iperf3 -R), inner TCP cubic unless the row says bbr. Link bytes / payload: bytes the emulated link carried both ways per byte of payload delivered (plain TCP shows the header and ACK cost).",
		(.scenarios[] |
		"",
		"### RTT \(.rtt), \(.loss) % loss each way, \(.rate) bottleneck (queue one BDP); emulator check: ping avg \(.check.ping_avg | num) ms, loss \(.check.ping_loss | num) % (expected \(1 - (1 - .loss / 100) * (1 - .loss / 100) | . * 1000 | round / 10) %)",
		"",
		"| row | 1 stream Mbit/s | % of link | inner retransmits | link bytes / payload | RTT under load p50 / p99 ms | 4 streams Mbit/s | % of link |",
		"|---|---|---|---|---|---|---|---|",
		(.rows[] | .metrics as $m |
		"| \(.row) | \($m.down1 | cell) | \(.pct_of_link.down1 | pct) | \($m.down1_retrans | cell) | \($m.down1_link_per_payload | cell) | \($m.load_p50 | cell) / \($m.load_p99 | cell) | \($m.down4 | cell) | \(.pct_of_link.down4 | pct) |"))
		' "$out/wan-$stamp.json" >"$out/wan-$stamp.md"
	echo
	cat "$out/wan-$stamp.md"
	echo
	say "Results: $out/wan-$stamp.json and .md ($((SECONDS - START)) s)"
}

wan_main() {
	wan_check
	trap wan_cleanup EXIT
	trap 'exit 130' INT TERM
	WORK=$(mktemp -d /tmp/mirage-wan.XXXXXX)
	build
	build_linkem
	wan_topology
	want wg && start_wireguard
	if want tcp-tls || want reality || want quic; then init_mirage; fi
	: >"$WORK/samples.jsonl"
	: >"$WORK/scenarios.jsonl"
	wan_run
	wan_report
}

wan_main "$@"
