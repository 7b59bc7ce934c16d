package quictun

import (
	"bytes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"math"
	mrand "math/rand/v2"
	"net"
	"time"

	"github.com/mirage-vpn/mirage/core/fec"
)

// receive handles one datagram from addr, with its control messages oob:
// a plain packet is ready at once, a protected one goes through the peer's
// decoder and hold. b and oob are read buffers that the caller does not
// read into again until every ready packet has been handed out.
func (c *PathFEC) receive(b []byte, addr net.Addr, oob []byte, now time.Time) {
	blk := c.block.Load()
	ap, ok := addrPort(addr)
	if blk == nil || !ok || len(b) < pathMinPacket+pathTrailerLen || b[0]&0x80 != 0 {
		c.plain(b, addr, oob)
		return
	}
	n := len(b) - pathTrailerLen
	tr := b[n:]
	// A parity packet's sample is its (encrypted) body, a data packet's
	// its ciphertext: both start after the connection ID.
	m := c.mask(*blk, b[pathHeaderLen:])
	if subtle.ConstantTimeCompare(tr[fec.HeaderLen+1:], m[fec.HeaderLen+1:pathTrailerLen]) != 1 {
		c.plain(b, addr, oob)
		return
	}
	p := c.peer(ap, true, now)
	if p == nil {
		return // too many peers: dropped like a lost packet
	}
	p.rmu.Lock()
	defer p.rmu.Unlock()
	p.framedAt = now
	if !bytes.Equal(p.oob, oob) {
		p.oob = bytes.Clone(oob)
	}
	var hdr [fec.HeaderLen]byte
	for i := range hdr {
		hdr[i] = tr[i] ^ m[i]
	}
	p.takeReport(tr[fec.HeaderLen] ^ m[fec.HeaderLen])
	padded := hdr[4]&pathPadded != 0
	hdr[4] &^= pathPadded
	group := uint32(hdr[0])<<24 | uint32(hdr[1])<<16 | uint32(hdr[2])<<8 | uint32(hdr[3])
	index, k, mm := int(hdr[4]), int(hdr[5]), int(hdr[6])
	copy(p.rdcid[:], b[1:pathHeaderLen])
	p.noteCID(group, p.rdcid)
	p.shard = append(p.shard[:0], hdr[:]...)
	if index < k {
		if padded {
			if n -= pathPad; n < pathMinPacket {
				return // only a broken sender pads a short packet
			}
		}
		p.shard = append(append(p.shard, b[0]), b[pathHeaderLen:n]...)
	} else {
		body := b[pathHeaderLen:n]
		start := len(p.shard)
		p.shard = append(p.shard, body...)
		parityStream(*blk, hdr).XORKeyStream(p.shard[start:], body)
	}
	p.hold.learn(group, index, k, mm)
	// Every packet out gets is this datagram's (the read buffer, which
	// lasts until the queue is empty), rebuilt (new) or held (a copy).
	out := func(pkt []byte) { c.ready = append(c.ready, readyPkt{p: pkt, addr: addr, oob: p.oob}) }
	// A malformed shard is counted by the decoder and dropped.
	p.dec.ReceiveAt(p.shard, now, func(g uint32, i int, shard []byte) {
		var pkt []byte
		if index < k && len(shard) > 0 && &shard[0] == &p.shard[fec.HeaderLen] {
			pkt = b[:n]
		} else { // rebuilt: its group's connection ID goes back in
			cid := p.groupCID(g)
			pkt = make([]byte, 0, len(shard)+ConnectionIDLength)
			pkt = append(append(append(pkt, shard[0]), cid[:]...), shard[1:]...)
		}
		p.hold.offer(pos{g, i}, pkt, now, out)
	})
	if len(p.hold.held) > 0 {
		c.holding[p] = struct{}{}
	}
}

// groupCID is the connection ID the packets of one group carry.
type groupCID struct {
	group uint32
	ok    bool
	cid   [ConnectionIDLength]byte
}

// noteCID records the connection ID of a packet of group (data or
// parity: the sender keeps one per group). p.rmu is held.
func (p *pathPeer) noteCID(group uint32, cid [ConnectionIDLength]byte) {
	p.gcids[group%pathWindow] = groupCID{group: group, ok: true, cid: cid}
}

// groupCID returns the connection ID to rebuild a packet of group with:
// the group's own (quic-go moves to new connection IDs during a
// connection, and the ID is part of the packet's authenticated data), or
// the last one seen if the group's was not kept. p.rmu is held.
func (p *pathPeer) groupCID(group uint32) [ConnectionIDLength]byte {
	if g := p.gcids[group%pathWindow]; g.ok && g.group == group {
		return g.cid
	}
	return p.rdcid
}

// takeReport records the loss the peer reports on our packets.
func (p *pathPeer) takeReport(q byte) {
	if q != lossUnknown {
		p.report.Store(int32(q))
	}
}

// reported is the loss the peer last reported (-1: none yet).
func (p *pathPeer) reported() float64 {
	q := p.report.Load()
	if q < 0 {
		return -1
	}
	return float64(q) / 1000
}

// plain queues a packet that is not protected. b and oob are the read
// buffers, which are not read into again until the queue is empty.
func (c *PathFEC) plain(b []byte, addr net.Addr, oob []byte) {
	c.ready = append(c.ready, readyPkt{p: b, addr: addr, oob: oob})
}

// parityStream is the keystream that encrypts a parity body: AES-CTR under
// the key with the shard header as IV.
func parityStream(blk cipher.Block, hdr [fec.HeaderLen]byte) cipher.Stream {
	var iv [16]byte
	copy(iv[:], hdr[:])
	iv[15] = 'P'
	return cipher.NewCTR(blk, iv[:])
}

// WriteTo sends a packet of quic-go's: protected when this end frames to
// addr, plain otherwise.
func (c *PathFEC) WriteTo(b []byte, addr net.Addr) (int, error) {
	p := c.sendPeer(addr)
	if p == nil || !protectable(b) {
		return c.pc.WriteTo(b, addr)
	}
	p.smu.Lock()
	defer p.smu.Unlock()
	if err := c.protect(p, b, addr, c.sender(addr)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// sender sends each packet to addr on its own.
func (c *PathFEC) sender(addr net.Addr) func([]byte) error {
	return func(pkt []byte) error {
		_, err := c.pc.WriteTo(pkt, addr)
		return err
	}
}

// protectable reports whether a packet of quic-go's gets protected: short
// header packets long enough for a sample. Long-header packets (the
// handshake) pass unchanged.
func protectable(b []byte) bool {
	return len(b) >= pathMinPacket && len(b) <= InitialPacketSize && b[0]&0x80 == 0
}

// protect passes b with its trailer to send, then the parity packets it
// completed; b goes out plain if the encoder cannot take it. p.smu is held.
func (c *PathFEC) protect(p *pathPeer, b []byte, addr net.Addr, send func([]byte) error) error {
	blk := *c.block.Load()
	now := time.Now()
	if p.enc == nil {
		enc, err := newPathEncoder(*c.cfg.Load())
		if err != nil {
			return send(b)
		}
		p.enc = enc
	}
	p.adapt(c.cfg.Load(), now)
	var werr error
	if p.enc.Pending() > 0 && !bytes.Equal(p.dcid[:], b[1:pathHeaderLen]) {
		// quic-go moved to another connection ID: the group closes, so
		// that all its packets (and its parity, which carries the ID)
		// have one ID for the receiver to rebuild them with.
		p.enc.Flush(func(shard []byte) {
			if err := c.emit(p, blk, shard, nil, send); err != nil && werr == nil {
				werr = err
			}
		})
	}
	copy(p.dcid[:], b[1:pathHeaderLen])
	emit := func(shard []byte) {
		if err := c.emit(p, blk, shard, b, send); err != nil && werr == nil {
			werr = err
		}
	}
	// The shard leaves out the connection ID (see pathPad).
	p.strip = append(append(p.strip[:0], b[0]), b[pathHeaderLen:]...)
	if err := p.enc.Add(p.strip, emit); err != nil {
		return send(b)
	}
	if p.enc.Pending() == 1 { // a new group: bound its wait for parity
		p.gen++
		gen := p.gen
		if p.timer != nil {
			p.timer.Stop()
		}
		p.timer = time.AfterFunc(pathFlushWait, func() { c.flush(p, gen, addr) })
	}
	return werr
}

// sendPeer returns the peer state for addr when this end frames to it.
func (c *PathFEC) sendPeer(addr net.Addr) *pathPeer {
	if c.cfg.Load() == nil || c.block.Load() == nil {
		return nil
	}
	ap, ok := addrPort(addr)
	if !ok {
		return nil
	}
	now := time.Now()
	if !c.respond {
		return c.peer(ap, true, now)
	}
	p := c.peer(ap, false, now)
	if p == nil {
		return nil
	}
	p.rmu.Lock()
	recent := now.Sub(p.framedAt) < pathPeerIdle
	p.rmu.Unlock()
	if !recent {
		return nil
	}
	return p
}

// flush closes the group gen if it is still open.
func (c *PathFEC) flush(p *pathPeer, gen uint64, addr net.Addr) {
	blk := c.block.Load()
	p.smu.Lock()
	defer p.smu.Unlock()
	if p.gen != gen || p.enc.Pending() == 0 || blk == nil {
		return
	}
	p.enc.Flush(func(shard []byte) { c.emit(p, *blk, shard, nil, c.sender(addr)) })
}

// adapt sets the group shape from the peer's loss report (auto only);
// p.smu is held.
func (p *pathPeer) adapt(cfg *fec.Config, now time.Time) {
	loss := p.reported()
	if cfg == nil || !cfg.Auto() || now.Before(p.nextAdapt) || loss < 0 {
		return
	}
	p.nextAdapt = now.Add(250 * time.Millisecond)
	k, m := fec.Choose(loss)
	p.enc.SetParams(k, m)
}

// emit passes one shard, made a packet, to send: a data shard as pkt, the
// packet it was made from, a parity shard as a packet of its own. p.smu is
// held.
func (c *PathFEC) emit(p *pathPeer, blk cipher.Block, shard, pkt []byte, send func([]byte) error) error {
	var hdr [fec.HeaderLen]byte
	copy(hdr[:], shard)
	body := shard[fec.HeaderLen:]
	isData := hdr[4] < hdr[5]
	w := p.wbuf[:0]
	if isData {
		w = append(w, pkt...)
		if len(pkt) >= pathPadMin {
			var fill [8]byte
			binary.LittleEndian.PutUint64(fill[:], mrand.Uint64())
			w = append(w, fill[:pathPad]...)
		}
	} else {
		w = append(w, 0x40|byte(mrand.Uint32())&0x1f)
		w = append(w, p.dcid[:]...)
		start := len(w)
		w = append(w, body...)
		parityStream(blk, hdr).XORKeyStream(w[start:], body)
	}
	m := c.mask(blk, w[pathHeaderLen:])
	if isData && len(pkt) >= pathPadMin {
		hdr[4] |= pathPadded
	}
	for i := range hdr {
		w = append(w, hdr[i]^m[i])
	}
	w = append(w, c.lossReport(p)^m[fec.HeaderLen])
	w = append(w, m[fec.HeaderLen+1:pathTrailerLen]...)
	p.wbuf = w
	if err := send(w); err != nil {
		return err
	}
	if isData {
		p.dataSent++
	} else {
		p.paritySent++
	}
	return nil
}

// lossReport is the loss this end measures on p's shards, in 0.1 % units:
// the cautious estimate (fec.Decoder.CautiousLoss), rounded down, so a
// clean link reads 0 (no parity) once it is under 0.1 %.
func (c *PathFEC) lossReport(p *pathPeer) byte {
	p.rmu.Lock()
	defer p.rmu.Unlock()
	if p.dec == nil || p.dec.Stats().GroupsClosed < 8 {
		return lossUnknown
	}
	return byte(min(math.Floor(p.dec.CautiousLoss()*1000), lossUnknown-1))
}
