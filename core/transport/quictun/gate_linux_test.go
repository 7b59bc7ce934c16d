package quictun

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/sys/unix"

	"github.com/mirage-vpn/mirage/core/transport/tlsx"
)

// selfSigned is a throwaway certificate for loopback QUIC tests, made by
// the server's own generator.
func selfSigned(t testing.TB) tls.Certificate {
	t.Helper()
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if _, _, err := tlsx.EnsureCert(cf, kf, []string{"gate.test"}); err != nil {
		t.Fatal(err)
	}
	c, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// datagramsThroughSlowReader sends n datagrams over loopback QUIC to a
// receiver whose socket is wrapped with gate (nil: none) and whose reader
// spends spin on each datagram, and returns how many arrived.
func datagramsThroughSlowReader(t *testing.T, gate *Gate, n int, spin time.Duration) int {
	t.Helper()
	spc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Skip("no IPv4 loopback:", err)
	}
	defer spc.Close()
	wrapped := WrapUDP(spc, gate)
	if _, ok := wrapped.(*groConn); !ok && gate != nil {
		t.Skip("kernel without UDP_GRO: no pacing")
	}
	str := &quic.Transport{Conn: wrapped}
	defer str.Close()
	conf := &quic.Config{EnableDatagrams: true, MaxIdleTimeout: 10 * time.Second}
	ln, err := str.Listen(&tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"gate"}}, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// While the Gate holds reads, what the sender has in flight waits in
	// the socket buffer; quic-go raises it to 7 MiB where it may.
	if rb := rcvbuf(t, spc); rb < 1<<20 {
		t.Skipf("UDP receive buffer %d bytes (< 1 MiB; quic-go raises it as root or with a larger net.core.rmem_max): the kernel would drop", rb)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cpc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer cpc.Close()
	ctr := &quic.Transport{Conn: cpc}
	defer ctr.Close()
	cc, err := ctr.Dial(ctx, spc.LocalAddr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"gate"}}, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.CloseWithError(0, "")
	sc, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.CloseWithError(0, "")

	got := make(chan int, 1)
	go func() {
		seen := 0
		for {
			rctx, rcancel := context.WithTimeout(ctx, time.Second)
			b, err := sc.ReceiveDatagram(rctx)
			rcancel()
			if err != nil {
				got <- seen // a second without datagrams: the sender is done
				return
			}
			gate.Took()
			if len(b) >= 4 && int(binary.BigEndian.Uint32(b)) < n {
				seen++
			}
			for start := time.Now(); time.Since(start) < spin; {
			}
		}
	}()
	// Datagrams of a full-size tunnel packet: one per QUIC packet, as the
	// Gate counts them (quic-go packs smaller ones several to a packet).
	p := make([]byte, 1100)
	for i := range n {
		binary.BigEndian.PutUint32(p, uint32(i))
		if err := cc.SendDatagram(p); err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
	}
	return <-got
}

func rcvbuf(t *testing.T, c *net.UDPConn) int {
	n, _ := sockopt(t, c, unix.SOL_SOCKET, unix.SO_RCVBUF)
	return n
}

// sockopt reads an integer socket option of c.
func sockopt(t *testing.T, c *net.UDPConn, level, opt int) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var serr error
	rc.Control(func(fd uintptr) { n, serr = unix.GetsockoptInt(int(fd), level, opt) })
	return n, serr
}

// TestGateKeepsDatagrams: quic-go keeps 128 unread datagrams per connection
// and drops the rest after acknowledging them. With the Gate on the
// receiving socket a slow reader loses none: the reads wait instead. Without
// it (the control) the same reader loses many; if the control loses none,
// this machine was too fast to show the difference and the test says so.
func TestGateKeepsDatagrams(t *testing.T) {
	const n, spin = 500, 60 * time.Microsecond
	g := NewGate()
	if got := datagramsThroughSlowReader(t, g, n, spin); got != n {
		if to := g.Timeouts.Load(); to > 0 {
			// The reader was descheduled for over gateMaxWait (a busy
			// machine), and pacing paused as designed.
			t.Skipf("with the Gate %d of %d arrived after %d timed-out waits: the machine stalled the reader", got, n, to)
		}
		t.Errorf("with the Gate %d of %d datagrams arrived, want all", got, n)
	}
	if got := datagramsThroughSlowReader(t, nil, n, spin); got == n {
		t.Logf("control: without the Gate all %d arrived too (the reader kept up)", n)
	} else {
		t.Logf("control: without the Gate %d of %d arrived", got, n)
	}
}
