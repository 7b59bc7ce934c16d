package tlsx

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	utls "github.com/refraction-networking/utls"
)

// Our hello offers GREASE and ML-DSA signature schemes uTLS cannot verify,
// and a trust_anchors extension servers may not know. These tests check
// that ordinary servers (RSA and ECDSA certificates, TLS 1.3 and 1.2) still
// complete the handshake and exchange data with it.

type testKey struct {
	name string
	gen  func() (crypto.Signer, error)
}

var interopKeys = []testKey{
	{"rsa2048", func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) }},
	{"ecdsa-p256", func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }},
	{"ecdsa-p384", func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P384(), rand.Reader) }},
}

// interopCert returns a self-signed certificate for localhost and its pin.
func interopCert(t *testing.T, k testKey) (tls.Certificate, []byte) {
	t.Helper()
	key, err := k.gen()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	pin := sha256.Sum256(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pin[:]
}

func TestChromeHelloInteropGoServer(t *testing.T) {
	for _, k := range interopKeys {
		for _, vers := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
			t.Run(fmt.Sprintf("%s/%s", k.name, tls.VersionName(vers)), func(t *testing.T) {
				cert, pin := interopCert(t, k)
				addr, results := startServer(t, &tls.Config{
					Certificates: []tls.Certificate{cert},
					MaxVersion:   vers,
					NextProtos:   []string{"h2", "http/1.1"},
				})
				c, err := Dial(dialCtx(t), addr, ClientOptions{ServerName: "www.example.com", PinnedSHA256: pin})
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				defer c.Close()
				res := <-results
				if res.err != nil {
					t.Fatalf("server handshake: %v", res.err)
				}
				if c.Version() != vers || res.state.Version != vers {
					t.Errorf("version client %#x server %#x, want %#x", c.Version(), res.state.Version, vers)
				}
				if c.NegotiatedProtocol() != "h2" {
					t.Errorf("ALPN %q, want h2", c.NegotiatedProtocol())
				}
				wantGroup := tls.X25519MLKEM768 // hybrid groups are TLS 1.3 only
				if vers == tls.VersionTLS12 {
					wantGroup = tls.X25519
				}
				if res.state.CurveID != wantGroup {
					t.Errorf("key exchange %v, want %v", res.state.CurveID, wantGroup)
				}
				ekm, err := c.ExportKeyingMaterial(ekmLabel, ekmContext, ekmLength)
				if err != nil || !bytes.Equal(ekm, res.ekm) {
					t.Errorf("keying material %x (%v), server %x", ekm, err, res.ekm)
				}
				msg := []byte("chrome hello interop")
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, len(msg))
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(c, buf); err != nil || !bytes.Equal(buf, msg) {
					t.Fatalf("echo %q, %v", buf, err)
				}
			})
		}
	}
}

// startOpenSSL runs `openssl s_server -www` for one connection on a
// loopback port it picks itself and returns the address.
func startOpenSSL(t *testing.T, cert tls.Certificate, versFlag string) string {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed; skipping the OpenSSL interop test")
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	cmd := exec.CommandContext(ctx, bin, "s_server", "-accept", "127.0.0.1:0", "-naccept", "1",
		"-cert", certFile, "-key", keyFile, "-www", versFlag)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start openssl: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	addrCh := make(chan string, 1)
	go func() {
		defer close(addrCh)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "ACCEPT "); ok {
				addrCh <- a
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case a, ok := <-addrCh:
		if !ok {
			t.Fatalf("openssl s_server exited: %s", stderr.String())
		}
		return a
	case <-time.After(10 * time.Second):
		t.Fatalf("openssl s_server did not start: %s", stderr.String())
	}
	return ""
}

func TestChromeHelloInteropOpenSSL(t *testing.T) {
	shared := regexp.MustCompile(`(?m)^Shared Signature Algorithms: (.*)$`)
	offered := regexp.MustCompile(`(?m)^Signature Algorithms: (.*)$`)
	for _, k := range interopKeys[:2] {
		for _, v := range []struct {
			flag, name string
			vers       uint16
		}{{"-tls1_3", "TLSv1.3", tls.VersionTLS13}, {"-tls1_2", "TLSv1.2", tls.VersionTLS12}} {
			t.Run(k.name+"/"+v.name, func(t *testing.T) {
				cert, pin := interopCert(t, k)
				addr := startOpenSSL(t, cert, v.flag)
				c, err := Dial(dialCtx(t), addr, ClientOptions{ServerName: "www.example.com", PinnedSHA256: pin})
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				defer c.Close()
				if c.Version() != v.vers {
					t.Errorf("version %#x, want %#x", c.Version(), v.vers)
				}
				if _, err := c.ExportKeyingMaterial(ekmLabel, ekmContext, ekmLength); err != nil {
					t.Errorf("ExportKeyingMaterial: %v", err)
				}
				if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				page, err := io.ReadAll(io.LimitReader(c, 1<<20))
				if err != nil && len(page) == 0 {
					t.Fatalf("read: %v", err)
				}
				s := string(page)
				if !strings.HasPrefix(s, "HTTP/1.0 200 ok") {
					t.Fatalf("unexpected response: %.200q", s)
				}
				if !strings.Contains(s, "New, "+v.name+", Cipher is ") {
					t.Errorf("OpenSSL did not report a %s session:\n%s", v.name, s)
				}
				m := shared.FindStringSubmatch(s)
				if m == nil || !strings.Contains(m[1], "RSA-PSS+SHA256") || !strings.Contains(m[1], "ECDSA+SHA256") {
					t.Errorf("OpenSSL's shared signature algorithms: %v", m)
				}
				if o := offered.FindStringSubmatch(s); o != nil {
					t.Logf("OpenSSL saw our signature algorithms: %s", o[1])
				}
			})
		}
	}
}

// TestChromeClientSessionCache checks that a config with a session cache
// works: Chrome's fresh-connection hello has no pre_shared_key extension,
// so a cached TLS 1.3 session must be skipped, not make uTLS panic.
func TestChromeClientSessionCache(t *testing.T) {
	cert, _ := interopCert(t, interopKeys[1])
	addr, results := startServer(t, &tls.Config{Certificates: []tls.Certificate{cert}})
	cache := utls.NewLRUClientSessionCache(4)
	for i := range 2 {
		raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
		u := NewChromeClient(raw, &utls.Config{ServerName: "localhost", InsecureSkipVerify: true, ClientSessionCache: cache})
		if err := u.Handshake(); err != nil {
			raw.Close()
			t.Fatalf("handshake %d: %v", i, err)
		}
		if res := <-results; res.err != nil {
			t.Fatalf("server handshake %d: %v", i, res.err)
		}
		// A round trip lets the client read the server's session ticket.
		if _, err := u.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1)
		if _, err := io.ReadFull(u, buf); err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if u.ConnectionState().DidResume {
			t.Errorf("connection %d resumed; Chrome's first-connection hello cannot", i)
		}
		u.Close()
	}
}
