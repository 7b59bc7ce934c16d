package server

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mirage-vpn/mirage/core/engine"
	"github.com/mirage-vpn/mirage/core/gso"
	"github.com/mirage-vpn/mirage/core/ippkt"
	"github.com/mirage-vpn/mirage/core/shaping"
	"github.com/mirage-vpn/mirage/core/tundev"
	"github.com/mirage-vpn/mirage/core/wire"
)

// maxLinks bounds the connections of one session.
const maxLinks = 16

// outBuf is a batch of frames queued for one connection of a session.
type outBuf struct {
	b    []byte
	enq  time.Time // when it was queued (CoDel)
	link uint32    // index in set (or a flow hash); see session.writer
	// set is the link list the batch was mapped for (nil: pick by
	// link % the current count).
	set *[]*slink
}

var outPool = sync.Pool{New: func() any { return &outBuf{b: make([]byte, 0, 64<<10)} }}

func getOut() *outBuf { ob := outPool.Get().(*outBuf); ob.b = ob.b[:0]; ob.set = nil; return ob }

func putOut(ob *outBuf) {
	if cap(ob.b) <= 1<<20 {
		outPool.Put(ob)
	}
}

// slink is one connection of a session.
type slink struct {
	c         net.Conn
	transport string // tcp-tls, reality or quic (set before serving)
	wmu       sync.Mutex
	// barrier, when set, is closed by the link's reader when the pong of a
	// barrier ping arrives.
	barrier atomic.Pointer[chan struct{}]
	// lastRecv is when a frame last arrived (UnixNano), for liveness.
	lastRecv atomic.Int64
	// retiring is set when the client closed the link: its reader no
	// longer answers barriers (it runs retire), so nobody waits for it.
	retiring atomic.Bool
	// tun is what the link's reader writes packets to the TUN with
	// (engine.NewFlowWriter: by flow over the queues); reader goroutine only.
	tun tundev.Device
}

func (l *slink) write(b []byte, timeout time.Duration) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.c.SetWriteDeadline(time.Now().Add(timeout))
	_, err := l.c.Write(b)
	return err
}

// session is one authenticated client: its addresses and connections.
type session struct {
	srv     *Server
	id      [16]byte
	joinKey [32]byte
	user    string
	addrs   []netip.Addr

	mu    sync.Mutex
	links atomic.Pointer[[]*slink]
	// pendingLinks counts connections authenticated but not yet serving, so
	// the session is not torn down between handshake and serveLink.
	pendingLinks atomic.Int32

	queue chan *outBuf
	// queued is the bytes in queue plus the batch being written; enqueue
	// drops beyond srv.queueBytes.
	queued atomic.Int64
	done   chan struct{}
	// sendMu is held by the writer for each batch and by a link's retirement;
	// sentSet is the link list of the last batch (under sendMu). When the
	// list changes, flows may move between connections, so the writer first
	// waits for the old connections' in-flight data to be read (barrier),
	// and inner TCP never sees a packet overtake another.
	sendMu  sync.Mutex
	sentSet *[]*slink
	// lastSend is the time of the latest write (UnixNano), for the idle
	// heartbeat.
	lastSend atomic.Int64
	once     sync.Once

	// mux is the client's scheduling mode (wire.Mux*), which the server
	// follows for its direction.
	mux uint8
	// peerGSO: the client takes super-packets whole (Hello caps).
	peerGSO bool
	// stageMu guards staged, dirty, rr, stagedSet and seq: the readers of
	// a multi-queue TUN stage into the same session. Framing and queueing
	// under one lock keeps round_robin's sequence numbers in queue order.
	stageMu   sync.Mutex
	staged    [maxLinks]*outBuf
	dirty     bool
	rr        uint32
	stagedSet *[]*slink
	// seq numbers the packets sent in round_robin mode (SEQDATA), under
	// stageMu too; reorder restores the order of the client's
	// (nil unless round_robin).
	seq     uint32
	reorder *engine.Reorder

	// For the summary line when the session ends.
	started          time.Time
	joined           atomic.Int32  // connections that served the session
	rxBytes, txBytes atomic.Uint64 // DATA from and (framed) to the client
}

func (ss *session) welcome(s *Server) *wire.Welcome {
	w := &wire.Welcome{
		SessionID: ss.id, JoinKey: ss.joinKey, ServerAddrs: s.serverAddrs,
		MTU: uint16(s.cfg.MTU), DNS: s.dns, Routes: s.routes,
		Keepalive: uint16(s.keepalive / time.Second), MaxFrame: wire.MaxPayload,
		PublicAddrs: s.cfg.PublicAddrs(),
	}
	if s.dev != nil && tundev.Super(s.dev) != nil {
		w.Caps |= wire.CapGSO
	}
	if s.cfg.QUIC.Enabled {
		lo, hi := s.cfg.QUICPorts()
		if lo > 0 && lo <= hi && hi <= 65535 {
			w.QUICPorts = [2]uint16{uint16(lo), uint16(hi)}
		}
	}
	for _, a := range ss.addrs {
		bits := s.clientBits4
		if a.Is6() {
			bits = s.clientBits6
		}
		w.ClientAddrs = append(w.ClientAddrs, netip.PrefixFrom(a, bits))
	}
	return w
}

// wantsSuper reports whether the client takes super-packets whole: it said
// so, and its scheduling does not number packets.
func (ss *session) wantsSuper() bool {
	return ss.peerGSO && ss.mux != wire.MuxRoundRobin
}

func (ss *session) ownsSource(a netip.Addr) bool {
	for _, x := range ss.addrs {
		if x == a {
			return true
		}
	}
	return false
}

func (ss *session) linkList() []*slink {
	if p := ss.links.Load(); p != nil {
		return *p
	}
	return nil
}

// stage appends p to the batch for its link; it reports whether the session
// had nothing staged before (so the caller flushes it once per batch).
// The caller holds stageMu (the TUN reader takes it once per run of
// packets for one session).
func (ss *session) stage(p []byte) bool {
	first := !ss.dirty
	ob := ss.stagedFor(p)
	if ss.mux == wire.MuxRoundRobin && len(p) <= wire.MaxPayload-wire.SeqLen {
		ob.b = wire.AppendSeqData(ob.b, ss.seq, p)
		ss.seq++
	} else {
		ob.b = wire.AppendFrame(ob.b, wire.TypeData, p)
	}
	return first
}

// stageSuper stages a super-packet read whole from the TUN (offload header
// o): in one GSO frame when the client takes them and its connection is a
// byte stream, else split by sp into packets. The caller holds stageMu.
func (ss *session) stageSuper(p []byte, o gso.Options, sp *engine.Splitter) bool {
	first := !ss.dirty
	if ss.mux != wire.MuxRoundRobin && ss.peerGSO {
		ob := ss.stagedFor(p)
		transport := ""
		if ob.set != nil && int(ob.link) < len(*ob.set) {
			transport = (*ob.set)[ob.link].transport
		}
		if engine.CanSendWhole(true, transport, p) {
			if hdrLen, err := gso.Check(p, o); err == nil {
				ob.b = wire.AppendGSO(ob.b, o, uint16(hdrLen), p)
				return first
			}
		}
	}
	n, err := sp.Split(p, o)
	if err != nil {
		ss.srv.Stats.BadPacketDrops.Add(1)
		return first
	}
	for i := 0; i < n; i++ {
		ss.stage(sp.Seg(i))
	}
	return first
}

// stagedFor returns the staged batch of the connection p goes on. Batches
// remember the link list they were mapped for, so the writer can put a
// barrier where the mapping changes. The caller holds stageMu.
func (ss *session) stagedFor(p []byte) *outBuf {
	set := ss.links.Load()
	if ss.dirty && set != ss.stagedSet {
		// The connections changed within this batch: queue what was
		// mapped for the old ones first.
		for i, ob := range ss.staged {
			if ob != nil {
				ss.staged[i] = nil
				ss.enqueue(ob)
			}
		}
	}
	ss.stagedSet = set
	h := uint32(0)
	if set != nil {
		if n := uint32(len(*set)); n > 1 {
			switch ss.mux {
			case wire.MuxActiveStandby:
			case wire.MuxRoundRobin:
				h = ss.rr % n
				ss.rr++
			default:
				h = engine.FlowHash(p) % n
			}
		}
	}
	ob := ss.staged[h]
	if ob == nil {
		ob = getOut()
		ob.link, ob.set = h, set
		ss.staged[h] = ob
	}
	ss.dirty = true
	return ob
}

// flushStaged queues the staged batches; when the queue is full the batch is
// dropped (the client is slower than its traffic: drop like a router).
func (ss *session) flushStaged() {
	ss.stageMu.Lock()
	defer ss.stageMu.Unlock()
	ss.dirty = false
	for i, ob := range ss.staged {
		if ob == nil {
			continue
		}
		ss.staged[i] = nil
		ss.enqueue(ob)
	}
}

func (ss *session) enqueue(ob *outBuf) {
	n := int64(len(ob.b))
	if q := ss.queued.Load(); q > 0 && q+n > ss.srv.queueBytes {
		ss.srv.Stats.QueueDrops.Add(1)
		putOut(ob)
		return
	}
	ss.queued.Add(n)
	ob.enq = time.Now()
	select {
	case <-ss.done:
		ss.dequeued(ob)
	case ss.queue <- ob:
	default:
		ss.srv.Stats.QueueDrops.Add(1)
		ss.dequeued(ob)
	}
}

// dequeued returns a batch taken off the queue (sent or not) to the pool.
func (ss *session) dequeued(ob *outBuf) {
	ss.queued.Add(-int64(len(ob.b)))
	putOut(ob)
}

// writer sends queued batches to the client's connections, shaped by
// [obfuscation] when it is on.
func (ss *session) writer() {
	var shaper *shaping.Shaper
	if p := ss.srv.shaping; p != nil {
		shaper = shaping.New(*p)
	}
	var aqm codel
	for {
		select {
		case <-ss.done:
			for {
				select {
				case ob := <-ss.queue:
					ss.dequeued(ob)
				default:
					return
				}
			}
		case ob := <-ss.queue:
			queued := int64(len(ob.b)) // before padding changes it
			now := time.Now()
			if aqm.drop(now, now.Sub(ob.enq), ss.queued.Load()-queued) {
				ss.srv.Stats.DelayDrops.Add(1)
				ss.dequeued(ob)
				continue
			}
			ss.sendMu.Lock()
			if ob.set != nil && ob.set != ss.sentSet {
				// Mapped for other connections than the last batch:
				// flows may move, so first let the connections that
				// carried them deliver what is in flight.
				if old := ss.sentSet; old != nil && ss.mux != wire.MuxRoundRobin {
					ss.waitBarriers(survivors(*old, ss.linkList()), nil, nil, time.Second)
				}
				ss.sentSet = ob.set
			}
			links := ss.linkList()
			if shaper != nil {
				ob.b = shaper.Pad(ob.b)
				if d := shaper.Delay(len(ob.b)); d > 0 {
					time.Sleep(d)
				}
				ss.lastSend.Store(time.Now().UnixNano())
			}
			if len(links) > 0 {
				l := links[ob.link%uint32(len(links))]
				if ob.set != nil && int(ob.link) < len(*ob.set) && slices.Contains(links, (*ob.set)[ob.link]) {
					l = (*ob.set)[ob.link]
				}
				if err := l.write(ob.b, 2*ss.srv.keepalive); err != nil {
					l.c.Close()
				} else {
					ss.txBytes.Add(uint64(len(ob.b)))
					ss.srv.Stats.TxBytes.Add(uint64(len(ob.b)))
				}
			}
			ss.sendMu.Unlock()
			ss.queued.Add(-queued)
			putOut(ob)
		}
	}
}

// userTotal is what a user's ended sessions carried.
type userTotal struct{ rx, tx uint64 }

func (ss *session) addRx(bytes, packets uint64) {
	if bytes == 0 && packets == 0 {
		return
	}
	ss.rxBytes.Add(bytes)
	ss.srv.Stats.RxBytes.Add(bytes)
	ss.srv.Stats.RxPackets.Add(packets)
}

func muxName(m uint8) string {
	switch m {
	case wire.MuxRoundRobin:
		return "round_robin"
	case wire.MuxActiveStandby:
		return "active_standby"
	}
	return "flow"
}

// survivors lists the links of old that are still in cur.
func survivors(old, cur []*slink) []*slink {
	var out []*slink
	for _, l := range old {
		for _, x := range cur {
			if x == l {
				out = append(out, l)
				break
			}
		}
	}
	return out
}

// waitBarriers sends a barrier ping on each of ls (and on own, whose reader
// is the caller: it reads own's frames through r into b until the pong)
// and waits at most timeout in all for the pongs.
func (ss *session) waitBarriers(ls []*slink, own *slink, rb *ownReader, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	ping := wire.AppendFrame(nil, wire.TypePing, engine.BarrierPayload)
	chans := make([]chan struct{}, len(ls))
	for i, l := range ls {
		ch := make(chan struct{})
		// Store, then check retiring (retire sets it, then takes the
		// channel): one of the two sees the other, so a retiring link is
		// never waited for.
		l.barrier.Store(&ch)
		if l.retiring.Load() {
			l.barrier.Store(nil)
			continue
		}
		if l.write(ping, timeout) == nil {
			chans[i] = ch
		} else {
			l.barrier.Store(nil)
		}
	}
	if own != nil && own.write(ping, timeout) == nil {
		rb.untilPong(deadline)
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for _, ch := range chans {
		if ch == nil {
			continue
		}
		select {
		case <-ch:
		case <-t.C:
			return
		case <-ss.done:
			return
		}
	}
}

// ownReader lets a barrier read a retiring link's remaining frames.
type ownReader struct {
	ss  *session
	c   net.Conn
	r   *wire.Reader
	b   *engine.Batch
	tun tundev.Device
	sp  engine.Splitter
}

// untilPong routes the link's DATA until the barrier pong (or deadline or
// error), then flushes.
func (o *ownReader) untilPong(deadline time.Time) {
	o.c.SetReadDeadline(deadline)
	defer func() {
		if o.b.Len() > 0 {
			o.b.Flush(o.tun)
		}
	}()
	for {
		f, err := o.r.Next()
		if err != nil {
			return
		}
		switch f.Type {
		case wire.TypeData:
			o.ss.route(f.Payload, o.b, nil)
			if o.b.Full() {
				o.b.Flush(o.tun)
			}
		case wire.TypeGSO:
			o.ss.routeGSO(f.Payload, o.b, &o.sp, o.tun, nil)
		case wire.TypeSeqData:
			if seq, p, ok := wire.ParseSeqData(f.Payload); ok && o.ss.reorder != nil {
				o.ss.reorder.Push(nil, seq, p) // not reached: round_robin retires without barriers
				o.ss.reorder.Flush()
			} else if ok {
				o.ss.route(p, o.b, nil)
			}
		case wire.TypePong:
			if bytes.Equal(f.Payload, engine.BarrierPayload) {
				return
			}
		}
	}
}

// retire takes a connection the client is moving away from (it sent
// CLOSE) out of the session without reordering: with the writer paused,
// the link leaves the list, and barriers on it and on the others (whose
// flows may move) make sure everything already sent is read before the
// writer goes on.
func (ss *session) retire(l *slink, r *wire.Reader, b *engine.Batch) {
	if b.Len() > 0 {
		b.Flush(l.tun)
	}
	// Release a writer waiting for this link's barrier (it would wait for
	// us, while we wait for it); the barrier below covers the link.
	l.retiring.Store(true)
	if ch := l.barrier.Swap(nil); ch != nil {
		close(*ch)
	}
	ss.sendMu.Lock()
	defer ss.sendMu.Unlock()
	old := ss.linkList()
	ss.removeLink(l)
	if ss.mux != wire.MuxRoundRobin {
		ss.waitBarriers(survivors(old, ss.linkList()), l, &ownReader{ss: ss, c: l.c, r: r, b: b, tun: l.tun}, time.Second)
	}
	ss.sentSet = ss.links.Load()
}

// liveness closes, in a session with several connections, one that has
// received nothing (not even the client's keepalive pings, sent every half
// interval) for 1.5 keepalive intervals: its flows move to the others and
// a writer blocked on it is released. A lone connection is left to its
// read deadline.
func (ss *session) liveness() {
	k := ss.srv.keepalive
	t := time.NewTicker(k / 2)
	defer t.Stop()
	for {
		select {
		case <-ss.done:
			return
		case now := <-t.C:
			ls := ss.linkList()
			if len(ls) < 2 {
				continue
			}
			for _, l := range ls {
				if now.Sub(time.Unix(0, l.lastRecv.Load())) > 3*k/2 {
					ss.srv.log.Info("connection silent; dropping it", "user", ss.user, "remote", l.c.RemoteAddr().String())
					l.c.Close()
				}
			}
		}
	}
}

// heartbeat sends an idle padding frame on one of the connections.
func (ss *session) heartbeat(f []byte) {
	links := ss.linkList()
	if len(links) == 0 {
		return
	}
	l := links[int(time.Now().UnixNano()/1000)%len(links)]
	if err := l.write(f, 2*ss.srv.keepalive); err != nil {
		l.c.Close()
	}
}

func (ss *session) addLink(l *slink) bool {
	l.lastRecv.Store(time.Now().UnixNano())
	ss.mu.Lock()
	defer ss.mu.Unlock()
	select {
	case <-ss.done:
		return false
	default:
	}
	old := ss.linkList()
	if len(old) >= maxLinks {
		return false
	}
	nl := append(append([]*slink(nil), old...), l)
	ss.links.Store(&nl)
	ss.joined.Add(1)
	return true
}

// dropPending undoes the pending count of a connection that authenticated
// but never got attached; the session ends if it has nothing else.
func (ss *session) dropPending() {
	ss.mu.Lock()
	ss.pendingLinks.Add(-1)
	empty := len(ss.linkList()) == 0 && ss.pendingLinks.Load() == 0
	ss.mu.Unlock()
	if empty {
		ss.end()
	}
}

// removeLink drops l; the session ends with its last connection.
func (ss *session) removeLink(l *slink) {
	srv := ss.srv
	srv.fecMu.Lock()
	ss.mu.Lock()
	old := ss.linkList()
	var nl []*slink
	found := false
	for _, x := range old {
		if x != l {
			nl = append(nl, x)
		} else {
			found = true
		}
	}
	ss.links.Store(&nl)
	empty := len(nl) == 0 && ss.pendingLinks.Load() == 0
	ss.mu.Unlock()
	if f, ok := l.c.(fecStater); ok && found {
		srv.fecEnded.add(f.FEC())
	}
	srv.fecMu.Unlock()
	if empty {
		ss.end()
	}
}

func (ss *session) end() {
	ss.once.Do(func() {
		close(ss.done)
		s := ss.srv
		s.mu.Lock()
		s.removeLocked(ss)
		t := s.userTotals[ss.user]
		t.rx += ss.rxBytes.Load()
		t.tx += ss.txBytes.Load()
		s.userTotals[ss.user] = t
		s.mu.Unlock()
		for _, l := range ss.linkList() {
			l.c.Close()
		}
		args := []any{"user", ss.user, "addrs", ss.addrs, "duration", time.Since(ss.started).Round(time.Second),
			"connections", ss.joined.Load(), "mux", muxName(ss.mux), "rx_bytes", ss.rxBytes.Load(), "tx_bytes", ss.txBytes.Load()}
		if ss.reorder != nil {
			ss.reorder.Stop()
			args = append(args, "reorder_late", ss.reorder.Late.Load(), "reorder_skipped", ss.reorder.Skipped.Load())
		}
		s.log.Info("session ended", args...)
	})
}

// shutdown tells the client why and ends the session.
func (ss *session) shutdown(code byte, msg string) {
	f := wire.AppendClose(nil, code, msg)
	for _, l := range ss.linkList() {
		l.write(f, time.Second)
	}
	ss.end()
}

// serveLink reads frames from one connection until it fails.
func (ss *session) serveLink(l *slink, r *wire.Reader) {
	c := l.c
	// The link leaves the session before its connection closes, so the
	// writer never picks a closed link (a hop's old connection).
	defer c.Close()
	defer ss.removeLink(l)

	s := ss.srv
	l.tun = engine.NewFlowWriter(s.dev)
	dev := l.tun
	b := engine.NewBatch(dev.BatchSize())
	var sp engine.Splitter
	dead := 3 * s.keepalive
	last := time.Now()
	c.SetReadDeadline(last.Add(dead))
	var rx, rxp uint64
	defer func() { ss.addRx(rx, rxp) }()
	var rc routeCache
	var src *engine.Source // this connection's place in the reorder
	if ss.reorder != nil {
		src = ss.reorder.AddSource()
		defer ss.reorder.RemoveSource(src)
	}
	for {
		f, err := r.Next()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Debug("connection ended", "user", ss.user, "err", err)
			}
			return
		}
		switch f.Type {
		case wire.TypeData:
			rx += uint64(len(f.Payload))
			rxp++
			ss.route(f.Payload, b, &rc)
		case wire.TypeGSO:
			rx += uint64(len(f.Payload))
			rxp++
			ss.routeGSO(f.Payload, b, &sp, dev, &rc)
		case wire.TypeSeqData:
			if seq, p, ok := wire.ParseSeqData(f.Payload); ok {
				rx += uint64(len(p))
				rxp++
				if ss.reorder != nil {
					ss.reorder.Push(src, seq, p)
				} else {
					ss.route(p, b, &rc)
				}
			}
		case wire.TypePing:
			if len(f.Payload) <= 64 {
				// Deliver what came before the ping first: the pong is
				// the client's barrier.
				if b.Len() > 0 {
					b.Flush(dev)
				}
				if err := l.write(wire.AppendFrame(nil, wire.TypePong, f.Payload), dead); err != nil {
					return
				}
			}
		case wire.TypePong:
			if bytes.Equal(f.Payload, engine.BarrierPayload) {
				if ch := l.barrier.Swap(nil); ch != nil {
					close(*ch)
				}
			}
		case wire.TypePadding:
			if s.onPadding != nil {
				s.onPadding(len(f.Payload))
			}
		case wire.TypeClose:
			ss.retire(l, r, b)
			return
		}
		burstEnd := !r.FrameBuffered()
		if b.Len() > 0 && (b.Full() || burstEnd) {
			if err := b.Flush(dev); err != nil && !isClosed(err) {
				s.log.Debug("tun write", "err", err)
			}
		}
		// The liveness deadline moves once per burst, not per frame.
		if burstEnd {
			if ss.reorder != nil {
				ss.reorder.Flush()
			}
			ss.addRx(rx, rxp)
			rx, rxp = 0, 0
			now := time.Now()
			l.lastRecv.Store(now.UnixNano())
			if now.Sub(last) > time.Second {
				last = now
				c.SetReadDeadline(now.Add(dead))
			}
		}
	}
}

// routeCache remembers the last lookup in the client table: the packets of
// a burst mostly share their destination, and hashing an address for every
// packet showed in profiles (2 % of the server's samples). A new table (a
// client came or went) invalidates it.
type routeCache struct {
	tbl *map[netip.Addr]*session
	dst netip.Addr
	ss  *session
}

// lookup returns the session owning dst in the current table (nil: none).
// A nil cache looks up every time.
func (rc *routeCache) lookup(s *Server, dst netip.Addr) *session {
	if rc == nil {
		return (*s.table.Load())[dst]
	}
	if t := s.table.Load(); t != rc.tbl || dst != rc.dst {
		rc.tbl, rc.dst, rc.ss = t, dst, (*t)[dst]
	}
	return rc.ss
}

// destination checks a packet from the client (its source must be one of
// the session's addresses) and returns the client it goes to, nil for the
// server's TUN; ok is false when it is dropped (spoofed, or client to
// client under isolation), counted.
func (ss *session) destination(p []byte, rc *routeCache) (peer *session, ok bool) {
	s := ss.srv
	src, dst, ok := ippkt.Addrs(p)
	if !ok || !ss.ownsSource(src) {
		s.Stats.SpoofDrops.Add(1)
		return nil, false
	}
	peer = rc.lookup(s, dst)
	if peer != nil && (peer == ss || s.cfg.IsolateClients) {
		s.Stats.IsolationDrops.Add(1)
		return nil, false
	}
	return peer, true
}

// route delivers one packet from the client: to another client when the
// destination is one (unless isolated), else to the server's TUN.
func (ss *session) route(p []byte, b *engine.Batch, rc *routeCache) {
	peer, ok := ss.destination(p, rc)
	if !ok {
		return
	}
	if peer != nil {
		ob := getOut()
		ob.link = engine.FlowHash(p)
		ob.b = wire.AppendFrame(ob.b, wire.TypeData, p)
		peer.enqueue(ob)
		return
	}
	b.Add(p)
}

// routeGSO delivers a GSO frame's super-packet from the client (see
// engine.WriteGSO): to the TUN whole, or, for another client, split into
// packets (simple and always correct; client-to-client traffic is not the
// fast path).
func (ss *session) routeGSO(payload []byte, b *engine.Batch, sp *engine.Splitter, dev tundev.Device, rc *routeCache) {
	s := ss.srv
	o, p, ok := wire.ParseGSO(payload)
	if !ok {
		return
	}
	peer, ok := ss.destination(p, rc)
	if !ok {
		return
	}
	if peer != nil {
		n, err := sp.Split(p, o)
		if err != nil {
			s.Stats.BadPacketDrops.Add(1)
			return
		}
		ob := getOut()
		ob.link = engine.FlowHash(p)
		for i := 0; i < n; i++ {
			ob.b = wire.AppendFrame(ob.b, wire.TypeData, sp.Seg(i))
		}
		peer.enqueue(ob)
		return
	}
	if err := engine.WriteGSO(dev, b, sp, payload, o); err != nil && !isClosed(err) {
		s.Stats.BadPacketDrops.Add(1)
		s.log.Debug("super-packet dropped", "user", ss.user, "err", err)
	}
}

func isClosed(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed)
}
