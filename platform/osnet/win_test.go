package osnet

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mirage-vpn/mirage/core/netcfg"
)

// The -update flag rewrites golden files; registered once, as another
// OS's tests in this package may define it too.
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files")
	}
}

func winGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "windows", name+".golden")
	if f := flag.Lookup("update"); f != nil && f.Value.String() == "true" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (go test -run %s -update creates it): %v", t.Name(), err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it)\n--- got:\n%s--- want:\n%s", path, got, want)
	}
}

// LUIDs: interface type in bits 48..63.
const (
	winEth  = 0x0006_0000_0100_0000 // IF_TYPE_ETHERNET_CSMACD
	winWifi = 0x0047_0000_0200_0000 // IF_TYPE_IEEE80211
	winLo   = 0x0018_0000_0000_0000 // IF_TYPE_SOFTWARE_LOOPBACK
	winTun  = 0x0035_0000_0a00_0000 // IF_TYPE_PROP_VIRTUAL (Wintun)
)

// winOS is the fake machine: what the calls change. It outlives a
// configurator, like the real OS outlives a crashed helper.
type winOS struct {
	ifaces map[string]uint64
	addrs  map[uint64][]netip.Prefix
	routes []winRoute // route metrics; ifMetric is added for lookups
	ifMet  map[uint64]uint32
	mtu    map[string]int
	dns    map[string][]netip.Addr
	nrpt   map[string]string
	gpRule bool // a foreign group policy NRPT rule exists
}

func newWinOS() *winOS {
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	return &winOS{
		ifaces: map[string]uint64{"Ethernet": winEth, "Wi-Fi": winWifi, "mirage0": winTun},
		addrs:  map[uint64][]netip.Prefix{winEth: {p("192.0.2.10/24"), p("fd00:1::10/64")}},
		routes: []winRoute{
			{Dst: p("0.0.0.0/0"), NextHop: a("192.0.2.1"), LUID: winEth, Metric: 0},
			{Dst: p("0.0.0.0/0"), NextHop: a("198.51.100.1"), LUID: winWifi, Metric: 0},
			{Dst: p("192.0.2.0/24"), LUID: winEth},
			{Dst: p("192.0.2.10/32"), LUID: winEth},
			{Dst: p("198.51.100.0/25"), LUID: winWifi},
			{Dst: p("127.0.0.0/8"), LUID: winLo},
			{Dst: p("::/0"), NextHop: a("fe80::1"), LUID: winEth},
			{Dst: p("fd00:1::/64"), LUID: winEth},
		},
		ifMet: map[uint64]uint32{winEth: 25, winWifi: 50, winTun: 5},
		mtu:   map[string]int{},
		dns:   map[string][]netip.Addr{},
		nrpt:  map[string]string{},
	}
}

// snapshot is the restorable state. The tunnel's MTU is left out: the
// device is mirage's own and goes away with it.
func (o *winOS) snapshot() string {
	var b strings.Builder
	for _, l := range slices.Sorted(func(yield func(uint64) bool) {
		for k := range o.addrs {
			if !yield(k) {
				return
			}
		}
	}) {
		if len(o.addrs[l]) > 0 {
			fmt.Fprintf(&b, "addrs %#x %v\n", l, o.addrs[l])
		}
	}
	rs := slices.Clone(o.routes)
	slices.SortFunc(rs, func(x, y winRoute) int { return strings.Compare(x.String(), y.String()) })
	for _, r := range rs {
		fmt.Fprintf(&b, "route %s\n", r)
	}
	for _, k := range slices.Sorted(mapKeys(o.dns)) {
		if len(o.dns[k]) > 0 {
			fmt.Fprintf(&b, "dns %s %v\n", k, o.dns[k])
		}
	}
	for _, k := range slices.Sorted(mapKeys(o.nrpt)) {
		fmt.Fprintf(&b, "nrpt %s %s\n", k, o.nrpt[k])
	}
	return b.String()
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// winFake is the recording winAPI over a winOS.
type winFake struct {
	os    *winOS
	calls []string
	fail  string // a call prefix that fails
}

func (f *winFake) rec(format string, args ...any) error {
	s := fmt.Sprintf(format, args...)
	f.calls = append(f.calls, s)
	if f.fail != "" && strings.HasPrefix(s, f.fail) {
		return errors.New("injected failure")
	}
	return nil
}

func fam(v6 bool) string {
	if v6 {
		return "ipv6"
	}
	return "ipv4"
}

func (f *winFake) luidByName(name string) (uint64, error) {
	l, ok := f.os.ifaces[name]
	if !ok {
		return 0, fmt.Errorf("no interface %q", name)
	}
	return l, nil
}

func (f *winFake) setMTU(luid uint64, v6 bool, mtu int) error {
	if err := f.rec("SetIpInterfaceEntry luid=%#x %s NlMtu=%d", luid, fam(v6), mtu); err != nil {
		return err
	}
	f.os.mtu[fmt.Sprintf("%#x/%s", luid, fam(v6))] = mtu
	return nil
}

func (f *winFake) addAddress(luid uint64, p netip.Prefix) error {
	if err := f.rec("CreateUnicastIpAddressEntry luid=%#x %s", luid, p); err != nil {
		return err
	}
	if !slices.Contains(f.os.addrs[luid], p) {
		f.os.addrs[luid] = append(f.os.addrs[luid], p)
	}
	return nil
}

func (f *winFake) deleteAddress(luid uint64, p netip.Prefix) error {
	if err := f.rec("DeleteUnicastIpAddressEntry luid=%#x %s", luid, p); err != nil {
		return err
	}
	f.os.addrs[luid] = slices.DeleteFunc(f.os.addrs[luid], func(x netip.Prefix) bool { return x == p })
	return nil
}

func (f *winFake) routeTable(v6 bool) ([]winRoute, error) {
	if err := f.rec("GetIpForwardTable2 %s", fam(v6)); err != nil {
		return nil, err
	}
	var out []winRoute
	for _, r := range f.os.routes {
		if r.Dst.Addr().Is6() == v6 {
			r.Metric += f.os.ifMet[r.LUID]
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *winFake) addRoute(r winRoute) (bool, error) {
	if err := f.rec("CreateIpForwardEntry2 %s", r); err != nil {
		return false, err
	}
	for _, e := range f.os.routes {
		if e.Dst == r.Dst && e.LUID == r.LUID && e.NextHop == r.NextHop {
			return false, nil // ERROR_OBJECT_ALREADY_EXISTS
		}
	}
	f.os.routes = append(f.os.routes, r)
	return true, nil
}

func (f *winFake) deleteRoute(r winRoute) error {
	if err := f.rec("DeleteIpForwardEntry2 %s", r); err != nil {
		return err
	}
	f.os.routes = slices.DeleteFunc(f.os.routes, func(e winRoute) bool {
		return e.Dst == r.Dst && e.LUID == r.LUID && e.NextHop == r.NextHop
	})
	return nil
}

func (f *winFake) setDNS(luid uint64, v6 bool, servers []netip.Addr) error {
	if err := f.rec("SetInterfaceDnsSettings luid=%#x %s %v", luid, fam(v6), servers); err != nil {
		return err
	}
	f.os.dns[fmt.Sprintf("%#x/%s", luid, fam(v6))] = slices.Clone(servers)
	return nil
}

func (f *winFake) nrptGroupPolicy() (bool, error) { return f.os.gpRule, nil }

func winNRPTTable(gp bool) string {
	if gp {
		return "policy"
	}
	return "local"
}

func (f *winFake) setNRPT(gp bool, key string, servers []netip.Addr) error {
	var s []string
	for _, a := range servers {
		s = append(s, a.String())
	}
	v := fmt.Sprintf(`Name=["."] GenericDNSServers=%q ConfigOptions=8 Version=2`, strings.Join(s, ";"))
	if err := f.rec("nrpt set %s %s %s", winNRPTTable(gp), key, v); err != nil {
		return err
	}
	f.os.nrpt[winNRPTTable(gp)+`\`+key] = v
	return nil
}

func (f *winFake) deleteNRPT(gp bool, key string) error {
	if err := f.rec("nrpt delete %s %s", winNRPTTable(gp), key); err != nil {
		return err
	}
	delete(f.os.nrpt, winNRPTTable(gp)+`\`+key)
	return nil
}

func (f *winFake) refreshPolicy() error      { return f.rec("RefreshPolicyEx(computer, RP_FORCE)") }
func (f *winFake) flushResolverCache() error { return f.rec("DnsFlushResolverCache") }

func winLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var winCases = []struct {
	name string
	cfgs []netcfg.Config // applied in turn
	prep func(o *winOS)  // between Sets (e.g. a gateway change)
	gp   bool
}{
	{name: "full_tunnel", cfgs: []netcfg.Config{{
		Interface: "mirage0", MTU: 1400,
		Addrs:  prefixes("203.0.113.2/24", "fd00:77::2/64"),
		Routes: prefixes("0.0.0.0/0", "::/0"),
		Bypass: []netip.Addr{netip.MustParseAddr("198.51.100.200")},
		DNS:    []netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("fd00:77::1")},
	}}},
	{name: "split", cfgs: []netcfg.Config{{
		Interface: "mirage0", MTU: 1380,
		Addrs:  prefixes("203.0.113.2/24"),
		Routes: prefixes("10.0.0.0/8", "172.16.0.0/12"),
		Bypass: []netip.Addr{netip.MustParseAddr("198.51.100.200")},
	}}},
	{name: "excluded", cfgs: []netcfg.Config{{
		Interface: "mirage0",
		Addrs:     prefixes("203.0.113.2/24"),
		Routes:    prefixes("0.0.0.0/0"),
		// 192.0.2.0/24 is the LAN (on-link), 203.0.0.0/8 via the IPv4
		// gateway, fd00:99::/32 via the IPv6 one.
		ExcludedRoutes: prefixes("192.0.2.0/24", "203.0.0.0/8", "fd00:99::/32"),
		Bypass:         []netip.Addr{netip.MustParseAddr("198.51.100.200")},
	}}},
	{name: "ipv6_bypass", cfgs: []netcfg.Config{{
		Interface: "mirage0",
		Addrs:     prefixes("fd00:77::2/64"),
		Routes:    prefixes("::/0"),
		Bypass:    []netip.Addr{netip.MustParseAddr("fd00:5::7")},
		DNS:       []netip.Addr{netip.MustParseAddr("fd00:77::1")},
	}}},
	{name: "update_and_gateway_change", cfgs: []netcfg.Config{{
		Interface: "mirage0",
		Addrs:     prefixes("203.0.113.2/24"),
		Routes:    prefixes("0.0.0.0/0"),
		Bypass:    []netip.Addr{netip.MustParseAddr("203.0.113.99")},
		DNS:       []netip.Addr{netip.MustParseAddr("203.0.113.1")},
	}, {
		Interface: "mirage0",
		Addrs:     prefixes("203.0.113.3/24"),
		Routes:    prefixes("0.0.0.0/0"),
		Bypass:    []netip.Addr{netip.MustParseAddr("203.0.113.99")},
	}}, prep: func(o *winOS) {
		// The Ethernet default route goes away: Wi-Fi takes over.
		o.routes = slices.DeleteFunc(o.routes, func(r winRoute) bool {
			return r.Dst.Bits() == 0 && r.Dst.Addr().Is4() && r.LUID == winEth
		})
	}},
	{name: "group_policy_nrpt", gp: true, cfgs: []netcfg.Config{{
		Interface: "mirage0",
		Addrs:     prefixes("203.0.113.2/24"),
		Routes:    prefixes("0.0.0.0/0"),
		Bypass:    []netip.Addr{netip.MustParseAddr("198.51.100.200")},
		DNS:       []netip.Addr{netip.MustParseAddr("203.0.113.1")},
	}}},
}

// winBase is the state a restore must reach: the initial one, with the
// changes the test made to the machine itself (prep).
func winBase(prep func(*winOS)) string {
	o := newWinOS()
	if prep != nil {
		prep(o)
	}
	return o.snapshot()
}

// TestWinGolden renders the calls of Set (and Close) per case, and checks
// that Close returns the fake machine to its initial state.
func TestWinGolden(t *testing.T) {
	for _, c := range winCases {
		t.Run(c.name, func(t *testing.T) {
			o := newWinOS()
			o.gpRule = c.gp
			base := winBase(c.prep)
			f := &winFake{os: o}
			dir := t.TempDir()
			cf, err := newWinConfigurator(winLog(), dir, f)
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			for i, cfg := range c.cfgs {
				if i > 0 && c.prep != nil {
					c.prep(o)
				}
				f.calls = nil
				if err := cf.Set(cfg); err != nil {
					t.Fatalf("Set %d: %v", i, err)
				}
				fmt.Fprintf(&out, "== Set %d ==\n%s\n", i+1, strings.Join(f.calls, "\n"))
				// Repeating the same Set changes nothing.
				f.calls = nil
				if err := cf.Set(cfg); err != nil {
					t.Fatal(err)
				}
				for _, call := range f.calls {
					if !strings.HasPrefix(call, "GetIpForwardTable2") && !strings.HasPrefix(call, "SetIpInterfaceEntry") &&
						!strings.HasPrefix(call, "CreateUnicastIpAddressEntry") {
						t.Errorf("repeated Set %d made a change: %s", i, call)
					}
				}
			}
			fmt.Fprintf(&out, "== state ==\n%s", o.snapshot())
			f.calls = nil
			if err := cf.Close(); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&out, "== Close ==\n%s\n", strings.Join(f.calls, "\n"))
			winGolden(t, c.name, out.String())
			if got := o.snapshot(); got != base {
				t.Errorf("after Close:\n%s\nwant:\n%s", got, base)
			}
			if _, ok, _ := loadJournal(dir); ok {
				t.Error("journal left after Close")
			}
		})
	}
}

// TestWinCrashCleanup: Set, drop the configurator, then Cleanup from the
// journal on a fresh API over the same machine restores it.
func TestWinCrashCleanup(t *testing.T) {
	for _, c := range winCases {
		t.Run(c.name, func(t *testing.T) {
			o := newWinOS()
			o.gpRule = c.gp
			base := winBase(c.prep)
			dir := t.TempDir()
			cf, err := newWinConfigurator(winLog(), dir, &winFake{os: o})
			if err != nil {
				t.Fatal(err)
			}
			for i, cfg := range c.cfgs {
				if i > 0 && c.prep != nil {
					c.prep(o)
				}
				if err := cf.Set(cfg); err != nil {
					t.Fatal(err)
				}
			}
			if o.snapshot() == base {
				t.Fatal("Set changed nothing")
			}
			if _, err := newWinConfigurator(winLog(), dir, &winFake{os: o}); err == nil || !strings.Contains(err.Error(), "run cleanup first") {
				t.Fatalf("New with a leftover journal = %v", err)
			}
			cf = nil // crashed: no Close
			if err := winCleanup(winLog(), dir, &winFake{os: o}); err != nil {
				t.Fatal(err)
			}
			if got := o.snapshot(); got != base {
				t.Errorf("after Cleanup:\n%s\nwant:\n%s", got, base)
			}
			if _, ok, _ := loadJournal(dir); ok {
				t.Error("journal left after Cleanup")
			}
			if err := winCleanup(winLog(), dir, &winFake{os: o}); err != nil {
				t.Errorf("second Cleanup: %v", err)
			}
		})
	}
}

// TestWinCrashMidSet: a Set that fails half-way has journaled everything
// it may have done, so Cleanup still restores the machine.
func TestWinCrashMidSet(t *testing.T) {
	for _, fail := range []string{"CreateIpForwardEntry2 128.0.0.0/1", "CreateUnicastIpAddressEntry", "nrpt set", "SetInterfaceDnsSettings"} {
		t.Run(fail, func(t *testing.T) {
			o := newWinOS()
			base := o.snapshot()
			dir := t.TempDir()
			cf, err := newWinConfigurator(winLog(), dir, &winFake{os: o, fail: fail})
			if err != nil {
				t.Fatal(err)
			}
			if err := cf.Set(winCases[0].cfgs[0]); err == nil {
				t.Fatal("Set with an injected failure succeeded")
			}
			if err := winCleanup(winLog(), dir, &winFake{os: o}); err != nil {
				t.Fatal(err)
			}
			if got := o.snapshot(); got != base {
				t.Errorf("after Cleanup:\n%s\nwant:\n%s", got, base)
			}
		})
	}
}

func TestWinForeignRouteKept(t *testing.T) {
	o := newWinOS()
	// Somebody else already routes 10.0.0.0/8 into the tunnel.
	o.routes = append(o.routes, winRoute{Dst: netip.MustParsePrefix("10.0.0.0/8"), LUID: winTun})
	base := o.snapshot()
	cf, err := newWinConfigurator(winLog(), t.TempDir(), &winFake{os: o})
	if err != nil {
		t.Fatal(err)
	}
	if err := cf.Set(netcfg.Config{Interface: "mirage0", Routes: prefixes("10.0.0.0/8")}); err != nil {
		t.Fatal(err)
	}
	if err := cf.Close(); err != nil {
		t.Fatal(err)
	}
	if got := o.snapshot(); got != base {
		t.Errorf("foreign route not kept:\n%s\nwant:\n%s", got, base)
	}
}

// TestWinLinkFlap: Windows dropped mirage's bypass route with its
// interface (a link flap); the next Set puts it back.
func TestWinLinkFlap(t *testing.T) {
	o := newWinOS()
	cf, err := newWinConfigurator(winLog(), t.TempDir(), &winFake{os: o})
	if err != nil {
		t.Fatal(err)
	}
	cfg := winCases[0].cfgs[0]
	if err := cf.Set(cfg); err != nil {
		t.Fatal(err)
	}
	bypass := netip.MustParsePrefix("198.51.100.200/32")
	i := slices.IndexFunc(o.routes, func(r winRoute) bool { return r.Dst == bypass })
	if i < 0 {
		t.Fatal("no bypass route after Set")
	}
	want := o.routes[i]
	o.routes = slices.Delete(o.routes, i, i+1)
	if err := cf.Set(cfg); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(o.routes, want) {
		t.Errorf("bypass route %s not re-installed after the flap", want)
	}
	if err := cf.Close(); err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(o.routes, func(r winRoute) bool { return r.Dst == bypass }) {
		t.Error("bypass route left after Close")
	}
}

func TestWinErrors(t *testing.T) {
	o := newWinOS()
	o.routes = slices.DeleteFunc(o.routes, func(r winRoute) bool { return r.Dst.Bits() == 0 && r.Dst.Addr().Is6() })
	cf, err := newWinConfigurator(winLog(), t.TempDir(), &winFake{os: o})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cfg  netcfg.Config
		want string
	}{
		{netcfg.Config{Interface: "nope"}, `find interface "nope"`},
		{netcfg.Config{Interface: "mirage0", Bypass: []netip.Addr{netip.MustParseAddr("fd00:99::1")}}, "no route to fd00:99::1 outside the tunnel"},
		{netcfg.Config{Interface: "mirage0", Bypass: []netip.Addr{netip.MustParseAddr("192.0.2.10")}}, "192.0.2.10 is a local address"},
		{netcfg.Config{Interface: "mirage0", MTU: 100}, "mtu 100 out of range"},
	} {
		if err := cf.Set(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Set(%+v) = %v, want %q", c.cfg, err, c.want)
		}
	}
	if _, err := newWinConfigurator(winLog(), "", &winFake{os: o}); err == nil {
		t.Error("empty state dir accepted")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, journalName), []byte(`{"interface":"mirage0","os":{"luid":"x"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := winCleanup(winLog(), dir, &winFake{os: o}); err == nil || !strings.Contains(err.Error(), "parse Windows state") {
		t.Errorf("Cleanup of a bad journal = %v", err)
	}
	if err := cf.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cf.Set(netcfg.Config{Interface: "mirage0"}); err == nil {
		t.Error("Set after Close accepted")
	}
}
