package tlsx

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// certValidity is the lifetime of a generated self-signed certificate.
const certValidity = 10 * 365 * 24 * time.Hour

// EnsureCert makes sure certFile and keyFile hold a usable certificate and
// key. If either file is missing it generates a self-signed ECDSA P-256
// certificate for hosts (IP addresses become IP SANs, anything else DNS
// SANs; unspecified addresses such as 0.0.0.0 are skipped; none left means
// "localhost"), writes both files atomically (key 0600,
// certificate 0644) and reports generated=true. Existing files are loaded
// and checked, never overwritten. pinHex is the hex SHA-256 of the leaf
// certificate's DER, the value a client profile pins.
func EnsureCert(certFile, keyFile string, hosts []string) (pinHex string, generated bool, err error) {
	certExists, err := exists(certFile)
	if err != nil {
		return "", false, err
	}
	keyExists, err := exists(keyFile)
	if err != nil {
		return "", false, err
	}
	if certExists && keyExists {
		if _, err := loadKeyPair(certFile, keyFile); err != nil {
			return "", false, err
		}
		pin, err := CertPin(certFile)
		return pin, false, err
	}

	certPEM, keyPEM, err := selfSigned(hosts, time.Now())
	if err != nil {
		return "", false, err
	}
	// Key first: if we crash in between, the certificate is missing and the
	// next call generates a fresh pair.
	if err := writeFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return "", false, fmt.Errorf("write TLS key: %w", err)
	}
	if err := writeFileAtomic(certFile, certPEM, 0o644); err != nil {
		return "", false, fmt.Errorf("write TLS certificate: %w", err)
	}
	pin, err := CertPin(certFile)
	return pin, true, err
}

// CertPin returns the hex SHA-256 of the DER of the first certificate in
// the PEM file certFile.
func CertPin(certFile string) (string, error) {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return "", fmt.Errorf("read TLS certificate: %w", err)
	}
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return "", fmt.Errorf("TLS certificate %s: no PEM CERTIFICATE block found", certFile)
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return "", fmt.Errorf("TLS certificate %s: %w", certFile, err)
		}
		return PinString(pinOf(b.Bytes)), nil
	}
}

// PinString formats a certificate pin as lower-case hex.
func PinString(pin []byte) string { return hex.EncodeToString(pin) }

// ParsePin parses a SHA-256 pin written as 64 hex digits, optionally
// separated by colons (the form `openssl x509 -fingerprint` prints).
func ParsePin(s string) ([]byte, error) {
	clean := strings.ReplaceAll(strings.TrimSpace(s), ":", "")
	b, err := hex.DecodeString(clean)
	if err != nil {
		return nil, fmt.Errorf("certificate pin %q is not hex: %w", s, err)
	}
	if len(b) != sha256.Size {
		return nil, fmt.Errorf("certificate pin %q has %d bytes, want %d (SHA-256)", s, len(b), sha256.Size)
	}
	return b, nil
}

func pinOf(der []byte) []byte {
	sum := sha256.Sum256(der)
	return sum[:]
}

// loadKeyPair loads and cross-checks a certificate/key pair with errors
// that name the files.
func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load TLS certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return cert, nil
}

func exists(name string) (bool, error) {
	_, err := os.Stat(name)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, fmt.Errorf("stat %s: %w", name, err)
}

// selfSigned returns PEM encodings of a new self-signed ECDSA P-256
// certificate for hosts and its PKCS#8 private key.
func selfSigned(hosts []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	var names []string
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
		if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
			continue // a bind address like 0.0.0.0 names no host
		}
		if h != "" {
			names = append(names, h)
		}
	}
	if len(names) == 0 {
		names = []string{"localhost"}
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, fmt.Errorf("generate certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0]},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create self-signed certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode TLS key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	return certPEM, keyPEM, nil
}

// writeFileAtomic writes data to name via a temporary file in the same
// directory and a rename, so readers never see a partial file.
func writeFileAtomic(name string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(name)
	f, err := os.CreateTemp(dir, "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		_ = f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}
