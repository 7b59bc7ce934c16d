# shellcheck shell=bash
# proc.sh: small process and namespace helpers shared by the demo, screenshot
# and bench scripts (sourced, not run).

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# stop PID: SIGTERM, then SIGKILL after 5 s.
stop() {
	local pid=$1 i
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# wait_for SECONDS CMD...: retry CMD every 0.2 s until it succeeds or about
# SECONDS have passed.
wait_for() {
	local end=$((SECONDS + $1))
	shift
	while ((SECONDS < end)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	return 1
}
