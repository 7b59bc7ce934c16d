//go:build linux

// Package nstest runs privileged platform tests inside throwaway network
// namespaces: root gating, namespace lifetime, and re-executing the test
// binary inside a namespace (ip netns exec) so every thread of the child, its
// /proc/sys/net view and its /etc/resolv.conf belong to that namespace.
package nstest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// ChildEnv names the environment variable that marks a re-executed child; its
// value is the test function the child must run.
const ChildEnv = "MIRAGE_NSTEST_CHILD"

// RequireRoot skips t when not root and the ip tool is missing, except under
// CI=true, where both are failures.
func RequireRoot(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "needs the ip tool (iproute2)"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("privileged test %s under CI=true", why)
	}
	t.Skipf("privileged test %s; skipping", why)
}

// RequireTool is RequireRoot's counterpart for an extra binary (e.g. nft).
func RequireTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("test needs %s under CI=true", name)
	}
	t.Skipf("test needs %s; skipping", name)
}

var seq atomic.Int32

// New creates a uniquely named network namespace with lo up and deletes it
// (and its /etc/netns directory) when t ends.
func New(t testing.TB) string {
	t.Helper()
	ns := fmt.Sprintf("mirt%d-%d", os.Getpid(), seq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
	}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", ns).Run()
		os.RemoveAll("/etc/netns/" + ns)
	})
	Run(t, ns, "ip", "link", "set", "lo", "up")
	return ns
}

// Run runs a command inside ns and returns its stdout; a failure fails t.
func Run(t testing.TB, ns string, args ...string) string {
	t.Helper()
	out, err := Exec(ns, args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

// Exec runs a command inside ns (bounded to 30 s) and returns its stdout.
func Exec(ns string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("in netns %s: %s: %v: %s", ns, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// Child returns a command that re-runs this test binary inside ns, running
// only the test function test with ChildEnv=test plus env. The process is
// killed when t ends.
func Child(t testing.TB, ns, test string, env ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("test binary path: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, self,
		"-test.run=^"+test+"$", "-test.v", "-test.count=1", "-test.timeout=50s")
	cmd.Env = append(append(os.Environ(), ChildEnv+"="+test), env...)
	return cmd
}

// RunChild runs Child to completion and fails t if it fails.
func RunChild(t testing.TB, ns, test string, env ...string) string {
	t.Helper()
	out, err := Child(t, ns, test, env...).CombinedOutput()
	if err != nil {
		t.Fatalf("child %s in %s: %v\n%s", test, ns, err, out)
	}
	return string(out)
}

// IsChild reports whether this process is the re-executed child for the
// calling test; other tests call t.Skip when it is false.
func IsChild(t testing.TB) bool {
	return os.Getenv(ChildEnv) == t.Name()
}
