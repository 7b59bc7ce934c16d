// Package engine moves IP packets between a TUN device and Mirage protocol
// connections. It holds the client side of the protocol (handshake, session,
// the TUN pump with reconnect-safe attachment) and the batching primitives
// the server shares. It knows nothing about the OS or about which transport
// carries the bytes.
package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/mirage-vpn/mirage/core/wire"
)

// Conn is an established, encrypted, reliable transport connection.
type Conn interface {
	net.Conn
	// ExportKeyingMaterial gives a per-connection secret (RFC 5705/8446
	// exporter) used to bind session-join proofs to this connection.
	ExportKeyingMaterial(label string, context []byte, length int) ([]byte, error)
}

// Dialer opens transport connections of one protocol.
type Dialer interface {
	// Protocol is the enabled_protocols name, e.g. "tcp-tls".
	Protocol() string
	Dial(ctx context.Context) (Conn, error)
}

// JoinLabel is the TLS exporter label for session-join channel binding.
const JoinLabel = "EXPORTER-mirage-join-v1"

// ErrRejected means the server answered the Hello like a web server: the
// credentials (or the ticket) were not accepted.
var ErrRejected = errors.New("the server did not accept these credentials")

// ErrInvalidHello means the session's own parameters cannot be sent (a
// credential over the wire's limits): a permanent error, retrying cannot
// help.
var ErrInvalidHello = errors.New("invalid profile for the handshake")

// readerSize is the buffered reader size per connection: several maximum
// frames so a burst is decoded without extra reads.
const readerSize = 256 << 10

// ClientHandshake sends h on c and waits for the Welcome. It returns the
// Reader to keep using for c (it may hold buffered frames).
func ClientHandshake(ctx context.Context, c Conn, h *wire.Hello, timeout time.Duration) (*wire.Welcome, *wire.Reader, error) {
	payload, err := h.Marshal()
	if err != nil {
		return nil, nil, err
	}
	dl := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	c.SetDeadline(dl)
	defer c.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := c.Write(wire.AppendFrame(nil, wire.TypeHello, payload)); err != nil {
		return nil, nil, fmt.Errorf("send hello: %w", err)
	}
	r := wire.NewReader(c, readerSize)
	r.SetMaxPayload(wire.MaxHandshakePayload)
	for {
		f, err := r.Next()
		if err != nil {
			if looksLikeHTTP(r.Buffered()) {
				return nil, nil, ErrRejected
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, nil, fmt.Errorf("server closed the connection during the handshake: %w", err)
			}
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			return nil, nil, fmt.Errorf("read welcome: %w", err)
		}
		switch f.Type {
		case wire.TypeWelcome:
			w, err := wire.UnmarshalWelcome(f.Payload)
			if err != nil {
				return nil, nil, err
			}
			r.SetMaxPayload(wire.MaxPayload)
			return w, r, nil
		case wire.TypeClose:
			code, msg := wire.ParseClose(f.Payload)
			return nil, nil, fmt.Errorf("server closed the connection (code %d): %s", code, msg)
		case wire.TypePadding:
			continue
		default:
			// An HTTP/2 server preface starts with a SETTINGS frame: length
			// (3 bytes, first one 0), type 0x04. Read as our framing that is
			// type 0x00 with a payload beginning with 0x04.
			if f.Type == 0 && len(f.Payload) > 0 && f.Payload[0] == 0x04 {
				return nil, nil, ErrRejected
			}
			return nil, nil, fmt.Errorf("unexpected %s frame during handshake", f.Type)
		}
	}
}

// looksLikeHTTP reports whether a server's first bytes are an HTTP/1
// response or an HTTP/2 server preface (a SETTINGS frame: 24-bit length with
// a zero first byte, type 0x04, flags 0 or ACK): the fallback web site.
func looksLikeHTTP(b []byte) bool {
	if len(b) >= 5 && b[0] == 0 && b[3] == 0x04 && b[4]&^0x01 == 0 {
		return true
	}
	if len(b) < 3 {
		return false
	}
	return bytes.HasPrefix([]byte("HTTP/"), b[:min(len(b), 5)])
}
