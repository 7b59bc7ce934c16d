package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"

	"github.com/mirage-vpn/mirage/core/wire"
)

// Default Argon2id parameters for new hashes: the defaults of the Rust
// argon2 crate (and so of the original mirage-users tool), which are also
// OWASP's minimum recommendation. They cost ~19 MiB and tens of milliseconds.
const (
	DefaultMemoryKiB = 19456
	DefaultTime      = 2
	DefaultThreads   = 1
	defaultSaltLen   = 16
	defaultHashLen   = 32
)

// Limits on parameters read from a users file. They keep a typo or a hostile
// file from turning every login into a multi-gigabyte allocation, and keep
// x/crypto/argon2 away from inputs it would panic on.
const (
	maxMemoryKiB   = 4 << 20 // 4 GiB
	maxTime        = 256
	maxThreads     = 255 // x/crypto takes threads as uint8
	minSaltLen     = 8   // Argon2 minimum
	maxSaltLen     = 64
	minHashLen     = 4 // Argon2 minimum
	maxHashLen     = 64
	maxPHCLen      = 512
	argon2Version  = 19 // 0x13, the only version x/crypto implements
	algArgon2id    = "argon2id"
	algArgon2i     = "argon2i"
	phcParamsOrder = "m,t,p"
)

// MaxPasswordLen bounds passwords (in bytes) accepted by Set and Verify:
// the wire's limit, so a password users add accepts can also log in.
const MaxPasswordLen = wire.MaxPassword

// b64 is the PHC "B64" encoding: standard alphabet, no padding.
var b64 = base64.RawStdEncoding

// phcHash is a parsed Argon2 PHC string.
type phcHash struct {
	alg    string // algArgon2id or algArgon2i
	memory uint32 // KiB
	time   uint32
	par    uint8
	salt   []byte
	hash   []byte
}

// String formats h the way the Rust password-hash crate does:
// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>.
func (h *phcHash) String() string {
	return fmt.Sprintf("$%s$v=%d$m=%d,t=%d,p=%d$%s$%s",
		h.alg, argon2Version, h.memory, h.time, h.par,
		b64.EncodeToString(h.salt), b64.EncodeToString(h.hash))
}

// derive runs Argon2 with h's parameters over password.
func (h *phcHash) derive(password []byte) []byte {
	if h.alg == algArgon2i {
		return argon2.Key(password, h.salt, h.time, h.memory, h.par, uint32(len(h.hash)))
	}
	return argon2.IDKey(password, h.salt, h.time, h.memory, h.par, uint32(len(h.hash)))
}

// verify reports in constant time whether password matches h.
func (h *phcHash) verify(password []byte) bool {
	return subtle.ConstantTimeCompare(h.derive(password), h.hash) == 1
}

// parsePHC parses and validates an Argon2 PHC string.
func parsePHC(s string) (*phcHash, error) {
	if len(s) > maxPHCLen {
		return nil, fmt.Errorf("hash string longer than %d bytes", maxPHCLen)
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x21 || r == 0x7f }) {
		return nil, errors.New("hash string contains whitespace or control characters")
	}
	if !strings.HasPrefix(s, "$") {
		return nil, errors.New(`hash string must start with "$"`)
	}
	f := strings.Split(s[1:], "$")
	h := &phcHash{}
	switch f[0] {
	case algArgon2id, algArgon2i:
		h.alg = f[0]
	case "argon2d":
		return nil, errors.New("argon2d is not supported (only argon2id and argon2i)")
	case "":
		return nil, errors.New("missing algorithm")
	default:
		return nil, fmt.Errorf("unsupported algorithm %q (want argon2id)", f[0])
	}
	if len(f) >= 2 && !strings.HasPrefix(f[1], "v=") && strings.Contains(f[1], "=") {
		return nil, fmt.Errorf("missing version field (want v=%d)", argon2Version)
	}
	if len(f) != 5 {
		return nil, fmt.Errorf("want 5 '$'-separated fields ($alg$v=19$m=..,t=..,p=..$salt$hash), got %d", len(f))
	}
	v, err := parseDecimal(strings.TrimPrefix(f[1], "v="))
	if err != nil {
		return nil, fmt.Errorf("version: %w", err)
	}
	if v != argon2Version {
		return nil, fmt.Errorf("unsupported Argon2 version %d (want %d)", v, argon2Version)
	}
	if err := h.parseParams(f[2]); err != nil {
		return nil, err
	}
	if h.salt, err = decodeB64(f[3]); err != nil {
		return nil, fmt.Errorf("salt: %w", err)
	}
	if n := len(h.salt); n < minSaltLen || n > maxSaltLen {
		return nil, fmt.Errorf("salt is %d bytes, want %d to %d", n, minSaltLen, maxSaltLen)
	}
	if h.hash, err = decodeB64(f[4]); err != nil {
		return nil, fmt.Errorf("hash: %w", err)
	}
	if n := len(h.hash); n < minHashLen || n > maxHashLen {
		return nil, fmt.Errorf("hash is %d bytes, want %d to %d", n, minHashLen, maxHashLen)
	}
	return h, nil
}

// parseParams parses "m=..,t=..,p=.." in any order, as the PHC format allows.
func (h *phcHash) parseParams(s string) error {
	var seen [3]bool
	for kv := range strings.SplitSeq(s, ",") {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("parameter %q is not key=value", kv)
		}
		i := strings.Index("mtp", k)
		if len(k) != 1 || i < 0 {
			if k == "keyid" || k == "data" {
				return fmt.Errorf("parameter %q (secret key or associated data) is not supported", k)
			}
			return fmt.Errorf("unknown parameter %q (want %s)", k, phcParamsOrder)
		}
		if seen[i] {
			return fmt.Errorf("duplicate parameter %q", k)
		}
		seen[i] = true
		n, err := parseDecimal(val)
		if err != nil {
			return fmt.Errorf("parameter %s: %w", k, err)
		}
		switch k {
		case "m":
			h.memory = n
		case "t":
			h.time = n
		case "p":
			if n < 1 || n > maxThreads {
				return fmt.Errorf("parallelism p=%d out of range 1..%d", n, maxThreads)
			}
			h.par = uint8(n)
		}
	}
	for i, ok := range seen {
		if !ok {
			return fmt.Errorf("missing parameter %q", "mtp"[i:i+1])
		}
	}
	if h.time < 1 || h.time > maxTime {
		return fmt.Errorf("time cost t=%d out of range 1..%d", h.time, maxTime)
	}
	if h.memory < 8*uint32(h.par) || h.memory > maxMemoryKiB {
		return fmt.Errorf("memory cost m=%d out of range %d..%d KiB", h.memory, 8*uint32(h.par), maxMemoryKiB)
	}
	return nil
}

// parseDecimal parses a PHC decimal: ASCII digits only, fits in 32 bits.
func parseDecimal(s string) (uint32, error) {
	if s == "" {
		return 0, errors.New("empty number")
	}
	if len(s) > 10 || strings.ContainsFunc(s, func(r rune) bool { return r < '0' || r > '9' }) {
		return 0, fmt.Errorf("bad number %q", s)
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("bad number %q", s)
	}
	return uint32(n), nil
}

// decodeB64 decodes PHC B64 (no padding). Go's decoder silently skips CR/LF;
// parsePHC has already rejected those.
func decodeB64(s string) ([]byte, error) {
	if strings.Contains(s, "=") {
		return nil, errors.New("base64 padding '=' is not allowed")
	}
	b, err := b64.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("bad base64: %w", err)
	}
	return b, nil
}

// newHash hashes password with the default Argon2id parameters and a fresh
// random salt.
func newHash(password string) (*phcHash, error) {
	if password == "" {
		return nil, errors.New("empty password")
	}
	if len(password) > MaxPasswordLen {
		return nil, fmt.Errorf("password longer than %d bytes", MaxPasswordLen)
	}
	h := &phcHash{
		alg:    algArgon2id,
		memory: DefaultMemoryKiB,
		time:   DefaultTime,
		par:    DefaultThreads,
		salt:   make([]byte, defaultSaltLen),
		hash:   make([]byte, defaultHashLen),
	}
	rand.Read(h.salt) // never fails (Go 1.24+)
	h.hash = h.derive([]byte(password))
	return h, nil
}

// HashPassword hashes password with Argon2id (m=19456 KiB, t=2, p=1, 16-byte
// random salt, 32-byte output) and returns the PHC string, in the format
// the Rust argon2 crate writes.
func HashPassword(password string) (string, error) {
	h, err := newHash(password)
	if err != nil {
		return "", err
	}
	return h.String(), nil
}

// VerifyPHC reports whether password matches the Argon2id or Argon2i PHC
// string phc. The error is non-nil only if phc itself is malformed or
// unsupported.
func VerifyPHC(phc, password string) (bool, error) {
	h, err := parsePHC(phc)
	if err != nil {
		return false, err
	}
	if len(password) > MaxPasswordLen {
		return false, nil
	}
	return h.verify([]byte(password)), nil
}
