package quictun

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mirage-vpn/mirage/core/fec"
)

// Path FEC: forward error correction below QUIC.
//
// FEC inside QUIC datagrams (fec.go) rebuilds the inner packets, but
// quic-go still sees every lost QUIC packet, and its congestion control is
// loss-based (Cubic): at 1 % random loss on a 150 ms path its window stays
// at a few packets whatever the FEC does (docs/perf-wan.md). quic-go has no
// API to change that. Path FEC protects the QUIC packets themselves, in a
// socket wrapper between quic-go and the UDP socket (PathFEC): the sender
// groups its short-header packets per peer address and adds Reed-Solomon
// parity packets (package fec); the receiver rebuilds lost packets and
// hands quic-go every packet in the order it was sent (pathhold.go). quic-go
// then sees only the losses FEC could not repair, which on a random-loss
// path are rare, and fills the link as on a clean one; a full bottleneck
// queue still drops bursts that no group's parity covers, so congestion is
// still seen as loss.
//
// Wire format. Long-header packets (the handshake, which censors decrypt)
// and anything shorter than a sample pass unchanged. A protected packet is
// followed by a 12-byte trailer; a parity packet is made to look like a
// short-header packet:
//
//	data:   QUIC packet | filler (7, random; packets of 1200 bytes or more) | trailer
//	parity: 0x40|r (r random, 5 bits) | the peer's 20-byte connection ID
//	        (copied from the group's last packet) | parity body, encrypted |
//	        trailer
//	trailer: (fec shard header (7) | loss report (1)) XOR mask | tag (4)
//
// The code (package fec) runs over the packets without their connection
// ID (first byte | the rest), which the receiver puts back from the group's
// packets; a filled data packet has bit 7 of the header's index set. So a
// full-size data packet and its group's parity are the same length
// (pathPad).
//
// mask | tag are the first 12 bytes of AES-128(key, sample), sample being
// the 16 bytes after the connection ID: QUIC ciphertext for data, the
// encrypted parity body for parity, so trailers look random. The tag tells
// a protected packet from a plain one, which both kinds of peer may send at
// any time (a new path after port hopping, an old client). The parity body
// is encrypted with AES-CTR under the key, its IV the shard header, so a
// group of equal-length packets does not yield parity with constant bytes.
// The loss report is the fraction of this peer's shards the sender of the
// trailer missed, in units of 0.1 % (255: not measured yet): fec = "auto"
// chooses the group shape from it (fec.Choose). The key is the server's
// (wire.Welcome.PathFECKey); it hides structure from the path and is not a
// secret between clients.
const (
	pathTrailerLen = fec.HeaderLen + 1 + 4
	pathSampleLen  = 16
	// pathHeaderLen is the short header's fixed part a parity packet
	// imitates: the first byte and the connection ID.
	pathHeaderLen = 1 + ConnectionIDLength
	// pathMinPacket is the shortest packet that gets protected.
	pathMinPacket = pathHeaderLen + pathSampleLen
	// pathPad is the filler after a protected packet of pathPadMin bytes
	// or more, flagged by pathPadded in its shard header's index byte. A
	// shard leaves out the connection ID (the receiver knows it from any
	// packet of the group), so a parity packet is its longest packet + 1
	// (first byte) + 6 (the code's length and CRC) + trailer: the filler
	// makes a full-size data packet just as long, and a bulk transfer shows
	// one packet size, as plain QUIC does.
	pathPad    = 1 + 6
	pathPadMin = 1200
	pathPadded = 0x80
	// PathFECOverhead is how much longer than quic-go's packets the
	// largest protected datagram is (a full-size packet or parity).
	PathFECOverhead = pathPad + pathTrailerLen
	// pathFlushWait closes a group that did not fill, so parity for a slow
	// flow follows within this.
	pathFlushWait = 5 * time.Millisecond
	// pathMaxHold bounds how long a packet waits behind a hole.
	pathMaxHold = 20 * time.Millisecond
	// pathWindow is how many recent groups a receiver tracks (decoder
	// window, connection IDs).
	pathWindow = 32
	// pathPeerIdle: a peer from which no protected packet came for this
	// long gets plain packets again (server side) and is forgotten after
	// twice as long.
	pathPeerIdle = 30 * time.Second
	// pathMaxPeers bounds the peers tracked per socket.
	pathMaxPeers = 4096
	lossUnknown  = 0xff
)

// PathFEC is a UDP socket that protects the QUIC packets it carries (see
// above). Give it to quic.Transport as Conn. It is safe for concurrent use
// by quic-go's writers and its one reader.
type PathFEC struct {
	pc   net.PacketConn
	gate *Gate
	// respond: frame to a peer only while it frames to us (server);
	// otherwise frame to every peer once Start was called (client).
	respond bool

	block atomic.Pointer[cipher.Block] // nil until a key is set
	cfg   atomic.Pointer[fec.Config]   // how we send; nil: never frame

	mu    sync.Mutex
	peers map[netip.AddrPort]*pathPeer
	ended fec.ConnStats // counters of forgotten peers

	// Reader state (quic-go's reader goroutine only). ready[head:] wait
	// to be handed to quic-go.
	rbuf    []byte
	ready   []readyPkt
	head    int
	holding map[*pathPeer]struct{}
	timer   *time.Timer
	rdl     atomic.Int64 // the caller's read deadline (UnixNano; 0: none)
	setDL   time.Time    // the deadline last set on pc (reader only)
	dlDirty atomic.Bool  // the caller set a deadline since
}

type readyPkt struct {
	p    []byte
	addr net.Addr
	oob  []byte // the control messages it came with (packet info, ECN); shared, read-only
}

// pathPeer is the FEC state of one remote address. Lock order: smu before
// rmu.
type pathPeer struct {
	smu        sync.Mutex // sending half
	enc        *fec.Encoder
	gen        uint64
	timer      *time.Timer
	dcid       [ConnectionIDLength]byte
	strip      []byte // the packet without its connection ID, as the encoder takes it
	wbuf       []byte
	report     atomic.Int32 // loss the peer reports on what we send, 0.1 % units (-1: none yet)
	nextAdapt  time.Time
	dataSent   uint64
	paritySent uint64

	addr net.Addr
	// out and outLens collect the packets of one batched write
	// (pathfec_linux.go); under smu.
	out     []byte
	outLens []int

	rmu      sync.Mutex // receiving half
	oob      []byte     // control messages of its last packet; replaced, never modified
	dec      *fec.Decoder
	hold     pathHold
	shard    []byte
	rdcid    [ConnectionIDLength]byte // connection ID of the last protected packet
	gcids    [pathWindow]groupCID     // connection IDs of recent groups, by group % pathWindow
	framedAt time.Time
}

// NewClientPathFEC wraps a client's UDP socket; it sends plain packets
// until Start.
func NewClientPathFEC(pc net.PacketConn, g *Gate) *PathFEC {
	return newPathFEC(pc, g, false)
}

// NewServerPathFEC wraps a server's UDP socket: it decodes protected
// packets under key and answers a peer that sends them with protected
// packets shaped by cfg.
func NewServerPathFEC(pc net.PacketConn, g *Gate, key [16]byte, cfg fec.Config) (*PathFEC, error) {
	c := newPathFEC(pc, g, true)
	if err := c.Start(cfg, key[:]); err != nil {
		return nil, err
	}
	return c, nil
}

func newPathFEC(pc net.PacketConn, g *Gate, respond bool) *PathFEC {
	if uc, ok := pc.(*net.UDPConn); ok {
		// What quic-go asks for on a socket it can tune; this one it
		// cannot see through.
		uc.SetReadBuffer(7 << 20)
		uc.SetWriteBuffer(7 << 20)
	}
	return &PathFEC{
		pc: pc, gate: g, respond: respond,
		peers: make(map[netip.AddrPort]*pathPeer), holding: make(map[*pathPeer]struct{}),
		rbuf: make([]byte, 1<<16),
	}
}

// NewPathFECKey returns a random key for NewServerPathFEC.
func NewPathFECKey() (k [16]byte) {
	rand.Read(k[:])
	return k
}

// Start sets the key and the sending shape. A client calls it once the
// server's Welcome agreed to path FEC.
func (c *PathFEC) Start(cfg fec.Config, key []byte) error {
	if _, err := newPathEncoder(cfg); err != nil {
		return err
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return fmt.Errorf("path fec key: %w", err)
	}
	c.block.Store(&b)
	c.cfg.Store(&cfg)
	return nil
}

func newPathEncoder(cfg fec.Config) (*fec.Encoder, error) {
	k, m := fec.Choose(autoStartLoss)
	if !cfg.Auto() {
		k, m = cfg.K, cfg.M
	}
	enc, err := fec.NewEncoder(k, m, InitialPacketSize)
	if err != nil {
		return nil, fmt.Errorf("path fec: %w", err)
	}
	return enc, nil
}

// Stats returns the counters of the FEC with addr's peer.
func (c *PathFEC) Stats(addr net.Addr) (fec.ConnStats, bool) {
	ap, ok := addrPort(addr)
	if !ok {
		return fec.ConnStats{}, false
	}
	c.mu.Lock()
	p := c.peers[ap]
	c.mu.Unlock()
	if p == nil {
		return fec.ConnStats{}, false
	}
	return p.stats(), true
}

// Totals sums the counters of every peer, present and forgotten.
func (c *PathFEC) Totals() fec.ConnStats {
	c.mu.Lock()
	t := c.ended
	ps := make([]*pathPeer, 0, len(c.peers))
	for _, p := range c.peers {
		ps = append(ps, p)
	}
	c.mu.Unlock()
	for _, p := range ps {
		addStats(&t, p.stats())
	}
	return t
}

// pathStater is what a Conn asks of the path FEC below it.
type pathStater interface {
	Stats(addr net.Addr) (fec.ConnStats, bool)
}

// PathFECs are the path FEC wrappers of a server's sockets: with port
// hopping one client's packets arrive on several.
type PathFECs []*PathFEC

// Stats sums the counters of addr's peer over the sockets.
func (cs PathFECs) Stats(addr net.Addr) (fec.ConnStats, bool) {
	var t fec.ConnStats
	found := false
	for _, c := range cs {
		if st, ok := c.Stats(addr); ok {
			if !found {
				t.K, t.M, t.SendLoss = st.K, st.M, st.SendLoss
			}
			addStats(&t, st)
			found = true
		}
	}
	return t, found
}

func addStats(t *fec.ConnStats, s fec.ConnStats) {
	t.Sending = t.Sending || s.Sending
	t.DataSent += s.DataSent
	t.ParitySent += s.ParitySent
	r := &t.Recv
	r.Shards += s.Recv.Shards
	r.Data += s.Recv.Data
	r.Parity += s.Recv.Parity
	r.Delivered += s.Recv.Delivered
	r.Recovered += s.Recv.Recovered
	r.Unrecoverable += s.Recv.Unrecoverable
	r.Malformed += s.Recv.Malformed
	r.Duplicates += s.Recv.Duplicates
	r.Corrupt += s.Recv.Corrupt
	r.Late += s.Recv.Late
	r.Stale += s.Recv.Stale
}

func (p *pathPeer) stats() fec.ConnStats {
	var st fec.ConnStats
	p.smu.Lock()
	if p.enc != nil {
		st.Sending = p.dataSent > 0
		st.K, st.M = p.enc.Params()
		st.SendLoss = max(p.reported(), 0)
		st.DataSent, st.ParitySent = p.dataSent, p.paritySent
	}
	p.smu.Unlock()
	p.rmu.Lock()
	if p.dec != nil {
		st.Recv = p.dec.Stats()
	}
	p.rmu.Unlock()
	return st
}

// addrPort is a peer's key. An IPv4 address may come in its 4-byte or its
// IPv4-mapped 16-byte form (quic-go's dial address, a batch read on an
// IPv4 socket, a dual-stack socket): both are one peer, or the loss reports
// of one half never reach the other.
func addrPort(a net.Addr) (netip.AddrPort, bool) {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// peer returns addr's state, creating it when create is set.
func (c *PathFEC) peer(ap netip.AddrPort, create bool, now time.Time) *pathPeer {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.peers[ap]
	if p != nil || !create {
		return p
	}
	if len(c.peers) >= pathMaxPeers {
		c.forget(now)
		if len(c.peers) >= pathMaxPeers {
			return nil
		}
	}
	dec, err := fec.NewDecoder(fec.DecoderOptions{Window: pathWindow, MaxWait: 300 * time.Millisecond,
		MaxPacket: InitialPacketSize, MaxMemory: 1 << 20})
	if err != nil {
		return nil
	}
	p = &pathPeer{dec: dec, framedAt: now, addr: net.UDPAddrFromAddrPort(ap)}
	p.report.Store(-1)
	p.hold.maxHold = pathMaxHold
	c.peers[ap] = p
	return p
}

// forget drops peers idle for 2·pathPeerIdle; c.mu is held.
func (c *PathFEC) forget(now time.Time) {
	for ap, p := range c.peers {
		p.rmu.Lock()
		idle := now.Sub(p.framedAt) > 2*pathPeerIdle && len(p.hold.held) == 0
		p.rmu.Unlock()
		if idle {
			addStats(&c.ended, p.stats())
			delete(c.peers, ap)
		}
	}
}

// mask computes mask | tag for the sample at b.
func (c *PathFEC) mask(blk cipher.Block, sample []byte) (out [16]byte) {
	blk.Encrypt(out[:], sample[:pathSampleLen])
	return out
}

// ReadFrom returns the next packet for quic-go: plain ones as they come,
// protected ones (and rebuilt ones) in their sender's order.
func (c *PathFEC) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		if r, ok := c.next(); ok {
			if len(r.p) >= minDatagramPacket && c.gate != nil {
				c.gate.wait(&c.timer)
				c.gate.handedOut(1)
			}
			return copy(b, r.p), r.addr, nil
		}
		if err := c.prepareRead(); err != nil {
			return 0, nil, err
		}
		if len(c.ready) > 0 {
			continue
		}
		n, addr, err := c.pc.ReadFrom(c.rbuf)
		if err != nil {
			if c.holdTimeout(err) {
				continue
			}
			return 0, nil, err
		}
		c.receive(c.rbuf[:n], addr, nil, time.Now())
	}
}

// next takes the next packet ready for quic-go.
func (c *PathFEC) next() (readyPkt, bool) {
	if c.head >= len(c.ready) {
		clear(c.ready)
		c.ready, c.head = c.ready[:0], 0
		return readyPkt{}, false
	}
	r := c.ready[c.head]
	c.head++
	return r, true
}

// prepareRead releases the held packets that waited too long and, if none
// is ready, arms the socket's read deadline for the next hold's.
func (c *PathFEC) prepareRead() error {
	now := time.Now()
	c.expire(now)
	if len(c.ready) > c.head {
		return nil
	}
	return c.armDeadline(now)
}

// holdTimeout reports whether a read error is only a hold's deadline.
func (c *PathFEC) holdTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && !c.userDeadlinePassed()
}

// expire releases the packets that waited too long.
func (c *PathFEC) expire(now time.Time) {
	for p := range c.holding {
		p.rmu.Lock()
		p.hold.expire(now, func(b []byte) { c.ready = append(c.ready, readyPkt{p: b, addr: p.addr, oob: p.oob}) })
		if len(p.hold.held) == 0 {
			delete(c.holding, p)
		}
		p.rmu.Unlock()
	}
}

// armDeadline sets pc's read deadline to the earlier of the caller's and
// the next hold's.
func (c *PathFEC) armDeadline(now time.Time) error {
	var dl time.Time
	if u := c.rdl.Load(); u != 0 {
		dl = time.Unix(0, u)
		if !now.Before(dl) {
			return os.ErrDeadlineExceeded
		}
	}
	for p := range c.holding {
		p.rmu.Lock()
		h := p.hold.deadline()
		p.rmu.Unlock()
		if !h.IsZero() && (dl.IsZero() || h.Before(dl)) {
			dl = h
		}
	}
	if !c.dlDirty.Swap(false) && dl.Equal(c.setDL) {
		return nil
	}
	c.setDL = dl
	return c.pc.SetReadDeadline(dl)
}

func (c *PathFEC) userDeadlinePassed() bool {
	u := c.rdl.Load()
	return u != 0 && time.Now().UnixNano() >= u
}

// SetReadDeadline bounds ReadFrom (quic-go uses it to unblock its reader).
func (c *PathFEC) SetReadDeadline(t time.Time) error {
	var u int64
	if !t.IsZero() {
		u = t.UnixNano()
	}
	c.rdl.Store(u)
	c.dlDirty.Store(true) // armDeadline sets it on pc again
	return c.pc.SetReadDeadline(t)
}

// SetWriteDeadline bounds WriteTo.
func (c *PathFEC) SetWriteDeadline(t time.Time) error { return c.pc.SetWriteDeadline(t) }

// SetDeadline sets both deadlines.
func (c *PathFEC) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// LocalAddr is the socket's address.
func (c *PathFEC) LocalAddr() net.Addr { return c.pc.LocalAddr() }

// Close closes the socket and stops the flush timers.
func (c *PathFEC) Close() error {
	c.mu.Lock()
	for _, p := range c.peers {
		p.smu.Lock()
		if p.timer != nil {
			p.timer.Stop()
		}
		p.smu.Unlock()
	}
	c.mu.Unlock()
	return c.pc.Close()
}
