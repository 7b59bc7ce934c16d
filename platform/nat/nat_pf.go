package nat

// Server NAT with pf for macOS and FreeBSD. No build tag: pf is driven
// only through pfNATSys (pfctl, sysctl, route and a state file), so the
// logic is golden-tested on Linux against a fake. nat_bsd.go supplies the
// real pfNATSys and the exported API.
//
// The anchor holds translation rules (nat ... -> (egress), which follows
// the egress address when it changes) tagged MIRAGE_NAT, and filter rules
// passing the tunnel and the tagged packets, which matter when the main
// ruleset blocks by default. Everything Setup changes is recorded in a
// state file first, so CleanupLeftovers can undo a crashed run, including
// the forwarding sysctls.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
)

// pfNATSys is the OS seam of the pf NAT.
type pfNATSys interface {
	// run runs a command with stdin ("" for none) and returns its
	// combined output; a non-zero exit is an error.
	run(stdin, name string, args ...string) (string, error)
	readFile(path string) ([]byte, error)
	// writeFile replaces path atomically, creating its directory (0700).
	writeFile(path string, data []byte, mode fs.FileMode) error
	removeFile(path string) error
}

// pfNATFlavor is what differs between macOS and FreeBSD.
type pfNATFlavor struct {
	name   string
	root   string // the main ruleset must evaluate root/*
	anchor string
	tokens bool // macOS: pfctl -E/-X token; FreeBSD: pfctl -e/-d
}

var (
	natDarwin  = pfNATFlavor{name: "darwin", root: "com.apple", anchor: "com.apple/mirage.nat", tokens: true}
	natFreeBSD = pfNATFlavor{name: "freebsd", root: "mirage", anchor: "mirage/nat"}
)

// pfNATStatePath records what Setup changed (cleared at boot like pf).
const pfNATStatePath = "/var/run/mirage/nat-pf.json"

// pfNATState is the content of pfNATStatePath.
type pfNATState struct {
	Token     string           `json:"token,omitempty"`
	EnabledPF bool             `json:"enabled_pf,omitempty"`
	Sysctls   []pfNATSysctlWas `json:"sysctls,omitempty"`
}

// pfNATSysctlWas is a forwarding sysctl and its value before Setup.
type pfNATSysctlWas struct {
	Name string `json:"name"`
	Old  string `json:"old"`
}

// The forwarding sysctls.
const (
	sysctlV4Forward = "net.inet.ip.forwarding"
	sysctlV6Forward = "net.inet6.ip6.forwarding"
)

// pfNAT is the installed NAT.
type pfNAT struct {
	log    *slog.Logger
	sys    pfNATSys
	fl     pfNATFlavor
	mu     sync.Mutex
	st     pfNATState
	closed bool
}

// pfIfname accepts only plain interface names, so nothing from the config
// changes the meaning of a pf rule or a command.
func pfIfname(what, name string, optional bool) error {
	if name == "" && optional {
		return nil
	}
	ok := name != "" && len(name) <= 15 && (name[0] >= 'a' && name[0] <= 'z' || name[0] >= 'A' && name[0] <= 'Z')
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.') {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("nat: invalid %s name %q (letters, digits, '_' or '.')", what, name)
	}
	return nil
}

// renderPFNAT is the anchor ruleset: translation rules first (pf requires
// that order), then the filter rules.
func renderPFNAT(cfg Config, out4, out6, anchor string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# mirage NAT (anchor %s)\n", anchor)
	var egress []string
	if cfg.TunnelV4.IsValid() && out4 != "" {
		fmt.Fprintf(&b, "nat on %s inet from %s to any tag MIRAGE_NAT -> (%s)\n", out4, cfg.TunnelV4.Masked(), out4)
		egress = append(egress, out4)
	}
	if cfg.TunnelV6.IsValid() && out6 != "" {
		fmt.Fprintf(&b, "nat on %s inet6 from %s to any tag MIRAGE_NAT -> (%s)\n", out6, cfg.TunnelV6.Masked(), out6)
		if out6 != out4 {
			egress = append(egress, out6)
		}
	}
	fmt.Fprintf(&b, "pass in quick on %s all\n", cfg.TunInterface)
	fmt.Fprintf(&b, "pass out quick on %s all\n", cfg.TunInterface)
	for _, e := range egress {
		fmt.Fprintf(&b, "pass out quick on %s all tagged MIRAGE_NAT\n", e)
	}
	return b.String()
}

// pfDefaultIface is the interface of the family's default route.
func pfDefaultIface(sys pfNATSys, v6 bool) (string, error) {
	fam := "-inet"
	if v6 {
		fam = "-inet6"
	}
	out, err := sys.run("", "route", "-n", "get", fam, "default")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "interface" {
			name := strings.TrimSpace(v)
			if err := pfIfname("default route interface", name, false); err != nil {
				return "", err
			}
			return name, nil
		}
	}
	return "", errors.New("no interface in route output")
}

// pfClean drops pfctl's ALTQ chatter and blank lines.
func pfClean(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) != "" && !strings.Contains(l, "ALTQ") {
			keep = append(keep, strings.TrimSpace(l))
		}
	}
	return strings.Join(keep, "\n")
}

// pfNATReference makes sure the main ruleset evaluates root/* for
// translation and filtering; an empty one gets just the references, a
// non-empty one without them is an error naming the lines to add.
func pfNATReference(sys pfNATSys, fl pfNATFlavor) error {
	rulesOut, err := sys.run("", "pfctl", "-s", "rules")
	if err != nil && fl.name == "freebsd" {
		if _, kerr := sys.run("", "kldload", "-n", "pf"); kerr != nil {
			return fmt.Errorf("load pf: %w", errors.Join(err, kerr))
		}
		rulesOut, err = sys.run("", "pfctl", "-s", "rules")
	}
	if err != nil {
		return fmt.Errorf("read pf rules: %w", err)
	}
	natOut, err := sys.run("", "pfctl", "-s", "nat")
	if err != nil {
		return fmt.Errorf("read pf nat rules: %w", err)
	}
	rulesOut, natOut = pfClean(rulesOut), pfClean(natOut)
	has := func(out, kind string) bool {
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, fmt.Sprintf("%s %q", kind, fl.root+"/*")) {
				return true
			}
		}
		return false
	}
	if has(rulesOut, "anchor") && has(natOut, "nat-anchor") {
		return nil
	}
	refs := fmt.Sprintf("nat-anchor %q\nrdr-anchor %q\nanchor %q\n", fl.root+"/*", fl.root+"/*", fl.root+"/*")
	if rulesOut != "" || natOut != "" {
		return fmt.Errorf("the loaded pf ruleset does not evaluate mirage's anchors; add these lines to /etc/pf.conf and reload it with pfctl -f /etc/pf.conf:\n%s", refs)
	}
	if _, err := sys.run(refs, "pfctl", "-f", "-"); err != nil {
		return fmt.Errorf("load pf anchor references: %w", err)
	}
	return nil
}

func (n *pfNAT) save() error {
	b, err := json.Marshal(n.st)
	if err != nil {
		return err
	}
	if err := n.sys.writeFile(pfNATStatePath, b, 0o600); err != nil {
		return fmt.Errorf("nat: write %s: %w", pfNATStatePath, err)
	}
	return nil
}

// pfNATSetup installs the NAT anchor, enables forwarding and pf.
func pfNATSetup(log *slog.Logger, sys pfNATSys, fl pfNATFlavor, cfg Config) (*pfNAT, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	switch cfg.Backend {
	case "", "auto":
	default:
		return nil, fmt.Errorf("nat: backend %q is not available on %s; use auto (pf)", cfg.Backend, fl.name)
	}
	for _, c := range []struct {
		what, name string
		optional   bool
	}{{"tun interface", cfg.TunInterface, false}, {"ipv4 interface", cfg.IPv4Interface, true}, {"ipv6 interface", cfg.IPv6Interface, true}} {
		if err := pfIfname(c.what, c.name, c.optional); err != nil {
			return nil, err
		}
	}
	if err := pfNATCleanup(log, sys, fl); err != nil {
		return nil, err
	}
	out4, out6 := cfg.IPv4Interface, cfg.IPv6Interface
	if cfg.TunnelV4.IsValid() && out4 == "" {
		var err error
		if out4, err = pfDefaultIface(sys, false); err != nil {
			return nil, fmt.Errorf("nat: no ipv4 interface given and no IPv4 default route: %w", err)
		}
	}
	if cfg.TunnelV6.IsValid() && out6 == "" {
		var err error
		if out6, err = pfDefaultIface(sys, true); err != nil {
			log.Warn("no IPv6 default route; IPv6 tunnel traffic is not translated", "err", err)
			out6 = ""
		}
	}
	text := renderPFNAT(cfg, out4, out6, fl.anchor)
	if err := pfNATReference(sys, fl); err != nil {
		return nil, fmt.Errorf("nat: %w", err)
	}
	n := &pfNAT{log: log, sys: sys, fl: fl}
	// The state file exists before the first change.
	if err := n.save(); err != nil {
		return nil, err
	}
	fail := func(err error) (*pfNAT, error) {
		if cerr := n.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	if _, err := sys.run(text, "pfctl", "-a", fl.anchor, "-f", "-"); err != nil {
		return fail(fmt.Errorf("nat: load pf anchor %s: %w", fl.anchor, err))
	}
	var want []string
	if cfg.TunnelV4.IsValid() {
		want = append(want, sysctlV4Forward)
	}
	if cfg.TunnelV6.IsValid() {
		want = append(want, sysctlV6Forward)
	}
	for _, name := range want {
		old, err := sys.run("", "sysctl", "-n", name)
		if err != nil {
			return fail(fmt.Errorf("nat: read %s: %w", name, err))
		}
		old = strings.TrimSpace(old)
		if old != "0" && old != "1" {
			return fail(fmt.Errorf("nat: unexpected value %q of %s", old, name))
		}
		n.st.Sysctls = append(n.st.Sysctls, pfNATSysctlWas{Name: name, Old: old})
		if err := n.save(); err != nil {
			return fail(err)
		}
		if _, err := sys.run("", "sysctl", name+"=1"); err != nil {
			return fail(fmt.Errorf("nat: enable forwarding (%s): %w", name, err))
		}
	}
	if err := n.turnOn(); err != nil {
		return fail(fmt.Errorf("nat: enable pf: %w", err))
	}
	log.Info("nat installed", "anchor", fl.anchor, "rules", text)
	return n, nil
}

// turnOn enables pf, recording how.
func (n *pfNAT) turnOn() error {
	if n.fl.tokens {
		out, err := n.sys.run("", "pfctl", "-E")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(out, "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "Token" {
				if v = strings.TrimSpace(v); v != "" && strings.Trim(v, "0123456789") == "" {
					n.st.Token = v
					return n.save()
				}
			}
		}
		return fmt.Errorf("no enable token in pfctl -E output %q", out)
	}
	info, err := n.sys.run("", "pfctl", "-s", "info")
	if err != nil {
		return err
	}
	if strings.Contains(info, "Status: Enabled") {
		return nil
	}
	n.st.EnabledPF = true
	if err := n.save(); err != nil {
		return err
	}
	_, err = n.sys.run("", "pfctl", "-e")
	return err
}

// close flushes the anchor, restores the sysctls and releases pf.
func (n *pfNAT) close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	var errs []error
	if _, err := n.sys.run("", "pfctl", "-a", n.fl.anchor, "-F", "all"); err != nil {
		errs = append(errs, fmt.Errorf("flush pf anchor %s: %w", n.fl.anchor, err))
	}
	for i := len(n.st.Sysctls) - 1; i >= 0; i-- {
		s := n.st.Sysctls[i]
		if (s.Name != sysctlV4Forward && s.Name != sysctlV6Forward) || (s.Old != "0" && s.Old != "1") {
			errs = append(errs, fmt.Errorf("bad sysctl %s=%q in %s", s.Name, s.Old, pfNATStatePath))
			continue
		}
		if _, err := n.sys.run("", "sysctl", s.Name+"="+s.Old); err != nil {
			errs = append(errs, fmt.Errorf("restore %s: %w", s.Name, err))
		}
	}
	switch {
	case n.st.Token != "" && strings.Trim(n.st.Token, "0123456789") == "":
		if _, err := n.sys.run("", "pfctl", "-X", n.st.Token); err != nil {
			errs = append(errs, fmt.Errorf("release pf enable token: %w", err))
		}
	case n.st.EnabledPF:
		if _, err := n.sys.run("", "pfctl", "-d"); err != nil {
			errs = append(errs, fmt.Errorf("disable pf: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("nat: remove: %w", err)
	}
	if err := n.sys.removeFile(pfNATStatePath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("nat: remove %s: %w", pfNATStatePath, err)
	}
	n.log.Info("nat removed", "anchor", n.fl.anchor)
	return nil
}

// pfNATCleanup undoes a crashed run: from the state file when there is
// one, else just a non-empty anchor. Nothing left is not an error.
func pfNATCleanup(log *slog.Logger, sys pfNATSys, fl pfNATFlavor) error {
	n := &pfNAT{log: log, sys: sys, fl: fl}
	b, err := sys.readFile(pfNATStatePath)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &n.st); err != nil {
			return fmt.Errorf("nat: parse %s: %w", pfNATStatePath, err)
		}
	case errors.Is(err, fs.ErrNotExist):
		natOut, err1 := sys.run("", "pfctl", "-a", fl.anchor, "-s", "nat")
		rulesOut, err2 := sys.run("", "pfctl", "-a", fl.anchor, "-s", "rules")
		if err1 != nil || err2 != nil || (pfClean(natOut) == "" && pfClean(rulesOut) == "") {
			return nil // nothing there (or no pf at all)
		}
	default:
		return fmt.Errorf("nat: read %s: %w", pfNATStatePath, err)
	}
	log.Info("removing leftover nat", "anchor", fl.anchor)
	return n.close()
}
