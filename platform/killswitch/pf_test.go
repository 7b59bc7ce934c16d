package killswitch

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The -update flag rewrites golden files; whichever test file of the
// package registers it first wins.
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files")
	}
}

func pfGolden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", "pf", name+".golden")
	if f := flag.Lookup("update"); f != nil && f.Value.String() == "true" {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", p, got, want)
	}
}

func pfDiscard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fakePF is pf (main ruleset, anchors, enable state) plus the state file
// and the LAN subnets, recording every command.
type fakePF struct {
	t        *testing.T
	fl       pfFlavor
	loaded   bool // FreeBSD: pf.ko
	main     []string
	anchors  map[string]string
	enabled  bool
	tokens   map[string]bool
	next     int
	files    map[string][]byte
	lanNets  []netip.Prefix
	log      []string
	failLoad bool
}

// macOSDefaultRules is what the stock /etc/pf.conf loads.
var macOSDefaultRules = []string{
	`scrub-anchor "com.apple/*" all fragment reassemble`,
	`anchor "com.apple/*" all`,
}

func newFakePF(t *testing.T, fl pfFlavor) *fakePF {
	f := &fakePF{t: t, fl: fl, loaded: true, anchors: map[string]string{}, tokens: map[string]bool{}, next: 1000,
		files: map[string][]byte{}, lanNets: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("fd00:1::/64")}}
	if fl.name == "darwin" {
		f.main = slices.Clone(macOSDefaultRules)
	} else {
		f.loaded = false
	}
	return f
}

// state is everything Disable must restore.
func (f *fakePF) state() string {
	var l []string
	l = append(l, fmt.Sprintf("loaded %v enabled %v tokens %d", f.loaded, f.enabled, len(f.tokens)))
	l = append(l, f.main...)
	for a, r := range f.anchors {
		if r != "" {
			l = append(l, "anchor "+a+": "+strconv.Quote(r))
		}
	}
	for p, b := range f.files {
		l = append(l, "file "+p+" "+string(b))
	}
	sort.Strings(l[1:])
	return strings.Join(l, "\n") + "\n"
}

func (f *fakePF) takeLog() string {
	s := strings.Join(f.log, "\n") + "\n"
	f.log = nil
	return s
}

func (f *fakePF) run(stdin, name string, args ...string) (string, error) {
	line := strings.Join(append([]string{"$", name}, args...), " ")
	if stdin != "" {
		for _, l := range strings.Split(strings.TrimSuffix(stdin, "\n"), "\n") {
			line += "\n  | " + l
		}
	}
	f.log = append(f.log, line)
	fail := func(msg string) (string, error) { return msg, errors.New(msg) }
	if name == "kldload" && slices.Equal(args, []string{"-n", "pf"}) && f.fl.name == "freebsd" {
		f.loaded = true
		return "", nil
	}
	if name != "pfctl" {
		f.t.Errorf("fake: unexpected command %s %q", name, args)
		return fail("not found")
	}
	if !f.loaded {
		return fail("pfctl: /dev/pf: No such file or directory")
	}
	noise := "No ALTQ support in kernel\nALTQ related functions disabled\n"
	switch {
	case slices.Equal(args, []string{"-s", "rules"}):
		var out []string
		for _, r := range f.main {
			if !strings.HasPrefix(r, "nat-anchor") && !strings.HasPrefix(r, "rdr-anchor") {
				out = append(out, r)
			}
		}
		return noise + strings.Join(out, "\n"), nil
	case slices.Equal(args, []string{"-s", "nat"}):
		var out []string
		for _, r := range f.main {
			if strings.HasPrefix(r, "nat-anchor") || strings.HasPrefix(r, "rdr-anchor") {
				out = append(out, r)
			}
		}
		return noise + strings.Join(out, "\n"), nil
	case slices.Equal(args, []string{"-s", "info"}):
		if f.enabled {
			return "Status: Enabled for 0 days 00:00:01           Debug: Urgent\n", nil
		}
		return "Status: Disabled for 0 days 00:00:00          Debug: Urgent\n", nil
	case slices.Equal(args, []string{"-f", "-"}):
		f.main = nil
		for _, l := range strings.Split(strings.TrimSpace(stdin), "\n") {
			f.main = append(f.main, l+" all")
		}
		return noise, nil
	case len(args) == 4 && args[0] == "-a" && args[2] == "-f" && args[3] == "-":
		if f.failLoad {
			return fail("pfctl: Syntax error in config file: pf rules not loaded")
		}
		for _, l := range strings.Split(strings.TrimSpace(stdin), "\n") {
			if !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, "pass ") && !strings.HasPrefix(l, "block ") {
				f.t.Errorf("fake: not a filter rule: %q", l)
			}
		}
		f.anchors[args[1]] = stdin
		return noise, nil
	case len(args) == 4 && args[0] == "-a" && args[2] == "-s" && args[3] == "rules":
		var out []string
		for _, l := range strings.Split(f.anchors[args[1]], "\n") {
			if l != "" && !strings.HasPrefix(l, "#") {
				out = append(out, l)
			}
		}
		return noise + strings.Join(out, "\n"), nil
	case len(args) == 4 && args[0] == "-a" && args[2] == "-F" && args[3] == "rules":
		delete(f.anchors, args[1])
		return "rules cleared\n", nil
	case slices.Equal(args, []string{"-E"}) && f.fl.tokens:
		f.enabled = true
		f.next++
		tok := strconv.Itoa(f.next)
		f.tokens[tok] = true
		return "pf enabled\nToken : " + tok + "\n", nil
	case len(args) == 2 && args[0] == "-X" && f.fl.tokens:
		if !f.tokens[args[1]] {
			return fail("pfctl: Invalid token")
		}
		delete(f.tokens, args[1])
		if len(f.tokens) == 0 {
			f.enabled = false
		}
		return "pf disabled\n", nil
	case slices.Equal(args, []string{"-e"}) && !f.fl.tokens:
		if f.enabled {
			return fail("pfctl: pf already enabled")
		}
		f.enabled = true
		return "pf enabled\n", nil
	case slices.Equal(args, []string{"-d"}) && !f.fl.tokens:
		f.enabled = false
		return "pf disabled\n", nil
	}
	f.t.Errorf("fake: unexpected pfctl %q", args)
	return fail("usage")
}

func (f *fakePF) readFile(path string) ([]byte, error) {
	if b, ok := f.files[path]; ok {
		return slices.Clone(b), nil
	}
	return nil, fs.ErrNotExist
}

func (f *fakePF) writeFile(path string, data []byte, mode fs.FileMode) error {
	if mode != 0o600 {
		f.t.Errorf("state file mode %v, want 0600", mode)
	}
	f.log = append(f.log, fmt.Sprintf("# write %s %s", path, data))
	f.files[path] = slices.Clone(data)
	return nil
}

func (f *fakePF) removeFile(path string) error {
	f.log = append(f.log, "# remove "+path)
	if _, ok := f.files[path]; !ok {
		return fs.ErrNotExist
	}
	delete(f.files, path)
	return nil
}

func (f *fakePF) lans(tun string) ([]netip.Prefix, error) { return f.lanNets, nil }

var pfCases = []struct {
	name string
	cfg  Config
}{
	{"plain", Config{TunInterface: "utun3", Servers: []netip.AddrPort{netip.MustParseAddrPort("203.0.113.9:443")}}},
	{"allow_lan", Config{TunInterface: "utun3", Servers: []netip.AddrPort{netip.MustParseAddrPort("203.0.113.9:443")}, AllowLAN: true}},
	{"v6_servers", Config{TunInterface: "utun3", Servers: []netip.AddrPort{
		netip.MustParseAddrPort("203.0.113.9:443"), netip.MustParseAddrPort("[fd00:3::9]:8443")}}},
	{"dns", Config{TunInterface: "utun3", Servers: []netip.AddrPort{netip.MustParseAddrPort("203.0.113.9:443")},
		DNS: []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("fd00:2::53")}}},
	{"dns_allow_lan", Config{TunInterface: "utun3", Servers: []netip.AddrPort{netip.MustParseAddrPort("203.0.113.9:443")},
		DNS: []netip.Addr{netip.MustParseAddr("192.0.2.53")}, AllowLAN: true}},
}

// TestPFGolden renders Enable and Disable per OS and case, and checks that
// Disable restores pf exactly (the default macOS ruleset is kept; FreeBSD's
// empty pf gets the anchor references, which stay).
func TestPFGolden(t *testing.T) {
	for _, fl := range []pfFlavor{pfDarwin, pfFreeBSD} {
		for _, tc := range pfCases {
			t.Run(fl.name+"/"+tc.name, func(t *testing.T) {
				f := newFakePF(t, fl)
				base := f.state()
				if err := pfEnable(pfDiscard(), f, fl, tc.cfg); err != nil {
					t.Fatalf("Enable: %v\n%s", err, f.takeLog())
				}
				out := "## Enable\n" + f.takeLog()
				if on, err := pfActive(f, fl); !on || err != nil || !f.enabled {
					t.Fatalf("Active = %v, %v; pf enabled %v", on, err, f.enabled)
				}
				// Enabling again replaces the rules without a second reference.
				if err := pfEnable(pfDiscard(), f, fl, tc.cfg); err != nil {
					t.Fatal(err)
				}
				if len(f.tokens) > 1 {
					t.Errorf("second Enable took another pf reference")
				}
				f.takeLog()
				if err := pfDisable(pfDiscard(), f, fl); err != nil {
					t.Fatalf("Disable: %v", err)
				}
				out += "## Disable\n" + f.takeLog()
				want := base
				if fl.name == "freebsd" {
					want = strings.Replace(want, "loaded false", "loaded true", 1) +
						"anchor \"mirage/*\" all\nnat-anchor \"mirage/*\" all\nrdr-anchor \"mirage/*\" all\n"
				}
				if got := f.state(); got != want {
					t.Errorf("after Disable:\n%s\nwant:\n%s", got, want)
				}
				if on, err := pfActive(f, fl); on || err != nil {
					t.Errorf("Active after Disable = %v, %v", on, err)
				}
				if err := pfDisable(pfDiscard(), f, fl); err != nil || strings.Contains(f.takeLog(), "-F") {
					t.Errorf("second Disable: %v", err)
				}
				pfGolden(t, fl.name+"-"+tc.name, out)
			})
		}
	}
}

// TestPFSurvivesCrash: for every golden case on both OSes, the rules stay
// in pf when the process dies (the block is still in place: the anchor
// holds exactly the case's ruleset, it is referenced from the main ruleset
// and pf is on); a later process's Disable (from the state file) removes
// them and releases pf, back to the initial state. FreeBSD is run from an
// empty, unloaded pf, where the anchor references mirage loaded stay after
// Disable (as TestPFGolden accepts), and from a pf.conf that already has
// the reference, where Disable restores pf exactly.
func TestPFSurvivesCrash(t *testing.T) {
	type start struct {
		name string
		prep func(f *fakePF)
		// leftover is what Disable leaves beyond the initial state.
		leftover func(base string) string
	}
	exact := func(base string) string { return base }
	starts := map[string][]start{
		"darwin": {{name: "stock", prep: func(*fakePF) {}, leftover: exact}},
		"freebsd": {
			{name: "empty", prep: func(*fakePF) {}, leftover: func(base string) string {
				return strings.Replace(base, "loaded false", "loaded true", 1) +
					"anchor \"mirage/*\" all\nnat-anchor \"mirage/*\" all\nrdr-anchor \"mirage/*\" all\n"
			}},
			{name: "referenced", prep: func(f *fakePF) {
				f.loaded = true
				f.main = []string{`anchor "mirage/*" all`}
			}, leftover: exact},
		},
	}
	for _, fl := range []pfFlavor{pfDarwin, pfFreeBSD} {
		for _, st := range starts[fl.name] {
			for _, tc := range pfCases {
				t.Run(fl.name+"/"+st.name+"/"+tc.name, func(t *testing.T) {
					f := newFakePF(t, fl)
					st.prep(f)
					base := f.state()
					if err := pfEnable(pfDiscard(), f, fl, tc.cfg); err != nil {
						t.Fatalf("Enable: %v\n%s", err, f.takeLog())
					}
					// The crash: no Disable. A new process has nothing in
					// memory, only pf and the state file.
					f.takeLog()
					pfCheckBlocking(t, f, fl, tc.cfg)
					if on, err := pfActive(f, fl); !on || err != nil {
						t.Fatalf("kill switch not active after the process died: %v %v", on, err)
					}
					if err := pfDisable(pfDiscard(), f, fl); err != nil {
						t.Fatalf("Disable: %v\n%s", err, f.takeLog())
					}
					if got, want := f.state(), st.leftover(base); got != want {
						t.Errorf("after Disable:\n%s\nwant:\n%s\ncommands:\n%s", got, want, f.takeLog())
					}
					if on, err := pfActive(f, fl); on || err != nil {
						t.Errorf("Active after Disable = %v, %v", on, err)
					}
				})
			}
		}
	}
}

// pfCheckBlocking checks that pf (as a crashed process left it) holds the
// kill switch for cfg: pf is on and its state file recorded, the main
// ruleset evaluates the anchor, the anchor holds exactly cfg's ruleset and
// that ruleset blocks the outside while passing the server and the tunnel.
func pfCheckBlocking(t *testing.T, f *fakePF, fl pfFlavor, cfg Config) {
	t.Helper()
	if !f.enabled {
		t.Error("pf is not enabled")
	}
	if _, ok := f.files[pfStatePath]; !ok {
		t.Errorf("no %s: a new process could not release pf", pfStatePath)
	}
	if !slices.Contains(f.main, `anchor "`+fl.root+`/*" all`) {
		t.Errorf("the main ruleset does not evaluate the anchor: %q", f.main)
	}
	var lans []netip.Prefix
	if cfg.AllowLAN {
		lans = f.lanNets
	}
	got := f.anchors[fl.anchor]
	if want := renderPF(rules(cfg, lans), fl.anchor); got != want {
		t.Fatalf("anchor %s after the crash:\n%s\nwant:\n%s", fl.anchor, got, want)
	}
	a := netip.MustParseAddr
	srv := cfg.Servers[0]
	for _, p := range []struct {
		pkt  pfPacket
		pass bool
	}{
		{pfPacket{oif: "en0", dst: a("203.0.113.10"), proto: "tcp", sport: 40000, dport: 443}, false},
		{pfPacket{oif: "en0", dst: a("fd00:9::1"), proto: "tcp", sport: 40000, dport: 443}, false},
		{pfPacket{oif: "en0", dst: a("203.0.113.10"), proto: "udp", sport: 40000, dport: 53}, false},
		{pfPacket{oif: "en0", dst: srv.Addr(), proto: "udp", sport: 40000, dport: srv.Port()}, true},
		{pfPacket{oif: cfg.TunInterface, dst: a("203.0.113.10"), proto: "tcp", sport: 40000, dport: 443}, true},
		{pfPacket{oif: "en0", dst: a("198.51.100.7"), proto: "tcp", sport: 40000, dport: 445}, cfg.AllowLAN},
	} {
		if pass := pfDecide(t, got, p.pkt); pass != p.pass {
			t.Errorf("after the crash: out on %s to %s %s port %d: pass=%v, want %v", p.pkt.oif, p.pkt.dst, p.pkt.proto, p.pkt.dport, pass, p.pass)
		}
	}
}

// TestPFKeepsOthersPF: pf enabled by someone else stays enabled after
// Disable (macOS: reference counting; FreeBSD: mirage did not switch it on).
func TestPFKeepsOthersPF(t *testing.T) {
	for _, fl := range []pfFlavor{pfDarwin, pfFreeBSD} {
		f := newFakePF(t, fl)
		f.loaded, f.enabled = true, true
		f.main = []string{`anchor "` + fl.root + `/*" all`, "pass out all"}
		if fl.tokens {
			f.tokens["7"] = true
		}
		base := f.state()
		if err := pfEnable(pfDiscard(), f, fl, pfCases[0].cfg); err != nil {
			t.Fatal(err)
		}
		if err := pfDisable(pfDiscard(), f, fl); err != nil {
			t.Fatal(err)
		}
		if got := f.state(); got != base || !f.enabled {
			t.Errorf("%s: after Disable:\n%s\nwant:\n%s", fl.name, got, base)
		}
	}
}

// TestPFForeignRuleset: rules without mirage's anchor reference are not
// rewritten; Enable fails, telling the user what to add.
func TestPFForeignRuleset(t *testing.T) {
	f := newFakePF(t, pfFreeBSD)
	f.loaded = true
	f.main = []string{"block in all", "pass out all"}
	base := f.state()
	err := pfEnable(pfDiscard(), f, pfFreeBSD, pfCases[0].cfg)
	if err == nil || !strings.Contains(err.Error(), `anchor "mirage/*"`) {
		t.Fatalf("Enable = %v", err)
	}
	if got := f.state(); got != base {
		t.Errorf("state changed:\n%s", got)
	}
	if err := pfDisable(pfDiscard(), f, pfFreeBSD); err != nil {
		t.Errorf("Disable with nothing installed: %v", err)
	}
	// No pf at all: Disable is a no-op, not an error.
	g := newFakePF(t, pfFreeBSD)
	if err := pfDisable(pfDiscard(), g, pfFreeBSD); err != nil || g.loaded {
		t.Errorf("Disable without pf: %v (loaded %v)", err, g.loaded)
	}
}

func TestPFRejectsBadInput(t *testing.T) {
	f := newFakePF(t, pfDarwin)
	for _, name := range []string{"utun3 }", "lo0{", "-x", "a#b", "utun3\tall"} {
		cfg := pfCases[0].cfg
		cfg.TunInterface = name
		if err := pfEnable(pfDiscard(), f, pfDarwin, cfg); err == nil || !strings.Contains(err.Error(), "interface name") {
			t.Errorf("Enable(%q) = %v", name, err)
		}
	}
	if len(f.log) != 0 {
		t.Errorf("commands ran: %q", f.log)
	}
	if _, err := pfParseToken("pf enabled\nToken : 12a\n"); err == nil {
		t.Error("bad token accepted")
	}
	if tok, err := pfParseToken("No ALTQ support in kernel\npf enabled\nToken : 18446744073709551615\n"); err != nil || tok != "18446744073709551615" {
		t.Errorf("token = %q, %v", tok, err)
	}
}

// pfPacket is an outgoing packet for the semantic comparison.
type pfPacket struct {
	oif          string
	dst          netip.Addr
	proto        string // tcp, udp, icmpv6, other
	sport, dport uint16
	icmpType     uint8
}

// modelDecide evaluates the output chain of the model: first match, then
// policy drop.
func modelDecide(chains []chain, p pfPacket) bool {
	for _, r := range chains[0].rules {
		oif := r.oif
		if oif == "lo" {
			oif = "lo0"
		}
		if (oif != "" && oif != p.oif) || (r.daddr.IsValid() && !r.daddr.Contains(p.dst)) ||
			(r.l4proto != "" && r.l4proto != p.proto) || (r.sport != 0 && r.sport != p.sport) ||
			(r.dport != 0 && r.dport != p.dport) || (r.l4proto == "icmpv6" && r.icmpType != p.icmpType) {
			continue
		}
		return r.verdict == "accept"
	}
	return false
}

// pfDecide evaluates the rendered pf ruleset (the subset renderPF emits):
// the first matching quick rule wins.
func pfDecide(t *testing.T, ruleset string, p pfPacket) bool {
	names := map[string]uint8{}
	for k, v := range pfICMP6Names {
		names[v] = k
	}
	for _, line := range strings.Split(ruleset, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		w := strings.Fields(line)
		pass := w[0] == "pass"
		i := 3
		if !pass {
			i = 4 // block drop out quick
		}
		match := true
		for i < len(w) {
			switch w[i] {
			case "on":
				match = match && w[i+1] == p.oif
				i += 2
			case "inet":
				match = match && p.dst.Is4()
				i++
			case "inet6":
				match = match && p.dst.Is6()
				i++
			case "proto":
				want := w[i+1]
				if want == "icmp6" {
					want = "icmpv6"
				}
				match = match && want == p.proto
				i += 2
			case "all":
				i++
			case "from":
				i += 2 // always "from any"
				if i < len(w) && w[i] == "port" {
					n, _ := strconv.Atoi(w[i+1])
					match = match && uint16(n) == p.sport
					i += 2
				}
			case "to":
				if w[i+1] != "any" {
					pr, err := netip.ParsePrefix(w[i+1])
					if err != nil {
						pr = netip.PrefixFrom(netip.MustParseAddr(w[i+1]), netip.MustParseAddr(w[i+1]).BitLen())
					}
					match = match && pr.Contains(p.dst)
				}
				i += 2
				if i < len(w) && w[i] == "port" {
					n, _ := strconv.Atoi(w[i+1])
					match = match && uint16(n) == p.dport
					i += 2
				}
			case "icmp6-type":
				match = match && names[w[i+1]] == p.icmpType
				i += 2
			default:
				t.Fatalf("pfDecide: unknown word %q in %q", w[i], line)
			}
		}
		if match {
			return pass
		}
	}
	t.Fatalf("no rule matched %+v (the ruleset must end with block drop out quick all)", p)
	return false
}

// TestPFSemantics: the pf rendering decides like the shared model for a
// spread of packets, in every case.
func TestPFSemantics(t *testing.T) {
	dsts := []string{"203.0.113.9", "203.0.113.10", "192.0.2.53", "198.51.100.7", "fd00:3::9", "fd00:2::53", "fd00:1::7", "fd00:9::1", "127.0.0.1"}
	var pkts []pfPacket
	for _, oif := range []string{"utun3", "en0", "lo0"} {
		for _, d := range dsts {
			for _, pp := range []struct {
				proto        string
				sport, dport uint16
			}{{"tcp", 40000, 443}, {"udp", 40000, 443}, {"udp", 40000, 53}, {"tcp", 40000, 853}, {"udp", 68, 67}, {"udp", 546, 547}, {"tcp", 40000, 8443}, {"other", 0, 0}} {
				pkts = append(pkts, pfPacket{oif: oif, dst: netip.MustParseAddr(d), proto: pp.proto, sport: pp.sport, dport: pp.dport})
			}
			if netip.MustParseAddr(d).Is6() {
				for _, ty := range []uint8{128, 133, 134, 135, 136} {
					pkts = append(pkts, pfPacket{oif: oif, dst: netip.MustParseAddr(d), proto: "icmpv6", icmpType: ty})
				}
			}
		}
	}
	lans := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("fd00:1::/64")}
	for _, tc := range pfCases {
		ch := rules(tc.cfg, lans)
		text := renderPF(ch, pfDarwin.anchor)
		passed := 0
		for _, p := range pkts {
			want := modelDecide(ch, p)
			if got := pfDecide(t, text, p); got != want {
				t.Errorf("%s: %+v: pf passes=%v, model accepts=%v", tc.name, p, got, want)
			}
			if want {
				passed++
			}
		}
		if passed == 0 || passed == len(pkts) {
			t.Errorf("%s: degenerate packet set (%d of %d pass)", tc.name, passed, len(pkts))
		}
	}
}
