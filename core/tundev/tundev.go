// Package tundev declares the batched TUN device the engine pumps. It has the
// shape of golang.zx2c4.com/wireguard/tun.Device (minus Events), so the
// platform's real devices satisfy it and tests can use channel fakes.
package tundev

import "github.com/mirage-vpn/mirage/core/gso"

// Offset is the headroom every buffer handed to Read/Write must have in front
// of the IP packet (virtio-net header on Linux, AF header on BSDs).
const Offset = 16

// MaxPacket is the largest IP packet carried.
const MaxPacket = 65535

// Device is a batched layer-3 device.
type Device interface {
	// Read reads up to len(bufs) packets; packet i is bufs[i][offset:offset+sizes[i]].
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)
	// Write writes packets bufs[i][offset:]. The return value is not a packet count.
	Write(bufs [][]byte, offset int) (int, error)
	MTU() (int, error)
	Name() (string, error)
	BatchSize() int
	Close() error
}

// Multi is a device with several queues (Linux IFF_MULTI_QUEUE). Each queue
// is a Device read and written on its own, so one goroutine per queue pumps
// in parallel; the device itself (Read, Write) is its first queue. The kernel
// hands all packets of a flow to one queue, so a flow's order is kept within
// that queue's reader. Every queue must be read: what the kernel puts in a
// queue nobody reads is lost.
type Multi interface {
	Device
	Queues() []Device
}

// Queues returns d's queues: all of them if d is a Multi, else d alone.
func Queues(d Device) []Device {
	if m, ok := d.(Multi); ok {
		if q := m.Queues(); len(q) > 0 {
			return q
		}
	}
	return []Device{d}
}

// VnetHdrLen is the size of Linux's virtio_net_hdr, the offload header a
// SuperDevice reads and writes in front of each packet (within Offset).
const VnetHdrLen = 10

// SuperDevice is a device that can hand over and take GSO super-packets
// whole (a Linux TUN with IFF_VNET_HDR and offloads), so a stream transport
// can carry them without splitting them into MTU-sized packets and
// coalescing them again. The read and write sides are used by one goroutine
// each per queue, like Read and Write.
type SuperDevice interface {
	Device
	// CanSuper reports whether the device really has offloads (a TUN whose
	// kernel refused them is a SuperDevice by type only).
	CanSuper() bool
	// ReadSuper reads one packet into buf[offset:] without splitting it
	// and returns its length and offload header (Type gso.TypeNone and no
	// NeedsCsum for a plain packet). buf[offset-VnetHdrLen:offset] is
	// overwritten.
	ReadSuper(buf []byte, offset int) (int, gso.Options, error)
	// WriteSuper writes packet p = buf[offset:] with offload header o and
	// header length hdrLen (from gso.Check), which it puts into
	// buf[offset-VnetHdrLen:offset]. The kernel completes the checksum and
	// segments as needed.
	WriteSuper(buf []byte, offset int, o gso.Options, hdrLen int) error
}

// Super returns d as a SuperDevice when it can read and write super-packets,
// else nil.
func Super(d Device) SuperDevice {
	if s, ok := d.(SuperDevice); ok && s.CanSuper() {
		return s
	}
	return nil
}
