package engine

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/mirage-vpn/mirage/core/gso"
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

// Run reads the device until it is closed; a multi-queue device
// (tundev.Multi) is read by one goroutine per queue, and Run returns when
// the first of them ends.
func (t *Tunnel) Run() error {
	qs := tundev.Queues(t.dev)
	errc := make(chan error, len(qs))
	for _, q := range qs {
		go func() { errc <- t.runQueue(q) }()
	}
	return <-errc
}

// runQueue reads one queue until it is closed. Concurrent readers hand
// their batches to Session.send, which takes them one at a time. While the
// attached session takes super-packets whole (Session.wantsSuper), a
// SuperDevice is read one whole packet at a time; otherwise in batches
// wireguard/tun has already cut.
func (t *Tunnel) runQueue(dev tundev.Device) error {
	sd := tundev.Super(dev)
	bs := dev.BatchSize()
	if bs < 1 {
		bs = 1
	}
	bufs := make([][]byte, bs)
	for i := range bufs {
		bufs[i] = make([]byte, tundev.Offset+tundev.MaxPacket)
	}
	sizes := make([]int, bs)
	opts := make([]gso.Options, 1)
	errRun := 0
	for {
		var err error
		if s := t.cur.Load(); sd != nil && s != nil && s.wantsSuper() {
			sizes[0], opts[0], err = sd.ReadSuper(bufs[0], tundev.Offset)
			if err == nil {
				// The session may have changed during the read.
				if s = t.cur.Load(); s != nil {
					s.send(bufs, sizes, opts, 1)
				} else {
					t.drops.Add(1)
				}
			}
		} else {
			var n int
			n, err = dev.Read(bufs, sizes, tundev.Offset)
			if n > 0 {
				if s := t.cur.Load(); s != nil {
					s.send(bufs, sizes, nil, n)
				} else {
					t.drops.Add(uint64(n))
				}
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
