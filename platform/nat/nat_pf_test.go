package nat

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

func pfNATGolden(t *testing.T, name, got string) {
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

// fakePFNAT is pf, sysctl and the default routes of a server.
type fakePFNAT struct {
	t       *testing.T
	fl      pfNATFlavor
	loaded  bool
	main    []string
	anchors map[string]string
	enabled bool
	tokens  map[string]bool
	sysctl  map[string]string
	def6    bool // an IPv6 default route exists
	files   map[string][]byte
	failOn  string // a command line prefix that fails
	log     []string
}

func newFakePFNAT(t *testing.T, fl pfNATFlavor) *fakePFNAT {
	f := &fakePFNAT{t: t, fl: fl, loaded: true, anchors: map[string]string{}, tokens: map[string]bool{},
		sysctl: map[string]string{sysctlV4Forward: "0", sysctlV6Forward: "1"}, def6: true, files: map[string][]byte{}}
	if fl.name == "darwin" {
		f.main = []string{`nat-anchor "com.apple/*" all`, `rdr-anchor "com.apple/*" all`, `anchor "com.apple/*" all`}
	} else {
		f.loaded = false
	}
	return f
}

func (f *fakePFNAT) state() string {
	l := []string{fmt.Sprintf("loaded %v enabled %v tokens %d", f.loaded, f.enabled, len(f.tokens))}
	l = append(l, f.main...)
	for a, r := range f.anchors {
		l = append(l, "anchor "+a+": "+strconv.Quote(r))
	}
	for k, v := range f.sysctl {
		l = append(l, k+"="+v)
	}
	for p, b := range f.files {
		l = append(l, "file "+p+" "+string(b))
	}
	sort.Strings(l[1:])
	return strings.Join(l, "\n") + "\n"
}

func (f *fakePFNAT) takeLog() string {
	s := strings.Join(f.log, "\n") + "\n"
	f.log = nil
	return s
}

func (f *fakePFNAT) run(stdin, name string, args ...string) (string, error) {
	line := strings.Join(append([]string{"$", name}, args...), " ")
	if stdin != "" {
		for _, l := range strings.Split(strings.TrimSuffix(stdin, "\n"), "\n") {
			line += "\n  | " + l
		}
	}
	f.log = append(f.log, line)
	fail := func(msg string) (string, error) { return msg, errors.New(msg) }
	if f.failOn != "" && strings.HasPrefix(line, f.failOn) {
		return fail("injected failure")
	}
	switch {
	case name == "kldload" && slices.Equal(args, []string{"-n", "pf"}):
		f.loaded = true
		return "", nil
	case name == "route" && len(args) == 4 && args[1] == "get" && args[3] == "default":
		if args[2] == "-inet6" && !f.def6 {
			return fail("route: writing to routing socket: not in table")
		}
		gw := "198.51.100.1"
		if args[2] == "-inet6" {
			gw = "fe80::1%vtnet0"
		}
		return fmt.Sprintf("   route to: default\ndestination: default\n       mask: default\n    gateway: %s\n  interface: vtnet0\n      flags: <UP,GATEWAY,DONE,STATIC>\n", gw), nil
	case name == "sysctl" && len(args) == 2 && args[0] == "-n":
		v, ok := f.sysctl[args[1]]
		if !ok {
			return fail("sysctl: unknown oid")
		}
		return v + "\n", nil
	case name == "sysctl" && len(args) == 1 && strings.Contains(args[0], "="):
		k, v, _ := strings.Cut(args[0], "=")
		if _, ok := f.sysctl[k]; !ok {
			return fail("sysctl: unknown oid")
		}
		f.sysctl[k] = v
		return "", nil
	case name != "pfctl":
		f.t.Errorf("fake: unexpected command %s %q", name, args)
		return fail("not found")
	case !f.loaded:
		return fail("pfctl: /dev/pf: No such file or directory")
	}
	noise := "No ALTQ support in kernel\nALTQ related functions disabled\n"
	filter := func(text string, nat bool) string {
		var out []string
		for _, l := range strings.Split(text, "\n") {
			isNat := strings.HasPrefix(l, "nat") || strings.HasPrefix(l, "rdr")
			if l != "" && !strings.HasPrefix(l, "#") && isNat == nat {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\n")
	}
	switch {
	case slices.Equal(args, []string{"-s", "rules"}):
		return noise + filter(strings.Join(f.main, "\n"), false), nil
	case slices.Equal(args, []string{"-s", "nat"}):
		return noise + filter(strings.Join(f.main, "\n"), true), nil
	case slices.Equal(args, []string{"-s", "info"}):
		if f.enabled {
			return "Status: Enabled for 0 days 00:00:01\n", nil
		}
		return "Status: Disabled for 0 days 00:00:00\n", nil
	case slices.Equal(args, []string{"-f", "-"}):
		f.main = nil
		for _, l := range strings.Split(strings.TrimSpace(stdin), "\n") {
			f.main = append(f.main, l+" all")
		}
		return noise, nil
	case len(args) == 4 && args[0] == "-a" && args[2] == "-f" && args[3] == "-":
		f.anchors[args[1]] = stdin
		return noise, nil
	case len(args) == 4 && args[0] == "-a" && args[2] == "-s":
		return noise + filter(f.anchors[args[1]], args[3] == "nat"), nil
	case len(args) == 4 && args[0] == "-a" && args[2] == "-F" && args[3] == "all":
		delete(f.anchors, args[1])
		return "rules cleared\nnat cleared\n", nil
	case slices.Equal(args, []string{"-E"}) && f.fl.tokens:
		f.enabled = true
		tok := strconv.Itoa(4242 + len(f.tokens))
		f.tokens[tok] = true
		return "pf enabled\nToken : " + tok + "\n", nil
	case len(args) == 2 && args[0] == "-X" && f.fl.tokens:
		if !f.tokens[args[1]] {
			return fail("pfctl: Invalid token")
		}
		delete(f.tokens, args[1])
		f.enabled = len(f.tokens) > 0
		return "", nil
	case slices.Equal(args, []string{"-e"}) && !f.fl.tokens:
		f.enabled = true
		return "pf enabled\n", nil
	case slices.Equal(args, []string{"-d"}) && !f.fl.tokens:
		f.enabled = false
		return "pf disabled\n", nil
	}
	f.t.Errorf("fake: unexpected pfctl %q", args)
	return fail("usage")
}

func (f *fakePFNAT) readFile(path string) ([]byte, error) {
	if b, ok := f.files[path]; ok {
		return slices.Clone(b), nil
	}
	return nil, fs.ErrNotExist
}

func (f *fakePFNAT) writeFile(path string, data []byte, mode fs.FileMode) error {
	if mode != 0o600 {
		f.t.Errorf("state file mode %v", mode)
	}
	f.log = append(f.log, fmt.Sprintf("# write %s %s", path, data))
	f.files[path] = slices.Clone(data)
	return nil
}

func (f *fakePFNAT) removeFile(path string) error {
	f.log = append(f.log, "# remove "+path)
	if _, ok := f.files[path]; !ok {
		return fs.ErrNotExist
	}
	delete(f.files, path)
	return nil
}

func pfNATDiscard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var pfNATCases = []struct {
	name string
	cfg  Config
}{
	{"v4_egress", Config{TunInterface: "tun0", TunnelV4: netip.MustParsePrefix("192.0.2.0/24"), IPv4Interface: "em0"}},
	{"dual_default_route", Config{TunInterface: "tun0", TunnelV4: netip.MustParsePrefix("192.0.2.0/24"), TunnelV6: netip.MustParsePrefix("fd00:2::/64")}},
	{"dual_two_egress", Config{TunInterface: "tun0", TunnelV4: netip.MustParsePrefix("192.0.2.0/24"), TunnelV6: netip.MustParsePrefix("fd00:2::/64"),
		IPv4Interface: "em0", IPv6Interface: "em1"}},
}

// TestPFNATGolden renders Setup and Close per OS and case; Close restores
// pf and the sysctls (FreeBSD's empty pf keeps the anchor references).
func TestPFNATGolden(t *testing.T) {
	for _, fl := range []pfNATFlavor{natDarwin, natFreeBSD} {
		for _, tc := range pfNATCases {
			t.Run(fl.name+"/"+tc.name, func(t *testing.T) {
				f := newFakePFNAT(t, fl)
				base := f.state()
				r, err := pfNATSetup(pfNATDiscard(), f, fl, tc.cfg)
				if err != nil {
					t.Fatalf("Setup: %v\n%s", err, f.takeLog())
				}
				out := "## Setup\n" + f.takeLog()
				if f.sysctl[sysctlV4Forward] != "1" || !f.enabled || f.anchors[fl.anchor] == "" {
					t.Fatalf("after Setup: %s", f.state())
				}
				if tc.cfg.TunnelV6.IsValid() && f.sysctl[sysctlV6Forward] != "1" {
					t.Error("ipv6 forwarding not enabled")
				}
				if err := r.close(); err != nil {
					t.Fatal(err)
				}
				out += "## Close\n" + f.takeLog()
				want := base
				if fl.name == "freebsd" {
					want = strings.Replace(want, "loaded false", "loaded true", 1) +
						"anchor \"mirage/*\" all\nnat-anchor \"mirage/*\" all\nrdr-anchor \"mirage/*\" all\n"
					want = sortedLines(want)
				}
				if got := f.state(); got != want {
					t.Errorf("after Close:\n%s\nwant:\n%s", got, want)
				}
				if err := r.close(); err != nil || len(f.log) != 0 {
					t.Errorf("second Close: %v %q", err, f.log)
				}
				pfNATGolden(t, "nat-"+fl.name+"-"+tc.name, out)
			})
		}
	}
}

// sortedLines sorts all lines but the first, like state().
func sortedLines(s string) string {
	l := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	sort.Strings(l[1:])
	return strings.Join(l, "\n") + "\n"
}

// TestPFNATCrash: a killed server leaves NAT, forwarding and pf on; the
// next start's CleanupLeftovers (from the state file) restores all of it.
func TestPFNATCrash(t *testing.T) {
	for _, fl := range []pfNATFlavor{natDarwin, natFreeBSD} {
		f := newFakePFNAT(t, fl)
		f.loaded = true
		f.main = []string{`nat-anchor "` + fl.root + `/*" all`, `anchor "` + fl.root + `/*" all`}
		base := f.state()
		if _, err := pfNATSetup(pfNATDiscard(), f, fl, pfNATCases[1].cfg); err != nil {
			t.Fatal(err)
		}
		if err := pfNATCleanup(pfNATDiscard(), f, fl); err != nil {
			t.Fatal(err)
		}
		if got := f.state(); got != base {
			t.Errorf("%s: after CleanupLeftovers:\n%s\nwant:\n%s", fl.name, got, base)
		}
		f.takeLog()
		if err := pfNATCleanup(pfNATDiscard(), f, fl); err != nil || strings.Contains(f.takeLog(), "-F") {
			t.Errorf("%s: second cleanup: %v", fl.name, err)
		}
		// Setup itself replaces a leftover first.
		if _, err := pfNATSetup(pfNATDiscard(), f, fl, pfNATCases[0].cfg); err != nil {
			t.Fatal(err)
		}
		if _, err := pfNATSetup(pfNATDiscard(), f, fl, pfNATCases[0].cfg); err != nil {
			t.Fatal(err)
		}
		if len(f.tokens) > 1 || f.sysctl[sysctlV4Forward] != "1" {
			t.Errorf("%s: second Setup over a leftover: %s", fl.name, f.state())
		}
		if err := pfNATCleanup(pfNATDiscard(), f, fl); err != nil {
			t.Fatal(err)
		}
		if got := f.state(); got != base {
			t.Errorf("%s: after the second cleanup:\n%s\nwant:\n%s", fl.name, got, base)
		}
	}
}

// TestPFNATFailureRollsBack: a failing step undoes the earlier ones.
func TestPFNATFailureRollsBack(t *testing.T) {
	f := newFakePFNAT(t, natDarwin)
	base := f.state()
	f.failOn = "$ pfctl -E"
	_, err := pfNATSetup(pfNATDiscard(), f, natDarwin, pfNATCases[1].cfg)
	if err == nil || !strings.Contains(err.Error(), "enable pf") {
		t.Fatalf("Setup = %v", err)
	}
	if got := f.state(); got != base {
		t.Errorf("after a failed Setup:\n%s\nwant:\n%s", got, base)
	}
}

func TestPFNATInput(t *testing.T) {
	f := newFakePFNAT(t, natFreeBSD)
	for _, c := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.IPv4Interface = "em0 all" }, "invalid ipv4 interface name"},
		{func(c *Config) { c.TunInterface = "tun0{" }, "invalid tun interface name"},
		{func(c *Config) { c.IPv6Interface = "-x" }, "invalid ipv6 interface name"},
		{func(c *Config) { c.Backend = "nftables" }, `backend "nftables" is not available on freebsd`},
	} {
		cfg := pfNATCases[2].cfg
		c.mod(&cfg)
		if _, err := pfNATSetup(pfNATDiscard(), f, natFreeBSD, cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Setup = %v, want %q", err, c.want)
		}
	}
	if len(f.log) != 0 {
		t.Errorf("commands ran for bad input: %q", f.log)
	}
	// No IPv6 default route: IPv4 is still translated.
	f.def6 = false
	r, err := pfNATSetup(pfNATDiscard(), f, natFreeBSD, pfNATCases[1].cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a := f.anchors[natFreeBSD.anchor]; !strings.Contains(a, "inet from 192.0.2.0/24") || strings.Contains(a, "inet6") {
		t.Errorf("anchor without v6 default route:\n%s", a)
	}
	if err := r.close(); err != nil {
		t.Fatal(err)
	}
	// A foreign ruleset without mirage's anchors is not rewritten.
	g := newFakePFNAT(t, natFreeBSD)
	g.loaded, g.main = true, []string{"pass all"}
	if _, err := pfNATSetup(pfNATDiscard(), g, natFreeBSD, pfNATCases[0].cfg); err == nil || !strings.Contains(err.Error(), `nat-anchor "mirage/*"`) {
		t.Errorf("Setup over a foreign ruleset = %v", err)
	}
}
