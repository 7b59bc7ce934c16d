// Package gso cuts a super-packet (a TCP or UDP packet larger than the MTU,
// as a Linux TUN device with offloads hands it over, or as a peer sends it
// whole over a stream transport) into MTU-sized packets, the way the
// kernel's segmentation offload would: headers copied into every segment,
// lengths, IPv4 IDs, TCP sequence numbers and flags adjusted, and every
// checksum computed. It is the fallback where a super-packet cannot go on
// whole: a datagram transport (QUIC) or a device that cannot take it.
//
// Options carries the fields of the kernel's virtio_net_hdr. Nothing in it
// is trusted: a header that does not match the packet is an error, never a
// panic or an out-of-range write.
package gso

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Segmentation types (the kernel's VIRTIO_NET_HDR_GSO_* values).
const (
	TypeNone  uint8 = 0
	TypeTCPv4 uint8 = 1
	TypeTCPv6 uint8 = 4
	TypeUDP   uint8 = 5 // UDP_L4: UDP segmentation, IPv4 or IPv6
)

// Options describe a super-packet.
type Options struct {
	Type uint8
	// Size is the transport payload bytes per segment (gso_size).
	Size uint16
	// CsumStart is where the transport header begins; CsumOffset is where
	// its checksum field is, from CsumStart. With NeedsCsum the field holds
	// only the pseudo-header sum (CHECKSUM_PARTIAL) and the rest is ours to
	// add.
	CsumStart, CsumOffset uint16
	NeedsCsum             bool
}

const (
	tcpFlagFIN = 0x01
	tcpFlagPSH = 0x08
	tcpFlagCWR = 0x80
)

// Split writes the segments of pkt to out[i][offset:] and their lengths to
// sizes[i], and returns how many it wrote. A packet that needs no
// segmentation (TypeNone) is copied as one segment, its checksum completed
// when NeedsCsum is set.
func Split(pkt []byte, o Options, out [][]byte, sizes []int, offset int) (int, error) {
	if len(out) == 0 || len(sizes) < len(out) {
		return 0, errors.New("gso: no output buffers")
	}
	if o.Type == TypeNone {
		if len(pkt) == 0 {
			return 0, errors.New("gso: empty packet")
		}
		if len(pkt) > len(out[0])-offset {
			return 0, fmt.Errorf("gso: packet of %d bytes does not fit a %d-byte buffer", len(pkt), len(out[0])-offset)
		}
		seg := out[0][offset : offset+len(pkt)]
		copy(seg, pkt)
		if o.NeedsCsum {
			at := int(o.CsumStart) + int(o.CsumOffset)
			if int(o.CsumStart) >= len(seg) || at+2 > len(seg) {
				return 0, fmt.Errorf("gso: checksum at %d+%d outside a %d-byte packet", o.CsumStart, o.CsumOffset, len(seg))
			}
			binary.BigEndian.PutUint16(seg[at:], ^fold(sum(seg[o.CsumStart:], 0)))
		}
		sizes[0] = len(seg)
		return 1, nil
	}
	hdrLen, err := Check(pkt, o)
	if err != nil {
		return 0, err
	}
	v4 := pkt[0]>>4 == 4
	iphLen := int(o.CsumStart)
	tcp := o.Type != TypeUDP
	csumOff := int(o.CsumOffset)
	payload := pkt[hdrLen:]
	n := (len(payload) + int(o.Size) - 1) / int(o.Size)
	if n == 0 {
		n = 1
	}
	if n > len(out) {
		return 0, fmt.Errorf("gso: %d segments, room for %d", n, len(out))
	}
	var id uint16
	if v4 {
		id = binary.BigEndian.Uint16(pkt[4:])
	}
	seq := uint32(0)
	if tcp {
		seq = binary.BigEndian.Uint32(pkt[iphLen+4:])
	}
	for i := 0; i < n; i++ {
		lo := i * int(o.Size)
		hi := min(lo+int(o.Size), len(payload))
		segLen := hdrLen + hi - lo
		if segLen > len(out[i])-offset {
			return 0, fmt.Errorf("gso: segment of %d bytes does not fit a %d-byte buffer", segLen, len(out[i])-offset)
		}
		seg := out[i][offset : offset+segLen]
		copy(seg, pkt[:hdrLen])
		copy(seg[hdrLen:], payload[lo:hi])
		// IP header.
		if v4 {
			binary.BigEndian.PutUint16(seg[2:], uint16(segLen))
			binary.BigEndian.PutUint16(seg[4:], id+uint16(i))
			seg[10], seg[11] = 0, 0
			binary.BigEndian.PutUint16(seg[10:], ^fold(sum(seg[:iphLen], 0)))
		} else {
			binary.BigEndian.PutUint16(seg[4:], uint16(segLen-40))
		}
		th := seg[iphLen:]
		if tcp {
			binary.BigEndian.PutUint32(th[4:], seq+uint32(lo))
			if i < n-1 {
				th[13] &^= tcpFlagFIN | tcpFlagPSH
			}
			if i > 0 {
				th[13] &^= tcpFlagCWR
			}
		} else {
			binary.BigEndian.PutUint16(th[4:], uint16(len(th)))
		}
		// Transport checksum over the pseudo-header and the segment.
		th[csumOff], th[csumOff+1] = 0, 0
		proto := uint8(6)
		if !tcp {
			proto = 17
		}
		var ps uint32
		if v4 {
			ps = sum(seg[12:20], 0)
		} else {
			ps = sum(seg[8:40], 0)
		}
		ps += uint32(proto) + uint32(len(th))
		c := ^fold(sum(th, ps))
		if !tcp && c == 0 {
			c = 0xffff // UDP: 0 means "no checksum"
		}
		binary.BigEndian.PutUint16(th[csumOff:], c)
		sizes[i] = segLen
	}
	return n, nil
}

// Check validates a super-packet's header against the packet (what Split
// does before cutting it) and returns the length of its IP plus transport
// header. For TypeNone it checks only the checksum position (NeedsCsum)
// and returns CsumStart+CsumOffset+2 (0 without NeedsCsum). A receiver
// runs it before it hands a peer's super-packet to its kernel whole.
func Check(pkt []byte, o Options) (int, error) {
	if o.Type == TypeNone {
		if !o.NeedsCsum {
			return 0, nil
		}
		at := int(o.CsumStart) + int(o.CsumOffset)
		if int(o.CsumStart) >= len(pkt) || at+2 > len(pkt) {
			return 0, fmt.Errorf("gso: checksum at %d+%d outside a %d-byte packet", o.CsumStart, o.CsumOffset, len(pkt))
		}
		return at + 2, nil
	}
	if len(pkt) < 1 {
		return 0, errors.New("gso: empty packet")
	}
	v4 := pkt[0]>>4 == 4
	switch {
	case pkt[0]>>4 != 4 && pkt[0]>>4 != 6:
		return 0, fmt.Errorf("gso: IP version %d", pkt[0]>>4)
	case o.Type == TypeTCPv4 && !v4, o.Type == TypeTCPv6 && v4:
		return 0, fmt.Errorf("gso: type %d on an IPv%d packet", o.Type, pkt[0]>>4)
	case o.Type != TypeTCPv4 && o.Type != TypeTCPv6 && o.Type != TypeUDP:
		return 0, fmt.Errorf("gso: unknown type %d", o.Type)
	case o.Size == 0:
		return 0, errors.New("gso: segment size 0")
	}
	iphLen := int(o.CsumStart)
	proto := byte(0)
	if v4 {
		if len(pkt) < 20 || int(pkt[0]&0x0f)*4 != iphLen {
			return 0, fmt.Errorf("gso: IPv4 header length %d, transport at %d", int(pkt[0]&0x0f)*4, iphLen)
		}
		proto = pkt[9]
	} else if iphLen != 40 || len(pkt) < 40 {
		// Extension headers are not segmented (the kernel does not hand
		// them over with GSO either).
		return 0, fmt.Errorf("gso: IPv6 transport at %d, want 40", iphLen)
	} else {
		proto = pkt[6]
	}
	tcp := o.Type != TypeUDP
	var thLen, csumOff int
	if tcp {
		if proto != 6 {
			return 0, fmt.Errorf("gso: TCP segmentation of IP protocol %d", proto)
		}
		if len(pkt) < iphLen+20 {
			return 0, errors.New("gso: TCP header truncated")
		}
		thLen = int(pkt[iphLen+12]>>4) * 4
		if thLen < 20 || len(pkt) < iphLen+thLen {
			return 0, fmt.Errorf("gso: TCP header length %d", thLen)
		}
		csumOff = 16
	} else {
		if proto != 17 {
			return 0, fmt.Errorf("gso: UDP segmentation of IP protocol %d", proto)
		}
		thLen, csumOff = 8, 6
		if len(pkt) < iphLen+thLen {
			return 0, errors.New("gso: UDP header truncated")
		}
	}
	if int(o.CsumOffset) != csumOff {
		return 0, fmt.Errorf("gso: checksum offset %d, want %d", o.CsumOffset, csumOff)
	}
	return iphLen + thLen, nil
}

// sum adds b as big-endian 16-bit words to acc (one's complement). It
// adds 32-bit words, 8 at a time, into 64 bits (2^16 = 1 in one's
// complement arithmetic, so a 32-bit word counts as its two halves), and
// returns the sum folded to at most 16 bits, zero only for all-zero input
// and acc, so callers can add small values to it.
func sum(b []byte, acc uint32) uint32 {
	s := uint64(acc)
	for len(b) >= 32 {
		s += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:])) +
			uint64(binary.BigEndian.Uint32(b[8:])) + uint64(binary.BigEndian.Uint32(b[12:])) +
			uint64(binary.BigEndian.Uint32(b[16:])) + uint64(binary.BigEndian.Uint32(b[20:])) +
			uint64(binary.BigEndian.Uint32(b[24:])) + uint64(binary.BigEndian.Uint32(b[28:]))
		b = b[32:]
	}
	for len(b) >= 4 {
		s += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint32(s)
}

// fold folds a sum to 16 bits.
func fold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
