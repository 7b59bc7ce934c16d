//go:build linux

package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// killSwitchActive reports whether cli has the kill switch's nftables table.
func killSwitchActive(t *testing.T, tp *topology) bool {
	t.Helper()
	out, err := nsOutput(tp.CLI, "nft", "list", "tables")
	if err != nil {
		t.Fatalf("nft list tables: %v", err)
	}
	return strings.Contains(out, "mirage-killswitch")
}

// Kill switch on: the LAN (the router, reachable outside the tunnel) is
// blocked while connected, while reconnecting after the server went away,
// and after the client was SIGKILLed, until cleanup restores everything;
// traffic through the tunnel works whenever a session is up.
func TestE2EKillSwitch(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	if err := ping(tp.CLI, rtrCliAddr); err != nil {
		t.Fatalf("the router is not reachable before connecting: %v", err)
	}
	before := tp.snapshot(t)
	conf := derivedClient(t, s, func(m map[string]any) {
		table(m, "network")["kill_switch"] = true
	})
	c := startClient(t, tp, conf)
	c.waitConnected(t, 1, connectTimeout)
	waitPing(t, tp.CLI, hostAddr, 5*time.Second) // through the tunnel and NAT
	if !killSwitchActive(t, tp) {
		t.Fatal("kill switch table missing while connected")
	}
	if err := ping(tp.CLI, rtrCliAddr); err == nil {
		t.Fatal("the LAN router answered outside the tunnel with the kill switch on")
	}

	// Server gone: the client reconnects, nothing leaks meanwhile.
	s.stop(t)
	time.Sleep(1500 * time.Millisecond)
	if err := ping(tp.CLI, rtrCliAddr); err == nil {
		t.Fatal("leak while reconnecting: the LAN router answered")
	}
	if err := ping(tp.CLI, hostAddr); err == nil {
		t.Fatal("the host answered with no server running")
	}
	s.restart(t)
	c.waitConnected(t, 2, 40*time.Second)
	waitPing(t, tp.CLI, hostAddr, 10*time.Second)

	// Client killed: still blocked until cleanup.
	c.p.signal(syscall.SIGKILL)
	if _, err := c.p.wait(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !killSwitchActive(t, tp) {
		t.Fatal("the kill switch went away with the killed client (must fail closed)")
	}
	if err := ping(tp.CLI, rtrCliAddr); err == nil {
		t.Fatal("leak after the client was killed")
	}
	if out, errOut, code := runBin(t, tp.CLI, "", bins(t).Helper, "cleanup", "--state-dir", c.stateDir); code != 0 {
		t.Fatalf("cleanup: status %d\n%s\n%s", code, out, errOut)
	}
	if killSwitchActive(t, tp) {
		t.Fatal("kill switch still on after cleanup")
	}
	if err := ping(tp.CLI, rtrCliAddr); err != nil {
		t.Fatalf("the router is unreachable after cleanup: %v", err)
	}
	for _, d := range before.diff(tp.snapshot(t)) {
		t.Errorf("after cleanup: %s", d)
	}
}

// allow_lan keeps the directly connected subnet reachable, but DNS goes
// only to the tunnel's resolver: a query to the LAN's resolver (or any other
// one, even through the tunnel) is blocked. A normal disconnect removes the
// kill switch.
func TestE2EKillSwitchAllowLAN(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	// UDP echo services standing in for resolvers (53) and other services.
	startRole(t, tp.RTR, "lan-udp", "udpecho", "2m", rtrCliAddr+":53", rtrCliAddr+":5353")
	startRole(t, tp.HOST, "host-udp", "udpecho", "2m", hostAddr+":53", hostAddr+":5353")
	time.Sleep(300 * time.Millisecond)
	if !udpAnswered(t, tp.CLI, rtrCliAddr+":53") {
		t.Fatal("the LAN resolver does not answer before connecting (test setup)")
	}
	conf := derivedClient(t, s, func(m map[string]any) {
		n := table(m, "network")
		n["kill_switch"] = true
		n["allow_lan"] = true
		n["dns_servers"] = []string{hostAddr} // the tunnel's resolver
	})
	c := startClient(t, tp, conf)
	c.waitConnected(t, 1, connectTimeout)
	waitPing(t, tp.CLI, hostAddr, 5*time.Second)
	if err := ping(tp.CLI, rtrCliAddr); err != nil {
		t.Fatalf("allow_lan = true but the LAN router is blocked: %v", err)
	}
	if !udpAnswered(t, tp.CLI, rtrCliAddr+":5353") {
		t.Error("allow_lan = true but UDP to a LAN service is blocked")
	}
	if udpAnswered(t, tp.CLI, rtrCliAddr+":53") {
		t.Error("DNS leak: the LAN's resolver answered with the kill switch on")
	}
	if !udpAnswered(t, tp.CLI, hostAddr+":53") {
		t.Error("DNS to the tunnel's resolver is blocked")
	}
	s.stop(t)
	time.Sleep(time.Second)
	if udpAnswered(t, tp.CLI, rtrCliAddr+":53") {
		t.Error("DNS leak while reconnecting: the LAN's resolver answered")
	}
	s.restart(t)
	c.waitConnected(t, 2, 40*time.Second)
	c.p.signal(syscall.SIGTERM)
	if _, err := c.p.wait(stopTimeout); err != nil {
		t.Fatal(err)
	}
	if killSwitchActive(t, tp) {
		t.Fatal("kill switch left on after a normal disconnect")
	}
}
