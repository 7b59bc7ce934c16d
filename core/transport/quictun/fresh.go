package quictun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/mirage-vpn/mirage/core/fec"
)

// A fresh path once path FEC is on (client side).
//
// Path FEC starts when the Welcome arrives, a round trip or two after the
// connection's first packets. Those before it (the handshake, the request,
// the server's first 1-RTT packets) go unprotected, and on a lossy path
// one of them is often lost: at 3 % loss, one connection in five. quic-go's
// congestion control then leaves slow start at about its initial window
// (~40 kB), and its Cubic needs tens of seconds to grow to a 150 ms path's
// bandwidth-delay product; the inner TCP, squeezed by the tunnel's queue
// meanwhile, leaves slow start early too. The connection stays at a few
// Mbit/s for its life (150 ms / 3 %: 4.4 Mbit/s against ~70). quic-go
// resets both ends' congestion control and RTT estimate when a client
// moves its connection to a new path (RFC 9000 §9.4), so once path FEC is
// on the client moves to a new socket, make before break (the path is
// validated first), and both controllers start again with every packet
// protected. If the move fails the connection stays where it was.

// freshProbeTimeout bounds the validation of the new path.
const freshProbeTimeout = 5 * time.Second

// freshPath is what a client Conn needs to move to a new socket.
type freshPath struct {
	// open returns a new socket wrapped in a path FEC, its quic-go
	// transport and what closes both.
	open func() (*PathFEC, *quic.Transport, func(), error)

	mu      sync.Mutex
	closers []func()
	closed  bool
	err     error // how the move ended (nil: moved or not tried)
	moved   bool
	snap    *connSnapshot
}

// keep registers fn to run at close; false (and fn run now) if the
// connection was closed already.
func (f *freshPath) keep(fn func()) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		fn()
		return false
	}
	f.closers = append(f.closers, fn)
	return true
}

// close releases the sockets opened for fresh paths.
func (f *freshPath) close() {
	f.mu.Lock()
	closers := f.closers
	f.closers, f.closed = nil, true
	f.mu.Unlock()
	for _, fn := range closers {
		fn()
	}
}

// result reports whether the connection moved and, if it tried and did
// not, why.
func (f *freshPath) result() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.moved, f.err
}

func (f *freshPath) done(err error) {
	f.mu.Lock()
	f.moved, f.err = err == nil, err
	f.mu.Unlock()
}

// connSnapshot is what a client Conn answers from instead of quic-go once
// it may move paths: quic-go replaces the connection's socket state when
// it switches, unsynchronised with LocalAddr and ConnectionState.
type connSnapshot struct {
	state quic.ConnectionState
	local net.Addr
}

// snapshot returns the connection's snapshot (nil: none, ask quic-go).
func (c *Conn) snapshot() *connSnapshot {
	if c.fresh == nil {
		return nil
	}
	c.fresh.mu.Lock()
	defer c.fresh.mu.Unlock()
	return c.fresh.snap
}

// startMove takes the snapshot (the handshake is complete: the Welcome
// arrived) and moves c to a fresh path in the background.
func (c *Conn) startMove(cfg fec.Config, key []byte) {
	snap := &connSnapshot{state: c.qc.ConnectionState(), local: c.qc.LocalAddr()}
	c.fresh.mu.Lock()
	c.fresh.snap = snap
	c.fresh.mu.Unlock()
	go func() { c.fresh.done(c.moveToFreshPath(cfg, key)) }()
}

// moveToFreshPath moves c to a new socket that protects what it sends
// with cfg and key (see above).
func (c *Conn) moveToFreshPath(cfg fec.Config, key []byte) error {
	pf, tr, closeFn, err := c.fresh.open()
	if err != nil {
		return fmt.Errorf("fresh path: %w", err)
	}
	if !c.fresh.keep(closeFn) {
		return errors.New("fresh path: connection closed")
	}
	if err := pf.Start(cfg, key); err != nil {
		return fmt.Errorf("fresh path: %w", err)
	}
	path, err := c.qc.AddPath(tr)
	if err != nil {
		return fmt.Errorf("fresh path: %w", err)
	}
	ctx, cancel := context.WithTimeout(c.ctx, freshProbeTimeout)
	defer cancel()
	if err := path.Probe(ctx); err != nil {
		path.Close()
		return fmt.Errorf("fresh path: probe: %w", err)
	}
	if err := path.Switch(); err != nil {
		path.Close()
		return fmt.Errorf("fresh path: switch: %w", err)
	}
	c.pfMu.Lock()
	c.pf = pf
	c.pfMu.Unlock()
	c.fresh.mu.Lock()
	c.fresh.snap = &connSnapshot{state: c.fresh.snap.state, local: pf.LocalAddr()}
	c.fresh.mu.Unlock()
	return nil
}

// FreshPath reports whether the connection moved to a fresh path after
// path FEC started and, if the move failed, why (for status and tests).
func (c *Conn) FreshPath() (bool, error) {
	if c.fresh == nil {
		return false, nil
	}
	return c.fresh.result()
}
