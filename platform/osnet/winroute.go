package osnet

// The Windows configurator's logic: what to apply, in what order, and how
// to undo it. It talks to the OS only through winAPI (IP Helper and the
// registry, implemented in osnet_windows.go), so it has no build tag and
// its golden tests run on every OS.

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/mirage-vpn/mirage/core/netcfg"
)

// winNRPTKey is the registry key name of mirage's NRPT rule. It is fixed,
// so a later run finds and removes the rule of a crashed one.
const winNRPTKey = "{6d697261-6765-4e52-8000-6e7270740000}"

// winIfTypeLoopback is IF_TYPE_SOFTWARE_LOOPBACK, stored in bits 48..63 of
// a LUID.
const winIfTypeLoopback = 24

// winRoute is one IPv4/IPv6 forward table row. An invalid NextHop means
// on-link. Metric is the effective metric (route + interface) in a table
// read from the OS, and the route metric in routes mirage adds (always 0:
// the interface metric decides).
type winRoute struct {
	Dst     netip.Prefix `json:"dst"`
	NextHop netip.Addr   `json:"nexthop,omitzero"`
	LUID    uint64       `json:"luid"`
	Metric  uint32       `json:"metric,omitempty"`
}

func (r winRoute) String() string {
	nh := "on-link"
	if r.NextHop.IsValid() {
		nh = r.NextHop.String()
	}
	return fmt.Sprintf("%s via %s luid %#x metric %d", r.Dst, nh, r.LUID, r.Metric)
}

// winAPI is the seam over the Windows calls the configurator needs.
type winAPI interface {
	// luidByName is the LUID of the interface with that alias.
	luidByName(name string) (uint64, error)
	// setMTU sets the interface's IPv4 or IPv6 NlMtu.
	setMTU(luid uint64, v6 bool, mtu int) error
	// addAddress adds a unicast address; one already there is fine.
	addAddress(luid uint64, p netip.Prefix) error
	// deleteAddress removes one; a missing address or interface is fine.
	deleteAddress(luid uint64, p netip.Prefix) error
	// routeTable lists the IPv4 or IPv6 forward table, with effective
	// metrics.
	routeTable(v6 bool) ([]winRoute, error)
	// addRoute adds r; added is false when an identical row was already
	// there (somebody else's: mirage must not delete it later).
	addRoute(r winRoute) (added bool, err error)
	// deleteRoute removes r; a missing route or interface is fine.
	deleteRoute(r winRoute) error
	// setDNS sets the interface's IPv4 or IPv6 DNS servers (empty clears).
	setDNS(luid uint64, v6 bool, servers []netip.Addr) error
	// nrptGroupPolicy reports whether NRPT rules come from group policy
	// (foreign rules under the policy key): the local table is then
	// ignored by the DNS client, so mirage's rule must go there too.
	nrptGroupPolicy() (bool, error)
	// setNRPT writes the catch-all rule key (under the policy key when gp)
	// sending every name to servers.
	setNRPT(gp bool, key string, servers []netip.Addr) error
	// deleteNRPT removes the rule; a missing key is fine.
	deleteNRPT(gp bool, key string) error
	// refreshPolicy makes the DNS client reread group policy NRPT rules.
	refreshPolicy() error
	// flushResolverCache drops cached answers obtained outside the tunnel.
	flushResolverCache() error
}

// winState is the Windows journal state (journal.OS).
type winState struct {
	LUID   uint64         `json:"luid"`
	Addrs  []netip.Prefix `json:"addrs,omitempty"`
	Routes []winRoute     `json:"routes,omitempty"`
	DNS    *winDNSState   `json:"dns,omitempty"`
}

// winDNSState is what was set for DNS.
type winDNSState struct {
	Servers []netip.Addr `json:"servers"`
	// NRPTKey is the rule's key name; GroupPolicy when it was also
	// written under the policy key.
	NRPTKey     string `json:"nrpt_key"`
	GroupPolicy bool   `json:"group_policy,omitempty"`
}

// winConfigurator is the Windows netcfg.Configurator.
type winConfigurator struct {
	log      *slog.Logger
	stateDir string
	api      winAPI

	mu     sync.Mutex
	name   string // interface of cur
	cur    winState
	closed bool
}

func newWinConfigurator(log *slog.Logger, stateDir string, api winAPI) (*winConfigurator, error) {
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
	return &winConfigurator{log: log, stateDir: stateDir, api: api}, nil
}

// save journals st for interface name.
func (c *winConfigurator) save(name string, st winState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode network journal: %w", err)
	}
	if err := saveJournal(c.stateDir, journal{Interface: name, Addrs: st.Addrs, OS: b}); err != nil {
		return err
	}
	c.name, c.cur = name, st
	return nil
}

// Set applies cfg, adding what is new and removing what is no longer
// wanted. The union of old and new is journaled before anything changes.
func (c *winConfigurator) Set(cfg netcfg.Config) error {
	if err := checkConfig(cfg); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("os network configuration: Set after Close")
	}
	luid, err := c.api.luidByName(cfg.Interface)
	if err != nil {
		return fmt.Errorf("set network config: find interface %q: %w", cfg.Interface, err)
	}
	if c.name != "" && (c.name != cfg.Interface || c.cur.LUID != luid) {
		// Another device (or the same name recreated): start over.
		if err := c.undoLocked(); err != nil {
			return err
		}
	}

	// Original paths are looked up before any tunnel route changes,
	// ignoring the tunnel and mirage's own earlier routes.
	tables := map[bool][]winRoute{}
	load := func(v6 bool) ([]winRoute, error) {
		if _, ok := tables[v6]; !ok {
			t, err := c.api.routeTable(v6)
			if err != nil {
				return nil, fmt.Errorf("read routing table: %w", err)
			}
			tables[v6] = t
		}
		return tables[v6], nil
	}
	origin := func(dst netip.Prefix) (winRoute, error) {
		t, err := load(dst.Addr().Is6())
		if err != nil {
			return winRoute{}, err
		}
		o, err := winOrigin(t, dst.Addr(), luid, c.cur.Routes)
		if err != nil {
			return winRoute{}, err
		}
		return winRoute{Dst: dst, NextHop: o.NextHop, LUID: o.LUID}, nil
	}
	// exists reports whether the original path of r is a route for
	// exactly r's destination already (a connected subnet): nothing to add.
	exists := func(r winRoute) bool {
		for _, t := range tables[r.Dst.Addr().Is6()] {
			if t.Dst == r.Dst && t.LUID == r.LUID && t.NextHop == r.NextHop && !slices.Contains(c.cur.Routes, winRoute{Dst: t.Dst, NextHop: t.NextHop, LUID: t.LUID}) {
				return true
			}
		}
		return false
	}
	var outside []winRoute
	for _, a := range cfg.Bypass {
		r, err := origin(hostPrefix(a))
		if err != nil {
			return fmt.Errorf("set network config: bypass %s: %w", a, err)
		}
		if !exists(r) {
			outside = winAppendRoute(outside, r)
		}
	}
	for _, p := range cfg.ExcludedRoutes {
		r, err := origin(p.Masked())
		if err != nil {
			c.log.Warn("excluded route has no original path; not installed", "prefix", p, "err", err)
			continue
		}
		if !exists(r) {
			outside = winAppendRoute(outside, r)
		}
	}
	var inside []winRoute
	for _, p := range splitDefault(cfg.Routes) {
		inside = winAppendRoute(inside, winRoute{Dst: p, LUID: luid})
	}
	want := winState{LUID: luid, Addrs: slices.Clone(cfg.Addrs), Routes: append(outside, inside...), DNS: c.cur.DNS}
	prev := c.cur

	union := want
	union.Addrs = unionOf(prev.Addrs, want.Addrs)
	union.Routes = unionOf(prev.Routes, want.Routes)
	if err := c.save(cfg.Interface, union); err != nil {
		return err
	}

	if cfg.MTU != 0 {
		if err := c.api.setMTU(luid, false, cfg.MTU); err != nil {
			return fmt.Errorf("set network config: ipv4 mtu %d on %s: %w", cfg.MTU, cfg.Interface, err)
		}
		if err := c.api.setMTU(luid, true, cfg.MTU); err != nil {
			// IPv6 can be unbound from an adapter; IPv4 carries on.
			c.log.Warn("cannot set the IPv6 MTU of the tunnel", "interface", cfg.Interface, "err", err)
		}
	}
	for _, p := range want.Addrs {
		if err := c.api.addAddress(luid, p); err != nil {
			return fmt.Errorf("set network config: add address %s to %s: %w", p, cfg.Interface, err)
		}
	}
	// Outside routes first so the server stays reachable, then the tunnel.
	owned := make([]winRoute, 0, len(want.Routes))
	for _, r := range want.Routes {
		if slices.Contains(prev.Routes, r) {
			// Ours already, but Windows may have deleted it meanwhile (a
			// route via a gateway goes when its interface goes down).
			t, err := load(r.Dst.Addr().Is6())
			if err != nil {
				return fmt.Errorf("set network config: %w", err)
			}
			if !slices.ContainsFunc(t, func(e winRoute) bool { return e.Dst == r.Dst && e.LUID == r.LUID && e.NextHop == r.NextHop }) {
				if _, err := c.api.addRoute(r); err != nil {
					return fmt.Errorf("set network config: re-install route %s: %w", r, err)
				}
			}
			owned = append(owned, r)
			continue
		}
		if i := slices.IndexFunc(prev.Routes, winSameDst(r)); i >= 0 {
			// Ours, via a new gateway or interface: replace it.
			if err := c.api.deleteRoute(prev.Routes[i]); err != nil {
				return fmt.Errorf("set network config: replace route %s: %w", prev.Routes[i], err)
			}
		}
		added, err := c.api.addRoute(r)
		if err != nil {
			return fmt.Errorf("set network config: add route %s: %w", r, err)
		}
		if added {
			owned = append(owned, r)
		}
	}
	// Remove what the new config no longer wants, tunnel routes first.
	for i := len(prev.Routes) - 1; i >= 0; i-- {
		if r := prev.Routes[i]; !slices.ContainsFunc(owned, winSameDst(r)) && !slices.ContainsFunc(want.Routes, winSameDst(r)) {
			if err := c.api.deleteRoute(r); err != nil {
				return fmt.Errorf("set network config: remove route %s: %w", r, err)
			}
		}
	}
	for _, p := range prev.Addrs {
		if !slices.Contains(want.Addrs, p) {
			if err := c.api.deleteAddress(luid, p); err != nil {
				return fmt.Errorf("set network config: remove address %s: %w", p, err)
			}
		}
	}
	want.Routes = owned
	if err := c.save(cfg.Interface, want); err != nil {
		return err
	}
	return c.setDNSLocked(cfg.Interface, cfg.DNS)
}

// setDNSLocked sets the tunnel's DNS servers and the catch-all NRPT rule;
// empty servers revert an earlier change.
func (c *winConfigurator) setDNSLocked(name string, servers []netip.Addr) error {
	if len(servers) == 0 {
		if c.cur.DNS == nil {
			return nil
		}
		if err := winRevertDNS(c.api, c.cur.LUID, c.cur.DNS); err != nil {
			return fmt.Errorf("set network config: %w", err)
		}
		st := c.cur
		st.DNS = nil
		return c.save(name, st)
	}
	if c.cur.DNS != nil && slices.Equal(c.cur.DNS.Servers, servers) {
		return nil
	}
	gp, err := c.api.nrptGroupPolicy()
	if err != nil {
		c.log.Warn("cannot tell whether NRPT comes from group policy; assuming not", "err", err)
		gp = false
	}
	st := c.cur
	st.DNS = &winDNSState{Servers: slices.Clone(servers), NRPTKey: winNRPTKey, GroupPolicy: gp || (c.cur.DNS != nil && c.cur.DNS.GroupPolicy)}
	if err := c.save(name, st); err != nil {
		return err
	}
	var v4, v6 []netip.Addr
	for _, s := range servers {
		if s.Is4() {
			v4 = append(v4, s)
		} else {
			v6 = append(v6, s)
		}
	}
	if err := c.api.setDNS(st.LUID, false, v4); err != nil {
		return fmt.Errorf("set network config: ipv4 dns servers: %w", err)
	}
	if err := c.api.setDNS(st.LUID, true, v6); err != nil {
		return fmt.Errorf("set network config: ipv6 dns servers: %w", err)
	}
	// The catch-all rule makes every query use these servers, so Windows'
	// smart multi-homed resolution cannot ask the physical interface's.
	if err := c.api.setNRPT(false, winNRPTKey, servers); err != nil {
		return fmt.Errorf("set network config: nrpt rule: %w", err)
	}
	if gp {
		if err := c.api.setNRPT(true, winNRPTKey, servers); err != nil {
			return fmt.Errorf("set network config: group policy nrpt rule: %w", err)
		}
		if err := c.api.refreshPolicy(); err != nil {
			return fmt.Errorf("set network config: refresh group policy: %w", err)
		}
	}
	if err := c.api.flushResolverCache(); err != nil {
		c.log.Warn("cannot flush the DNS resolver cache", "err", err)
	}
	return nil
}

// Close removes everything Set added, restores DNS and removes the journal.
func (c *winConfigurator) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return c.undoLocked()
}

// undoLocked reverts c.cur; the journal stays when something failed.
func (c *winConfigurator) undoLocked() error {
	if c.name == "" {
		return nil
	}
	if err := winUndo(c.api, c.cur); err != nil {
		return fmt.Errorf("restore network config: %w", err)
	}
	c.name, c.cur = "", winState{}
	return removeJournal(c.stateDir)
}

// winUndo reverts st in reverse order: DNS, routes, addresses. Things
// already gone are not errors.
func winUndo(api winAPI, st winState) error {
	var errs []error
	if st.DNS != nil {
		errs = append(errs, winRevertDNS(api, st.LUID, st.DNS))
	}
	for i := len(st.Routes) - 1; i >= 0; i-- {
		if err := api.deleteRoute(st.Routes[i]); err != nil {
			errs = append(errs, fmt.Errorf("remove route %s: %w", st.Routes[i], err))
		}
	}
	for i := len(st.Addrs) - 1; i >= 0; i-- {
		if err := api.deleteAddress(st.LUID, st.Addrs[i]); err != nil {
			errs = append(errs, fmt.Errorf("remove address %s: %w", st.Addrs[i], err))
		}
	}
	return errors.Join(errs...)
}

// winRevertDNS removes the NRPT rule and clears the tunnel's servers.
func winRevertDNS(api winAPI, luid uint64, d *winDNSState) error {
	var errs []error
	key := d.NRPTKey
	if key == "" {
		key = winNRPTKey
	}
	if err := api.deleteNRPT(false, key); err != nil {
		errs = append(errs, fmt.Errorf("remove nrpt rule: %w", err))
	}
	if d.GroupPolicy {
		if err := api.deleteNRPT(true, key); err != nil {
			errs = append(errs, fmt.Errorf("remove group policy nrpt rule: %w", err))
		} else if err := api.refreshPolicy(); err != nil {
			errs = append(errs, fmt.Errorf("refresh group policy: %w", err))
		}
	}
	for _, v6 := range []bool{false, true} {
		if err := api.setDNS(luid, v6, nil); err != nil {
			errs = append(errs, fmt.Errorf("clear dns servers: %w", err))
		}
	}
	if err := api.flushResolverCache(); err != nil {
		errs = append(errs, fmt.Errorf("flush resolver cache: %w", err))
	}
	return errors.Join(errs...)
}

// winCleanup undoes what the journal in stateDir records and removes it.
func winCleanup(log *slog.Logger, stateDir string, api winAPI) error {
	j, ok, err := loadJournal(stateDir)
	if err != nil || !ok {
		return err
	}
	var st winState
	if len(j.OS) > 0 {
		if err := json.Unmarshal(j.OS, &st); err != nil {
			return fmt.Errorf("clean up network state: parse Windows state in %s: %w", journalPath(stateDir), err)
		}
	}
	log.Info("cleaning up network state of an earlier run", "interface", j.Interface,
		"routes", len(st.Routes), "addrs", len(st.Addrs), "dns", st.DNS != nil)
	err = winUndo(api, st)
	if rerr := removeJournal(stateDir); rerr != nil {
		err = errors.Join(err, rerr)
	}
	if err != nil {
		return fmt.Errorf("clean up network state: %w", err)
	}
	return nil
}

// winOrigin is the route a takes outside the tunnel: the longest matching
// prefix (lowest effective metric on ties) among routes not on the
// tunnel, not on loopback and not added by mirage itself.
func winOrigin(table []winRoute, a netip.Addr, tunLUID uint64, ours []winRoute) (winRoute, error) {
	best, found := winRoute{}, false
	for _, r := range table {
		if r.LUID == tunLUID || r.LUID>>48 == winIfTypeLoopback || !r.Dst.Contains(a) || slices.Contains(ours, winRoute{Dst: r.Dst, NextHop: r.NextHop, LUID: r.LUID}) {
			continue
		}
		if !found || r.Dst.Bits() > best.Dst.Bits() || (r.Dst.Bits() == best.Dst.Bits() && r.Metric < best.Metric) {
			best, found = r, true
		}
	}
	if !found {
		return winRoute{}, fmt.Errorf("no route to %s outside the tunnel", a)
	}
	if best.Dst.IsSingleIP() && !best.NextHop.IsValid() && best.Dst.Addr() == a {
		return winRoute{}, fmt.Errorf("%s is a local address", a)
	}
	return best, nil
}

// winAppendRoute adds r unless a route for the same destination is listed.
func winAppendRoute(rs []winRoute, r winRoute) []winRoute {
	if slices.ContainsFunc(rs, winSameDst(r)) {
		return rs
	}
	return append(rs, r)
}

func winSameDst(r winRoute) func(winRoute) bool {
	return func(o winRoute) bool { return o.Dst == r.Dst }
}
