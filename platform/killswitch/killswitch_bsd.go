//go:build darwin || freebsd

package killswitch

import (
	"bytes"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
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
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

func (execPF) removeFile(path string) error { return os.Remove(path) }

// lans are the connected subnets of every interface except loopback and
// the tunnel. Implausibly wide ones (shorter than /8, or /16 for IPv6) and
// link-local ones are skipped so a misconfigured interface cannot open
// everything.
func (e execPF) lans(tun string) ([]netip.Prefix, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, ifc := range ifs {
		if ifc.Name == tun || ifc.Flags&net.FlagLoopback != 0 || ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", ifc.Name, err)
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok || ip.IsLinkLocalUnicast() {
				continue
			}
			ip = ip.Unmap()
			ones, _ := ipn.Mask.Size()
			p := netip.PrefixFrom(ip, ones).Masked()
			if !p.IsValid() || (ip.Is4() && ones < 8) || (ip.Is6() && ones < 16) {
				e.log.Warn("kill switch: not allowing implausibly wide local subnet", "interface", ifc.Name, "subnet", a.String())
				continue
			}
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out, nil
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
