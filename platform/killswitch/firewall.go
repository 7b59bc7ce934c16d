package killswitch

import (
	"log/slog"

	"github.com/mirage-vpn/mirage/core/netcfg"
)

// Firewall adapts the package to core's netcfg.Firewall seam.
type Firewall struct{ Log *slog.Logger }

var _ netcfg.Firewall = Firewall{}

// Enable turns the kill switch on (or updates it).
func (f Firewall) Enable(k netcfg.KillSwitch) error {
	return Enable(f.Log, Config{TunInterface: k.TunInterface, Servers: k.Servers, AllowLAN: k.AllowLAN, DNS: k.DNS})
}

// Disable turns it off.
func (f Firewall) Disable() error { return Disable(f.Log) }
