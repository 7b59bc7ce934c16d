package tun

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/mirage-vpn/mirage/core/tundev"
	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// CreateMultiQueueTUN creates the TUN device name with up to queues queues
// (IFF_MULTI_QUEUE), each a vnet_hdr device with GSO/GRO like CreateTUN's.
// The result is a tundev.Multi: whoever pumps it must read every queue
// (tundev.Queues). One queue (or queues < 2) is CreateTUN.
func CreateMultiQueueTUN(name string, mtu, queues int) (tundev.Device, error) {
	if queues < 2 {
		return CreateTUN(name, mtu)
	}
	queues = min(queues, MaxQueues)
	if err := checkArgs(name, mtu); err != nil {
		return nil, err
	}
	if len(name) > 15 || strings.ContainsAny(name, "/ \t\n%") {
		return nil, fmt.Errorf("create tun %q: invalid interface name (at most 15 characters, no '/', '%%' or spaces)", name)
	}
	m := &multiQueue{}
	for i := 0; i < queues; i++ {
		f, err := openQueue(name)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("create tun %q: queue %d: %w", name, i, err)
		}
		dev, err := wgtun.CreateTUNFromFile(f, mtu)
		if err != nil {
			f.Close()
			m.Close()
			return nil, fmt.Errorf("create tun %q: queue %d: %w", name, i, err)
		}
		m.queues = append(m.queues, newDevice(dev))
	}
	if err := quietIPv6(name); err != nil {
		m.Close()
		return nil, fmt.Errorf("create tun %q: %w", name, err)
	}
	m.Device = m.queues[0]
	return m, nil
}

// openQueue attaches one more queue to the multi-queue TUN name (creating
// it with the first), non-blocking as the wireguard device expects.
func openQueue(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_MULTI_QUEUE)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF multi-queue: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun"), nil
}

// multiQueue is a TUN device with several queues; as a Device it is its
// first queue, and Close detaches every queue (which removes the device).
type multiQueue struct {
	*Device
	queues []*Device
}

var _ tundev.Multi = (*multiQueue)(nil)

func (m *multiQueue) Queues() []tundev.Device {
	qs := make([]tundev.Device, len(m.queues))
	for i, q := range m.queues {
		qs[i] = q
	}
	return qs
}

func (m *multiQueue) Close() error {
	var errs []error
	for _, q := range m.queues {
		if err := q.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
