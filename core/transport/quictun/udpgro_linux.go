package quictun

import (
	"encoding/binary"
	"net"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Receive coalescing (UDP GRO).
//
// quic-go reads its UDP socket with recvmmsg, one wire packet per message,
// and never turns on UDP_GRO. A bulk transfer then costs the receiving
// kernel one socket-buffer entry, one segmentation step (a GSO burst from
// the peer arrives whole on veth or through NIC GRO and is split for a
// socket without UDP_GRO) and one message per packet: on the benchmark's
// server (perf, single-stream upload) reading the socket was a fifth of
// the process's CPU time. With UDP_GRO on, the kernel hands over a burst of
// same-sized packets from one peer as one buffer plus its segment size,
// and groConn cuts it back into packets in user space, a plain copy each,
// before quic-go sees them. quic-go takes such a conn as is: it accepts any
// OOBCapablePacketConn that also implements ReadBatch (its batchConn), and
// everything else (sending with GSO, ECN, buffer sizes) still goes to the
// embedded *net.UDPConn.

const (
	// groBatch is the number of receive buffers of one recvmmsg call, as
	// many as quic-go reads at once.
	groBatch = 8
	// groBufSize holds the largest coalesced burst: the kernel stops
	// coalescing at 64 KiB (and at 64 segments).
	groBufSize = 1 << 16
	// groOOBSize holds the control messages of one read: packet info,
	// TOS/traffic class (ECN) and the GRO segment size.
	groOOBSize = 256
)

// groConn is a UDP socket with UDP_GRO on whose ReadBatch returns one
// packet per message, like a socket without it.
type groConn struct {
	*net.UDPConn
	pc *ipv4.PacketConn
	// msgs are the buffers of the last recvmmsg (allocated on first use:
	// the pages of a socket that never receives stay untouched); n of
	// them were filled. Message cur is being handed out from offset off,
	// in segments of seg bytes; oob is its control messages without the
	// GRO one (shared by all its segments).
	msgs []ipv4.Message
	n    int
	cur  int
	off  int
	seg  int
	oob  []byte
	// gate paces hand-outs to what the datagram readers take (nil: no
	// pacing); timer is its reusable wait timer.
	gate  *Gate
	timer *time.Timer
}

// WrapUDP returns pc with receive coalescing (UDP GRO) and receive pacing
// by g (see Gate; g may be nil) when pc is a UDP socket and the kernel
// supports UDP GRO; otherwise pc itself. Pass the result to
// quic.Transport; the caller still closes pc.
func WrapUDP(pc net.PacketConn, g *Gate) net.PacketConn {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return pc
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return pc
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	}); err != nil || serr != nil {
		return pc
	}
	return &groConn{UDPConn: uc, pc: ipv4.NewPacketConn(uc), oob: make([]byte, 0, groOOBSize), gate: g}
}

// ReadBatch fills ms with received packets, one per message, and reports
// how many. It blocks only when no packet of an earlier coalesced read is
// left. Each ms[i] needs one buffer (quic-go gives a full-size packet
// buffer); a packet larger than it is truncated, as recvmmsg would.
func (c *groConn) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	if len(ms) == 0 {
		return 0, nil
	}
	if c.cur >= c.n {
		if c.msgs == nil {
			c.msgs = make([]ipv4.Message, groBatch)
			for i := range c.msgs {
				c.msgs[i].Buffers = [][]byte{make([]byte, groBufSize)}
				c.msgs[i].OOB = make([]byte, groOOBSize)
			}
		}
		n, err := c.pc.ReadBatch(c.msgs, flags)
		if n == 0 || err != nil {
			return 0, err
		}
		c.n, c.cur = n, 0
		c.start()
	}
	c.gate.wait(&c.timer)
	n := c.fill(ms)
	if c.gate != nil {
		k := 0
		for i := range n {
			if ms[i].N >= minDatagramPacket {
				k++
			}
		}
		c.gate.handedOut(k)
	}
	return n, nil
}

// fill hands out the pending segments into ms.
func (c *groConn) fill(ms []ipv4.Message) int {
	i := 0
	for i < len(ms) && c.cur < c.n {
		m := &c.msgs[c.cur]
		end := min(c.off+c.seg, m.N)
		out := &ms[i]
		out.N = copy(out.Buffers[0], m.Buffers[0][c.off:end])
		out.NN = copy(out.OOB, c.oob)
		out.Flags = 0
		out.Addr = m.Addr
		i++
		c.off = end
		if c.off >= m.N {
			c.cur++
			c.start()
		}
	}
	return i
}

// start prepares message cur for handing out: its segment size (the whole
// payload when the kernel did not coalesce) and its other control
// messages.
func (c *groConn) start() {
	c.off, c.seg, c.oob = 0, 0, c.oob[:0]
	if c.cur >= c.n {
		return
	}
	m := &c.msgs[c.cur]
	c.seg = m.N
	oob := m.OOB[:m.NN]
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			break // malformed: keep what was parsed
		}
		raw := oob[:len(oob)-len(rest)]
		oob = rest
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && len(data) >= 4 {
			if s := int(int32(binary.NativeEndian.Uint32(data))); s > 0 {
				c.seg = s
			}
			continue
		}
		c.oob = append(c.oob, raw...)
	}
	if c.seg <= 0 {
		c.seg = m.N // an empty datagram: handed out once
	}
}
