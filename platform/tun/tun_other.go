//go:build !linux && !windows && !darwin && !freebsd

package tun

import (
	"errors"
	"fmt"

	"github.com/mirage-vpn/mirage/core/tundev"
)

// CreateTUN is not available on this OS.
func CreateTUN(name string, mtu int) (tundev.Device, error) {
	return nil, fmt.Errorf("create tun %q: not supported on this OS yet: %w", name, errors.ErrUnsupported)
}
