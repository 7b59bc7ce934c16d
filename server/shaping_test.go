package server

import (
	"bytes"
	"crypto/tls"
	"sync"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/config"
	"github.com/mirage-vpn/mirage/core/engine"
	"github.com/mirage-vpn/mirage/core/shaping"
	"github.com/mirage-vpn/mirage/core/tundev/tundevtest"
	"github.com/mirage-vpn/mirage/core/wire"
)

// sizeLog collects padding payload sizes seen by one side.
type sizeLog struct {
	mu    sync.Mutex
	sizes []int
}

func (l *sizeLog) add(n int) { l.mu.Lock(); l.sizes = append(l.sizes, n); l.mu.Unlock() }

func (l *sizeLog) snapshot() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int(nil), l.sizes...)
}

// checkProfile: at least min sizes, every one in a bucket of the default
// profile, bucket shares passing a chi-square test (2 degrees of freedom;
// 23.0 is the p = 0.00001 critical value, so a correct profile fails about
// once in 100,000 runs while a wrong one scores in the hundreds).
func checkProfile(t *testing.T, what string, sizes []int, min int) {
	t.Helper()
	if len(sizes) < min {
		t.Fatalf("%s: %d padding frames, want >= %d", what, len(sizes), min)
	}
	counts := make([]int, len(shaping.DefaultProfile))
	for _, n := range sizes {
		i := shaping.BucketOf(n, shaping.DefaultProfile)
		if i < 0 {
			t.Fatalf("%s: padding of %d bytes is in no bucket", what, n)
		}
		counts[i]++
	}
	if chi := shaping.ChiSquare(counts, shaping.DefaultProfile); chi > 23.0 {
		t.Fatalf("%s: bucket counts %v, chi-square %.1f > 23.0", what, counts, chi)
	}
	t.Logf("%s: %d padding frames, bucket counts %v", what, len(sizes), counts)
}

// Padding on every transport, both directions: what each receiver decodes
// follows the profile, and the packets arrive intact. Probability 1 pads
// every write, and packets go one at a time, so each is its own write.
func TestShapingOnEveryTransport(t *testing.T) {
	const n = 2100
	shapeServer := func(c *config.Server) {
		c.Obfuscation.Enabled = true
		c.Obfuscation.PaddingProbability = 1
	}
	for _, tc := range []struct {
		name     string
		rig      func(t *testing.T, onPad func(int)) (*rig, engine.Dialer)
		parallel int
		mux      uint8
	}{
		{"tcp-tls", func(t *testing.T, onPad func(int)) (*rig, engine.Dialer) {
			r := newRigWith(t, "127.0.0.1:0", shapeServer, func(o *Options) { o.OnPadding = onPad })
			return r, testDialer{r.addr}
		}, 1, wire.MuxFlow},
		{"reality", func(t *testing.T, onPad func(int)) (*rig, engine.Dialer) {
			r := newRealityRigWith(t, shapeServer, func(o *Options) { o.OnPadding = onPad })
			return r.rig, r.realityDialer(r.pub, r.sid)
		}, 1, wire.MuxFlow},
		{"quic", func(t *testing.T, onPad func(int)) (*rig, engine.Dialer) {
			r, addr := quicRigWith(t, shapeServer, func(o *Options) { o.OnPadding = onPad })
			return r, quicDialer{addr: addr, cache: tls.NewLRUClientSessionCache(1)}
		}, 1, wire.MuxFlow},
		// Multipath: two connections, packets numbered and spread per packet.
		{"tcp-tls-2-round-robin", func(t *testing.T, onPad func(int)) (*rig, engine.Dialer) {
			r := newRigWith(t, "127.0.0.1:0", shapeServer, func(o *Options) { o.OnPadding = onPad })
			return r, testDialer{r.addr}
		}, 2, wire.MuxRoundRobin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var atServer, atClient sizeLog
			r, d := tc.rig(t, atServer.add)
			sess, tun := startSession(t, engine.SessionParams{
				Dialers: []engine.Dialer{d}, Username: "alice", Password: "alice-pw",
				Shaping: &shaping.Params{Probability: 1}, OnPadding: atClient.add,
				Parallel: tc.parallel, Mux: tc.mux,
			}, 1300)
			if tc.parallel > 1 {
				waitLinks(t, r.srv, tc.parallel)
				waitClientLinks(t, sess, tc.parallel)
			}
			me := sess.Welcome.ClientAddrs[0].Addr()
			for i := range n {
				payload := bytes.Repeat([]byte{byte(i)}, 20+i%200)
				up := tundevtest.UDP(me, internet4, payload)
				tun.Inbound <- up
				expect(t, r.tun.Outbound, up)
				down := tundevtest.UDP(internet4, me, payload)
				r.tun.Inbound <- down
				expect(t, tun.Outbound, down)
			}
			// The last padding frames may trail their packets a little.
			deadline := time.Now().Add(5 * time.Second)
			for (len(atServer.snapshot()) < n || len(atClient.snapshot()) < n) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			for _, l := range sess.Links() {
				if tc.parallel > 1 && (l.TxBytes == 0 || l.RxBytes == 0) {
					t.Fatalf("a connection carried nothing: %+v", sess.Links())
				}
			}
			checkProfile(t, "client to server", atServer.snapshot(), 2000)
			checkProfile(t, "server to client", atClient.snapshot(), 2000)
		})
	}
}

// An idle session carries padding heartbeats both ways, each side on its
// own schedule, with sizes from the profile.
func TestHeartbeatsWhenIdle(t *testing.T) {
	var atServer, atClient sizeLog
	r := newRigWith(t, "127.0.0.1:0", func(c *config.Server) {
		c.Obfuscation.Enabled = true
		c.Obfuscation.PaddingProbability = 0
		c.Obfuscation.HeartbeatS = 1
	}, func(o *Options) { o.OnPadding = atServer.add })
	startSession(t, engine.SessionParams{
		Dialers: []engine.Dialer{testDialer{r.addr}}, Username: "alice", Password: "alice-pw",
		Shaping:   &shaping.Params{Heartbeat: 100 * time.Millisecond},
		OnPadding: atClient.add,
	}, 1300)
	deadline := time.Now().Add(5 * time.Second)
	for (len(atServer.snapshot()) < 5 || len(atClient.snapshot()) < 1) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	// The client beats every 50-150 ms, the server every 0.5-1.5 s.
	if got := len(atServer.snapshot()); got < 5 {
		t.Errorf("server saw %d client heartbeats in 5 s, want >= 5", got)
	}
	if got := len(atClient.snapshot()); got < 1 {
		t.Errorf("client saw %d server heartbeats in 5 s, want >= 1", got)
	}
	for _, n := range append(atServer.snapshot(), atClient.snapshot()...) {
		if shaping.BucketOf(n, shaping.DefaultProfile) < 0 {
			t.Fatalf("heartbeat padding of %d bytes is in no bucket", n)
		}
	}
}
