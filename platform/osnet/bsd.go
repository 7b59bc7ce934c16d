package osnet

// The macOS and FreeBSD configurator. It has no build tag: it drives the OS
// only through bsdSys (ifconfig, route, scutil, resolvconf and a few file
// operations), so the same code is golden-tested on Linux against a fake
// kernel. osnet_bsd.go supplies the real bsdSys and the exported New and
// Cleanup.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/mirage-vpn/mirage/core/netcfg"
)

// bsdSys is the OS seam of the macOS/FreeBSD configurator.
type bsdSys interface {
	// run runs a command with stdin ("" for none) and returns its
	// combined output; a non-zero exit is an error.
	run(stdin, name string, args ...string) (string, error)
	// lstat returns the mode (with type bits) of path, fs.ErrNotExist
	// when it is missing.
	lstat(path string) (fs.FileMode, error)
	readFile(path string) ([]byte, error)
	// writeFile replaces path atomically.
	writeFile(path string, data []byte, mode fs.FileMode) error
	removeFile(path string) error
}

// bsdFlavor selects the per-OS differences.
type bsdFlavor string

const (
	flavorDarwin  bsdFlavor = "darwin"
	flavorFreeBSD bsdFlavor = "freebsd"
)

// bsdOSState is what the macOS/FreeBSD code keeps in journal.OS.
type bsdOSState struct {
	Flavor bsdFlavor `json:"flavor"`
}

// bsdConfigurator is the macOS/FreeBSD netcfg.Configurator.
type bsdConfigurator struct {
	log      *slog.Logger
	stateDir string
	sys      bsdSys
	flavor   bsdFlavor

	mu     sync.Mutex
	cur    journal // what is applied (and journaled)
	closed bool
}

func newBSDConfigurator(log *slog.Logger, stateDir string, sys bsdSys, flavor bsdFlavor) (*bsdConfigurator, error) {
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
	return &bsdConfigurator{log: log, stateDir: stateDir, sys: sys, flavor: flavor}, nil
}

var _ netcfg.Configurator = (*bsdConfigurator)(nil)

// bsdCheckIfname accepts only plain interface names, so a name can never
// be read as an option or a second argument by ifconfig, route or scutil.
func bsdCheckIfname(what, name string) error {
	ok := name != "" && len(name) <= 15 && (name[0] >= 'a' && name[0] <= 'z' || name[0] >= 'A' && name[0] <= 'Z')
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.') {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("network config: invalid %s name %q (letters, digits, '_' or '.', at most 15)", what, name)
	}
	return nil
}

// Set applies cfg, adding what is new and removing what is no longer wanted.
func (c *bsdConfigurator) Set(cfg netcfg.Config) error {
	if err := checkConfig(cfg); err != nil {
		return err
	}
	if err := bsdCheckIfname("interface", cfg.Interface); err != nil {
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
	if _, err := c.sys.run("", "ifconfig", cfg.Interface); err != nil {
		return fmt.Errorf("set network config: find interface %q: %w", cfg.Interface, err)
	}

	// Original paths are looked up before any tunnel route changes.
	var outside []route
	for _, a := range cfg.Bypass {
		r, ok, err := c.outsideRoute(hostPrefix(a), cfg.Interface)
		if err != nil {
			return fmt.Errorf("set network config: bypass %s: %w", a, err)
		}
		if ok {
			outside = appendRoute(outside, r)
		}
	}
	for _, p := range cfg.ExcludedRoutes {
		r, ok, err := c.outsideRoute(p.Masked(), cfg.Interface)
		if err != nil {
			c.log.Warn("excluded route has no original path; not installed", "prefix", p, "err", err)
			continue
		}
		if ok {
			outside = appendRoute(outside, r)
		}
	}
	var inside []route
	if c.flavor == flavorDarwin {
		// utun is point-to-point: the tunnel subnet needs its own route.
		for _, p := range cfg.Addrs {
			if !p.IsSingleIP() {
				inside = appendRoute(inside, route{Dst: p.Masked(), Dev: cfg.Interface})
			}
		}
	}
	for _, p := range splitDefault(cfg.Routes) {
		inside = appendRoute(inside, route{Dst: p, Dev: cfg.Interface})
	}
	osState, err := json.Marshal(bsdOSState{Flavor: c.flavor})
	if err != nil {
		return fmt.Errorf("set network config: %w", err)
	}
	want := journal{Interface: cfg.Interface, Addrs: slices.Clone(cfg.Addrs), Routes: append(outside, inside...), DNS: c.cur.DNS, OS: osState}
	prev := c.cur

	// Journal the union first, so a crash mid-way leaves nothing unrecorded.
	union := want
	union.Addrs = unionOf(c.cur.Addrs, want.Addrs)
	union.Routes = unionOf(c.cur.Routes, want.Routes)
	if err := saveJournal(c.stateDir, union); err != nil {
		return err
	}
	c.cur = union

	owned, err := c.apply(cfg, prev, want)
	if err != nil {
		// Keep only what is really mirage's in the journal: routes that
		// were never added (or turned out to be someone else's) must not
		// be deleted by Close or Cleanup.
		keep := unionOf(prev.Routes, owned)
		c.cur.Routes = slices.DeleteFunc(slices.Clone(c.cur.Routes), func(r route) bool { return !slices.Contains(keep, r) })
		if jerr := saveJournal(c.stateDir, c.cur); jerr != nil {
			err = errors.Join(err, jerr)
		}
		return err
	}
	want.Routes = owned
	if err := saveJournal(c.stateDir, want); err != nil {
		return err
	}
	c.cur = want
	return c.setDNSLocked(cfg)
}

// apply makes the OS match want (prev is what was applied before) and
// returns the routes of want that are mirage's: unchanged, changed or
// added by it.
func (c *bsdConfigurator) apply(cfg netcfg.Config, prev, want journal) (owned []route, err error) {
	if cfg.MTU != 0 {
		if _, err := c.sys.run("", "ifconfig", cfg.Interface, "mtu", fmt.Sprint(cfg.MTU)); err != nil {
			return owned, fmt.Errorf("set network config: mtu %d on %s: %w", cfg.MTU, cfg.Interface, err)
		}
	}
	if _, err := c.sys.run("", "ifconfig", cfg.Interface, "up"); err != nil {
		return owned, fmt.Errorf("set network config: bring %s up: %w", cfg.Interface, err)
	}
	for _, p := range want.Addrs {
		if slices.Contains(prev.Addrs, p) {
			continue
		}
		if _, err := c.sys.run("", "ifconfig", c.addrArgs(cfg.Interface, p)...); err != nil {
			return owned, fmt.Errorf("set network config: add address %s to %s: %w", p, cfg.Interface, err)
		}
	}
	// Outside routes first so the server stays reachable, then the tunnel.
	for _, r := range want.Routes {
		if slices.Contains(prev.Routes, r) {
			// Ours already, but the kernel may have deleted it meanwhile
			// (a route via a gateway goes when its interface goes down).
			if err := c.reinstallRoute(r); err != nil {
				return owned, fmt.Errorf("set network config: re-install route %s: %w", r, err)
			}
			owned = append(owned, r)
			continue
		}
		mine, err := true, error(nil)
		if slices.ContainsFunc(prev.Routes, sameDst(r)) {
			_, err = c.sys.run("", "route", bsdRouteArgs("change", r)...) // ours, new gateway
		} else {
			mine, err = c.addRoute(r)
		}
		if err != nil {
			return owned, fmt.Errorf("set network config: add route %s: %w", r, err)
		}
		if mine {
			owned = append(owned, r)
		}
	}
	// Remove what the new config no longer wants, tunnel routes first.
	for i := len(prev.Routes) - 1; i >= 0; i-- {
		if r := prev.Routes[i]; !slices.ContainsFunc(owned, sameDst(r)) {
			if err := c.delRoute(r); err != nil {
				return owned, fmt.Errorf("set network config: %w", err)
			}
		}
	}
	for _, p := range prev.Addrs {
		if !slices.Contains(want.Addrs, p) {
			if err := c.delAddr(cfg.Interface, p); err != nil {
				return owned, fmt.Errorf("set network config: %w", err)
			}
		}
	}
	return owned, nil
}

// Close removes every route and address Set added, restores DNS and
// removes the journal. The TUN device itself belongs to its creator.
func (c *bsdConfigurator) Close() error {
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
func (c *bsdConfigurator) undoLocked() error {
	if c.cur.Interface == "" {
		return nil
	}
	if err := c.undo(c.cur); err != nil {
		return fmt.Errorf("restore network config: %w", err)
	}
	c.cur = journal{}
	return removeJournal(c.stateDir)
}

// undo reverts what j records, in reverse order: DNS, routes, addresses.
// Things already gone are not errors; when the tunnel device is gone (a
// utun dies with its process), its routes and addresses went with it.
func (c *bsdConfigurator) undo(j journal) error {
	var errs []error
	if j.DNS != nil {
		errs = append(errs, c.revertDNS(j.DNS))
	}
	_, err := c.sys.run("", "ifconfig", j.Interface)
	devGone := err != nil
	for i := len(j.Routes) - 1; i >= 0; i-- {
		if r := j.Routes[i]; !(devGone && r.Dev == j.Interface) {
			errs = append(errs, c.delRoute(r))
		}
	}
	if !devGone {
		for i := len(j.Addrs) - 1; i >= 0; i-- {
			errs = append(errs, c.delAddr(j.Interface, j.Addrs[i]))
		}
	}
	return errors.Join(errs...)
}

// bsdCleanup undoes what the journal in stateDir records and removes it. On
// FreeBSD a leftover tun device (it outlives a killed process) is destroyed.
func bsdCleanup(log *slog.Logger, stateDir string, sys bsdSys, flavor bsdFlavor) error {
	j, ok, err := loadJournal(stateDir)
	if err != nil || !ok {
		return err
	}
	if len(j.OS) > 0 {
		var st bsdOSState
		if err := json.Unmarshal(j.OS, &st); err != nil {
			return fmt.Errorf("clean up network state: journal os state: %w", err)
		}
		if st.Flavor != "" && st.Flavor != flavor {
			return fmt.Errorf("clean up network state: journal was written on %s, not %s", st.Flavor, flavor)
		}
	}
	if j.Interface != "" {
		if err := bsdCheckIfname("journaled interface", j.Interface); err != nil {
			return fmt.Errorf("clean up network state: %w", err)
		}
	}
	log.Info("cleaning up network state of an earlier run", "interface", j.Interface,
		"routes", len(j.Routes), "addrs", len(j.Addrs), "dns", j.DNS != nil)
	c := &bsdConfigurator{log: log, stateDir: stateDir, sys: sys, flavor: flavor}
	err = c.undo(j)
	if flavor == flavorFreeBSD && j.Interface != "" {
		if out, lerr := sys.run("", "ifconfig", j.Interface); lerr == nil && strings.Contains(out, "groups: tun") {
			if _, derr := sys.run("", "ifconfig", j.Interface, "destroy"); derr != nil {
				err = errors.Join(err, fmt.Errorf("destroy leftover device %s: %w", j.Interface, derr))
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

// addrArgs are the ifconfig arguments adding p to dev. utun on macOS is
// point-to-point (the address is its own destination); FreeBSD's tun is in
// broadcast mode, where the kernel adds the subnet route itself.
func (c *bsdConfigurator) addrArgs(dev string, p netip.Prefix) []string {
	a := p.Addr()
	if a.Is6() {
		return []string{dev, "inet6", a.String(), "prefixlen", fmt.Sprint(p.Bits()), "alias"}
	}
	if c.flavor == flavorDarwin {
		return []string{dev, "inet", a.String(), a.String(), "netmask", bsdMask4(p.Bits()), "alias"}
	}
	return []string{dev, "inet", p.String(), "alias"}
}

// bsdMask4 is the dotted IPv4 netmask of a prefix length.
func bsdMask4(bits int) string {
	m := ^uint32(0) << (32 - bits)
	if bits == 0 {
		m = 0
	}
	return netip.AddrFrom4([4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)}).String()
}

// delAddr removes p from dev; an address that is already gone is fine.
func (c *bsdConfigurator) delAddr(dev string, p netip.Prefix) error {
	fam := "inet"
	if p.Addr().Is6() {
		fam = "inet6"
	}
	out, err := c.sys.run("", "ifconfig", dev, fam, p.Addr().String(), "-alias")
	if err != nil && !strings.Contains(out, "Can't assign requested address") {
		return fmt.Errorf("remove address %s from %s: %w", p, dev, err)
	}
	return nil
}

// bsdRouteArgs are the route(8) arguments for op ("add", "change",
// "delete") on r.
func bsdRouteArgs(op string, r route) []string {
	args := []string{"-n", op, bsdFamily(r.Dst.Addr())}
	if r.Dst.IsSingleIP() {
		args = append(args, "-host", r.Dst.Addr().String())
	} else {
		args = append(args, "-net", r.Dst.String())
	}
	if r.Gw.IsValid() {
		return append(args, r.Gw.String())
	}
	return append(args, "-interface", r.Dev)
}

func bsdFamily(a netip.Addr) string {
	if a.Is6() {
		return "-inet6"
	}
	return "-inet"
}

// addRoute adds r. When an identical route is already there (not added by
// mirage, e.g. the kernel's own subnet route), mine is false and nothing
// changes; a different route for the same destination is an error,
// because mirage never replaces routes it did not add.
func (c *bsdConfigurator) addRoute(r route) (mine bool, err error) {
	out, err := c.sys.run("", "route", bsdRouteArgs("add", r)...)
	if err == nil {
		return true, nil
	}
	if !strings.Contains(out, "File exists") {
		return false, err
	}
	if info, ok := c.exactRoute(r.Dst); ok && sameTarget(info, r) {
		return false, nil
	}
	return false, fmt.Errorf("a different route for %s already exists; mirage does not replace routes it did not add", r.Dst)
}

// reinstallRoute puts back r, a route mirage added before, when the
// kernel's route for r.Dst is no longer it: added if gone, changed back if
// something else took its place.
func (c *bsdConfigurator) reinstallRoute(r route) error {
	if info, ok := c.exactRoute(r.Dst); ok && sameTarget(info, r) {
		return nil
	}
	out, err := c.sys.run("", "route", bsdRouteArgs("add", r)...)
	if err != nil && strings.Contains(out, "File exists") {
		_, err = c.sys.run("", "route", bsdRouteArgs("change", r)...)
	}
	return err
}

// delRoute deletes r if the kernel's route for r.Dst is still the one
// mirage added (same gateway or device); one that is gone or was replaced
// by someone else is left alone. route(8) on macOS would delete a
// different route for the same destination, so this is checked first.
func (c *bsdConfigurator) delRoute(r route) error {
	info, ok := c.exactRoute(r.Dst)
	if !ok || !sameTarget(info, r) {
		return nil
	}
	out, err := c.sys.run("", "route", bsdRouteArgs("delete", r)...)
	if err != nil && !strings.Contains(out, "not in table") {
		return fmt.Errorf("remove route %s: %w", r, err)
	}
	return nil
}

// exactRoute is the kernel's route for exactly dst, if there is one.
func (c *bsdConfigurator) exactRoute(dst netip.Prefix) (bsdRouteInfo, bool) {
	args := []string{"-n", "get", bsdFamily(dst.Addr())}
	if dst.IsSingleIP() {
		args = append(args, "-host", dst.Addr().String())
	} else {
		args = append(args, "-net", dst.String())
	}
	out, err := c.sys.run("", "route", args...)
	if err != nil {
		return bsdRouteInfo{}, false
	}
	info, err := parseRouteGet(out, dst.Addr().Is6())
	if err != nil || info.dst != dst {
		return bsdRouteInfo{}, false
	}
	return info, true
}

// sameTarget reports whether the kernel's route info goes where r does.
func sameTarget(info bsdRouteInfo, r route) bool {
	if r.Gw.IsValid() {
		return info.gw == r.Gw
	}
	return !info.gw.IsValid() && info.iface == r.Dev
}

// bsdRouteInfo is the answer of `route -n get`.
type bsdRouteInfo struct {
	dst   netip.Prefix // the matching route's destination
	gw    netip.Addr   // invalid for an on-link route
	iface string
}

// parseRouteGet reads the output of `route -n get` (same format on macOS
// and FreeBSD): "key: value" lines for destination, mask, gateway,
// interface and flags.
func parseRouteGet(out string, v6 bool) (bsdRouteInfo, error) {
	kv := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k = strings.TrimSpace(k)
		if _, seen := kv[k]; !seen {
			kv[k] = strings.TrimSpace(v)
		}
	}
	var info bsdRouteInfo
	info.iface = kv["interface"]
	if info.iface == "" {
		return info, errors.New("route get: no interface in output")
	}
	if err := bsdCheckIfname("route interface", info.iface); err != nil {
		return info, err
	}
	if strings.Contains(kv["flags"], "GATEWAY") {
		gw, err := netip.ParseAddr(kv["gateway"])
		if err != nil {
			return info, fmt.Errorf("route get: gateway %q: %w", kv["gateway"], err)
		}
		if z := gw.Zone(); z != "" {
			if err := bsdCheckIfname("gateway zone", z); err != nil {
				return info, err
			}
		}
		if gw.Is6() != v6 || gw.Is4In6() {
			return info, fmt.Errorf("route get: gateway %s of the wrong family", gw)
		}
		info.gw = gw
	}
	bits := 0
	dst := netip.IPv4Unspecified()
	if v6 {
		dst = netip.IPv6Unspecified()
	}
	if d := kv["destination"]; d != "default" && d != "" {
		a, err := netip.ParseAddr(d)
		if err != nil {
			return info, fmt.Errorf("route get: destination %q: %w", d, err)
		}
		dst = a.WithZone("")
		bits = dst.BitLen()
		if m, ok := kv["mask"]; ok {
			if m == "default" {
				bits = 0
			} else if ma, err := netip.ParseAddr(m); err == nil {
				bits = 0
				for _, b := range ma.AsSlice() {
					for i := 7; i >= 0 && b&(1<<i) != 0; i-- {
						bits++
					}
				}
			}
		}
	}
	info.dst = netip.PrefixFrom(dst, bits)
	return info, nil
}

// routeGet asks the kernel how dst ("default" or an address) is routed.
func (c *bsdConfigurator) routeGet(dst string, v6 bool) (bsdRouteInfo, error) {
	fam := "-inet"
	if v6 {
		fam = "-inet6"
	}
	out, err := c.sys.run("", "route", "-n", "get", fam, dst)
	if err != nil {
		return bsdRouteInfo{}, err
	}
	return parseRouteGet(out, v6)
}

// outsideRoute is the route for dst via its original (pre-tunnel) path:
// the kernel's answer for dst unless that points into the tunnel or is
// mirage's own route, else the
// family's default route (which the /1 halves leave in place). ok is false
// when dst is on a directly connected network and needs no route.
func (c *bsdConfigurator) outsideRoute(dst netip.Prefix, tun string) (r route, ok bool, err error) {
	v6 := dst.Addr().Is6()
	// A route mirage already added for dst would answer for itself; the
	// default route tells whether the gateway changed since.
	ours := slices.ContainsFunc(c.cur.Routes, sameDst(route{Dst: dst}))
	if !ours {
		info, err := c.routeGet(dst.Addr().String(), v6)
		if err == nil && info.iface != tun {
			if !info.gw.IsValid() {
				return route{}, false, nil
			}
			return route{Dst: dst, Gw: info.gw, Dev: info.iface}, true, nil
		}
	}
	info, err := c.routeGet("default", v6)
	if err != nil || !info.gw.IsValid() || info.iface == tun {
		return route{}, false, fmt.Errorf("no route to %s outside the tunnel", dst)
	}
	return route{Dst: dst, Gw: info.gw, Dev: info.iface}, true, nil
}
