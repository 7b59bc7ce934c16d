//go:build linux

package e2e

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/api"
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

// killExpectBlocked SIGKILLs p (a client or the helper) and checks that
// its kill switch stays: the table is there and the LAN router is blocked.
func killExpectBlocked(t *testing.T, tp *topology, p *proc, who string) {
	t.Helper()
	p.signal(syscall.SIGKILL)
	if _, err := p.wait(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !killSwitchActive(t, tp) {
		t.Fatalf("the kill switch went away with the killed %s (must fail closed)", who)
	}
	if err := ping(tp.CLI, rtrCliAddr); err == nil {
		t.Fatalf("leak after the %s was killed", who)
	}
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
	killExpectBlocked(t, tp, c.p, "client")
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

// Kill switch without allow_lan, DNS through the tunnel: only the tunnel's
// resolver answers. The LAN's resolver is blocked, and so is another
// resolver reached through the tunnel (a query to it could reveal the
// user's names to a third party); other UDP through the tunnel works.
func TestE2EKillSwitchNoDNSLeak(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	const otherResolver = "203.0.113.3"
	mustNS(t, tp.HOST, "ip", "addr", "add", otherResolver+"/24", "dev", hostIf)
	startRole(t, tp.RTR, "lan-udp", "udpecho", "2m", rtrCliAddr+":53")
	startRole(t, tp.HOST, "host-udp", "udpecho", "2m", hostAddr+":53", otherResolver+":53", otherResolver+":5353")
	time.Sleep(300 * time.Millisecond)
	if !udpAnswered(t, tp.CLI, rtrCliAddr+":53") {
		t.Fatal("the LAN resolver does not answer before connecting (test setup)")
	}
	conf := derivedClient(t, s, func(m map[string]any) {
		n := table(m, "network")
		n["kill_switch"] = true
		n["dns_servers"] = []string{hostAddr} // the tunnel's resolver
	})
	c := startClient(t, tp, conf)
	c.waitConnected(t, 1, connectTimeout)
	waitPing(t, tp.CLI, hostAddr, 5*time.Second)
	if !udpAnswered(t, tp.CLI, hostAddr+":53") {
		t.Error("DNS to the tunnel's resolver is blocked")
	}
	if udpAnswered(t, tp.CLI, rtrCliAddr+":53") {
		t.Error("DNS leak: the LAN's resolver answered")
	}
	if udpAnswered(t, tp.CLI, otherResolver+":53") {
		t.Error("DNS leak: a resolver other than the tunnel's answered through the tunnel")
	}
	if !udpAnswered(t, tp.CLI, otherResolver+":5353") {
		t.Error("non-DNS UDP through the tunnel is blocked")
	}
	if err := ping(tp.CLI, rtrCliAddr); err == nil {
		t.Error("the LAN router answered with the kill switch on and allow_lan off")
	}
}

// The helper service crashes while connected with the kill switch on: the
// LAN stays blocked while it is down and while the restarted helper comes
// up; the restarted helper reconnects the profile by itself (traffic flows
// through the tunnel again) and the kill switch only opens when the user
// disconnects, which restores the namespace exactly.
func TestE2EHelperCrashKeepsKillSwitch(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	before := tp.snapshot(t)
	conf := derivedClient(t, s, func(m map[string]any) {
		table(m, "network")["kill_switch"] = true
	})
	dir := t.TempDir()
	h := startHelperAPIIn(t, tp, "mirage-helper-run", dir, true)
	w := watchStatus(t, h.c)
	h.importFileAndConnect(t, tp, conf, w)
	waitPing(t, tp.CLI, hostAddr, 5*time.Second)
	if err := ping(tp.CLI, rtrCliAddr); err == nil {
		t.Fatal("the LAN router answered outside the tunnel with the kill switch on")
	}

	// The helper dies; the service manager would start it again.
	killExpectBlocked(t, tp, h.p, "helper")
	h2 := startHelperAPIIn(t, tp, "mirage-helper-run-2", dir, false)
	if err := ping(tp.CLI, rtrCliAddr); err == nil {
		t.Fatal("leak while the restarted helper comes up")
	}
	w2 := watchStatus(t, h2.c)
	st := w2.waitFor(t, "the profile reconnected by itself", connectTimeout, func(s api.Status) bool { return s.State == api.Connected })
	if st.Profile != "e2e" {
		t.Errorf("resumed profile %q, want e2e", st.Profile)
	}
	waitPing(t, tp.CLI, hostAddr, 10*time.Second)
	if !killSwitchActive(t, tp) {
		t.Fatal("kill switch missing after the resume")
	}
	if err := ping(tp.CLI, rtrCliAddr); err == nil {
		t.Fatal("leak after the resume")
	}
	if !strings.Contains(h2.p.Stderr(), "reconnecting") {
		t.Errorf("the restarted helper did not log the resume:\n%s", tail(h2.p.Stderr(), 20))
	}

	// The user disconnects: everything open and exactly as before.
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if _, err := h2.c.Disconnect(ctx); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	waitRestored(t, tp, before, "after disconnecting the resumed profile")
	if killSwitchActive(t, tp) {
		t.Fatal("kill switch still on after disconnect")
	}
	if err := ping(tp.CLI, rtrCliAddr); err != nil {
		t.Fatalf("the router is unreachable after disconnect: %v", err)
	}
	// And a later restart does not reconnect.
	h2.p.signal(syscall.SIGTERM)
	if _, err := h2.p.wait(stopTimeout); err != nil {
		t.Fatal(err)
	}
	h3 := startHelperAPIIn(t, tp, "mirage-helper-run-3", dir, true)
	time.Sleep(time.Second)
	ctx2, cancel2 := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel2()
	if st, err := h3.c.Status(ctx2); err != nil || st.State != api.Disconnected {
		t.Fatalf("helper after a disconnect and a clean restart: %+v, %v", st, err)
	}
}

// A link flap with the kill switch: the headless client's uplink goes down
// for 10 s (the kernel drops its routes, the bypass route to the server
// with them) and comes back as a network manager would bring it (address
// and default routes again). The client must not exit, the block must hold
// throughout, and the client must reconnect by itself, with its bypass
// route back.
func TestE2EKillSwitchLinkFlap(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	conf := derivedClient(t, s, func(m map[string]any) {
		table(m, "network")["kill_switch"] = true
	})
	c := startClient(t, tp, conf)
	c.waitConnected(t, 1, connectTimeout)
	waitPing(t, tp.CLI, hostAddr, 5*time.Second)

	mustNS(t, tp.CLI, "ip", "link", "set", cliIf, "down")
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		if c.p.exited() {
			t.Fatalf("the client exited when its uplink went down; stderr:\n%s", tail(c.p.Stderr(), 30))
		}
		if !killSwitchActive(t, tp) {
			t.Fatal("the kill switch went away while the uplink was down")
		}
	}
	mustNS(t, tp.CLI, "ip", "link", "set", cliIf, "up")
	mustNS(t, tp.CLI, "ip", "addr", "replace", cliAddr6+"/64", "dev", cliIf, "nodad")
	mustNS(t, tp.CLI, "ip", "route", "replace", "default", "via", rtrCliAddr)
	mustNS(t, tp.CLI, "ip", "-6", "route", "replace", "default", "via", rtrCliAddr6)
	// Back up, before and after the reconnect: still blocked outside.
	if err := ping(tp.CLI, rtrCliAddr); err == nil {
		t.Fatal("leak after the uplink came back: the LAN router answered")
	}
	c.waitConnected(t, 2, 60*time.Second)
	waitPing(t, tp.CLI, hostAddr, 10*time.Second)
	if out := mustNS(t, tp.CLI, "ip", "route", "get", srvAddr); !strings.Contains(out, "via "+rtrCliAddr+" dev "+cliIf) {
		t.Errorf("bypass route to the server not re-installed after the flap: %s", out)
	}
	if !killSwitchActive(t, tp) {
		t.Fatal("kill switch table missing after the flap")
	}
	if err := ping(tp.CLI, rtrCliAddr); err == nil {
		t.Fatal("the LAN router answered outside the tunnel after the flap")
	}
}
