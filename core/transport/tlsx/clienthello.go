package tlsx

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// TLS wire constants used by the ClientHello parser.
const (
	recordTypeHandshake      = 22
	handshakeTypeClientHello = 1
	maxRecordPayload         = 1 << 14       // RFC 8446 §5.1
	maxClientHelloLen        = 1<<16 + 1<<14 // far above any real browser hello
)

// Extension type numbers the parser decodes.
const (
	ExtServerName          uint16 = 0x0000
	ExtSupportedGroups     uint16 = 0x000a
	ExtSignatureAlgorithms uint16 = 0x000d
	ExtALPN                uint16 = 0x0010
	ExtSupportedVersions   uint16 = 0x002b
	ExtKeyShare            uint16 = 0x0033
	ExtALPSOld             uint16 = 0x4469 // application_settings, Chrome < 131
	ExtALPS                uint16 = 0x44cd // application_settings, Chrome >= 131
)

// Group identifiers of interest.
const (
	GroupX25519         uint16 = 0x001d
	GroupX25519MLKEM768 uint16 = 0x11ec
)

// ErrIncomplete means the bytes end before the ClientHello does; a caller
// peeking at a connection should read more and parse again.
var ErrIncomplete = errors.New("tls: incomplete ClientHello")

// ClientHello is the parsed form of a TLS ClientHello, as far as needed to
// compare fingerprints and route by SNI.
type ClientHello struct {
	RecordVersion       uint16 // version field of the first record header
	RecordLengths       []int  // payload length of each record the hello spans
	Len                 int    // bytes of input consumed (all records)
	LegacyVersion       uint16
	Random              []byte
	SessionID           []byte
	CipherSuites        []uint16
	CompressionMethods  []uint8
	Extensions          []uint16 // extension types in wire order
	ServerName          string
	ALPN                []string
	SupportedGroups     []uint16
	KeyShares           []KeyShare
	SupportedVersions   []uint16
	SignatureAlgorithms []uint16
	ALPS                []string // protocols in application_settings (either codepoint)
	Raw                 []byte   // the handshake message: type, length, body
}

// KeyShare is one entry of the key_share extension.
type KeyShare struct {
	Group uint16
	Len   int    // length of the key exchange data
	Data  []byte // the key exchange data (aliases ClientHello.Raw)
}

// IsGREASE reports whether v is a GREASE value (RFC 8701): 0x?a?a with
// both bytes equal.
func IsGREASE(v uint16) bool { return v&0x0f0f == 0x0a0a && v>>8 == v&0xff }

// ParseClientHello parses the TLS records at the start of data (as read
// from a fresh TCP connection) and returns the ClientHello they carry. It
// reassembles a hello split over several records. If data ends early the
// error wraps ErrIncomplete.
func ParseClientHello(data []byte) (*ClientHello, error) {
	h := &ClientHello{}
	var msg []byte
	need := -1 // handshake message length incl. 4-byte header, once known
	off := 0
	for need < 0 || len(msg) < need {
		if len(data)-off < 5 {
			return nil, ErrIncomplete
		}
		typ := data[off]
		vers := uint16(data[off+1])<<8 | uint16(data[off+2])
		n := int(data[off+3])<<8 | int(data[off+4])
		if typ != recordTypeHandshake {
			return nil, fmt.Errorf("tls: record type %d, want handshake (22)", typ)
		}
		if vers>>8 != 3 {
			return nil, fmt.Errorf("tls: record version %#04x is not TLS", vers)
		}
		if n == 0 || n > maxRecordPayload {
			return nil, fmt.Errorf("tls: record length %d out of range", n)
		}
		if len(h.RecordLengths) == 0 {
			h.RecordVersion = vers
		}
		if len(data)-off-5 < n {
			return nil, ErrIncomplete
		}
		h.RecordLengths = append(h.RecordLengths, n)
		msg = append(msg, data[off+5:off+5+n]...)
		off += 5 + n
		if need < 0 && len(msg) >= 4 {
			if msg[0] != handshakeTypeClientHello {
				return nil, fmt.Errorf("tls: handshake type %d, want ClientHello (1)", msg[0])
			}
			need = 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
			if need > maxClientHelloLen {
				return nil, fmt.Errorf("tls: ClientHello length %d too large", need-4)
			}
		}
	}
	if len(msg) > need {
		return nil, errors.New("tls: trailing data after ClientHello in the same record")
	}
	h.Len = off
	h.Raw = msg
	if err := h.parseBody(msg[4:]); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *ClientHello) parseBody(body []byte) error {
	s := cryptobyte.String(body)
	var random []byte
	var sid, suites, comp cryptobyte.String
	if !s.ReadUint16(&h.LegacyVersion) || !s.ReadBytes(&random, 32) ||
		!s.ReadUint8LengthPrefixed(&sid) || !s.ReadUint16LengthPrefixed(&suites) ||
		!s.ReadUint8LengthPrefixed(&comp) {
		return errors.New("tls: malformed ClientHello header")
	}
	if len(sid) > 32 {
		return fmt.Errorf("tls: session id length %d > 32", len(sid))
	}
	if len(suites)%2 != 0 || len(suites) == 0 {
		return errors.New("tls: malformed cipher suite list")
	}
	if len(comp) == 0 {
		return errors.New("tls: empty compression method list")
	}
	h.Random = random
	h.SessionID = []byte(sid)
	h.CompressionMethods = []byte(comp)
	for !suites.Empty() {
		var v uint16
		suites.ReadUint16(&v)
		h.CipherSuites = append(h.CipherSuites, v)
	}
	if s.Empty() {
		return nil // no extensions (pre-TLS 1.2 style)
	}
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return errors.New("tls: malformed extension block")
	}
	seen := make(map[uint16]bool)
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return errors.New("tls: malformed extension")
		}
		if seen[typ] {
			return fmt.Errorf("tls: duplicate extension %#04x", typ)
		}
		seen[typ] = true
		h.Extensions = append(h.Extensions, typ)
		if err := h.parseExtension(typ, data); err != nil {
			return fmt.Errorf("tls: extension %#04x: %w", typ, err)
		}
	}
	return nil
}

var errMalformed = errors.New("malformed")

func (h *ClientHello) parseExtension(typ uint16, d cryptobyte.String) error {
	switch typ {
	case ExtServerName:
		var list cryptobyte.String
		if !d.ReadUint16LengthPrefixed(&list) || !d.Empty() {
			return errMalformed
		}
		for !list.Empty() {
			var nameType uint8
			var name cryptobyte.String
			if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&name) {
				return errMalformed
			}
			if nameType == 0 && h.ServerName == "" {
				h.ServerName = string(name)
			}
		}
	case ExtALPN, ExtALPS, ExtALPSOld:
		var list cryptobyte.String
		if !d.ReadUint16LengthPrefixed(&list) || !d.Empty() {
			return errMalformed
		}
		var protos []string
		for !list.Empty() {
			var p cryptobyte.String
			if !list.ReadUint8LengthPrefixed(&p) || len(p) == 0 {
				return errMalformed
			}
			protos = append(protos, string(p))
		}
		if typ == ExtALPN {
			h.ALPN = protos
		} else {
			h.ALPS = protos
		}
	case ExtSupportedGroups, ExtSignatureAlgorithms:
		var list cryptobyte.String
		if !d.ReadUint16LengthPrefixed(&list) || !d.Empty() || len(list)%2 != 0 {
			return errMalformed
		}
		vals := readUint16s(list)
		if typ == ExtSupportedGroups {
			h.SupportedGroups = vals
		} else {
			h.SignatureAlgorithms = vals
		}
	case ExtSupportedVersions:
		var list cryptobyte.String
		if !d.ReadUint8LengthPrefixed(&list) || !d.Empty() || len(list)%2 != 0 {
			return errMalformed
		}
		h.SupportedVersions = readUint16s(list)
	case ExtKeyShare:
		var list cryptobyte.String
		if !d.ReadUint16LengthPrefixed(&list) || !d.Empty() {
			return errMalformed
		}
		for !list.Empty() {
			var g uint16
			var kx cryptobyte.String
			if !list.ReadUint16(&g) || !list.ReadUint16LengthPrefixed(&kx) {
				return errMalformed
			}
			h.KeyShares = append(h.KeyShares, KeyShare{Group: g, Len: len(kx), Data: []byte(kx)})
		}
	}
	return nil
}

func readUint16s(s cryptobyte.String) []uint16 {
	out := make([]uint16, 0, len(s)/2)
	for !s.Empty() {
		var v uint16
		s.ReadUint16(&v)
		out = append(out, v)
	}
	return out
}
