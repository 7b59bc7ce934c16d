package wire

import (
	"encoding/binary"

	"github.com/mirage-vpn/mirage/core/gso"
)

// GSOHeaderLen is the size of a GSO frame's offload header. It is the size
// of Linux's virtio_net_hdr on purpose: a receiver rewrites the header in
// place into the one its TUN device reads and writes the frame's payload
// as it is, with no copy.
const GSOHeaderLen = 10

// MaxGSOPacket is the largest super-packet a GSO frame carries; a bigger
// one is split into packets (core/gso) and sent as DATA.
const MaxGSOPacket = MaxPayload - GSOHeaderLen

// gsoFlagNeedsCsum is bit 0 of the header's flags byte: the transport
// checksum holds only the pseudo-header sum (CHECKSUM_PARTIAL).
const gsoFlagNeedsCsum = 1

// AppendGSO appends a GSO frame: super-packet p (len(p) <= MaxGSOPacket)
// with its offload header o. The header is flags (1: bit 0 needs checksum),
// segmentation type (1: core/gso's Type*), header length (2), segment size
// (2), checksum start (2) and offset (2), all big endian; the header length
// is the IP plus transport header, which receivers recompute.
func AppendGSO(dst []byte, o gso.Options, hdrLen uint16, p []byte) []byte {
	n := GSOHeaderLen + len(p)
	var flags byte
	if o.NeedsCsum {
		flags = gsoFlagNeedsCsum
	}
	dst = append(dst, byte(TypeGSO), byte(n>>8), byte(n), flags, o.Type)
	dst = binary.BigEndian.AppendUint16(dst, hdrLen)
	dst = binary.BigEndian.AppendUint16(dst, o.Size)
	dst = binary.BigEndian.AppendUint16(dst, o.CsumStart)
	dst = binary.BigEndian.AppendUint16(dst, o.CsumOffset)
	return append(dst, p...)
}

// ParseGSO splits a GSO payload into its offload header and packet; ok is
// false when it has no packet after the header. Nothing is checked against
// the packet: core/gso.Check does that before the packet is used.
func ParseGSO(payload []byte) (o gso.Options, p []byte, ok bool) {
	if len(payload) <= GSOHeaderLen {
		return gso.Options{}, nil, false
	}
	o = gso.Options{
		NeedsCsum:  payload[0]&gsoFlagNeedsCsum != 0,
		Type:       payload[1],
		Size:       binary.BigEndian.Uint16(payload[4:]),
		CsumStart:  binary.BigEndian.Uint16(payload[6:]),
		CsumOffset: binary.BigEndian.Uint16(payload[8:]),
	}
	return o, payload[GSOHeaderLen:], true
}
