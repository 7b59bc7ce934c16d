//go:build linux

package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// matchLine matches a whole stdout line.
func matchLine(s string) *regexp.Regexp { return regexp.MustCompile(`^` + regexp.QuoteMeta(s) + `$`) }

// checkTransfer moves size bytes from dialNS to a listener on listenIP in
// listenNS and back, and compares the SHA-256 computed at both ends.
func checkTransfer(t *testing.T, listenNS, dialNS, listenIP string, size int64, timeout time.Duration) {
	t.Helper()
	addr := net.JoinHostPort(listenIP, "5201")
	for _, d := range []struct{ name, listenDir, dialDir string }{
		{"upload", "recv", "send"},
		{"download", "send", "recv"},
	} {
		l := startRole(t, listenNS, "xfer-"+d.name, "xfer", d.listenDir, "listen", addr, fmt.Sprint(size), timeout.String())
		if _, err := l.waitLines(matchLine("ready"), 1, 5*time.Second); err != nil {
			t.Fatalf("%s listener: %v", d.name, err)
		}
		start := time.Now()
		dialOut, err := roleOutput(t, dialNS, timeout+10*time.Second, "xfer", d.dialDir, "dial", addr, fmt.Sprint(size), timeout.String())
		if err != nil {
			t.Fatalf("%s: %v", d.name, err)
		}
		elapsed := time.Since(start)
		if code, err := l.wait(timeout); err != nil || code != 0 {
			t.Fatalf("%s listener: status %d, %v; stderr:\n%s", d.name, code, err, l.Stderr())
		}
		listenLines, _ := l.waitLines(regexp.MustCompile(`^bytes=`), 1, time.Second)
		dialRes := strings.TrimSpace(dialOut)
		listenRes := strings.TrimSpace(strings.Join(listenLines, ""))
		want := fmt.Sprintf("bytes=%d ", size)
		if !strings.HasPrefix(dialRes, want) || dialRes != listenRes {
			t.Fatalf("%s of %d bytes: sender/receiver disagree:\n dial side:   %q\n listen side: %q", d.name, size, dialRes, listenRes)
		}
		t.Logf("%s: %d MiB in %v (%.0f Mbit/s), %s", d.name, size>>20, elapsed.Round(time.Millisecond),
			float64(size)*8/elapsed.Seconds()/1e6, dialRes)
	}
}

// inPrefix reports whether the address part of a "a.b.c.d/len" string lies in
// prefix.
func inPrefix(addrWithLen, prefix string) bool {
	p, err := netip.ParsePrefix(addrWithLen)
	if err != nil {
		return false
	}
	return netip.MustParsePrefix(prefix).Contains(p.Addr())
}

// (a) ping through the tunnel: the server's tunnel addresses and, through the
// server's NAT, host.
func TestE2EPing(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	_, line := connect(t, tp, s)

	v4, v6 := connectedField(line, "ipv4"), connectedField(line, "ipv6")
	if !inPrefix(v4, "198.51.100.0/24") || strings.HasPrefix(v4, tunSrv4+"/") {
		t.Errorf("connected line ipv4=%q: want a client address in 198.51.100.0/24", v4)
	}
	if !inPrefix(v6, "fd00:6d:1::/64") || strings.HasPrefix(v6, tunSrv6+"/") {
		t.Errorf("connected line ipv6=%q: want a client address in fd00:6d:1::/64", v6)
	}
	addrs := mustNS(t, tp.CLI, "ip", "addr", "show", "dev", cliTUN)
	for _, a := range []string{v4, v6} {
		if a != "" && !strings.Contains(addrs, a) {
			t.Errorf("%s in cli lacks %s:\n%s", cliTUN, a, addrs)
		}
	}
	// RTT for the log only: timing is for benchmarks, not assertions.
	for _, dst := range []string{srvAddr, tunSrv4} {
		if out, err := nsOutput(tp.CLI, pingArgs(dst, 5)...); err == nil {
			t.Logf("ping %s: %s", dst, strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:]))
		}
	}
	for _, c := range []struct{ name, addr string }{
		{"server-tunnel-v4", tunSrv4},
		{"server-tunnel-v6", tunSrv6},
		{"host-via-nat-v4", hostAddr},
		{"host-via-nat-v6", hostAddr6},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := ping(tp.CLI, c.addr); err != nil {
				t.Errorf("ping %s through the tunnel: %v", c.addr, err)
			}
		})
	}
}

// (b) 64 MiB each way through the tunnel, same SHA-256 at both ends.
func TestE2ETCPTransfer(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	connect(t, tp, s)
	checkTransfer(t, tp.SRV, tp.CLI, tunSrv4, 64<<20, 90*time.Second)
}

// (c) Full tunnel: split default routes into the tunnel, the server's own
// address outside it, host reached through NAT with the server's address as
// source.
func TestE2EFullTunnel(t *testing.T) {
	tp := newTopology(t)
	pl4 := startRole(t, tp.HOST, "peerlog-v4", "peerlog", net.JoinHostPort(hostAddr, "8080"), "120s")
	pl6 := startRole(t, tp.HOST, "peerlog-v6", "peerlog", net.JoinHostPort(hostAddr6, "8080"), "120s")
	for _, pl := range []*proc{pl4, pl6} {
		if _, err := pl.waitLines(matchLine("ready"), 1, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	s := startGeneratedServer(t, tp)
	connect(t, tp, s)

	routes := mustNS(t, tp.CLI, "ip", "-4", "route", "show")
	if !strings.Contains(routes, "default via "+rtrCliAddr+" dev "+cliIf) {
		t.Errorf("cli's original default route is gone:\n%s", routes)
	}
	for _, half := range []string{"0.0.0.0/1 ", "128.0.0.0/1 "} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(half) + `.*dev ` + cliTUN + `\b`).MatchString(routes) {
			t.Errorf("cli has no %s route via %s:\n%s", strings.TrimSpace(half), cliTUN, routes)
		}
	}
	routes6 := mustNS(t, tp.CLI, "ip", "-6", "route", "show")
	for _, half := range []string{"::/1 ", "8000::/1 "} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(half) + `.*dev ` + cliTUN + `\b`).MatchString(routes6) {
			t.Errorf("cli has no %s route via %s:\n%s", strings.TrimSpace(half), cliTUN, routes6)
		}
	}
	if out := mustNS(t, tp.CLI, "ip", "route", "get", srvAddr); !strings.Contains(out, "dev "+cliIf) || strings.Contains(out, cliTUN) {
		t.Errorf("the server's address must stay outside the tunnel; ip route get %s:\n%s", srvAddr, out)
	}
	for _, dst := range []string{hostAddr, hostAddr6} {
		if out := mustNS(t, tp.CLI, "ip", "route", "get", dst); !strings.Contains(out, "dev "+cliTUN) {
			t.Errorf("ip route get %s does not use %s:\n%s", dst, cliTUN, out)
		}
	}

	for _, c := range []struct {
		dst, wantPeer string
		pl            *proc
	}{
		{hostAddr, srvHostAddr, pl4},
		{hostAddr6, srvHostAddr6, pl6},
	} {
		out, err := roleOutput(t, tp.CLI, 15*time.Second, "dial", net.JoinHostPort(c.dst, "8080"), "10s")
		if err != nil {
			t.Errorf("TCP to host %s through the tunnel: %v", c.dst, err)
			continue
		}
		if got := strings.TrimSpace(out); got != "peer="+c.wantPeer {
			t.Errorf("host %s saw %q, want peer=%s (the server's address: NAT)", c.dst, got, c.wantPeer)
		}
		if _, err := c.pl.waitLines(matchLine("peer="+c.wantPeer), 1, 2*time.Second); err != nil {
			t.Errorf("host listener log: %v", err)
		}
	}
}

// (d) Wrong password: a clear error and status 2 for the client; a plain
// HTTPS client sees an ordinary web site.
func TestE2EWrongPassword(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	before := tp.snapshot(t)
	conf := derivedClient(t, s, func(m map[string]any) {
		table(m, "authentication")["password"] = "definitely-not-the-password"
	})
	c := startClient(t, tp, conf)
	code, err := c.p.wait(30 * time.Second)
	if err != nil {
		t.Fatalf("client with a wrong password: %v", err)
	}
	const msg = "mirage-helper: the server did not accept these credentials"
	if code != 2 || !strings.Contains(c.p.Stderr(), msg) {
		t.Errorf("client with a wrong password: status %d, stderr:\n%s\nwant status 2 and %q", code, c.p.Stderr(), msg)
	}
	if connectedRE.MatchString(c.p.Stdout()) {
		t.Errorf("client printed connected with a wrong password:\n%s", c.p.Stdout())
	}
	if linkExists(tp.CLI, cliTUN) {
		t.Errorf("%s left behind after a failed login", cliTUN)
	}
	for _, d := range before.diff(tp.snapshot(t)) {
		t.Errorf("failed login changed the client's network state: %s", d)
	}

	out, err := roleOutput(t, tp.CLI, 20*time.Second, "https", "https://"+serverEndpoint()+"/", "10s")
	if err != nil {
		t.Fatalf("plain HTTPS GET of the server: %v", err)
	}
	t.Logf("plain HTTPS GET of the server:\n%s", tail(out, 15))
	if !strings.HasPrefix(out, "status=200\n") {
		t.Errorf("plain HTTPS GET: want status 200, got:\n%s", out)
	}
	lower := strings.ToLower(out)
	for _, word := range []string{"mirage", "vpn"} {
		if strings.Contains(lower, word) {
			t.Errorf("the fallback web site gives the server away (%q in the response):\n%s", word, out)
		}
	}
	if s.p.exited() {
		t.Errorf("server exited: status %d", s.p.exitStatus)
	}
}

// (e) The server restarts; the client reconnects by itself, keeping its TUN.
func TestE2EServerRestart(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	c, _ := connect(t, tp, s)

	s.stop(t)
	time.Sleep(2 * time.Second)
	if c.p.exited() {
		t.Fatalf("client exited (status %d) when the server went away; stderr:\n%s", c.p.exitStatus, tail(c.p.Stderr(), 20))
	}
	if !linkExists(tp.CLI, cliTUN) {
		t.Errorf("client removed %s while reconnecting", cliTUN)
	}

	start := time.Now()
	s.restart(t)
	line := c.waitConnected(t, 2, 40*time.Second)
	t.Logf("reconnected %v after the restart: %s", time.Since(start).Round(time.Millisecond), line)
	waitPing(t, tp.CLI, tunSrv4, 5*time.Second)
	if err := ping(tp.CLI, hostAddr); err != nil {
		t.Errorf("ping host via NAT after the restart: %v", err)
	}
}

// (f) A client killed with SIGKILL leaves state behind; "cleanup" restores
// the routes, rules, addresses and resolv.conf exactly.
func TestE2EClientKilledCleanup(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	before := tp.snapshot(t)
	conf := derivedClient(t, s, func(m map[string]any) {
		n := table(m, "network")
		n["set_dns"] = true
		n["dns_servers"] = []string{"198.51.100.53"}
	})
	c := startClient(t, tp, conf)
	c.waitConnected(t, 1, connectTimeout)
	waitPing(t, tp.CLI, tunSrv4, 5*time.Second)

	during := tp.snapshot(t)
	if len(before.diff(during)) == 0 {
		t.Fatalf("connecting changed nothing in cli's network state")
	}
	if !strings.Contains(during.ResolvConf, "198.51.100.53") {
		t.Errorf("set_dns = true but resolv.conf in cli does not name 198.51.100.53:\n%s", during.ResolvConf)
	}

	c.p.signal(syscall.SIGKILL)
	if _, err := c.p.wait(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, d := range before.diff(tp.snapshot(t)) {
		t.Logf("left behind by the killed client, for cleanup to undo: %s", d)
	}
	for i := 1; i <= 2; i++ { // cleanup must be repeatable
		out, errOut, code := runBin(t, tp.CLI, "", bins(t).Helper, "cleanup", "--state-dir", c.stateDir)
		if code != 0 {
			t.Fatalf("mirage-helper cleanup (run %d): status %d\nstdout:\n%s\nstderr:\n%s", i, code, out, errOut)
		}
		after := tp.snapshot(t)
		for _, d := range before.diff(after) {
			t.Errorf("after cleanup run %d: %s", i, d)
		}
	}
	if linkExists(tp.CLI, cliTUN) {
		t.Errorf("%s still exists after cleanup", cliTUN)
	}
}

// (g) SIGTERM on the server removes its nftables table and TUN and restores
// forwarding.
func TestE2EServerShutdownCleansUp(t *testing.T) {
	tp := newTopology(t)
	fwd4 := sysctl(t, tp.SRV, "net.ipv4.ip_forward")
	fwd6 := sysctl(t, tp.SRV, "net.ipv6.conf.all.forwarding")
	s := startGeneratedServer(t, tp)
	connect(t, tp, s)
	if err := ping(tp.CLI, hostAddr); err != nil {
		t.Errorf("ping host via NAT: %v", err)
	}

	tableRE := regexp.MustCompile(`(?m)^table \S+ mirage$`)
	if out := mustNS(t, tp.SRV, "nft", "list", "tables"); !tableRE.MatchString(out) {
		t.Errorf("no nftables table mirage in srv while the server runs:\n%s", out)
	}
	if !linkExists(tp.SRV, srvTUN) {
		t.Errorf("no %s in srv while the server runs", srvTUN)
	}
	if v := sysctl(t, tp.SRV, "net.ipv4.ip_forward"); v != "1" {
		t.Errorf("net.ipv4.ip_forward = %s in srv while the server NATs, want 1", v)
	}

	s.stop(t)
	if out := mustNS(t, tp.SRV, "nft", "list", "tables"); tableRE.MatchString(out) {
		t.Errorf("nftables table mirage left in srv after SIGTERM:\n%s", mustNS(t, tp.SRV, "nft", "list", "ruleset"))
	}
	if linkExists(tp.SRV, srvTUN) {
		t.Errorf("%s left in srv after SIGTERM", srvTUN)
	}
	if v := sysctl(t, tp.SRV, "net.ipv4.ip_forward"); v != fwd4 {
		t.Errorf("net.ipv4.ip_forward = %s after SIGTERM, want %s as before", v, fwd4)
	}
	if v := sysctl(t, tp.SRV, "net.ipv6.conf.all.forwarding"); v != fwd6 {
		t.Errorf("net.ipv6.conf.all.forwarding = %s after SIGTERM, want %s as before", v, fwd6)
	}
}

var probeRE = regexp.MustCompile(`^(\w+) (closed|open)_after=([0-9.]+)`)

// (h) Garbage, a stalled ClientHello and an idle connection neither disturb
// a connected client nor the server; the idle one is closed within 10 s.
func TestE2EHostileConnections(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	c, _ := connect(t, tp, s)

	bg := startProc(t, tp.CLI, "ping-during-probes", procOpts{},
		"ping", "-4", "-n", "-i", "0.2", "-w", "16", tunSrv4)
	out, err := roleOutput(t, tp.CLI, 40*time.Second, "probe", serverEndpoint())
	if err != nil {
		t.Fatalf("probes: %v", err)
	}
	t.Logf("probes:\n%s", out)
	results := map[string][]string{}
	for _, l := range strings.Split(out, "\n") {
		if m := probeRE.FindStringSubmatch(l); m != nil {
			results[m[1]] = m
		}
	}
	for _, name := range []string{"garbage", "hello", "idle"} {
		if results[name] == nil {
			t.Errorf("probe %s: no result", name)
		}
	}
	if m := results["idle"]; m != nil {
		secs, _ := strconv.ParseFloat(m[3], 64)
		if m[2] != "closed" || secs > 12 {
			t.Errorf("idle connection: %s after %.1f s, want closed by the server within 10 s", m[2], secs)
		}
	}

	if _, err := bg.wait(25 * time.Second); err != nil {
		t.Fatal(err)
	}
	pm := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(bg.Stdout())
	if pm == nil {
		t.Fatalf("ping during probes: no summary:\n%s", bg.Stdout())
	}
	sent, _ := strconv.Atoi(pm[1])
	recv, _ := strconv.Atoi(pm[2])
	if sent < 20 || recv*10 < sent*9 {
		t.Errorf("ping during probes: %d sent, %d received; want at least 90 %%", sent, recv)
	}
	if s.p.exited() {
		t.Fatalf("server died: status %d; stderr:\n%s", s.p.exitStatus, tail(s.p.Stderr(), 30))
	}
	if err := waitPort(t, tp.CLI, serverEndpoint(), 5*time.Second); err != nil {
		t.Errorf("server no longer accepts connections: %v", err)
	}
	if err := ping(tp.CLI, tunSrv4); err != nil {
		t.Errorf("ping after the probes: %v", err)
	}
	if n := len(regexp.MustCompile(`(?m)^connected\b`).FindAllString(c.p.Stdout(), -1)); n != 1 {
		t.Errorf("client connected %d times; the probes must not disturb its session", n)
	}
}

// Users file management and invites: a second user made with "users add"
// and "invite" can connect; "users del" removes it.
func TestE2EUsersAndInvite(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	s.stop(t)
	srvBin := bins(t).Server
	const pass = "alice-e2e-Secret-1"

	if o, e, code := runBin(t, "", pass+"\n", srvBin, "users", "add", "-f", s.usersPath(), "alice"); code != 0 {
		t.Fatalf("users add: status %d\n%s%s", code, o, e)
	}
	if st, err := os.Stat(s.usersPath()); err != nil {
		t.Errorf("users file: %v", err)
	} else if st.Mode().Perm() != 0o600 {
		t.Errorf("users file has mode %o, want 600", st.Mode().Perm())
	}
	list, e, code := runBin(t, "", "", srvBin, "users", "list", "-f", s.usersPath())
	if code != 0 || !regexp.MustCompile(`(?m)^\s*alice\b`).MatchString(list) || !regexp.MustCompile(`(?m)^\s*mirage\b`).MatchString(list) {
		t.Errorf("users list: status %d, want lines alice and mirage:\n%s%s", code, list, e)
	}
	if strings.Contains(list, pass) || strings.Contains(list, "argon2") {
		t.Errorf("users list shows secrets:\n%s", list)
	}

	inv, e, code := runBin(t, "", pass+"\n", srvBin, "invite", "-c", s.configPath(), "--user", "alice", "--host", serverEndpoint())
	if code != 0 {
		t.Fatalf("invite: status %d\n%s", code, e)
	}
	conf := filepath.Join(t.TempDir(), "alice.toml")
	if err := os.WriteFile(conf, []byte(inv), 0o600); err != nil {
		t.Fatal(err)
	}
	m := readTOML(t, conf)
	if got := table(m, "authentication")["username"]; got != "alice" {
		t.Errorf("invite: username = %v, want alice", got)
	}
	if got := m["connection_string"]; got != serverEndpoint() {
		t.Errorf("invite: connection_string = %v, want %s", got, serverEndpoint())
	}

	// Restart from the existing data dir: it must be reused, not regenerated.
	usersBefore, _ := os.ReadFile(s.usersPath())
	s.starts++
	s.p = startProc(t, tp.SRV, "mirage-server-datadir", procOpts{}, srvBin, "run", "--data-dir", s.dataDir)
	s.waitListening(t)
	if usersAfter, _ := os.ReadFile(s.usersPath()); string(usersAfter) != string(usersBefore) {
		t.Errorf("run --data-dir with an existing server.toml rewrote the users file")
	}
	c := startClient(t, tp, conf)
	c.waitConnected(t, 1, connectTimeout)
	waitPing(t, tp.CLI, tunSrv4, 5*time.Second)

	if o, e, code := runBin(t, "", "", srvBin, "users", "del", "-f", s.usersPath(), "alice"); code != 0 {
		t.Fatalf("users del: status %d\n%s%s", code, o, e)
	}
	list, _, _ = runBin(t, "", "", srvBin, "users", "list", "-f", s.usersPath())
	if regexp.MustCompile(`(?m)^\s*alice\b`).MatchString(list) {
		t.Errorf("alice still listed after users del:\n%s", list)
	}
}

// [metrics] on a real server: after a session with traffic, a wrong
// password and a plain HTTPS visitor, the endpoint shows the session, its
// traffic, the user's bytes and each handshake outcome.
func TestE2EMetrics(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	s.stop(t)
	m := readTOML(t, s.configPath())
	mt := table(m, "metrics")
	mt["enabled"], mt["listen"], mt["per_user"] = true, "127.0.0.1:9090", true
	writeTOML(t, s.configPath(), m)
	s.restart(t)

	connect(t, tp, s)
	waitPing(t, tp.CLI, hostAddr, 5*time.Second)
	bad := startClient(t, tp, derivedClient(t, s, func(m map[string]any) {
		table(m, "authentication")["password"] = "definitely-not-the-password"
	}))
	if code, err := bad.p.wait(30 * time.Second); err != nil || code != 2 {
		t.Fatalf("client with a wrong password: status %d, %v", code, err)
	}
	if _, err := roleOutput(t, tp.CLI, 20*time.Second, "https", "https://"+serverEndpoint()+"/", "10s"); err != nil {
		t.Fatalf("plain HTTPS GET: %v", err)
	}
	out, err := nsOutput(tp.SRV, "curl", "-sS", "--max-time", "5", "http://127.0.0.1:9090/metrics")
	if err != nil {
		t.Fatalf("scrape: %v\n%s", err, out)
	}
	value := func(name string) float64 {
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`)
		mm := re.FindStringSubmatch(out)
		if mm == nil {
			t.Errorf("metric %s missing", name)
			return -1
		}
		v, _ := strconv.ParseFloat(mm[1], 64)
		return v
	}
	for name, want := range map[string]float64{
		`mirage_sessions`: 1,
		`mirage_handshakes_total{outcome="bad_credentials"}`: 1,
		`mirage_connections{transport="tcp-tls"}`:            1,
	} {
		if got := value(name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	// The ping to hostAddr went out through the NAT: conntrack holds it.
	for _, name := range []string{`mirage_handshakes_total{outcome="ok"}`, `mirage_handshakes_total{outcome="camouflage"}`,
		`mirage_nat_flows{family="ipv4"}`, `mirage_conntrack_entries`, `mirage_conntrack_max`,
		`mirage_received_bytes_total`, `mirage_sent_bytes_total`, `mirage_user_received_bytes_total{user="mirage"}`} {
		if got := value(name); got <= 0 {
			t.Errorf("%s = %v, want > 0", name, got)
		}
	}
	if t.Failed() {
		t.Logf("metrics page:\n%s", out)
	}
}
