// Package tundevtest provides a channel-backed tundev.Device so engines can be
// tested in-process without root.
package tundevtest

import (
	"encoding/binary"
	"net/netip"
	"os"
	"sync"

	"github.com/mirage-vpn/mirage/core/tundev"
)

// ChannelTUN is a fake TUN: packets sent on Inbound are returned by Read (as
// if the kernel routed them into the tunnel); packets the engine writes are
// delivered on Outbound.
type ChannelTUN struct {
	Inbound  chan []byte
	Outbound chan []byte
	mtu      int
	closed   chan struct{}
	once     sync.Once
}

// New returns a ChannelTUN with buffered channels.
func New(mtu int) *ChannelTUN {
	return &ChannelTUN{
		Inbound:  make(chan []byte, 1024),
		Outbound: make(chan []byte, 1024),
		mtu:      mtu,
		closed:   make(chan struct{}),
	}
}

func (c *ChannelTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-c.closed:
		return 0, os.ErrClosed
	case p := <-c.Inbound:
		sizes[0] = copy(bufs[0][offset:], p)
		n := 1
		// Drain more without blocking, like a batched read.
		for n < len(bufs) {
			select {
			case p := <-c.Inbound:
				sizes[n] = copy(bufs[n][offset:], p)
				n++
			default:
				return n, nil
			}
		}
		return n, nil
	}
}

func (c *ChannelTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		p := append([]byte(nil), b[offset:]...)
		select {
		case <-c.closed:
			return 0, os.ErrClosed
		case c.Outbound <- p:
		}
	}
	return len(bufs), nil
}

func (c *ChannelTUN) MTU() (int, error)     { return c.mtu, nil }
func (c *ChannelTUN) Name() (string, error) { return "chantun", nil }
func (c *ChannelTUN) BatchSize() int        { return 16 }
func (c *ChannelTUN) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// UDP builds a minimal IPv4 or IPv6 UDP packet from src to dst carrying
// payload (checksums are not filled in; engines do not check them).
func UDP(src, dst netip.Addr, payload []byte) []byte {
	if src.Is4() {
		p := make([]byte, 28+len(payload))
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		p[8] = 64
		p[9] = 17
		s, d := src.As4(), dst.As4()
		copy(p[12:], s[:])
		copy(p[16:], d[:])
		binary.BigEndian.PutUint16(p[20:], 1000)
		binary.BigEndian.PutUint16(p[22:], 2000)
		binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
		copy(p[28:], payload)
		return p
	}
	p := make([]byte, 48+len(payload))
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(8+len(payload)))
	p[6] = 17
	p[7] = 64
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	binary.BigEndian.PutUint16(p[40:], 1000)
	binary.BigEndian.PutUint16(p[42:], 2000)
	binary.BigEndian.PutUint16(p[44:], uint16(8+len(payload)))
	copy(p[48:], payload)
	return p
}

// MultiTUN is a fake multi-queue TUN (tundev.Multi): each queue is a
// ChannelTUN of its own; the device itself is queue 0.
type MultiTUN struct {
	*ChannelTUN
	Q []*ChannelTUN
}

// NewMulti returns a MultiTUN with n queues.
func NewMulti(mtu, n int) *MultiTUN {
	m := &MultiTUN{}
	for range max(n, 1) {
		m.Q = append(m.Q, New(mtu))
	}
	m.ChannelTUN = m.Q[0]
	return m
}

// Queues returns every queue.
func (m *MultiTUN) Queues() []tundev.Device {
	qs := make([]tundev.Device, len(m.Q))
	for i, q := range m.Q {
		qs[i] = q
	}
	return qs
}

// Close closes every queue.
func (m *MultiTUN) Close() error {
	for _, q := range m.Q {
		q.Close()
	}
	return nil
}
