//go:build darwin || freebsd

package osnet

import (
	"bytes"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/mirage-vpn/mirage/core/netcfg"
)

// execSys is the real bsdSys: commands from the base system, files on disk.
type execSys struct{}

func (execSys) run(stdin, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

func (execSys) lstat(path string) (fs.FileMode, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0, err
	}
	return fi.Mode(), nil
}

func (execSys) readFile(path string) ([]byte, error) { return os.ReadFile(path) }

func (execSys) writeFile(path string, data []byte, mode fs.FileMode) error {
	return writeFileAtomic(path, data, mode)
}

func (execSys) removeFile(path string) error { return os.Remove(path) }

func thisFlavor() bsdFlavor {
	if runtime.GOOS == "darwin" {
		return flavorDarwin
	}
	return flavorFreeBSD
}

// New returns the macOS/FreeBSD configurator (ifconfig, route(8), scutil on
// macOS, resolvconf or /etc/resolv.conf on FreeBSD) keeping its journal in
// stateDir. It fails if a journal of an earlier run is still there: call
// Cleanup first.
func New(log *slog.Logger, stateDir string) (netcfg.Configurator, error) {
	return newBSDConfigurator(log, stateDir, execSys{}, thisFlavor())
}

// Cleanup undoes what the journal in stateDir records (a run that crashed
// or was killed) and removes the journal. Without a journal it does
// nothing.
func Cleanup(log *slog.Logger, stateDir string) error {
	return bsdCleanup(log, stateDir, execSys{}, thisFlavor())
}
