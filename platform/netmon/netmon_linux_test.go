package netmon

import (
	"log/slog"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/platform/internal/nstest"
)

// In a namespace with a default route: mirage-style routes (/1 halves, a
// host route) are not a change; moving the default route to another
// gateway is, and so is removing it.
func TestLinuxMonitor(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t)
	// veth pairs (this kernel has no dummy module).
	nstest.Run(t, ns, "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d0p")
	nstest.Run(t, ns, "ip", "link", "add", "d1", "type", "veth", "peer", "name", "d1p")
	for _, l := range []string{"d0", "d0p", "d1", "d1p"} {
		nstest.Run(t, ns, "ip", "link", "set", l, "up")
	}
	nstest.Run(t, ns, "ip", "addr", "add", "192.0.2.10/24", "dev", "d0")
	nstest.Run(t, ns, "ip", "route", "add", "default", "via", "192.0.2.1")
	nstest.Run(t, ns, "ip", "addr", "add", "198.51.100.20/24", "dev", "d1")
	out := nstest.RunChild(t, ns, "TestChildMonitor")
	t.Log(out)
}

func TestChildMonitor(t *testing.T) {
	if !nstest.IsChild(t) {
		t.Skip("runs only as a child of TestLinuxMonitor")
	}
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	m := New(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer m.Close()
	if _, ok := m.src.(*nlSource); !ok {
		t.Fatalf("netlink event source not used: %T", m.src)
	}
	ip("route", "add", "0.0.0.0/1", "dev", "d1")
	ip("route", "add", "128.0.0.0/1", "dev", "d1")
	ip("route", "add", "203.0.113.7/32", "via", "192.0.2.1")
	expectChange(t, m, false, 2*time.Second)

	ip("route", "replace", "default", "via", "198.51.100.1", "dev", "d1")
	expectChange(t, m, true, 5*time.Second)

	ip("route", "del", "default")
	expectChange(t, m, true, 5*time.Second)
}
