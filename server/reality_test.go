package server

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/config"
	"github.com/mirage-vpn/mirage/core/engine"
	"github.com/mirage-vpn/mirage/core/transport/reality"
	"github.com/mirage-vpn/mirage/core/tundev/tundevtest"
)

const targetName = "example.com" // httptest's certificate is valid for it

type realityDialer struct {
	addr string
	o    reality.ClientOptions
}

func (d realityDialer) Protocol() string { return config.ProtoReality }
func (d realityDialer) Dial(ctx context.Context) (engine.Conn, error) {
	return reality.Dial(ctx, d.addr, d.o)
}

// realityRig is a rig whose port serves REALITY and tcp-tls, with a
// stand-in "real site" as the splice destination.
type realityRig struct {
	*rig
	site *httptest.Server
	pub  [32]byte
	sid  [8]byte
}

func newRealityRig(t *testing.T) *realityRig { return newRealityRigWith(t, nil, nil) }

func newRealityRigWith(t *testing.T, mutate func(*config.Server), opts func(*Options)) *realityRig {
	t.Helper()
	site := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Stand-In", "yes")
		io.WriteString(w, "the real site's page")
	}))
	t.Cleanup(site.Close)
	k, _ := ecdh.X25519().GenerateKey(rand.Reader)
	var priv, pub [32]byte
	copy(priv[:], k.Bytes())
	copy(pub[:], k.PublicKey().Bytes())
	sid := [8]byte{0xab, 0xcd, 1, 2, 3, 4, 5, 6}
	rs, err := reality.NewServer(reality.ServerConfig{
		PrivateKey: priv, ShortIDs: [][8]byte{sid}, ServerNames: []string{targetName},
		Dest: site.Listener.Addr().String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	r := newRigWith(t, "127.0.0.1:0", mutate, func(o *Options) {
		o.Reality = rs
		o.TLSNames = []string{"vpn.example.net"}
		if opts != nil {
			opts(o)
		}
	})
	return &realityRig{rig: r, site: site, pub: pub, sid: sid}
}

func (r *realityRig) realityDialer(pub [32]byte, sid [8]byte) realityDialer {
	return realityDialer{r.addr, reality.ClientOptions{ServerName: targetName, PublicKey: pub, ShortID: sid}}
}

func TestRealityClientPassesTraffic(t *testing.T) {
	r := newRealityRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := engine.DialSession(ctx, engine.SessionParams{
		Dialers:  []engine.Dialer{r.realityDialer(r.pub, r.sid)},
		Username: "alice", Password: "alice-pw", Parallel: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if sess.Protocol != config.ProtoReality {
		t.Fatalf("protocol %s", sess.Protocol)
	}
	tun := tundevtest.New(1420)
	defer tun.Close()
	sess.Start(tun)
	tn := engine.NewTunnel(tun, nil)
	tn.Attach(sess)
	go tn.Run()
	me := sess.Welcome.ClientAddrs[0].Addr()
	up := tundevtest.UDP(me, internet4, []byte("via reality"))
	tun.Inbound <- up
	expect(t, r.tun.Outbound, up)
	down := tundevtest.UDP(internet4, me, []byte("back"))
	r.tun.Inbound <- down
	expect(t, tun.Outbound, down)
}

// tcp-tls clients (no SNI, or a tcp-tls name) share the port.
func TestRealityAndTCPTLSShareThePort(t *testing.T) {
	r := newRealityRig(t)
	r.connect(t, "alice", "alice-pw", 1) // testDialer: crypto/tls, no SNI
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := tls.Dial("tcp", r.addr, &tls.Config{ServerName: "vpn.example.net", InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _, err = engine.ClientHandshake(ctx, tlsConn{c}, helloFor("bob", "bob-pw"), 5*time.Second)
	if err != nil {
		t.Fatalf("tcp-tls with a tcp-tls SNI: %v", err)
	}
}

// fetch does an HTTPS GET of / through addr with the given SNI, trusting the
// stand-in's CA, and returns the body and the leaf certificate.
func fetch(t *testing.T, site *httptest.Server, addr, sni string) (string, []byte) {
	t.Helper()
	cfg := site.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	cfg.ServerName = sni
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("tls to %s as %s: %v", addr, sni, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+sni+"\r\nConnection: close\r\n\r\n")
	body, _ := io.ReadAll(c)
	return string(body), c.ConnectionState().PeerCertificates[0].Raw
}

func TestProbersSeeTheRealSite(t *testing.T) {
	r := newRealityRig(t)
	direct, directCert := fetch(t, r.site, r.site.Listener.Addr().String(), targetName)
	viaUs, ourCert := fetch(t, r.site, r.addr, targetName)
	if !bytes.Equal(directCert, ourCert) {
		t.Fatal("the server did not present the real site's certificate")
	}
	if !bytes.Contains([]byte(viaUs), []byte("the real site's page")) || !bytes.Contains([]byte(viaUs), []byte("X-Stand-In: yes")) {
		t.Fatalf("spliced answer: %q", viaUs)
	}
	_ = direct
}

func TestBadRealityClientsAreSpliced(t *testing.T) {
	r := newRealityRig(t)
	k, _ := ecdh.X25519().GenerateKey(rand.Reader)
	var wrongPub [32]byte
	copy(wrongPub[:], k.PublicKey().Bytes())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cases := map[string]realityDialer{
		"wrong public key": r.realityDialer(wrongPub, r.sid),
		"wrong short id":   r.realityDialer(r.pub, [8]byte{9, 9, 9}),
	}
	stale := r.realityDialer(r.pub, r.sid)
	stale.o.Now = func() time.Time { return time.Now().Add(-10 * time.Minute) }
	cases["clock outside the window"] = stale
	for name, d := range cases {
		_, err := d.Dial(ctx)
		if !errors.Is(err, reality.ErrNotVerified) {
			t.Errorf("%s: got %v, want ErrNotVerified (spliced to the real site)", name, err)
		}
	}
	if n := r.srv.SessionCount(); n != 0 {
		t.Fatalf("%d sessions", n)
	}
}

func TestGarbageIsSplicedToo(t *testing.T) {
	r := newRealityRig(t)
	ask := func(addr string) []byte {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		b, _ := io.ReadAll(c)
		return b
	}
	direct := ask(r.site.Listener.Addr().String())
	via := ask(r.addr)
	if len(direct) == 0 || !bytes.Equal(direct, via) {
		t.Fatalf("garbage answer differs:\n direct %q\n via us %q", direct, via)
	}
}

// A profile listing reality first against a server without REALITY falls
// back to tcp-tls.
func TestFallbackToTCPTLS(t *testing.T) {
	r := newRig(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := engine.DialSession(ctx, engine.SessionParams{
		Dialers: []engine.Dialer{
			realityDialer{r.addr, reality.ClientOptions{ServerName: targetName, PublicKey: [32]byte{1}}},
			testDialer{r.addr},
		},
		Username: "alice", Password: "alice-pw",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if sess.Protocol != config.ProtoTCPTLS {
		t.Fatalf("connected with %s", sess.Protocol)
	}
}
