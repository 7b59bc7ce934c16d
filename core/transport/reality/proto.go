package reality

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire constants of the reality authenticator (see the package doc).
const (
	// sessionIDOffset is where the 32-byte legacy_session_id starts in the
	// ClientHello handshake message: 4 (type, length) + 2 (legacy_version)
	// + 32 (random) + 1 (session id length).
	sessionIDOffset = 4 + 2 + 32 + 1
	sessionIDLen    = 32
	payloadLen      = 16
	saltLen         = 20 // ClientHello.random[:20] is the HKDF salt
	macLen          = sha512.Size

	infoAEAD = "mirage reality v1"
	infoCert = "mirage reality v1 cert"
)

// Version is the protocol version a client writes into the authenticator.
// A server accepts any version with the same major number (Version[0]).
var Version = [3]byte{1, 0, 0}

var errNoSessionID = errors.New("reality: ClientHello has no 32-byte session id")

// payload is the 16-byte plaintext hidden in the session id.
type payload struct {
	Version [3]byte
	Time    uint32 // unix seconds
	ShortID [8]byte
}

func (p payload) marshal() [payloadLen]byte {
	var b [payloadLen]byte
	copy(b[0:3], p.Version[:])
	b[3] = 0 // reserved
	binary.BigEndian.PutUint32(b[4:8], p.Time)
	copy(b[8:16], p.ShortID[:])
	return b
}

func parsePayload(b []byte) payload {
	var p payload
	copy(p.Version[:], b[0:3])
	p.Time = binary.BigEndian.Uint32(b[4:8])
	copy(p.ShortID[:], b[8:16])
	return p
}

// keys are the two secrets derived from one X25519 exchange.
type keys struct {
	aead [32]byte // AES-256-GCM key sealing the session id
	cert [32]byte // HMAC-SHA512 key authenticating the server certificate
}

// deriveKeys runs HKDF-SHA256 over the X25519 shared secret with the first
// 20 bytes of ClientHello.random as salt.
func deriveKeys(shared, random []byte) (keys, error) {
	var k keys
	if len(random) != 32 {
		return k, fmt.Errorf("reality: client random is %d bytes, want 32", len(random))
	}
	a, err := hkdf.Key(sha256.New, shared, random[:saltLen], infoAEAD, 32)
	if err != nil {
		return k, fmt.Errorf("reality: derive key: %w", err)
	}
	c, err := hkdf.Key(sha256.New, shared, random[:saltLen], infoCert, 32)
	if err != nil {
		return k, fmt.Errorf("reality: derive key: %w", err)
	}
	copy(k.aead[:], a)
	copy(k.cert[:], c)
	return k, nil
}

func newGCM(key [32]byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// sealSessionID encrypts p into the 32-byte session id: AES-256-GCM with
// nonce random[20:32] and aad the handshake message with its session id
// zeroed.
func sealSessionID(k keys, random, aad []byte, p payload) ([]byte, error) {
	if len(random) != 32 {
		return nil, fmt.Errorf("reality: client random is %d bytes, want 32", len(random))
	}
	g, err := newGCM(k.aead)
	if err != nil {
		return nil, fmt.Errorf("reality: seal: %w", err)
	}
	pt := p.marshal()
	return g.Seal(make([]byte, 0, sessionIDLen), random[saltLen:], pt[:], aad), nil
}

// openSessionID is the inverse of sealSessionID. Any input is safe.
func openSessionID(k keys, random, aad, sid []byte) (payload, error) {
	if len(random) != 32 || len(sid) != sessionIDLen {
		return payload{}, errNoSessionID
	}
	g, err := newGCM(k.aead)
	if err != nil {
		return payload{}, fmt.Errorf("reality: open: %w", err)
	}
	pt, err := g.Open(make([]byte, 0, payloadLen), random[saltLen:], sid, aad)
	if err != nil {
		return payload{}, errors.New("reality: session id does not authenticate")
	}
	return parsePayload(pt), nil
}

// zeroedHello returns a copy of the ClientHello handshake message msg with
// its 32-byte session id set to zeros: the AEAD's additional data.
func zeroedHello(msg []byte) ([]byte, error) {
	if len(msg) < sessionIDOffset+sessionIDLen || msg[0] != 1 || msg[sessionIDOffset-1] != sessionIDLen {
		return nil, errNoSessionID
	}
	out := append([]byte(nil), msg...)
	clear(out[sessionIDOffset : sessionIDOffset+sessionIDLen])
	return out, nil
}

// certMAC is what the server writes into its certificate's signature
// field: HMAC-SHA512(cert key, the certificate's SubjectPublicKeyInfo).
func certMAC(key [32]byte, spki []byte) []byte {
	m := hmac.New(sha512.New, key[:])
	m.Write(spki)
	return m.Sum(nil)
}

// x25519 computes the shared secret; it fails on a low-order peer key.
func x25519(priv, peer []byte) ([]byte, error) {
	sk, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("reality: private key: %w", err)
	}
	return x25519Key(sk, peer)
}

func x25519Key(sk *ecdh.PrivateKey, peer []byte) ([]byte, error) {
	pk, err := ecdh.X25519().NewPublicKey(peer)
	if err != nil {
		return nil, fmt.Errorf("reality: public key: %w", err)
	}
	shared, err := sk.ECDH(pk)
	if err != nil {
		return nil, fmt.Errorf("reality: x25519: %w", err)
	}
	return shared, nil
}

// GenerateKey returns a new X25519 key pair for a reality server: the
// private key goes into the server's [reality] private_key, the public key
// into the clients' [reality] public_key.
func GenerateKey() (priv, pub [32]byte, err error) {
	sk, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return priv, pub, fmt.Errorf("reality: generate key: %w", err)
	}
	copy(priv[:], sk.Bytes())
	copy(pub[:], sk.PublicKey().Bytes())
	return priv, pub, nil
}

// PublicKey returns the X25519 public key of priv.
func PublicKey(priv [32]byte) ([32]byte, error) {
	var pub [32]byte
	sk, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return pub, fmt.Errorf("reality: private key: %w", err)
	}
	copy(pub[:], sk.PublicKey().Bytes())
	return pub, nil
}
