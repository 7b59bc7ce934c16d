// Package netcfg declares the OS network configuration the client applies
// around its TUN device: addresses, routes, excluded routes, the server's
// addresses kept outside the tunnel, and DNS. Implementations live in
// platform/ and are declarative: Set applies the whole desired state
// (repeating an identical Set is a no-op), Close restores what was there.
package netcfg

import "net/netip"

// Config is the desired state.
type Config struct {
	// Interface is the TUN device name.
	Interface string
	// Addrs are the tunnel addresses with their prefix.
	Addrs []netip.Prefix
	// MTU of the tunnel device.
	MTU int
	// Routes go into the tunnel. 0.0.0.0/0 and ::/0 are installed as the two
	// /1 halves so the original default route stays untouched.
	Routes []netip.Prefix
	// ExcludedRoutes stay on the original path (via the original gateway).
	ExcludedRoutes []netip.Prefix
	// Bypass are the server's addresses: host routes via the original gateway
	// so the transport never loops into the tunnel.
	Bypass []netip.Addr
	// DNS servers to set while connected; empty leaves DNS alone.
	DNS []netip.Addr
}

// Configurator applies a Config to the OS.
type Configurator interface {
	// Set applies cfg, replacing the previous Set.
	Set(cfg Config) error
	// Close removes everything Set applied and restores DNS.
	Close() error
}

// KillSwitch is what the kill switch lets through while it is on.
type KillSwitch struct {
	TunInterface string           // everything on the tunnel device
	Servers      []netip.AddrPort // the transport's server endpoints
	AllowLAN     bool             // the directly connected subnets
	DNS          []netip.Addr     // the only resolvers DNS may go to
}

// Firewall is the kill switch: Enable replaces the rules (idempotent),
// Disable removes them. The rules outlive the process on purpose, so a
// crashed client keeps failing closed until cleanup.
type Firewall interface {
	Enable(KillSwitch) error
	Disable() error
}
