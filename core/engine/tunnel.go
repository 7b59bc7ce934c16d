package engine

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/mirage-vpn/mirage/core/tundev"
)

// Tunnel reads the TUN device for as long as it lives and hands each batch to
// the currently attached Session. Between sessions (reconnecting) packets
// are dropped, but the device, its addresses and routes stay.
type Tunnel struct {
	dev   tundev.Device
	cur   atomic.Pointer[Session]
	log   *slog.Logger
	drops atomic.Uint64
}

// NewTunnel wraps dev.
func NewTunnel(dev tundev.Device, log *slog.Logger) *Tunnel {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Tunnel{dev: dev, log: log}
}

// Attach makes s the session that receives TUN packets (nil detaches).
func (t *Tunnel) Attach(s *Session) { t.cur.Store(s) }

// Drops counts packets read while no session was attached.
func (t *Tunnel) Drops() uint64 { return t.drops.Load() }

// Run reads the device until it is closed.
func (t *Tunnel) Run() error {
	bs := t.dev.BatchSize()
	if bs < 1 {
		bs = 1
	}
	bufs := make([][]byte, bs)
	for i := range bufs {
		bufs[i] = make([]byte, tundev.Offset+tundev.MaxPacket)
	}
	sizes := make([]int, bs)
	errRun := 0
	for {
		n, err := t.dev.Read(bufs, sizes, tundev.Offset)
		if n > 0 {
			if s := t.cur.Load(); s != nil {
				s.send(bufs, sizes, n)
			} else {
				t.drops.Add(uint64(n))
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Transient errors (e.g. a GSO packet with too many segments)
			// drop the batch; a device that keeps failing is fatal.
			errRun++
			if errRun > 1000 {
				return err
			}
			t.log.Debug("tun read", "err", err)
			time.Sleep(time.Millisecond)
			continue
		}
		errRun = 0
	}
}
