package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/mirage-vpn/mirage/core/config"
	"github.com/mirage-vpn/mirage/core/engine"
	"github.com/mirage-vpn/mirage/core/fec"
	"github.com/mirage-vpn/mirage/core/transport/quictun"
	"github.com/mirage-vpn/mirage/core/transport/tlsx"
	"github.com/mirage-vpn/mirage/core/tundev/tundevtest"
	"github.com/mirage-vpn/mirage/core/wire"
)

// quicDialer dials the QUIC transport with a shared ticket cache.
type quicDialer struct {
	addr  string
	cache tls.ClientSessionCache
}

func (d quicDialer) Protocol() string { return "quic" }
func (d quicDialer) Dial(ctx context.Context) (engine.Conn, error) {
	c, err := quictun.Dial(ctx, d.addr, quictun.ClientOptions{
		TLS: tlsx.ClientOptions{ServerName: "localhost", Insecure: true}, SessionCache: d.cache,
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// site is a fallback web site with an HTTP handler.
type site struct{ fakeSite }

func (site) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect { // as the built-in static site does
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		w.Header().Set("Server", "nginx")
		io.WriteString(w, "<html><body>welcome "+r.Method+" "+r.URL.Path+" body="+string(body)+"</body></html>")
	})
}

// quicRig is a server serving QUIC on a loopback UDP socket.
func quicRig(t *testing.T) (*rig, string) { return quicRigWith(t, nil, nil) }

func quicRigWith(t *testing.T, mutate func(*config.Server), opts func(*Options)) (*rig, string) {
	t.Helper()
	r := newRigWith(t, "127.0.0.1:0", mutate, func(o *Options) {
		o.Fallback = site{}
		if opts != nil {
			opts(o)
		}
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go r.srv.ServeQUIC([]net.PacketConn{pc})
	return r, pc.LocalAddr().String()
}

func quicSession(t *testing.T, d engine.Dialer, user, pw string) (*engine.Session, *tundevtest.ChannelTUN) {
	t.Helper()
	return startSession(t, engine.SessionParams{Dialers: []engine.Dialer{d}, Username: user, Password: pw}, quictun.TunnelMTU)
}

// Packets both ways over QUIC: small ones as datagrams, one bigger than a
// datagram over the stream; a second connection resumes with 0-RTT.
func TestQUICTunnel(t *testing.T) {
	r, addr := quicRig(t)
	d := quicDialer{addr: addr, cache: tls.NewLRUClientSessionCache(4)}
	sess, ctun := quicSession(t, d, "alice", "alice-pw")
	if sess.Protocol != "quic" || sess.ZeroRTT {
		t.Fatalf("first session: protocol %q zero-rtt %v", sess.Protocol, sess.ZeroRTT)
	}
	v4 := sess.Welcome.ClientAddrs[0].Addr()
	for i := range 50 {
		up := tundevtest.UDP(v4, internet4, bytes.Repeat([]byte{byte(i)}, 100+i*20))
		ctun.Inbound <- up
		expect(t, r.tun.Outbound, up)
	}
	big := tundevtest.UDP(v4, internet4, bytes.Repeat([]byte{7}, 3000)) // > any datagram: the stream
	ctun.Inbound <- big
	expect(t, r.tun.Outbound, big)
	down := tundevtest.UDP(internet4, v4, []byte("down via datagram"))
	r.tun.Inbound <- down
	expect(t, ctun.Outbound, down)
	downBig := tundevtest.UDP(internet4, v4, bytes.Repeat([]byte{9}, 4000))
	r.tun.Inbound <- downBig
	expect(t, ctun.Outbound, downBig)

	// Reconnect with the ticket: 0-RTT, same user gets a working session.
	sess.Close()
	sess2, ctun2 := quicSession(t, d, "alice", "alice-pw")
	if !sess2.ZeroRTT {
		t.Fatal("second connection did not use 0-RTT")
	}
	v4b := sess2.Welcome.ClientAddrs[0].Addr()
	up := tundevtest.UDP(v4b, internet4, []byte("after 0-rtt"))
	ctun2.Inbound <- up
	expect(t, r.tun.Outbound, up)
}

// Wrong credentials are refused like a web site would; a plain HTTP/3
// client gets the web page, with its request body intact.
func TestQUICFallback(t *testing.T) {
	_, addr := quicRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := engine.DialSession(ctx, engine.SessionParams{
		Dialers: []engine.Dialer{quicDialer{addr: addr}}, Username: "alice", Password: "wrong",
	})
	if !errors.Is(err, engine.ErrRejected) {
		t.Fatalf("wrong password: %v", err)
	}

	tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}}
	defer tr.Close()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for _, c := range []struct{ method, body string }{{"GET", ""}, {"POST", "hello=1"}, {"POST", string(wire.AppendFrame(nil, wire.TypeHello, []byte{1, 2, 3}))}} {
		req, _ := http.NewRequest(c.method, "https://"+addr+"/index.html", strings.NewReader(c.body))
		rsp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.method, err)
		}
		b, _ := io.ReadAll(rsp.Body)
		rsp.Body.Close()
		want := "welcome " + c.method + " /index.html body=" + c.body
		if rsp.StatusCode != 200 || !strings.Contains(string(b), want) || rsp.Proto != "HTTP/3.0" {
			t.Fatalf("%s: %d %s %q (want %q)", c.method, rsp.StatusCode, rsp.Proto, b, want)
		}
	}
}

// A replayed 0-RTT flight cannot start a session: the server decides
// only after the handshake completes. Simulated with a client that sends
// its Hello in 0-RTT and then never completes the handshake (its packets
// after the first flight are dropped).
func TestQUICEarlyHelloWaitsForHandshake(t *testing.T) {
	r, addr := quicRig(t)
	cache := tls.NewLRUClientSessionCache(4)
	quicSession(t, quicDialer{addr: addr, cache: cache}, "alice", "alice-pw")
	before := r.srv.SessionCount()

	// Second client: same ticket, but a socket that drops everything after
	// the first datagrams, so the handshake never completes.
	raddr, _ := net.ResolveUDPAddr("udp", addr)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	lossy := &firstFlightOnly{PacketConn: pc}
	tr := &quic.Transport{Conn: lossy}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	qc, err := tr.DialEarly(ctx, raddr, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost", NextProtos: []string{"h3"}, ClientSessionCache: cache},
		&quic.Config{EnableDatagrams: true})
	if err == nil {
		cc := (&http3.Transport{EnableDatagrams: true}).NewClientConn(qc)
		if rs, err := cc.OpenRequestStream(ctx); err == nil {
			req, _ := http.NewRequest("CONNECT", "https://localhost"+quictun.RequestPath, nil)
			req.Proto = quictun.ConnectProtocol
			if rs.SendRequestHeader(req) == nil {
				h, _ := (&wire.Hello{Username: "alice", Password: "alice-pw", MaxFrame: wire.MaxPayload}).Marshal()
				rs.Write(wire.AppendFrame(nil, wire.TypeHello, h))
			}
		}
	}
	time.Sleep(2500 * time.Millisecond) // the server's handshake timeout is 2 s
	if n := r.srv.SessionCount(); n != before {
		t.Fatalf("an early Hello without a completed handshake changed the sessions: %d -> %d", before, n)
	}
}

// firstFlightOnly passes what the client sends before it hears from the
// server (its first flight, with the 0-RTT data) and drops everything
// after, like a replayer that cannot finish the handshake.
type firstFlightOnly struct {
	net.PacketConn
	heard atomic.Bool
}

func (c *firstFlightOnly) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	if err == nil {
		c.heard.Store(true)
	}
	return n, a, err
}

func (c *firstFlightOnly) WriteTo(b []byte, a net.Addr) (int, error) {
	if c.heard.Load() {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, a)
}

// linkCount is the number of connections of the only session.
func linkCount(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ss := range s.sessions {
		return len(ss.linkList())
	}
	return -1
}

// Hop moves a session to new connections (new UDP source port each time)
// make-before-break: packets keep flowing both ways, the session, its
// addresses and its single server-side link survive; over TCP too.
func TestHop(t *testing.T) {
	r, addr := quicRig(t)
	for _, tc := range []struct {
		name string
		d    engine.Dialer
	}{{"quic", quicDialer{addr: addr, cache: tls.NewLRUClientSessionCache(4)}}, {"tcp-tls", testDialer{r.addr}}} {
		t.Run(tc.name, func(t *testing.T) {
			sess, ctun := quicSession(t, tc.d, "alice", "alice-pw")
			v4 := sess.Welcome.ClientAddrs[0].Addr()
			seen := map[string]bool{}
			for i := range 5 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := sess.Hop(ctx, tc.d, 2*time.Second)
				cancel()
				if err != nil {
					t.Fatalf("hop %d: %v", i, err)
				}
				seen[sess.LocalAddrs()[0]] = true
				up := tundevtest.UDP(v4, internet4, []byte{byte(i), 'u'})
				ctun.Inbound <- up
				expect(t, r.tun.Outbound, up)
				down := tundevtest.UDP(internet4, v4, []byte{byte(i), 'd'})
				r.tun.Inbound <- down
				expect(t, ctun.Outbound, down)
				deadline := time.Now().Add(3 * time.Second)
				for linkCount(r.srv) != 1 && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
				if n := linkCount(r.srv); n != 1 {
					t.Fatalf("after hop %d the server has %d links, want 1 (old one retired)", i, n)
				}
			}
			if sess.Err() != nil {
				t.Fatalf("session ended: %v", sess.Err())
			}
			if len(seen) != 5 {
				t.Fatalf("%d distinct local addresses over 5 hops: %v", len(seen), seen)
			}
			sess.Close()
		})
	}
}

// udpRelay forwards datagrams between one client and the server and
// records the size of each, per direction.
type udpRelay struct {
	pc       net.PacketConn
	mu       sync.Mutex
	up, down []int
}

func newUDPRelay(t *testing.T, server string) *udpRelay {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	out, err := net.DialUDP("udp", nil, srv)
	if err != nil {
		t.Fatal(err)
	}
	r := &udpRelay{pc: pc}
	var client atomic.Pointer[net.Addr]
	t.Cleanup(func() { pc.Close(); out.Close() })
	go func() {
		b := make([]byte, 65536)
		for {
			n, a, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			client.Store(&a)
			r.mu.Lock()
			r.up = append(r.up, n)
			r.mu.Unlock()
			out.Write(b[:n])
		}
	}()
	go func() {
		b := make([]byte, 65536)
		for {
			n, err := out.Read(b)
			if err != nil {
				return
			}
			if a := client.Load(); a != nil {
				r.mu.Lock()
				r.down = append(r.down, n)
				r.mu.Unlock()
				pc.WriteTo(b[:n], *a)
			}
		}
	}()
	return r
}

// sizes counts the datagrams of exactly size bytes and the largest seen,
// in one direction.
func (r *udpRelay) sizes(down bool, size int) (exact, largest int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.up
	if down {
		s = r.down
	}
	for _, n := range s {
		if n == size {
			exact++
		}
		largest = max(largest, n)
	}
	return exact, largest
}

// keepConn is a quicDialer that remembers the last connection.
type keepConn struct {
	quicDialer
	last atomic.Pointer[quictun.Conn]
}

func (d *keepConn) Dial(ctx context.Context) (engine.Conn, error) {
	c, err := d.quicDialer.Dial(ctx)
	if err == nil {
		d.last.Store(c.(*quictun.Conn))
	}
	return c, err
}

// A full-size tunnel packet (TUN MTU) travels as one datagram in a QUIC
// packet of exactly InitialPacketSize, both ways: the condition for
// quic-go to send bulk traffic in GSO batches (see quictun.TunnelMTU).
// Changing the connection ID length, the packet size or the datagram
// framing without fixing TunnelMTU fails here.
func TestQUICFullPacketFillsQUICPacket(t *testing.T) {
	r, addr := quicRig(t)
	relay := newUDPRelay(t, addr)
	d := &keepConn{quicDialer: quicDialer{addr: relay.pc.LocalAddr().String()}}
	sess, ctun := quicSession(t, d, "alice", "alice-pw")
	v4 := sess.Welcome.ClientAddrs[0].Addr()
	const n = 20
	for i := range n {
		up := tundevtest.UDP(v4, internet4, bytes.Repeat([]byte{byte(i)}, quictun.TunnelMTU-28))
		if len(up) != quictun.TunnelMTU {
			t.Fatalf("test packet is %d bytes, want %d", len(up), quictun.TunnelMTU)
		}
		ctun.Inbound <- up
		expect(t, r.tun.Outbound, up)
		down := tundevtest.UDP(internet4, v4, bytes.Repeat([]byte{byte(i)}, quictun.TunnelMTU-28))
		r.tun.Inbound <- down
		expect(t, ctun.Outbound, down)
	}
	if c := d.last.Load(); c == nil || c.MaxDatagramPayload() < quictun.TunnelMTU {
		t.Fatalf("full-size packets did not fit a datagram (limit now %d, TUN MTU %d)", c.MaxDatagramPayload(), quictun.TunnelMTU)
	}
	for _, down := range []bool{false, true} {
		exact, largest := relay.sizes(down, quictun.InitialPacketSize)
		if exact < n || largest > quictun.InitialPacketSize {
			t.Errorf("down=%v: %d UDP datagrams of exactly %d bytes (want >= %d), largest %d", down, exact, quictun.InitialPacketSize, n, largest)
		}
	}
}

// A QUIC connection that completes its handshake and then makes no request
// is closed at the handshake deadline (2 s here), even while it sends
// PINGs, which keep quic-go's idle timer fresh; one that asked for a web
// page is not. Pending QUIC handshakes count against the source's cap.
func TestQUICIdleAfterHandshakeClosed(t *testing.T) {
	r, addr := quicRigWith(t, func(c *config.Server) { c.Connection.MaxPendingPerSource = 3 }, nil)
	try := func() (*quic.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		qc, err := quic.DialAddr(ctx, addr, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost", NextProtos: []string{http3.NextProtoH3}},
			&quic.Config{KeepAlivePeriod: 200 * time.Millisecond, MaxIdleTimeout: time.Minute})
		if err == nil {
			t.Cleanup(func() { qc.CloseWithError(0, "") })
		}
		return qc, err
	}
	dial := func() *quic.Conn {
		t.Helper()
		qc, err := try()
		if err != nil {
			t.Fatal(err)
		}
		return qc
	}
	start := time.Now()
	idle := []*quic.Conn{dial(), dial(), dial()}
	// The source is at its cap: a fourth connection is closed at once
	// (during its handshake, or right after it).
	if fourth, err := try(); err == nil {
		select {
		case <-fourth.Context().Done():
		case <-time.After(time.Second):
			t.Error("a fourth pending QUIC connection from a source capped at 3 was kept")
		}
	}
	for i, qc := range idle {
		select {
		case <-qc.Context().Done():
			if d := time.Since(start); d < 1500*time.Millisecond || d > 5*time.Second {
				t.Errorf("idle connection %d closed after %v, want about the 2 s handshake timeout", i, d)
			}
		case <-time.After(8 * time.Second):
			t.Fatalf("idle connection %d not closed by the server", i)
		}
	}
	for i := 0; r.srv.pending.pending() != 0; i++ {
		if i == 100 {
			t.Fatalf("%d handshakes still pending", r.srv.pending.pending())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A web request settles the handshake: the connection outlives the
	// deadline and serves a second request after it.
	tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"},
		QUICConfig: &quic.Config{KeepAlivePeriod: 200 * time.Millisecond}}
	defer tr.Close()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for i := range 2 {
		rsp, err := hc.Get("https://" + addr + "/index.html")
		if err != nil {
			t.Fatalf("web request %d: %v", i, err)
		}
		io.Copy(io.Discard, rsp.Body)
		rsp.Body.Close()
		if i == 0 {
			time.Sleep(3 * time.Second)
		}
	}
	if n := r.srv.Stats.HandshakeTimeout.Load(); n != 3 {
		t.Errorf("handshake timeouts counted: %d, want 3", n)
	}
}

// fecDialer dials QUIC with path FEC and keeps the connection it made.
type fecDialer struct {
	addr string
	got  chan *quictun.Conn
}

func (d fecDialer) Protocol() string { return "quic" }
func (d fecDialer) Dial(ctx context.Context) (engine.Conn, error) {
	c, err := quictun.Dial(ctx, d.addr, quictun.ClientOptions{
		TLS: tlsx.ClientOptions{ServerName: "localhost", Insecure: true}, PathFEC: true,
	})
	if err != nil {
		return nil, err
	}
	d.got <- c
	return c, nil
}

// With path FEC agreed, the client moves its connection to a fresh socket
// (so quic-go's congestion control restarts with every packet protected,
// quictun/fresh.go); the tunnel carries packets both ways on the new path,
// and both ends count protected packets there.
func TestQUICPathFECFreshPath(t *testing.T) {
	r, addr := quicRig(t)
	d := fecDialer{addr: addr, got: make(chan *quictun.Conn, 1)}
	sess, ctun := startSession(t, engine.SessionParams{Dialers: []engine.Dialer{d}, Username: "alice", Password: "alice-pw", FEC: &fec.Config{}}, quictun.TunnelMTU)
	c := <-d.got
	for i := 0; ; i++ {
		moved, err := c.FreshPath()
		if moved {
			break
		}
		if err != nil || i == 100 {
			t.Fatalf("no fresh path after %d ms: %v", i*50, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	v4 := sess.Welcome.ClientAddrs[0].Addr()
	for i := range 20 {
		up := tundevtest.UDP(v4, internet4, bytes.Repeat([]byte{byte(i)}, 1000))
		ctun.Inbound <- up
		expect(t, r.tun.Outbound, up)
		down := tundevtest.UDP(internet4, v4, bytes.Repeat([]byte{byte(i)}, 1200))
		r.tun.Inbound <- down
		expect(t, ctun.Outbound, down)
	}
	// FEC reports the new socket's counters: protected packets from the
	// server arrived there.
	if st := c.FEC(); !st.Sending || st.DataSent == 0 || st.Recv.Data == 0 {
		t.Fatalf("client path FEC on the new path: %+v", st)
	}
}

// An HTTP/3 connection left to the web site is closed once it has had no
// request for the web idle timeout, even while the client sends PINGs
// (quic-go's own idle timer never fires then).
func TestQUICWebConnectionIdleClosed(t *testing.T) {
	_, addr := quicRigWith(t, nil, func(o *Options) { o.QUICWebIdle = time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, addr, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost", NextProtos: []string{http3.NextProtoH3}},
		&quic.Config{KeepAlivePeriod: 200 * time.Millisecond, MaxIdleTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	cc := (&http3.Transport{}).NewClientConn(qc)
	req, _ := http.NewRequest(http.MethodGet, "https://localhost/index.html", nil)
	rsp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, rsp.Body)
	rsp.Body.Close()
	served := time.Now()
	select {
	case <-qc.Context().Done():
		if d := time.Since(served); d < 900*time.Millisecond || d > 3*time.Second {
			t.Errorf("closed %v after the last request, want about the 1 s web idle timeout", d)
		}
	case <-time.After(6 * time.Second):
		t.Fatal("idle HTTP/3 web connection not closed")
	}
}
