package autostart

import (
	"os"
	"strings"
	"testing"
)

func TestEnableDisable(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	if on, err := Enabled(); err != nil || on {
		t.Fatalf("Enabled before = %v, %v", on, err)
	}
	if err := Enable(Entry{Exec: "relative/mirage"}); err == nil {
		t.Fatal("relative path accepted")
	}
	if err := Enable(Entry{Name: "Mirage", Exec: "/opt/my apps/mirage", Args: []string{"--socket", "/run/m.sock"}}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(dir + "/autostart/mirage.desktop")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\nExec=\"/opt/my apps/mirage\" --socket /run/m.sock\n") || !strings.HasPrefix(string(b), "[Desktop Entry]\nType=Application\n") {
		t.Fatalf("desktop file:\n%s", b)
	}
	if on, err := Enabled(); err != nil || !on {
		t.Fatalf("Enabled after = %v, %v", on, err)
	}
	if err := Disable(); err != nil {
		t.Fatal(err)
	}
	if err := Disable(); err != nil {
		t.Fatalf("second Disable: %v", err)
	}
	if on, _ := Enabled(); on {
		t.Fatal("still enabled")
	}
}
