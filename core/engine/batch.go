package engine

import (
	"github.com/mirage-vpn/mirage/core/tundev"
)

// maxWriteBatch bounds the per-connection TUN write batch (and its memory:
// each slot can hold a maximum-size packet so GRO can coalesce into it).
const maxWriteBatch = 32

// Batch collects packets for one tun Write call. Slots are full-size so the
// tun package's GRO coalescing has room to append to them.
type Batch struct {
	backing [][]byte
	bufs    [][]byte
	n       int
}

// NewBatch returns a Batch of at most size packets.
func NewBatch(size int) *Batch {
	if size < 1 {
		size = 1
	}
	if size > maxWriteBatch {
		size = maxWriteBatch
	}
	return &Batch{backing: make([][]byte, size), bufs: make([][]byte, size)}
}

// Full reports whether no more packets fit.
func (b *Batch) Full() bool { return b.n == len(b.bufs) }

// Len is the number of packets collected.
func (b *Batch) Len() int { return b.n }

// Add copies p into the next slot.
func (b *Batch) Add(p []byte) {
	if b.backing[b.n] == nil {
		b.backing[b.n] = make([]byte, tundev.Offset+tundev.MaxPacket)
	}
	buf := b.backing[b.n][:tundev.Offset+len(p)]
	copy(buf[tundev.Offset:], p)
	b.bufs[b.n] = buf
	b.n++
}

// Flush writes the collected packets to dev and empties the batch.
func (b *Batch) Flush(dev tundev.Device) error {
	n := b.n
	b.n = 0
	_, err := dev.Write(b.bufs[:n], tundev.Offset)
	return err
}

// FlowHash hashes the addresses, protocol and ports of an IP packet so all
// packets of one inner flow take the same connection (no reordering). FNV-1a
// over the fields, then a finalizer (murmur3's fmix32): without it the low
// bits, which pick the connection, were the parity of the input bytes, and
// Linux gives connect() even source ports, so the 16 streams of one
// iperf3 run to one server port all took the same connection.
func FlowHash(p []byte) uint32 {
	h := uint32(2166136261)
	mix := func(b []byte) {
		for _, c := range b {
			h ^= uint32(c)
			h *= 16777619
		}
	}
	if len(p) < 1 {
		return 0
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return 0
		}
		ihl := int(p[0]&0x0f) * 4
		mix(p[9:10])
		mix(p[12:20])
		if ihl >= 20 && len(p) >= ihl+4 {
			mix(p[ihl : ihl+4])
		}
	case 6:
		if len(p) < 44 {
			return 0
		}
		mix(p[6:7])
		mix(p[8:44])
	}
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}
