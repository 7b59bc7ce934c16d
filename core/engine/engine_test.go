package engine

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/tundev/tundevtest"
	"github.com/mirage-vpn/mirage/core/wire"
)

func TestFlowHash(t *testing.T) {
	a := netip.MustParseAddr("198.51.100.2")
	b := netip.MustParseAddr("203.0.113.9")
	p1 := tundevtest.UDP(a, b, []byte("one"))
	p2 := tundevtest.UDP(a, b, []byte("two, longer payload"))
	if FlowHash(p1) != FlowHash(p2) {
		t.Fatal("same flow, different hash")
	}
	p3 := tundevtest.UDP(a, netip.MustParseAddr("203.0.113.10"), []byte("one"))
	if FlowHash(p1) == FlowHash(p3) {
		t.Fatal("different flows collide (unlikely for these inputs)")
	}
	v6 := tundevtest.UDP(netip.MustParseAddr("fd00::2"), netip.MustParseAddr("fd00::9"), nil)
	if FlowHash(v6) == 0 {
		t.Fatal("v6 not hashed")
	}
	for _, junk := range [][]byte{nil, {0x45}, {0x60, 1, 2}, make([]byte, 19)} {
		FlowHash(junk) // must not panic
	}
}

func TestLooksLikeHTTP(t *testing.T) {
	for in, want := range map[string]bool{"HTTP/1.1 400 Bad": true, "HTT": true, "HT": false, "\x11\x00\x10": false} {
		if got := looksLikeHTTP([]byte(in)); got != want {
			t.Errorf("%q: %v", in, got)
		}
	}
}

type pipeConn struct{ net.Conn }

func (pipeConn) ExportKeyingMaterial(string, []byte, int) ([]byte, error) {
	return make([]byte, 32), nil
}

// A server that answers with an HTTP/2 preface (the fallback site over h2)
// means rejected credentials.
func TestClientHandshakeRecognizesH2Fallback(t *testing.T) {
	c, s := net.Pipe()
	defer c.Close()
	go func() {
		buf := make([]byte, 4096)
		s.Read(buf)
		s.Write([]byte{0, 0, 18, 0x04, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100})
		s.Close()
	}()
	_, _, err := ClientHandshake(context.Background(), pipeConn{c}, &wire.Hello{Username: "u", Password: "p"}, 2*time.Second)
	if !errors.Is(err, ErrRejected) {
		t.Fatalf("got %v", err)
	}
}

func TestClientHandshakeTimeout(t *testing.T) {
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	go func() { s.Read(make([]byte, 4096)) }()
	start := time.Now()
	_, _, err := ClientHandshake(context.Background(), pipeConn{c}, &wire.Hello{Username: "u", Password: "p"}, 300*time.Millisecond)
	if err == nil || time.Since(start) > 3*time.Second {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}
}

func TestBatch(t *testing.T) {
	tun := tundevtest.New(1420)
	b := NewBatch(4)
	pk := tundevtest.UDP(netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), []byte("x"))
	for i := 0; i < 4; i++ {
		b.Add(pk)
	}
	if !b.Full() || b.Len() != 4 {
		t.Fatal("batch size")
	}
	if err := b.Flush(tun); err != nil {
		t.Fatal(err)
	}
	if b.Len() != 0 || len(tun.Outbound) != 4 {
		t.Fatalf("flush: %d left, %d written", b.Len(), len(tun.Outbound))
	}
}

func TestTunnelDropsWhileDetached(t *testing.T) {
	tun := tundevtest.New(1420)
	tn := NewTunnel(tun, nil)
	done := make(chan error, 1)
	go func() { done <- tn.Run() }()
	tun.Inbound <- tundevtest.UDP(netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), nil)
	deadline := time.Now().Add(2 * time.Second)
	for tn.Drops() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if tn.Drops() != 1 {
		t.Fatalf("drops %d", tn.Drops())
	}
	tun.Close()
	if err := <-done; err != nil {
		t.Fatalf("run after close: %v", err)
	}
}

func BenchmarkSessionSendPath(b *testing.B) {
	// Framing of a 64-packet batch into one buffer: must not allocate.
	pkt := tundevtest.UDP(netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), make([]byte, 1372))
	out := make([]byte, 0, 128<<10)
	b.ReportAllocs()
	b.SetBytes(int64(64 * len(pkt)))
	for i := 0; i < b.N; i++ {
		out = out[:0]
		for j := 0; j < 64; j++ {
			out = wire.AppendFrame(out, wire.TypeData, pkt)
		}
		_ = FlowHash(pkt)
	}
}
