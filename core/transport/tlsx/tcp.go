package tlsx

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
)

// NotSentLowat is the TCP_NOTSENT_LOWAT of tunnel connections: at most
// this many bytes wait unsent in the kernel before a write blocks. In
// `make bench` (tcp-tls, 2 runs each, 2026-12-02) the kernel default
// (no bound) gave 5171 / 4791 Mbit/s up / down and 1887 under 1 % loss;
// 16 KiB 5291 / 5038 and 2951; 32 KiB 5202 / 4808 and 3238; 128 KiB
// 5052 / 4644 and 2607; RTT under load was 2.4–3.2 ms in all of them. The
// gain under loss is the largest; a likely reason is that with little
// queued in the socket the inner TCP feels the outer one's loss recovery
// at once instead of after a socket buffer's worth of delay.
const NotSentLowat = 32 << 10

// Congestion control names for TCPOptions.Congestion ([connection]
// congestion_control).
const (
	// CongestionBBR is the default: BBR keeps its rate under random loss,
	// where loss-based cubic (the usual system default) collapses: at 1 %
	// loss and 150–250 ms RTT cubic's window stays a few segments wide.
	CongestionBBR = "bbr"
	// CongestionSystem leaves the socket with the system's default
	// (net.ipv4.tcp_congestion_control on Linux).
	CongestionSystem = "system"
)

// BDPTarget is the bandwidth-delay product the tunnel's socket buffers
// should reach: 300 ms × 1 Gbit/s = 37.5 MB.
const BDPTarget = 300 * 1_000_000_000 / 8 / 1000

// errNoPerSocketCC: the OS has no per-socket congestion control (macOS,
// Windows).
var errNoPerSocketCC = errors.New("no per-socket congestion control on this OS")

// TCPOptions configures TuneTCP.
type TCPOptions struct {
	// Congestion is the congestion control to set on the socket: a kernel
	// algorithm name such as CongestionBBR, or "" / CongestionSystem for
	// the system default.
	Congestion string
	// Log receives the once-per-process notes (the algorithm refused, the
	// buffer limits below BDPTarget) and a DEBUG line per connection. Nil:
	// discarded.
	Log *slog.Logger
}

// TuneTCP sets the socket options of a tunnel's TCP connection and returns
// the congestion control in use ("" when not a TCP connection or when the
// OS does not tell):
//
//   - no Nagle delay (every write is a whole batch of packets);
//   - the bound on unsent data, NotSentLowat (Linux and macOS; Windows and
//     FreeBSD have no such option), so the queue a bulk transfer builds
//     stays in front of the tunnel, where the inner TCP sees it, instead of
//     in the socket;
//   - the congestion control, per socket (TCP_CONGESTION on Linux and
//     FreeBSD; macOS and Windows offer no per-socket choice, the system's
//     is used). When the kernel refuses it (ENOENT: not built or loaded;
//     EPERM: not in net.ipv4.tcp_allowed_congestion_control for a process
//     without CAP_NET_ADMIN) the system default stays and one line per
//     process says so. FreeBSD's BBR is a TCP stack (tcp_bbr, chosen with
//     TCP_FUNCTION_BLK), not a congestion control module, so "bbr" falls
//     back there unless a module of that name exists.
//
// Not set, on purpose:
//
//   - TCP_QUICKACK. It is not sticky (the kernel clears it whenever it
//     switches back to delayed ACKs), and where it would matter the kernel
//     already acks at once: a connection starts in quick-ACK mode for its
//     first ACKs (up to 16, TCP_MAX_QUICKACKS) and after an idle period,
//     acks out-of-order and retransmitted data at once (loss recovery); in
//     bulk transfer it acks every second full segment anyway; and with
//     Nagle off at the peer there is no Nagle/delayed-ACK stall. Keeping it
//     set would cost a setsockopt per read on the data path for none of this.
//   - SO_SNDBUF / SO_RCVBUF. Setting them switches off the kernel's buffer
//     autotuning, and without CAP_NET_ADMIN they are capped by
//     net.core.wmem_max / rmem_max (208 KiB by default), far below what
//     autotuning reaches (tcp_wmem[2] / tcp_rmem[2], 4 and 6 MiB by
//     default). The *FORCE variants would bypass the operator's limits and
//     lock a BDPTarget-sized receive buffer for every connection. So
//     autotuning stays, bounded by the sysctls, and TuneTCP logs once per
//     process when tcp_wmem[2] or tcp_rmem[2] is below BDPTarget, with the
//     throughput that bound allows at 200 ms RTT (Linux), so that the
//     operator can raise them.
func TuneTCP(c net.Conn, o TCPOptions) string { return procTuner.tune(c, o) }

// Congestion returns the congestion control in use on c, read back from
// the kernel; "" when c is not a TCP connection or the OS does not tell.
func Congestion(c net.Conn) string {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return ""
	}
	return getCongestion(tc)
}

// tuner holds the once-per-process state of TuneTCP; tests make their own.
type tuner struct {
	ccRefused sync.Once
	buffers   sync.Once
}

var procTuner tuner

func (t *tuner) tune(c net.Conn, o TCPOptions) string {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return ""
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	_ = tc.SetNoDelay(true)
	setNotSentLowat(tc, NotSentLowat)
	t.buffers.Do(func() { checkBufferLimits(log) })

	want := o.Congestion
	if want == CongestionSystem {
		want = ""
	}
	var err error
	if want != "" {
		err = setCongestion(tc, want)
	}
	inUse := getCongestion(tc)
	if err != nil {
		t.ccRefused.Do(func() {
			level, reason := slog.LevelWarn, congestionRefusal(err)
			if errors.Is(err, errNoPerSocketCC) {
				level, reason = slog.LevelInfo, err.Error()
			}
			shown := inUse
			if shown == "" {
				shown = "system default"
			}
			log.Log(context.Background(), level,
				"TCP congestion control not set, tunnel connections use the system's",
				"asked", want, "reason", reason, "in_use", shown)
		})
	}
	log.Debug("tunnel TCP connection tuned", "local", c.LocalAddr(), "remote", c.RemoteAddr(),
		"congestion", inUse)
	return inUse
}
