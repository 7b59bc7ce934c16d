package osnet

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// resolvConf is the resolver file every backend is detected from.
const resolvConf = "/etc/resolv.conf"

// dnsEnv is the OS seam of the DNS code, replaced in tests.
type dnsEnv struct {
	// Root prefixes every file path ("" is the real root).
	Root string
	// LookPath finds a command.
	LookPath func(name string) (string, error)
	// Run runs a command with stdin (nil for none).
	Run func(stdin []byte, name string, args ...string) error
}

func osDNSEnv() dnsEnv {
	return dnsEnv{
		LookPath: exec.LookPath,
		Run: func(stdin []byte, name string, args ...string) error {
			cmd := exec.Command(name, args...)
			if stdin != nil {
				cmd.Stdin = bytes.NewReader(stdin)
			}
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
			}
			return nil
		},
	}
}

func (e dnsEnv) path(p string) string { return filepath.Join(e.Root, p) }

// chooseBackend picks how DNS is managed on this box: systemd-resolved when
// resolv.conf is its file and resolvectl exists, else a real resolvconf
// (not systemd's resolvectl shim), else the resolv.conf file itself.
func (e dnsEnv) chooseBackend() string {
	rc := e.path(resolvConf)
	_, hasResolvectl := e.LookPath("resolvectl")
	if hasResolvectl == nil {
		if target, err := os.Readlink(rc); err == nil && strings.Contains(target, "/run/systemd/resolve/") {
			return backendResolved
		}
		if b, err := os.ReadFile(rc); err == nil && usesResolvedStub(b) {
			return backendResolved
		}
	}
	if p, err := e.LookPath("resolvconf"); err == nil {
		real, err := filepath.EvalSymlinks(p)
		if err != nil || filepath.Base(real) != "resolvectl" {
			return backendResolvconf
		}
	}
	return backendFile
}

// usesResolvedStub reports whether a resolv.conf names resolved's stub.
func usesResolvedStub(b []byte) bool {
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" && (f[1] == "127.0.0.53" || f[1] == "127.0.0.54") {
			return true
		}
	}
	return false
}

// setDNS points the system at servers for iface. prev is the state of an
// earlier setDNS (nil for none); the returned state replaces it. record is
// called with the state before anything is changed, for the journal.
func (e dnsEnv) setDNS(prev *dnsState, iface string, servers []netip.Addr, record func(*dnsState) error) (*dnsState, error) {
	st := &dnsState{Interface: iface, Servers: servers}
	if prev != nil {
		cp := *prev
		cp.Servers = servers
		st = &cp
	} else {
		st.Backend = e.chooseBackend()
	}
	switch st.Backend {
	case backendResolved:
		if err := record(st); err != nil {
			return nil, err
		}
		args := []string{"dns", iface}
		for _, s := range servers {
			args = append(args, s.String())
		}
		if err := e.Run(nil, "resolvectl", args...); err != nil {
			return st, fmt.Errorf("set dns via systemd-resolved: %w", err)
		}
		if err := e.Run(nil, "resolvectl", "domain", iface, "~."); err != nil {
			return st, fmt.Errorf("set dns via systemd-resolved: %w", err)
		}
	case backendResolvconf:
		if err := record(st); err != nil {
			return nil, err
		}
		if err := e.Run(nameservers(servers), "resolvconf", "-a", iface+".mirage"); err != nil {
			return st, fmt.Errorf("set dns via resolvconf: %w", err)
		}
	default:
		if prev == nil {
			if err := e.snapshot(st); err != nil {
				return nil, err
			}
		}
		st.Written = fileContent(iface, servers, st.Original)
		if err := record(st); err != nil {
			return nil, err
		}
		if err := e.writeResolvConf(st.Path, st.Written, 0o644); err != nil {
			return st, fmt.Errorf("set dns in %s: %w", st.Path, err)
		}
	}
	return st, nil
}

// snapshot records resolv.conf exactly as it is (bytes, mode, symlink).
func (e dnsEnv) snapshot(st *dnsState) error {
	st.Backend = backendFile
	st.Path = resolvConf
	p := e.path(resolvConf)
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", resolvConf, err)
	}
	st.Existed = true
	if fi.Mode()&fs.ModeSymlink != 0 {
		if st.Symlink, err = os.Readlink(p); err != nil {
			return fmt.Errorf("read %s: %w", resolvConf, err)
		}
		fi, err = os.Stat(p)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("read %s: %w", resolvConf, err)
		}
	}
	if fi != nil {
		st.Mode = fi.Mode().Perm()
	}
	b, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", resolvConf, err)
	}
	st.Original = b
	return nil
}

// fileHeader starts every resolv.conf mirage writes.
const fileHeader = "# Written by mirage for "

// nameservers renders servers as resolv.conf lines.
func nameservers(servers []netip.Addr) []byte {
	var b bytes.Buffer
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	return b.Bytes()
}

// fileContent is the resolv.conf written by the file backend: our servers,
// keeping the original search and options lines.
func fileContent(iface string, servers []netip.Addr, original []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s%s; the original is restored on disconnect.\n", fileHeader, iface)
	b.Write(nameservers(servers))
	for _, line := range strings.Split(string(original), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && (f[0] == "search" || f[0] == "domain" || f[0] == "options") {
			b.WriteString(strings.TrimSpace(line) + "\n")
		}
	}
	return b.Bytes()
}

// writeResolvConf replaces the file atomically. Under `ip netns exec`,
// /etc/resolv.conf is a bind mount and rename onto it fails with EBUSY; then
// the file is rewritten in place.
func (e dnsEnv) writeResolvConf(p string, data []byte, mode fs.FileMode) error {
	full := e.path(p)
	err := writeFileAtomic(full, data, mode)
	if errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EXDEV) {
		err = os.WriteFile(full, data, mode)
	}
	return err
}

// revertDNS undoes st. The file backend restores the original bytes only if
// the file still holds what mirage wrote, so a newer change by someone else
// is left alone.
func (e dnsEnv) revertDNS(log *slog.Logger, st *dnsState) error {
	switch st.Backend {
	case backendResolved:
		if err := e.Run(nil, "resolvectl", "revert", st.Interface); err != nil {
			return fmt.Errorf("revert dns via systemd-resolved: %w", err)
		}
	case backendResolvconf:
		if err := e.Run(nil, "resolvconf", "-d", st.Interface+".mirage"); err != nil {
			return fmt.Errorf("revert dns via resolvconf: %w", err)
		}
	case backendFile:
		full := e.path(st.Path)
		cur, err := os.ReadFile(full)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restore %s: %w", st.Path, err)
		}
		// A crash between journaling and writing leaves an older mirage
		// file, recognisable by its header.
		if st.Written != nil && !bytes.Equal(cur, st.Written) && !bytes.HasPrefix(cur, []byte(fileHeader)) {
			log.Warn("resolv.conf changed by someone else since mirage wrote it; leaving it alone", "path", st.Path)
			return nil
		}
		switch {
		case !st.Existed:
			if err := os.Remove(full); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("restore %s: %w", st.Path, err)
			}
		case st.Symlink != "":
			tmp := full + ".mirage-tmp"
			os.Remove(tmp)
			if err := os.Symlink(st.Symlink, tmp); err != nil {
				return fmt.Errorf("restore %s symlink: %w", st.Path, err)
			}
			if err := os.Rename(tmp, full); err != nil {
				os.Remove(tmp)
				return fmt.Errorf("restore %s symlink: %w", st.Path, err)
			}
		default:
			if err := e.writeResolvConf(st.Path, st.Original, st.Mode); err != nil {
				return fmt.Errorf("restore %s: %w", st.Path, err)
			}
		}
	default:
		return fmt.Errorf("revert dns: unknown backend %q in journal", st.Backend)
	}
	return nil
}
