package tlsx

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestEnsureCertGeneratesOnceWithStablePin(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")

	pin1, gen1, err := EnsureCert(certFile, keyFile, []string{"vps.example.org", "192.0.2.10", "[2001:db8::1]"})
	if err != nil {
		t.Fatal(err)
	}
	if !gen1 {
		t.Error("first call did not report generated")
	}
	pin2, gen2, err := EnsureCert(certFile, keyFile, []string{"other.example"})
	if err != nil {
		t.Fatal(err)
	}
	if gen2 {
		t.Error("second call regenerated existing files")
	}
	if pin1 != pin2 {
		t.Errorf("pin changed: %s -> %s", pin1, pin2)
	}
	if p, err := CertPin(certFile); err != nil || p != pin1 {
		t.Errorf("CertPin = %s, %v; want %s", p, err, pin1)
	}

	if runtime.GOOS != "windows" {
		for name, want := range map[string]os.FileMode{keyFile: 0o600, certFile: 0o644} {
			st, err := os.Stat(name)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != want {
				t.Errorf("%s mode %v, want %v", filepath.Base(name), st.Mode().Perm(), want)
			}
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only cert.pem and key.pem (temp files left?)", names)
	}

	// The pin is the SHA-256 of the DER, and the certificate is what was asked for.
	data, _ := os.ReadFile(certFile)
	block, _ := pem.Decode(data)
	sum := sha256.Sum256(block.Bytes)
	if hex.EncodeToString(sum[:]) != pin1 {
		t.Errorf("pin %s is not SHA-256 of the DER", pin1)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "vps.example.org" {
		t.Errorf("CN = %q", cert.Subject.CommonName)
	}
	if len(cert.DNSNames) != 1 || cert.DNSNames[0] != "vps.example.org" {
		t.Errorf("DNS SANs = %v", cert.DNSNames)
	}
	if len(cert.IPAddresses) != 2 || !cert.IPAddresses[0].Equal(net.ParseIP("192.0.2.10")) || !cert.IPAddresses[1].Equal(net.ParseIP("2001:db8::1")) {
		t.Errorf("IP SANs = %v", cert.IPAddresses)
	}
	if pk, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || pk.Curve != elliptic.P256() {
		t.Errorf("public key %T is not ECDSA P-256", cert.PublicKey)
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life < 10*365*24*time.Hour {
		t.Errorf("validity %v < 10 years", life)
	}
	if cert.SerialNumber.BitLen() < 64 {
		t.Errorf("serial %v looks non-random", cert.SerialNumber)
	}
	if err := cert.VerifyHostname("192.0.2.10"); err != nil {
		t.Errorf("IP SAN not usable: %v", err)
	}
}

func TestEnsureCertDefaultsToLocalhost(t *testing.T) {
	dir := t.TempDir()
	certFile := filepath.Join(dir, "c.pem")
	if _, _, err := EnsureCert(certFile, filepath.Join(dir, "k.pem"), []string{" ", "", "0.0.0.0", "[::]"}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(certFile)
	block, _ := pem.Decode(data)
	cert, _ := x509.ParseCertificate(block.Bytes)
	if cert.Subject.CommonName != "localhost" || len(cert.DNSNames) != 1 || cert.DNSNames[0] != "localhost" || len(cert.IPAddresses) != 0 {
		t.Errorf("CN %q SANs %v %v, want only localhost", cert.Subject.CommonName, cert.DNSNames, cert.IPAddresses)
	}
}

func TestEnsureCertRegeneratesWhenOneFileMissing(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pin1, _, err := EnsureCert(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(certFile)
	pin2, gen, err := EnsureCert(certFile, keyFile, nil)
	if err != nil || !gen || pin2 == pin1 {
		t.Errorf("after removing the cert: pin %s gen %v err %v (old pin %s)", pin2, gen, err, pin1)
	}
	// The new pair must match.
	if _, err := ServerConfig(certFile, keyFile); err != nil {
		t.Errorf("regenerated pair unusable: %v", err)
	}
}

func TestEnsureCertCorruptFiles(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if _, _, err := EnsureCert(certFile, keyFile, nil); err != nil {
		t.Fatal(err)
	}
	goodCert, _ := os.ReadFile(certFile)

	os.WriteFile(certFile, []byte("garbage, not a certificate\n"), 0o644)
	_, _, err := EnsureCert(certFile, keyFile, nil)
	if err == nil || !strings.Contains(err.Error(), certFile) {
		t.Errorf("corrupt cert: err = %v, want an error naming %s", err, certFile)
	}
	if b, _ := os.ReadFile(certFile); !bytes.HasPrefix(b, []byte("garbage")) {
		t.Error("corrupt certificate was overwritten")
	}

	os.WriteFile(certFile, goodCert, 0o644)
	os.WriteFile(keyFile, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
	_, _, err = EnsureCert(certFile, keyFile, nil)
	if err == nil || !strings.Contains(err.Error(), keyFile) {
		t.Errorf("corrupt key: err = %v, want an error naming %s", err, keyFile)
	}

	// A key that does not belong to the certificate.
	other := t.TempDir()
	_, _, _ = EnsureCert(filepath.Join(other, "c.pem"), filepath.Join(other, "k.pem"), nil)
	foreignKey, _ := os.ReadFile(filepath.Join(other, "k.pem"))
	os.WriteFile(keyFile, foreignKey, 0o600)
	_, _, err = EnsureCert(certFile, keyFile, nil)
	if err == nil || !strings.Contains(err.Error(), "private key does not match public key") {
		t.Errorf("mismatched key: err = %v", err)
	}
}

func TestCertPinErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := CertPin(filepath.Join(dir, "missing.pem")); err == nil {
		t.Error("missing file: no error")
	}
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("hello"), 0o644)
	if _, err := CertPin(junk); err == nil || !strings.Contains(err.Error(), "no PEM CERTIFICATE block") {
		t.Errorf("junk: %v", err)
	}
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}), 0o644)
	if _, err := CertPin(bad); err == nil || !strings.Contains(err.Error(), "bad.pem") {
		t.Errorf("bad DER: %v", err)
	}
}

func TestParsePin(t *testing.T) {
	raw := bytes.Repeat([]byte{0xab}, 32)
	for _, s := range []string{
		PinString(raw),
		strings.ToUpper(PinString(raw)),
		strings.TrimSuffix(strings.Repeat("AB:", 32), ":"),
		"  " + PinString(raw) + "\n",
	} {
		got, err := ParsePin(s)
		if err != nil || !bytes.Equal(got, raw) {
			t.Errorf("ParsePin(%q) = %x, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "abcd", "zz" + PinString(raw)[2:], PinString(raw) + "00"} {
		if _, err := ParsePin(s); err == nil {
			t.Errorf("ParsePin(%q) accepted", s)
		}
	}
}
