package server

import (
	"bytes"
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/engine"
	"github.com/mirage-vpn/mirage/core/gso"
	"github.com/mirage-vpn/mirage/core/tundev/tundevtest"
	"github.com/mirage-vpn/mirage/core/wire"
)

func expectSuper(t *testing.T, ch chan tundevtest.Super, p []byte, o gso.Options, hdrLen int) {
	t.Helper()
	select {
	case got := <-ch:
		if !bytes.Equal(got.P, p) || got.O != o || got.HdrLen != hdrLen {
			t.Fatalf("got a %d-byte packet %+v (header %d), want the %d-byte super-packet whole %+v (header %d)",
				len(got.P), got.O, got.HdrLen, len(p), o, hdrLen)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("super-packet not delivered")
	}
}

// segments reads n packets from ch and returns their TCP payloads joined.
func segments(t *testing.T, ch chan []byte, n, mtu int) []byte {
	t.Helper()
	var got []byte
	for i := 0; i < n; i++ {
		select {
		case seg := <-ch:
			if len(seg) > mtu {
				t.Fatalf("segment %d: %d bytes, over the MTU %d", i, len(seg), mtu)
			}
			iph := 20
			if seg[0]>>4 == 6 {
				iph = 40
			}
			got = append(got, seg[iph+20:]...)
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d segments delivered", i, n)
		}
	}
	return got
}

// Between two ends whose TUNs take super-packets, a super-packet crosses
// tcp-tls whole in one GSO frame, both ways and for both families; to a
// client that did not announce the capability, or one too big for a frame,
// it goes as MTU-sized packets.
func TestSuperPackets(t *testing.T) {
	stun := tundevtest.NewSuper(1420)
	r := newRigWith(t, "127.0.0.1:0", nil, func(o *Options) { o.TUN = stun })
	t.Cleanup(func() { stun.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dial := func(accept bool) *engine.Session {
		sess, err := engine.DialSession(ctx, engine.SessionParams{
			Dialers: []engine.Dialer{testDialer{r.addr}}, Username: "alice", Password: "alice-pw", AcceptGSO: accept,
		})
		if err != nil {
			t.Fatal(err)
		}
		if sess.Welcome.Caps&wire.CapGSO == 0 {
			t.Fatal("the server with a SuperDevice did not announce CapGSO")
		}
		if got := r.srv.superSessions.Load(); (got > 0) != accept {
			t.Fatalf("superSessions = %d with a client that accepts super-packets: %v", got, accept)
		}
		return sess
	}
	addrs := func(s *engine.Session) (v4, v6 netip.Addr) {
		for _, p := range s.Welcome.ClientAddrs {
			if p.Addr().Is4() {
				v4 = p.Addr()
			} else {
				v6 = p.Addr()
			}
		}
		return
	}

	t.Run("whole", func(t *testing.T) {
		sess := dial(true)
		ctun := tundevtest.NewSuper(1420)
		runTunnel(t, sess, ctun)
		v4, v6 := addrs(sess)
		// The server's reader was blocked in a batch read (no session took
		// super-packets yet); one plain packet lets it switch to reading
		// whole packets, as the first packet after a client arrives does.
		warm := tundevtest.UDP(internet4, v4, []byte("warm"))
		stun.Inbound <- warm
		expect(t, ctun.Outbound, warm)
		for _, c := range []struct {
			name        string
			client, net netip.Addr
			hdr         int
		}{{"v4", v4, internet4, 40}, {"v6", v6, internet6, 60}} {
			down, o := tundevtest.TCPSuper(c.net, c.client, 1, bytes.Repeat([]byte("down"), 15000), 1380)
			stun.SuperIn <- tundevtest.Super{P: down, O: o}
			expectSuper(t, ctun.SuperOut, down, o, c.hdr)
			up, o := tundevtest.TCPSuper(c.client, c.net, 1, bytes.Repeat([]byte("up"), 30000), 1380)
			ctun.SuperIn <- tundevtest.Super{P: up, O: o}
			expectSuper(t, stun.SuperOut, up, o, c.hdr)
		}
		// Plain packets still go as DATA, next to super-packets.
		plain := tundevtest.UDP(v4, internet4, []byte("plain"))
		ctun.Inbound <- plain
		expect(t, stun.Outbound, plain)

		// Over MaxGSOPacket: split even for a capable client.
		big, o := tundevtest.TCPSuper(internet4, v4, 1, patternPayload(wire.MaxGSOPacket-40+5), 1380)
		stun.SuperIn <- tundevtest.Super{P: big, O: o}
		n := (len(big) - 40 + 1379) / 1380
		if got := segments(t, ctun.Outbound, n, 1420); !bytes.Equal(got, big[40:]) {
			t.Fatal("the split payload differs")
		}
		if len(ctun.SuperOut) != 0 {
			t.Fatal("a super-packet over MaxGSOPacket went whole")
		}
	})

	t.Run("split for a client without the capability", func(t *testing.T) {
		// The first client is gone: no session takes super-packets.
		for i := 0; r.srv.superSessions.Load() != 0; i++ {
			if i > 200 {
				t.Fatalf("superSessions = %d after the capable client left, want 0", r.srv.superSessions.Load())
			}
			time.Sleep(10 * time.Millisecond)
		}
		sess := dial(false)
		ctun := tundevtest.New(1420)
		runTunnel(t, sess, ctun)
		v4, _ := addrs(sess)
		payload := patternPayload(20000)
		down, o := tundevtest.TCPSuper(internet4, v4, 1, payload, 1380)
		stun.SuperIn <- tundevtest.Super{P: down, O: o}
		if got := segments(t, ctun.Outbound, 15, 1420); !bytes.Equal(got, payload) {
			t.Fatal("the split payload differs")
		}
	})
}

func patternPayload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + i>>9)
	}
	return b
}

// A client's GSO frames are checked like its DATA: a spoofed source or an
// offload header that does not match the packet costs that packet (and is
// counted), not the connection.
func TestSuperPacketsFromABadClient(t *testing.T) {
	stun := tundevtest.NewSuper(1420)
	r := newRigWith(t, "127.0.0.1:0", nil, func(o *Options) { o.TUN = stun })
	t.Cleanup(func() { stun.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := testDialer{r.addr}.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w, _, err := engine.ClientHandshake(ctx, conn, &wire.Hello{Username: "alice", Password: "alice-pw", Caps: wire.CapGSO}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	v4 := w.ClientAddrs[0].Addr()
	good, o := tundevtest.TCPSuper(v4, internet4, 1, patternPayload(9000), 1380)
	spoofed, so := tundevtest.TCPSuper(netip.MustParseAddr("198.51.100.250"), internet4, 1, patternPayload(9000), 1380)
	wrong := o
	wrong.Type = gso.TypeTCPv6
	short := o
	short.CsumOffset = 6
	var frames []byte
	frames = wire.AppendGSO(frames, so, 40, spoofed)
	frames = wire.AppendGSO(frames, wrong, 40, good)
	frames = wire.AppendGSO(frames, short, 40, good)
	frames = wire.AppendFrame(frames, wire.TypeGSO, []byte{1, 2, 3}) // no packet
	frames = wire.AppendGSO(frames, o, 40, good)
	if _, err := conn.Write(frames); err != nil {
		t.Fatal(err)
	}
	expectSuper(t, stun.SuperOut, good, o, 40)
	if n := r.srv.Stats.SpoofDrops.Load(); n != 1 {
		t.Errorf("spoof drops %d, want 1", n)
	}
	if n := r.srv.Stats.BadPacketDrops.Load(); n != 2 {
		t.Errorf("bad packet drops %d, want 2", n)
	}
	if len(stun.SuperOut) != 0 || len(stun.Outbound) != 0 {
		t.Errorf("bad super-packets reached the TUN")
	}
}
