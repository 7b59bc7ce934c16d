package tun

// The OS-independent part of the Windows check for wintun.dll (no build
// tag, so it is tested on every OS): where the DLL must be and the error
// telling the user how to get it. tun_windows.go calls checkWintunDLL
// before creating the adapter.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// wintunDLL is the file the wintun package loads from the executable's
// directory.
const wintunDLL = "wintun.dll"

// Seams for the tests: the running executable's path and the file lookup.
var (
	wintunExecutable = os.Executable
	wintunStat       = os.Stat
)

// checkWintunDLL fails with the expected path when wintun.dll is missing
// from the executable's directory, where the wintun package loads it from.
// arch is the Go architecture the binary was built for.
func checkWintunDLL(arch string) error {
	exe, err := wintunExecutable()
	if err != nil {
		return fmt.Errorf("find the executable's directory for %s: %w", wintunDLL, err)
	}
	return wintunPresent(filepath.Dir(exe), arch)
}

// wintunPresent checks dir/wintun.dll.
func wintunPresent(dir, arch string) error {
	path := filepath.Join(dir, wintunDLL)
	src := wintunZipPath(arch)
	st, err := wintunStat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s not found at %s: download the official signed Wintun from https://www.wintun.net/ and copy %s from the zip next to the executable", wintunDLL, path, src)
	}
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	if st.IsDir() {
		return fmt.Errorf("%s is a directory, not the Wintun DLL (get it from https://www.wintun.net/, %s)", path, src)
	}
	return nil
}

// wintunZipPath is where the Wintun zip keeps the DLL for the Go
// architecture arch: bin\amd64, bin\arm64, bin\arm, and bin\x86 for 386.
func wintunZipPath(arch string) string {
	if arch == "386" {
		arch = "x86"
	}
	return `bin\` + arch + `\` + wintunDLL
}
