package tundevtest

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"

	"github.com/mirage-vpn/mirage/core/gso"
	"github.com/mirage-vpn/mirage/core/tundev"
)

// Super is a packet with its offload header, as a SuperDevice reads or
// writes it.
type Super struct {
	P      []byte
	O      gso.Options
	HdrLen int
}

// SuperTUN is a fake tundev.SuperDevice: ReadSuper returns what is sent on
// SuperIn (or, as a plain packet, on Inbound); WriteSuper delivers on
// SuperOut. Plain Read and Write work as ChannelTUN's.
type SuperTUN struct {
	*ChannelTUN
	SuperIn  chan Super
	SuperOut chan Super
	// Refuse, when set, makes WriteSuper fail like a kernel that rejects
	// the header (EINVAL).
	Refuse bool
}

var _ tundev.SuperDevice = (*SuperTUN)(nil)

// NewSuper returns a SuperTUN with buffered channels.
func NewSuper(mtu int) *SuperTUN {
	return &SuperTUN{ChannelTUN: New(mtu), SuperIn: make(chan Super, 256), SuperOut: make(chan Super, 256)}
}

func (c *SuperTUN) CanSuper() bool { return true }

// Read returns plain packets from Inbound and the segments of a
// super-packet from SuperIn, cut as wireguard/tun's Read cuts them.
func (c *SuperTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-c.closed:
		return 0, os.ErrClosed
	case s := <-c.SuperIn:
		return gso.Split(s.P, s.O, bufs, sizes, offset)
	case p := <-c.Inbound:
		sizes[0] = copy(bufs[0][offset:], p)
		return 1, nil
	}
}

func (c *SuperTUN) ReadSuper(buf []byte, offset int) (int, gso.Options, error) {
	if offset < tundev.VnetHdrLen {
		return 0, gso.Options{}, errors.New("no room for the offload header")
	}
	select {
	case <-c.closed:
		return 0, gso.Options{}, os.ErrClosed
	case s := <-c.SuperIn:
		return copy(buf[offset:], s.P), s.O, nil
	case p := <-c.Inbound:
		return copy(buf[offset:], p), gso.Options{}, nil
	}
}

func (c *SuperTUN) WriteSuper(buf []byte, offset int, o gso.Options, hdrLen int) error {
	if offset < tundev.VnetHdrLen {
		return errors.New("no room for the offload header")
	}
	if c.Refuse {
		return errors.New("invalid argument")
	}
	clear(buf[offset-tundev.VnetHdrLen : offset]) // the header goes here
	s := Super{P: append([]byte(nil), buf[offset:]...), O: o, HdrLen: hdrLen}
	select {
	case <-c.closed:
		return os.ErrClosed
	case c.SuperOut <- s:
		return nil
	}
}

// TCPSuper builds a TCP super-packet from src to dst (IPv4 or IPv6, ports
// 40000 -> 5201, sequence number seq) carrying payload, to be cut into
// segments of mss payload bytes, as a Linux TUN with offloads hands it
// over: the TCP checksum field holds the pseudo-header sum only
// (NeedsCsum).
func TCPSuper(src, dst netip.Addr, seq uint32, payload []byte, mss int) ([]byte, gso.Options) {
	iph := 20
	o := gso.Options{Type: gso.TypeTCPv4, Size: uint16(mss), CsumOffset: 16, NeedsCsum: true}
	if src.Is6() {
		iph = 40
		o.Type = gso.TypeTCPv6
	}
	o.CsumStart = uint16(iph)
	tcpLen := 20 + len(payload)
	p := make([]byte, iph+tcpLen)
	var pseudo uint32
	if src.Is4() {
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		p[8], p[9] = 64, 6
		s, d := src.As4(), dst.As4()
		copy(p[12:], s[:])
		copy(p[16:], d[:])
		binary.BigEndian.PutUint16(p[10:], ^Fold(Sum(p[:20], 0)))
		pseudo = Sum(p[12:20], 0)
	} else {
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], uint16(tcpLen))
		p[6], p[7] = 6, 64
		s, d := src.As16(), dst.As16()
		copy(p[8:], s[:])
		copy(p[24:], d[:])
		pseudo = Sum(p[8:40], 0)
	}
	th := p[iph:]
	binary.BigEndian.PutUint16(th[0:], 40000)
	binary.BigEndian.PutUint16(th[2:], 5201)
	binary.BigEndian.PutUint32(th[4:], seq)
	binary.BigEndian.PutUint32(th[8:], 1)
	th[12] = 5 << 4
	th[13] = 0x18 // PSH|ACK
	binary.BigEndian.PutUint16(th[14:], 65535)
	copy(th[20:], payload)
	pseudo += 6 + uint32(tcpLen)
	binary.BigEndian.PutUint16(th[16:], Fold(pseudo)) // partial: not complemented
	return p, o
}

// Sum adds b as big-endian 16-bit words to acc (one's complement,
// unfolded): an Internet checksum of its own for tests.
func Sum(b []byte, acc uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		acc += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		acc += uint32(b[len(b)-1]) << 8
	}
	return acc
}

// Fold folds a Sum to 16 bits.
func Fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}
