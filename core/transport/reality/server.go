package reality

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"github.com/mirage-vpn/mirage/core/auth"
	"github.com/mirage-vpn/mirage/core/transport/tlsx"
)

// Defaults and bounds of the server.
const (
	// DefaultMaxTimeDiff is the accepted clock difference between client
	// and server when ServerConfig.MaxTimeDiff is zero.
	DefaultMaxTimeDiff = 90 * time.Second
	// DefaultHelloTimeout bounds ReadClientHello in Handle when no timeout
	// is given.
	DefaultHelloTimeout = 10 * time.Second
	// MaxHelloBytes bounds what ReadClientHello reads: one 16 KiB
	// handshake message plus record headers.
	MaxHelloBytes = 1<<14 + 1024

	maxHelloMsg      = 1 << 14 // handshake message incl. its 4-byte header
	maxRecordPayload = 1 << 14
	replayEntries    = 1 << 16
	destDialTimeout  = 10 * time.Second
)

// Errors.
var (
	// ErrNotTLS means the first bytes are not a TLS handshake record.
	ErrNotTLS = errors.New("reality: not a TLS handshake")
	// ErrHelloTooLarge means the ClientHello exceeds MaxHelloBytes.
	ErrHelloTooLarge = errors.New("reality: ClientHello too large")
	// ErrSpliced is returned by Handle when the connection was not
	// authenticated and was handed to the destination site.
	ErrSpliced = errors.New("reality: connection spliced to the destination site")
)

// ServerConfig configures a reality server.
type ServerConfig struct {
	// PrivateKey is the server's static X25519 private key.
	PrivateKey [32]byte
	// ShortIDs are the accepted short ids (at least one).
	ShortIDs [][8]byte
	// ServerNames are the accepted SNIs (at least one), compared
	// case-insensitively.
	ServerNames []string
	// Dest is the real site (host:port) that unauthenticated connections
	// are spliced to. Empty: ServerNames[0]:443.
	Dest string
	// MaxTimeDiff is the accepted |server time - client time|. Zero:
	// DefaultMaxTimeDiff.
	MaxTimeDiff time.Duration
	// SpliceIdle closes a spliced connection idle both ways for this long.
	// Zero: DefaultSpliceIdle.
	SpliceIdle time.Duration
	// DialDest opens the connection to Dest. Nil: a net.Dialer.
	DialDest func(ctx context.Context, network, addr string) (net.Conn, error)
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
	// Logger receives debug messages on rejected clients. Nil: discarded.
	Logger *slog.Logger
}

// Server authenticates reality ClientHellos, terminates TLS for
// authenticated clients and splices every other connection to Dest. It is
// safe for concurrent use.
type Server struct {
	priv     *ecdh.PrivateKey
	shortIDs map[[8]byte]struct{}
	names    map[string]struct{}
	dest     string
	maxDiff  time.Duration
	idle     time.Duration
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	now      func() time.Time
	log      *slog.Logger
	replay   *auth.ReplayWindow

	certKey    *ecdsa.PrivateKey
	certPrefix []byte // certificate DER up to its 64-byte signature value
	certSPKI   []byte
	base       *tls.Config
}

// Auth is what a successful Authenticate learned about the client.
type Auth struct {
	ServerName string    // SNI (lower case)
	ShortID    [8]byte   // the client's short id
	Version    [3]byte   // the client's protocol version
	ClientTime time.Time // the client's clock when it built the hello

	certKey [32]byte
}

// NewServer validates c and returns a server.
func NewServer(c ServerConfig) (*Server, error) {
	if c.PrivateKey == ([32]byte{}) {
		return nil, errors.New("reality server: private key is missing")
	}
	priv, err := ecdh.X25519().NewPrivateKey(c.PrivateKey[:])
	if err != nil {
		return nil, fmt.Errorf("reality server: private key: %w", err)
	}
	if len(c.ShortIDs) == 0 {
		return nil, errors.New("reality server: at least one short id is required")
	}
	if len(c.ServerNames) == 0 {
		return nil, errors.New("reality server: at least one server name is required")
	}
	if c.SpliceIdle == 0 {
		c.SpliceIdle = DefaultSpliceIdle
	}
	if c.MaxTimeDiff < 0 {
		return nil, fmt.Errorf("reality server: max time difference %v is negative", c.MaxTimeDiff)
	}
	s := &Server{
		priv:     priv,
		shortIDs: make(map[[8]byte]struct{}, len(c.ShortIDs)),
		names:    make(map[string]struct{}, len(c.ServerNames)),
		dest:     c.Dest,
		maxDiff:  c.MaxTimeDiff,
		idle:     c.SpliceIdle,
		dial:     c.DialDest,
		now:      c.Now,
		log:      c.Logger,
	}
	for _, id := range c.ShortIDs {
		s.shortIDs[id] = struct{}{}
	}
	for _, n := range c.ServerNames {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if n == "" {
			return nil, errors.New("reality server: empty server name")
		}
		s.names[n] = struct{}{}
	}
	if s.dest == "" {
		s.dest = net.JoinHostPort(strings.ToLower(c.ServerNames[0]), "443")
	}
	if _, _, err := net.SplitHostPort(s.dest); err != nil {
		return nil, fmt.Errorf("reality server: dest %q: %w", s.dest, err)
	}
	if s.maxDiff == 0 {
		s.maxDiff = DefaultMaxTimeDiff
	}
	if s.dial == nil {
		s.dial = (&net.Dialer{}).DialContext
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.replay = auth.NewReplayWindow(s.maxDiff, replayEntries)
	if err := s.makeCert(strings.ToLower(c.ServerNames[0])); err != nil {
		return nil, err
	}
	s.base = &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		NextProtos:             []string{"h2", "http/1.1"},
		SessionTicketsDisabled: true,
	}
	return s, nil
}

// makeCert builds the per-process certificate template: a self-signed
// ECDSA P-256 certificate whose signature value is a 64-byte placeholder,
// later replaced per connection by certMAC. P-256 rather than Ed25519
// because the Chrome ClientHello does not offer ed25519 in
// signature_algorithms and crypto/tls honours that list for
// CertificateVerify.
func (s *Server) makeCert(name string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("reality server: certificate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return fmt.Errorf("reality server: certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(90 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("reality server: create certificate: %w", err)
	}
	// Re-encode Certificate ::= SEQUENCE { tbs, sigAlg, BIT STRING } with a
	// fixed 64-byte signature so the MAC can be appended per connection.
	in := cryptobyte.String(der)
	var body, tbs, alg cryptobyte.String
	if !in.ReadASN1(&body, asn1.SEQUENCE) || !body.ReadASN1Element(&tbs, asn1.SEQUENCE) ||
		!body.ReadASN1Element(&alg, asn1.SEQUENCE) {
		return errors.New("reality server: malformed generated certificate")
	}
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddBytes(alg)
		b.AddASN1(asn1.BIT_STRING, func(b *cryptobyte.Builder) {
			b.AddUint8(0) // no unused bits
			b.AddBytes(make([]byte, macLen))
		})
	})
	out, err := b.Bytes()
	if err != nil {
		return fmt.Errorf("reality server: encode certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(out)
	if err != nil {
		return fmt.Errorf("reality server: parse certificate: %w", err)
	}
	s.certKey = key
	s.certPrefix = out[:len(out)-macLen]
	s.certSPKI = cert.RawSubjectPublicKeyInfo
	return nil
}

// certificate returns the certificate for one authenticated connection.
func (s *Server) certificate(a *Auth) tls.Certificate {
	der := make([]byte, 0, len(s.certPrefix)+macLen)
	der = append(der, s.certPrefix...)
	der = append(der, certMAC(a.certKey, s.certSPKI)...)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: s.certKey}
}

// Dest returns the host:port unauthenticated connections are spliced to.
func (s *Server) Dest() string { return s.dest }

// ReadClientHello reads the TLS record(s) carrying the ClientHello from
// conn, without writing anything, and parses it. It reads exactly the
// records of the hello (never beyond), at most MaxHelloBytes. raw is every
// byte read, also on error, so the caller can replay them to the real site.
// A non-zero deadline bounds the whole read and stays set on return: it is
// the caller's handshake deadline, which must go on bounding the TLS
// handshake and the Hello that follow (clearing it here once let a client
// that finished TLS and then sent nothing hold a handshake slot forever).
func ReadClientHello(conn net.Conn, deadline time.Time) (raw []byte, hello *tlsx.ClientHello, err error) {
	if !deadline.IsZero() {
		if err := conn.SetReadDeadline(deadline); err != nil {
			return nil, nil, fmt.Errorf("reality: set deadline: %w", err)
		}
	}
	raw = make([]byte, 0, 2048)
	read := func(n int) error {
		if len(raw)+n > MaxHelloBytes {
			return ErrHelloTooLarge
		}
		start := len(raw)
		raw = append(raw, make([]byte, n)...)
		got, err := io.ReadFull(conn, raw[start:])
		raw = raw[:start+got]
		return err
	}
	var msgHdr [4]byte
	msgLen, need := 0, -1
	for need < 0 || msgLen < need {
		if err := read(5); err != nil {
			return raw, nil, fmt.Errorf("reality: read ClientHello: %w", err)
		}
		h := raw[len(raw)-5:]
		if h[0] != 22 || h[1] != 3 {
			return raw, nil, ErrNotTLS
		}
		n := int(h[3])<<8 | int(h[4])
		if n == 0 || n > maxRecordPayload {
			return raw, nil, fmt.Errorf("%w: record length %d", ErrNotTLS, n)
		}
		if err := read(n); err != nil {
			return raw, nil, fmt.Errorf("reality: read ClientHello: %w", err)
		}
		rec := raw[len(raw)-n:]
		for i := 0; msgLen+i < 4 && i < n; i++ {
			msgHdr[msgLen+i] = rec[i]
		}
		msgLen += n
		if need < 0 && msgLen >= 4 {
			if msgHdr[0] != 1 {
				return raw, nil, fmt.Errorf("%w: handshake type %d", ErrNotTLS, msgHdr[0])
			}
			need = 4 + (int(msgHdr[1])<<16 | int(msgHdr[2])<<8 | int(msgHdr[3]))
			if need > maxHelloMsg {
				return raw, nil, ErrHelloTooLarge
			}
		}
	}
	hello, err = tlsx.ParseClientHello(raw)
	if err != nil {
		return raw, nil, fmt.Errorf("reality: %w", err)
	}
	return raw, hello, nil
}

// Authenticate reports whether the ClientHello carries a valid reality
// authenticator: the session id opens under the key shared with the
// client's X25519 share, the version's major number is ours, the short id
// is configured, the client clock is within MaxTimeDiff, the SNI is one of
// ServerNames and the authenticator was not seen before. hello may be nil,
// then it is parsed from raw. A true result is final: the same hello is
// refused afterwards (replay).
func (s *Server) Authenticate(raw []byte, hello *tlsx.ClientHello) (*Auth, bool) {
	a, _ := s.Check(raw, hello)
	return a, a != nil
}

// Check is Authenticate that also reports whether a refused hello was a
// replay of an authenticator already used (for metrics).
func (s *Server) Check(raw []byte, hello *tlsx.ClientHello) (a *Auth, replayed bool) {
	a, reason := s.authenticate(raw, hello)
	if a == nil {
		s.log.Debug("reality: not authenticated", "reason", reason)
		return nil, reason == reasonReplay
	}
	return a, false
}

const reasonReplay = "replayed (or replay cache full)"

func (s *Server) authenticate(raw []byte, hello *tlsx.ClientHello) (*Auth, string) {
	if hello == nil {
		h, err := tlsx.ParseClientHello(raw)
		if err != nil {
			return nil, err.Error()
		}
		hello = h
	}
	name := strings.ToLower(hello.ServerName)
	if _, ok := s.names[name]; !ok {
		return nil, "unknown server name"
	}
	if len(hello.SessionID) != sessionIDLen {
		return nil, "no 32-byte session id"
	}
	share := clientShare(hello.KeyShares)
	if share == nil {
		return nil, "no X25519 key share"
	}
	shared, err := x25519Key(s.priv, share)
	if err != nil {
		return nil, err.Error()
	}
	k, err := deriveKeys(shared, hello.Random)
	if err != nil {
		return nil, err.Error()
	}
	aad, err := zeroedHello(hello.Raw)
	if err != nil {
		return nil, err.Error()
	}
	p, err := openSessionID(k, hello.Random, aad, hello.SessionID)
	if err != nil {
		return nil, err.Error()
	}
	if p.Version[0] != Version[0] {
		return nil, fmt.Sprintf("unsupported version %d.%d.%d", p.Version[0], p.Version[1], p.Version[2])
	}
	if _, ok := s.shortIDs[p.ShortID]; !ok {
		return nil, "unknown short id"
	}
	now := s.now()
	ct := time.Unix(int64(p.Time), 0)
	if d := now.Sub(ct); d > s.maxDiff || d < -s.maxDiff {
		return nil, fmt.Sprintf("client clock off by %v", d.Round(time.Second))
	}
	var key [16]byte
	copy(key[:], hello.SessionID[payloadLen:]) // the GCM tag
	if s.replay.Seen(key, ct, now) {
		return nil, reasonReplay
	}
	return &Auth{ServerName: name, ShortID: p.ShortID, Version: p.Version, ClientTime: ct, certKey: k.cert}, ""
}

// clientShare picks the X25519 public key the authenticator uses: the
// first X25519 (0x001d) key share, else the X25519 half (last 32 bytes) of
// the first X25519MLKEM768 (0x11ec) share. Nil if neither is well formed.
func clientShare(ks []tlsx.KeyShare) []byte {
	for _, k := range ks {
		if k.Group == tlsx.GroupX25519 {
			if len(k.Data) != 32 {
				return nil
			}
			return k.Data
		}
	}
	for _, k := range ks {
		if k.Group == tlsx.GroupX25519MLKEM768 {
			if len(k.Data) != mlkemShareLen {
				return nil
			}
			return k.Data[len(k.Data)-32:]
		}
	}
	return nil
}

// mlkemShareLen is the client's X25519MLKEM768 share: an ML-KEM-768
// encapsulation key (1184 bytes) followed by an X25519 key (32).
const mlkemShareLen = 1184 + 32

// TLSConn returns a TLS 1.3 server connection on conn for an authenticated
// client; replay (the bytes ReadClientHello read) is fed to it first. The
// certificate carries the MAC the client checks; ALPN offers h2 and
// http/1.1; no session tickets. The caller runs the handshake.
//
// a must come from Authenticate; with a nil a the handshake fails (no
// certificate).
func (s *Server) TLSConn(conn net.Conn, replay []byte, a *Auth) *tls.Conn {
	cfg := s.base.Clone()
	if a != nil {
		cfg.Certificates = []tls.Certificate{s.certificate(a)}
	}
	return tls.Server(&replayConn{Conn: conn, pending: replay}, cfg)
}

// replayConn returns pending before reading from Conn.
type replayConn struct {
	net.Conn
	mu      sync.Mutex
	pending []byte
}

func (c *replayConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(b)
}

// CloseWrite half-closes the underlying connection when it can.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// Handle serves one accepted connection end to end: it reads the
// ClientHello (bounded by helloTimeout, zero: DefaultHelloTimeout); an
// authenticated client gets a TLS connection whose handshake is done
// (bounded by ctx and helloTimeout); anything else is spliced to Dest until
// it ends and Handle returns an error wrapping ErrSpliced.
func (s *Server) Handle(ctx context.Context, conn net.Conn, helloTimeout time.Duration) (*tls.Conn, *Auth, error) {
	if helloTimeout <= 0 {
		helloTimeout = DefaultHelloTimeout
	}
	raw, hello, err := ReadClientHello(conn, time.Now().Add(helloTimeout))
	var a *Auth
	if err == nil {
		a, _ = s.Authenticate(raw, hello)
	} else {
		s.log.Debug("reality: no ClientHello", "remote", conn.RemoteAddr(), "err", err)
	}
	if a == nil {
		if err := s.Splice(ctx, conn, raw); err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrSpliced, err)
		}
		return nil, nil, ErrSpliced
	}
	tc := s.TLSConn(conn, raw, a)
	_ = conn.SetDeadline(time.Now().Add(helloTimeout))
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("reality handshake: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	return tc, a, nil
}
