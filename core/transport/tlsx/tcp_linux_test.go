package tlsx

import (
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// tcpPair returns both ends of a TCP connection on 127.0.0.1, closed when
// t ends.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Skip("no IPv4 loopback:", err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := <-acc
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { s.Close() })
	return c, s
}

// sockopt reads a TCP-level option of c straight from the kernel.
func sockoptInt(t *testing.T, c net.Conn, opt int) int {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, opt) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

func sockoptCC(t *testing.T, c net.Conn) string {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v string
	var gerr error
	rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

func readSysctl(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/" + name)
	if err != nil {
		t.Skip("no /proc/sys:", err)
	}
	return strings.TrimSpace(string(b))
}

// requireBBR skips when the kernel has no BBR, except under CI=true.
func requireBBR(t *testing.T) {
	t.Helper()
	if strings.Contains(" "+readSysctl(t, "tcp_available_congestion_control")+" ", " bbr ") {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("the kernel has no bbr (tcp_available_congestion_control) under CI=true; modprobe tcp_bbr")
	}
	t.Skip("the kernel has no bbr (modprobe tcp_bbr); skipping")
}

// TestTuneTCP: a tunnel connection gets TCP_NODELAY and the unsent-data
// bound; anything that is not a TCP connection is left alone.
func TestTuneTCP(t *testing.T) {
	c, _ := tcpPair(t)
	TuneTCP(c, TCPOptions{})
	if lowat := sockoptInt(t, c, unix.TCP_NOTSENT_LOWAT); lowat != NotSentLowat {
		t.Errorf("TCP_NOTSENT_LOWAT = %d, want %d", lowat, NotSentLowat)
	}
	if nodelay := sockoptInt(t, c, unix.TCP_NODELAY); nodelay != 1 {
		t.Errorf("TCP_NODELAY = %d, want 1", nodelay)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := TuneTCP(a, TCPOptions{Congestion: CongestionBBR}); got != "" { // not TCP: nothing to do, no panic
		t.Errorf("TuneTCP(pipe) = %q, want \"\"", got)
	}
	if got := Congestion(a); got != "" {
		t.Errorf("Congestion(pipe) = %q, want \"\"", got)
	}
}

// TestTuneTCPBBR: "bbr" is set on the socket itself, on both ends, and
// TuneTCP and Congestion report what the kernel says.
func TestTuneTCPBBR(t *testing.T) {
	requireBBR(t)
	c, s := tcpPair(t)
	for _, conn := range []net.Conn{c, s} {
		if got := TuneTCP(conn, TCPOptions{Congestion: CongestionBBR}); got != "bbr" {
			t.Errorf("TuneTCP = %q, want bbr", got)
		}
		if got := sockoptCC(t, conn); got != "bbr" {
			t.Errorf("TCP_CONGESTION = %q, want bbr", got)
		}
		if got := Congestion(conn); got != "bbr" {
			t.Errorf("Congestion = %q, want bbr", got)
		}
	}
	// Per socket even where bbr is the system default: reno is always built in.
	if got := TuneTCP(c, TCPOptions{Congestion: "reno"}); got != "reno" || sockoptCC(t, c) != "reno" {
		t.Errorf("TuneTCP(reno) = %q, TCP_CONGESTION = %q, want reno", got, sockoptCC(t, c))
	}
}

// TestTuneTCPSystem: "system" (and "") leave the namespace's default.
func TestTuneTCPSystem(t *testing.T) {
	def := readSysctl(t, "tcp_congestion_control")
	for _, cc := range []string{CongestionSystem, ""} {
		c, _ := tcpPair(t)
		if got := TuneTCP(c, TCPOptions{Congestion: cc}); got != def {
			t.Errorf("TuneTCP(%q) = %q, want the default %q", cc, got, def)
		}
		if got := sockoptCC(t, c); got != def {
			t.Errorf("TuneTCP(%q): TCP_CONGESTION = %q, want the default %q", cc, got, def)
		}
	}
}

// TestTuneTCPFallback: an algorithm the kernel refuses is no error: the
// default stays in use and one line per process (here: per tuner) says so,
// however many connections are tuned.
func TestTuneTCPFallback(t *testing.T) {
	def := readSysctl(t, "tcp_congestion_control")
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var tu tuner
	var wg sync.WaitGroup
	for range 4 {
		c, s := tcpPair(t)
		for _, conn := range []net.Conn{c, s} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if got := tu.tune(conn, TCPOptions{Congestion: "nosuchcc", Log: log}); got != def {
					t.Errorf("tune(nosuchcc) = %q, want the default %q", got, def)
				}
			}()
		}
	}
	wg.Wait()
	out := logs.String()
	if n := strings.Count(out, "TCP congestion control not set"); n != 1 {
		t.Fatalf("%d refusal lines for 8 connections, want 1:\n%s", n, out)
	}
	for _, want := range []string{"level=WARN", "asked=nosuchcc", "not available in this kernel", "in_use=" + def} {
		if !strings.Contains(out, want) {
			t.Errorf("refusal line lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "tunnel TCP connection tuned"); n != 8 {
		t.Errorf("%d DEBUG lines per connection, want 8:\n%s", n, out)
	}
}

// TestCongestionRefusal: the two refusals a user can fix are explained.
func TestCongestionRefusal(t *testing.T) {
	if got := congestionRefusal(unix.EPERM); !strings.Contains(got, "tcp_allowed_congestion_control") {
		t.Errorf("EPERM: %q", got)
	}
	if got := congestionRefusal(unix.ENOENT); !strings.Contains(got, "modprobe") {
		t.Errorf("ENOENT: %q", got)
	}
}

// TestBufferLimits: limits below the 300 ms × 1 Gbit/s product are logged
// with the sysctls to raise; the log is once per tuner.
func TestBufferLimits(t *testing.T) {
	if BDPTarget != 37_500_000 {
		t.Fatalf("BDPTarget = %d, want 37.5 MB", BDPTarget)
	}
	if got := capMbit(4 << 20); got != 167 {
		t.Errorf("capMbit(4 MiB) = %d, want 167", got)
	}
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var tu tuner
	for range 3 {
		c, _ := tcpPair(t)
		tu.tune(c, TCPOptions{Log: log})
	}
	w, _ := sysctlMax("/proc/sys/net/ipv4/tcp_wmem")
	r, _ := sysctlMax("/proc/sys/net/ipv4/tcp_rmem")
	n := strings.Count(logs.String(), "TCP buffer limits are below")
	want := 0
	if w < BDPTarget || r < BDPTarget {
		want = 1
	}
	if n != want {
		t.Errorf("tcp_wmem max %d, tcp_rmem max %d: %d buffer lines, want %d:\n%s", w, r, n, want, logs.String())
	}
}
