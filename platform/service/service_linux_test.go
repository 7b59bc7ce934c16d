package service

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// childArg marks the test binary's run as the installed service.
const childArg = "mirage-service-test-child"

// TestServiceChild is the program the real-install test registers: it
// writes "started" to the marker file, waits for the service manager to
// stop it, then writes "stopped".
func TestServiceChild(t *testing.T) {
	if flag.Arg(0) != childArg {
		t.Skip("only runs as the service installed by TestRealInstall")
	}
	marker := flag.Arg(1)
	err := Run(func(ctx context.Context) error {
		if err := os.WriteFile(marker, []byte("started"), 0o644); err != nil {
			return err
		}
		<-ctx.Done()
		return os.WriteFile(marker, []byte("stopped"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRealInstall installs, starts, queries, stops and uninstalls the real
// service with the system's service manager. It changes system files, so
// it only runs as root with MIRAGE_TEST_SERVICE=1, and removes everything
// it created.
func TestRealInstall(t *testing.T) {
	if os.Getenv("MIRAGE_TEST_SERVICE") != "1" {
		t.Skip("set MIRAGE_TEST_SERVICE=1 (as root) to install a real service on this machine")
	}
	if os.Geteuid() != 0 {
		t.Fatal("MIRAGE_TEST_SERVICE=1 needs root")
	}
	if _, err := os.Stat("/etc/init.d/" + Name); err == nil {
		t.Fatalf("/etc/init.d/%s exists: a real installation is present, not touching it", Name)
	}
	if _, err := os.Stat("/etc/systemd/system/" + Name + ".service"); err == nil {
		t.Fatalf("/etc/systemd/system/%s.service exists: a real installation is present, not touching it", Name)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "marker")
	// No real group or user changes: the group "exists" and nobody is
	// behind sudo.
	m := &Manager{
		LookupGroup: func(string) (bool, error) { return true, nil },
		Getenv:      func(string) string { return "" },
		Exec: func(name string, args ...string) error {
			t.Errorf("unexpected command %s %v", name, args)
			return nil
		},
	}
	t.Cleanup(func() {
		_ = m.Stop()
		_ = m.Uninstall()
		for _, p := range []string{"/etc/init.d/" + Name, "/var/run/" + Name + ".pid", "/var/log/" + Name + ".log", "/var/log/" + Name + ".err"} {
			_ = os.Remove(p)
		}
		if err := m.removeRCLinks(); err != nil {
			t.Error(err)
		}
		links, _ := filepath.Glob("/etc/rc?.d/*" + Name)
		if len(links) > 0 {
			t.Errorf("links left behind: %v", links)
		}
	})
	if err := m.Install(exe, []string{"-test.run=TestServiceChild", "-test.v", childArg, marker}); err != nil {
		t.Fatal(err)
	}
	if st, err := m.Status(); err != nil || st != "stopped" {
		t.Errorf("status after install = %q, %v; want stopped", st, err)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	waitMarker(t, marker, "started")
	if st, err := m.Status(); err != nil || st != "running" {
		t.Errorf("status after start = %q, %v; want running", st, err)
	}
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	// Stopped through the context, not killed: the program had its say.
	waitMarker(t, marker, "stopped")
	if st, err := m.Status(); err != nil || st != "stopped" {
		t.Errorf("status after stop = %q, %v; want stopped", st, err)
	}
	if err := m.Uninstall(); err != nil {
		t.Fatal(err)
	}
	if st, err := m.Status(); err != nil || st != "not installed" {
		t.Errorf("status after uninstall = %q, %v; want not installed", st, err)
	}
	if links, _ := filepath.Glob("/etc/rc?.d/*" + Name); len(links) > 0 {
		t.Errorf("Uninstall left rc links: %v", links)
	}
}

func waitMarker(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var got []byte
	for time.Now().Before(deadline) {
		got, _ = os.ReadFile(path)
		if strings.TrimSpace(string(got)) == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, _ := os.ReadFile("/var/log/" + Name + ".err")
	t.Fatalf("marker %s = %q, want %q within 15s; service stderr:\n%s", path, got, want, out)
}
