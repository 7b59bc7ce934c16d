package tun

import (
	"fmt"

	"github.com/mirage-vpn/mirage/core/tundev"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// CreateTUN creates the TUN device (Wintun on Windows, utun on macOS, tun on
// FreeBSD) with the given MTU. Buffers need tundev.Offset headroom.
func CreateTUN(name string, mtu int) (tundev.Device, error) {
	if err := checkArgs(name, mtu); err != nil {
		return nil, err
	}
	dev, err := wgtun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create tun %q: %w", name, err)
	}
	return newDevice(dev), nil
}
