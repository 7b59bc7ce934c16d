package reality

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
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

const (
	targetName  = "www.example.com"
	standInBody = "<html><body>the real www.example.com</body></html>\n"
)

// standIn is the "real site": an HTTPS server with its own CA and a
// certificate for targetName. It records the bytes each connection sent.
type standIn struct {
	addr  string
	roots *x509.CertPool
	chain [][]byte // DER, leaf first

	mu    sync.Mutex
	conns []*recConn
}

// received returns what connection i sent to the stand-in so far.
func (s *standIn) received(i int) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i >= len(s.conns) {
		return nil
	}
	return s.conns[i].read()
}

func (s *standIn) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

type recListener struct {
	net.Listener
	s *standIn
}

func (l recListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &recConn{Conn: c}
	l.s.mu.Lock()
	l.s.conns = append(l.s.conns, rc)
	l.s.mu.Unlock()
	return rc, nil
}

// recConn records the bytes read from (rd) and written to (wr) a conn.
type recConn struct {
	net.Conn
	mu     sync.Mutex
	rd, wr []byte
}

func (c *recConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	c.rd = append(c.rd, b[:n]...)
	c.mu.Unlock()
	return n, err
}

// Write records b before sending it, so a peer that has read the bytes
// always finds them recorded; a short write trims the record again.
func (c *recConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	start := len(c.wr)
	c.wr = append(c.wr, b...)
	c.mu.Unlock()
	n, err := c.Conn.Write(b)
	if n < len(b) {
		c.mu.Lock()
		c.wr = c.wr[:start+n]
		c.mu.Unlock()
	}
	return n, err
}

func (c *recConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("no CloseWrite")
}

func (c *recConn) read() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.rd...)
}

func (c *recConn) written() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.wr...)
}

func newStandIn(t *testing.T) *standIn {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Stand-in Test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: targetName},
		DNSNames:     []string{targetName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, leafKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	s := &standIn{roots: x509.NewCertPool(), chain: [][]byte{leafDER, caDER}}
	s.roots.AddCert(ca)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, standInBody)
	}))
	hs.Listener.Close()
	hs.Listener = recListener{Listener: ln, s: s}
	hs.EnableHTTP2 = true
	hs.Config.ErrorLog = log.New(io.Discard, "", 0) // probes cause handshake errors
	hs.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: s.chain, PrivateKey: leafKey}},
	}
	hs.StartTLS()
	t.Cleanup(hs.Close)
	s.addr = ln.Addr().String()
	return s
}

// testServer runs a reality server on loopback whose Dest is dest.
type testServer struct {
	srv  *Server
	addr string
	pub  [32]byte
	sid  [8]byte
	// authed receives every authenticated connection; the test serves it.
	authed chan authedConn
	// handled receives Handle's error for every connection.
	handled chan error
}

type authedConn struct {
	tc *tls.Conn
	a  *Auth
}

func newTestServer(t *testing.T, dest string, mod func(*ServerConfig)) *testServer {
	t.Helper()
	priv, pub, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{pub: pub, sid: [8]byte{0xab, 0xcd, 0xef, 1}, authed: make(chan authedConn, 16), handled: make(chan error, 64)}
	cfg := ServerConfig{
		PrivateKey:  priv,
		ShortIDs:    [][8]byte{ts.sid, {0x12, 0x34}},
		ServerNames: []string{targetName},
		Dest:        dest,
	}
	if mod != nil {
		mod(&cfg)
	}
	ts.srv, err = NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				tc, a, err := ts.srv.Handle(ctx, c, 3*time.Second)
				select {
				case ts.handled <- err:
				default:
				}
				if err != nil {
					return
				}
				select {
				case ts.authed <- authedConn{tc, a}:
				default:
					tc.Close()
				}
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	return ts
}

func (ts *testServer) opts() ClientOptions {
	return ClientOptions{ServerName: targetName, PublicKey: ts.pub, ShortID: ts.sid}
}

// recordingDialer dials TCP and keeps every conn so the test can see the
// bytes the client wrote.
type recordingDialer struct {
	mu    sync.Mutex
	conns []*recConn
}

func (d *recordingDialer) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	rc := &recConn{Conn: c}
	d.mu.Lock()
	d.conns = append(d.conns, rc)
	d.mu.Unlock()
	return rc, nil
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// readAll reads c until EOF or an error, bounded in time.
func readAll(t *testing.T, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var buf bytes.Buffer
	_, err := io.Copy(&buf, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("read did not end: got %q so far", buf.Bytes())
	}
	return buf.Bytes()
}
