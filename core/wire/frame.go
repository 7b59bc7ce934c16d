// Package wire is Mirage protocol v1 on a reliable byte stream: frames
// (type | length | payload) and the Hello/Welcome handshake messages. The
// authoritative description is docs/protocol.md; every decoder here is fuzzed.
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Version is the protocol version carried in Hello and Welcome.
const Version = 1

// HeaderLen is the size of a frame header: type (1) + payload length (2, big endian).
const HeaderLen = 3

// MaxPayload is the largest payload the length field can carry.
const MaxPayload = 65535

// MaxHandshakePayload bounds Hello/Welcome frames, and every frame read
// before authentication.
const MaxHandshakePayload = 4096

// Type is a frame type. Receivers skip types they do not know.
type Type uint8

const (
	TypeData    Type = 0x01 // one IP packet
	TypePadding Type = 0x02 // ignored filler
	TypePing    Type = 0x03 // keepalive; payload echoed in a Pong
	TypePong    Type = 0x04
	TypeClose   Type = 0x05 // reason code (1 byte) + optional UTF-8 text
	TypeSeqData Type = 0x06 // sequence number (4, BE) + one IP packet (round_robin)
	TypeGSO     Type = 0x07 // offload header (10) + one super-packet (CapGSO peers)
	// 0x08 was TypeFEC (FEC shards in QUIC datagrams, retired for path
	// FEC); unused, so an old peer's shards are dropped as unknown frames.
	TypeHello   Type = 0x10 // client -> server, first frame of a connection
	TypeWelcome Type = 0x11 // server -> client, answer to a good Hello
)

func (t Type) String() string {
	switch t {
	case TypeData:
		return "DATA"
	case TypePadding:
		return "PADDING"
	case TypePing:
		return "PING"
	case TypePong:
		return "PONG"
	case TypeClose:
		return "CLOSE"
	case TypeSeqData:
		return "SEQDATA"
	case TypeGSO:
		return "GSO"
	case TypeHello:
		return "HELLO"
	case TypeWelcome:
		return "WELCOME"
	}
	return fmt.Sprintf("TYPE(0x%02x)", uint8(t))
}

// Close reason codes.
const (
	CloseNormal        = 0
	CloseShutdown      = 1 // server is going away
	CloseReplaced      = 2 // session taken over or removed
	CloseProtocolError = 3
	CloseIdle          = 4
)

// ErrFrameTooLarge means a peer announced a payload over the reader's limit;
// the connection must be closed.
var ErrFrameTooLarge = errors.New("wire: frame too large")

// AppendFrame appends one frame to dst. len(payload) must be <= MaxPayload.
func AppendFrame(dst []byte, t Type, payload []byte) []byte {
	dst = append(dst, byte(t), byte(len(payload)>>8), byte(len(payload)))
	return append(dst, payload...)
}

// SeqLen is the size of a SEQDATA frame's sequence number.
const SeqLen = 4

// AppendSeqData appends a SEQDATA frame: packet p numbered seq. A
// round_robin sender numbers every packet of its direction of a session
// (wrapping), so the receiver can restore the order across connections.
// len(p) must be <= MaxPayload-SeqLen.
func AppendSeqData(dst []byte, seq uint32, p []byte) []byte {
	n := SeqLen + len(p)
	dst = append(dst, byte(TypeSeqData), byte(n>>8), byte(n),
		byte(seq>>24), byte(seq>>16), byte(seq>>8), byte(seq))
	return append(dst, p...)
}

// ParseSeqData splits a SEQDATA payload; ok is false when it has no
// packet after the sequence number.
func ParseSeqData(payload []byte) (seq uint32, p []byte, ok bool) {
	if len(payload) <= SeqLen {
		return 0, nil, false
	}
	return binary.BigEndian.Uint32(payload), payload[SeqLen:], true
}

// PutHeader writes a frame header for a payload of n bytes into b[:HeaderLen].
func PutHeader(b []byte, t Type, n int) {
	b[0] = byte(t)
	binary.BigEndian.PutUint16(b[1:3], uint16(n))
}

// Frame is a decoded frame. Payload aliases the Reader's buffer and is valid
// only until the next call to Next.
type Frame struct {
	Type    Type
	Payload []byte
}

// Reader decodes frames from a stream without copying payloads.
type Reader struct {
	br      *bufio.Reader
	max     int
	pending int // bytes of the last frame still to discard
}

// NewReader returns a Reader with a buffer of size bytes (at least
// HeaderLen+MaxPayload) and a payload limit of MaxPayload.
func NewReader(r io.Reader, size int) *Reader {
	if size < HeaderLen+MaxPayload {
		size = HeaderLen + MaxPayload
	}
	return &Reader{br: bufio.NewReaderSize(r, size), max: MaxPayload}
}

// NewReaderBufio returns a Reader on an existing bufio.Reader, which must be
// at least HeaderLen+MaxPayload bytes big so any frame fits.
func NewReaderBufio(br *bufio.Reader) *Reader {
	return &Reader{br: br, max: MaxPayload}
}

// SetMaxPayload sets the largest payload accepted; bigger frames fail with
// ErrFrameTooLarge.
func (r *Reader) SetMaxPayload(n int) {
	if n > MaxPayload {
		n = MaxPayload
	}
	r.max = n
}

// Next returns the next frame. Unknown types are returned too; callers skip
// them.
func (r *Reader) Next() (Frame, error) {
	if r.pending > 0 {
		if _, err := r.br.Discard(r.pending); err != nil {
			return Frame{}, err
		}
		r.pending = 0
	}
	h, err := r.br.Peek(HeaderLen)
	if err != nil {
		if err == io.EOF && len(h) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	t := Type(h[0])
	n := int(binary.BigEndian.Uint16(h[1:3]))
	if n > r.max {
		return Frame{}, fmt.Errorf("%w: %s with %d bytes (limit %d)", ErrFrameTooLarge, t, n, r.max)
	}
	b, err := r.br.Peek(HeaderLen + n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	r.pending = HeaderLen + n
	return Frame{Type: t, Payload: b[HeaderLen:]}, nil
}

// FrameBuffered reports whether a complete frame after the current one is
// already buffered, so Next would not block. Used to batch writes to the TUN.
func (r *Reader) FrameBuffered() bool {
	avail := r.br.Buffered() - r.pending
	if avail < HeaderLen {
		return false
	}
	b, err := r.br.Peek(r.pending + HeaderLen)
	if err != nil {
		return false
	}
	n := int(binary.BigEndian.Uint16(b[r.pending+1:]))
	return avail >= HeaderLen+n
}

// Buffered returns the bytes buffered beyond the current frame: the stream
// bytes a caller must replay if it hands the connection to someone else.
func (r *Reader) Buffered() []byte {
	n := r.br.Buffered()
	b, _ := r.br.Peek(n)
	if r.pending <= len(b) {
		return b[r.pending:]
	}
	return nil
}
