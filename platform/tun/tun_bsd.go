//go:build darwin || freebsd

package tun

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"github.com/mirage-vpn/mirage/core/tundev"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// CreateTUN creates the TUN device with the given MTU: a utun device on
// macOS, a tun device on FreeBSD (renamed to name). macOS names utun
// devices itself (utunN), so a name that is not "utun" or "utunN" asks
// for the next free one; the caller reads the real name with Name.
// Buffers need tundev.Offset headroom (4 bytes of address family header).
func CreateTUN(name string, mtu int) (tundev.Device, error) {
	if err := checkArgs(name, mtu); err != nil {
		return nil, err
	}
	kernelName := name
	if runtime.GOOS == "darwin" {
		kernelName = utunName(name)
	} else if err := checkBSDName(name); err != nil {
		return nil, err
	}
	dev, err := wgtun.CreateTUN(kernelName, mtu)
	if err != nil {
		return nil, fmt.Errorf("create tun %q: %w", kernelName, err)
	}
	return newDevice(dev), nil
}

// utunName maps a configured name to one macOS accepts: "utun" or "utunN"
// are kept, anything else becomes "utun" (the kernel picks N).
func utunName(name string) string {
	if n, ok := strings.CutPrefix(name, "utun"); ok {
		if n == "" {
			return name
		}
		if i, err := strconv.Atoi(n); err == nil && i >= 0 && strconv.Itoa(i) == n {
			return name
		}
	}
	return "utun"
}

// checkBSDName rejects names FreeBSD cannot take or that could be read as
// a command option later (ifconfig, route, pfctl).
func checkBSDName(name string) error {
	if name == "" {
		return nil // FreeBSD picks tunN
	}
	ok := len(name) <= 15 && name[0] >= 'a' && name[0] <= 'z'
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.') {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("create tun %q: invalid interface name (at most 15 letters, digits, '_' or '.', starting with a lower-case letter)", name)
	}
	return nil
}
