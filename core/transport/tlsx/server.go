package tlsx

import "crypto/tls"

// ServerConfig returns a crypto/tls server configuration for the tcp-tls
// listener: the certificate from certFile/keyFile, TLS 1.2 minimum, ALPN
// h2 and http/1.1 (what an ordinary HTTPS server offers, so the fallback
// web site can speak either), session tickets on. CurvePreferences is left
// to Go's default, which puts X25519MLKEM768 first, matching the key share
// the Chrome ClientHello sends.
func ServerConfig(certFile, keyFile string) (*tls.Config, error) {
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates:           []tls.Certificate{cert},
		MinVersion:             tls.VersionTLS12,
		NextProtos:             []string{"h2", "http/1.1"},
		SessionTicketsDisabled: false,
	}, nil
}
