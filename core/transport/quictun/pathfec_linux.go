package quictun

import (
	"encoding/binary"
	"net"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Path FEC on quic-go's fast path (Linux).
//
// A net.PacketConn that is not a *net.UDPConn costs quic-go its batched
// I/O: it reads one packet per system call and sends without GSO, which
// cut a LAN transfer to a quarter. pathUDP gives quic-go what it looks for
// in a UDP socket (an OOBCapablePacketConn with ReadBatch, as groConn
// does): reads come in batches (recvmmsg, with UDP GRO where the kernel
// has it) and go through the PathFEC decoder; a GSO write (one buffer of
// equal-size packets and a segment size) is cut into packets, protected,
// and sent again in runs of equal size with GSO. Everything else (socket
// options, buffer sizes) reaches the socket itself.

const (
	// pathReadBatch is the number of packets one lower read takes.
	pathReadBatch = 16
	// pathGSOMax bounds one GSO send: the kernel takes at most 64
	// segments and a 64 KiB datagram.
	pathGSOMax      = 64
	pathGSOMaxBytes = 65000
)

// batchReader is a socket read in batches (groConn or ipv4.PacketConn).
type batchReader interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
}

// pathUDP is a PathFEC on a UDP socket, for quic-go.
type pathUDP struct {
	*net.UDPConn
	f     *PathFEC
	lower batchReader
	msgs  []ipv4.Message
	// gso: quic-go sent with GSO, so the kernel has it and runs of our
	// own packets may be sent that way too.
	gso atomic.Bool
}

// Conn is what to give quic.Transport: on Linux with a UDP socket a
// wrapper that keeps quic-go's batched reads and GSO sends, otherwise c.
func (c *PathFEC) Conn() net.PacketConn {
	uc, ok := c.pc.(*net.UDPConn)
	if !ok {
		return c
	}
	var lower batchReader = ipv4.NewPacketConn(uc)
	if g, ok := WrapUDP(uc, nil).(*groConn); ok {
		lower = g // receive coalescing; pacing is done here
	}
	msgs := make([]ipv4.Message, pathReadBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 2048)}
		msgs[i].OOB = make([]byte, groOOBSize)
	}
	return &pathUDP{UDPConn: uc, f: c, lower: lower, msgs: msgs}
}

// ReadBatch fills ms with packets for quic-go, as ReadFrom returns them.
func (u *pathUDP) ReadBatch(ms []ipv4.Message, _ int) (int, error) {
	c := u.f
	for {
		if c.head < len(c.ready) {
			return u.handOut(ms), nil
		}
		c.next() // resets the queue
		if err := c.prepareRead(); err != nil {
			return 0, err
		}
		if len(c.ready) > 0 {
			continue
		}
		n, err := u.lower.ReadBatch(u.msgs, 0)
		if err != nil {
			if c.holdTimeout(err) {
				continue
			}
			return 0, err
		}
		now := time.Now()
		for i := range n {
			m := &u.msgs[i]
			c.receive(m.Buffers[0][:m.N], m.Addr, m.OOB[:m.NN], now)
		}
	}
}

// handOut moves ready packets into ms, paced by the gate.
func (u *pathUDP) handOut(ms []ipv4.Message) int {
	c := u.f
	c.gate.wait(&c.timer)
	n, k := 0, 0
	for n < len(ms) {
		r, ok := c.next()
		if !ok {
			break
		}
		m := &ms[n]
		m.N = copy(m.Buffers[0], r.p)
		m.NN = copy(m.OOB, r.oob)
		m.Flags = 0
		m.Addr = r.addr
		if m.N >= minDatagramPacket {
			k++
		}
		n++
	}
	if c.gate != nil {
		c.gate.handedOut(k)
	}
	return n
}

// WriteMsgUDP sends quic-go's packets in b (several of them, if oob asks
// for GSO): protected when this end frames to addr.
func (u *pathUDP) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (int, int, error) {
	c := u.f
	p := c.sendPeer(addr)
	if p == nil {
		return u.UDPConn.WriteMsgUDP(b, oob, addr)
	}
	base, seg := splitSegment(oob)
	if seg <= 0 {
		seg = len(b)
	} else if !u.gso.Load() {
		u.gso.Store(true)
	}
	p.smu.Lock()
	defer p.smu.Unlock()
	p.out, p.outLens = p.out[:0], p.outLens[:0]
	collect := func(pkt []byte) error {
		p.out = append(p.out, pkt...)
		p.outLens = append(p.outLens, len(pkt))
		return nil
	}
	for off := 0; off < len(b); off += seg {
		s := b[off:min(off+seg, len(b))]
		if protectable(s) {
			c.protect(p, s, addr, collect)
		} else {
			collect(s)
		}
	}
	if err := u.sendRuns(p.out, p.outLens, base, addr); err != nil {
		return 0, 0, err
	}
	return len(b), len(oob), nil
}

// sendRuns sends the packets in buf (lengths lens) to addr: each run of
// equal-size packets (the last may be shorter) as one GSO send.
func (u *pathUDP) sendRuns(buf []byte, lens []int, oob []byte, addr *net.UDPAddr) error {
	off := 0
	for i := 0; i < len(lens); {
		j, total := i+1, lens[i]
		if u.gso.Load() {
			j, total = gsoRun(lens, i)
		}
		o := oob
		if j-i > 1 {
			o = appendSegment(oob[:len(oob):len(oob)], uint16(lens[i]))
		}
		if _, _, err := u.UDPConn.WriteMsgUDP(buf[off:off+total], o, addr); err != nil {
			return err
		}
		off += total
		i = j
	}
	return nil
}

// gsoRun returns the end of the run of packets starting at lens[i] that one
// GSO send can carry (equal sizes, the last may be shorter; the kernel's
// limits) and its bytes.
func gsoRun(lens []int, i int) (end, total int) {
	size, total, j := lens[i], lens[i], i+1
	for j < len(lens) && j-i < pathGSOMax && total+lens[j] <= pathGSOMaxBytes && lens[j] <= size {
		total += lens[j]
		j++
		if lens[j-1] < size {
			break // a shorter packet ends a run
		}
	}
	return j, total
}

// splitSegment returns oob without its UDP_SEGMENT message and the segment
// size that message gave (0: none).
func splitSegment(oob []byte) ([]byte, int) {
	var base []byte
	seg := 0
	for rest := oob; len(rest) > 0; {
		if len(rest) < unix.SizeofCmsghdr {
			return oob, 0 // not control messages (the parser would read past them)
		}
		h, body, next, err := unix.ParseOneSocketControlMessage(rest)
		if err != nil {
			return oob, 0
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_SEGMENT && len(body) >= 2 {
			seg = int(binary.NativeEndian.Uint16(body))
		} else {
			base = append(base, rest[:len(rest)-len(next)]...)
		}
		rest = next
	}
	if seg == 0 {
		return oob, 0
	}
	return base, seg
}

// appendSegment appends a UDP_SEGMENT control message (GSO segment size).
func appendSegment(b []byte, size uint16) []byte {
	start := len(b)
	b = append(b, make([]byte, unix.CmsgSpace(2))...)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[start]))
	h.Level = syscall.IPPROTO_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[start+unix.CmsgSpace(0):], size)
	return b
}

// ReadFrom, WriteTo, deadlines and Close are the PathFEC's, not the
// socket's.

func (u *pathUDP) ReadFrom(b []byte) (int, net.Addr, error)     { return u.f.ReadFrom(b) }
func (u *pathUDP) WriteTo(b []byte, addr net.Addr) (int, error) { return u.f.WriteTo(b, addr) }
func (u *pathUDP) SetReadDeadline(t time.Time) error            { return u.f.SetReadDeadline(t) }
func (u *pathUDP) SetDeadline(t time.Time) error                { return u.f.SetDeadline(t) }
func (u *pathUDP) Close() error                                 { return u.f.Close() }
