package killswitch

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
	"testing"
)

var (
	srv  = netip.MustParseAddrPort("192.0.2.1:443")
	srv6 = netip.MustParseAddrPort("[fd00:2::1]:8443")
)

// linkRules are the tunnel and link-maintenance rules of every output chain.
const linkRules = `		oifname "mtun0" accept
		udp sport 68 udp dport 67 accept
		udp sport 546 udp dport 547 accept
		icmpv6 type nd-router-solicit accept
		icmpv6 type nd-router-advert accept
		icmpv6 type nd-neighbor-solicit accept
		icmpv6 type nd-neighbor-advert accept
`

func TestRender(t *testing.T) {
	lans := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("fd00:7::/64")}
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no LAN", Config{TunInterface: "mtun0", Servers: []netip.AddrPort{srv}}, `table inet mirage-killswitch {
	chain output {
		type filter hook output priority filter; policy drop;
		oifname "lo" accept
		ip daddr 192.0.2.1 tcp dport 443 accept
		ip daddr 192.0.2.1 udp dport 443 accept
` + linkRules + `	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		oifname "mtun0" accept
		iifname "mtun0" accept
	}
}
`},
		{"LAN", Config{TunInterface: "mtun0", Servers: []netip.AddrPort{srv}, AllowLAN: true}, `table inet mirage-killswitch {
	chain output {
		type filter hook output priority filter; policy drop;
		oifname "lo" accept
		ip daddr 192.0.2.1 tcp dport 443 accept
		ip daddr 192.0.2.1 udp dport 443 accept
` + linkRules + `		ip daddr 192.0.2.0/24 accept
		ip6 daddr fd00:7::/64 accept
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		oifname "mtun0" accept
		iifname "mtun0" accept
		ip daddr 192.0.2.0/24 accept
		ip6 daddr fd00:7::/64 accept
	}
}
`},
		{"IPv6 server, 4in6 server, several servers", Config{TunInterface: "mtun0", Servers: []netip.AddrPort{srv6, netip.MustParseAddrPort("[::ffff:203.0.113.9]:53"), srv}}, `table inet mirage-killswitch {
	chain output {
		type filter hook output priority filter; policy drop;
		oifname "lo" accept
		ip6 daddr fd00:2::1 tcp dport 8443 accept
		ip6 daddr fd00:2::1 udp dport 8443 accept
		ip daddr 203.0.113.9 tcp dport 53 accept
		ip daddr 203.0.113.9 udp dport 53 accept
		ip daddr 192.0.2.1 tcp dport 443 accept
		ip daddr 192.0.2.1 udp dport 443 accept
` + linkRules + `	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		oifname "mtun0" accept
		iifname "mtun0" accept
	}
}
`},
		{"DNS servers with LAN", Config{TunInterface: "mtun0", Servers: []netip.AddrPort{srv}, AllowLAN: true,
			DNS: []netip.Addr{netip.MustParseAddr("198.51.100.53"), netip.MustParseAddr("fd00:5::53")}}, `table inet mirage-killswitch {
	chain output {
		type filter hook output priority filter; policy drop;
		oifname "lo" accept
		ip daddr 192.0.2.1 tcp dport 443 accept
		ip daddr 192.0.2.1 udp dport 443 accept
		ip daddr 198.51.100.53 udp dport 53 accept
		ip daddr 198.51.100.53 tcp dport 53 accept
		ip daddr 198.51.100.53 udp dport 853 accept
		ip daddr 198.51.100.53 tcp dport 853 accept
		ip6 daddr fd00:5::53 udp dport 53 accept
		ip6 daddr fd00:5::53 tcp dport 53 accept
		ip6 daddr fd00:5::53 udp dport 853 accept
		ip6 daddr fd00:5::53 tcp dport 853 accept
		udp dport 53 drop
		tcp dport 53 drop
		udp dport 853 drop
		tcp dport 853 drop
` + linkRules + `		ip daddr 192.0.2.0/24 accept
		ip6 daddr fd00:7::/64 accept
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ip daddr 198.51.100.53 udp dport 53 accept
		ip daddr 198.51.100.53 tcp dport 53 accept
		ip daddr 198.51.100.53 udp dport 853 accept
		ip daddr 198.51.100.53 tcp dport 853 accept
		ip6 daddr fd00:5::53 udp dport 53 accept
		ip6 daddr fd00:5::53 tcp dport 53 accept
		ip6 daddr fd00:5::53 udp dport 853 accept
		ip6 daddr fd00:5::53 tcp dport 853 accept
		udp dport 53 drop
		tcp dport 53 drop
		udp dport 853 drop
		tcp dport 853 drop
		oifname "mtun0" accept
		iifname "mtun0" accept
		ip daddr 192.0.2.0/24 accept
		ip6 daddr fd00:7::/64 accept
	}
}
`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.cfg.validate(); err != nil {
				t.Fatal(err)
			}
			if got := render(rules(c.cfg, lans)); got != c.want {
				t.Fatalf("got:\n%s\nwant:\n%s", got, c.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{TunInterface: "mtun0", Servers: []netip.AddrPort{srv}}
	for _, c := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.TunInterface = "" }, `invalid tun interface name ""`},
		{func(c *Config) { c.TunInterface = "a-name-much-too-long" }, "invalid tun interface name"},
		{func(c *Config) { c.TunInterface = `x"y` }, "invalid tun interface name"},
		{func(c *Config) { c.Servers = nil }, "no server endpoints"},
		{func(c *Config) { c.Servers = []netip.AddrPort{{}} }, "invalid server endpoint"},
		{func(c *Config) { c.Servers = []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:0")} }, "invalid server endpoint"},
		{func(c *Config) { c.Servers = []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:443")} }, "unspecified address"},
		{func(c *Config) { c.DNS = []netip.Addr{{}} }, "invalid DNS server address"},
	} {
		cfg := ok
		c.mod(&cfg)
		err := cfg.validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("validate = %v, want error containing %q", err, c.want)
		}
		// Enable rejects it before touching the firewall, on every OS.
		if err2 := Enable(slog.New(slog.NewTextHandler(io.Discard, nil)), cfg); err2 == nil || err2.Error() != err.Error() {
			t.Errorf("Enable = %v, want %v", err2, err)
		}
	}
}

func TestUnsupportedOS(t *testing.T) {
	switch runtime.GOOS {
	case "linux", "windows", "darwin", "freebsd":
		t.Skip(runtime.GOOS + " has a kill switch")
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	err := Enable(log, Config{TunInterface: "mtun0", Servers: []netip.AddrPort{srv}})
	if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "not supported on this OS yet") {
		t.Errorf("Enable = %v", err)
	}
	if err := Disable(log); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Disable = %v", err)
	}
}
