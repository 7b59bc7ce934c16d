package quictun

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/mirage-vpn/mirage/core/fec"
	"github.com/mirage-vpn/mirage/core/wire"
)

// Forward error correction on the datagram path (package fec). When both
// ends announced wire.CapFEC, each end sends its IP packets as FEC data
// shards (datagrams of type wire.TypeFEC: the shard's 7-byte header, then
// the packet) and, after every group, parity shards that let the other end
// rebuild lost packets before the inner TCP notices them. Receiving needs
// no set-up: a Conn decodes FEC frames whenever they arrive.
//
// With fec = "auto" the sender picks the group shape from the loss QUIC
// itself measures on the path (quic-go's lost / sent packet counters,
// averaged over about a second): no parity on a clean link, more as the
// loss grows (fec.Choose). A group that does not fill is closed after an
// eighth of the smoothed RTT (2-20 ms), so parity for a slow flow is never
// far behind its packets.

// FECOverhead is how many bytes more than the packet the largest FEC
// datagram of a group needs (shard header, and the length and CRC a parity
// body covers); the client lowers its TUN MTU by it when it may use FEC.
const FECOverhead = fec.HeaderLen + 6

// fecPad is the zero padding after a large data shard's packet: with it a
// full-size packet's data shard is exactly as long as its group's parity
// (FECOverhead more than the packet), so the tunnel's full-size packets
// stay full-size QUIC packets, which quic-go sends in GSO batches; a
// shorter packet ends a batch. The receiver trims it by the IP header's
// length before decoding. Packets under fecPadMin are not padded.
const (
	fecPad    = FECOverhead - fec.HeaderLen
	fecPadMin = 1200
)

// autoStartLoss is the loss fec = "auto" assumes before it has measured.
const autoStartLoss = 0.01

// fecMaxPacket is the longest packet the decoder accepts in a data shard:
// more than any datagram carries.
const fecMaxPacket = 1500

// fecSend is the sending half; under Conn.wmu.
type fecSend struct {
	enc  *fec.Encoder
	auto bool
	// gen counts the groups opened, so a flush timer only closes the group
	// it was started for.
	gen   uint64
	timer *time.Timer
	wait  time.Duration
	err   error // first send error of the current Add or Flush

	nextAdapt          time.Time
	lastSent, lastLost uint64
	loss               float64

	dataSent, paritySent uint64
}

// fecRecv is the receiving half; its decoder is made on the first FEC
// frame.
type fecRecv struct {
	mu  sync.Mutex
	dec *fec.Decoder
	out []item // packets the current frame yielded, queued after unlocking
}

// EnableFEC makes this end send its packets with FEC: call it once the
// peer announced wire.CapFEC.
func (c *Conn) EnableFEC(cfg fec.Config) error {
	// Auto starts as for 1 % loss until QUIC has measured the path (a
	// quarter second and 200 packets): a lossy link is protected from the
	// first packet, a clean one drops the parity within about a second.
	k, m := fec.Choose(autoStartLoss)
	if !cfg.Auto() {
		k, m = cfg.K, cfg.M
	}
	enc, err := fec.NewEncoder(k, m, fecMaxPacket)
	if err != nil {
		return fmt.Errorf("fec: %w", err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.fs = &fecSend{enc: enc, auto: cfg.Auto(), wait: 5 * time.Millisecond}
	if cfg.Auto() {
		c.fs.loss = autoStartLoss
	}
	return nil
}

// EnablePathFEC makes this end protect the QUIC packets it sends (path
// FEC, see PathFEC) with key, the server's wire.Welcome.PathFECKey: call
// it once the peer announced wire.CapPathFEC. The connection must have
// been dialed with ClientOptions.PathFEC.
func (c *Conn) EnablePathFEC(cfg fec.Config, key []byte) error {
	pf, ok := c.pf.(*PathFEC)
	if !ok {
		return errors.New("path fec: the connection was not dialed with path FEC")
	}
	return pf.Start(cfg, key)
}

// FEC returns the counters of the connection's forward error correction:
// the path FEC's with this peer when there is one, otherwise the datagram
// FEC's.
func (c *Conn) FEC() fec.ConnStats {
	if c.pf != nil && c.qc != nil {
		if st, ok := c.pf.Stats(c.qc.RemoteAddr()); ok && (st.Sending || st.Recv.Shards > 0) {
			return st
		}
	}
	var st fec.ConnStats
	c.wmu.Lock()
	if fs := c.fs; fs != nil {
		st.Sending = true
		st.K, st.M = fs.enc.Params()
		st.SendLoss = fs.loss
		st.DataSent, st.ParitySent = fs.dataSent, fs.paritySent
	}
	c.wmu.Unlock()
	c.fr.mu.Lock()
	if c.fr.dec != nil {
		st.Recv = c.fr.dec.Stats()
	}
	c.fr.mu.Unlock()
	return st
}

// sendFEC sends packet p as a data shard, and parity when its group is
// complete. It reports false when p must go unprotected (too large for a
// shard of this path). The caller holds wmu.
func (c *Conn) sendFEC(p []byte) (bool, error) {
	fs := c.fs
	if len(p) == 0 || len(p) > fecMaxPacket || 1+FECOverhead+len(p) > c.maxDG {
		return false, nil
	}
	now := time.Now()
	if fs.auto && !now.Before(fs.nextAdapt) {
		c.adaptFEC(now)
	}
	fs.err = nil
	if err := fs.enc.Add(p, c.emitShard); err != nil {
		if errors.Is(err, fec.ErrTooLarge) || errors.Is(err, fec.ErrEmpty) {
			return false, nil
		}
		return false, err
	}
	switch fs.enc.Pending() {
	case 0: // the group completed
	case 1: // a new group: bound its wait for parity
		fs.gen++
		gen := fs.gen
		if fs.timer != nil {
			fs.timer.Stop()
		}
		fs.timer = time.AfterFunc(fs.wait, func() { c.flushFEC(gen) })
	}
	return true, fs.err
}

// flushFEC closes the group gen if it is still open.
func (c *Conn) flushFEC(gen uint64) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	fs := c.fs
	if fs == nil || fs.gen != gen || fs.enc.Pending() == 0 {
		return
	}
	select {
	case <-c.closed:
		return
	default:
	}
	fs.enc.Flush(c.emitShard)
}

// emitShard sends one shard as a datagram. A shard the path cannot carry
// any more (its datagram limit shrank below what sendFEC checked) is
// dropped like a datagram lost on the wire. The caller holds wmu.
func (c *Conn) emitShard(shard []byte) {
	fs := c.fs
	isData := len(shard) >= fec.HeaderLen && shard[4] < shard[5]
	pad := 0
	if isData && len(shard)-fec.HeaderLen >= fecPadMin {
		pad = fecPad
	}
	c.dg = append(append(append(c.dg[:0], c.prefix...), byte(wire.TypeFEC)), shard...)
	c.dg = append(c.dg, make([]byte, pad)...)
	err := c.dgs.SendDatagram(c.dg)
	var tooLarge *quic.DatagramTooLargeError
	switch {
	case err == nil:
		if isData {
			fs.dataSent++
		} else {
			fs.paritySent++
		}
	case errors.As(err, &tooLarge):
		// Lost like a datagram on the wire (parity may still rebuild it).
		c.maxDG = int(tooLarge.MaxDatagramPayloadSize) - len(c.prefix)
	default:
		if fs.err == nil {
			fs.err = fmt.Errorf("quic conn: send FEC datagram: %w", err)
		}
	}
}

// adaptFEC sets the group shape from the loss quic-go measured on this
// path since the last look, and the flush wait from the RTT.
func (c *Conn) adaptFEC(now time.Time) {
	fs := c.fs
	fs.nextAdapt = now.Add(250 * time.Millisecond)
	if c.qc == nil {
		return
	}
	st := c.qc.ConnectionStats()
	if srtt := st.SmoothedRTT; srtt > 0 {
		fs.wait = min(max(srtt/8, 2*time.Millisecond), 20*time.Millisecond)
	}
	sent, lost := st.PacketsSent-fs.lastSent, st.PacketsLost-fs.lastLost
	if st.PacketsSent < fs.lastSent || sent < 200 {
		if st.PacketsSent < fs.lastSent {
			fs.lastSent, fs.lastLost = st.PacketsSent, st.PacketsLost
		}
		return // too few packets for a rate; keep counting
	}
	if st.PacketsLost < fs.lastLost { // lost packets that arrived after all
		lost = 0
	}
	fs.lastSent, fs.lastLost = st.PacketsSent, st.PacketsLost
	sample := float64(lost) / float64(sent)
	fs.loss = 0.5*fs.loss + 0.5*sample
	k, m := fec.Choose(fs.loss)
	fs.enc.SetParams(k, m)
}

// receiveFEC decodes one FEC frame, queueing the packets it yields as DATA
// frames. Only the datagram reader calls it.
func (c *Conn) receiveFEC(p []byte) bool {
	fr := &c.fr
	fr.mu.Lock()
	if fr.dec == nil {
		d, err := fec.NewDecoder(fec.DecoderOptions{Window: 32, MaxWait: 300 * time.Millisecond,
			MaxPacket: fecMaxPacket, MaxMemory: 4 << 20})
		if err != nil {
			fr.mu.Unlock()
			return true
		}
		fr.dec = d
	}
	fr.out = fr.out[:0]
	p = trimPadding(p)
	// A malformed frame is counted by the decoder and dropped; the
	// connection goes on.
	fr.dec.Receive(p, time.Now(), func(pkt []byte) {
		it := item{p: append([]byte(nil), pkt...)}
		wire.PutHeader(it.hdr[:], wire.TypeData, len(pkt))
		fr.out = append(fr.out, it)
	})
	out := fr.out
	fr.mu.Unlock()
	for i := range out {
		if !c.push(out[i]) {
			return false
		}
		out[i] = item{}
	}
	return true
}

// trimPadding removes the zero padding (fecPad) after a data shard's IP
// packet, found from the IP header's length. Anything else is returned
// unchanged, for the decoder to judge.
func trimPadding(shard []byte) []byte {
	if len(shard) < fec.HeaderLen+40 || shard[4] >= shard[5] { // parity, or too short to be padded
		return shard
	}
	body := shard[fec.HeaderLen:]
	var n int
	switch body[0] >> 4 {
	case 4:
		n = int(body[2])<<8 | int(body[3])
	case 6:
		n = 40 + (int(body[4])<<8 | int(body[5]))
	default:
		return shard
	}
	extra := len(body) - n
	if n < 20 || extra <= 0 || extra > fecPad {
		return shard
	}
	for _, b := range body[n:] {
		if b != 0 {
			return shard
		}
	}
	return shard[:fec.HeaderLen+n]
}
