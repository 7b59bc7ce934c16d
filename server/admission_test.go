package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/config"
	"github.com/mirage-vpn/mirage/core/engine"
	"github.com/mirage-vpn/mirage/core/wire"
)

func TestAdmissionPerSourceAndShedding(t *testing.T) {
	a := newAdmission(4, 2, 32, 64)
	closed := map[string]bool{}
	admit := func(addr, name string) *admitted {
		return a.admit(netip.MustParseAddr(addr), func() { closed[name] = true })
	}
	a1 := admit("192.0.2.1", "a1")
	a2 := admit("192.0.2.1", "a2")
	if a1 == nil || a2 == nil {
		t.Fatal("the first two from one source were refused")
	}
	if admit("192.0.2.1", "a3") != nil {
		t.Fatal("a third from one source was admitted (per-source cap 2)")
	}
	if got := a.refusedSource.Load(); got != 1 {
		t.Errorf("refusedSource = %d, want 1", got)
	}
	// IPv6: one /64 is one source.
	b1 := admit("fd00:1::1", "b1")
	if b1 == nil || admit("fd00:1::2", "b2") == nil {
		t.Fatal("two from one /64 refused")
	}
	if admit("fd00:1::3", "b3") != nil {
		t.Fatal("a third from the same /64 was admitted")
	}
	// Full (4): a new source is admitted and the oldest handshake of a
	// largest source is shed.
	c1 := admit("198.51.100.7", "c1")
	if c1 == nil {
		t.Fatal("a new source was refused when the global cap was reached")
	}
	if !closed["a1"] && !closed["b1"] {
		t.Fatalf("nothing oldest was shed: %v", closed)
	}
	if len(closed) != 1 {
		t.Fatalf("shed %v, want exactly one", closed)
	}
	if a.shed.Load() != 1 || a.pending() != 4 {
		t.Errorf("shed = %d, pending = %d, want 1 and 4", a.shed.Load(), a.pending())
	}
	// Releasing a shed or already released handshake changes nothing.
	a1.release()
	b1.release()
	a1.release()
	if got := a.pending(); got != 3 {
		t.Errorf("pending = %d after releasing one live and one shed, want 3", got)
	}
	c1.release()
	a2.release()
	if got := a.pending(); got != 1 {
		t.Errorf("pending = %d, want 1", got)
	}
}

// localDialer is testDialer from a chosen local address (127.0.0.0/8 is all
// loopback on Linux), so tests can play several sources.
type localDialer struct{ addr, local string }

func (d localDialer) Protocol() string { return "tcp-tls" }
func (d localDialer) Dial(ctx context.Context) (engine.Conn, error) {
	var nd net.Dialer
	if d.local != "" {
		nd.LocalAddr = &net.TCPAddr{IP: net.ParseIP(d.local)}
	}
	c, err := nd.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return tlsConn{tc}, nil
}

// idleConns opens n TCP connections from local that send nothing.
func idleConns(t *testing.T, addr, local string, n int) []net.Conn {
	t.Helper()
	var out []net.Conn
	nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 2 * time.Second}
	for i := 0; i < n; i++ {
		c, err := nd.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("idle connection %d from %s: %v", i, local, err)
		}
		out = append(out, c)
	}
	t.Cleanup(func() {
		for _, c := range out {
			c.Close()
		}
	})
	return out
}

// waitAdmission waits until the server has pending handshakes in
// progress, refused at the source cap and shed at the global cap.
func waitAdmission(t *testing.T, s *Server, pending int, refused, shed uint64) {
	t.Helper()
	a := s.pending
	deadline := time.Now().Add(5 * time.Second)
	for a.pending() != pending || a.refusedSource.Load() != refused || a.shed.Load() != shed {
		if time.Now().After(deadline) {
			t.Fatalf("pending %d, refused %d, shed %d; want %d, %d, %d",
				a.pending(), a.refusedSource.Load(), a.shed.Load(), pending, refused, shed)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSlowlorisFromOneSource: one address holding many idle connections
// gets only its share; a client from another address logs in.
func TestSlowlorisFromOneSource(t *testing.T) {
	r := newRig(t, func(c *config.Server) {
		c.Connection.MaxPendingHandshakes = 32
		c.Connection.MaxPendingPerSource = 8
		c.Connection.HandshakeTimeoutS = 30 // the attack outlives the test
	})
	idleConns(t, r.addr, "127.0.0.9", 40)
	waitAdmission(t, r.srv, 8, 32, 0)
	startSession(t, engine.SessionParams{
		Dialers: []engine.Dialer{localDialer{r.addr, "127.0.0.2"}}, Username: "alice", Password: "alice-pw",
	}, 1420)
}

// TestIdleBurstFromManySources: idle connections from many addresses fill
// the global cap; a new client is still admitted (the oldest idle one is
// shed) and logs in.
func TestIdleBurstFromManySources(t *testing.T) {
	r := newRig(t, func(c *config.Server) {
		c.Connection.MaxPendingHandshakes = 32
		c.Connection.MaxPendingPerSource = 8
		c.Connection.HandshakeTimeoutS = 30
	})
	for i := 10; i < 15; i++ { // 5 sources × 8 = 40 attempts for 32 slots
		idleConns(t, r.addr, netip.AddrFrom4([4]byte{127, 0, 0, byte(i)}).String(), 8)
	}
	waitAdmission(t, r.srv, 32, 0, 8)
	startSession(t, engine.SessionParams{
		Dialers: []engine.Dialer{localDialer{r.addr, "127.0.0.2"}}, Username: "alice", Password: "alice-pw",
	}, 1420)
}

// TestIdleAfterTLSClosed: a client that completes TLS and then sends
// nothing, or only part of a Hello, is closed at the handshake deadline,
// with and without REALITY on the port (REALITY's ClientHello read once
// cleared that deadline).
func TestIdleAfterTLSClosed(t *testing.T) {
	for _, tc := range []struct {
		withReality bool
		partial     []byte
	}{{false, nil}, {true, nil}, {false, []byte{byte(wire.TypeHello), 0, 40, 1, 2}}, {true, []byte{byte(wire.TypeHello), 0}}} {
		withReality := tc.withReality
		var addr string
		if withReality {
			addr = newRealityRig(t).addr // handshake timeout 2 s
		} else {
			addr = newRig(t, nil).addr
		}
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("reality=%v: %v", withReality, err)
		}
		if tc.partial != nil {
			c.Write(tc.partial)
		}
		c.SetReadDeadline(time.Now().Add(8 * time.Second))
		start := time.Now()
		_, err = c.Read(make([]byte, 10))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("reality=%v partial=%x: idle connection after TLS not closed by the server", withReality, tc.partial)
		} else if d := time.Since(start); d > 5*time.Second {
			t.Errorf("reality=%v: closed after %v, want about the 2 s handshake timeout", withReality, d)
		}
		c.Close()
	}
}
