//go:build darwin || freebsd

package killswitch

import (
	"bytes"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/mirage-vpn/mirage/core/config"
)

// execPF is the real pfSys.
type execPF struct{ log *slog.Logger }

func (execPF) run(stdin, name string, args ...string) (string, error) {
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

func (execPF) readFile(path string) ([]byte, error) { return os.ReadFile(path) }

func (execPF) writeFile(path string, data []byte, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return config.WriteFileAtomic(path, data, mode)
}

func (execPF) removeFile(path string) error { return os.Remove(path) }

// lans are the connected subnets of every interface except loopback and
// the tunnel. Implausibly wide ones (shorter than /8, or /16 for IPv6) and
// link-local ones are skipped so a misconfigured interface cannot open
// everything.
func (e execPF) lans(tun string) ([]netip.Prefix, error) {
	return lanPrefixes(e.log, tun, true)
}

func thisPF() pfFlavor {
	if runtime.GOOS == "darwin" {
		return pfDarwin
	}
	return pfFreeBSD
}

// Enable loads the kill switch into mirage's pf anchor (macOS:
// com.apple/mirage.killswitch, FreeBSD: mirage/killswitch) and enables pf.
// pf keeps the rules after the process exits, until Disable.
func Enable(log *slog.Logger, cfg Config) error {
	return pfEnable(log, execPF{log: log}, thisPF(), cfg)
}

// Disable flushes the anchor and releases pf; nothing installed is not an
// error.
func Disable(log *slog.Logger) error { return pfDisable(log, execPF{log: log}, thisPF()) }

// Active reports whether the kill switch anchor holds rules.
func Active() (bool, error) { return pfActive(execPF{}, thisPF()) }
