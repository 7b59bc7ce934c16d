package tlsx

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// A reload serves the new certificate to new connections; a failed reload
// keeps the old one.
func TestReloadableCert(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pin1, _, err := EnsureCert(cert, key, []string{"192.0.2.1"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := LoadReloadableCert(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	served := func() string {
		t.Helper()
		ln, err := tls.Listen("tcp", "127.0.0.1:0", r.ServerConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.(*tls.Conn).Handshake()
				c.Close()
			}
		}()
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true}) // no SNI
		defer c.Close()
		if err := c.Handshake(); err != nil {
			t.Fatal(err)
		}
		return PinString(pinOf(c.ConnectionState().PeerCertificates[0].Raw))
	}
	if got := served(); got != pin1 {
		t.Fatalf("served %s, want the first certificate %s", got, pin1)
	}
	os.Remove(cert)
	os.Remove(key)
	pin2, _, err := EnsureCert(cert, key, []string{"192.0.2.1"})
	if err != nil || pin2 == pin1 {
		t.Fatalf("second certificate: %v (same pin %v)", err, pin2 == pin1)
	}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := served(); got != pin2 {
		t.Fatal("the reloaded certificate is not served")
	}
	os.WriteFile(key, []byte("not a key"), 0o600)
	if err := r.Reload(); err == nil {
		t.Fatal("a broken key file reloaded")
	}
	if got := served(); got != pin2 {
		t.Fatal("a failed reload changed the served certificate")
	}
}
