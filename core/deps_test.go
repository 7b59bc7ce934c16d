package core

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/mirage-vpn/mirage/"

// goListDeps returns the packages (stdlib excluded) that pkgs import,
// directly or not.
func goListDeps(t *testing.T, pkgs ...string) []string {
	t.Helper()
	args := append([]string{"list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}"}, pkgs...)
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	return strings.Fields(string(out))
}

func TestCoreImportsNoOuterLayer(t *testing.T) {
	out, err := exec.Command("go", "list", module+"core/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, dep := range goListDeps(t, pkg) {
			for _, bad := range []string{module + "platform", module + "gui", module + "server", "fyne.io/"} {
				if strings.HasPrefix(dep, bad) {
					t.Errorf("%s imports %s: core/ must not depend on platform/, gui/, server/ or Fyne", pkg, dep)
				}
			}
		}
	}
}

func TestBinariesDoNotLinkFyne(t *testing.T) {
	for _, bin := range []string{"server/cmd/mirage-server", "platform/cmd/mirage-helper"} {
		for _, goos := range []string{"linux", "windows", "darwin", "freebsd"} {
			cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", module+bin)
			cmd.Env = append(cmd.Environ(), "GOOS="+goos, "CGO_ENABLED=0")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("go list %s (%s): %v\n%s", bin, goos, err, out)
			}
			for _, dep := range strings.Fields(string(out)) {
				if strings.HasPrefix(dep, "fyne.io/") || strings.HasPrefix(dep, module+"gui") {
					t.Errorf("%s (%s) links %s", bin, goos, dep)
				}
			}
		}
	}
}

// The server must not reach into the client's GUI, and platform/ must not
// import gui/ or server/.
func TestPlatformImportsNoGUIOrServer(t *testing.T) {
	out, err := exec.Command("go", "list", module+"platform/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.Contains(pkg, "/e2e") {
			continue // the end-to-end tests drive the server binary
		}
		for _, dep := range goListDeps(t, pkg) {
			if strings.HasPrefix(dep, module+"gui") || strings.HasPrefix(dep, module+"server") {
				t.Errorf("%s imports %s", pkg, dep)
			}
		}
	}
}
