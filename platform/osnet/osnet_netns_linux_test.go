package osnet

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/netcfg"
	"github.com/mirage-vpn/mirage/platform/internal/nstest"
	"github.com/mirage-vpn/mirage/platform/tun"
)

// The namespace topology: veth0 198.51.100.2/24 + fd00:1::2/64 with default
// routes via .1 / ::1, and resolv.conf from /etc/netns/NS/resolv.conf.
const origResolv = "# netns resolv.conf\nnameserver 198.51.100.53\nsearch example.test\n"

func setupNS(t *testing.T) (ns, resolvPath string) {
	t.Helper()
	nstest.RequireRoot(t)
	ns = nstest.New(t)
	for _, c := range [][]string{
		{"sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/default/addr_gen_mode; echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad"},
		{"ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"},
		{"ip", "addr", "add", "198.51.100.2/24", "dev", "veth0"},
		{"ip", "addr", "add", "fd00:1::2/64", "dev", "veth0", "nodad"},
		{"ip", "link", "set", "veth0", "up"},
		{"ip", "link", "set", "veth1", "up"},
		{"ip", "route", "add", "default", "via", "198.51.100.1"},
		{"ip", "-6", "route", "add", "default", "via", "fd00:1::1"},
	} {
		nstest.Run(t, ns, c...)
	}
	resolvPath = filepath.Join("/etc/netns", ns, "resolv.conf")
	if err := os.MkdirAll(filepath.Dir(resolvPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(resolvPath, []byte(origResolv), 0o644); err != nil {
		t.Fatal(err)
	}
	return ns, resolvPath
}

// snapshot is the namespace's complete routing state.
func snapshot(t *testing.T, ns string) string {
	return nstest.Run(t, ns, "ip", "route", "show", "table", "all") +
		nstest.Run(t, ns, "ip", "-6", "route", "show", "table", "all") +
		nstest.Run(t, ns, "ip", "-br", "link")
}

func mustContain(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, got)
		}
	}
}

func mustLack(t *testing.T, what, got string, bad ...string) {
	t.Helper()
	for _, b := range bad {
		if strings.Contains(got, b) {
			t.Errorf("%s still has %q:\n%s", what, b, got)
		}
	}
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, netip.MustParseAddr(x))
	}
	return out
}

// Configs applied by the child.
var (
	cfgFull = netcfg.Config{
		Interface:      "mtun0",
		MTU:            1400,
		Addrs:          prefixes("192.0.2.2/24", "fd00:2::2/64"),
		Routes:         prefixes("0.0.0.0/0", "::/0"),
		ExcludedRoutes: prefixes("203.0.113.128/25", "fd00:9::/48"),
		Bypass:         addrs("203.0.113.7", "198.51.100.77", "fd00:1::77"),
		DNS:            addrs("192.0.2.53"),
	}
	cfgSmall = netcfg.Config{
		Interface: "mtun0",
		MTU:       1400,
		Addrs:     prefixes("192.0.2.2/24"),
		Routes:    prefixes("0.0.0.0/0"),
		Bypass:    addrs("203.0.113.7", "203.0.113.9"), // .9 is looked up while the /1 routes are in place
		DNS:       addrs("192.0.2.54"),
	}
)

// childEnv is the DNS seam for children: the file backend only, so a CI box
// with resolvectl or resolvconf never has its real DNS touched.
func childEnv() dnsEnv {
	env := osDNSEnv()
	env.LookPath = func(string) (string, error) { return "", errors.New("disabled in test") }
	return env
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestChildOsnet is the process that owns the TUN and the configurator.
// Modes: "apply" (Set full, Set full again, Set small, Close; waits for a
// line on stdin between steps) and "crash" (Set full, then hang until
// killed), "cleanup" (Cleanup twice).
func TestChildOsnet(t *testing.T) {
	if !nstest.IsChild(t) {
		t.Skip("runs only as a child of the netns tests")
	}
	stateDir := os.Getenv("MIRAGE_TEST_STATEDIR")
	if os.Getenv("MIRAGE_TEST_MODE") == "cleanup" {
		for i := 0; i < 2; i++ {
			if err := Cleanup(testLog(t), stateDir); err != nil {
				t.Fatalf("Cleanup #%d: %v", i+1, err)
			}
		}
		return
	}
	dev, err := tun.CreateTUN("mtun0", 1400)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	c, err := newConfigurator(testLog(t), stateDir, childEnv())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set(cfgFull); err != nil {
		t.Fatalf("Set full: %v", err)
	}
	fmt.Println("READY full")
	in := bufio.NewScanner(os.Stdin)
	if os.Getenv("MIRAGE_TEST_MODE") == "crash" {
		time.Sleep(40 * time.Second)
		t.Fatal("not killed")
	}
	in.Scan()
	if err := c.Set(cfgFull); err != nil {
		t.Fatalf("Set full again: %v", err)
	}
	if err := c.Set(cfgSmall); err != nil {
		t.Fatalf("Set small: %v", err)
	}
	fmt.Println("READY small")
	in.Scan()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := dev.Close(); err != nil {
		t.Fatalf("tun close: %v", err)
	}
}

// child is a running TestChildOsnet.
type child struct {
	t     *testing.T
	stdin io.WriteCloser
	lines chan string
	out   strings.Builder
	wait  chan error
	pid   int
}

func startChild(t *testing.T, ns, mode, stateDir string) *child {
	cmd := nstest.Child(t, ns, "TestChildOsnet", "MIRAGE_TEST_MODE="+mode, "MIRAGE_TEST_STATEDIR="+stateDir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, stdin: stdin, lines: make(chan string, 1000), wait: make(chan error, 1), pid: cmd.Process.Pid}
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			c.lines <- s.Text()
		}
		close(c.lines)
		c.wait <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	return c
}

// expect waits for a line from the child, failing with its output otherwise.
func (c *child) expect(line string) {
	c.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				c.t.Fatalf("child exited before %q:\n%s", line, c.out.String())
			}
			c.out.WriteString(l + "\n")
			if l == line {
				return
			}
		case <-timeout:
			c.t.Fatalf("child did not print %q in 30s:\n%s", line, c.out.String())
		}
	}
}

func (c *child) finish() {
	c.t.Helper()
	for l := range c.lines {
		c.out.WriteString(l + "\n")
	}
	if err := <-c.wait; err != nil {
		c.t.Fatalf("child failed: %v\n%s", err, c.out.String())
	}
}

func TestOsnetApplyClose(t *testing.T) {
	ns, resolvPath := setupNS(t)
	// A foreign route identical to an excluded route must survive Close.
	nstest.Run(t, ns, "ip", "route", "add", "203.0.113.128/25", "via", "198.51.100.1", "dev", "veth0")
	before := snapshot(t, ns)
	stateDir := t.TempDir()

	c := startChild(t, ns, "apply", stateDir)
	c.expect("READY full")
	v4 := nstest.Run(t, ns, "ip", "route")
	mustContain(t, "ip route", v4,
		"0.0.0.0/1 dev mtun0 proto 109 scope link",
		"128.0.0.0/1 dev mtun0 proto 109 scope link",
		"203.0.113.7 via 198.51.100.1 dev veth0 proto 109",
		"198.51.100.77 dev veth0 proto 109 scope link",
		"203.0.113.128/25 via 198.51.100.1 dev veth0",
		"default via 198.51.100.1 dev veth0")
	// The identical foreign route is left as it is, not taken over.
	mustLack(t, "ip route", v4, "203.0.113.128/25 via 198.51.100.1 dev veth0 proto 109")
	v6 := nstest.Run(t, ns, "ip", "-6", "route")
	mustContain(t, "ip -6 route", v6,
		"::/1 dev mtun0 proto 109",
		"8000::/1 dev mtun0 proto 109",
		"fd00:9::/48 via fd00:1::1 dev veth0 proto 109",
		"fd00:1::77 dev veth0 proto 109",
		"default via fd00:1::1 dev veth0")
	a := nstest.Run(t, ns, "ip", "addr", "show", "dev", "mtun0")
	mustContain(t, "ip addr", a, "mtu 1400", "inet 192.0.2.2/24", "inet6 fd00:2::2/64", ",UP")
	mustContain(t, "route to 203.0.113.5", nstest.Run(t, ns, "ip", "route", "get", "203.0.113.5"), "dev mtun0")
	mustContain(t, "route to 203.0.113.200", nstest.Run(t, ns, "ip", "route", "get", "203.0.113.200"), "via 198.51.100.1 dev veth0")
	mustContain(t, "route to fd00:5::1", nstest.Run(t, ns, "ip", "-6", "route", "get", "fd00:5::1"), "dev mtun0")
	b, _ := os.ReadFile(resolvPath)
	mustContain(t, "resolv.conf", string(b), "nameserver 192.0.2.53\nsearch example.test\n")
	fi, err := os.Stat(journalPath(stateDir))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("journal: %v %v", fi, err)
	}

	fmt.Fprintln(c.stdin)
	c.expect("READY small")
	v4 = nstest.Run(t, ns, "ip", "route")
	mustContain(t, "ip route", v4, "0.0.0.0/1 dev mtun0", "203.0.113.7 via 198.51.100.1 dev veth0 proto 109",
		"203.0.113.9 via 198.51.100.1 dev veth0 proto 109")
	mustLack(t, "ip route", v4, "198.51.100.77") // bypass removed
	v6 = nstest.Run(t, ns, "ip", "-6", "route")
	mustLack(t, "ip -6 route", v6, "::/1", "8000::/1", "fd00:9::/48", "fd00:1::77", "fd00:2::")
	mustLack(t, "ip addr", nstest.Run(t, ns, "ip", "addr", "show", "dev", "mtun0"), "fd00:2::2")
	b, _ = os.ReadFile(resolvPath)
	mustContain(t, "resolv.conf", string(b), "nameserver 192.0.2.54\n")
	mustLack(t, "resolv.conf", string(b), "192.0.2.53")

	fmt.Fprintln(c.stdin)
	c.finish()
	if after := snapshot(t, ns); after != before {
		t.Errorf("routing state not restored:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if b, _ := os.ReadFile(resolvPath); string(b) != origResolv {
		t.Errorf("resolv.conf not restored exactly: %q", b)
	}
	if _, err := os.Stat(journalPath(stateDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("journal left after Close: %v", err)
	}
}

func TestOsnetCrashCleanup(t *testing.T) {
	ns, resolvPath := setupNS(t)
	before := snapshot(t, ns)
	stateDir := t.TempDir()

	c := startChild(t, ns, "crash", stateDir)
	c.expect("READY full")
	if err := syscall.Kill(c.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.wait
	// The kill left routes outside the tunnel, DNS and the journal behind.
	mustContain(t, "ip route after kill", nstest.Run(t, ns, "ip", "route"), "203.0.113.7 via 198.51.100.1 dev veth0 proto 109")
	if b, _ := os.ReadFile(resolvPath); string(b) == origResolv {
		t.Fatal("resolv.conf already restored after SIGKILL?")
	}
	if _, err := os.Stat(journalPath(stateDir)); err != nil {
		t.Fatalf("no journal after kill: %v", err)
	}

	out := nstest.RunChild(t, ns, "TestChildOsnet", "MIRAGE_TEST_MODE=cleanup", "MIRAGE_TEST_STATEDIR="+stateDir)
	mustContain(t, "cleanup child", out, "--- PASS: TestChildOsnet")
	if after := snapshot(t, ns); after != before {
		t.Errorf("routing state not restored:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if b, _ := os.ReadFile(resolvPath); string(b) != origResolv {
		t.Errorf("resolv.conf not restored exactly: %q", b)
	}
	if _, err := os.Stat(journalPath(stateDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("journal left after Cleanup: %v", err)
	}
	if _, err := nstest.Exec(ns, "ip", "link", "show", "mtun0"); err == nil {
		t.Errorf("mtun0 still exists after Cleanup")
	}
}
