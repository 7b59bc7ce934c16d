package killswitch

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/platform/internal/nstest"
	"golang.org/x/sys/unix"
)

// childCfg is what the child enables: the server in B (IPv4 and IPv6), the
// tunnel towards T and one resolver in T.
var childCfg = Config{
	TunInterface: "mtun0",
	Servers:      []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:443"), netip.MustParseAddrPort("[fd00:2::1]:8443")},
	DNS:          []netip.Addr{netip.MustParseAddr("198.51.100.1")},
}

// TestChildKillswitch runs in namespace A. MIRAGE_TEST_MODE is a list of
// steps: "enable", "enablelan", "disable", "active".
func TestChildKillswitch(t *testing.T) {
	if !nstest.IsChild(t) {
		t.Skip("runs only as a child of the netns tests")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	for _, step := range strings.Split(os.Getenv("MIRAGE_TEST_MODE"), ",") {
		var err error
		switch step {
		case "enable":
			err = Enable(log, childCfg)
		case "enablelan":
			cfg := childCfg
			cfg.AllowLAN = true
			err = Enable(log, cfg)
		case "disable":
			err = Disable(log)
		case "active":
			var on bool
			on, err = Active()
			fmt.Printf("ACTIVE=%v\n", on)
		default:
			t.Fatalf("unknown step %q", step)
		}
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}
}

// inNS runs f on a thread moved into the named namespace; the thread is
// discarded afterwards (the goroutine exits locked).
func inNS(t *testing.T, ns string, f func()) {
	t.Helper()
	fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open netns %s: %v", ns, err)
	}
	defer unix.Close(fd)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		f()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatalf("setns %s: %v", ns, err)
	}
}

// serve starts TCP listeners answering "ok" on the given ports of every
// address in ns and UDP echo servers on port 53 of each of udpAddrs (bound
// singly so replies come from the address asked), closed when t ends.
func serve(t *testing.T, ns string, udpAddrs []string, tcpPorts ...int) {
	inNS(t, ns, func() {
		for _, p := range tcpPorts {
			l, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
			if err != nil {
				t.Errorf("listen tcp %d in %s: %v", p, ns, err)
				return
			}
			t.Cleanup(func() { l.Close() })
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Write([]byte("ok"))
					c.Close()
				}
			}()
		}
		for _, a := range udpAddrs {
			u, err := net.ListenPacket("udp", net.JoinHostPort(a, "53"))
			if err != nil {
				t.Errorf("listen udp %s:53 in %s: %v", a, ns, err)
				return
			}
			t.Cleanup(func() { u.Close() })
			go func() {
				b := make([]byte, 64)
				for {
					n, from, err := u.ReadFrom(b)
					if err != nil {
						return
					}
					u.WriteTo(b[:n], from)
				}
			}()
		}
	})
}

// reach reports whether target answers from namespace ns: "tcp host:port",
// "udp host:port" (an echo) or "ping host".
func reach(t *testing.T, ns, target string) bool {
	kind, addr, _ := strings.Cut(target, " ")
	if kind == "ping" {
		_, err := nstest.Exec(ns, "ping", "-n", "-q", "-c1", "-W1", addr)
		return err == nil
	}
	ok := false
	inNS(t, ns, func() {
		c, err := net.DialTimeout(kind, addr, time.Second)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		if kind == "udp" {
			if _, err := c.Write([]byte("ok")); err != nil {
				return
			}
		}
		b := make([]byte, 2)
		n, _ := c.Read(b)
		ok = string(b[:n]) == "ok"
	})
	return ok
}

// expect checks every target: want is true for reachable.
func expect(t *testing.T, when, ns string, targets map[string]bool) {
	t.Helper()
	for target, want := range targets {
		if got := reach(t, ns, target); got != want {
			t.Errorf("%s: %s reachable = %v, want %v", when, target, got, want)
		}
	}
}

func runChild(t *testing.T, ns, steps string) string {
	t.Helper()
	out := nstest.RunChild(t, ns, "TestChildKillswitch", "MIRAGE_TEST_MODE="+steps)
	if !strings.Contains(out, "--- PASS: TestChildKillswitch") {
		t.Fatalf("child %s:\n%s", steps, out)
	}
	return out
}

// TestKillswitch builds namespace A (the client) with a veth to B (the LAN
// with the VPN server, 192.0.2.0/24 and fd00:2::/64), one to C (the outside
// and default route, 203.0.113.0/24) and one named mtun0 to T standing for
// the tunnel (198.51.100.0/24; T answers DNS on .1, allowed, and .3, not).
func TestKillswitch(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.RequireTool(t, "nft")
	nstest.RequireTool(t, "ping")
	a, b, c, tn := nstest.New(t), nstest.New(t), nstest.New(t), nstest.New(t)
	for _, l := range []struct{ local, peer, peerNS, addrA, addrPeer string }{
		{"lan0", "b0", b, "192.0.2.2/24", "192.0.2.1/24"},
		{"wan0", "c0", c, "203.0.113.1/24", "203.0.113.2/24"},
		{"mtun0", "t0", tn, "198.51.100.2/24", "198.51.100.1/24"},
	} {
		nstest.Run(t, a, "ip", "link", "add", l.local, "type", "veth", "peer", "name", l.peer, "netns", l.peerNS)
		nstest.Run(t, a, "ip", "addr", "add", l.addrA, "dev", l.local)
		nstest.Run(t, a, "ip", "link", "set", l.local, "up")
		nstest.Run(t, l.peerNS, "ip", "addr", "add", l.addrPeer, "dev", l.peer)
		nstest.Run(t, l.peerNS, "ip", "link", "set", l.peer, "up")
	}
	nstest.Run(t, tn, "ip", "addr", "add", "198.51.100.3/24", "dev", "t0")
	nstest.Run(t, a, "ip", "addr", "add", "fd00:2::2/64", "dev", "lan0", "nodad")
	nstest.Run(t, b, "ip", "addr", "add", "fd00:2::1/64", "dev", "b0", "nodad")
	nstest.Run(t, a, "ip", "route", "add", "default", "via", "203.0.113.2")
	// Beyond the outside gateway: only reachable by the default route.
	nstest.Run(t, a, "ip", "addr", "add", "fd00:3::1/64", "dev", "wan0", "nodad")
	nstest.Run(t, c, "ip", "addr", "add", "fd00:3::2/64", "dev", "c0", "nodad")
	nstest.Run(t, c, "ip", "addr", "add", "fd00:99::1/128", "dev", "lo")
	nstest.Run(t, a, "ip", "-6", "route", "add", "default", "via", "fd00:3::2")
	serve(t, b, []string{"192.0.2.1"}, 443, 8443, 8080)
	serve(t, c, []string{"203.0.113.2"}, 8080)
	serve(t, tn, []string{"198.51.100.1", "198.51.100.3"}, 8080)

	all := func(v bool) map[string]bool {
		return map[string]bool{
			"tcp 192.0.2.1:443": true, "tcp [fd00:2::1]:8443": true,
			"tcp 192.0.2.1:8080": v, "tcp [fd00:2::1]:8080": v, "udp 192.0.2.1:53": v, "ping 192.0.2.1": v,
			"tcp 203.0.113.2:8080": v, "udp 203.0.113.2:53": v, "ping 203.0.113.2": v,
			"tcp 198.51.100.1:8080": true, "ping 198.51.100.1": true, "udp 198.51.100.1:53": true,
			"udp 198.51.100.3:53":   v,
			"tcp [fd00:99::1]:8080": v, "ping fd00:99::1": v,
		}
	}
	flushNeigh := func() {
		// IPv6 to the server must resolve its neighbor through the kill switch.
		nstest.Run(t, a, "ip", "-6", "neigh", "flush", "all")
		nstest.Run(t, b, "ip", "-6", "neigh", "flush", "all")
	}
	tables := func() int { return strings.Count(nstest.Run(t, a, "nft", "list", "tables"), "table inet "+TableName) }
	t.Cleanup(func() { nstest.Exec(a, "nft", "delete", "table", "inet", TableName) })

	expect(t, "before Enable", a, all(true))
	if out := runChild(t, a, "active"); !strings.Contains(out, "ACTIVE=false") {
		t.Errorf("Active before Enable:\n%s", out)
	}

	// Enabled by a process that has exited: the table outlives it.
	runChild(t, a, "enable,enable,active")
	flushNeigh()
	expect(t, "enabled", a, all(false))
	if n := tables(); n != 1 {
		t.Errorf("%d kill switch tables after Enable twice, want 1", n)
	}
	list := nstest.Run(t, a, "nft", "list", "table", "inet", TableName)
	// The kernel's table is exactly the plan, once.
	if got, want := strings.ReplaceAll(list, "\n\n", "\n"), render(rules(childCfg, nil)); got != want {
		t.Errorf("nft list after Enable twice:\n%s\nwant:\n%s", got, want)
	}
	for _, w := range []string{
		"type filter hook output priority filter; policy drop;",
		"type filter hook forward priority filter; policy drop;",
		"ip daddr 192.0.2.1 tcp dport 443 accept",
		`oifname "mtun0" accept`,
	} {
		if n := strings.Count(list, w); n != 1 && !(n == 2 && w == `oifname "mtun0" accept`) {
			t.Errorf("%q appears %d times after Enable twice:\n%s", w, n, list)
		}
	}
	if strings.Contains(list, "192.0.2.0/24") {
		t.Errorf("LAN rule without AllowLAN:\n%s", list)
	}

	// AllowLAN opens the connected subnets (the outside gateway's too) but
	// neither DNS to a LAN resolver nor anything beyond the gateway.
	runChild(t, a, "enablelan")
	flushNeigh()
	lan := all(false)
	for _, k := range []string{"tcp 192.0.2.1:8080", "tcp [fd00:2::1]:8080", "ping 192.0.2.1", "tcp 203.0.113.2:8080", "ping 203.0.113.2"} {
		lan[k] = true
	}
	expect(t, "enabled with AllowLAN", a, lan)
	list = nstest.Run(t, a, "nft", "list", "table", "inet", TableName)
	if n := strings.Count(list, "ip daddr 192.0.2.0/24 accept"); n != 2 { // output and forward
		t.Errorf("LAN rule appears %d times, want 2:\n%s", n, list)
	}
	if n := strings.Count(list, "ip daddr 192.0.2.1 tcp dport 443 accept"); n != 1 {
		t.Errorf("server rule appears %d times after re-Enable, want 1:\n%s", n, list)
	}
	if strings.Contains(list, "198.51.100.0/24") || strings.Contains(list, "127.0.0.0/8") {
		t.Errorf("the tunnel's or loopback's subnet is treated as LAN:\n%s", list)
	}

	out := runChild(t, a, "disable,active,disable")
	if !strings.Contains(out, "ACTIVE=false") {
		t.Errorf("Active after Disable:\n%s", out)
	}
	if n := tables(); n != 0 {
		t.Errorf("%d kill switch tables after Disable", n)
	}
	expect(t, "after Disable", a, all(true))
}
