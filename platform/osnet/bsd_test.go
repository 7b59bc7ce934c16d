package osnet

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
	"strings"
	"testing"

	"github.com/mirage-vpn/mirage/core/netcfg"
)

// The -update flag regenerates golden files. It is registered only once per
// test binary, whichever test file gets there first.
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files in testdata")
	}
}

func bsdUpdating() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

// bsdGolden compares got with testdata/<name>.golden (rewritten by -update).
func bsdGolden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name+".golden")
	if bsdUpdating() {
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
		t.Errorf("%s differs from the golden file (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", p, got, want)
	}
}

func bsdDiscard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fakeBSDRoute is a route of the fake kernel.
type fakeBSDRoute struct {
	gw  netip.Addr
	dev string
}

type fakeBSDIf struct {
	addrs []netip.Prefix
	mtu   int
	up    bool
	tun   bool
}

type fakeBSDFile struct {
	data []byte
	mode fs.FileMode
}

// fakeBSD is a macOS or FreeBSD kernel and base system as far as the
// configurator sees it: interfaces, the routing table, the scutil dynamic
// store, resolvconf and files. It records every command.
type fakeBSD struct {
	t          *testing.T
	flavor     bsdFlavor
	ifs        map[string]*fakeBSDIf
	routes     map[netip.Prefix]fakeBSDRoute
	store      map[string]string
	resolvconf map[string]string
	files      map[string]fakeBSDFile
	log        []string
}

var (
	bsdLANGw4 = netip.MustParseAddr("198.51.100.1")
	bsdLANGw6 = netip.MustParseAddr("fe80::1%en0")
)

// newFakeBSD is a machine with en0 on 198.51.100.0/24 and fd00:1::/64,
// default routes via 198.51.100.1 and fe80::1%en0, and the tunnel device
// tun (already created, no addresses).
func newFakeBSD(t *testing.T, flavor bsdFlavor, tun string) *fakeBSD {
	f := &fakeBSD{
		t: t, flavor: flavor,
		ifs: map[string]*fakeBSDIf{
			"lo0": {addrs: prefixes("127.0.0.1/8", "::1/128"), mtu: 16384, up: true},
			"en0": {addrs: prefixes("198.51.100.10/24", "fd00:1::10/64"), mtu: 1500, up: true},
			tun:   {mtu: 1500, tun: true},
		},
		routes: map[netip.Prefix]fakeBSDRoute{
			netip.MustParsePrefix("0.0.0.0/0"):        {gw: bsdLANGw4, dev: "en0"},
			netip.MustParsePrefix("198.51.100.0/24"):  {dev: "en0"},
			netip.MustParsePrefix("127.0.0.0/8"):      {dev: "lo0"},
			netip.MustParsePrefix("::/0"):             {gw: bsdLANGw6, dev: "en0"},
			netip.MustParsePrefix("fd00:1::/64"):      {dev: "en0"},
			netip.MustParsePrefix("198.51.100.10/32"): {dev: "lo0"},
		},
		store:      map[string]string{"State:/Network/Service/E1/DNS": "ServerAddresses=198.51.100.1"},
		resolvconf: map[string]string{"en0": "nameserver 198.51.100.1\n"},
		files: map[string]fakeBSDFile{
			bsdResolvConf: {data: []byte("search example.lan\nnameserver 198.51.100.1\noptions edns0\n"), mode: 0o644},
		},
	}
	if flavor == flavorFreeBSD {
		f.files[bsdResolvconfPath] = fakeBSDFile{data: []byte("#!/bin/sh\n"), mode: 0o555}
	}
	return f
}

// state renders what must come back after Close: addresses, routes, the
// DNS store and files (not MTU, link state or the device itself).
func (f *fakeBSD) state() string {
	var lines []string
	for name, ifc := range f.ifs {
		for _, a := range ifc.addrs {
			lines = append(lines, fmt.Sprintf("addr %s %s", name, a))
		}
	}
	for p, r := range f.routes {
		if r.gw.IsValid() {
			lines = append(lines, fmt.Sprintf("route %s via %s dev %s", p, r.gw, r.dev))
		} else {
			lines = append(lines, fmt.Sprintf("route %s dev %s", p, r.dev))
		}
	}
	for k, v := range f.store {
		lines = append(lines, fmt.Sprintf("scutil %s = %s", k, v))
	}
	for k, v := range f.resolvconf {
		lines = append(lines, fmt.Sprintf("resolvconf %s = %q", k, v))
	}
	for k, v := range f.files {
		lines = append(lines, fmt.Sprintf("file %s %v %q", k, v.mode, v.data))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

// devices renders the devices with MTU and link state.
func (f *fakeBSD) devices() string {
	var lines []string
	for name, ifc := range f.ifs {
		lines = append(lines, fmt.Sprintf("dev %s mtu %d up %v", name, ifc.mtu, ifc.up))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

func (f *fakeBSD) takeLog() string {
	s := strings.Join(f.log, "\n")
	f.log = nil
	if s != "" {
		s += "\n"
	}
	return s
}

// die is the process owning a darwin utun dying: the device disappears
// with its addresses and routes.
func (f *fakeBSD) die(tun string) {
	delete(f.ifs, tun)
	for p, r := range f.routes {
		if r.dev == tun {
			delete(f.routes, p)
		}
	}
}

func (f *fakeBSD) run(stdin, name string, args ...string) (string, error) {
	line := strings.Join(append([]string{"$", name}, args...), " ")
	for _, l := range strings.Split(strings.TrimSuffix(stdin, "\n"), "\n") {
		if stdin != "" {
			line += "\n  | " + l
		}
	}
	f.log = append(f.log, line)
	var out string
	var err error
	switch name {
	case "ifconfig":
		out, err = f.ifconfig(args)
	case "route":
		out, err = f.route(args)
	case "scutil":
		out, err = f.scutil(stdin, args)
	case "resolvconf":
		out, err = f.resolvconfCmd(stdin, args)
	default:
		err = errors.New("command not found")
	}
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return out, nil
}

func (f *fakeBSD) bad(args []string) (string, error) {
	f.t.Errorf("fake: unexpected arguments %q", args)
	return "usage", errors.New("exit status 64")
}

func (f *fakeBSD) ifconfig(args []string) (string, error) {
	if len(args) == 0 {
		return f.bad(args)
	}
	ifc, ok := f.ifs[args[0]]
	if !ok {
		return fmt.Sprintf("ifconfig: interface %s does not exist", args[0]), errors.New("exit status 1")
	}
	a := args[1:]
	connected := func(p netip.Prefix) {
		if f.flavor == flavorFreeBSD && !p.IsSingleIP() {
			f.routes[p.Masked()] = fakeBSDRoute{dev: args[0]}
		}
	}
	switch {
	case len(a) == 0:
		out := fmt.Sprintf("%s: flags=8051<UP,POINTOPOINT,RUNNING,MULTICAST> mtu %d\n", args[0], ifc.mtu)
		if ifc.tun && f.flavor == flavorFreeBSD {
			out += "\tgroups: tun\n"
		}
		return out, nil
	case len(a) == 1 && a[0] == "up":
		ifc.up = true
	case len(a) == 1 && a[0] == "destroy" && ifc.tun:
		f.die(args[0])
	case len(a) == 2 && a[0] == "mtu":
		if _, err := fmt.Sscan(a[1], &ifc.mtu); err != nil {
			return f.bad(args)
		}
	case len(a) == 3 && a[2] == "-alias" && (a[0] == "inet" || a[0] == "inet6"):
		ip, err := netip.ParseAddr(a[1])
		if err != nil || ip.Is6() != (a[0] == "inet6") {
			return f.bad(args)
		}
		i := slices.IndexFunc(ifc.addrs, func(p netip.Prefix) bool { return p.Addr() == ip })
		if i < 0 {
			return "ifconfig: ioctl (SIOCDIFADDR): Can't assign requested address", errors.New("exit status 1")
		}
		p := ifc.addrs[i]
		ifc.addrs = slices.Delete(ifc.addrs, i, i+1)
		if f.flavor == flavorFreeBSD && !p.IsSingleIP() {
			delete(f.routes, p.Masked())
		}
	case f.flavor == flavorDarwin && len(a) == 6 && a[0] == "inet" && a[1] == a[2] && a[3] == "netmask" && a[5] == "alias":
		ip, err1 := netip.ParseAddr(a[1])
		mask, err2 := netip.ParseAddr(a[4])
		if err1 != nil || err2 != nil || !ip.Is4() {
			return f.bad(args)
		}
		bits := 0
		for _, b := range mask.AsSlice() {
			for i := 7; i >= 0 && b&(1<<i) != 0; i-- {
				bits++
			}
		}
		ifc.addrs = append(ifc.addrs, netip.PrefixFrom(ip, bits))
	case f.flavor == flavorFreeBSD && len(a) == 3 && a[0] == "inet" && a[2] == "alias":
		p, err := netip.ParsePrefix(a[1])
		if err != nil || !p.Addr().Is4() {
			return f.bad(args)
		}
		ifc.addrs = append(ifc.addrs, p)
		connected(p)
	case len(a) == 5 && a[0] == "inet6" && a[2] == "prefixlen" && a[4] == "alias":
		ip, err := netip.ParseAddr(a[1])
		var bits int
		if _, serr := fmt.Sscan(a[3], &bits); err != nil || serr != nil || !ip.Is6() {
			return f.bad(args)
		}
		p := netip.PrefixFrom(ip, bits)
		ifc.addrs = append(ifc.addrs, p)
		connected(p)
	default:
		return f.bad(args)
	}
	return "", nil
}

func (f *fakeBSD) lookup(a netip.Addr) (netip.Prefix, bool) {
	best, found := netip.Prefix{}, false
	for p := range f.routes {
		if p.Contains(a) && (!found || p.Bits() > best.Bits()) {
			best, found = p, true
		}
	}
	return best, found
}

func (f *fakeBSD) route(args []string) (string, error) {
	if len(args) < 4 || args[0] != "-n" || (args[2] != "-inet" && args[2] != "-inet6") {
		return f.bad(args)
	}
	v6 := args[2] == "-inet6"
	op, rest := args[1], args[3:]
	parseDst := func(kind, s string) (netip.Prefix, bool) {
		var p netip.Prefix
		var err error
		switch kind {
		case "-net":
			p, err = netip.ParsePrefix(s)
			if err == nil && p != p.Masked() {
				err = errors.New("not masked")
			}
		case "-host":
			var a netip.Addr
			a, err = netip.ParseAddr(s)
			p = netip.PrefixFrom(a, a.BitLen())
		default:
			err = errors.New("kind")
		}
		return p, err == nil && p.Addr().Is6() == v6
	}
	notInTable := func() (string, error) {
		return "route: writing to routing socket: not in table", errors.New("exit status 1")
	}
	if op == "get" {
		var p netip.Prefix
		var ok bool
		switch {
		case len(rest) == 1 && rest[0] == "default":
			p = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if v6 {
				p = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			}
			_, ok = f.routes[p]
		case len(rest) == 1:
			a, err := netip.ParseAddr(rest[0])
			if err != nil || a.Is6() != v6 {
				return f.bad(args)
			}
			p, ok = f.lookup(a)
		case len(rest) == 2:
			var valid bool
			if p, valid = parseDst(rest[0], rest[1]); !valid {
				return f.bad(args)
			}
			_, ok = f.routes[p]
		default:
			return f.bad(args)
		}
		if !ok {
			return notInTable()
		}
		r := f.routes[p]
		dst, mask := p.Addr().String(), ""
		if p.Bits() == 0 {
			dst, mask = "default", "default"
		} else if !p.IsSingleIP() {
			m := netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			_ = m
			if v6 {
				var b [16]byte
				for i := 0; i < p.Bits(); i++ {
					b[i/8] |= 0x80 >> (i % 8)
				}
				mask = netip.AddrFrom16(b).String()
			} else {
				mask = bsdMask4(p.Bits())
			}
		}
		out := fmt.Sprintf("   route to: %s\ndestination: %s\n", rest[len(rest)-1], dst)
		if mask != "" {
			out += fmt.Sprintf("       mask: %s\n", mask)
		}
		flags := "UP,DONE,STATIC"
		if r.gw.IsValid() {
			out += fmt.Sprintf("    gateway: %s\n", r.gw)
			flags = "UP,GATEWAY,DONE,STATIC"
		}
		out += fmt.Sprintf("  interface: %s\n      flags: <%s>\n recvpipe  sendpipe  ssthresh  rtt,msec    mtu        weight    expire\n       0         0         0         0      1500         1         0\n", r.dev, flags)
		return out, nil
	}
	if len(rest) < 3 {
		return f.bad(args)
	}
	p, ok := parseDst(rest[0], rest[1])
	if !ok {
		return f.bad(args)
	}
	var want fakeBSDRoute
	switch {
	case len(rest) == 3:
		gw, err := netip.ParseAddr(rest[2])
		if err != nil || gw.Is6() != v6 {
			return f.bad(args)
		}
		want.gw = gw
		if pr, ok := f.lookup(gw.WithZone("")); ok {
			want.dev = f.routes[pr].dev
		}
		if gw.Zone() != "" {
			want.dev = gw.Zone()
		}
	case len(rest) == 4 && rest[2] == "-interface":
		if _, ok := f.ifs[rest[3]]; !ok {
			return rest[3] + ": bad value", errors.New("exit status 68")
		}
		want.dev = rest[3]
	default:
		return f.bad(args)
	}
	cur, exists := f.routes[p]
	switch op {
	case "add":
		if exists {
			return fmt.Sprintf("route: writing to routing socket: File exists\nadd net %s: gateway %s: File exists", p, rest[2]), errors.New("exit status 1")
		}
		f.routes[p] = want
	case "change":
		if !exists {
			return notInTable()
		}
		f.routes[p] = want
	case "delete":
		if !exists || (want.gw.IsValid() && cur.gw != want.gw) || (!want.gw.IsValid() && (cur.gw.IsValid() || cur.dev != want.dev)) {
			return notInTable()
		}
		delete(f.routes, p)
	default:
		return f.bad(args)
	}
	return "", nil
}

func (f *fakeBSD) scutil(stdin string, args []string) (string, error) {
	if len(args) != 0 {
		return f.bad(args)
	}
	var dict []string
	open := false
	for _, l := range strings.Split(strings.TrimSpace(stdin), "\n") {
		w := strings.Fields(l)
		switch {
		case len(w) == 1 && w[0] == "open":
			open = true
		case len(w) == 1 && w[0] == "close":
			open = false
		case len(w) == 1 && w[0] == "d.init":
			dict = nil
		case len(w) >= 4 && w[0] == "d.add" && (w[2] == "*" || w[2] == "#"):
			dict = append(dict, w[1]+"="+strings.Join(w[3:], ","))
		case len(w) == 2 && w[0] == "set" && open:
			f.store[w[1]] = strings.Join(dict, ";")
		case len(w) == 2 && w[0] == "remove" && open:
			delete(f.store, w[1])
		default:
			return f.bad(append(args, l))
		}
	}
	return "", nil
}

func (f *fakeBSD) resolvconfCmd(stdin string, args []string) (string, error) {
	switch {
	case len(args) == 3 && args[0] == "-x" && args[1] == "-a":
		f.resolvconf[args[2]] = stdin
	case len(args) == 2 && args[0] == "-d":
		delete(f.resolvconf, args[1])
	default:
		return f.bad(args)
	}
	return "", nil
}

func (f *fakeBSD) lstat(path string) (fs.FileMode, error) {
	if fl, ok := f.files[path]; ok {
		return fl.mode, nil
	}
	return 0, fs.ErrNotExist
}

func (f *fakeBSD) readFile(path string) ([]byte, error) {
	if fl, ok := f.files[path]; ok {
		return slices.Clone(fl.data), nil
	}
	return nil, fs.ErrNotExist
}

func (f *fakeBSD) writeFile(path string, data []byte, mode fs.FileMode) error {
	f.log = append(f.log, fmt.Sprintf("# write %s %v %q", path, mode, data))
	f.files[path] = fakeBSDFile{data: slices.Clone(data), mode: mode}
	return nil
}

func (f *fakeBSD) removeFile(path string) error {
	f.log = append(f.log, "# remove "+path)
	if _, ok := f.files[path]; !ok {
		return fs.ErrNotExist
	}
	delete(f.files, path)
	return nil
}

func bsdAddrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, netip.MustParseAddr(x))
	}
	return out
}

// bsdTun is the tunnel device name of each flavor in the tests.
func bsdTun(fl bsdFlavor) string {
	if fl == flavorDarwin {
		return "utun3"
	}
	return "mtun0"
}

// bsdCases are the golden cases; noResolvconf removes /sbin/resolvconf.
var bsdCases = []struct {
	name         string
	cfg          netcfg.Config
	noResolvconf bool
}{
	{name: "full", cfg: netcfg.Config{
		Addrs: prefixes("192.0.2.2/24", "fd00:2::2/64"), MTU: 1400,
		Routes: prefixes("0.0.0.0/0", "::/0"), Bypass: bsdAddrs("203.0.113.9"),
		DNS: bsdAddrs("192.0.2.53", "fd00:2::53"),
	}},
	{name: "split", cfg: netcfg.Config{
		Addrs: prefixes("192.0.2.2/24"), MTU: 1400,
		Routes: prefixes("203.0.113.128/25", "fd00:9::/48"), Bypass: bsdAddrs("203.0.113.9"),
	}},
	{name: "excluded", cfg: netcfg.Config{
		Addrs: prefixes("192.0.2.2/24", "fd00:2::2/64"), MTU: 1400,
		Routes:         prefixes("0.0.0.0/0", "::/0"),
		ExcludedRoutes: prefixes("203.0.113.64/26", "fd00:5::/48", "198.51.100.128/25"),
		Bypass:         bsdAddrs("203.0.113.9"), DNS: bsdAddrs("192.0.2.53"),
	}},
	{name: "v6server", cfg: netcfg.Config{
		Addrs: prefixes("192.0.2.2/24", "fd00:2::2/64"), MTU: 1400,
		Routes: prefixes("0.0.0.0/0", "::/0"), Bypass: bsdAddrs("fd00:3::9"),
		DNS: bsdAddrs("fd00:2::53"),
	}},
	{name: "server", cfg: netcfg.Config{Addrs: prefixes("192.0.2.1/24", "fd00:2::1/64"), MTU: 1400}},
	{name: "full-resolvfile", noResolvconf: true, cfg: netcfg.Config{
		Addrs: prefixes("192.0.2.2/24"), MTU: 1400,
		Routes: prefixes("0.0.0.0/0"), Bypass: bsdAddrs("203.0.113.9"),
		DNS: bsdAddrs("192.0.2.53", "fd00:2::53"),
	}},
}

func newBSDFixture(t *testing.T, fl bsdFlavor, noResolvconf bool) (*fakeBSD, *bsdConfigurator, string) {
	t.Helper()
	f := newFakeBSD(t, fl, bsdTun(fl))
	if noResolvconf {
		delete(f.files, bsdResolvconfPath)
	}
	dir := filepath.Join(t.TempDir(), "state")
	c, err := newBSDConfigurator(bsdDiscard(), dir, f, fl)
	if err != nil {
		t.Fatal(err)
	}
	return f, c, dir
}

// TestBSDGolden renders what Set and Close do on each OS and checks that
// Close brings the fake machine back to where it started.
func TestBSDGolden(t *testing.T) {
	for _, fl := range []bsdFlavor{flavorDarwin, flavorFreeBSD} {
		for _, tc := range bsdCases {
			if tc.noResolvconf && fl == flavorDarwin {
				continue
			}
			t.Run(string(fl)+"/"+tc.name, func(t *testing.T) {
				f, c, dir := newBSDFixture(t, fl, tc.noResolvconf)
				base := f.state()
				cfg := tc.cfg
				cfg.Interface = bsdTun(fl)
				var b strings.Builder
				if err := c.Set(cfg); err != nil {
					t.Fatalf("Set: %v\n%s", err, f.takeLog())
				}
				b.WriteString("## Set\n" + f.takeLog())
				b.WriteString("## state after Set\n" + f.state() + f.devices())
				if _, ok, _ := loadJournal(dir); !ok {
					t.Error("no journal after Set")
				}
				// An identical Set changes nothing.
				if err := c.Set(cfg); err != nil {
					t.Fatalf("second Set: %v", err)
				}
				for _, l := range f.log {
					if strings.Contains(l, " add ") || strings.Contains(l, "alias") || strings.Contains(l, "scutil") ||
						strings.Contains(l, "resolvconf") || strings.Contains(l, " delete ") || strings.HasPrefix(l, "#") {
						t.Errorf("identical Set ran %q", l)
					}
				}
				f.takeLog()
				if err := c.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				b.WriteString("## Close\n" + f.takeLog())
				if got := f.state(); got != base {
					t.Errorf("state after Close:\n%s\nwant the initial state:\n%s", got, base)
				}
				if _, ok, _ := loadJournal(dir); ok {
					t.Error("journal left after Close")
				}
				if err := c.Set(cfg); err == nil {
					t.Error("Set after Close succeeded")
				}
				bsdGolden(t, filepath.Join(string(fl), tc.name), b.String())
			})
		}
	}
}

// TestBSDCrashCleanup drops a configurator without Close and replays its
// journal with Cleanup on a fresh instance, for every golden case of
// TestBSDGolden on both OSes: the machine is back to its exact initial
// state. On macOS the utun dies with the process (taking its routes); on
// FreeBSD the tun device stays and Cleanup destroys it.
func TestBSDCrashCleanup(t *testing.T) {
	for _, fl := range []bsdFlavor{flavorDarwin, flavorFreeBSD} {
		for _, tc := range bsdCases {
			if tc.noResolvconf && fl == flavorDarwin {
				continue // as in TestBSDGolden: macOS DNS is scutil either way
			}
			// FreeBSD also runs each case with the resolv.conf file
			// backend (no /sbin/resolvconf).
			noRCs := []bool{tc.noResolvconf}
			if fl == flavorFreeBSD && !tc.noResolvconf {
				noRCs = append(noRCs, true)
			}
			for _, noRC := range noRCs {
				name := string(fl) + "/" + tc.name
				if noRC != tc.noResolvconf {
					name += "/resolvfile"
				}
				t.Run(name, func(t *testing.T) {
					bsdCrashCleanup(t, fl, tc.cfg, noRC)
				})
			}
		}
	}
}

// bsdCrashCleanup applies cfg, drops the configurator without Close (a
// killed run), replays the journal with Cleanup and checks that the fake
// machine is back to its exact initial state.
func bsdCrashCleanup(t *testing.T, fl bsdFlavor, cfg netcfg.Config, noResolvconf bool) {
	f, c, dir := newBSDFixture(t, fl, noResolvconf)
	base := f.state()
	cfg.Interface = bsdTun(fl)
	if err := c.Set(cfg); err != nil {
		t.Fatal(err)
	}
	if f.state() == base {
		t.Fatal("Set changed nothing")
	}
	// The crash: no Close. A darwin utun dies with its process.
	if fl == flavorDarwin {
		f.die(cfg.Interface)
	}
	if _, err := newBSDConfigurator(bsdDiscard(), dir, f, fl); err == nil || !strings.Contains(err.Error(), "run cleanup first") {
		t.Fatalf("New with a leftover journal: %v", err)
	}
	f.takeLog()
	if err := bsdCleanup(bsdDiscard(), dir, f, fl); err != nil {
		t.Fatalf("Cleanup: %v\n%s", err, f.takeLog())
	}
	log := f.takeLog()
	// The tunnel device is not part of state(); Cleanup must
	// have removed it (FreeBSD) or it died (macOS).
	if _, ok := f.ifs[cfg.Interface]; ok {
		t.Errorf("tunnel device %s still exists after Cleanup", cfg.Interface)
	}
	if got := f.state(); got != base {
		t.Errorf("state after Cleanup:\n%s\nwant the initial state:\n%s\ncommands:\n%s", got, base, log)
	}
	if _, ok, _ := loadJournal(dir); ok {
		t.Error("journal left after Cleanup")
	}
	if err := bsdCleanup(bsdDiscard(), dir, f, fl); err != nil || len(f.log) != 0 {
		t.Errorf("second Cleanup: %v, ran %q", err, f.log)
	}
	if _, err := newBSDConfigurator(bsdDiscard(), dir, f, fl); err != nil {
		t.Errorf("New after Cleanup: %v", err)
	}
}

// TestBSDGatewayChange re-Sets after the default gateway moved: the bypass
// route follows it with route change.
func TestBSDGatewayChange(t *testing.T) {
	f, c, _ := newBSDFixture(t, flavorDarwin, false)
	cfg := bsdCases[0].cfg
	cfg.Interface = "utun3"
	if err := c.Set(cfg); err != nil {
		t.Fatal(err)
	}
	newGw := netip.MustParseAddr("198.51.100.254")
	f.routes[netip.MustParsePrefix("0.0.0.0/0")] = fakeBSDRoute{gw: newGw, dev: "en0"}
	base := strings.Replace(newFakeBSD(t, flavorDarwin, "utun3").state(), "via 198.51.100.1 ", "via 198.51.100.254 ", 1)
	f.takeLog()
	if err := c.Set(cfg); err != nil {
		t.Fatal(err)
	}
	log := f.takeLog()
	if !strings.Contains(log, "$ route -n change -inet -host 203.0.113.9 198.51.100.254\n") {
		t.Errorf("bypass route not moved to the new gateway:\n%s", log)
	}
	if got := f.routes[netip.MustParsePrefix("203.0.113.9/32")]; got.gw != newGw {
		t.Errorf("bypass route = %+v", got)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := f.state(); got != base {
		t.Errorf("state after Close:\n%s\nwant:\n%s", got, base)
	}
}

// TestBSDLinkFlap: the kernel dropped mirage's bypass route with its
// interface (a link flap); the next Set puts it back, and one still in
// place is left alone.
func TestBSDLinkFlap(t *testing.T) {
	for _, fl := range []bsdFlavor{flavorDarwin, flavorFreeBSD} {
		f, c, _ := newBSDFixture(t, fl, false)
		cfg := bsdCases[0].cfg
		cfg.Interface = bsdTun(fl)
		if err := c.Set(cfg); err != nil {
			t.Fatal(err)
		}
		bypass := netip.MustParsePrefix("203.0.113.9/32")
		want, ok := f.routes[bypass]
		if !ok {
			t.Fatalf("%s: no bypass route after Set", fl)
		}
		delete(f.routes, bypass)
		f.takeLog()
		if err := c.Set(cfg); err != nil {
			t.Fatal(err)
		}
		if got, ok := f.routes[bypass]; !ok || got != want {
			t.Errorf("%s: bypass route after the flap = %+v, %v; want %+v", fl, got, ok, want)
		}
		if log := f.takeLog(); strings.Count(log, "route -n add") != 1 {
			t.Errorf("%s: want exactly the bypass route re-added:\n%s", fl, log)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBSDReconfigure moves from a full tunnel to split routes and back.
func TestBSDReconfigure(t *testing.T) {
	for _, fl := range []bsdFlavor{flavorDarwin, flavorFreeBSD} {
		f, c, _ := newBSDFixture(t, fl, false)
		base := f.state()
		full, split := bsdCases[0].cfg, bsdCases[1].cfg
		full.Interface, split.Interface = bsdTun(fl), bsdTun(fl)
		for _, cfg := range []netcfg.Config{full, split, full} {
			if err := c.Set(cfg); err != nil {
				t.Fatalf("%s: %v", fl, err)
			}
		}
		if err := c.Set(split); err != nil {
			t.Fatal(err)
		}
		for _, p := range prefixes("0.0.0.0/1", "::/1", "fd00:2::/64") {
			if _, ok := f.routes[p]; ok {
				t.Errorf("%s: route %s left after switching to split", fl, p)
			}
		}
		if _, ok := f.routes[netip.MustParsePrefix("203.0.113.128/25")]; !ok {
			t.Errorf("%s: split route missing", fl)
		}
		if len(f.store) != 1 || len(f.resolvconf) != 1 {
			t.Errorf("%s: DNS not reverted by a Set without DNS: %v %v", fl, f.store, f.resolvconf)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if got := f.state(); got != base {
			t.Errorf("%s: state after Close:\n%s\nwant:\n%s", fl, got, base)
		}
	}
}

// TestBSDForeignRoutes: a different route for a tunnel prefix is an
// error and survives; an identical one (the kernel's own) is kept and not
// removed on Close.
func TestBSDForeignRoutes(t *testing.T) {
	f, c, _ := newBSDFixture(t, flavorDarwin, false)
	foreign := netip.MustParsePrefix("0.0.0.0/1")
	f.routes[foreign] = fakeBSDRoute{gw: bsdLANGw4, dev: "en0"}
	kernel := netip.MustParsePrefix("fd00:2::/64")
	f.routes[kernel] = fakeBSDRoute{dev: "utun3"}
	base := f.state()
	cfg := bsdCases[0].cfg
	cfg.Interface = "utun3"
	err := c.Set(cfg)
	if err == nil || !strings.Contains(err.Error(), "a different route for 0.0.0.0/1 already exists") {
		t.Fatalf("Set = %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := f.state(); got != base {
		t.Errorf("state after Close:\n%s\nwant:\n%s", got, base)
	}
	delete(f.routes, foreign)
	_, c, _ = newBSDFixture(t, flavorDarwin, false)
	c.sys = f
	if err := c.Set(cfg); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.routes[kernel]; !ok {
		t.Error("Close removed a route mirage did not add")
	}
}

// TestBSDRejectsBadInput: names that could smuggle options into ifconfig or
// route are refused before any command runs.
func TestBSDRejectsBadInput(t *testing.T) {
	f, c, _ := newBSDFixture(t, flavorFreeBSD, false)
	for _, name := range []string{"-utun3", "utun3 up", "mtun0;x", "", "a/b", "averyveryverylongname0", "utun\n3"} {
		err := c.Set(netcfg.Config{Interface: name, Addrs: prefixes("192.0.2.2/24")})
		if err == nil || !strings.Contains(err.Error(), "interface") {
			t.Errorf("Set(%q) = %v", name, err)
		}
	}
	if len(f.log) != 0 {
		t.Errorf("commands ran for bad input: %q", f.log)
	}
	if err := c.Set(netcfg.Config{Interface: "nosuch0"}); err == nil || !strings.Contains(err.Error(), `find interface "nosuch0"`) {
		t.Errorf("missing interface: %v", err)
	}
}

func TestParseRouteGet(t *testing.T) {
	darwin := `   route to: 203.0.113.9
destination: default
       mask: default
    gateway: 198.51.100.1
  interface: en0
      flags: <UP,GATEWAY,DONE,STATIC,PRCLONING,GLOBAL>
 recvpipe  sendpipe  ssthresh  rtt,msec    rttvar  hopcount      mtu     expire
       0         0         0         0         0         0      1500         0
`
	info, err := parseRouteGet(darwin, false)
	if err != nil || info.gw != bsdLANGw4 || info.iface != "en0" || info.dst != netip.MustParsePrefix("0.0.0.0/0") {
		t.Errorf("darwin default: %+v %v", info, err)
	}
	v6 := "   route to: fd00:3::9\ndestination: ::\n       mask: default\n    gateway: fe80::1%em0\n        fib: 0\n  interface: em0\n      flags: <UP,GATEWAY,DONE,STATIC>\n"
	info, err = parseRouteGet(v6, true)
	if err != nil || info.gw != netip.MustParseAddr("fe80::1%em0") || info.iface != "em0" || info.dst.Bits() != 0 {
		t.Errorf("freebsd v6: %+v %v", info, err)
	}
	onlink := "   route to: 198.51.100.7\ndestination: 198.51.100.0\n       mask: 255.255.255.0\n  interface: en0\n      flags: <UP,DONE,CLONING>\n"
	info, err = parseRouteGet(onlink, false)
	if err != nil || info.gw.IsValid() || info.dst != netip.MustParsePrefix("198.51.100.0/24") {
		t.Errorf("on-link: %+v %v", info, err)
	}
	for _, bad := range []string{
		"",
		"interface: -x\n",
		"interface: en0\nflags: <UP,GATEWAY>\ngateway: link#4\n",
		"interface: en0\nflags: <UP,GATEWAY>\ngateway: fe80::1%-x\n",
		"interface: en0\nflags: <UP,GATEWAY>\ngateway: fd00::1\n",
	} {
		if info, err := parseRouteGet(bad, false); err == nil {
			t.Errorf("parseRouteGet(%q) = %+v, want an error", bad, info)
		}
	}
}
