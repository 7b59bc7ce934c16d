// Package osnet applies the client's OS network configuration around the
// TUN device (addresses, routes, excluded routes, server bypass routes, DNS)
// as a core/netcfg.Configurator. Every change is written to a journal in the
// state directory before it is made, so Cleanup can undo the changes of a
// crashed run on the next start.
package osnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/mirage-vpn/mirage/core/netcfg"
)

// DNS backends.
const (
	backendResolved   = "resolved"
	backendResolvconf = "resolvconf"
	backendFile       = "file"
)

// journalName is the journal's file name inside the state directory.
const journalName = "netstate.json"

// journal records every OS change Set made (or is about to make).
type journal struct {
	// Interface is the TUN device name; Cleanup deletes a leftover link.
	Interface string         `json:"interface"`
	Addrs     []netip.Prefix `json:"addrs,omitempty"`
	Routes    []route        `json:"routes,omitempty"`
	DNS       *dnsState      `json:"dns,omitempty"`
	// OS is the per-OS state of the Windows, macOS and FreeBSD
	// implementations (each encodes its own struct here).
	OS json.RawMessage `json:"os,omitempty"`
}

// route is one route mirage added: into Dev, via Gw when set.
type route struct {
	Dst netip.Prefix `json:"dst"`
	Gw  netip.Addr   `json:"gw,omitzero"`
	Dev string       `json:"dev"`
}

func (r route) String() string {
	if r.Gw.IsValid() {
		return fmt.Sprintf("%s via %s dev %s", r.Dst, r.Gw, r.Dev)
	}
	return fmt.Sprintf("%s dev %s", r.Dst, r.Dev)
}

// dnsState is what a DNS backend needs to undo its change exactly.
type dnsState struct {
	// Backend is "resolved", "resolvconf" or "file".
	Backend   string `json:"backend"`
	Interface string `json:"interface"`
	// Servers that were set.
	Servers []netip.Addr `json:"servers,omitempty"`
	// File backend: the original resolv.conf.
	Path     string      `json:"path,omitempty"`
	Existed  bool        `json:"existed,omitempty"`
	Symlink  string      `json:"symlink,omitempty"`
	Mode     fs.FileMode `json:"mode,omitempty"`
	Original []byte      `json:"original,omitempty"`
	Written  []byte      `json:"written,omitempty"`
}

func journalPath(stateDir string) string { return filepath.Join(stateDir, journalName) }

// loadJournal reads the journal; ok is false when there is none.
func loadJournal(stateDir string) (j journal, ok bool, err error) {
	b, err := os.ReadFile(journalPath(stateDir))
	if errors.Is(err, fs.ErrNotExist) {
		return journal{}, false, nil
	}
	if err != nil {
		return journal{}, false, fmt.Errorf("read network journal: %w", err)
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return journal{}, false, fmt.Errorf("parse network journal %s: %w", journalPath(stateDir), err)
	}
	return j, true, nil
}

// saveJournal writes j atomically with mode 0600.
func saveJournal(stateDir string, j journal) error {
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return fmt.Errorf("encode network journal: %w", err)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	if err := writeFileAtomic(journalPath(stateDir), b, 0o600); err != nil {
		return fmt.Errorf("write network journal: %w", err)
	}
	return nil
}

func removeJournal(stateDir string) error {
	err := os.Remove(journalPath(stateDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove network journal: %w", err)
	}
	return nil
}

// writeFileAtomic writes data to path via a temporary file and rename.
func writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
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
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// splitDefault expands the default routes into their two /1 halves so the
// original default route stays in place and keeps being preferred for
// excluded and bypass routes; other prefixes are returned masked as given.
// Duplicates are dropped.
func splitDefault(prefixes []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	add := func(p netip.Prefix) {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	for _, p := range prefixes {
		p = p.Masked()
		switch {
		case p.Bits() == 0 && p.Addr().Is4():
			add(netip.MustParsePrefix("0.0.0.0/1"))
			add(netip.MustParsePrefix("128.0.0.0/1"))
		case p.Bits() == 0 && p.Addr().Is6():
			add(netip.MustParsePrefix("::/1"))
			add(netip.MustParsePrefix("8000::/1"))
		default:
			add(p)
		}
	}
	return out
}

// checkConfig rejects a Config that cannot be applied, naming the bad field.
func checkConfig(cfg netcfg.Config) error {
	if cfg.Interface == "" {
		return errors.New("network config: interface name is empty")
	}
	if cfg.MTU != 0 && (cfg.MTU < 576 || cfg.MTU > 65535) {
		return fmt.Errorf("network config: mtu %d out of range 576..65535", cfg.MTU)
	}
	for _, p := range cfg.Addrs {
		if !p.IsValid() || p.Addr().Zone() != "" {
			return fmt.Errorf("network config: invalid tunnel address %q", p)
		}
	}
	for _, l := range []struct {
		name string
		ps   []netip.Prefix
	}{{"route", cfg.Routes}, {"excluded route", cfg.ExcludedRoutes}} {
		for _, p := range l.ps {
			if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
				return fmt.Errorf("network config: invalid %s %q", l.name, p)
			}
		}
	}
	for _, a := range cfg.Bypass {
		if !a.IsValid() || a.IsUnspecified() || a.Is4In6() || a.Zone() != "" {
			return fmt.Errorf("network config: invalid bypass address %q", a)
		}
	}
	for _, a := range cfg.DNS {
		if !a.IsValid() || a.IsUnspecified() || a.Is4In6() {
			return fmt.Errorf("network config: invalid DNS server %q", a)
		}
	}
	return nil
}

// hostPrefix is a's /32 or /128.
func hostPrefix(a netip.Addr) netip.Prefix {
	return netip.PrefixFrom(a, a.BitLen())
}

// appendRoute adds r unless a route for the same destination is listed.
func appendRoute(rs []route, r route) []route {
	if slices.ContainsFunc(rs, sameDst(r)) {
		return rs
	}
	return append(rs, r)
}

func sameDst(r route) func(route) bool {
	return func(o route) bool { return o.Dst == r.Dst }
}

// unionOf is a followed by the elements of b not in a.
func unionOf[T comparable](a, b []T) []T {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}
