//go:build linux

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestE2EHarness checks the topology itself, without the binaries under
// test: routing between the namespaces, that host cannot answer the tunnel
// network unless srv masquerades (so the NAT checks of the other tests mean
// something), the re-exec roles, and that everything is gone afterwards.
func TestE2EHarness(t *testing.T) {
	requirePrivileged(t)
	var tp *topology
	t.Run("topology", func(t *testing.T) {
		tp = newTopology(t)

		// Direct and routed reachability, IPv4 and IPv6.
		for _, c := range []struct{ ns, addr string }{
			{tp.CLI, rtrCliAddr}, {tp.CLI, srvAddr}, {tp.SRV, cliAddr}, {tp.SRV, hostAddr},
			{tp.CLI, rtrCliAddr6}, {tp.CLI, srvAddr6}, {tp.SRV, cliAddr6}, {tp.SRV, hostAddr6},
		} {
			if err := ping(c.ns, c.addr); err != nil {
				t.Errorf("ping %s from %s: %v", c.addr, c.ns, err)
			}
		}
		// host has no route to the client or tunnel networks.
		for _, dst := range []string{cliAddr, "198.51.100.2", cliAddr6, "fd00:6d:1::2"} {
			if out, err := nsOutput(tp.HOST, "ip", "route", "get", dst); err == nil {
				t.Errorf("host has a route to %s: %s", dst, out)
			}
		}
		// cli's default route is via rtr, and the server is reached that way.
		if out := mustNS(t, tp.CLI, "ip", "route", "get", srvAddr); !strings.Contains(out, "via "+rtrCliAddr+" dev "+cliIf) {
			t.Errorf("cli route to server: %s", out)
		}
		// srv does not forward until the server turns it on.
		if v := sysctl(t, tp.SRV, "net.ipv4.ip_forward"); v != "0" {
			t.Errorf("srv net.ipv4.ip_forward = %s, want 0", v)
		}
		// Each namespace has its own resolv.conf.
		if out := mustNS(t, tp.CLI, "cat", "/etc/resolv.conf"); out != cliResolvConf {
			t.Errorf("resolv.conf in cli = %q, want the test's own", out)
		}

		// A tunnel-network source address in srv: host's replies only come
		// back through masquerading to srv's own address.
		mustNS(t, tp.SRV, "ip", "addr", "add", tunSrv4+"/32", "dev", "lo")
		if _, err := nsOutput(tp.SRV, "ping", "-4", "-n", "-c", "1", "-W", "1", "-I", tunSrv4, hostAddr); err == nil {
			t.Errorf("host answered a ping from %s without NAT: the NAT checks would prove nothing", tunSrv4)
		}
		mustNS(t, tp.SRV, "nft", "add table ip e2e_harness; "+
			"add chain ip e2e_harness post { type nat hook postrouting priority 100 ; } ; "+
			"add rule ip e2e_harness post oifname "+srvHostIf+" masquerade")
		if err := ping(tp.SRV, hostAddr); err != nil {
			t.Errorf("ping host after adding masquerade: %v", err)
		}
		if _, err := nsOutput(tp.SRV, "ping", "-4", "-n", "-c", "2", "-i", "0.2", "-W", "2", "-I", tunSrv4, hostAddr); err != nil {
			t.Errorf("ping host from %s with masquerade: %v", tunSrv4, err)
		}
		mustNS(t, tp.SRV, "nft", "delete", "table", "ip", "e2e_harness")

		// Roles: peer logging across namespaces, and a TCP transfer.
		pl := startRole(t, tp.HOST, "peerlog", "peerlog", hostAddr+":8080", "10s")
		if _, err := pl.waitLines(matchLine("ready"), 1, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		out, err := roleOutput(t, tp.SRV, 10*time.Second, "dial", hostAddr+":8080", "5s")
		if err != nil || strings.TrimSpace(out) != "peer="+srvHostAddr {
			t.Errorf("dial host from srv: %q, %v; want peer=%s", out, err, srvHostAddr)
		}
		checkTransfer(t, tp.SRV, tp.CLI, srvAddr, 8<<20, 30*time.Second)
	})
	if tp == nil {
		return
	}
	for _, ns := range tp.all() {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
			t.Errorf("namespace %s still exists after the test", ns)
		}
		if _, err := os.Stat(filepath.Join("/etc/netns", ns)); err == nil {
			t.Errorf("/etc/netns/%s still exists after the test", ns)
		}
	}
}
