//go:build linux

package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/transport/quictun"
)

// quicClient is the server's generated profile speaking QUIC only.
func quicClient(t *testing.T, s *mserver, edit func(m map[string]any)) string {
	t.Helper()
	return derivedClient(t, s, func(m map[string]any) {
		table(m, "connection")["enabled_protocols"] = []string{"quic"}
		if edit != nil {
			edit(m)
		}
	})
}

// iptCount returns the packet count of the first OUTPUT rule in ns whose
// listing contains match.
func iptCount(t *testing.T, ns, match string) int {
	t.Helper()
	out := mustNS(t, ns, "iptables", "-w", "-L", "OUTPUT", "-v", "-n", "-x")
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, match) {
			f := strings.Fields(l)
			n, err := strconv.Atoi(f[0])
			if err != nil {
				t.Fatalf("iptables counter in %q: %v", l, err)
			}
			return n
		}
	}
	t.Fatalf("no OUTPUT rule matching %q:\n%s", match, out)
	return 0
}

// QUIC end to end: ping v4/v6, 64 MiB each way with equal hashes, the
// transport's traffic is UDP only; after a server restart the client is
// back with 0-RTT.
func TestE2EQUIC(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	port := strconv.Itoa(srvPort)
	// Counting rules (no target) for the transport's packets: TCP
	// connection attempts (SYN only: the closing packets of waitPort's probe
	// connection may still leave after the rule is in) and UDP packets.
	mustNS(t, tp.CLI, "iptables", "-w", "-I", "OUTPUT", "-p", "tcp", "--syn", "-d", srvAddr, "--dport", port, "-m", "comment", "--comment", "count-tcp")
	mustNS(t, tp.CLI, "iptables", "-w", "-I", "OUTPUT", "-p", "udp", "-d", srvAddr, "--dport", port, "-m", "comment", "--comment", "count-udp")

	start := time.Now()
	c := startClient(t, tp, quicClient(t, s, nil))
	line := c.waitConnected(t, 1, connectTimeout)
	full := time.Since(start)
	if connectedField(line, "transport") != "quic" {
		t.Fatalf("connected over %q: %s", connectedField(line, "transport"), line)
	}
	if l := mustNS(t, tp.CLI, "ip", "link", "show", "dev", cliTUN); !strings.Contains(l, fmt.Sprintf("mtu %d", quictun.TunnelMTU)) || !strings.Contains(line, fmt.Sprintf("mtu=%d", quictun.TunnelMTU)) {
		t.Errorf("tunnel MTU not sized for QUIC datagrams:\n%s", l)
	}
	waitPing(t, tp.CLI, tunSrv4, 5*time.Second)
	for _, a := range []string{tunSrv4, tunSrv6, hostAddr, hostAddr6} {
		if err := ping(tp.CLI, a); err != nil {
			t.Errorf("ping %s over quic: %v", a, err)
		}
	}
	checkTransfer(t, tp.SRV, tp.CLI, tunSrv4, 64<<20, 90*time.Second)
	if n := iptCount(t, tp.CLI, "count-tcp"); n != 0 {
		t.Errorf("%d TCP connection attempts to the server's port with quic only", n)
	}
	if n := iptCount(t, tp.CLI, "count-udp"); n < 1000 {
		t.Errorf("only %d UDP packets to the server for 128 MiB of traffic", n)
	}

	// Restart: the ticket from the first connection resumes with 0-RTT,
	// also after failed attempts while the server was down.
	s.stop(t)
	time.Sleep(2500 * time.Millisecond)
	restart := time.Now()
	s.restart(t)
	c.waitConnected(t, 2, 40*time.Second)
	again := time.Since(restart)
	if !regexp.MustCompile(`msg=connected .*transport=quic.* zero_rtt=true`).MatchString(c.p.Stderr()) {
		t.Errorf("reconnect after the server restart did not use 0-RTT; client log:\n%s", tail(c.p.Stderr(), 15))
	}
	waitPing(t, tp.CLI, tunSrv4, 5*time.Second)
	// Times for the note (not asserted): the first includes process start,
	// the second the server's start.
	t.Logf("first connect (full handshake) %v; reconnect after restart (0-RTT) %v", full.Round(time.Millisecond), again.Round(time.Millisecond))
}

// Port hopping every 2 s during a 20 s inner TCP transfer: the session
// moves across source and server ports, the transfer completes, no
// reconnect.
func TestE2EQUICPortHopping(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	m := readTOML(t, s.configPath())
	table(m, "quic")["port_range"] = "20000-20009"
	writeTOML(t, s.configPath(), m)
	s.stop(t)
	s.restart(t)

	c := startClient(t, tp, quicClient(t, s, func(m map[string]any) {
		table(m, "connection")["port_hopping_interval_s"] = 2
	}))
	c.waitConnected(t, 1, connectTimeout)
	waitPing(t, tp.CLI, tunSrv4, 5*time.Second)

	srv := startProc(t, tp.SRV, "iperf3-server", procOpts{}, "iperf3", "-s", "-1", "-B", tunSrv4)
	time.Sleep(500 * time.Millisecond)
	out, err := nsOutput(tp.CLI, "timeout", "60", "iperf3", "-c", tunSrv4, "-t", "20", "-b", "100M", "-f", "m")
	if err != nil {
		t.Fatalf("iperf3 through hopping quic: %v\n%s\nclient log:\n%s", err, out, tail(c.p.Stderr(), 20))
	}
	srv.wait(10 * time.Second)
	summary := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "receiver") {
			summary = strings.TrimSpace(l)
		}
	}
	t.Logf("iperf3: %s", summary)

	hops := regexp.MustCompile(`msg="port hopped" server=[^ ]*:(\d+) local=[^ ]*:(\d+)`).FindAllStringSubmatch(c.p.Stderr(), -1)
	serverPorts, localPorts := map[string]bool{}, map[string]bool{}
	for _, h := range hops {
		serverPorts[h[1]] = true
		localPorts[h[2]] = true
	}
	t.Logf("%d hops, %d server ports, %d client ports", len(hops), len(serverPorts), len(localPorts))
	if len(localPorts) < 5 || len(serverPorts) < 3 {
		t.Errorf("hopping over %d client ports and %d server ports in 20 s; want >= 5 and >= 3\n%s", len(localPorts), len(serverPorts), tail(c.p.Stderr(), 30))
	}
	if n := len(connectedRE.FindAllString(c.p.Stdout(), -1)); n != 1 {
		t.Errorf("the session restarted while hopping (%d connected lines)", n)
	}
}

// UDP blocked on the path: a ["quic","tcp-tls"] profile falls back to
// tcp-tls within 10 s and says why.
func TestE2EQUICBlockedFallsBack(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	mustNS(t, tp.CLI, "iptables", "-w", "-I", "OUTPUT", "-p", "udp", "-d", srvAddr, "-j", "DROP")
	start := time.Now()
	c := startClient(t, tp, derivedClient(t, s, func(m map[string]any) {
		cn := table(m, "connection")
		cn["enabled_protocols"] = []string{"quic", "tcp-tls"}
		cn["connect_timeout_s"] = 4
	}))
	line := c.waitConnected(t, 1, 10*time.Second)
	took := time.Since(start)
	if connectedField(line, "transport") != "tcp-tls" {
		t.Fatalf("connected over %q with UDP blocked: %s", connectedField(line, "transport"), line)
	}
	if !strings.Contains(c.p.Stderr(), "transport=quic") {
		t.Errorf("the log does not say quic failed:\n%s", tail(c.p.Stderr(), 10))
	}
	t.Logf("fell back to tcp-tls after %v", took.Round(time.Millisecond))
	waitPing(t, tp.CLI, tunSrv4, 5*time.Second)

}
