package osnet

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/mirage-vpn/mirage/core/netcfg"
)

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func TestSplitDefault(t *testing.T) {
	got := splitDefault(prefixes("0.0.0.0/0", "::/0", "198.51.100.7/24", "0.0.0.0/0", "fd00:1::/64"))
	want := prefixes("0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1", "198.51.100.0/24", "fd00:1::/64")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("splitDefault = %v, want %v", got, want)
	}
	if got := splitDefault(nil); len(got) != 0 {
		t.Fatalf("splitDefault(nil) = %v", got)
	}
}

func TestCheckConfig(t *testing.T) {
	ok := netcfg.Config{Interface: "mtun0", MTU: 1400, Addrs: prefixes("192.0.2.2/24")}
	if err := checkConfig(ok); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, c := range []struct {
		mod  func(*netcfg.Config)
		want string
	}{
		{func(c *netcfg.Config) { c.Interface = "" }, "interface name is empty"},
		{func(c *netcfg.Config) { c.MTU = 100 }, "mtu 100"},
		{func(c *netcfg.Config) { c.Addrs = []netip.Prefix{{}} }, "invalid tunnel address"},
		{func(c *netcfg.Config) { c.Routes = []netip.Prefix{{}} }, "invalid route"},
		{func(c *netcfg.Config) { c.ExcludedRoutes = []netip.Prefix{{}} }, "invalid excluded route"},
		{func(c *netcfg.Config) { c.Bypass = []netip.Addr{netip.IPv4Unspecified()} }, "invalid bypass address"},
		{func(c *netcfg.Config) { c.DNS = []netip.Addr{{}} }, "invalid DNS server"},
	} {
		cfg := ok
		c.mod(&cfg)
		if err := checkConfig(cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("checkConfig = %v, want error containing %q", err, c.want)
		}
	}
}

func TestJournalRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if _, ok, err := loadJournal(dir); ok || err != nil {
		t.Fatalf("empty dir: ok=%v err=%v", ok, err)
	}
	j := journal{
		Interface: "mtun0",
		Addrs:     prefixes("192.0.2.2/24", "fd00:1::2/64"),
		Routes: []route{
			{Dst: netip.MustParsePrefix("203.0.113.9/32"), Gw: netip.MustParseAddr("198.51.100.1"), Dev: "eth0"},
			{Dst: netip.MustParsePrefix("0.0.0.0/1"), Dev: "mtun0"},
		},
		DNS: &dnsState{Backend: backendFile, Interface: "mtun0", Servers: []netip.Addr{netip.MustParseAddr("192.0.2.53")},
			Path: "/etc/resolv.conf", Existed: true, Mode: 0o644, Original: []byte("nameserver 1\x00\xff\n"), Written: []byte("x")},
	}
	if err := saveJournal(dir, j); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(journalPath(dir))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("journal mode %v, err %v; want 0600", fi.Mode(), err)
	}
	got, ok, err := loadJournal(dir)
	if err != nil || !ok || !reflect.DeepEqual(got, j) {
		t.Fatalf("loaded %+v (ok=%v err=%v), want %+v", got, ok, err, j)
	}
	if err := os.WriteFile(journalPath(dir), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadJournal(dir); err == nil || !strings.Contains(err.Error(), "parse network journal") {
		t.Fatalf("corrupt journal: err = %v", err)
	}
	if err := removeJournal(dir); err != nil {
		t.Fatal(err)
	}
	if err := removeJournal(dir); err != nil {
		t.Fatalf("second remove: %v", err)
	}
}
