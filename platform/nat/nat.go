// Package nat sets up the server's forwarding and masquerading for the
// tunnel networks, in mirage's own nftables table so nothing else in the
// firewall is touched, and removes it again on Close.
package nat

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// TableName is the nftables table mirage owns (in the inet family, plus ip
// and ip6 when the kernel lacks inet nat).
const TableName = "mirage"

// Config is what to forward and masquerade.
type Config struct {
	// TunInterface is the server's TUN device.
	TunInterface string
	// TunnelV4 is the clients' IPv4 network.
	TunnelV4 netip.Prefix
	// TunnelV6 is the clients' IPv6 network; zero means none.
	TunnelV6 netip.Prefix
	// IPv4Interface and IPv6Interface are the egress interfaces; empty
	// masquerades out of every interface except the TUN.
	IPv4Interface, IPv6Interface string
	// Backend is "auto" (or empty), "nftables" or "iptables".
	Backend string
	// StateDir journals the forwarding settings Setup changes (Linux; the
	// pf implementation keeps its own state file), so that the next run's
	// CleanupLeftovers restores them after a crash. Empty: not journaled.
	StateDir string
}

// validate rejects a Config that cannot be set up, naming the bad field.
func (c Config) validate() error {
	if err := checkIfname("tun interface", c.TunInterface, false); err != nil {
		return err
	}
	if !c.TunnelV4.IsValid() && !c.TunnelV6.IsValid() {
		return errors.New("nat: no tunnel network (tunnel_network) given")
	}
	if c.TunnelV4.IsValid() && !c.TunnelV4.Addr().Is4() {
		return fmt.Errorf("nat: tunnel network %s is not IPv4", c.TunnelV4)
	}
	if c.TunnelV6.IsValid() && (!c.TunnelV6.Addr().Is6() || c.TunnelV6.Addr().Is4In6()) {
		return fmt.Errorf("nat: tunnel network v6 %s is not IPv6", c.TunnelV6)
	}
	if err := checkIfname("ipv4 interface", c.IPv4Interface, true); err != nil {
		return err
	}
	if err := checkIfname("ipv6 interface", c.IPv6Interface, true); err != nil {
		return err
	}
	switch c.Backend {
	case "", "auto", "nftables", "iptables":
	default:
		return fmt.Errorf("nat: unknown backend %q (want auto, nftables or iptables)", c.Backend)
	}
	return nil
}

func checkIfname(what, name string, optional bool) error {
	if name == "" && optional {
		return nil
	}
	if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t\n\"\x00") {
		return fmt.Errorf("nat: invalid %s name %q", what, name)
	}
	return nil
}

// rule is one firewall rule of the plan: matches, then a verdict.
type rule struct {
	nfproto string       // "ip" or "ip6" in an inet chain, else ""
	saddr   netip.Prefix // zero = any
	iif     string
	oif     string
	notOif  string
	verdict string // "accept" or "masquerade"
}

// chain is a base chain of the plan.
type chain struct {
	name     string
	kind     string // "filter" or "nat"
	hook     string // "forward" or "postrouting"
	priority int32
	rules    []rule
}

// table is a table of the plan.
type table struct {
	family string // "inet", "ip" or "ip6"
	chains []chain
}

// plan is the ruleset for cfg. With inetNAT the nat chain lives in the inet
// table (kernel >= 5.2); otherwise in separate ip and ip6 tables.
func plan(cfg Config, inetNAT bool) []table {
	fwd := chain{name: "forward", kind: "filter", hook: "forward", priority: -1, rules: []rule{
		{iif: cfg.TunInterface, verdict: "accept"},
		{oif: cfg.TunInterface, verdict: "accept"},
	}}
	masq := func(proto string, p netip.Prefix, out string) rule {
		r := rule{saddr: p, verdict: "masquerade"}
		if inetNAT {
			r.nfproto = proto
		}
		if out != "" {
			r.oif = out
		} else {
			r.notOif = cfg.TunInterface
		}
		return r
	}
	post := func() chain { return chain{name: "postrouting", kind: "nat", hook: "postrouting", priority: 100} }
	inet := table{family: "inet", chains: []chain{fwd}}
	if inetNAT {
		c := post()
		if cfg.TunnelV4.IsValid() {
			c.rules = append(c.rules, masq("ip", cfg.TunnelV4.Masked(), cfg.IPv4Interface))
		}
		if cfg.TunnelV6.IsValid() {
			c.rules = append(c.rules, masq("ip6", cfg.TunnelV6.Masked(), cfg.IPv6Interface))
		}
		inet.chains = append(inet.chains, c)
		return []table{inet}
	}
	out := []table{inet}
	if cfg.TunnelV4.IsValid() {
		c := post()
		c.rules = []rule{masq("ip", cfg.TunnelV4.Masked(), cfg.IPv4Interface)}
		out = append(out, table{family: "ip", chains: []chain{c}})
	}
	if cfg.TunnelV6.IsValid() {
		c := post()
		c.rules = []rule{masq("ip6", cfg.TunnelV6.Masked(), cfg.IPv6Interface)}
		out = append(out, table{family: "ip6", chains: []chain{c}})
	}
	return out
}

// render prints the plan in nft syntax (for logs and tests).
func render(tables []table) string {
	var b strings.Builder
	for _, t := range tables {
		fmt.Fprintf(&b, "table %s %s {\n", t.family, TableName)
		for _, c := range t.chains {
			prio := "srcnat"
			if c.kind == "filter" {
				prio = fmt.Sprintf("filter %d", c.priority)
				prio = strings.Replace(prio, " -", " - ", 1)
			}
			fmt.Fprintf(&b, "\tchain %s {\n\t\ttype %s hook %s priority %s; policy accept;\n", c.name, c.kind, c.hook, prio)
			for _, r := range c.rules {
				var m []string
				if r.iif != "" {
					m = append(m, fmt.Sprintf("iifname %q", r.iif))
				}
				if r.saddr.IsValid() {
					fam := "ip"
					if r.saddr.Addr().Is6() {
						fam = "ip6"
					}
					m = append(m, fmt.Sprintf("%s saddr %s", fam, r.saddr))
				}
				if r.oif != "" {
					m = append(m, fmt.Sprintf("oifname %q", r.oif))
				}
				if r.notOif != "" {
					m = append(m, fmt.Sprintf("oifname != %q", r.notOif))
				}
				fmt.Fprintf(&b, "\t\t%s %s\n", strings.Join(m, " "), r.verdict)
			}
			b.WriteString("\t}\n")
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// Usage is how much of the kernel's connection tracking the NAT uses, for
// metrics: masqueraded flows need a conntrack entry each, and a full table
// drops new connections.
type Usage struct {
	// Flows4 and Flows6 are the tracked flows from the tunnel networks.
	Flows4, Flows6 int
	// Entries and Max are the whole table (all of the host's flows).
	Entries, Max int
}
