package tlsx

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	ekmLabel  = "EXPORTER-tlsx-test"
	ekmLength = 32
)

var ekmContext = []byte("binding")

type serverResult struct {
	state tls.ConnectionState
	ekm   []byte
	err   error
}

// startServer runs a crypto/tls echo server on loopback. Each accepted
// connection's handshake outcome is sent on the returned channel.
func startServer(t *testing.T, cfg *tls.Config) (string, <-chan serverResult) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan serverResult, 16)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
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
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				tc := tls.Server(c, cfg)
				if err := tc.Handshake(); err != nil {
					results <- serverResult{err: err}
					return
				}
				st := tc.ConnectionState()
				ekm, err := st.ExportKeyingMaterial(ekmLabel, ekmContext, ekmLength)
				results <- serverResult{state: st, ekm: ekm, err: err}
				_, _ = io.Copy(tc, tc)
			}()
		}
	}()
	return ln.Addr().String(), results
}

func selfSignedFiles(t *testing.T, hosts ...string) (certFile, keyFile string, pin []byte) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pinHex, _, err := EnsureCert(certFile, keyFile, hosts)
	if err != nil {
		t.Fatal(err)
	}
	pin, err = ParsePin(pinHex)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pin
}

func serverConfig(t *testing.T, certFile, keyFile string) *tls.Config {
	t.Helper()
	cfg, err := ServerConfig(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func dialCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestDialPinned(t *testing.T) {
	certFile, keyFile, pin := selfSignedFiles(t, "localhost")
	addr, results := startServer(t, serverConfig(t, certFile, keyFile))

	// With a pin the name is not checked: the SNI can be any cover name.
	c, err := Dial(dialCtx(t), addr, ClientOptions{ServerName: "www.example.com", PinnedSHA256: pin})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	res := <-results
	if res.err != nil {
		t.Fatalf("server handshake: %v", res.err)
	}

	if got := c.NegotiatedProtocol(); got != "h2" {
		t.Errorf("client ALPN = %q, want h2", got)
	}
	if res.state.NegotiatedProtocol != "h2" {
		t.Errorf("server ALPN = %q, want h2", res.state.NegotiatedProtocol)
	}
	if c.Version() != tls.VersionTLS13 || res.state.Version != tls.VersionTLS13 {
		t.Errorf("version client %#x server %#x, want TLS 1.3", c.Version(), res.state.Version)
	}
	if res.state.ServerName != "www.example.com" {
		t.Errorf("server saw SNI %q", res.state.ServerName)
	}
	if res.state.CurveID != tls.X25519MLKEM768 {
		t.Errorf("key exchange = %v, want X25519MLKEM768", res.state.CurveID)
	}

	ekm, err := c.ExportKeyingMaterial(ekmLabel, ekmContext, ekmLength)
	if err != nil {
		t.Fatal(err)
	}
	if len(ekm) != ekmLength || !bytes.Equal(ekm, res.ekm) {
		t.Errorf("exported keying material differs:\nclient %x\nserver %x", ekm, res.ekm)
	}
	other, _ := c.ExportKeyingMaterial(ekmLabel+"-other", ekmContext, ekmLength)
	if bytes.Equal(other, ekm) {
		t.Error("different labels gave the same keying material")
	}

	// Application data both ways.
	msg := []byte("hello over tls")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || !bytes.Equal(buf, msg) {
		t.Fatalf("echo = %q, %v", buf, err)
	}
}

func TestDialWrongPin(t *testing.T) {
	certFile, keyFile, pin := selfSignedFiles(t, "localhost")
	addr, results := startServer(t, serverConfig(t, certFile, keyFile))

	wrong := bytes.Clone(pin)
	wrong[0] ^= 0xff
	_, err := Dial(dialCtx(t), addr, ClientOptions{ServerName: "localhost", PinnedSHA256: wrong})
	if err == nil {
		t.Fatal("Dial with a wrong pin succeeded")
	}
	if !errors.Is(err, ErrPinMismatch) {
		t.Errorf("error does not wrap ErrPinMismatch: %v", err)
	}
	want := "tls: server certificate does not match the pinned SHA-256 (got " + hex.EncodeToString(pin) + ")"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error = %q, want it to contain %q", err, want)
	}
	if res := <-results; res.err == nil {
		t.Error("server handshake succeeded although the client rejected the certificate")
	}
}

func TestDialBadOptions(t *testing.T) {
	ctx := dialCtx(t)
	_, err := Dial(ctx, "127.0.0.1:1", ClientOptions{ServerName: "x", PinnedSHA256: []byte{1, 2, 3}})
	if err == nil || !strings.Contains(err.Error(), "must be 32 bytes, got 3") {
		t.Errorf("short pin: %v", err)
	}
	_, err = Dial(ctx, "127.0.0.1:1", ClientOptions{ServerName: "x", CAFile: filepath.Join(t.TempDir(), "missing.pem")})
	if err == nil || !strings.Contains(err.Error(), "read CA file") {
		t.Errorf("missing CA file: %v", err)
	}
	junk := filepath.Join(t.TempDir(), "junk.pem")
	os.WriteFile(junk, []byte("not pem"), 0o644)
	_, err = Dial(ctx, "127.0.0.1:1", ClientOptions{ServerName: "x", CAFile: junk})
	if err == nil || !strings.Contains(err.Error(), "contains no PEM certificates") {
		t.Errorf("junk CA file: %v", err)
	}
	_, err = Dial(ctx, "no-port", ClientOptions{})
	if err == nil || !strings.Contains(err.Error(), "no server name") {
		t.Errorf("no server name: %v", err)
	}
}

// testCA creates a CA and a server certificate for names signed by it; it
// returns the CA file and the server's cert/key files.
func testCA(t *testing.T, names ...string) (caFile, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Test Root CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := x509.MarshalPKCS8PrivateKey(srvKey)
	caFile = filepath.Join(dir, "ca.pem")
	certFile = filepath.Join(dir, "server.pem")
	keyFile = filepath.Join(dir, "server.key")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), 0o600)
	return caFile, certFile, keyFile
}

func TestDialCAFile(t *testing.T) {
	caFile, certFile, keyFile := testCA(t, "server.example")
	addr, results := startServer(t, serverConfig(t, certFile, keyFile))

	c, err := Dial(dialCtx(t), addr, ClientOptions{ServerName: "server.example", CAFile: caFile})
	if err != nil {
		t.Fatalf("Dial with the right CA and name: %v", err)
	}
	c.Close()
	if res := <-results; res.err != nil {
		t.Fatalf("server: %v", res.err)
	}

	_, err = Dial(dialCtx(t), addr, ClientOptions{ServerName: "other.example", CAFile: caFile})
	if err == nil {
		t.Fatal("Dial with a name the certificate does not cover succeeded")
	}
	if !strings.Contains(err.Error(), `verify server certificate for "other.example"`) ||
		!strings.Contains(err.Error(), "server.example") {
		t.Errorf("name mismatch error unclear: %v", err)
	}
	<-results

	// A CA that did not sign the server certificate.
	otherCA, _, _ := testCA(t, "server.example")
	_, err = Dial(dialCtx(t), addr, ClientOptions{ServerName: "server.example", CAFile: otherCA})
	if err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("foreign CA: err = %v, want unknown authority", err)
	}
	<-results
}

func TestDialSystemRootsRejectSelfSigned(t *testing.T) {
	certFile, keyFile, _ := selfSignedFiles(t, "localhost")
	addr, results := startServer(t, serverConfig(t, certFile, keyFile))
	_, err := Dial(dialCtx(t), addr, ClientOptions{ServerName: "localhost"})
	if err == nil {
		t.Fatal("self-signed certificate accepted against system roots")
	}
	if !strings.Contains(err.Error(), `verify server certificate for "localhost"`) {
		t.Errorf("error = %v", err)
	}
	<-results
}

// syncBuffer is a bytes.Buffer safe for the logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestDialInsecureWarns(t *testing.T) {
	certFile, keyFile, _ := selfSignedFiles(t, "localhost")
	addr, results := startServer(t, serverConfig(t, certFile, keyFile))
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	c, err := Dial(dialCtx(t), addr, ClientOptions{ServerName: "anything.example", Insecure: true, Logger: log})
	if err != nil {
		t.Fatalf("insecure Dial: %v", err)
	}
	c.Close()
	<-results
	if out := logs.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "verification is disabled") {
		t.Errorf("no insecure warning logged: %q", out)
	}
}

func TestDialInsecureStillEnforcesPin(t *testing.T) {
	certFile, keyFile, pin := selfSignedFiles(t, "localhost")
	addr, results := startServer(t, serverConfig(t, certFile, keyFile))
	wrong := bytes.Clone(pin)
	wrong[31] ^= 1
	_, err := Dial(dialCtx(t), addr, ClientOptions{ServerName: "localhost", Insecure: true, PinnedSHA256: wrong})
	if !errors.Is(err, ErrPinMismatch) {
		t.Errorf("insecure + wrong pin: err = %v, want pin mismatch", err)
	}
	<-results
}

func TestDialHonoursContextDeadline(t *testing.T) {
	// A server that accepts TCP and never answers the ClientHello.
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
		_, _ = io.Copy(io.Discard, c)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Dial(ctx, ln.Addr().String(), ClientOptions{ServerName: "localhost", Insecure: true})
	if err == nil {
		t.Fatal("Dial succeeded against a silent server")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("Dial took %v despite a 300ms deadline", el)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want it to wrap context.DeadlineExceeded", err)
	}
}

func TestDialCustomDialer(t *testing.T) {
	certFile, keyFile, pin := selfSignedFiles(t, "localhost")
	addr, results := startServer(t, serverConfig(t, certFile, keyFile))
	called := false
	c, err := Dial(dialCtx(t), "ignored.invalid:443", ClientOptions{
		ServerName:   "localhost",
		PinnedSHA256: pin,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			called = true
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	<-results
	if !called {
		t.Error("custom Dial not used")
	}
}

func TestServerConfigErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := ServerConfig(filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem"))
	if err == nil || !strings.Contains(err.Error(), "c.pem") {
		t.Errorf("missing files: %v", err)
	}
	certFile, keyFile, _ := selfSignedFiles(t)
	cfg, err := ServerConfig(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS12 || len(cfg.NextProtos) != 2 || cfg.NextProtos[0] != "h2" || cfg.NextProtos[1] != "http/1.1" {
		t.Errorf("unexpected config: min %#x alpn %v", cfg.MinVersion, cfg.NextProtos)
	}
}

func TestDialIPAddressName(t *testing.T) {
	// Server name derived from an IP address: no SNI is sent (as in
	// browsers) and the certificate must carry the IP as a SAN.
	certFile, keyFile, _ := selfSignedFiles(t, "127.0.0.1")
	addr, results := startServer(t, serverConfig(t, certFile, keyFile))
	c, err := Dial(dialCtx(t), addr, ClientOptions{CAFile: certFile})
	if err != nil {
		t.Fatalf("Dial by IP with the self-signed cert as CA: %v", err)
	}
	c.Close()
	if res := <-results; res.err != nil || res.state.ServerName != "" {
		t.Errorf("server: err %v, SNI %q (want none for an IP)", res.err, res.state.ServerName)
	}

	other, _, _ := selfSignedFiles(t, "localhost")
	addr2, results2 := startServer(t, serverConfig(t, other, strings.TrimSuffix(other, "cert.pem")+"key.pem"))
	_, err = Dial(dialCtx(t), addr2, ClientOptions{CAFile: other})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("cert without the IP SAN: err = %v", err)
	}
	<-results2
}
