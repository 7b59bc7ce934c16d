package engine

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/mirage-vpn/mirage/core/gso"
	"github.com/mirage-vpn/mirage/core/tundev"
	"github.com/mirage-vpn/mirage/core/wire"
)

// Super-packets over stream transports.
//
// A Linux TUN with offloads hands over a TCP (or UDP) super-packet of up to
// 64 KiB with a virtio_net_hdr, and takes one the same way. Over tcp-tls and
// REALITY the outer TCP cuts the byte stream into segments anyway, so such a
// packet travels whole in one GSO frame when the peer said it accepts them
// (wire.CapGSO): no split and no checksums in user space at the sender, no
// coalescing at the receiver, ~45× fewer frames. Where it cannot go whole
// (a peer without the capability, a QUIC datagram, round_robin's numbered
// packets, a packet over wire.MaxGSOPacket) a Splitter cuts it into
// MTU-sized packets as the kernel would have.

// maxSegments bounds the segments of one super-packet a Splitter cuts
// (the kernel's UDP GSO limit is 128; TCP's depends on the MSS).
const maxSegments = 1024

// Splitter cuts super-packets into packets, reusing its memory. Not safe
// for concurrent use.
type Splitter struct {
	slab  []byte
	bufs  [][]byte
	sizes []int
}

// Split cuts p (offload header o) into segments, available through Seg
// until the next call, and returns how many there are.
func (sp *Splitter) Split(p []byte, o gso.Options) (int, error) {
	hdrLen, err := gso.Check(p, o)
	if err != nil {
		return 0, err
	}
	n, segLen := 1, len(p)
	if o.Type != gso.TypeNone {
		if len(p) < hdrLen {
			return 0, errors.New("gso: packet shorter than its headers")
		}
		n = max((len(p)-hdrLen+int(o.Size)-1)/int(o.Size), 1)
		segLen = hdrLen + int(o.Size)
	}
	if n > maxSegments {
		return 0, fmt.Errorf("gso: %d segments of %d bytes (at most %d)", n, o.Size, maxSegments)
	}
	if need := n * segLen; cap(sp.slab) < need {
		sp.slab = make([]byte, need)
	}
	if cap(sp.bufs) < n {
		sp.bufs = make([][]byte, n)
		sp.sizes = make([]int, n)
	}
	sp.bufs = sp.bufs[:n]
	for i := range sp.bufs {
		sp.bufs[i] = sp.slab[i*segLen : (i+1)*segLen]
	}
	return gso.Split(p, o, sp.bufs, sp.sizes[:n], 0)
}

// Seg returns segment i of the last Split.
func (sp *Splitter) Seg(i int) []byte { return sp.bufs[i][:sp.sizes[i]] }

// IsSuper reports whether a packet read with its offload header needs the
// header: segmentation or a partial checksum to complete. Other packets are
// plain and go as DATA.
func IsSuper(o gso.Options) bool { return o.Type != gso.TypeNone || o.NeedsCsum }

// CanSendWhole reports whether a super-packet p can go to a peer in one GSO
// frame: the peer accepts them, the connection is a byte stream and the
// packet fits the frame.
func CanSendWhole(peerGSO bool, transport string, p []byte) bool {
	return peerGSO && transport != "quic" && len(p) <= wire.MaxGSOPacket
}

// WriteGSO delivers the packet of a GSO frame to dev: whole through a
// SuperDevice (the frame's own header bytes become the virtio_net_hdr, no
// copy), else cut into b by sp. Packets already in b are written first, so
// order is kept; a super-packet the device refuses is cut too. A header
// that does not match the packet is an error and the packet is dropped.
func WriteGSO(dev tundev.Device, b *Batch, sp *Splitter, payload []byte, o gso.Options) error {
	p := payload[wire.GSOHeaderLen:]
	if sd := tundev.Super(dev); sd != nil {
		hdrLen, err := gso.Check(p, o)
		if err != nil {
			return err
		}
		if b.Len() > 0 {
			if err := b.Flush(dev); err != nil {
				return err
			}
		}
		err = sd.WriteSuper(payload, wire.GSOHeaderLen, o, hdrLen)
		if err == nil || errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) {
			return err
		}
		// The kernel refused it (an older kernel without UDP segmentation
		// on TUN writes, say): cut it here instead.
	}
	n, err := sp.Split(p, o)
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		if b.Full() {
			if err := b.Flush(dev); err != nil {
				return err
			}
		}
		b.Add(sp.Seg(i))
	}
	return nil
}

// A GSO frame's header is rewritten in place into the device's header.
var _ [0]struct{} = [wire.GSOHeaderLen - tundev.VnetHdrLen]struct{}{}
