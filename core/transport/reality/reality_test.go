package reality

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/transport/tlsx"
)

func TestRoundTrip(t *testing.T) {
	site := newStandIn(t)
	ts := newTestServer(t, site.addr, nil)
	ctx := testCtx(t)

	c, err := Dial(ctx, ts.addr, ts.opts())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	var ac authedConn
	select {
	case ac = <-ts.authed:
	case <-ctx.Done():
		t.Fatal("server did not authenticate the client")
	}
	defer ac.tc.Close()
	if ac.a.ShortID != ts.sid || ac.a.ServerName != targetName || ac.a.Version != Version {
		t.Errorf("auth = %+v", ac.a)
	}
	if d := time.Since(ac.a.ClientTime); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("client time %v is not now", ac.a.ClientTime)
	}
	if p := c.NegotiatedProtocol(); p != "h2" {
		t.Errorf("client ALPN = %q, want h2", p)
	}
	if st := ac.tc.ConnectionState(); st.Version != tls.VersionTLS13 || st.NegotiatedProtocol != "h2" {
		t.Errorf("server state: version %#x alpn %q", st.Version, st.NegotiatedProtocol)
	}

	// Data both ways.
	go func() {
		buf := make([]byte, 4)
		if _, err := io.ReadFull(ac.tc, buf); err != nil {
			return
		}
		ac.tc.Write(append([]byte("pong:"), buf...))
	}()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 9)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != "pong:ping" {
		t.Errorf("got %q", got)
	}

	ck, err := c.ExportKeyingMaterial("mirage test", []byte("ctx"), 32)
	if err != nil {
		t.Fatalf("client EKM: %v", err)
	}
	st := ac.tc.ConnectionState()
	sk, err := st.ExportKeyingMaterial("mirage test", []byte("ctx"), 32)
	if err != nil {
		t.Fatalf("server EKM: %v", err)
	}
	if !bytes.Equal(ck, sk) || bytes.Equal(ck, make([]byte, 32)) {
		t.Errorf("EKM differ: client %x server %x", ck, sk)
	}
	if n := site.connCount(); n != 0 {
		t.Errorf("the stand-in got %d connections for an authenticated client", n)
	}
}

// TestHelloLooksLikeChrome checks the reality hello differs from the plain
// Chrome hello only in random, session id and key shares.
func TestHelloLooksLikeChrome(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	_, pub, _ := GenerateKey()
	u := tlsx.NewChromeClient(a, newUTLSConfig(targetName))
	if _, err := prepareHello(u, pub, [8]byte{1}, time.Now()); err != nil {
		t.Fatal(err)
	}
	plain := tlsx.NewChromeClient(b, newUTLSConfig(targetName))
	if err := plain.BuildHandshakeState(); err != nil {
		t.Fatal(err)
	}
	hr, err := tlsx.ParseClientHello(record(u.HandshakeState.Hello.Raw))
	if err != nil {
		t.Fatal(err)
	}
	hp, err := tlsx.ParseClientHello(record(plain.HandshakeState.Hello.Raw))
	if err != nil {
		t.Fatal(err)
	}
	// (Lengths may differ: the GREASE ECH payload length is random.)
	if len(hr.SessionID) != 32 || hr.ServerName != targetName || hr.LegacyVersion != hp.LegacyVersion {
		t.Errorf("reality hello: sid %d bytes, sni %q", len(hr.SessionID), hr.ServerName)
	}
	norm := func(vs []uint16) []uint16 {
		out := make([]uint16, len(vs))
		for i, v := range vs {
			if tlsx.IsGREASE(v) {
				v = 0x0a0a
			}
			out[i] = v
		}
		return out
	}
	if !equalU16(norm(hr.CipherSuites), norm(hp.CipherSuites)) || !equalU16(norm(hr.SupportedGroups), norm(hp.SupportedGroups)) ||
		!strings.EqualFold(strings.Join(hr.ALPN, ","), strings.Join(hp.ALPN, ",")) {
		t.Errorf("reality hello parameters differ from Chrome's")
	}
	// Extension order may be shuffled per hello (Chrome does); compare sets.
	set := func(vs []uint16) map[uint16]bool {
		m := map[uint16]bool{}
		for _, v := range norm(vs) {
			m[v] = true
		}
		return m
	}
	sr, sp := set(hr.Extensions), set(hp.Extensions)
	if len(sr) != len(sp) {
		t.Errorf("extensions: reality %v, chrome %v", hr.Extensions, hp.Extensions)
	}
	for e := range sr {
		if !sp[e] {
			t.Errorf("extension %#04x only in the reality hello", e)
		}
	}
}

func equalU16(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestProbeGetsRealSite: an ordinary HTTPS client (and a plain TLS
// client) talking to the reality server gets the stand-in's certificate
// chain and page, byte-identical to asking the stand-in directly.
func TestProbeGetsRealSite(t *testing.T) {
	site := newStandIn(t)
	ts := newTestServer(t, site.addr, nil)

	get := func(addr string) (body []byte, chain [][]byte) {
		t.Helper()
		tr := &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: site.roots, ServerName: targetName},
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			},
			ForceAttemptHTTP2: true,
		}
		defer tr.CloseIdleConnections()
		cl := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		resp, err := cl.Get("https://" + targetName + "/")
		if err != nil {
			t.Fatalf("GET via %s: %v", addr, err)
		}
		defer resp.Body.Close()
		body, err = io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range resp.TLS.PeerCertificates {
			chain = append(chain, c.Raw)
		}
		if resp.ProtoMajor != 2 {
			t.Errorf("via %s: HTTP/%d, want 2 (ALPN passed through)", addr, resp.ProtoMajor)
		}
		return body, chain
	}
	directBody, directChain := get(site.addr)
	body, chain := get(ts.addr)
	if string(body) != standInBody || !bytes.Equal(body, directBody) {
		t.Errorf("body via reality %q, direct %q", body, directBody)
	}
	if len(chain) != 2 || len(chain) != len(directChain) {
		t.Fatalf("chain via reality has %d certs, direct %d", len(chain), len(directChain))
	}
	for i := range chain {
		if !bytes.Equal(chain[i], directChain[i]) || !bytes.Equal(chain[i], site.chain[i]) {
			t.Errorf("certificate %d differs from the stand-in's", i)
		}
	}
	if err := recvErr(t, ts.handled); !errors.Is(err, ErrSpliced) {
		t.Errorf("Handle = %v, want ErrSpliced", err)
	}

	// A plain crypto/tls client: same chain, verified against the stand-in CA.
	tc, err := tls.Dial("tcp", ts.addr, &tls.Config{RootCAs: site.roots, ServerName: targetName})
	if err != nil {
		t.Fatalf("plain TLS client: %v", err)
	}
	st := tc.ConnectionState()
	tc.Close()
	if len(st.PeerCertificates) == 0 || !bytes.Equal(st.PeerCertificates[0].Raw, site.chain[0]) {
		t.Error("plain TLS client did not get the stand-in's certificate")
	}
}

// TestRejectedClientsAreSpliced: every refused authenticator reaches the
// real site, and our client then refuses the real site's certificate.
func TestRejectedClientsAreSpliced(t *testing.T) {
	site := newStandIn(t)
	ts := newTestServer(t, site.addr, nil)
	_, otherPub, _ := GenerateKey()
	cases := []struct {
		name string
		mod  func(*ClientOptions)
	}{
		{"wrong short id", func(o *ClientOptions) { o.ShortID = [8]byte{9, 9, 9} }},
		{"wrong public key", func(o *ClientOptions) { o.PublicKey = otherPub }},
		{"clock ahead", func(o *ClientOptions) { o.Now = func() time.Time { return time.Now().Add(3 * time.Minute) } }},
		{"clock behind", func(o *ClientOptions) { o.Now = func() time.Time { return time.Now().Add(-3 * time.Minute) } }},
		{"unknown SNI", func(o *ClientOptions) { o.ServerName = "www.other.test" }},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := ts.opts()
			tc.mod(&o)
			d := &recordingDialer{}
			o.Dial = d.Dial
			c, err := Dial(testCtx(t), ts.addr, o)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			if !errors.Is(err, ErrNotVerified) {
				t.Errorf("err = %v, want ErrNotVerified", err)
			}
			if got := recvErr(t, ts.handled); !errors.Is(got, ErrSpliced) {
				t.Errorf("Handle = %v, want ErrSpliced", got)
			}
			// The stand-in received our hello unchanged.
			sent := d.conns[0].written()
			h, err := tlsx.ParseClientHello(sent)
			if err != nil {
				t.Fatal(err)
			}
			if got := site.received(i); !bytes.HasPrefix(got, sent[:h.Len]) {
				t.Errorf("stand-in connection %d did not start with the client's hello", i)
			}
		})
	}
}

// TestReplayedHello: a captured valid ClientHello sent again is refused
// and spliced; the real site answers it.
func TestReplayedHello(t *testing.T) {
	site := newStandIn(t)
	ts := newTestServer(t, site.addr, nil)
	d := &recordingDialer{}
	o := ts.opts()
	o.Dial = d.Dial
	c, err := Dial(testCtx(t), ts.addr, o)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	(<-ts.authed).tc.Close()
	if err := recvErr(t, ts.handled); err != nil {
		t.Fatalf("Handle = %v", err)
	}

	sent := d.conns[0].written()
	h, err := tlsx.ParseClientHello(sent)
	if err != nil {
		t.Fatal(err)
	}
	hello := sent[:h.Len]
	if _, ok := ts.srv.Authenticate(hello, nil); ok {
		t.Fatal("Authenticate accepted a replayed hello")
	}

	conn, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(hello); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(conn, hdr); err != nil {
		t.Fatalf("no answer to the replayed hello: %v", err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(conn, body); err != nil {
		t.Fatal(err)
	}
	// A ServerHello echoing the replayed session id, from the stand-in.
	if hdr[0] != 22 || body[0] != 2 || len(body) < 39+32 || !bytes.Equal(body[39:39+32], h.SessionID) {
		t.Fatalf("answer is not a ServerHello echoing the session id: %x", append(hdr, body...))
	}
	deadline := time.Now().Add(5 * time.Second)
	for site.connCount() < 1 || !bytes.HasPrefix(site.received(0), hello) {
		if time.Now().After(deadline) {
			t.Fatal("the stand-in did not receive the replayed hello")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !bytes.HasPrefix(site.conns[0].written(), append(hdr, body...)) {
		t.Error("the answer differs from what the stand-in sent")
	}
	conn.Close()
	if err := recvErr(t, ts.handled); !errors.Is(err, ErrSpliced) {
		t.Errorf("Handle = %v, want ErrSpliced", err)
	}
}

// recvErr waits (bounded) for Handle's result.
func recvErr(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Handle did not return")
		return nil
	}
}

// TestGarbageIsSpliced: non-TLS and broken TLS get the real site's answer,
// byte for byte.
func TestGarbageIsSpliced(t *testing.T) {
	site := newStandIn(t)
	ts := newTestServer(t, site.addr, nil)
	inputs := map[string][]byte{
		"http":            []byte("GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n"),
		"tls header junk": append([]byte{22, 3, 1, 0, 40}, bytes.Repeat([]byte{0xee}, 40)...),
		"binary":          bytes.Repeat([]byte{0x00, 0xff, 0x13}, 30),
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			ask := func(addr string) []byte {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if _, err := c.Write(in); err != nil {
					t.Fatal(err)
				}
				return readAll(t, c)
			}
			direct := ask(site.addr)
			via := ask(ts.addr)
			if !bytes.Equal(via, direct) {
				t.Errorf("via reality %q, direct %q", via, direct)
			}
			if name == "http" && !bytes.Contains(via, []byte("400 Bad Request")) {
				t.Errorf("stand-in's 400 answer missing: %q", via)
			}
		})
	}
}

// TestSpliceOneWrite: a prober's garbage reaches the site in one piece. A
// site that reads once and closes then sends a FIN, as it does to a direct
// connection; bytes split over two writes stay partly unread there and
// its kernel resets the connection instead, which a prober can tell apart.
func TestSpliceOneWrite(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 16<<10)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _ := c.Read(buf)
			got <- n
			c.Close()
		}
	}()
	ts := newTestServer(t, ln.Addr().String(), nil)
	garbage := append([]byte("Q"), bytes.Repeat([]byte{0x5a}, 511)...)
	for _, addr := range []string{ln.Addr().String(), ts.addr} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(garbage); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		if n := <-got; n != len(garbage) {
			t.Errorf("%s: the site's first read got %d of %d bytes", addr, n, len(garbage))
		}
		if !errors.Is(err, io.EOF) {
			t.Errorf("%s: the prober's read ended with %v, want EOF (a FIN, as from the site directly)", addr, err)
		}
	}
}

// TestSpliceHalfClose: a half-close travels both ways through the splice.
func TestSpliceHalfClose(t *testing.T) {
	// Dest echoes until EOF, then writes "bye" and closes.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
		c.Write([]byte("bye"))
	}()
	ts := newTestServer(t, ln.Addr().String(), nil)
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	c.(*net.TCPConn).CloseWrite()
	got := readAll(t, c)
	if string(got) != "GET / HTTP/1.0\r\n\r\nbye" {
		t.Errorf("got %q", got)
	}
}

// TestSpliceBoundedByContext: cancelling ctx ends a splice whose two ends
// stay silent.
func TestSpliceBoundedByContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			io.Copy(io.Discard, c)
		}
	}()
	srv := mustServer(t, func(c *ServerConfig) { c.Dest = ln.Addr().String() })
	a, b := tcpPair(t)
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Splice(ctx, a, []byte("x")) }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Splice = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Splice did not return after cancel")
	}
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := b.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("client side not closed: %v", err)
	}

	// Unreachable dest: an error, and the client conn is closed.
	srv2 := mustServer(t, func(c *ServerConfig) {
		c.DialDest = func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("refused") }
	})
	a2, b2 := tcpPair(t)
	defer b2.Close()
	if err := srv2.Splice(context.Background(), a2, nil); err == nil {
		t.Error("Splice to an unreachable dest returned nil")
	}
	b2.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := b2.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("client side not closed: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- nil
			return
		}
		ch <- c
	}()
	b, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a == nil {
		t.Fatal("accept failed")
	}
	return a, b
}

func mustServer(t *testing.T, mod func(*ServerConfig)) *Server {
	t.Helper()
	priv, _, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c := ServerConfig{PrivateKey: priv, ShortIDs: [][8]byte{{1}}, ServerNames: []string{targetName}}
	if mod != nil {
		mod(&c)
	}
	s, err := NewServer(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
