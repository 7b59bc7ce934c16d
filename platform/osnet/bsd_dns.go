package osnet

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"slices"
	"strings"

	"github.com/mirage-vpn/mirage/core/netcfg"
)

// DNS backends of macOS and FreeBSD (besides backendResolvconf and
// backendFile).
const backendScutil = "scutil"

// Paths the macOS/FreeBSD DNS code uses.
const (
	bsdResolvConf     = "/etc/resolv.conf"
	bsdResolvconfPath = "/sbin/resolvconf"
	// bsdFileHeader starts every resolv.conf mirage writes.
	bsdFileHeader = "# Written by mirage for "
)

// scutilKey is the dynamic-store key of mirage's DNS service for iface.
func scutilKey(iface string) string { return "State:/Network/Service/mirage-" + iface + "/DNS" }

// setDNSLocked applies cfg.DNS; empty DNS reverts an earlier change.
func (c *bsdConfigurator) setDNSLocked(cfg netcfg.Config) error {
	if len(cfg.DNS) == 0 {
		if c.cur.DNS == nil {
			return nil
		}
		if err := c.revertDNS(c.cur.DNS); err != nil {
			return fmt.Errorf("set network config: %w", err)
		}
		c.cur.DNS = nil
		return saveJournal(c.stateDir, c.cur)
	}
	if c.cur.DNS != nil && slices.Equal(c.cur.DNS.Servers, cfg.DNS) {
		return nil
	}
	st := &dnsState{Interface: cfg.Interface, Servers: slices.Clone(cfg.DNS)}
	if c.cur.DNS != nil {
		cp := *c.cur.DNS
		cp.Servers = st.Servers
		st = &cp
	} else {
		switch {
		case c.flavor == flavorDarwin:
			st.Backend = backendScutil
		case c.hasResolvconf():
			st.Backend = backendResolvconf
		default:
			if err := c.snapshotResolvConf(st); err != nil {
				return fmt.Errorf("set network config: %w", err)
			}
		}
	}
	if st.Backend == backendFile {
		st.Written = bsdResolvContent(st.Interface, st.Servers, st.Original)
	}
	// Journal before changing anything.
	j := c.cur
	j.DNS = st
	if err := saveJournal(c.stateDir, j); err != nil {
		return err
	}
	c.cur = j
	var err error
	switch st.Backend {
	case backendScutil:
		_, err = c.sys.run(scutilSet(st.Interface, st.Servers), "scutil")
	case backendResolvconf:
		_, err = c.sys.run(string(bsdNameservers(st.Servers)), "resolvconf", "-x", "-a", st.Interface)
	default:
		err = c.sys.writeFile(st.Path, st.Written, 0o644)
	}
	if err != nil {
		return fmt.Errorf("set network config: set dns via %s: %w", st.Backend, err)
	}
	return nil
}

func (c *bsdConfigurator) hasResolvconf() bool {
	m, err := c.sys.lstat(bsdResolvconfPath)
	return err == nil && !m.IsDir()
}

// scutilSet is the scutil script publishing servers as a resolver for
// every domain ("" as supplemental match domain) under mirage's own
// service key, which keeps the user's services untouched.
func scutilSet(iface string, servers []netip.Addr) string {
	var b strings.Builder
	b.WriteString("open\nd.init\nd.add ServerAddresses *")
	for _, s := range servers {
		b.WriteString(" " + s.String())
	}
	b.WriteString("\nd.add SupplementalMatchDomains * \"\"\n")
	b.WriteString("d.add SupplementalMatchDomainsNoSearch # 1\n")
	fmt.Fprintf(&b, "set %s\nclose\n", scutilKey(iface))
	return b.String()
}

// snapshotResolvConf records resolv.conf exactly as it is (bytes, mode).
func (c *bsdConfigurator) snapshotResolvConf(st *dnsState) error {
	st.Backend = backendFile
	st.Path = bsdResolvConf
	m, err := c.sys.lstat(bsdResolvConf)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", bsdResolvConf, err)
	}
	if m&fs.ModeSymlink != 0 || !m.IsRegular() {
		return fmt.Errorf("%s is not a regular file (%v); not rewriting it", bsdResolvConf, m.Type())
	}
	b, err := c.sys.readFile(bsdResolvConf)
	if err != nil {
		return fmt.Errorf("read %s: %w", bsdResolvConf, err)
	}
	st.Existed, st.Mode, st.Original = true, m.Perm(), b
	return nil
}

// bsdNameservers renders servers as resolv.conf lines.
func bsdNameservers(servers []netip.Addr) []byte {
	var b bytes.Buffer
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	return b.Bytes()
}

// bsdResolvContent is the resolv.conf mirage writes: its servers, keeping
// the original search, domain and options lines.
func bsdResolvContent(iface string, servers []netip.Addr, original []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s%s; the original is restored on disconnect.\n", bsdFileHeader, iface)
	b.Write(bsdNameservers(servers))
	for _, line := range strings.Split(string(original), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && (f[0] == "search" || f[0] == "domain" || f[0] == "options") {
			b.WriteString(strings.TrimSpace(line) + "\n")
		}
	}
	return b.Bytes()
}

// revertDNS undoes st. The file backend restores the original only if the
// file still holds what mirage wrote (or an older mirage file after a
// crash), so a newer change by someone else is left alone.
func (c *bsdConfigurator) revertDNS(st *dnsState) error {
	if err := bsdCheckIfname("dns interface", st.Interface); err != nil {
		return err
	}
	switch st.Backend {
	case backendScutil:
		script := fmt.Sprintf("open\nremove %s\nclose\n", scutilKey(st.Interface))
		if _, err := c.sys.run(script, "scutil"); err != nil {
			return fmt.Errorf("revert dns via scutil: %w", err)
		}
	case backendResolvconf:
		if _, err := c.sys.run("", "resolvconf", "-d", st.Interface); err != nil {
			return fmt.Errorf("revert dns via resolvconf: %w", err)
		}
	case backendFile:
		if st.Path != bsdResolvConf {
			return fmt.Errorf("revert dns: unexpected path %q in journal", st.Path)
		}
		cur, err := c.sys.readFile(st.Path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restore %s: %w", st.Path, err)
		}
		if st.Written != nil && !bytes.Equal(cur, st.Written) && !bytes.HasPrefix(cur, []byte(bsdFileHeader)) {
			c.log.Warn("resolv.conf changed by someone else since mirage wrote it; leaving it alone", "path", st.Path)
			return nil
		}
		if !st.Existed {
			if err := c.sys.removeFile(st.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("restore %s: %w", st.Path, err)
			}
			return nil
		}
		if err := c.sys.writeFile(st.Path, st.Original, st.Mode); err != nil {
			return fmt.Errorf("restore %s: %w", st.Path, err)
		}
	default:
		return fmt.Errorf("revert dns: unknown backend %q in journal", st.Backend)
	}
	return nil
}
