package tlsx

import (
	"crypto/tls"
	"sync/atomic"
)

// ReloadableCert is the server certificate loaded from files and replaced
// in place by Reload (SIGHUP), so a renewed certificate is served to new
// connections while established ones go on undisturbed.
type ReloadableCert struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// LoadReloadableCert loads certFile/keyFile.
func LoadReloadableCert(certFile, keyFile string) (*ReloadableCert, error) {
	r := &ReloadableCert{certFile: certFile, keyFile: keyFile}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the files again; on error the previous certificate stays.
func (r *ReloadableCert) Reload() error {
	c, err := loadKeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	r.cur.Store(&c)
	return nil
}

// Current is the certificate served now.
func (r *ReloadableCert) Current() *tls.Certificate { return r.cur.Load() }

// ServerConfig is the package's ServerConfig serving r's current
// certificate (also to clients without SNI).
func (r *ReloadableCert) ServerConfig() *tls.Config {
	return &tls.Config{
		GetCertificate:         func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return r.Current(), nil },
		MinVersion:             tls.VersionTLS12,
		NextProtos:             []string{"h2", "http/1.1"},
		SessionTicketsDisabled: false,
	}
}
