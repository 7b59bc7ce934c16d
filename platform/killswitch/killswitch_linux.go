package killswitch

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Enable installs (or atomically replaces) the kill switch table. The
// table stays after the process exits, until Disable.
func Enable(log *slog.Logger, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	var lans []netip.Prefix
	if cfg.AllowLAN {
		var err error
		if lans, err = lanPrefixes(log, cfg.TunInterface, false); err != nil {
			return fmt.Errorf("killswitch: list local subnets: %w", err)
		}
	}
	chains := rules(cfg, lans)
	if err := install(chains); err != nil {
		return fmt.Errorf("killswitch: install nftables table %s: %w", TableName, err)
	}
	log.Info("kill switch enabled", "rules", render(chains))
	return nil
}

// Disable removes the kill switch table; a missing table is not an error.
func Disable(log *slog.Logger) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("killswitch: open nftables: %w", err)
	}
	t, err := find(c)
	if err != nil {
		return err
	}
	if t == nil {
		return nil
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("killswitch: delete nftables table %s: %w", TableName, err)
	}
	log.Info("kill switch disabled")
	return nil
}

// Active reports whether the kill switch table is installed.
func Active() (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("killswitch: open nftables: %w", err)
	}
	t, err := find(c)
	return t != nil, err
}

func find(c *nftables.Conn) (*nftables.Table, error) {
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("killswitch: list nftables tables: %w", err)
	}
	for _, t := range ts {
		if t.Name == TableName {
			return t, nil
		}
	}
	return nil, nil
}

// install replaces the table in one netlink batch: add (so the delete
// cannot fail on a missing table), delete, add with the new rules. The
// kernel applies the batch atomically, so there is never a moment without
// the table.
func install(chains []chain) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	tbl := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	c.AddTable(tbl)
	c.DelTable(tbl)
	nt := c.AddTable(tbl)
	drop := nftables.ChainPolicyDrop
	for _, ch := range chains {
		hook := nftables.ChainHookOutput
		if ch.name == "forward" {
			hook = nftables.ChainHookForward
		}
		nc := c.AddChain(&nftables.Chain{
			Name:     ch.name,
			Table:    nt,
			Type:     nftables.ChainTypeFilter,
			Hooknum:  hook,
			Priority: nftables.ChainPriorityFilter,
			Policy:   &drop,
		})
		for _, r := range ch.rules {
			c.AddRule(&nftables.Rule{Table: nt, Chain: nc, Exprs: exprs(r)})
		}
	}
	return c.Flush()
}

// exprs translates a rule into nftables expressions, in the same shape nft
// itself generates so `nft list` prints it readably.
func exprs(r rule) []expr.Any {
	var e []expr.Any
	cmp := func(data []byte) {
		e = append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data})
	}
	if r.iif != "" {
		e = append(e, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1})
		cmp(ifname(r.iif))
	}
	if r.oif != "" {
		e = append(e, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1})
		cmp(ifname(r.oif))
	}
	if r.daddr.IsValid() {
		proto, off, n := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
		if r.daddr.Addr().Is6() {
			proto, off, n = unix.NFPROTO_IPV6, 24, 16
		}
		e = append(e, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1})
		cmp([]byte{proto})
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n})
		if !r.daddr.IsSingleIP() {
			mask := net.CIDRMask(r.daddr.Bits(), r.daddr.Addr().BitLen())
			e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)})
		}
		cmp(r.daddr.Addr().AsSlice())
	}
	switch r.l4proto {
	case "tcp", "udp":
		p := byte(unix.IPPROTO_TCP)
		if r.l4proto == "udp" {
			p = unix.IPPROTO_UDP
		}
		e = append(e, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1})
		cmp([]byte{p})
		if r.sport != 0 {
			e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2})
			cmp(port(r.sport))
		}
		if r.dport != 0 {
			e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
			cmp(port(r.dport))
		}
	case "icmpv6":
		e = append(e, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1})
		cmp([]byte{unix.NFPROTO_IPV6})
		e = append(e, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1})
		cmp([]byte{unix.IPPROTO_ICMPV6})
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1})
		cmp([]byte{r.icmpType})
	}
	kind := expr.VerdictAccept
	if r.verdict == "drop" {
		kind = expr.VerdictDrop
	}
	return append(e, &expr.Verdict{Kind: kind})
}

func port(p uint16) []byte { return []byte{byte(p >> 8), byte(p)} }

// ifname is an interface name as the kernel compares it (IFNAMSIZ, NUL padded).
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}
