package tun

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/mirage-vpn/mirage/core/tundev"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// CreateTUN creates the TUN device name with the given MTU. On Linux the
// device uses vnet_hdr with GSO/GRO (BatchSize 128 when the kernel accepts the
// offloads), so Write needs tundev.Offset headroom and returns a byte count.
// IPv6 autoconfiguration is switched off on the device so the kernel does not
// send router solicitations into the tunnel; a configured IPv6 address still
// works.
func CreateTUN(name string, mtu int) (tundev.Device, error) {
	if err := checkArgs(name, mtu); err != nil {
		return nil, err
	}
	if len(name) > 15 || strings.ContainsAny(name, "/ \t\n") {
		return nil, fmt.Errorf("create tun %q: invalid interface name (at most 15 characters, no '/' or spaces)", name)
	}
	dev, err := wgtun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create tun %q: %w", name, err)
	}
	real, err := dev.Name()
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("create tun %q: read name: %w", name, err)
	}
	if err := quietIPv6(real); err != nil {
		dev.Close()
		return nil, fmt.Errorf("create tun %q: %w", name, err)
	}
	return newDevice(dev), nil
}

// ipv6Quiet are the per-interface sysctls that stop router solicitations and
// link-local autoconfiguration; addr_gen_mode=1 means "none".
var ipv6Quiet = []struct{ key, value string }{
	{"accept_ra", "0"},
	{"autoconf", "0"},
	{"router_solicitations", "0"},
	{"addr_gen_mode", "1"},
}

// quietIPv6 writes ipv6Quiet for ifname. A missing /proc/sys/net/ipv6 tree
// (IPv6 disabled) is not an error.
func quietIPv6(ifname string) error {
	dir := filepath.Join("/proc/sys/net/ipv6/conf", ifname)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	for _, s := range ipv6Quiet {
		err := os.WriteFile(filepath.Join(dir, s.key), []byte(s.value), 0o644)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("disable ipv6 autoconf (%s): %w", s.key, err)
		}
	}
	return nil
}
