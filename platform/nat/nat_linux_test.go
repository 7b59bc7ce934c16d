package nat

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/platform/internal/nstest"
)

func TestIptablesBackendRefused(t *testing.T) {
	cfg := testCfg
	cfg.Backend = "iptables"
	_, err := Setup(slog.New(slog.NewTextHandler(io.Discard, nil)), cfg)
	if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "iptables backend is not implemented") {
		t.Fatalf("Setup(iptables) = %v", err)
	}
}

// TestChildNAT runs in the namespace. Modes: "setup" (Setup, READY, wait for
// stdin, Close), "hang" (Setup, READY, wait to be killed), "cleanup".
func TestChildNAT(t *testing.T) {
	if !nstest.IsChild(t) {
		t.Skip("runs only as a child of the netns tests")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if os.Getenv("MIRAGE_TEST_MODE") == "cleanup" {
		for i := 0; i < 2; i++ {
			if err := CleanupLeftovers(log, os.Getenv("MIRAGE_TEST_STATE")); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	if os.Getenv("MIRAGE_TEST_MODE") == "split" {
		// The pre-5.2 layout: nat chains in ip and ip6 tables.
		if err := install(plan(testCfg, false)); err != nil {
			t.Fatal(err)
		}
		return
	}
	cfg := testCfg
	cfg.StateDir = os.Getenv("MIRAGE_TEST_STATE")
	r, err := Setup(log, cfg)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("READY")
	if os.Getenv("MIRAGE_TEST_MODE") == "hang" {
		time.Sleep(40 * time.Second)
		t.Fatal("not killed")
	}
	bufio.NewScanner(os.Stdin).Scan()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

type child struct {
	stdin io.WriteCloser
	lines chan string
	wait  chan error
	pid   int
	out   strings.Builder
}

func startChild(t *testing.T, ns, mode string) *child {
	t.Helper()
	cmd := nstest.Child(t, ns, "TestChildNAT", "MIRAGE_TEST_MODE="+mode, stateEnv(ns))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	c := &child{stdin: stdin, lines: make(chan string, 1000), wait: make(chan error, 1), pid: cmd.Process.Pid}
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			c.lines <- s.Text()
		}
		close(c.lines)
		c.wait <- cmd.Wait()
	}()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				t.Fatalf("child exited before READY:\n%s", c.out.String())
			}
			c.out.WriteString(l + "\n")
			if l == "READY" {
				return c
			}
		case <-timeout:
			t.Fatalf("child not READY in 30s:\n%s", c.out.String())
		}
	}
}

// stateEnv is the child's state directory for namespace ns (one per
// namespace, so parallel tests do not share a forwarding journal).
func stateEnv(ns string) string {
	return "MIRAGE_TEST_STATE=" + filepath.Join(os.TempDir(), "mirage-nattest-"+ns)
}

func setupNS(t *testing.T) string {
	nstest.RequireRoot(t)
	nstest.RequireTool(t, "nft")
	ns := nstest.New(t)
	t.Cleanup(func() { os.RemoveAll(strings.TrimPrefix(stateEnv(ns), "MIRAGE_TEST_STATE=")) })
	nstest.Run(t, ns, "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
	nstest.Run(t, ns, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward; echo 0 > /proc/sys/net/ipv6/conf/all/forwarding")
	// A foreign table must survive everything mirage does.
	nstest.Run(t, ns, "nft", "add table inet other; add chain inet other fw { type filter hook forward priority 0; policy drop; }")
	return ns
}

func forwarding(t *testing.T, ns string) string {
	return strings.Join(strings.Fields(nstest.Run(t, ns, "cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")), ",")
}

func checkInstalled(t *testing.T, ns string) {
	t.Helper()
	got := nstest.Run(t, ns, "nft", "list", "table", "inet", "mirage")
	for _, w := range []string{
		"type filter hook forward priority filter - 1; policy accept;",
		`iifname "mtun0" accept`,
		`oifname "mtun0" accept`,
		"type nat hook postrouting priority srcnat; policy accept;",
		`ip saddr 192.0.2.0/24 oifname "veth0" masquerade`,
		`ip6 saddr fd00:2::/64 oifname != "mtun0" masquerade`,
	} {
		if strings.Count(got, w) != 1 {
			t.Errorf("nft table should have %q exactly once:\n%s", w, got)
		}
	}
	if f := forwarding(t, ns); f != "1,1" {
		t.Errorf("forwarding = %s, want 1,1", f)
	}
}

func checkRemoved(t *testing.T, ns string) {
	t.Helper()
	if out, err := nstest.Exec(ns, "nft", "list", "table", "inet", "mirage"); err == nil {
		t.Errorf("mirage table still there:\n%s", out)
	}
	if !strings.Contains(nstest.Run(t, ns, "nft", "list", "tables"), "table inet other") {
		t.Errorf("foreign table removed")
	}
}

func TestNATSetupClose(t *testing.T) {
	ns := setupNS(t)
	setupAndStop(t, ns, "after Close")
}

// setupAndStop runs a Setup child, checks the rules, stops it cleanly and
// checks that everything is removed and forwarding is back to 0,0.
func setupAndStop(t *testing.T, ns, when string) {
	t.Helper()
	c := startChild(t, ns, "setup")
	checkInstalled(t, ns)
	fmt.Fprintln(c.stdin)
	if err := <-c.wait; err != nil {
		t.Fatalf("child: %v\n%s", err, c.out.String())
	}
	checkRemoved(t, ns)
	if f := forwarding(t, ns); f != "0,0" {
		t.Errorf("forwarding %s = %s, want 0,0 (restored)", when, f)
	}
}

func TestNATLeftovers(t *testing.T) {
	ns := setupNS(t)
	c := startChild(t, ns, "hang")
	syscall.Kill(c.pid, syscall.SIGKILL)
	<-c.wait
	checkInstalled(t, ns) // leftover of the killed run

	// The next Setup replaces the leftover instead of duplicating rules.
	c = startChild(t, ns, "hang")
	checkInstalled(t, ns)
	syscall.Kill(c.pid, syscall.SIGKILL)
	<-c.wait

	out := nstest.RunChild(t, ns, "TestChildNAT", "MIRAGE_TEST_MODE=cleanup", stateEnv(ns))
	if !strings.Contains(out, "--- PASS: TestChildNAT") {
		t.Fatalf("cleanup child:\n%s", out)
	}
	checkRemoved(t, ns)
	if f := forwarding(t, ns); f != "0,0" {
		t.Errorf("forwarding after two kill -9 and a cleanup = %s, want 0,0 (restored from the journal)", f)
	}
}

// TestNATForwardingAfterCrash: kill -9, restart, clean stop: forwarding is
// back to what it was before the first run.
func TestNATForwardingAfterCrash(t *testing.T) {
	ns := setupNS(t)
	c := startChild(t, ns, "hang")
	syscall.Kill(c.pid, syscall.SIGKILL)
	<-c.wait
	if f := forwarding(t, ns); f != "1,1" {
		t.Fatalf("forwarding while the killed run's NAT is left = %s, want 1,1", f)
	}
	setupAndStop(t, ns, "after kill -9, restart and stop")
}

func TestNATSplitLayoutAndCleanup(t *testing.T) {
	ns := setupNS(t)
	nstest.RunChild(t, ns, "TestChildNAT", "MIRAGE_TEST_MODE=split", stateEnv(ns))
	if got := nstest.Run(t, ns, "nft", "list", "table", "ip", "mirage"); !strings.Contains(got, `ip saddr 192.0.2.0/24 oifname "veth0" masquerade`) {
		t.Errorf("ip table:\n%s", got)
	}
	if got := nstest.Run(t, ns, "nft", "list", "table", "ip6", "mirage"); !strings.Contains(got, `ip6 saddr fd00:2::/64 oifname != "mtun0" masquerade`) {
		t.Errorf("ip6 table:\n%s", got)
	}
	nstest.RunChild(t, ns, "TestChildNAT", "MIRAGE_TEST_MODE=cleanup", stateEnv(ns))
	if got := nstest.Run(t, ns, "nft", "list", "tables"); strings.Contains(got, "mirage") {
		t.Errorf("mirage tables left after CleanupLeftovers:\n%s", got)
	}
	checkRemoved(t, ns)
}
