// Package gui holds tests about the desktop app as a whole.
package gui

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/mirage-vpn/mirage/"

// TestAppReachesHelperOnlyThroughAPI: the tray app must not link the
// tunnel engine, the helper's internals or any OS networking code; it talks
// to the helper only through core/apiclient and core/api.
func TestAppReachesHelperOnlyThroughAPI(t *testing.T) {
	forbidden := []string{
		module + "core/engine", module + "core/client", module + "core/daemon", module + "core/tundev",
		module + "core/netcfg", module + "core/transport", module + "platform/", module + "server/",
		"github.com/vishvananda/netlink", "github.com/mdlayher/netlink", "github.com/google/nftables",
		"golang.zx2c4.com/wintun", "golang.zx2c4.com/wireguard",
	}
	for _, goos := range []string{"linux", "windows", "darwin"} {
		// -e: darwin's cgo dependencies cannot be resolved fully here, the
		// import graph still can.
		cmd := exec.Command("go", "list", "-e", "-deps", "-f", "{{.ImportPath}}", module+"gui/cmd/mirage")
		cmd.Env = append(cmd.Environ(), "GOOS="+goos, "CGO_ENABLED=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go list (%s): %v\n%s", goos, err, out)
		}
		deps := strings.Fields(string(out))
		has := map[string]bool{}
		for _, dep := range deps {
			has[dep] = true
			for _, bad := range forbidden {
				if dep == strings.TrimSuffix(bad, "/") || strings.HasPrefix(dep, bad) || strings.HasPrefix(dep, bad+"/") {
					t.Errorf("gui/cmd/mirage (%s) links %s", goos, dep)
				}
			}
		}
		for _, need := range []string{module + "core/apiclient", module + "gui/viewmodel", "fyne.io/fyne/v2/app"} {
			if !has[need] {
				t.Errorf("gui/cmd/mirage (%s) does not link %s; is the dependency list complete?", goos, need)
			}
		}
	}
}

// TestViewModelHasNoToolkit keeps the view-model testable without a display.
func TestViewModelHasNoToolkit(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", module+"gui/viewmodel").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "fyne.io/") {
			t.Errorf("gui/viewmodel links %s", dep)
		}
	}
}
