// Package tun creates the OS TUN device the engine pumps, as a
// core/tundev.Device. It wraps golang.zx2c4.com/wireguard/tun and hides its
// event channel, which is drained in the background so it never blocks.
package tun

import (
	"fmt"
	"os"
	"runtime"
	"strconv"

	"github.com/mirage-vpn/mirage/core/tundev"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Device is a TUN device. Besides tundev.Device it exposes the wrapped
// wireguard device for OS-only extras (e.g. Windows LUID) by type assertion.
type Device struct {
	wgtun.Device
}

var _ tundev.Device = (*Device)(nil)

// newDevice wraps dev and starts draining its events; the drain goroutine
// ends when dev closes its event channel on Close.
func newDevice(dev wgtun.Device) *Device {
	go func() {
		for range dev.Events() {
		}
	}()
	return &Device{Device: dev}
}

// Events is not part of tundev.Device: the wrapper drains the channel itself,
// so callers must not read it. It returns nil.
func (d *Device) Events() <-chan wgtun.Event { return nil }

// Unwrap returns the wrapped wireguard device.
func (d *Device) Unwrap() wgtun.Device { return d.Device }

// checkArgs validates the arguments shared by every OS.
func checkArgs(name string, mtu int) error {
	if mtu < 576 || mtu > tundev.MaxPacket {
		return fmt.Errorf("create tun %q: mtu %d out of range 576..%d", name, mtu, tundev.MaxPacket)
	}
	return nil
}

// MaxQueues bounds the queues of one multi-queue device: past the cores of a
// large server more readers only add wake-ups.
const MaxQueues = 16

// DefaultQueues is the queue count the server (tun_queues = 0) and the
// helper ask for: one reader per core the Go scheduler uses (GOMAXPROCS), at
// most MaxQueues. The environment variable MIRAGE_TUN_QUEUES (1..MaxQueues)
// overrides it, for comparisons (make bench's BENCH_TUN_QUEUES).
func DefaultQueues() int {
	if n, err := strconv.Atoi(os.Getenv("MIRAGE_TUN_QUEUES")); err == nil && n >= 1 {
		return min(n, MaxQueues)
	}
	return min(runtime.GOMAXPROCS(0), MaxQueues)
}

// CreatePerCoreTUN is CreateMultiQueueTUN with DefaultQueues, the client
// helper's device: on Linux one queue per core, elsewhere CreateTUN.
func CreatePerCoreTUN(name string, mtu int) (tundev.Device, error) {
	return CreateMultiQueueTUN(name, mtu, DefaultQueues())
}
