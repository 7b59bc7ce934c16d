// Package killswitch blocks all traffic that does not go through the tunnel
// (or to the VPN server itself), so a dropped or crashed tunnel cannot leak
// traffic onto the physical network. The rules live in mirage's own
// nftables table, which deliberately outlives the process: after a crash
// traffic stays blocked until Disable is called.
//
// Choices:
//   - There is no "ct state established,related accept": a connection
//     opened outside the tunnel before Enable must not keep flowing after
//     it. Replies to connections arriving on the tunnel (or the LAN, with
//     AllowLAN) are allowed by their output interface or address instead.
//     Consequently an outside host cannot get answers from this machine.
//   - Loopback and the server endpoints are allowed first (a server on
//     port 53 or 853 keeps working); then DNS (udp/tcp 53 and 853) is
//     allowed only to Config.DNS and dropped to anything else, on every
//     interface including the tunnel and the LAN; only then come the
//     tunnel, link-maintenance (DHCP, ICMPv6 ND) and LAN rules.
//   - An empty Config.DNS adds no DNS rules: DNS then follows the general
//     rules (tunnel allowed, outside blocked, LAN allowed with AllowLAN).
//   - The forward chain (containers, VMs) gets the DNS rules, the tunnel
//     in both directions and, with AllowLAN, the LAN subnets.
package killswitch

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// TableName is the nftables table (family inet) the kill switch owns.
const TableName = "mirage-killswitch"

// Config is what the kill switch lets through.
type Config struct {
	// TunInterface is the tunnel device; all traffic on it is allowed
	// (except DNS to resolvers not in DNS).
	TunInterface string
	// Servers are the transport's server endpoints; TCP and UDP to them
	// are allowed on any interface.
	Servers []netip.AddrPort
	// AllowLAN allows the directly connected subnets of the other
	// interfaces, read when Enable is called.
	AllowLAN bool
	// DNS are the only resolvers DNS (udp/tcp 53 and 853) may go to, on
	// any interface. Empty means no DNS-specific rules.
	DNS []netip.Addr
}

// validate rejects a Config that cannot be installed, naming the bad field.
func (c Config) validate() error {
	if c.TunInterface == "" || len(c.TunInterface) > 15 || strings.ContainsAny(c.TunInterface, "/ \t\n\"\x00") {
		return fmt.Errorf("killswitch: invalid tun interface name %q", c.TunInterface)
	}
	if len(c.Servers) == 0 {
		return errors.New("killswitch: no server endpoints given (the tunnel could not reconnect)")
	}
	for _, s := range c.Servers {
		if !s.IsValid() || !s.Addr().IsValid() || s.Port() == 0 {
			return fmt.Errorf("killswitch: invalid server endpoint %q", s)
		}
		if s.Addr().IsUnspecified() {
			return fmt.Errorf("killswitch: server endpoint %s has an unspecified address", s)
		}
	}
	for _, d := range c.DNS {
		if !d.IsValid() || d.IsUnspecified() {
			return fmt.Errorf("killswitch: invalid DNS server address %q", d)
		}
	}
	return nil
}

// rule is one firewall rule: matches (zero values match anything), then a
// verdict.
type rule struct {
	iif      string
	oif      string
	daddr    netip.Prefix
	l4proto  string // "tcp", "udp" or "icmpv6"
	sport    uint16
	dport    uint16
	icmpType uint8 // with l4proto "icmpv6"
	verdict  string
}

// chain is a base chain with policy drop.
type chain struct {
	name  string // also the hook: "output" or "forward"
	rules []rule
}

// dnsPorts are the DNS ports (plain DNS, DNS over TLS/QUIC).
var dnsPorts = []uint16{53, 853}

// ndTypes are the ICMPv6 types IPv6 needs to keep the link working: router
// solicitation/advertisement and neighbor solicitation/advertisement.
var ndTypes = []uint8{133, 134, 135, 136}

// addr unmaps a 4-in-6 address so it matches IPv4 packets.
func addr(a netip.Addr) netip.Addr { return a.Unmap() }

// host is the single-address prefix of a.
func host(a netip.Addr) netip.Prefix {
	a = addr(a)
	return netip.PrefixFrom(a, a.BitLen())
}

// rules is the ruleset for cfg with the given LAN subnets (ignored unless
// cfg.AllowLAN).
func rules(cfg Config, lans []netip.Prefix) []chain {
	var dns []rule
	if len(cfg.DNS) > 0 {
		for _, d := range cfg.DNS {
			for _, p := range dnsPorts {
				dns = append(dns,
					rule{daddr: host(d), l4proto: "udp", dport: p, verdict: "accept"},
					rule{daddr: host(d), l4proto: "tcp", dport: p, verdict: "accept"})
			}
		}
		for _, p := range dnsPorts {
			dns = append(dns,
				rule{l4proto: "udp", dport: p, verdict: "drop"},
				rule{l4proto: "tcp", dport: p, verdict: "drop"})
		}
	}
	var lan []rule
	if cfg.AllowLAN {
		for _, p := range lans {
			lan = append(lan, rule{daddr: p.Masked(), verdict: "accept"})
		}
	}

	out := []rule{{oif: "lo", verdict: "accept"}}
	for _, s := range cfg.Servers {
		out = append(out,
			rule{daddr: host(s.Addr()), l4proto: "tcp", dport: s.Port(), verdict: "accept"},
			rule{daddr: host(s.Addr()), l4proto: "udp", dport: s.Port(), verdict: "accept"})
	}
	out = append(out, dns...)
	out = append(out,
		rule{oif: cfg.TunInterface, verdict: "accept"},
		rule{l4proto: "udp", sport: 68, dport: 67, verdict: "accept"},
		rule{l4proto: "udp", sport: 546, dport: 547, verdict: "accept"})
	for _, t := range ndTypes {
		out = append(out, rule{l4proto: "icmpv6", icmpType: t, verdict: "accept"})
	}
	out = append(out, lan...)

	fwd := append([]rule(nil), dns...)
	fwd = append(fwd,
		rule{oif: cfg.TunInterface, verdict: "accept"},
		rule{iif: cfg.TunInterface, verdict: "accept"})
	fwd = append(fwd, lan...)
	return []chain{{name: "output", rules: out}, {name: "forward", rules: fwd}}
}

// icmpv6Names are nft's names for ndTypes.
var icmpv6Names = map[uint8]string{
	133: "nd-router-solicit", 134: "nd-router-advert",
	135: "nd-neighbor-solicit", 136: "nd-neighbor-advert",
}

// render prints the ruleset in nft syntax (for logs and tests).
func render(chains []chain) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	for _, c := range chains {
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype filter hook %s priority filter; policy drop;\n", c.name, c.name)
		for _, r := range c.rules {
			var m []string
			if r.iif != "" {
				m = append(m, fmt.Sprintf("iifname %q", r.iif))
			}
			if r.oif != "" {
				m = append(m, fmt.Sprintf("oifname %q", r.oif))
			}
			if r.daddr.IsValid() {
				fam, s := "ip", r.daddr.String()
				if r.daddr.Addr().Is6() {
					fam = "ip6"
				}
				if r.daddr.IsSingleIP() {
					s = r.daddr.Addr().String()
				}
				m = append(m, fmt.Sprintf("%s daddr %s", fam, s))
			}
			if r.sport != 0 {
				m = append(m, fmt.Sprintf("%s sport %d", r.l4proto, r.sport))
			}
			if r.dport != 0 {
				m = append(m, fmt.Sprintf("%s dport %d", r.l4proto, r.dport))
			}
			if r.l4proto == "icmpv6" {
				m = append(m, "icmpv6 type "+icmpv6Names[r.icmpType])
			}
			m = append(m, r.verdict)
			fmt.Fprintf(&b, "\t\t%s\n", strings.Join(m, " "))
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// lanPrefixes are the connected subnets of every interface that is up,
// except loopback and the tunnel. Implausibly wide ones (shorter than /8,
// or /16 for IPv6) are skipped so a misconfigured interface cannot open
// everything; link-local ones too when skipLinkLocal (pf).
func lanPrefixes(log *slog.Logger, tun string, skipLinkLocal bool) ([]netip.Prefix, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, ifc := range ifs {
		if ifc.Name == tun || ifc.Flags&net.FlagLoopback != 0 || ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", ifc.Name, err)
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok || (skipLinkLocal && ip.IsLinkLocalUnicast()) {
				continue
			}
			ip = ip.Unmap()
			ones, _ := ipn.Mask.Size()
			p := netip.PrefixFrom(ip, ones).Masked()
			if !p.IsValid() || (ip.Is4() && ones < 8) || (ip.Is6() && ones < 16) {
				log.Warn("kill switch: not allowing implausibly wide local subnet", "interface", ifc.Name, "subnet", a.String())
				continue
			}
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out, nil
}
