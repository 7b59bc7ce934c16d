package tun

import (
	"fmt"
	"runtime"

	"github.com/mirage-vpn/mirage/core/tundev"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// CreateTUN creates a Wintun adapter with the given MTU. Buffers need
// tundev.Offset headroom. wintun.dll must be next to the executable
// (checked by checkWintunDLL in wintun.go).
func CreateTUN(name string, mtu int) (tundev.Device, error) {
	if err := checkArgs(name, mtu); err != nil {
		return nil, err
	}
	if err := checkWintunDLL(runtime.GOARCH); err != nil {
		return nil, fmt.Errorf("create tun %q: %w", name, err)
	}
	dev, err := wgtun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create tun %q: %w", name, err)
	}
	return newDevice(dev), nil
}
