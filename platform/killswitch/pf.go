package killswitch

// The pf kill switch of macOS and FreeBSD. It has no build tag: it drives pf
// only through pfSys (pfctl and a small state file), so it is golden-tested
// on Linux against a fake pf. killswitch_bsd.go supplies the real pfSys.
//
// The rules are the shared model of rules() rendered for pf: every rule is
// "quick" (pf is otherwise last-match), so the first matching rule wins as
// in nftables, and a final "block drop out quick all" is the policy drop.
// pf filters forwarded packets on their way out like local ones, so the
// output chain covers forwarding too (stricter than Linux: traffic from the
// tunnel can only be forwarded back into it or to the LAN).

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"strings"
)

// pfSys is the OS seam of the pf kill switch.
type pfSys interface {
	// run runs a command with stdin ("" for none) and returns its
	// combined output; a non-zero exit is an error.
	run(stdin, name string, args ...string) (string, error)
	readFile(path string) ([]byte, error)
	// writeFile replaces path atomically, creating its directory (0700).
	writeFile(path string, data []byte, mode fs.FileMode) error
	removeFile(path string) error
	// lans are the directly connected subnets of every interface but
	// loopback and tun.
	lans(tun string) ([]netip.Prefix, error)
}

// pfFlavor is what differs between macOS and FreeBSD.
type pfFlavor struct {
	name string
	// root is the anchor every mirage anchor lives under; the main
	// ruleset must evaluate root/* (macOS's default pf.conf does for
	// com.apple).
	root string
	// anchor is the kill switch's anchor.
	anchor string
	// tokens: macOS enables pf with a reference (pfctl -E / -X token);
	// FreeBSD has one global switch (pfctl -e / -d).
	tokens bool
}

var (
	pfDarwin  = pfFlavor{name: "darwin", root: "com.apple", anchor: "com.apple/mirage.killswitch", tokens: true}
	pfFreeBSD = pfFlavor{name: "freebsd", root: "mirage", anchor: "mirage/killswitch"}
)

// pfStatePath is where Enable records how it enabled pf, so Disable (even
// in a later process) undoes exactly that. /var/run is cleared at boot,
// like pf's runtime rules.
const pfStatePath = "/var/run/mirage/killswitch-pf.json"

// pfState is the content of pfStatePath.
type pfState struct {
	// Token is macOS's pf enable reference from pfctl -E.
	Token string `json:"token,omitempty"`
	// EnabledPF is set on FreeBSD when pf was disabled before Enable.
	EnabledPF bool `json:"enabled_pf,omitempty"`
}

// pfCheckIfname accepts only plain interface names, so nothing from the
// config can change the meaning of a pf rule.
func pfCheckIfname(name string) error {
	ok := name != "" && len(name) <= 15 && (name[0] >= 'a' && name[0] <= 'z' || name[0] >= 'A' && name[0] <= 'Z')
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.') {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("killswitch: invalid tun interface name %q for pf (letters, digits, '_' or '.')", name)
	}
	return nil
}

// pfICMP6Names are pf's names for ndTypes.
var pfICMP6Names = map[uint8]string{133: "routersol", 134: "routeradv", 135: "neighbrsol", 136: "neighbradv"}

// renderPF prints the output chain of the model as a pf anchor ruleset.
func renderPF(chains []chain, anchor string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# mirage kill switch (anchor %s): every rule is quick, so the first match wins.\n", anchor)
	for _, c := range chains {
		if c.name != "output" {
			continue
		}
		for _, r := range c.rules {
			b.WriteString(pfRule(r) + "\n")
		}
	}
	b.WriteString("block drop out quick all\n")
	return b.String()
}

// pfRule is one model rule in pf syntax.
func pfRule(r rule) string {
	w := []string{"pass out quick"}
	if r.verdict == "drop" {
		w = []string{"block drop out quick"}
	}
	if r.oif != "" {
		oif := r.oif
		if oif == "lo" {
			oif = "lo0"
		}
		w = append(w, "on", oif)
	}
	switch {
	case r.l4proto == "icmpv6":
		w = append(w, "inet6")
	case r.daddr.IsValid() && r.daddr.Addr().Is4():
		w = append(w, "inet")
	case r.daddr.IsValid():
		w = append(w, "inet6")
	}
	switch r.l4proto {
	case "tcp", "udp":
		w = append(w, "proto", r.l4proto)
	case "icmpv6":
		w = append(w, "proto", "icmp6")
	}
	if !r.daddr.IsValid() && r.sport == 0 && r.dport == 0 {
		w = append(w, "all")
	} else {
		w = append(w, "from", "any")
		if r.sport != 0 {
			w = append(w, "port", fmt.Sprint(r.sport))
		}
		w = append(w, "to")
		switch {
		case !r.daddr.IsValid():
			w = append(w, "any")
		case r.daddr.IsSingleIP():
			w = append(w, r.daddr.Addr().String())
		default:
			w = append(w, r.daddr.String())
		}
		if r.dport != 0 {
			w = append(w, "port", fmt.Sprint(r.dport))
		}
	}
	if r.l4proto == "icmpv6" {
		w = append(w, "icmp6-type", pfICMP6Names[r.icmpType])
	}
	return strings.Join(w, " ")
}

// pfOutput is command output without pfctl's ALTQ chatter.
func pfOutput(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) != "" && !strings.Contains(l, "ALTQ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// pfEnsureReference makes sure the main ruleset evaluates root/*. An
// empty main ruleset gets just the anchor references (nothing of the
// user's is lost); a non-empty one without them is an error telling the
// user what to add, because mirage does not rewrite someone else's rules.
func pfEnsureReference(sys pfSys, fl pfFlavor) error {
	rulesOut, err := sys.run("", "pfctl", "-s", "rules")
	if err != nil && fl.name == "freebsd" {
		// pf.ko may not be loaded yet.
		if _, kerr := sys.run("", "kldload", "-n", "pf"); kerr != nil {
			return fmt.Errorf("load pf: %w", errors.Join(err, kerr))
		}
		rulesOut, err = sys.run("", "pfctl", "-s", "rules")
	}
	if err != nil {
		return fmt.Errorf("read pf rules: %w", err)
	}
	ref := fmt.Sprintf("anchor %q", fl.root+"/*")
	for _, l := range strings.Split(pfOutput(rulesOut), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), ref) {
			return nil
		}
	}
	natOut, err := sys.run("", "pfctl", "-s", "nat")
	if err != nil {
		return fmt.Errorf("read pf nat rules: %w", err)
	}
	if pfOutput(rulesOut) != "" || pfOutput(natOut) != "" {
		return fmt.Errorf("the loaded pf ruleset does not evaluate mirage's anchors; add these lines to /etc/pf.conf and reload it with pfctl -f /etc/pf.conf:\n"+
			"nat-anchor %q\nrdr-anchor %q\nanchor %q", fl.root+"/*", fl.root+"/*", fl.root+"/*")
	}
	main := fmt.Sprintf("nat-anchor %q\nrdr-anchor %q\nanchor %q\n", fl.root+"/*", fl.root+"/*", fl.root+"/*")
	if _, err := sys.run(main, "pfctl", "-f", "-"); err != nil {
		return fmt.Errorf("load pf anchor references: %w", err)
	}
	return nil
}

func pfLoadState(sys pfSys) (pfState, bool, error) {
	b, err := sys.readFile(pfStatePath)
	if errors.Is(err, fs.ErrNotExist) {
		return pfState{}, false, nil
	}
	if err != nil {
		return pfState{}, false, fmt.Errorf("read %s: %w", pfStatePath, err)
	}
	var st pfState
	if err := json.Unmarshal(b, &st); err != nil {
		return pfState{}, false, fmt.Errorf("parse %s: %w", pfStatePath, err)
	}
	return st, true, nil
}

func pfSaveState(sys pfSys, st pfState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := sys.writeFile(pfStatePath, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", pfStatePath, err)
	}
	return nil
}

// pfParseToken finds "Token : N" in the output of pfctl -E.
func pfParseToken(out string) (string, error) {
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok || strings.TrimSpace(k) != "Token" {
			continue
		}
		v = strings.TrimSpace(v)
		if v != "" && strings.Trim(v, "0123456789") == "" {
			return v, nil
		}
	}
	return "", fmt.Errorf("no enable token in pfctl -E output %q", out)
}

// pfEnable installs the ruleset for cfg into the anchor and makes sure pf
// is enabled. Calling it again replaces the ruleset atomically (pfctl -f
// loads an anchor in one transaction).
func pfEnable(log *slog.Logger, sys pfSys, fl pfFlavor, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	if err := pfCheckIfname(cfg.TunInterface); err != nil {
		return err
	}
	var lans []netip.Prefix
	if cfg.AllowLAN {
		var err error
		if lans, err = sys.lans(cfg.TunInterface); err != nil {
			return fmt.Errorf("killswitch: list local subnets: %w", err)
		}
	}
	text := renderPF(rules(cfg, lans), fl.anchor)
	if err := pfEnsureReference(sys, fl); err != nil {
		return fmt.Errorf("killswitch: %w", err)
	}
	if _, err := sys.run(text, "pfctl", "-a", fl.anchor, "-f", "-"); err != nil {
		return fmt.Errorf("killswitch: load pf anchor %s: %w", fl.anchor, err)
	}
	if err := pfTurnOn(sys, fl); err != nil {
		return fmt.Errorf("killswitch: enable pf: %w", err)
	}
	log.Info("kill switch enabled", "anchor", fl.anchor, "rules", text)
	return nil
}

// pfTurnOn enables pf once, recording how (token or "we switched it on").
func pfTurnOn(sys pfSys, fl pfFlavor) error {
	if _, ok, err := pfLoadState(sys); err != nil || ok {
		return err
	}
	if fl.tokens {
		out, err := sys.run("", "pfctl", "-E")
		if err != nil {
			return err
		}
		tok, err := pfParseToken(out)
		if err != nil {
			return err
		}
		return pfSaveState(sys, pfState{Token: tok})
	}
	info, err := sys.run("", "pfctl", "-s", "info")
	if err != nil {
		return err
	}
	if strings.Contains(info, "Status: Enabled") {
		return pfSaveState(sys, pfState{})
	}
	// Recorded first: a crash right after pfctl -e must still undo it.
	if err := pfSaveState(sys, pfState{EnabledPF: true}); err != nil {
		return err
	}
	_, err = sys.run("", "pfctl", "-e")
	return err
}

// pfAnchorRules is the anchor's filter ruleset ("" when empty or when pf
// cannot be asked, e.g. pf.ko not loaded).
func pfAnchorRules(sys pfSys, anchor string) (string, error) {
	out, err := sys.run("", "pfctl", "-a", anchor, "-s", "rules")
	if err != nil {
		return "", err
	}
	return pfOutput(out), nil
}

// pfDisable flushes the anchor and releases pf the way pfEnable took it.
// Nothing installed is not an error.
func pfDisable(log *slog.Logger, sys pfSys, fl pfFlavor) error {
	st, hasState, err := pfLoadState(sys)
	if err != nil {
		return fmt.Errorf("killswitch: %w", err)
	}
	loaded, rerr := pfAnchorRules(sys, fl.anchor)
	if rerr != nil && !hasState {
		return nil // pf unavailable and never enabled by mirage
	}
	if loaded != "" {
		if _, err := sys.run("", "pfctl", "-a", fl.anchor, "-F", "rules"); err != nil {
			return fmt.Errorf("killswitch: flush pf anchor %s: %w", fl.anchor, err)
		}
	}
	if hasState {
		switch {
		case st.Token != "":
			if strings.Trim(st.Token, "0123456789") != "" {
				return fmt.Errorf("killswitch: bad pf token %q in %s", st.Token, pfStatePath)
			}
			if _, err := sys.run("", "pfctl", "-X", st.Token); err != nil {
				return fmt.Errorf("killswitch: release pf enable token: %w", err)
			}
		case st.EnabledPF:
			if _, err := sys.run("", "pfctl", "-d"); err != nil {
				return fmt.Errorf("killswitch: disable pf: %w", err)
			}
		}
		if err := sys.removeFile(pfStatePath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("killswitch: remove %s: %w", pfStatePath, err)
		}
	}
	if loaded != "" || hasState {
		log.Info("kill switch disabled", "anchor", fl.anchor)
	}
	return nil
}

// pfActive reports whether the kill switch anchor holds rules.
func pfActive(sys pfSys, fl pfFlavor) (bool, error) {
	loaded, err := pfAnchorRules(sys, fl.anchor)
	if err != nil {
		return false, fmt.Errorf("killswitch: read pf anchor %s: %w", fl.anchor, err)
	}
	return loaded != "", nil
}
