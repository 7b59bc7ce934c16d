package nat

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Rules is the installed NAT. Close removes it and restores the forwarding
// sysctls it changed.
type Rules struct {
	cfg    Config
	log    *slog.Logger
	mu     sync.Mutex
	tables []table
	sysctl []sysctlWas
	closed bool
}

// sysctlWas is a sysctl file and its value before Setup.
type sysctlWas struct {
	Path  string `json:"path"`
	Value string `json:"value"`
}

const (
	ipv4Forward = "/proc/sys/net/ipv4/ip_forward"
	ipv6Forward = "/proc/sys/net/ipv6/conf/all/forwarding"
)

// Setup installs forwarding and masquerading for cfg in the mirage table,
// replacing a leftover of a crashed run, and enables IP forwarding.
func Setup(log *slog.Logger, cfg Config) (*Rules, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Backend == "iptables" {
		return nil, fmt.Errorf("nat: the iptables backend is not implemented, use nftables: %w", errors.ErrUnsupported)
	}
	if err := CleanupLeftovers(log, cfg.StateDir); err != nil {
		return nil, err
	}
	tables := plan(cfg, true)
	err := install(tables)
	if err != nil {
		// Kernels before 5.2 have no nat chains in the inet family.
		log.Info("inet nat unavailable, using ip/ip6 nat tables", "err", err)
		deleteTables()
		tables = plan(cfg, false)
		if err2 := install(tables); err2 != nil {
			deleteTables()
			return nil, fmt.Errorf("nat: install nftables rules: %w", errors.Join(err, err2))
		}
	}
	r := &Rules{cfg: cfg, log: log, tables: tables}
	want := []string{ipv4Forward}
	if cfg.TunnelV6.IsValid() {
		want = append(want, ipv6Forward)
	}
	if err := r.enableForwarding(want); err != nil {
		r.Close()
		return nil, err
	}
	log.Info("nat installed", "rules", render(tables))
	return r, nil
}

// Close deletes the mirage table(s) and restores the forwarding sysctls.
func (r *Rules) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	var errs []error
	if err := restoreSysctls(r.sysctl, r.cfg.StateDir); err != nil {
		errs = append(errs, err)
	}
	if err := deleteTables(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("nat: remove: %w", err)
	}
	return nil
}

// CleanupLeftovers undoes what a crashed run left: the forwarding sysctls
// it changed go back to the values journaled in stateDir (when given), and
// its mirage tables are deleted. Having nothing to undo is not an error.
func CleanupLeftovers(log *slog.Logger, stateDir string) error {
	if err := restoreJournaled(log, stateDir); err != nil {
		return err
	}
	n, err := countTables()
	if err != nil {
		return fmt.Errorf("nat: list nftables tables: %w", err)
	}
	if n == 0 {
		return nil
	}
	log.Info("removing leftover nat table", "table", TableName, "count", n)
	if err := deleteTables(); err != nil {
		return fmt.Errorf("nat: remove leftover table: %w", err)
	}
	return nil
}

var families = map[string]nftables.TableFamily{
	"inet": nftables.TableFamilyINet,
	"ip":   nftables.TableFamilyIPv4,
	"ip6":  nftables.TableFamilyIPv6,
}

func countTables() (int, error) {
	c, err := nftables.New()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, f := range []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		ts, err := c.ListTablesOfFamily(f)
		if err != nil {
			return 0, err
		}
		for _, t := range ts {
			if t.Name == TableName {
				n++
			}
		}
	}
	return n, nil
}

// deleteTables deletes every mirage table that exists.
func deleteTables() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	for _, f := range []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		ts, err := c.ListTablesOfFamily(f)
		if err != nil {
			return err
		}
		for _, t := range ts {
			if t.Name == TableName {
				c.DelTable(t)
			}
		}
	}
	return c.Flush()
}

// install adds tables in one netlink batch (all or nothing).
func install(tables []table) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	accept := nftables.ChainPolicyAccept
	for _, t := range tables {
		nt := c.AddTable(&nftables.Table{Name: TableName, Family: families[t.family]})
		for _, ch := range t.chains {
			typ, hook := nftables.ChainTypeFilter, nftables.ChainHookForward
			if ch.kind == "nat" {
				typ, hook = nftables.ChainTypeNAT, nftables.ChainHookPostrouting
			}
			nc := c.AddChain(&nftables.Chain{
				Name:     ch.name,
				Table:    nt,
				Type:     typ,
				Hooknum:  hook,
				Priority: nftables.ChainPriorityRef(nftables.ChainPriority(ch.priority)),
				Policy:   &accept,
			})
			for _, r := range ch.rules {
				c.AddRule(&nftables.Rule{Table: nt, Chain: nc, Exprs: exprs(r)})
			}
		}
	}
	return c.Flush()
}

// exprs translates a plan rule into nftables expressions.
func exprs(r rule) []expr.Any {
	var e []expr.Any
	cmp := func(op expr.CmpOp, data []byte) {
		e = append(e, &expr.Cmp{Op: op, Register: 1, Data: data})
	}
	if r.nfproto != "" {
		proto := byte(unix.NFPROTO_IPV4)
		if r.nfproto == "ip6" {
			proto = unix.NFPROTO_IPV6
		}
		e = append(e, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1})
		cmp(expr.CmpOpEq, []byte{proto})
	}
	if r.iif != "" {
		e = append(e, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1})
		cmp(expr.CmpOpEq, ifname(r.iif))
	}
	if r.saddr.IsValid() {
		off, n := uint32(12), uint32(4)
		if r.saddr.Addr().Is6() {
			off, n = 8, 16
		}
		mask := net.CIDRMask(r.saddr.Bits(), r.saddr.Addr().BitLen())
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)})
		cmp(expr.CmpOpEq, r.saddr.Addr().AsSlice())
	}
	if r.oif != "" {
		e = append(e, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1})
		cmp(expr.CmpOpEq, ifname(r.oif))
	}
	if r.notOif != "" {
		e = append(e, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1})
		cmp(expr.CmpOpNeq, ifname(r.notOif))
	}
	switch r.verdict {
	case "masquerade":
		e = append(e, &expr.Masq{})
	default:
		e = append(e, &expr.Verdict{Kind: expr.VerdictAccept})
	}
	return e
}

// ifname is an interface name as the kernel compares it (IFNAMSIZ, NUL padded).
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// Usage counts the conntrack entries of the tunnel networks (a netlink
// dump of the table, so its cost grows with the host's flows; metrics read
// it once per scrape) and the table's fill.
func (r *Rules) Usage() (Usage, error) {
	var u Usage
	var err error
	if u.Entries, err = readInt(conntrackCount); err != nil {
		return u, fmt.Errorf("nat usage: %w", err)
	}
	if u.Max, err = readInt(conntrackMax); err != nil {
		return u, fmt.Errorf("nat usage: %w", err)
	}
	for _, f := range []struct {
		prefix netip.Prefix
		family netlink.InetFamily
		n      *int
	}{{r.cfg.TunnelV4, unix.AF_INET, &u.Flows4}, {r.cfg.TunnelV6, unix.AF_INET6, &u.Flows6}} {
		if !f.prefix.IsValid() {
			continue
		}
		flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, f.family)
		if err != nil {
			return u, fmt.Errorf("nat usage: conntrack dump: %w", err)
		}
		for _, fl := range flows {
			if a, ok := netip.AddrFromSlice(fl.Forward.SrcIP); ok && f.prefix.Masked().Contains(a.Unmap()) {
				*f.n++
			}
		}
	}
	return u, nil
}

const (
	conntrackCount = "/proc/sys/net/netfilter/nf_conntrack_count"
	conntrackMax   = "/proc/sys/net/netfilter/nf_conntrack_max"
)

func readInt(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}
