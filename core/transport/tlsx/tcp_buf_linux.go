package tlsx

import (
	"log/slog"
	"os"
	"strconv"
	"strings"
)

// sysctlDir is where checkBufferLimits reads the TCP buffer limits.
const sysctlDir = "/proc/sys/net/ipv4/"

// checkBufferLimits logs once (the caller's sync.Once) when the kernel's
// autotuning bounds, tcp_wmem[2] and tcp_rmem[2], are below BDPTarget: a
// connection cannot keep more than about that much in flight, which caps
// a long path's throughput whatever the congestion control does.
func checkBufferLimits(log *slog.Logger) {
	wmem, werr := sysctlMax(sysctlDir + "tcp_wmem")
	rmem, rerr := sysctlMax(sysctlDir + "tcp_rmem")
	if werr != nil || rerr != nil {
		log.Debug("TCP buffer limits unknown", "tcp_wmem", werr, "tcp_rmem", rerr)
		return
	}
	if wmem >= BDPTarget && rmem >= BDPTarget {
		return
	}
	log.Info("TCP buffer limits are below the bandwidth-delay product of 300 ms × 1 Gbit/s (37.5 MB); "+
		"long-distance throughput per tunnel connection is capped near limit/RTT. "+
		"Raise them with sysctl -w net.ipv4.tcp_wmem=\"4096 16384 67108864\" net.ipv4.tcp_rmem=\"4096 131072 67108864\"",
		"tcp_wmem_max", wmem, "tcp_rmem_max", rmem,
		"send_cap_mbit_at_200ms", capMbit(wmem), "receive_cap_mbit_at_200ms", capMbit(rmem))
}

// capMbit is the throughput that limit bytes in flight allow at 200 ms RTT.
func capMbit(limit int) int { return limit * 8 * 5 / 1_000_000 }

// sysctlMax reads the third field of a "min default max" sysctl file.
func sysctlMax(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return 0, &strconv.NumError{Func: "sysctlMax", Num: string(b), Err: strconv.ErrSyntax}
	}
	return strconv.Atoi(f[2])
}
