package auth

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// Resume tickets let a client that logged in recently reconnect without the
// server running Argon2 again. A ticket is opaque to the client:
//
//	ticket    = version(1) || nonce(24) || XChaCha20-Poly1305(plaintext, ad)
//	plaintext = issued(8, unix s, BE) || expires(8, unix s, BE) || len(1) || user
//	ad        = "mirage ticket v1" || version
//
// Only the server holding the TicketKey can make or read one. A ticket says
// nothing about whether the user still exists: check that after Open.

const (
	ticketVersion  = 1
	ticketAD       = "mirage ticket v1"
	ticketFixedLen = 1 + chacha20poly1305.NonceSizeX + 8 + 8 + 1 + chacha20poly1305.Overhead
	// MaxTicketLen is the longest ticket Issue makes and Open accepts.
	MaxTicketLen = 256
	// ticketSkew is how far in the future an issue time may lie before the
	// ticket is refused (clock steps on the server).
	ticketSkew = 5 * time.Minute
	// TicketKeyLen is the size of a ticket key.
	TicketKeyLen = chacha20poly1305.KeySize
)

// ticketADBytes is the associated data: the label and the version byte.
var ticketADBytes = append([]byte(ticketAD), ticketVersion)

// Ticket errors returned by Open.
var (
	ErrTicketInvalid = errors.New("invalid resume ticket")
	ErrTicketExpired = errors.New("resume ticket expired")
)

// TicketKey seals and opens resume tickets.
type TicketKey struct {
	key   [TicketKeyLen]byte
	aead  cipher.AEAD
	nonce io.Reader // nil: crypto/rand; tests make it deterministic
}

// NewTicketKey returns a key of 32 random bytes.
func NewTicketKey() *TicketKey {
	var b [TicketKeyLen]byte
	rand.Read(b[:]) // never fails (Go 1.24+)
	k, _ := TicketKeyFromBytes(b[:])
	return k
}

// TicketKeyFromBytes makes a key from 32 bytes, e.g. one persisted so that
// tickets survive a server restart.
func TicketKeyFromBytes(b []byte) (*TicketKey, error) {
	if len(b) != TicketKeyLen {
		return nil, fmt.Errorf("ticket key is %d bytes, want %d", len(b), TicketKeyLen)
	}
	k := &TicketKey{}
	copy(k.key[:], b)
	aead, err := chacha20poly1305.NewX(k.key[:])
	if err != nil {
		return nil, fmt.Errorf("ticket key: %w", err)
	}
	k.aead = aead
	return k, nil
}

// Bytes returns the raw key, for persisting it (treat as a secret).
func (k *TicketKey) Bytes() []byte {
	return append([]byte(nil), k.key[:]...)
}

// Issue returns a ticket for user valid for ttl from now. It returns nil if
// user is not a valid user name (see ValidateName); users that passed
// authentication always are.
func (k *TicketKey) Issue(user string, ttl time.Duration) []byte {
	return k.issueAt(user, time.Now(), ttl)
}

func (k *TicketKey) issueAt(user string, now time.Time, ttl time.Duration) []byte {
	if ValidateName(user) != nil {
		return nil
	}
	pt := make([]byte, 0, 8+8+1+len(user))
	pt = binary.BigEndian.AppendUint64(pt, uint64(now.Unix()))
	pt = binary.BigEndian.AppendUint64(pt, uint64(now.Add(ttl).Unix()))
	pt = append(pt, byte(len(user)))
	pt = append(pt, user...)

	out := make([]byte, 1+chacha20poly1305.NonceSizeX, ticketFixedLen+len(user))
	out[0] = ticketVersion
	nonce := out[1:]
	if k.nonce != nil {
		io.ReadFull(k.nonce, nonce)
	} else {
		rand.Read(nonce)
	}
	return k.aead.Seal(out, nonce, pt, ticketADBytes)
}

// Open checks ticket and returns the user it was issued to. It fails with
// ErrTicketExpired if now is at or past its expiry, and ErrTicketInvalid if
// it was not made by this key, was altered, or is garbage.
func (k *TicketKey) Open(ticket []byte, now time.Time) (user string, err error) {
	if len(ticket) < ticketFixedLen+1 || len(ticket) > MaxTicketLen || ticket[0] != ticketVersion {
		return "", ErrTicketInvalid
	}
	nonce := ticket[1 : 1+chacha20poly1305.NonceSizeX]
	pt, err := k.aead.Open(nil, nonce, ticket[1+chacha20poly1305.NonceSizeX:], ticketADBytes)
	if err != nil {
		return "", ErrTicketInvalid
	}
	if len(pt) < 17 || int(pt[16]) != len(pt)-17 {
		return "", ErrTicketInvalid
	}
	issued := int64(binary.BigEndian.Uint64(pt[0:8]))
	expires := int64(binary.BigEndian.Uint64(pt[8:16]))
	user = string(pt[17:])
	if ValidateName(user) != nil {
		return "", ErrTicketInvalid
	}
	if issued > now.Add(ticketSkew).Unix() {
		return "", ErrTicketInvalid
	}
	if now.Unix() >= expires {
		return "", ErrTicketExpired
	}
	return user, nil
}
