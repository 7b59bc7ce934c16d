package osnet

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/jackpal/gateway"
	"github.com/mirage-vpn/mirage/core/netcfg"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeProto marks the routes mirage adds ("proto 109" in ip route), so a
// delete can never remove a route somebody else added for the same prefix.
const routeProto netlink.RouteProtocol = 109

// configurator is the Linux netcfg.Configurator (netlink + DNS backends).
type configurator struct {
	log      *slog.Logger
	stateDir string
	dns      dnsEnv

	mu     sync.Mutex
	cur    journal // what is applied (and journaled)
	closed bool
}

// originPath is how a destination was reached before the tunnel.
type originPath struct {
	gw  netip.Addr // invalid when on-link
	dev string
}

// New returns the Linux configurator keeping its journal in stateDir. It
// fails if a journal of an earlier run is still there: call Cleanup first.
func New(log *slog.Logger, stateDir string) (netcfg.Configurator, error) {
	return newConfigurator(log, stateDir, osDNSEnv())
}

func newConfigurator(log *slog.Logger, stateDir string, env dnsEnv) (*configurator, error) {
	if stateDir == "" {
		return nil, errors.New("os network configuration: state directory is empty")
	}
	_, ok, err := loadJournal(stateDir)
	if err != nil {
		return nil, err
	}
	if ok {
		return nil, fmt.Errorf("os network configuration: leftover state in %s; run cleanup first", journalPath(stateDir))
	}
	return &configurator{log: log, stateDir: stateDir, dns: env}, nil
}

// Set applies cfg, adding what is new and removing what is no longer wanted.
func (c *configurator) Set(cfg netcfg.Config) error {
	if err := checkConfig(cfg); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("os network configuration: Set after Close")
	}
	if c.cur.Interface != "" && c.cur.Interface != cfg.Interface {
		if err := c.undoLocked(); err != nil {
			return err
		}
	}
	link, err := netlink.LinkByName(cfg.Interface)
	if err != nil {
		return fmt.Errorf("set network config: find interface %q: %w", cfg.Interface, err)
	}

	// Original paths are looked up before any tunnel route changes.
	var outside []route
	for _, a := range cfg.Bypass {
		r, err := c.outsideRoute(hostPrefix(a), link.Attrs().Index)
		if err != nil {
			return fmt.Errorf("set network config: bypass %s: %w", a, err)
		}
		outside = appendRoute(outside, r)
	}
	for _, p := range cfg.ExcludedRoutes {
		r, err := c.outsideRoute(p.Masked(), link.Attrs().Index)
		if err != nil {
			c.log.Warn("excluded route has no original path; not installed", "prefix", p, "err", err)
			continue
		}
		outside = appendRoute(outside, r)
	}
	var inside []route
	for _, p := range splitDefault(cfg.Routes) {
		inside = appendRoute(inside, route{Dst: p, Dev: cfg.Interface})
	}
	want := journal{Interface: cfg.Interface, Addrs: slices.Clone(cfg.Addrs), Routes: append(outside, inside...), DNS: c.cur.DNS}
	prev := c.cur

	// Journal the union first, so a crash mid-way leaves nothing unrecorded.
	union := want
	union.Addrs = unionOf(c.cur.Addrs, want.Addrs)
	union.Routes = unionOf(c.cur.Routes, want.Routes)
	if err := saveJournal(c.stateDir, union); err != nil {
		return err
	}
	c.cur = union

	if cfg.MTU != 0 {
		if err := netlink.LinkSetMTU(link, cfg.MTU); err != nil {
			return fmt.Errorf("set network config: mtu %d on %s: %w", cfg.MTU, cfg.Interface, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set network config: bring %s up: %w", cfg.Interface, err)
	}
	for _, p := range want.Addrs {
		if err := netlink.AddrReplace(link, toAddr(p)); err != nil {
			return fmt.Errorf("set network config: add address %s to %s: %w", p, cfg.Interface, err)
		}
	}
	// Outside routes first so the server stays reachable, then the tunnel.
	owned := make([]route, 0, len(want.Routes))
	for _, r := range want.Routes {
		if slices.Contains(prev.Routes, r) {
			// Ours already, but the kernel may have deleted it meanwhile
			// (a route via a gateway goes when its link goes down):
			// replace is idempotent and puts it back.
			if err := replaceRoute(r); err != nil {
				return fmt.Errorf("set network config: re-install route %s: %w", r, err)
			}
			owned = append(owned, r)
			continue
		}
		mine, err := true, error(nil)
		if slices.ContainsFunc(prev.Routes, sameDst(r)) {
			err = replaceRoute(r) // ours, with a new gateway or device
		} else {
			mine, err = addRoute(r)
		}
		if err != nil {
			return fmt.Errorf("set network config: add route %s: %w", r, err)
		}
		if mine {
			owned = append(owned, r)
		}
	}
	// Remove what the new config no longer wants, tunnel routes first.
	for i := len(prev.Routes) - 1; i >= 0; i-- {
		if r := prev.Routes[i]; !slices.ContainsFunc(owned, sameDst(r)) {
			if err := delRoute(r); err != nil {
				return fmt.Errorf("set network config: remove route %s: %w", r, err)
			}
		}
	}
	for _, p := range prev.Addrs {
		if !slices.Contains(want.Addrs, p) {
			if err := delAddr(cfg.Interface, p); err != nil {
				return fmt.Errorf("set network config: remove address %s: %w", p, err)
			}
		}
	}
	want.Routes = owned
	if err := saveJournal(c.stateDir, want); err != nil {
		return err
	}
	c.cur = want
	return c.setDNSLocked(cfg)
}

// setDNSLocked applies cfg.DNS; empty DNS reverts an earlier change.
func (c *configurator) setDNSLocked(cfg netcfg.Config) error {
	if len(cfg.DNS) == 0 {
		if c.cur.DNS == nil {
			return nil
		}
		if err := c.dns.revertDNS(c.log, c.cur.DNS); err != nil {
			return err
		}
		c.cur.DNS = nil
		return saveJournal(c.stateDir, c.cur)
	}
	if c.cur.DNS != nil && slices.Equal(c.cur.DNS.Servers, cfg.DNS) {
		return nil
	}
	st, err := c.dns.setDNS(c.cur.DNS, cfg.Interface, slices.Clone(cfg.DNS), func(st *dnsState) error {
		j := c.cur
		j.DNS = st
		if err := saveJournal(c.stateDir, j); err != nil {
			return err
		}
		c.cur = j
		return nil
	})
	if st != nil {
		c.cur.DNS = st
	}
	if err != nil {
		return fmt.Errorf("set network config: %w", err)
	}
	return saveJournal(c.stateDir, c.cur)
}

// Close removes every route and address Set added, restores DNS and
// removes the journal. The TUN device itself belongs to its creator.
func (c *configurator) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return c.undoLocked()
}

// undoLocked reverts c.cur; the journal stays when something failed, so
// Cleanup can try again.
func (c *configurator) undoLocked() error {
	if c.cur.Interface == "" {
		return nil
	}
	if err := undo(c.log, c.dns, c.cur); err != nil {
		return fmt.Errorf("restore network config: %w", err)
	}
	c.cur = journal{}
	return removeJournal(c.stateDir)
}

// undo reverts what j records, in reverse order: DNS, routes, addresses.
// Things already gone are not errors.
func undo(log *slog.Logger, env dnsEnv, j journal) error {
	var errs []error
	if j.DNS != nil {
		errs = append(errs, env.revertDNS(log, j.DNS))
	}
	for i := len(j.Routes) - 1; i >= 0; i-- {
		errs = append(errs, delRoute(j.Routes[i]))
	}
	for i := len(j.Addrs) - 1; i >= 0; i-- {
		errs = append(errs, delAddr(j.Interface, j.Addrs[i]))
	}
	return errors.Join(errs...)
}

// Cleanup undoes what the journal in stateDir records (a run that crashed
// or was killed), deletes the leftover TUN device if it still exists and
// removes the journal. Without a journal it does nothing.
func Cleanup(log *slog.Logger, stateDir string) error {
	j, ok, err := loadJournal(stateDir)
	if err != nil || !ok {
		return err
	}
	log.Info("cleaning up network state of an earlier run", "interface", j.Interface,
		"routes", len(j.Routes), "addrs", len(j.Addrs), "dns", j.DNS != nil)
	err = undo(log, osDNSEnv(), j)
	if j.Interface != "" {
		if link, lerr := netlink.LinkByName(j.Interface); lerr == nil && link.Type() == "tuntap" {
			if derr := netlink.LinkDel(link); derr != nil {
				err = errors.Join(err, fmt.Errorf("delete leftover device %s: %w", j.Interface, derr))
			}
		}
	}
	if rerr := removeJournal(stateDir); rerr != nil {
		err = errors.Join(err, rerr)
	}
	if err != nil {
		return fmt.Errorf("clean up network state: %w", err)
	}
	return nil
}

// outsideRoute is the route for dst via its original (pre-tunnel) path.
func (c *configurator) outsideRoute(dst netip.Prefix, tunIdx int) (route, error) {
	o, err := lookupOrigin(dst.Addr(), tunIdx)
	if err != nil {
		return route{}, err
	}
	return route{Dst: dst, Gw: o.gw, Dev: o.dev}, nil
}

// lookupOrigin finds how a is reached outside the tunnel: the kernel's route
// lookup, or (when that already points into the tunnel) the longest match
// of the main table ignoring the tunnel, or the IPv4 default gateway.
func lookupOrigin(a netip.Addr, tunIdx int) (originPath, error) {
	rs, err := netlink.RouteGet(a.AsSlice())
	if err == nil && len(rs) > 0 && rs[0].LinkIndex != tunIdx {
		if rs[0].Type == unix.RTN_LOCAL {
			return originPath{}, fmt.Errorf("%s is a local address", a)
		}
		return pathOf(rs[0].LinkIndex, rs[0].Gw)
	}
	if r, ok := longestMatch(a, tunIdx); ok {
		return pathOf(r.LinkIndex, r.Gw)
	}
	if a.Is4() {
		if gw, gerr := gateway.DiscoverGateway(); gerr == nil {
			if rs, err := netlink.RouteGet(gw); err == nil && len(rs) > 0 && rs[0].LinkIndex != tunIdx {
				return pathOf(rs[0].LinkIndex, gw)
			}
		}
	}
	return originPath{}, fmt.Errorf("no route to %s outside the tunnel", a)
}

func pathOf(linkIndex int, gw net.IP) (originPath, error) {
	link, err := netlink.LinkByIndex(linkIndex)
	if err != nil {
		return originPath{}, fmt.Errorf("interface %d: %w", linkIndex, err)
	}
	o := originPath{dev: link.Attrs().Name}
	if g, ok := netip.AddrFromSlice(gw); ok && !g.IsUnspecified() {
		o.gw = g.Unmap()
	}
	return o, nil
}

// longestMatch is the main-table unicast route for a with the longest
// prefix (lowest metric on ties), ignoring routes into the tunnel.
func longestMatch(a netip.Addr, tunIdx int) (netlink.Route, bool) {
	rs, err := netlink.RouteListFiltered(family(a), &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return netlink.Route{}, false
	}
	best, bestBits, found := netlink.Route{}, -1, false
	for _, r := range rs {
		if r.LinkIndex == tunIdx || r.LinkIndex == 0 || r.Type != unix.RTN_UNICAST {
			continue
		}
		bits := 0
		if r.Dst != nil {
			p, ok := prefixOf(r.Dst)
			if !ok || !p.Contains(a) {
				continue
			}
			bits = p.Bits()
		}
		if bits > bestBits || (bits == bestBits && r.Priority < best.Priority) {
			best, bestBits, found = r, bits, true
		}
	}
	return best, found
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// toNetlink renders r for the main table with mirage's protocol mark.
func toNetlink(r route) (*netlink.Route, error) {
	link, err := netlink.LinkByName(r.Dev)
	if err != nil {
		return nil, fmt.Errorf("find interface %q: %w", r.Dev, err)
	}
	nr := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       ipNet(r.Dst),
		Table:     unix.RT_TABLE_MAIN,
		Protocol:  routeProto,
		Family:    family(r.Dst.Addr()),
	}
	if r.Gw.IsValid() {
		nr.Gw = r.Gw.AsSlice()
	} else if r.Dst.Addr().Is4() {
		nr.Scope = netlink.SCOPE_LINK
	}
	return nr, nil
}

// addRoute adds r. When an identical route not added by mirage is already
// there, mine is false and nothing changes; a different route for the same
// destination is an error, because mirage never replaces foreign routes.
func addRoute(r route) (mine bool, err error) {
	nr, err := toNetlink(r)
	if err != nil {
		return false, err
	}
	err = netlink.RouteAdd(nr)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, unix.EEXIST) {
		return false, err
	}
	existing, lerr := netlink.RouteListFiltered(nr.Family, &netlink.Route{Dst: nr.Dst, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if lerr != nil {
		return false, err
	}
	for _, e := range existing {
		if e.LinkIndex == nr.LinkIndex && e.Gw.Equal(nr.Gw) {
			return e.Protocol == routeProto, nil
		}
	}
	return false, fmt.Errorf("a different route for %s already exists; mirage does not replace routes it did not add", r.Dst)
}

func replaceRoute(r route) error {
	nr, err := toNetlink(r)
	if err != nil {
		return err
	}
	return netlink.RouteReplace(nr)
}

// delRoute deletes r only if it carries mirage's protocol mark; a route
// that is already gone (or whose device is gone) is not an error.
func delRoute(r route) error {
	link, err := netlink.LinkByName(r.Dev)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("remove route %s: %w", r, err)
	}
	nr := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       ipNet(r.Dst),
		Table:     unix.RT_TABLE_MAIN,
		Protocol:  routeProto,
		Family:    family(r.Dst.Addr()),
		Scope:     netlink.SCOPE_NOWHERE, // any scope, as ip route del does
	}
	if r.Gw.IsValid() {
		nr.Gw = r.Gw.AsSlice()
	}
	err = netlink.RouteDel(nr)
	if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove route %s: %w", r, err)
	}
	return nil
}

func toAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: ipNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// delAddr removes p from dev; a missing address or device is not an error.
func delAddr(dev string, p netip.Prefix) error {
	link, err := netlink.LinkByName(dev)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("remove address %s: %w", p, err)
	}
	err = netlink.AddrDel(link, toAddr(p))
	if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove address %s from %s: %w", p, dev, err)
	}
	return nil
}
