package nat

import (
	"net/netip"
	"strings"
	"testing"
)

var testCfg = Config{
	TunInterface:  "mtun0",
	TunnelV4:      netip.MustParsePrefix("192.0.2.1/24"),
	TunnelV6:      netip.MustParsePrefix("fd00:2::1/64"),
	IPv4Interface: "veth0",
}

func TestRenderInet(t *testing.T) {
	got := render(plan(testCfg, true))
	want := `table inet mirage {
	chain forward {
		type filter hook forward priority filter - 1; policy accept;
		iifname "mtun0" accept
		oifname "mtun0" accept
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 192.0.2.0/24 oifname "veth0" masquerade
		ip6 saddr fd00:2::/64 oifname != "mtun0" masquerade
	}
}
`
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestRenderSplitV4Only(t *testing.T) {
	cfg := testCfg
	cfg.TunnelV6 = netip.Prefix{}
	got := render(plan(cfg, false))
	want := `table inet mirage {
	chain forward {
		type filter hook forward priority filter - 1; policy accept;
		iifname "mtun0" accept
		oifname "mtun0" accept
	}
}
table ip mirage {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 192.0.2.0/24 oifname "veth0" masquerade
	}
}
`
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := testCfg.validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.TunInterface = "" }, "invalid tun interface name"},
		{func(c *Config) { c.TunInterface = "x\"y" }, "invalid tun interface name"},
		{func(c *Config) { c.TunnelV4, c.TunnelV6 = netip.Prefix{}, netip.Prefix{} }, "no tunnel network"},
		{func(c *Config) { c.TunnelV4 = netip.MustParsePrefix("fd00::/64") }, "is not IPv4"},
		{func(c *Config) { c.TunnelV6 = netip.MustParsePrefix("192.0.2.0/24") }, "is not IPv6"},
		{func(c *Config) { c.IPv6Interface = "an-interface-name-too-long" }, "invalid ipv6 interface name"},
		{func(c *Config) { c.Backend = "pf" }, `unknown backend "pf"`},
	} {
		cfg := testCfg
		c.mod(&cfg)
		if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("validate = %v, want error containing %q", err, c.want)
		}
	}
}
