// Package tlsx holds the TLS pieces of the tcp-tls transport: a client that
// dials with a Chrome ClientHello (uTLS) and verifies the server explicitly
// (certificate pin, private CA, or system roots), the server-side
// certificate helpers, and a ClientHello parser used to check fingerprints
// and to route by SNI.
package tlsx

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	utls "github.com/refraction-networking/utls"
)

// DefaultHandshakeTimeout bounds Dial (TCP connect + TLS handshake) when the
// caller's context carries no deadline.
const DefaultHandshakeTimeout = 30 * time.Second

// ErrPinMismatch is returned (wrapped) when the server's leaf certificate
// does not hash to ClientOptions.PinnedSHA256.
var ErrPinMismatch = errors.New("tls: server certificate does not match the pinned SHA-256")

// ClientOptions configures Dial.
type ClientOptions struct {
	// ServerName is the SNI sent and, without a pin, the name the
	// certificate must be valid for. Empty: the host part of addr.
	ServerName string
	// PinnedSHA256 is the SHA-256 of the server's leaf certificate (DER),
	// 32 bytes. When set, only this certificate is accepted and neither the
	// chain nor the name is checked.
	PinnedSHA256 []byte
	// CAFile is a PEM bundle of trusted roots used instead of the system
	// roots. Ignored when PinnedSHA256 is set.
	CAFile string
	// Insecure skips certificate verification (a warning is logged on every
	// dial). Ignored when PinnedSHA256 is set: a pin is always enforced.
	Insecure bool
	// Dial opens the TCP connection. Nil: a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger receives warnings. Nil: discarded.
	Logger *slog.Logger
	// Congestion is the TCP congestion control to set (TCPOptions).
	Congestion string
}

// Conn is an established client TLS connection.
type Conn struct {
	u *utls.UConn
}

// Handshake runs u's handshake on raw bounded by ctx (a timeout of the
// connection deadline is reported as context.DeadlineExceeded), closes raw on
// failure, and afterwards lets keying-material export work: the Chrome
// hello's renegotiation_info extension sets RenegotiateOnceAsClient, which
// makes uTLS refuse it; the hello is sent, so the fingerprint is unaffected,
// and TLS 1.3 never renegotiates. cfg must be the config u was built with.
func Handshake(ctx context.Context, raw net.Conn, u *utls.UConn, cfg *utls.Config) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	if err := u.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		// The conn deadline (= ctx deadline) may fire just before ctx does.
		ctxErr := ctx.Err()
		var ne net.Error
		if ctxErr == nil && errors.As(err, &ne) && ne.Timeout() {
			ctxErr = context.DeadlineExceeded
		}
		if ctxErr != nil && !errors.Is(err, ctxErr) {
			err = fmt.Errorf("%w (%w)", ctxErr, err)
		}
		return err
	}
	_ = raw.SetDeadline(time.Time{})
	cfg.Renegotiation = utls.RenegotiateNever
	return nil
}

// WrapUConn wraps a uTLS connection whose handshake is complete (the
// reality transport builds its own and returns it as a Conn too).
func WrapUConn(u *utls.UConn) *Conn { return &Conn{u: u} }

// Dial connects to addr over TCP and performs a TLS handshake whose
// ClientHello is our Chrome fingerprint (NewChromeClient: modelled field by
// field on a Chromium 156 capture, see docs/fingerprint.md), ALPN h2 +
// http/1.1 as Chrome sends it.
// The whole dial is bounded by ctx, or by DefaultHandshakeTimeout when ctx
// has no deadline.
func Dial(ctx context.Context, addr string, o ClientOptions) (*Conn, error) {
	serverName := o.ServerName
	if serverName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("tls dial %q: no server name and address has no host: %w", addr, err)
		}
		serverName = host
	}
	verify, err := o.Verifier(serverName, addr)
	if err != nil {
		return nil, err
	}

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultHandshakeTimeout)
		defer cancel()
	}

	dial := o.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	raw, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("tls dial %s: %w", addr, err)
	}
	TuneTCP(raw, TCPOptions{Congestion: o.Congestion, Log: o.Logger})

	cfg := &utls.Config{
		ServerName: serverName,
		// Verification is done explicitly by verify, for every mode.
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: verify,
	}
	u := NewChromeClient(raw, cfg)
	if err := Handshake(ctx, raw, u, cfg); err != nil {
		return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
	}
	return &Conn{u: u}, nil
}

// Verifier returns the VerifyPeerCertificate callback for the configured
// mode (pin, CA file, system roots or insecure), having validated the
// options. The QUIC transport uses it with crypto/tls.
func (o ClientOptions) Verifier(serverName, addr string) (func([][]byte, [][]*x509.Certificate) error, error) {
	if len(o.PinnedSHA256) > 0 {
		if len(o.PinnedSHA256) != sha256.Size {
			return nil, fmt.Errorf("tls: pinned SHA-256 must be %d bytes, got %d", sha256.Size, len(o.PinnedSHA256))
		}
		pin := append([]byte(nil), o.PinnedSHA256...)
		return func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("tls: server sent no certificate")
			}
			sum := sha256.Sum256(raw[0])
			if subtle.ConstantTimeCompare(sum[:], pin) != 1 {
				return fmt.Errorf("%w (got %s)", ErrPinMismatch, hex.EncodeToString(sum[:]))
			}
			return nil
		}, nil
	}
	if o.Insecure {
		log := o.Logger
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		log.Warn("TLS certificate verification is disabled (insecure); the connection can be intercepted", "server", addr, "server_name", serverName)
		return func([][]byte, [][]*x509.Certificate) error { return nil }, nil
	}
	var roots *x509.CertPool // nil: system roots
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: read CA file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: CA file %s contains no PEM certificates", o.CAFile)
		}
	}
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		return verifyChain(raw, roots, serverName)
	}, nil
}

// verifyChain checks the server's chain against roots (nil: system roots)
// and that the leaf is valid for name.
func verifyChain(raw [][]byte, roots *x509.CertPool, name string) error {
	if len(raw) == 0 {
		return errors.New("tls: server sent no certificate")
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, der := range raw {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("tls: parse server certificate %d: %w", i, err)
		}
		certs[i] = c
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		DNSName:       name,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return fmt.Errorf("tls: verify server certificate for %q: %w", name, err)
	}
	return nil
}

// Read reads application data.
func (c *Conn) Read(b []byte) (int, error) { return c.u.Read(b) }

// Write writes application data.
func (c *Conn) Write(b []byte) (int, error) { return c.u.Write(b) }

// Close sends close_notify and closes the TCP connection.
func (c *Conn) Close() error { return c.u.Close() }

// CloseWrite sends close_notify and half-closes the connection.
func (c *Conn) CloseWrite() error { return c.u.CloseWrite() }

// LocalAddr returns the local TCP address.
func (c *Conn) LocalAddr() net.Addr { return c.u.LocalAddr() }

// RemoteAddr returns the server's TCP address.
func (c *Conn) RemoteAddr() net.Addr { return c.u.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.u.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.u.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.u.SetWriteDeadline(t) }

// ExportKeyingMaterial exports keying material bound to this TLS session
// (RFC 5705 / RFC 8446 §7.5), e.g. to bind authentication to the channel.
func (c *Conn) ExportKeyingMaterial(label string, context []byte, length int) ([]byte, error) {
	cs := c.u.ConnectionState()
	return cs.ExportKeyingMaterial(label, context, length)
}

// NegotiatedProtocol returns the ALPN protocol the server selected ("" if none).
func (c *Conn) NegotiatedProtocol() string { return c.u.ConnectionState().NegotiatedProtocol }

// Version returns the negotiated TLS version (e.g. tls.VersionTLS13).
func (c *Conn) Version() uint16 { return c.u.ConnectionState().Version }

// Congestion is the TCP congestion control in use on the connection, read
// back from the kernel ("" when the OS does not tell).
func (c *Conn) Congestion() string { return Congestion(c.u.NetConn()) }

var _ net.Conn = (*Conn)(nil)
