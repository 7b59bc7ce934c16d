// Package quictun is Mirage's QUIC transport: HTTP/3 over QUIC v1 (ALPN
// h3), shaped like a long-running streaming HTTP/3 request, as MASQUE
// proxies do.
//
// The client opens one QUIC connection and one request stream on it (an
// extended CONNECT for CONNECT-IP whose body starts with the Hello frame);
// the server answers 200, and from
// then on the request stream carries the protocol's frames (inside HTTP/3
// DATA frames) while IP packets travel as HTTP Datagrams (RFC 9297, over
// QUIC DATAGRAM frames, RFC 9221) bound to that stream. A packet too large
// for a datagram goes over the stream instead, so nothing is silently lost;
// the client sizes its TUN MTU so that does not normally happen.
//
// A Conn presents all of that as one ordered frame stream (engine.Conn):
// Write splits a buffer of frames into datagrams (DATA and PADDING) and one stream
// write (everything else); Read merges frames from the stream and from
// datagrams. So the engine and the server pump QUIC exactly like TLS.
//
// Datagram payload: the HTTP Datagram's quarter stream id (RFC 9297),
// one type byte (wire.TypeData, wire.TypeSeqData or wire.TypePadding),
// then the frame payload; other types are ignored.
//
// The datagrams are sent and received on the QUIC connection directly,
// not through quic-go's http3 layer: that layer moves every datagram
// through one more goroutine and a 32-deep per-stream queue that drops
// when full, which cost a fifth of the packets of a bulk transfer (inner
// TCP saw it as loss). So neither side advertises SETTINGS_H3_DATAGRAM
// (which would start http3's reader); the QUIC transport parameter
// max_datagram_frame_size is still negotiated, and the SETTINGS are only
// visible to the two endpoints. A prober sees a server without
// H3_DATAGRAM, like most HTTP/3 web servers.
//
// Both ends hand quic-go their UDP socket through WrapUDP, which turns on
// receive coalescing (UDP GRO) on Linux: see udpgro_linux.go.
package quictun

import (
	"context"

	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/quic-go/quicvarint"

	"github.com/mirage-vpn/mirage/core/wire"
)

// stream is the request stream on either side (http3.RequestStream on the
// client, http3.Stream on the server).
type stream interface {
	io.ReadWriteCloser
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
	CancelRead(quic.StreamErrorCode)
	CancelWrite(quic.StreamErrorCode)
}

// datagrams is the connection's datagram path (the quic.Conn; a fake in
// tests).
type datagrams interface {
	SendDatagram([]byte) error
	ReceiveDatagram(context.Context) ([]byte, error)
}

// item is one frame (or a terminal error) waiting to be Read.
type item struct {
	hdr [wire.HeaderLen]byte
	p   []byte
	err error
}

// Conn is an established tunnel connection over QUIC.
type Conn struct {
	qc  *quic.Conn
	str stream
	dgs datagrams
	// qsid is the request stream's quarter stream id, the prefix of
	// every HTTP Datagram of this tunnel; prefix is its encoding.
	qsid   uint64
	prefix []byte
	// onClose releases what the side owns besides qc (the client's UDP
	// socket and transport).
	onClose func()
	// gate learns of every datagram taken from quic-go (see Gate).
	gate *Gate
	// pf is the path FEC below qc (nil: none): the client's own socket
	// wrapper (replaced when it moves to a fresh path), or the server's
	// sockets.
	pfMu sync.Mutex
	pf   pathStater
	// fresh moves a client to a new socket once path FEC is on (nil:
	// server, or no path FEC); fresh.go.
	fresh *freshPath
	// peer is the server's address on a client (nil on a server): quic-go's
	// RemoteAddr is not safe to call while the connection moves paths.
	peer net.Addr

	in     chan item
	ctx    context.Context
	cancel context.CancelFunc
	// welcomed is closed once the stream delivered its first frame: on the
	// client the Welcome must be read before any datagram.
	welcomed chan struct{}

	rmu  sync.Mutex // serialises Read
	cur  item       // frame being returned by Read
	off  int        // bytes of cur already returned (header first)
	have bool

	dlMu     sync.Mutex
	deadline time.Time
	dlKick   chan struct{}

	wmu     sync.Mutex
	wbuf    []byte
	dg      []byte
	maxDG   int  // largest datagram payload we send (type byte included)
	noDG    bool // the peer takes no datagrams
	closeMu sync.Once
	closed  chan struct{}
}

// newConn starts the readers; readFirst, when set, runs in the stream
// reader before frames are read (the client reads the HTTP response there).
// gate holds datagrams back until the first stream frame (the client's
// Welcome) has been read.
func newConn(qc *quic.Conn, str stream, dgs datagrams, g *Gate, id quic.StreamID, gate bool, readFirst func() error, onClose func()) *Conn {
	ctx, cancel := context.WithCancel(context.Background())
	qsid := uint64(id) / 4
	c := &Conn{
		qc: qc, str: str, dgs: dgs, qsid: qsid, prefix: quicvarint.Append(nil, qsid),
		onClose: onClose, gate: g,
		in: make(chan item, 256), ctx: ctx, cancel: cancel,
		welcomed: make(chan struct{}), dlKick: make(chan struct{}, 1),
		maxDG: initialMaxDatagram, closed: make(chan struct{}),
	}
	if qc != nil {
		// A peer without datagram support gets everything on the stream.
		c.noDG = !qc.ConnectionState().SupportsDatagrams.Remote
	}
	if !gate {
		close(c.welcomed)
	}
	go c.readStream(readFirst, gate)
	go c.readDatagrams()
	return c
}

// NewServerConn wraps the tunnel stream a server took over from an HTTP/3
// request (after answering 200) on qc; g is the Gate the server's sockets
// were wrapped with (nil: none), pf their path FEC (nil: none), whose
// counters for this peer FEC reports.
func NewServerConn(qc *quic.Conn, str *http3.Stream, g *Gate, pf PathFECs) *Conn {
	c := newConn(qc, str, qc, g, str.StreamID(), false, nil, nil)
	if len(pf) > 0 {
		c.pf = pf
	}
	return c
}

// initialMaxDatagram is the first guess of the datagram payload limit; a
// DatagramTooLargeError from quic-go corrects it.
const initialMaxDatagram = 1500

func (c *Conn) push(it item) bool {
	select {
	case c.in <- it:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// readStream turns the stream's bytes into frames.
func (c *Conn) readStream(readFirst func() error, gate bool) {
	first := gate
	fail := func(err error) {
		if first {
			close(c.welcomed)
		}
		c.push(item{err: err})
	}
	if readFirst != nil {
		if err := readFirst(); err != nil {
			fail(err)
			return
		}
	}
	r := wire.NewReader(c.str, 64<<10)
	for {
		f, err := r.Next()
		if err != nil {
			fail(err)
			return
		}
		it := item{p: append([]byte(nil), f.Payload...)}
		wire.PutHeader(it.hdr[:], f.Type, len(f.Payload))
		if !c.push(it) {
			return
		}
		if first {
			first = false
			close(c.welcomed)
		}
	}
}

// readDatagrams turns datagrams into DATA frames, after the first stream
// frame.
func (c *Conn) readDatagrams() {
	select {
	case <-c.welcomed:
	case <-c.ctx.Done():
		return
	}
	for {
		b, err := c.dgs.ReceiveDatagram(c.ctx)
		if err != nil {
			return // the stream reader reports the connection's fate
		}
		c.gate.Took()
		qsid, t, p, ok := ParseHTTPDatagram(b)
		if !ok || qsid != c.qsid || !datagramType(t) {
			continue // broken, another stream's, or neither packet nor padding
		}
		it := item{p: p}
		wire.PutHeader(it.hdr[:], t, len(p))
		if !c.push(it) {
			return
		}
	}
}

// datagramType reports whether frames of type t travel as datagrams:
// packets (DATA, SEQDATA) and padding.
func datagramType(t wire.Type) bool {
	return t == wire.TypeData || t == wire.TypeSeqData || t == wire.TypePadding
}

// ParseHTTPDatagram splits a QUIC datagram into the HTTP Datagram's
// quarter stream id and the frame type and payload in it; ok is false when
// any part is missing or too large.
func ParseHTTPDatagram(b []byte) (qsid uint64, t wire.Type, payload []byte, ok bool) {
	qsid, n, err := quicvarint.Parse(b)
	if err != nil {
		return 0, 0, nil, false
	}
	t, payload, ok = ParseDatagram(b[n:])
	return qsid, t, payload, ok
}

// ParseDatagram splits an HTTP Datagram's payload (after the quarter
// stream id) into its frame type and payload; ok is false for an empty or
// oversized datagram.
func ParseDatagram(b []byte) (t wire.Type, payload []byte, ok bool) {
	if len(b) < 1 || len(b)-1 > wire.MaxPayload {
		return 0, nil, false
	}
	return wire.Type(b[0]), b[1:], true
}

// Read returns frames in wire format: everything queued, as far as b has
// room, after waiting for the first. An error is sticky.
func (c *Conn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	n := 0
	for n < len(b) {
		if !c.have {
			var it item
			if n == 0 {
				var err error
				if it, err = c.wait(); err != nil {
					return 0, err
				}
			} else {
				select {
				case it = <-c.in:
				default:
					return n, nil
				}
			}
			c.cur, c.off, c.have = it, 0, true
		}
		if c.cur.err != nil {
			if n > 0 {
				return n, nil
			}
			return 0, c.cur.err
		}
		if c.off < wire.HeaderLen {
			k := copy(b[n:], c.cur.hdr[c.off:])
			n += k
			c.off += k
			if c.off < wire.HeaderLen {
				return n, nil
			}
		}
		k := copy(b[n:], c.cur.p[c.off-wire.HeaderLen:])
		n += k
		c.off += k
		if c.off == wire.HeaderLen+len(c.cur.p) {
			c.have, c.cur = false, item{}
		}
	}
	return n, nil
}

// wait blocks for the next item, honouring the read deadline.
func (c *Conn) wait() (item, error) {
	for {
		c.dlMu.Lock()
		dl := c.deadline
		c.dlMu.Unlock()
		var (
			t       *time.Timer
			timeout <-chan time.Time
		)
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return item{}, os.ErrDeadlineExceeded
			}
			t = time.NewTimer(d)
			timeout = t.C
		}
		var (
			it  item
			err error
			got bool
		)
		select {
		case it = <-c.in:
			got = true
		case <-timeout:
			err = os.ErrDeadlineExceeded
		case <-c.dlKick: // the deadline changed: look again
		case <-c.closed:
			err = net.ErrClosed
		}
		if t != nil {
			t.Stop()
		}
		if got || err != nil {
			return it, err
		}
	}
}

// Write sends whole frames: DATA and PADDING frames that fit go as
// datagrams, the rest as one stream write. b must hold complete frames.
func (c *Conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = c.wbuf[:0]
	for off := 0; off < len(b); {
		if len(b)-off < wire.HeaderLen {
			return 0, errors.New("quic conn: partial frame header in write")
		}
		t := wire.Type(b[off])
		n := int(b[off+1])<<8 | int(b[off+2])
		end := off + wire.HeaderLen + n
		if end > len(b) {
			return 0, errors.New("quic conn: partial frame in write")
		}
		if datagramType(t) && !c.noDG && 1+n <= c.maxDG {
			err := c.sendDatagram(t, b[off+wire.HeaderLen:end])
			if err == nil {
				off = end
				continue
			}
			var tooLarge *quic.DatagramTooLargeError
			if !errors.As(err, &tooLarge) {
				return 0, fmt.Errorf("quic conn: send datagram: %w", err)
			}
			// The path's datagram limit (minus the quarter stream id);
			// this packet goes over the stream.
			c.maxDG = int(tooLarge.MaxDatagramPayloadSize) - len(c.prefix)
		}
		c.wbuf = append(c.wbuf, b[off:end]...)
		off = end
	}
	if len(c.wbuf) > 0 {
		if _, err := c.str.Write(c.wbuf); err != nil {
			return 0, err
		}
	}
	if cap(c.wbuf) > 1<<20 {
		c.wbuf = nil
	}
	return len(b), nil
}

func (c *Conn) sendDatagram(t wire.Type, p []byte) error {
	c.dg = append(append(append(c.dg[:0], c.prefix...), byte(t)), p...)
	return c.dgs.SendDatagram(c.dg)
}

// MaxDatagramPayload is the largest IP packet that currently travels as a
// datagram.
func (c *Conn) MaxDatagramPayload() int {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.maxDG - 1
}

// Close ends the stream and the QUIC connection.
func (c *Conn) Close() error {
	c.closeMu.Do(func() {
		close(c.closed)
		c.cancel()
		c.str.CancelRead(0)
		c.str.Close()
		if c.qc != nil {
			c.qc.CloseWithError(0, "")
		}
		if c.onClose != nil {
			c.onClose()
		}
	})
	return nil
}

// LocalAddr is the local UDP address.
func (c *Conn) LocalAddr() net.Addr {
	if st := c.snapshot(); st != nil {
		return st.local
	}
	return c.qc.LocalAddr()
}

// RemoteAddr is the peer's UDP address.
func (c *Conn) RemoteAddr() net.Addr {
	if c.peer != nil {
		return c.peer
	}
	return c.qc.RemoteAddr()
}

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline bounds Read.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.dlMu.Lock()
	c.deadline = t
	c.dlMu.Unlock()
	select {
	case c.dlKick <- struct{}{}:
	default:
	}
	return nil
}

// SetWriteDeadline bounds stream writes (datagrams never block long).
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.str.SetWriteDeadline(t) }

// ExportKeyingMaterial is the TLS exporter of the QUIC handshake. It waits
// for the handshake to complete (a 0-RTT connection has no exporter
// before), so a session join is never sent as early data.
func (c *Conn) ExportKeyingMaterial(label string, ctxData []byte, length int) ([]byte, error) {
	select {
	case <-c.qc.HandshakeComplete():
	case <-c.qc.Context().Done():
		return nil, fmt.Errorf("quic handshake: %w", context.Cause(c.qc.Context()))
	case <-c.closed:
		return nil, net.ErrClosed
	}
	if snap := c.snapshot(); snap != nil {
		return snap.state.TLS.ExportKeyingMaterial(label, ctxData, length)
	}
	st := c.qc.ConnectionState().TLS
	return st.ExportKeyingMaterial(label, ctxData, length)
}

// Used0RTT reports whether the connection was resumed with 0-RTT data (the
// Hello went out in the first flight). Valid once the handshake completed.
func (c *Conn) Used0RTT() bool {
	select {
	case <-c.qc.HandshakeComplete():
		if snap := c.snapshot(); snap != nil {
			return snap.state.Used0RTT
		}
		return c.qc.ConnectionState().Used0RTT
	default:
		return false
	}
}

// QUIC returns the underlying QUIC connection.
func (c *Conn) QUIC() *quic.Conn { return c.qc }
