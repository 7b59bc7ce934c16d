package killswitch

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"golang.zx2c4.com/wireguard/windows/tunnel/winipcfg"
)

// Enable installs (or replaces, in one WFP transaction) the kill switch
// filters. They are persistent: they stay after the process exits and
// across reboots, until Disable.
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
	luid, err := wfpTunLUID(cfg.TunInterface)
	if err != nil {
		log.Info("kill switch: tunnel interface not there yet; nothing permitted on it", "interface", cfg.TunInterface, "err", err)
	}
	fs, err := wfpFilters(cfg, lans, luid)
	if err != nil {
		return err
	}
	e, err := openEngine()
	if err != nil {
		return err
	}
	defer e.close()
	if err := wfpInstall(e, fs); err != nil {
		return fmt.Errorf("killswitch: install WFP filters: %w", err)
	}
	log.Info("kill switch enabled", "filters", wfpRender(fs))
	return nil
}

// Disable removes mirage's filters, sublayer and provider; nothing
// installed is not an error.
func Disable(log *slog.Logger) error {
	e, err := openEngine()
	if err != nil {
		return err
	}
	defer e.close()
	if err := wfpRemove(e); err != nil {
		return fmt.Errorf("killswitch: remove WFP filters: %w", err)
	}
	log.Info("kill switch disabled")
	return nil
}

// Active reports whether the kill switch filters are installed.
func Active() (bool, error) {
	e, err := openEngine()
	if err != nil {
		return false, err
	}
	defer e.close()
	return wfpActive(e)
}

// wfpTunLUID is the LUID of the interface with that name (alias).
func wfpTunLUID(name string) (uint64, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return 0, err
	}
	luid, err := winipcfg.LUIDFromIndex(uint32(ifc.Index))
	if err != nil {
		return 0, fmt.Errorf("LUID of %s: %w", name, err)
	}
	return uint64(luid), nil
}
