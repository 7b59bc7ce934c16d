package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/auth"
	"github.com/mirage-vpn/mirage/core/config"
	"github.com/mirage-vpn/mirage/core/engine"
	"github.com/mirage-vpn/mirage/core/tundev"
	"github.com/mirage-vpn/mirage/core/tundev/tundevtest"
	"github.com/mirage-vpn/mirage/core/wire"
	"github.com/mirage-vpn/mirage/server/fallback"
)

// tlsConn adds ExportKeyingMaterial to *tls.Conn.
type tlsConn struct{ *tls.Conn }

func (c tlsConn) ExportKeyingMaterial(label string, ctx []byte, n int) ([]byte, error) {
	cs := c.ConnectionState()
	return cs.ExportKeyingMaterial(label, ctx, n)
}

type testDialer struct{ addr string }

func (d testDialer) Protocol() string { return "tcp-tls" }
func (d testDialer) Dial(ctx context.Context) (engine.Conn, error) {
	return localDialer{addr: d.addr}.Dial(ctx)
}

// fakeSite answers like a web server that did not understand the request.
type fakeSite struct{}

func (fakeSite) ServeConn(c net.Conn, replay []byte, alpn string) {
	c.Write([]byte("HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
	c.Close()
}

func selfSigned(t testing.TB) tls.Certificate {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

type rig struct {
	srv  *Server
	tun  *tundevtest.ChannelTUN
	addr string
}

func newRig(t *testing.T, mutate func(*config.Server)) *rig {
	t.Helper()
	return newRigAt(t, "127.0.0.1:0", mutate)
}

func newRigAt(t *testing.T, addr string, mutate func(*config.Server)) *rig {
	t.Helper()
	return newRigWith(t, addr, mutate, nil)
}

func newRigWith(t *testing.T, addr string, mutate func(*config.Server), opts func(*Options)) *rig {
	t.Helper()
	cfg := config.DefaultServer()
	cfg.TunnelNetwork = "198.51.100.1/24"
	cfg.TunnelNetworkV6 = "fd00:6d:1::1/64"
	cfg.DNSServers = []string{"192.0.2.53"}
	cfg.Routes = []string{"203.0.113.0/24"}
	cfg.Connection.HandshakeTimeoutS = 2
	if mutate != nil {
		mutate(cfg)
	}
	users := auth.NewUsers()
	if err := users.Set("alice", "alice-pw"); err != nil {
		t.Fatal(err)
	}
	if err := users.Set("bob", "bob-pw"); err != nil {
		t.Fatal(err)
	}
	tun := tundevtest.New(1420)
	o := Options{
		Config: cfg, TUN: tun, Users: users, Fallback: fakeSite{},
		TLS: &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"h2", "http/1.1"}},
	}
	if opts != nil {
		opts(&o)
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	go srv.RunTUN()
	t.Cleanup(func() { srv.Close(); tun.Close() })
	return &rig{srv: srv, tun: tun, addr: ln.Addr().String()}
}

type testClient struct {
	sess *engine.Session
	tun  *tundevtest.ChannelTUN
	v4   netip.Addr
	v6   netip.Addr
}

// startSession dials a client session with p and runs its tunnel on a
// channel TUN of the given MTU until the test ends.
func startSession(t *testing.T, p engine.SessionParams, mtu int) (*engine.Session, *tundevtest.ChannelTUN) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := engine.DialSession(ctx, p)
	if err != nil {
		t.Fatalf("session of %s over %s: %v", p.Username, p.Dialers[0].Protocol(), err)
	}
	tun := tundevtest.New(mtu)
	runTunnel(t, sess, tun)
	return sess, tun
}

// runTunnel starts sess on dev and pumps dev into it until the test ends.
func runTunnel(t *testing.T, sess *engine.Session, dev tundev.Device) {
	sess.Start(dev)
	tn := engine.NewTunnel(dev, nil)
	tn.Attach(sess)
	go tn.Run()
	t.Cleanup(func() { sess.Close(); dev.Close() })
}

func (r *rig) connect(t *testing.T, user, pw string, parallel int) *testClient {
	t.Helper()
	sess, tun := startSession(t, engine.SessionParams{
		Dialers: []engine.Dialer{testDialer{r.addr}}, Username: user, Password: pw, Parallel: parallel,
	}, 1420)
	c := &testClient{sess: sess, tun: tun}
	for _, p := range sess.Welcome.ClientAddrs {
		if p.Addr().Is4() {
			c.v4 = p.Addr()
		} else {
			c.v6 = p.Addr()
		}
	}
	return c
}

func expect(t *testing.T, ch chan []byte, want []byte) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case p := <-ch:
			if bytes.Equal(p, want) {
				return
			}
		case <-timeout:
			t.Fatalf("packet not delivered")
		}
	}
}

func expectNone(t *testing.T, ch chan []byte, unwanted []byte) {
	t.Helper()
	timeout := time.After(500 * time.Millisecond)
	for {
		select {
		case p := <-ch:
			if bytes.Equal(p, unwanted) {
				t.Fatalf("packet should have been dropped")
			}
		case <-timeout:
			return
		}
	}
}

var internet4 = netip.MustParseAddr("203.0.113.9")
var internet6 = netip.MustParseAddr("fd00:6d:c::9")

func TestPacketsBothWays(t *testing.T) {
	r := newRig(t, nil)
	c := r.connect(t, "alice", "alice-pw", 1)
	w := c.sess.Welcome
	if c.v4 != netip.MustParseAddr("198.51.100.2") || !c.v6.IsValid() {
		t.Fatalf("addresses: %v", w.ClientAddrs)
	}
	if w.MTU != 1420 || len(w.DNS) != 1 || len(w.Routes) != 1 || len(w.Ticket) == 0 {
		t.Fatalf("welcome: %+v", w)
	}
	for _, pair := range [][2]netip.Addr{{c.v4, internet4}, {c.v6, internet6}} {
		up := tundevtest.UDP(pair[0], pair[1], []byte("up"))
		c.tun.Inbound <- up
		expect(t, r.tun.Outbound, up)
		down := tundevtest.UDP(pair[1], pair[0], []byte("down"))
		r.tun.Inbound <- down
		expect(t, c.tun.Outbound, down)
	}
	// A burst in both directions arrives complete.
	for i := 0; i < 200; i++ {
		c.tun.Inbound <- tundevtest.UDP(c.v4, internet4, []byte{byte(i)})
	}
	for i := 0; i < 200; i++ {
		expect(t, r.tun.Outbound, tundevtest.UDP(c.v4, internet4, []byte{byte(i)}))
	}
}

func TestSpoofedSourceDropped(t *testing.T) {
	r := newRig(t, nil)
	c := r.connect(t, "alice", "alice-pw", 1)
	spoof := tundevtest.UDP(netip.MustParseAddr("198.51.100.77"), internet4, []byte("spoof"))
	c.tun.Inbound <- spoof
	good := tundevtest.UDP(c.v4, internet4, []byte("good"))
	c.tun.Inbound <- good
	expect(t, r.tun.Outbound, good)
	expectNone(t, r.tun.Outbound, spoof)
	if r.srv.Stats.SpoofDrops.Load() == 0 {
		t.Fatal("spoof drop not counted")
	}
}

func TestWrongPasswordRejected(t *testing.T) {
	r := newRig(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, cred := range [][2]string{{"alice", "nope"}, {"mallory", "alice-pw"}, {"alice", ""}} {
		_, err := engine.DialSession(ctx, engine.SessionParams{
			Dialers: []engine.Dialer{testDialer{r.addr}}, Username: cred[0], Password: cred[1],
		})
		if !errors.Is(err, engine.ErrRejected) {
			t.Fatalf("%v: got %v, want ErrRejected", cred, err)
		}
	}
	if r.srv.SessionCount() != 0 {
		t.Fatal("rejected client got a session")
	}
}

func TestSessionJoin(t *testing.T) {
	r := newRig(t, nil)
	c := r.connect(t, "alice", "alice-pw", 3)
	if r.srv.SessionCount() != 1 {
		t.Fatalf("sessions: %d", r.srv.SessionCount())
	}
	r.srv.mu.Lock()
	var ss *session
	for _, s := range r.srv.sessions {
		ss = s
	}
	r.srv.mu.Unlock()
	for i := 0; len(ss.linkList()) != 3; i++ {
		if i > 200 {
			t.Fatalf("links: %d", len(ss.linkList()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Many flows spread over the links, all delivered both ways.
	for i := 0; i < 50; i++ {
		dst := netip.AddrFrom4([4]byte{203, 0, 113, byte(i + 1)})
		up := tundevtest.UDP(c.v4, dst, []byte("x"))
		c.tun.Inbound <- up
		expect(t, r.tun.Outbound, up)
		down := tundevtest.UDP(dst, c.v4, []byte("y"))
		r.tun.Inbound <- down
		expect(t, c.tun.Outbound, down)
	}
}

func TestJoinByOtherUserRejected(t *testing.T) {
	r := newRig(t, nil)
	c := r.connect(t, "alice", "alice-pw", 1)
	w := c.sess.Welcome
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	try := func(user, pw string, key []byte) error {
		conn, err := testDialer{r.addr}.Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ekm, _ := conn.ExportKeyingMaterial(engine.JoinLabel, nil, 32)
		proof := auth.JoinProof(key, w.SessionID, user, ekm)
		_, _, err = engine.ClientHandshake(ctx, conn, &wire.Hello{Username: user, Password: pw,
			Join: &wire.Join{SessionID: w.SessionID, Proof: proof}}, 5*time.Second)
		return err
	}
	// Bob knows alice's session id and even her join key: still refused.
	if err := try("bob", "bob-pw", w.JoinKey[:]); !errors.Is(err, engine.ErrRejected) {
		t.Fatalf("bob joined alice's session: %v", err)
	}
	// Alice without the key: refused.
	if err := try("alice", "alice-pw", make([]byte, 32)); !errors.Is(err, engine.ErrRejected) {
		t.Fatalf("join without key: %v", err)
	}
	// Alice with the key: accepted.
	if err := try("alice", "alice-pw", w.JoinKey[:]); err != nil {
		t.Fatalf("legit join: %v", err)
	}
}

func TestClientToClient(t *testing.T) {
	for _, isolate := range []bool{false, true} {
		r := newRig(t, func(c *config.Server) { c.IsolateClients = isolate })
		a := r.connect(t, "alice", "alice-pw", 1)
		b := r.connect(t, "bob", "bob-pw", 1)
		p := tundevtest.UDP(a.v4, b.v4, []byte("hi bob"))
		a.tun.Inbound <- p
		if isolate {
			expectNone(t, b.tun.Outbound, p)
		} else {
			expect(t, b.tun.Outbound, p)
		}
		t.Logf("isolate=%v stats spoof=%d iso=%d q=%d", isolate, r.srv.Stats.SpoofDrops.Load(), r.srv.Stats.IsolationDrops.Load(), r.srv.Stats.QueueDrops.Load())
	}
}

func TestReconnectKeepsAddressesWithTicket(t *testing.T) {
	r := newRig(t, nil)
	c := r.connect(t, "alice", "alice-pw", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Reconnect with the ticket only (no password) asking for the same
	// addresses while the old session is still alive: it is replaced.
	s2, err := engine.DialSession(ctx, engine.SessionParams{
		Dialers: []engine.Dialer{testDialer{r.addr}}, Username: "alice", Ticket: c.sess.Welcome.Ticket,
		Request: []netip.Addr{c.v4, c.v6},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.Welcome.ClientAddrs[0].Addr() != c.v4 {
		t.Fatalf("got %v want %v", s2.Welcome.ClientAddrs, c.v4)
	}
	select {
	case <-c.sess.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("old session not replaced")
	}
	// A forged ticket is refused.
	_, err = engine.DialSession(ctx, engine.SessionParams{
		Dialers: []engine.Dialer{testDialer{r.addr}}, Username: "alice", Ticket: bytes.Repeat([]byte{1}, 80),
	})
	if !errors.Is(err, engine.ErrRejected) {
		t.Fatalf("forged ticket: %v", err)
	}
}

func TestGarbageGetsFallback(t *testing.T) {
	r := newRig(t, nil)
	conn, err := testDialer{r.addr}.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 12)
	// ALPN h2 was negotiated, so "GET /" is a bad HTTP/2 preface: the
	// answer is an HTTP/2 SETTINGS frame (then GOAWAY), as from nginx.
	if _, err := io.ReadFull(conn, buf); err != nil || buf[0] != 0 || buf[3] != 0x04 {
		t.Fatalf("got %q %v", buf, err)
	}
}

func TestIdleUnauthenticatedClosed(t *testing.T) {
	r := newRig(t, nil) // handshake timeout 2 s
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(6 * time.Second))
	start := time.Now()
	_, err = c.Read(make([]byte, 10))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("idle connection not closed by the server")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("closed after %v", d)
	}
}

func TestPool(t *testing.T) {
	p := NewPool(netip.MustParsePrefix("198.51.100.1/30"))
	a, err := p.Allocate(netip.Addr{})
	if err != nil || a != netip.MustParseAddr("198.51.100.2") {
		t.Fatalf("%v %v", a, err)
	}
	if _, err := p.Allocate(netip.Addr{}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("want exhausted, got %v", err)
	}
	p.Release(a)
	// Requests for the server, network or broadcast address are not honoured.
	for _, bad := range []string{"198.51.100.1", "198.51.100.0", "198.51.100.3", "192.0.2.1"} {
		b, err := p.Allocate(netip.MustParseAddr(bad))
		if err != nil || b != netip.MustParseAddr("198.51.100.2") {
			t.Fatalf("request %s: got %v %v", bad, b, err)
		}
		p.Release(b)
	}
	p6 := NewPool(netip.MustParsePrefix("fd00:6d:1::1/64"))
	x, _ := p6.Allocate(netip.MustParseAddr("fd00:6d:1::99"))
	if x != netip.MustParseAddr("fd00:6d:1::99") {
		t.Fatalf("static v6: %v", x)
	}
}

func helloFor(user, pw string) *wire.Hello { return &wire.Hello{Username: user, Password: pw} }

func TestKeepaliveMeasuresRTT(t *testing.T) {
	r := newRig(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st := &engine.Stats{}
	sess, err := engine.DialSession(ctx, engine.SessionParams{
		Dialers: []engine.Dialer{testDialer{r.addr}}, Username: "alice", Password: "alice-pw",
		Keepalive: 50 * time.Millisecond, Stats: st,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	tun := tundevtest.New(1420)
	defer tun.Close()
	sess.Start(tun)
	for i := 0; st.RTT.Load() == 0; i++ {
		if i > 200 {
			t.Fatal("no RTT measured from keepalives")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if sess.RTT() <= 0 || sess.RTT() > 5*time.Second {
		t.Fatalf("rtt %v", sess.RTT())
	}
}

// A rejected client on HTTP/2 always gets SETTINGS + GOAWAY, so it can tell
// a rejection from a dropped connection.
func TestRejectedOnH2GetsSettingsAndGoAway(t *testing.T) {
	site, err := fallback.New(fallback.Config{Mode: fallback.ModeStatic}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer site.Close()
	r := newRigWith(t, "127.0.0.1:0", nil, func(o *Options) { o.Fallback = site })
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := testDialer{r.addr}.Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = engine.ClientHandshake(ctx, c, helloFor("alice", "wrong"), 5*time.Second)
		c.Close()
		cancel()
		if !errors.Is(err, engine.ErrRejected) {
			t.Fatalf("attempt %d: %v, want ErrRejected", i, err)
		}
	}
	if !h2PrefaceStart([]byte("PRI * HT")) || h2PrefaceStart([]byte{0x10, 0, 5}) || h2PrefaceStart(nil) {
		t.Fatal("h2PrefaceStart")
	}
}

// The exact answer: an HTTP/2 SETTINGS frame, then GOAWAY with
// PROTOCOL_ERROR, then the connection closes — like nginx.
func TestRejectedOnH2Bytes(t *testing.T) {
	r := newRig(t, nil)
	c, err := testDialer{r.addr}.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, _ := helloFor("alice", "wrong").Marshal()
	c.Write(wire.AppendFrame(nil, wire.TypeHello, p))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v (got %x)", err, b)
	}
	var types []byte
	for len(b) >= 9 {
		n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
		types = append(types, b[3])
		if b[3] == 0x07 && (len(b) < 17 || b[16] != 0x01) {
			t.Fatalf("GOAWAY without PROTOCOL_ERROR: %x", b)
		}
		if len(b) < 9+n {
			break
		}
		b = b[9+n:]
	}
	if len(types) != 2 || types[0] != 0x04 || types[1] != 0x07 {
		t.Fatalf("frame types %x, want SETTINGS then GOAWAY", types)
	}
}
