package reality

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	utls "github.com/refraction-networking/utls"

	"github.com/mirage-vpn/mirage/core/transport/tlsx"
)

// DefaultHandshakeTimeout bounds Dial when ctx has no deadline.
const DefaultHandshakeTimeout = 30 * time.Second

// ErrNotVerified means the server's certificate did not carry the MAC
// only a server holding the private key can compute: the public key is
// wrong, the server refused the authenticator (short id, clock, replay)
// and spliced us to the real site, or it is not a Mirage server.
var ErrNotVerified = errors.New("reality: the server did not prove the shared key (wrong public_key, or not a Mirage server)")

// ClientOptions configures Dial.
type ClientOptions struct {
	// ServerName is the SNI sent: the site imitated (target_sni). Required.
	ServerName string
	// PublicKey is the server's static X25519 public key. Required.
	PublicKey [32]byte
	// ShortID is this client's short id.
	ShortID [8]byte
	// Dial opens the TCP connection. Nil: a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Now is the clock written into the authenticator. Nil: time.Now.
	Now func() time.Time
	// Logger receives debug messages. Nil: discarded.
	Logger *slog.Logger
	// Congestion is the TCP congestion control to set (tlsx.TCPOptions).
	Congestion string
}

// Conn is an established, verified reality client connection: a TLS
// connection like tcp-tls's, with ExportKeyingMaterial and
// NegotiatedProtocol.
type Conn = tlsx.Conn

// Dial connects to addr and performs the reality handshake: a Chrome
// ClientHello (tlsx.NewChromeClient) whose session id carries the
// authenticator, then TLS 1.3 with a server that must prove the shared
// key in its certificate. Anything else fails with an error wrapping
// ErrNotVerified. The whole dial is bounded by ctx, or by
// DefaultHandshakeTimeout when ctx has no deadline.
func Dial(ctx context.Context, addr string, o ClientOptions) (*Conn, error) {
	if o.ServerName == "" {
		return nil, errors.New("reality dial: server name (target_sni) is required")
	}
	if o.PublicKey == ([32]byte{}) {
		return nil, errors.New("reality dial: server public key is required")
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
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	raw, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("reality dial %s: %w", addr, err)
	}
	tlsx.TuneTCP(raw, tlsx.TCPOptions{Congestion: o.Congestion, Log: log})
	var certKey [32]byte
	cfg := &utls.Config{
		ServerName: o.ServerName,
		// The server is verified by the MAC check below, not by a CA.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			return verifyCert(certKey, rawCerts)
		},
	}
	u := tlsx.NewChromeClient(raw, cfg)
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	certKey, err = prepareHello(u, o.PublicKey, o.ShortID, now())
	if err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("reality dial %s: %w", addr, err)
	}
	if err := tlsx.Handshake(ctx, raw, u, cfg); err != nil {
		log.Debug("reality handshake failed", "server", addr, "err", err)
		return nil, fmt.Errorf("reality handshake with %s: %w", addr, err)
	}
	return tlsx.WrapUConn(u), nil
}

// prepareHello builds u's ClientHello and writes the authenticator into
// its session id. It returns the key the server's certificate MAC uses.
func prepareHello(u *utls.UConn, serverPub [32]byte, shortID [8]byte, now time.Time) ([32]byte, error) {
	var none [32]byte
	if err := u.BuildHandshakeState(); err != nil {
		return none, fmt.Errorf("build ClientHello: %w", err)
	}
	hs := &u.HandshakeState
	if hs.Hello == nil || len(hs.Hello.Random) != 32 {
		return none, errors.New("reality: ClientHello was not built")
	}
	if len(hs.Hello.SessionId) != sessionIDLen {
		// Chrome always sends 32 bytes; make room if a hello does not.
		hs.Hello.SessionId = make([]byte, sessionIDLen)
		if err := u.MarshalClientHello(); err != nil {
			return none, fmt.Errorf("build ClientHello: %w", err)
		}
	}
	priv, err := helloKey(hs)
	if err != nil {
		return none, err
	}
	shared, err := x25519Key(priv, serverPub[:])
	if err != nil {
		return none, err
	}
	k, err := deriveKeys(shared, hs.Hello.Random)
	if err != nil {
		return none, err
	}
	aad, err := zeroedHello(hs.Hello.Raw)
	if err != nil {
		return none, err
	}
	sid, err := sealSessionID(k, hs.Hello.Random, aad, payload{
		Version: Version,
		Time:    uint32(now.Unix()),
		ShortID: shortID,
	})
	if err != nil {
		return none, err
	}
	hs.Hello.SessionId = sid
	copy(hs.Hello.Raw[sessionIDOffset:], sid)
	want := hs.Hello.Raw
	// uTLS marshals the hello again from its fields when the handshake
	// starts; make sure that yields exactly the bytes we authenticated.
	if err := u.BuildHandshakeState(); err != nil {
		return none, fmt.Errorf("build ClientHello: %w", err)
	}
	if !bytes.Equal(hs.Hello.Raw, want) {
		return none, errors.New("reality: ClientHello changed when re-marshalled")
	}
	return k.cert, nil
}

// helloKey returns the private key of the X25519 share clientShare picks
// on the server: the X25519 share, else the X25519 half of the
// X25519MLKEM768 share.
func helloKey(hs *utls.PubClientHandshakeState) (*ecdh.PrivateKey, error) {
	ks := hs.State13.KeyShareKeys
	if ks == nil {
		return nil, errors.New("reality: ClientHello has no key shares")
	}
	match := func(pub []byte) *ecdh.PrivateKey {
		for _, k := range []*ecdh.PrivateKey{ks.Ecdhe, ks.MlkemEcdhe} {
			if k != nil && k.Curve() == ecdh.X25519() && bytes.Equal(k.PublicKey().Bytes(), pub) {
				return k
			}
		}
		return nil
	}
	shares := make([]tlsx.KeyShare, 0, len(hs.Hello.KeyShares))
	for _, s := range hs.Hello.KeyShares {
		shares = append(shares, tlsx.KeyShare{Group: uint16(s.Group), Len: len(s.Data), Data: s.Data})
	}
	if pub := clientShare(shares); pub != nil {
		if k := match(pub); k != nil {
			return k, nil
		}
	}
	return nil, errors.New("reality: ClientHello has no X25519 key share")
}

// verifyCert accepts only a leaf whose signature value is
// HMAC-SHA512(certKey, its SubjectPublicKeyInfo) over a P-256 key.
func verifyCert(certKey [32]byte, rawCerts [][]byte) error {
	if len(rawCerts) == 0 {
		return ErrNotVerified
	}
	c, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return ErrNotVerified
	}
	if _, ok := c.PublicKey.(*ecdsa.PublicKey); !ok {
		return ErrNotVerified
	}
	if !hmac.Equal(c.Signature, certMAC(certKey, c.RawSubjectPublicKeyInfo)) {
		return ErrNotVerified
	}
	return nil
}

var _ net.Conn = (*Conn)(nil)

// AuthenticatedHello returns a TLS record holding a fresh Chrome
// ClientHello whose session id carries a valid authenticator for the
// server with public key pub, as Dial would send it. `mirage-server
// check` sends it twice to see that the server answers the first copy
// itself and splices the replayed one to the camouflage target.
func AuthenticatedHello(serverName string, pub [32]byte, shortID [8]byte, now time.Time) ([]byte, error) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	u := tlsx.NewChromeClient(a, &utls.Config{ServerName: serverName, InsecureSkipVerify: true})
	if _, err := prepareHello(u, pub, shortID, now); err != nil {
		return nil, err
	}
	raw := u.HandshakeState.Hello.Raw
	if len(raw) > 1<<14 {
		return nil, fmt.Errorf("reality: ClientHello of %d bytes does not fit one record", len(raw))
	}
	rec := make([]byte, 0, 5+len(raw))
	rec = append(rec, 22, 3, 1, byte(len(raw)>>8), byte(len(raw)))
	return append(rec, raw...), nil
}
