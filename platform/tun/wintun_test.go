package tun

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// wintunSeams points the executable at dir/mirage.exe (and stat at stat,
// unless nil) for one test.
func wintunSeams(t *testing.T, dir string, stat func(string) (fs.FileInfo, error)) {
	t.Helper()
	oldExe, oldStat := wintunExecutable, wintunStat
	t.Cleanup(func() { wintunExecutable, wintunStat = oldExe, oldStat })
	wintunExecutable = func() (string, error) { return filepath.Join(dir, "mirage.exe"), nil }
	if stat != nil {
		wintunStat = stat
	}
}

// TestWintunDLL: a missing wintun.dll next to the executable is an error
// naming the expected path, the file, the architecture's folder in the
// Wintun zip and where to get it; a present one is fine.
func TestWintunDLL(t *testing.T) {
	dir := t.TempDir()
	want := filepath.Join(dir, "wintun.dll")
	wintunSeams(t, dir, nil)

	for _, c := range []struct{ arch, zip string }{
		{"amd64", `bin\amd64\wintun.dll`},
		{"arm64", `bin\arm64\wintun.dll`},
		{"386", `bin\x86\wintun.dll`}, // the zip's folder is x86
	} {
		err := checkWintunDLL(c.arch)
		if err == nil {
			t.Fatalf("%s: no error without %s", c.arch, want)
		}
		for _, s := range []string{"wintun.dll not found at " + want + ":", "https://www.wintun.net/", c.zip, "next to the executable"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: error %q does not mention %q", c.arch, err, s)
			}
		}
	}

	// A directory of that name is not the DLL.
	if err := os.Mkdir(want, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := checkWintunDLL("amd64"); err == nil || !strings.Contains(err.Error(), want+" is a directory") {
		t.Errorf("directory instead of the DLL: %v", err)
	}
	if err := os.Remove(want); err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(want, []byte("MZ"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkWintunDLL("amd64"); err != nil {
		t.Errorf("with %s present: %v", want, err)
	}
}

// TestWintunDLLSeams: the lookup goes through the stat seam for exactly
// the path next to the executable; other stat errors and a failing
// executable lookup are reported with what was being checked.
func TestWintunDLLSeams(t *testing.T) {
	dir := filepath.Join("C:", "Program Files", "Mirage")
	var asked []string
	perm := errors.New("access denied")
	wintunSeams(t, dir, func(p string) (fs.FileInfo, error) {
		asked = append(asked, p)
		return nil, perm
	})
	err := checkWintunDLL("amd64")
	want := filepath.Join(dir, "wintun.dll")
	if !errors.Is(err, perm) || !strings.Contains(err.Error(), "check "+want) {
		t.Errorf("stat failure: %v", err)
	}
	if len(asked) != 1 || asked[0] != want {
		t.Errorf("stat asked for %q, want [%q]", asked, want)
	}

	exeErr := errors.New("no executable")
	wintunExecutable = func() (string, error) { return "", exeErr }
	if err := checkWintunDLL("amd64"); !errors.Is(err, exeErr) || !strings.Contains(err.Error(), "wintun.dll") {
		t.Errorf("executable lookup failure: %v", err)
	}
}
