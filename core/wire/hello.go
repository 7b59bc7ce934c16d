package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"unicode/utf8"
)

// Hello and Welcome payloads are a version byte followed by TLV fields:
// tag (1) | length (2, big endian) | value. Unknown tags are skipped so
// later versions can add fields.

// Hello TLV tags.
const (
	helloUsername  = 1
	helloPassword  = 2
	helloTicket    = 3
	helloJoin      = 4
	helloRequest   = 5
	helloMaxFrame  = 6
	helloCaps      = 7
	helloClientVer = 8
	helloMux       = 9
)

// Welcome TLV tags.
const (
	welcomeSessionID  = 1
	welcomeJoinKey    = 2
	welcomeClientAddr = 3
	welcomeServerAddr = 4
	welcomeMTU        = 5
	welcomeDNS        = 6
	welcomeRoute      = 7
	welcomeKeepalive  = 8
	welcomeTicket     = 9
	welcomeMaxFrame   = 10
	welcomeQUICPorts  = 11
	welcomePublicAddr = 12
	welcomeCaps       = 13
	welcomePathFECKey = 14
)

// Limits enforced by the decoders.
const (
	MaxUsername   = 64
	MaxPassword   = 256
	MaxTicket     = 256
	MaxRequested  = 2
	MaxDNSServers = 8
	MaxRoutes     = 256
	MaxAddrs      = 2
)

// Multipath scheduling modes a client announces in Hello.Mux, so the
// server spreads its direction the same way.
const (
	MuxFlow          uint8 = 0 // the inner 5-tuple picks the connection
	MuxRoundRobin    uint8 = 1 // per packet
	MuxActiveStandby uint8 = 2 // one connection carries traffic
)

// Capability bits in Hello.
const (
	CapDatagrams uint32 = 1 << 0
	// CapGSO (Hello and Welcome): this end accepts GSO frames, i.e. it can
	// hand a super-packet to its TUN device whole (a Linux vnet_hdr device).
	CapGSO uint32 = 1 << 1
	// Bit 2 (1 << 2) was CapFEC, FEC frames inside QUIC datagrams
	// (TypeFEC), replaced by CapPathFEC; no end sets it now and it stays
	// unused so an old peer's bit means nothing.

	// CapPathFEC (Hello and Welcome): this end protects the QUIC packets
	// themselves, below QUIC (quictun's path FEC), and decodes the peer's.
	// A Welcome with it carries PathFECKey.
	CapPathFEC uint32 = 1 << 3
)

// PathFECKeyLen is the length of Welcome.PathFECKey.
const PathFECKeyLen = 16

// Hello is the client's first message on a connection.
type Hello struct {
	Username string
	Password string // may be empty when Ticket is set
	Ticket   []byte // resume ticket from an earlier Welcome, skips Argon2
	// Join, when set, asks to add this connection to an existing session.
	Join *Join
	// Request lists static tunnel addresses the client asks for (at most one
	// per family).
	Request       []netip.Addr
	MaxFrame      uint16
	Caps          uint32
	ClientVersion string
	// Mux is the client's scheduling mode (MuxFlow when absent).
	Mux uint8
}

// Join proves the right to add a connection to a session.
type Join struct {
	SessionID [16]byte
	Proof     [32]byte
}

// Welcome is the server's answer to a good Hello.
type Welcome struct {
	SessionID   [16]byte
	JoinKey     [32]byte
	ClientAddrs []netip.Prefix // tunnel addresses of the client, with prefix
	ServerAddrs []netip.Addr   // the server's tunnel addresses
	MTU         uint16
	DNS         []netip.Addr
	Routes      []netip.Prefix
	Keepalive   uint16 // seconds
	Ticket      []byte
	MaxFrame    uint16
	// QUICPorts is the server's UDP port range for QUIC port hopping,
	// first and last (zero: none advertised).
	QUICPorts [2]uint16
	// PublicAddrs are the server's own addresses (at most one per family),
	// for dual-stack clients that connected by address.
	PublicAddrs []netip.Addr
	// Caps are the server's capability bits (CapGSO).
	Caps uint32
	// PathFECKey keys the masks and tags of path FEC trailers (with
	// CapPathFEC; zero: absent). It is the server's, shared by its
	// clients: it only hides the trailers' structure from the path.
	PathFECKey [PathFECKeyLen]byte
}

func appendTLV(b []byte, tag byte, v []byte) []byte {
	b = append(b, tag, byte(len(v)>>8), byte(len(v)))
	return append(b, v...)
}

func appendU16(b []byte, tag byte, v uint16) []byte {
	return appendTLV(b, tag, []byte{byte(v >> 8), byte(v)})
}

func appendPrefix(b []byte, tag byte, p netip.Prefix) []byte {
	a := p.Addr().AsSlice()
	return appendTLV(b, tag, append(a, byte(p.Bits())))
}

// Marshal returns the Hello payload.
func (h *Hello) Marshal() ([]byte, error) {
	if err := checkUsername(h.Username); err != nil {
		return nil, err
	}
	if len(h.Password) > MaxPassword {
		return nil, fmt.Errorf("wire: password longer than %d bytes", MaxPassword)
	}
	if len(h.Ticket) > MaxTicket {
		return nil, fmt.Errorf("wire: ticket longer than %d bytes", MaxTicket)
	}
	if len(h.Request) > MaxRequested {
		return nil, fmt.Errorf("wire: more than %d requested addresses", MaxRequested)
	}
	b := []byte{Version}
	b = appendTLV(b, helloUsername, []byte(h.Username))
	if h.Password != "" {
		b = appendTLV(b, helloPassword, []byte(h.Password))
	}
	if len(h.Ticket) > 0 {
		b = appendTLV(b, helloTicket, h.Ticket)
	}
	if h.Join != nil {
		v := append(h.Join.SessionID[:], h.Join.Proof[:]...)
		b = appendTLV(b, helloJoin, v)
	}
	for _, a := range h.Request {
		b = appendTLV(b, helloRequest, a.Unmap().AsSlice())
	}
	if h.MaxFrame != 0 {
		b = appendU16(b, helloMaxFrame, h.MaxFrame)
	}
	if h.Caps != 0 {
		b = appendTLV(b, helloCaps, binary.BigEndian.AppendUint32(nil, h.Caps))
	}
	if h.Mux != MuxFlow {
		b = appendTLV(b, helloMux, []byte{h.Mux})
	}
	if h.ClientVersion != "" {
		v := h.ClientVersion
		if len(v) > 64 {
			v = v[:64]
		}
		b = appendTLV(b, helloClientVer, []byte(v))
	}
	if len(b) > MaxHandshakePayload {
		return nil, errors.New("wire: hello too large")
	}
	return b, nil
}

func checkUsername(s string) error {
	if s == "" || len(s) > MaxUsername {
		return fmt.Errorf("wire: username must be 1-%d bytes", MaxUsername)
	}
	if !utf8.ValidString(s) {
		return errors.New("wire: username is not valid UTF-8")
	}
	return nil
}

// tlvs iterates over the TLV fields of a payload after the version byte.
func tlvs(p []byte, what string, fn func(tag byte, v []byte) error) error {
	if len(p) < 1 {
		return fmt.Errorf("wire: empty %s", what)
	}
	if p[0] != Version {
		return fmt.Errorf("wire: %s version %d not supported (want %d)", what, p[0], Version)
	}
	p = p[1:]
	for len(p) > 0 {
		if len(p) < 3 {
			return fmt.Errorf("wire: %s: truncated field header", what)
		}
		tag := p[0]
		n := int(binary.BigEndian.Uint16(p[1:3]))
		if len(p) < 3+n {
			return fmt.Errorf("wire: %s: field %d truncated (%d of %d bytes)", what, tag, len(p)-3, n)
		}
		if err := fn(tag, p[3:3+n]); err != nil {
			return fmt.Errorf("wire: %s: %w", what, err)
		}
		p = p[3+n:]
	}
	return nil
}

func parseAddr(v []byte) (netip.Addr, error) {
	switch len(v) {
	case 4:
		return netip.AddrFrom4([4]byte(v)), nil
	case 16:
		return netip.AddrFrom16([16]byte(v)).Unmap(), nil
	}
	return netip.Addr{}, fmt.Errorf("address of %d bytes", len(v))
}

func parsePrefix(v []byte) (netip.Prefix, error) {
	if len(v) != 5 && len(v) != 17 {
		return netip.Prefix{}, fmt.Errorf("prefix of %d bytes", len(v))
	}
	a, err := parseAddr(v[:len(v)-1])
	if err != nil {
		return netip.Prefix{}, err
	}
	bits := int(v[len(v)-1])
	if bits > a.BitLen() {
		return netip.Prefix{}, fmt.Errorf("prefix length %d", bits)
	}
	return netip.PrefixFrom(a, bits), nil
}

// UnmarshalHello decodes a Hello payload.
func UnmarshalHello(p []byte) (*Hello, error) {
	h := &Hello{}
	seen := map[byte]bool{}
	err := tlvs(p, "hello", func(tag byte, v []byte) error {
		if tag != helloRequest && seen[tag] {
			return fmt.Errorf("field %d repeated", tag)
		}
		seen[tag] = true
		switch tag {
		case helloUsername:
			if err := checkUsername(string(v)); err != nil {
				return err
			}
			h.Username = string(v)
		case helloPassword:
			if len(v) > MaxPassword {
				return fmt.Errorf("password longer than %d bytes", MaxPassword)
			}
			h.Password = string(v)
		case helloTicket:
			if len(v) == 0 || len(v) > MaxTicket {
				return fmt.Errorf("ticket of %d bytes", len(v))
			}
			h.Ticket = append([]byte(nil), v...)
		case helloJoin:
			if len(v) != 48 {
				return fmt.Errorf("join of %d bytes, want 48", len(v))
			}
			j := &Join{}
			copy(j.SessionID[:], v[:16])
			copy(j.Proof[:], v[16:])
			h.Join = j
		case helloRequest:
			if len(h.Request) >= MaxRequested {
				return fmt.Errorf("more than %d requested addresses", MaxRequested)
			}
			a, err := parseAddr(v)
			if err != nil {
				return fmt.Errorf("requested address: %w", err)
			}
			h.Request = append(h.Request, a)
		case helloMaxFrame:
			if len(v) != 2 {
				return errors.New("max frame: want 2 bytes")
			}
			h.MaxFrame = binary.BigEndian.Uint16(v)
		case helloCaps:
			if len(v) != 4 {
				return errors.New("capabilities: want 4 bytes")
			}
			h.Caps = binary.BigEndian.Uint32(v)
		case helloMux:
			if len(v) != 1 || v[0] > MuxActiveStandby {
				return fmt.Errorf("mux mode %x: want one byte 0-2", v)
			}
			h.Mux = v[0]
		case helloClientVer:
			if len(v) > 64 || !utf8.Valid(v) {
				return errors.New("client version: bad string")
			}
			h.ClientVersion = string(v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if h.Username == "" {
		return nil, errors.New("wire: hello: no username")
	}
	return h, nil
}

// Marshal returns the Welcome payload.
func (w *Welcome) Marshal() ([]byte, error) {
	if len(w.ClientAddrs) > MaxAddrs || len(w.ServerAddrs) > MaxAddrs {
		return nil, errors.New("wire: welcome: too many addresses")
	}
	if len(w.DNS) > MaxDNSServers {
		return nil, fmt.Errorf("wire: welcome: more than %d DNS servers", MaxDNSServers)
	}
	if len(w.Routes) > MaxRoutes {
		return nil, fmt.Errorf("wire: welcome: more than %d routes", MaxRoutes)
	}
	if len(w.Ticket) > MaxTicket {
		return nil, errors.New("wire: welcome: ticket too long")
	}
	b := []byte{Version}
	b = appendTLV(b, welcomeSessionID, w.SessionID[:])
	b = appendTLV(b, welcomeJoinKey, w.JoinKey[:])
	for _, p := range w.ClientAddrs {
		b = appendPrefix(b, welcomeClientAddr, p)
	}
	for _, a := range w.ServerAddrs {
		b = appendTLV(b, welcomeServerAddr, a.Unmap().AsSlice())
	}
	if w.MTU != 0 {
		b = appendU16(b, welcomeMTU, w.MTU)
	}
	for _, a := range w.DNS {
		b = appendTLV(b, welcomeDNS, a.Unmap().AsSlice())
	}
	for _, p := range w.Routes {
		b = appendPrefix(b, welcomeRoute, p)
	}
	if w.Keepalive != 0 {
		b = appendU16(b, welcomeKeepalive, w.Keepalive)
	}
	if len(w.Ticket) > 0 {
		b = appendTLV(b, welcomeTicket, w.Ticket)
	}
	if w.MaxFrame != 0 {
		b = appendU16(b, welcomeMaxFrame, w.MaxFrame)
	}
	if w.QUICPorts != [2]uint16{} {
		if w.QUICPorts[0] == 0 || w.QUICPorts[0] > w.QUICPorts[1] {
			return nil, fmt.Errorf("wire: welcome: bad QUIC port range %d-%d", w.QUICPorts[0], w.QUICPorts[1])
		}
		b = appendTLV(b, welcomeQUICPorts, []byte{byte(w.QUICPorts[0] >> 8), byte(w.QUICPorts[0]), byte(w.QUICPorts[1] >> 8), byte(w.QUICPorts[1])})
	}
	if len(w.PublicAddrs) > MaxAddrs {
		return nil, errors.New("wire: welcome: too many public addresses")
	}
	for _, a := range w.PublicAddrs {
		b = appendTLV(b, welcomePublicAddr, a.Unmap().AsSlice())
	}
	if w.Caps != 0 {
		b = appendTLV(b, welcomeCaps, binary.BigEndian.AppendUint32(nil, w.Caps))
	}
	if w.PathFECKey != [PathFECKeyLen]byte{} {
		b = appendTLV(b, welcomePathFECKey, w.PathFECKey[:])
	}
	if len(b) > MaxHandshakePayload {
		return nil, errors.New("wire: welcome too large")
	}
	return b, nil
}

// UnmarshalWelcome decodes a Welcome payload.
func UnmarshalWelcome(p []byte) (*Welcome, error) {
	w := &Welcome{}
	var haveSID, haveKey bool
	err := tlvs(p, "welcome", func(tag byte, v []byte) error {
		switch tag {
		case welcomeSessionID:
			if len(v) != 16 {
				return errors.New("session id: want 16 bytes")
			}
			copy(w.SessionID[:], v)
			haveSID = true
		case welcomeJoinKey:
			if len(v) != 32 {
				return errors.New("join key: want 32 bytes")
			}
			copy(w.JoinKey[:], v)
			haveKey = true
		case welcomeClientAddr:
			if len(w.ClientAddrs) >= MaxAddrs {
				return errors.New("too many client addresses")
			}
			pf, err := parsePrefix(v)
			if err != nil {
				return fmt.Errorf("client address: %w", err)
			}
			w.ClientAddrs = append(w.ClientAddrs, pf)
		case welcomeServerAddr:
			if len(w.ServerAddrs) >= MaxAddrs {
				return errors.New("too many server addresses")
			}
			a, err := parseAddr(v)
			if err != nil {
				return fmt.Errorf("server address: %w", err)
			}
			w.ServerAddrs = append(w.ServerAddrs, a)
		case welcomeMTU:
			if len(v) != 2 {
				return errors.New("mtu: want 2 bytes")
			}
			w.MTU = binary.BigEndian.Uint16(v)
		case welcomeDNS:
			if len(w.DNS) >= MaxDNSServers {
				return errors.New("too many DNS servers")
			}
			a, err := parseAddr(v)
			if err != nil {
				return fmt.Errorf("dns: %w", err)
			}
			w.DNS = append(w.DNS, a)
		case welcomeRoute:
			if len(w.Routes) >= MaxRoutes {
				return errors.New("too many routes")
			}
			pf, err := parsePrefix(v)
			if err != nil {
				return fmt.Errorf("route: %w", err)
			}
			w.Routes = append(w.Routes, pf)
		case welcomeKeepalive:
			if len(v) != 2 {
				return errors.New("keepalive: want 2 bytes")
			}
			w.Keepalive = binary.BigEndian.Uint16(v)
		case welcomeTicket:
			if len(v) > MaxTicket {
				return errors.New("ticket too long")
			}
			w.Ticket = append([]byte(nil), v...)
		case welcomeQUICPorts:
			if len(v) != 4 {
				return errors.New("quic ports: want 4 bytes")
			}
			lo, hi := binary.BigEndian.Uint16(v), binary.BigEndian.Uint16(v[2:])
			if lo == 0 || lo > hi {
				return fmt.Errorf("quic ports: bad range %d-%d", lo, hi)
			}
			w.QUICPorts = [2]uint16{lo, hi}
		case welcomeMaxFrame:
			if len(v) != 2 {
				return errors.New("max frame: want 2 bytes")
			}
			w.MaxFrame = binary.BigEndian.Uint16(v)
		case welcomePublicAddr:
			if len(w.PublicAddrs) >= MaxAddrs {
				return fmt.Errorf("more than %d public addresses", MaxAddrs)
			}
			a, err := parseAddr(v)
			if err != nil {
				return fmt.Errorf("public address: %w", err)
			}
			w.PublicAddrs = append(w.PublicAddrs, a)
		case welcomeCaps:
			if len(v) != 4 {
				return errors.New("capabilities: want 4 bytes")
			}
			w.Caps = binary.BigEndian.Uint32(v)
		case welcomePathFECKey:
			if len(v) != PathFECKeyLen {
				return fmt.Errorf("path fec key: want %d bytes", PathFECKeyLen)
			}
			copy(w.PathFECKey[:], v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !haveSID || !haveKey {
		return nil, errors.New("wire: welcome: missing session id or join key")
	}
	if len(w.ClientAddrs) == 0 {
		return nil, errors.New("wire: welcome: no client address")
	}
	return w, nil
}

// ParseClose decodes a CLOSE payload.
func ParseClose(p []byte) (code byte, msg string) {
	if len(p) == 0 {
		return CloseNormal, ""
	}
	m := p[1:]
	if len(m) > 256 {
		m = m[:256]
	}
	return p[0], string(m)
}

// AppendClose appends a CLOSE frame.
func AppendClose(dst []byte, code byte, msg string) []byte {
	if len(msg) > 256 {
		msg = msg[:256]
	}
	return AppendFrame(dst, TypeClose, append([]byte{code}, msg...))
}
