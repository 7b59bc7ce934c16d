//go:build darwin || freebsd

package nat

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/mirage-vpn/mirage/core/config"
)

// Rules is the installed NAT (a pf anchor, forwarding sysctls, pf enabled).
// Close removes it and restores the sysctls.
type Rules struct{ n *pfNAT }

// execPFNAT is the real pfNATSys.
type execPFNAT struct{}

func (execPFNAT) run(stdin, name string, args ...string) (string, error) {
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

func (execPFNAT) readFile(path string) ([]byte, error) { return os.ReadFile(path) }

func (execPFNAT) writeFile(path string, data []byte, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return config.WriteFileAtomic(path, data, mode)
}

func (execPFNAT) removeFile(path string) error { return os.Remove(path) }

func thisNAT() pfNATFlavor {
	if runtime.GOOS == "darwin" {
		return natDarwin
	}
	return natFreeBSD
}

// Setup installs NAT for cfg in mirage's pf anchor (macOS:
// com.apple/mirage.nat, FreeBSD: mirage/nat), replacing a leftover of a
// crashed run, enables IP forwarding and pf. Without an egress interface
// the default route's interface is used.
func Setup(log *slog.Logger, cfg Config) (*Rules, error) {
	n, err := pfNATSetup(log, execPFNAT{}, thisNAT(), cfg)
	if err != nil {
		return nil, err
	}
	return &Rules{n: n}, nil
}

// Close flushes the anchor, restores the forwarding sysctls and releases pf.
func (r *Rules) Close() error {
	if r == nil || r.n == nil {
		return nil
	}
	return r.n.close()
}

// CleanupLeftovers undoes the NAT of a crashed run (anchor, sysctls, pf
// enable) from its state file (its own, so stateDir is not used). Having
// none is not an error.
func CleanupLeftovers(log *slog.Logger, stateDir string) error {
	return pfNATCleanup(log, execPFNAT{}, thisNAT())
}

// Usage is not implemented for pf yet (pfctl -s state would give it).
func (r *Rules) Usage() (Usage, error) {
	return Usage{}, fmt.Errorf("nat usage on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}
