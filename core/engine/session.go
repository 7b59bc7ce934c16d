package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mirage-vpn/mirage/core/auth"
	"github.com/mirage-vpn/mirage/core/fec"
	"github.com/mirage-vpn/mirage/core/gso"
	"github.com/mirage-vpn/mirage/core/ippkt"
	"github.com/mirage-vpn/mirage/core/shaping"
	"github.com/mirage-vpn/mirage/core/tundev"
	"github.com/mirage-vpn/mirage/core/wire"
)

// Stats are live counters of a tunnel, safe for concurrent use.
type Stats struct {
	TxBytes, RxBytes     atomic.Uint64
	TxPackets, RxPackets atomic.Uint64
	Drops                atomic.Uint64
	// RTT is the last keepalive round-trip time in nanoseconds (0: none yet).
	RTT atomic.Int64
}

// SessionParams say how to open a client session.
type SessionParams struct {
	// Dialers are tried in order (enabled_protocols); the first that
	// completes a handshake wins.
	Dialers  []Dialer
	Username string
	Password string
	// Ticket is a resume ticket from an earlier Welcome (skips Argon2).
	Ticket []byte
	// Request asks for these tunnel addresses (e.g. the previous ones).
	Request []netip.Addr
	// Parallel is the number of connections of the session (>= 1). A
	// connection that dies is replaced in the background (with backoff);
	// the session lives as long as one connection does.
	Parallel int
	// QUICParallel, when set, replaces Parallel if the session runs on the
	// "quic" transport (quic_parallel_connections).
	QUICParallel int
	// PathDialers, when set, gives dialers of protocol proto for further
	// paths to the server (dual stack: the other address family), chosen
	// once the first connection's Welcome is known. Connections are spread
	// over all paths, at least one each.
	PathDialers func(proto string, w *wire.Welcome) []Dialer
	// Mux is the scheduling mode over the connections (wire.MuxFlow,
	// MuxRoundRobin or MuxActiveStandby), announced to the server.
	Mux uint8
	// MaxLifetime, when set, rotates each connection after MaxLifetime ±
	// MaxLifetimeJitter, make-before-break.
	MaxLifetime, MaxLifetimeJitter time.Duration
	HandshakeTimeout               time.Duration
	// Keepalive overrides the server's interval when non-zero.
	Keepalive     time.Duration
	ClientVersion string
	Logger        *slog.Logger
	// Stats, when set, receives the session's counters (shared across
	// reconnects by the caller); nil gives the session its own.
	Stats *Stats
	// Shaping, when set, pads, jitters and heartbeats what the client
	// sends ([obfuscation]); nil sends packets as they are.
	Shaping *shaping.Params
	// OnPadding, when set, is called with the payload size of every
	// padding frame received (tests, diagnostics).
	OnPadding func(size int)
	// AcceptGSO announces that the client takes super-packets whole
	// (wire.CapGSO): its TUN device is, or will be, a tundev.SuperDevice.
	// Should the device turn out not to be one, received super-packets
	// are split (slower, still correct).
	AcceptGSO bool
	// FEC, when set, asks for forward error correction of the QUIC
	// packets (path FEC, wire.CapPathFEC): each end protects what it
	// sends, this one with this shape (K == 0: adapted to the loss the
	// peer reports). nil: off.
	FEC *fec.Config
}

// Session is an established client session: one or more connections that
// share the tunnel addresses from the Welcome.
type Session struct {
	Welcome  *wire.Welcome
	Protocol string
	// ZeroRTT is true when the transport resumed with 0-RTT (QUIC).
	ZeroRTT bool

	// links is copy-on-write: the sender and the keepalive read it without
	// a lock; changes happen under mu.
	links atomic.Pointer[linkSet]
	mu    sync.Mutex
	// paths are the dialers of each path (path 0: the first connection's,
	// or the last hop's); a link is replaced on its own path. Under mu.
	paths []Dialer
	kick  chan struct{}
	// sendMu is held by send for each batch; a rotation holds it while it
	// moves traffic to the new connection, so no packet overtakes the old
	// connection's tail.
	sendMu sync.Mutex
	rr     uint32 // round-robin cursor, under sendMu
	seq    uint32 // SEQDATA numbering (round_robin), under sendMu
	// reorder restores the order of the server's numbered packets
	// (round_robin; nil otherwise). Set by Start.
	reorder *Reorder
	// sentSet is the link set of the last batch (under sendMu): when it
	// changes, flows may move, so send first waits for what is in flight
	// on the old connections to be read (barrier).
	sentSet *linkSet
	// peerGSO: the server accepts GSO frames (Welcome caps); split cuts
	// super-packets that cannot go whole (under sendMu).
	peerGSO   bool
	split     Splitter
	dev       tundev.Device // set by Start
	params    SessionParams
	log       *slog.Logger
	stats     *Stats
	keepalive time.Duration
	rtt       atomic.Int64 // nanoseconds, last measured
	// shaper is the sender's (nil: no shaping); lastSend is the time of
	// the latest write (UnixNano), for the idle heartbeat.
	shaper   *shaping.Shaper
	lastSend atomic.Int64

	done    chan struct{}
	errOnce sync.Once
	err     error
}

// link is one connection of a session.
type link struct {
	c        Conn
	r        *wire.Reader
	proto    string
	path     int // index in Session.paths
	born     time.Time
	rotateAt atomic.Int64  // UnixNano when it is due for rotation (0: never)
	rtt      atomic.Int64  // last keepalive RTT, nanoseconds
	minRTT   atomic.Int64  // lowest keepalive RTT seen, nanoseconds
	lastRecv atomic.Int64  // UnixNano of the last frame received
	tx, rx   atomic.Uint64 // bytes of DATA frames
	// barrier, when set, is closed when the pong of a barrier ping comes
	// back: everything sent before it has been read by the server.
	barrier atomic.Pointer[chan struct{}]
	wmu     sync.Mutex
	// out is the batch being assembled by the single sending goroutine.
	out []byte
	// retired is set before a link is closed on purpose (a hop): its end
	// does not end the session.
	retired atomic.Bool
	done    chan struct{} // closed when its receiver returns
	// pinging is set while a keepalive ping is being written, so a
	// connection whose writes hang gets one stuck ping, not one per tick.
	pinging atomic.Bool
}

func (l *link) write(b []byte) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	_, err := l.c.Write(b)
	return err
}

// ping writes a keepalive ping (after any write in progress) with a write
// deadline.
func (l *link) ping(f []byte, deadline time.Time) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.c.SetWriteDeadline(deadline)
	_, err := l.c.Write(f)
	l.c.SetWriteDeadline(time.Time{})
	return err
}

// DialSession connects, authenticates and (for Parallel > 1) joins the extra
// connections to the session.
func DialSession(ctx context.Context, p SessionParams) (*Session, error) {
	if len(p.Dialers) == 0 {
		return nil, errors.New("no transport to dial")
	}
	if p.Parallel < 1 {
		p.Parallel = 1
	}
	if p.HandshakeTimeout == 0 {
		p.HandshakeTimeout = 10 * time.Second
	}
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hello := &wire.Hello{
		Username: p.Username, Password: p.Password, Ticket: p.Ticket,
		Request: p.Request, MaxFrame: wire.MaxPayload, ClientVersion: p.ClientVersion,
		Mux: p.Mux,
	}
	if _, err := hello.Marshal(); err != nil {
		// The profile itself is wrong (a password over the wire's limit):
		// no server will ever accept it, so do not dial.
		return nil, fmt.Errorf("%w: %w", ErrInvalidHello, err)
	}
	var errs []error
	for _, d := range p.Dialers {
		hello.Caps = helloCaps(p, d.Protocol())
		c, err := d.Dial(ctx)
		if err != nil {
			log.Warn("dial failed", "transport", d.Protocol(), "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", d.Protocol(), err))
			continue
		}
		w, r, err := ClientHandshake(ctx, c, hello, p.HandshakeTimeout)
		if err != nil {
			c.Close()
			if errors.Is(err, ErrRejected) {
				return nil, err
			}
			log.Warn("handshake failed", "transport", d.Protocol(), "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", d.Protocol(), err))
			continue
		}
		startFEC(p, c, w, log)
		st := p.Stats
		if st == nil {
			st = &Stats{}
		}
		if d.Protocol() == "quic" && p.QUICParallel > 0 {
			p.Parallel = p.QUICParallel
		}
		s := &Session{
			Welcome: w, Protocol: d.Protocol(), log: log, stats: st,
			params: p, done: make(chan struct{}), paths: []Dialer{d}, kick: make(chan struct{}, 1),
			peerGSO: w.Caps&wire.CapGSO != 0,
		}
		if p.PathDialers != nil {
			s.paths = append(s.paths, p.PathDialers(d.Protocol(), w)...)
		}
		s.params.Parallel = max(p.Parallel, len(s.paths))
		s.setLinks([]*link{s.newLink(c, r, 0)})
		if p.Shaping != nil {
			s.shaper = shaping.New(*p.Shaping)
		}
		if z, ok := c.(interface{ Used0RTT() bool }); ok {
			s.ZeroRTT = z.Used0RTT()
		}
		s.keepalive = time.Duration(w.Keepalive) * time.Second
		// An override can only shorten the server's interval: the server
		// takes a connection silent for 1.5 intervals as dead.
		if p.Keepalive > 0 && (s.keepalive <= 0 || p.Keepalive < s.keepalive) {
			s.keepalive = p.Keepalive
		}
		if s.keepalive <= 0 {
			s.keepalive = 25 * time.Second
		}
		// Extra connections: a failure here is not fatal, the replenisher
		// keeps trying once the session runs.
		for i := 1; i < s.params.Parallel; i++ {
			l, err := s.join(ctx, i%len(s.paths))
			if err != nil {
				if errors.Is(err, ErrRejected) || ctx.Err() != nil {
					s.Close()
					return nil, fmt.Errorf("join connection %d: %w", i+1, err)
				}
				log.Warn("extra connection failed; will retry", "n", i+1, "err", err)
				break
			}
			s.setLinks(append(s.linkList(), l))
		}
		return s, nil
	}
	return nil, errors.Join(errs...)
}

// helloCaps are the capability bits a client announces on a connection of
// protocol proto. CapGSO only where the server could use it: not over QUIC
// (datagrams) and not in round_robin (numbered packets). Without it the
// server reads its TUN in batches wireguard/tun has cut, as before.
func helloCaps(p SessionParams, proto string) uint32 {
	var caps uint32
	if p.AcceptGSO && proto != "quic" && p.Mux != wire.MuxRoundRobin {
		caps |= wire.CapGSO
	}
	if p.FEC != nil && proto == "quic" {
		caps |= wire.CapPathFEC
	}
	return caps
}

// wantsSuper reports whether super-packets read from the TUN can go to the
// server whole: it accepts them, the session is on a byte stream and does
// not number packets. Otherwise the Tunnel reads batches wireguard/tun has
// already cut.
func (s *Session) wantsSuper() bool {
	return s.peerGSO && s.params.Mux != wire.MuxRoundRobin && s.Protocol != "quic"
}

// join opens one more connection and proves it belongs to this session.
func (s *Session) join(ctx context.Context, path int) (*link, error) {
	p := s.params
	s.mu.Lock()
	d := s.paths[path]
	s.mu.Unlock()
	c, err := d.Dial(ctx)
	if err != nil {
		return nil, err
	}
	ekm, err := c.ExportKeyingMaterial(JoinLabel, nil, 32)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("channel binding: %w", err)
	}
	proof := auth.JoinProof(s.Welcome.JoinKey[:], s.Welcome.SessionID, p.Username, ekm)
	h := &wire.Hello{
		Username: p.Username, Password: p.Password, Ticket: s.Welcome.Ticket,
		Join: &wire.Join{SessionID: s.Welcome.SessionID, Proof: proof}, MaxFrame: wire.MaxPayload,
		Mux: p.Mux, Caps: helloCaps(p, d.Protocol()),
	}
	w, r, err := ClientHandshake(ctx, c, h, p.HandshakeTimeout)
	if err != nil {
		c.Close()
		return nil, err
	}
	if w.SessionID != s.Welcome.SessionID {
		c.Close()
		return nil, errors.New("server answered the join with another session")
	}
	startFEC(p, c, w, s.log)
	return s.newLink(c, r, path), nil
}

func (s *Session) newLink(c Conn, r *wire.Reader, path int) *link {
	now := time.Now()
	l := &link{c: c, r: r, proto: s.Protocol, path: path, born: now, done: make(chan struct{})}
	l.lastRecv.Store(now.UnixNano())
	if m := s.params.MaxLifetime; m > 0 {
		if j := s.params.MaxLifetimeJitter; j > 0 {
			m += time.Duration(mrand.Int64N(int64(2*j)+1)) - j
		}
		l.rotateAt.Store(now.Add(max(m, time.Second)).UnixNano())
	}
	return l
}

func (s *Session) linkList() []*link {
	if p := s.links.Load(); p != nil {
		return p.links
	}
	return nil
}

func (s *Session) setLinks(ls []*link) { s.links.Store(newLinkSet(ls)) }

// Hop moves the session to a new connection from d, make-before-break (see
// replace); the oldest connection is the one replaced, and d is used for
// later replacements too. Addresses, the TUN and inner connections are
// untouched. It is used for QUIC port hopping. Only after Start.
func (s *Session) Hop(ctx context.Context, d Dialer, drain time.Duration) error {
	ls := s.linkList()
	if len(ls) == 0 {
		return errors.New("session ended")
	}
	s.mu.Lock()
	prev := s.paths[ls[0].path]
	s.paths[ls[0].path] = d
	s.mu.Unlock()
	if err := s.replace(ctx, ls[0], drain); err != nil {
		s.mu.Lock()
		s.paths[ls[0].path] = prev
		s.mu.Unlock()
		return fmt.Errorf("hop: %w", err)
	}
	return nil
}

// replace swaps victim for a new connection from d, make-before-break: the
// new connection joins the session (proof bound to it) and starts
// receiving; then, with sending paused, a barrier ping goes out on the
// victim and traffic moves to the new connection (in the victim's slot, so
// flows stay where they were) once its pong is back — by then the server
// has read everything sent on the victim, so nothing sent later overtakes
// it. The victim is told with a CLOSE frame, given up to drain to deliver
// what the server still sends on it, and closed.
func (s *Session) replace(ctx context.Context, victim *link, drain time.Duration) error {
	select {
	case <-s.done:
		return errors.New("session ended")
	default:
	}
	nl, err := s.join(ctx, victim.path)
	if err != nil {
		return err
	}
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		nl.c.Close()
		return errors.New("session ended")
	default:
	}
	go s.receive(nl, NewFlowWriter(s.dev))
	s.mu.Unlock()

	s.sendMu.Lock()
	s.waitBarriers([]*link{victim}, min(drain, time.Second))
	s.mu.Lock()
	// The new connection takes the victim's slots, so no flow moves.
	// nl starts with the victim's RTTs until it measures its own.
	nl.rtt.Store(victim.rtt.Load())
	nl.minRTT.Store(victim.minRTT.Load())
	if set, ok := s.links.Load().replaced(victim, nl); ok {
		s.links.Store(set)
	} else { // the victim died meanwhile: the new one is a replacement
		s.setLinks(append(s.linkList(), nl))
	}
	victim.retired.Store(true)
	// The other connections keep their slots: no barrier needed for them.
	s.sentSet = s.links.Load()
	s.mu.Unlock()
	s.sendMu.Unlock()

	victim.c.SetWriteDeadline(time.Now().Add(time.Second))
	victim.write(wire.AppendClose(nil, wire.CloseNormal, "moved"))
	select {
	case <-victim.done: // the server closed it after the CLOSE
	case <-time.After(drain):
	case <-s.done:
	}
	victim.c.Close()
	return nil
}

// BarrierPayload is the payload of a barrier ping. Both ends answer a ping
// only after delivering the packets read before it, so its pong proves the
// connection's earlier data has been delivered (see waitBarriers).
var BarrierPayload = []byte("mirage-barrier")

// waitBarriers sends a barrier ping on each of ls and waits (at most
// timeout in all) for their pongs: the peer answers a ping only after it
// has delivered every packet read before it, so afterwards nothing sent
// elsewhere can overtake what was sent on ls.
func (s *Session) waitBarriers(ls []*link, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	chans := make([]chan struct{}, len(ls))
	for i, l := range ls {
		ch := make(chan struct{})
		chans[i] = ch
		l.barrier.Store(&ch)
		l.c.SetWriteDeadline(deadline)
		err := l.write(wire.AppendFrame(nil, wire.TypePing, BarrierPayload))
		l.c.SetWriteDeadline(time.Time{})
		if err != nil {
			l.barrier.Store(nil)
			chans[i] = nil
		}
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for i, ch := range chans {
		if ch == nil {
			continue
		}
		select {
		case <-ch:
		case <-ls[i].done:
		case <-t.C:
			return
		}
	}
}

// linkDown takes a failed connection out of the session: its traffic moves
// to the others at once and the replenisher dials a replacement. The
// session fails only with its last connection.
func (s *Session) linkDown(l *link, err error) {
	s.mu.Lock()
	old := s.linkList()
	ls := make([]*link, 0, len(old))
	for _, x := range old {
		if x != l {
			ls = append(ls, x)
		}
	}
	if len(ls) == len(old) { // already gone (retired or reported twice)
		s.mu.Unlock()
		return
	}
	if len(ls) == 0 {
		s.mu.Unlock()
		s.fail(err)
		return
	}
	s.setLinks(ls)
	s.mu.Unlock()
	l.c.Close()
	s.log.Warn("connection lost; traffic moved to the others", "local", l.c.LocalAddr().String(),
		"remote", l.c.RemoteAddr().String(), "left", len(ls), "err", err)
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// replenish keeps the session at Parallel connections: after a loss it
// dials replacements, backing off from 1 s to 30 s while they fail.
func (s *Session) replenish() {
	backoff := time.Second
	for {
		select {
		case <-s.done:
			return
		case <-s.kick:
		}
		for len(s.linkList()) < s.params.Parallel {
			path := s.emptiestPath()
			ctx, cancel := context.WithTimeout(context.Background(), s.params.HandshakeTimeout)
			go func() {
				select {
				case <-s.done:
					cancel()
				case <-ctx.Done():
				}
			}()
			l, err := s.join(ctx, path)
			cancel()
			if err != nil {
				s.log.Warn("replacement connection failed", "retry_in", backoff, "err", err)
				select {
				case <-s.done:
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 30*time.Second)
				continue
			}
			backoff = time.Second
			s.mu.Lock()
			select {
			case <-s.done:
				s.mu.Unlock()
				l.c.Close()
				return
			default:
			}
			s.setLinks(append(append([]*link(nil), s.linkList()...), l))
			go s.receive(l, NewFlowWriter(s.dev))
			n := len(s.linkList())
			s.mu.Unlock()
			s.log.Info("connection added", "local", l.c.LocalAddr().String(), "remote", l.c.RemoteAddr().String(), "connections", n)
		}
	}
}

// emptiestPath is the path with the fewest live connections (the first
// on a tie), where a replacement goes.
func (s *Session) emptiestPath() int {
	s.mu.Lock()
	n := make([]int, len(s.paths))
	s.mu.Unlock()
	for _, l := range s.linkList() {
		if l.path < len(n) {
			n[l.path]++
		}
	}
	best := 0
	for i := range n {
		if n[i] < n[best] {
			best = i
		}
	}
	return best
}

// rotate replaces each connection when it reaches its lifetime.
func (s *Session) rotate() {
	t := time.NewTicker(min(s.params.MaxLifetime/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		for _, l := range s.linkList() {
			if at := l.rotateAt.Load(); at == 0 || time.Now().UnixNano() < at {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), s.params.HandshakeTimeout)
			err := s.replace(ctx, l, 2*time.Second)
			cancel()
			if err != nil {
				s.log.Warn("connection rotation failed; keeping the old one a while longer", "err", err)
				l.rotateAt.Store(time.Now().Add(5 * time.Second).UnixNano()) // retry
				continue
			}
			s.log.Info("connection rotated", "age", time.Since(l.born).Round(time.Second), "local", s.LocalAddrs())
		}
	}
}

// barrierMoved runs before the first batch on a changed set of connections:
// the connections of old that survive in set may have carried flows that
// now move (the slot table was rebuilt, or the primary changed), so their
// in-flight data must be read before anything goes out on the new mapping.
// Round-robin does not order packets across connections and skips this.
func (s *Session) barrierMoved(old, set *linkSet) {
	var alive []*link
	for _, l := range old.links {
		for _, x := range set.links {
			if x == l {
				alive = append(alive, l)
				break
			}
		}
	}
	if len(alive) > 0 {
		s.waitBarriers(alive, time.Second)
	}
}

// LinkInfo describes one connection of a session.
type LinkInfo struct {
	Transport     string
	Local, Remote string
	Family        string // "ipv4" or "ipv6"
	RTT           time.Duration
	TxBytes       uint64 // DATA sent on it
	RxBytes       uint64
	Age           time.Duration
	// Congestion is the TCP congestion control in use ("" for QUIC or
	// when the OS does not tell).
	Congestion string
	// FEC is what the connection's forward error correction did (QUIC;
	// nil for other transports).
	FEC *fec.ConnStats
}

// Links describes the session's connections, primary first.
func (s *Session) Links() []LinkInfo {
	var out []LinkInfo
	for _, l := range s.linkList() {
		fam := "ipv4"
		if ua, ok := l.c.RemoteAddr().(interface{ AddrPort() netip.AddrPort }); ok && !ua.AddrPort().Addr().Unmap().Is4() {
			fam = "ipv6"
		} else if ta, ok := l.c.RemoteAddr().(*net.TCPAddr); ok && ta.IP.To4() == nil {
			fam = "ipv6"
		}
		var cc string
		if t, ok := l.c.(interface{ Congestion() string }); ok {
			cc = t.Congestion()
		}
		var fs *fec.ConnStats
		if f, ok := l.c.(interface{ FEC() fec.ConnStats }); ok {
			st := f.FEC()
			fs = &st
		}
		out = append(out, LinkInfo{
			Transport: l.proto, Local: l.c.LocalAddr().String(), Remote: l.c.RemoteAddr().String(),
			Family: fam, RTT: time.Duration(l.rtt.Load()), TxBytes: l.tx.Load(), RxBytes: l.rx.Load(),
			Age: time.Since(l.born), Congestion: cc, FEC: fs,
		})
	}
	return out
}

// LocalAddrs lists the local addresses of the session's connections.
func (s *Session) LocalAddrs() []string {
	var out []string
	for _, l := range s.linkList() {
		out = append(out, l.c.LocalAddr().String())
	}
	return out
}

// ReorderStats reports, for a round_robin session, the server's packets
// delivered late (after their hole was skipped), the holes skipped, and
// duplicates dropped (all 0 in other modes).
func (s *Session) ReorderStats() (late, skipped, dups uint64) {
	if s.reorder == nil {
		return 0, 0, 0
	}
	return s.reorder.Late.Load(), s.reorder.Skipped.Load(), s.reorder.Dups.Load()
}

// Stats returns the session's counters.
func (s *Session) Stats() *Stats { return s.stats }

// RTT returns the last keepalive round-trip time (0 before the first).
func (s *Session) RTT() time.Duration { return time.Duration(s.rtt.Load()) }

// Done is closed when the session has failed or was closed.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is why the session ended (nil while it runs).
func (s *Session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

func (s *Session) fail(err error) {
	s.errOnce.Do(func() {
		s.err = err
		s.mu.Lock()
		close(s.done)
		ls := s.linkList()
		if s.reorder != nil {
			s.reorder.Stop()
		}
		s.mu.Unlock()
		for _, l := range ls {
			l.c.Close()
		}
	})
}

// Close ends the session, telling the server.
func (s *Session) Close() error {
	for _, l := range s.linkList() {
		l.c.SetWriteDeadline(time.Now().Add(time.Second))
		l.write(wire.AppendClose(nil, wire.CloseNormal, ""))
	}
	s.fail(errors.New("session closed"))
	return nil
}

// Start runs the receivers (connections -> dev) and the keepalive.
func (s *Session) Start(dev tundev.Device) {
	s.mu.Lock()
	s.dev = dev
	if s.params.Mux == wire.MuxRoundRobin {
		s.reorder = NewReorder(NewFlowWriter(dev), dev.BatchSize(), func(p []byte, b *Batch) { b.Add(p) })
	}
	for _, l := range s.linkList() {
		go s.receive(l, NewFlowWriter(s.dev))
	}
	s.mu.Unlock()
	go s.keepaliveLoop()
	if s.params.Parallel > 1 {
		go s.replenish()
		if len(s.linkList()) < s.params.Parallel {
			s.kick <- struct{}{}
		}
	}
	if s.params.MaxLifetime > 0 {
		go s.rotate()
	}
	if s.shaper != nil {
		s.lastSend.Store(time.Now().UnixNano())
		go shaping.Heartbeats(s.done, s.shaper.Clone(), &s.lastSend, s.heartbeat)
	}
}

// heartbeat sends an idle padding frame on one of the connections.
func (s *Session) heartbeat(f []byte) {
	links := s.linkList()
	if len(links) == 0 {
		return
	}
	l := links[int(time.Now().UnixNano()/1000)%len(links)]
	l.c.SetWriteDeadline(time.Now().Add(2 * s.keepalive))
	if err := l.write(f); err != nil && !l.retired.Load() {
		go s.linkDown(l, fmt.Errorf("heartbeat: %w", err))
		return
	}
	l.c.SetWriteDeadline(time.Time{})
}

// keepaliveLoop pings every connection each half keepalive interval.
// With more than one connection, one that has been silent for 1.5
// intervals is declared dead (its traffic moves to the others): a failover
// within 2 intervals. A lone connection is left to its read deadline (3
// intervals), after which the session reconnects. Round-robin weights
// follow each connection's lowest RTT, refreshed at each tick.
func (s *Session) keepaliveLoop() {
	t := time.NewTicker(s.keepalive / 2)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			var p [8]byte
			binary.BigEndian.PutUint64(p[:], uint64(now.UnixNano()))
			f := wire.AppendFrame(nil, wire.TypePing, p[:])
			// The pings go out from goroutines of their own: a
			// connection whose path went dark blocks writes (its
			// socket buffer is full, or the TUN reader is stuck in a
			// write to it), and the loop must keep checking the others
			// and notice the silence.
			ls := s.linkList()
			for _, l := range ls {
				if len(ls) > 1 && now.Sub(time.Unix(0, l.lastRecv.Load())) > 3*s.keepalive/2 {
					go s.linkDown(l, errors.New("no answer to keepalives"))
					continue
				}
				if !l.pinging.CompareAndSwap(false, true) {
					continue
				}
				go func() {
					defer l.pinging.Store(false)
					if err := l.ping(f, now.Add(2*s.keepalive)); err != nil && !l.retired.Load() {
						s.linkDown(l, fmt.Errorf("keepalive: %w", err))
					}
				}()
			}
			if s.params.Mux == wire.MuxRoundRobin && len(ls) > 1 {
				s.mu.Lock()
				s.setLinks(s.linkList())
				s.mu.Unlock()
			}
		}
	}
}

// receive reads frames from one connection and writes DATA packets to dev in
// batches: a batch is flushed when no further complete frame is buffered.
func (s *Session) receive(l *link, dev tundev.Device) {
	defer close(l.done)
	b := NewBatch(dev.BatchSize())
	var sp Splitter // for super-packets the device cannot take whole
	dead := 3 * s.keepalive
	lastDeadline := time.Now()
	l.c.SetReadDeadline(lastDeadline.Add(dead))
	var rxPackets, rxBytes uint64
	var src *Source // this connection's place in the reorder
	if s.reorder != nil {
		src = s.reorder.AddSource()
		defer s.reorder.RemoveSource(src)
	}
	for {
		f, err := l.r.Next()
		if err != nil {
			if b.Len() > 0 {
				b.Flush(dev)
			}
			if l.retired.Load() {
				return // hopped away from
			}
			s.linkDown(l, fmt.Errorf("connection lost: %w", err))
			return
		}
		switch f.Type {
		case wire.TypeData:
			if _, _, ok := ippkt.Addrs(f.Payload); ok {
				b.Add(f.Payload)
				rxPackets++
				rxBytes += uint64(len(f.Payload))
			}
		case wire.TypeGSO:
			if o, p, ok := wire.ParseGSO(f.Payload); ok {
				if _, _, ok := ippkt.Addrs(p); ok {
					if err := WriteGSO(dev, b, &sp, f.Payload, o); err != nil {
						s.stats.Drops.Add(1)
						s.log.Debug("super-packet dropped", "err", err)
					}
					rxPackets++
					rxBytes += uint64(len(p))
				}
			}
		case wire.TypeSeqData:
			if seq, p, ok := wire.ParseSeqData(f.Payload); ok {
				if _, _, ok := ippkt.Addrs(p); ok {
					if s.reorder != nil {
						s.reorder.Push(src, seq, p)
					} else {
						b.Add(p)
					}
					rxPackets++
					rxBytes += uint64(len(p))
				}
			}
		case wire.TypePing:
			if len(f.Payload) <= 64 {
				// Deliver what came before the ping first: the pong is
				// the peer's barrier (see waitBarriers).
				if b.Len() > 0 {
					b.Flush(dev)
				}
				if err := l.write(wire.AppendFrame(nil, wire.TypePong, f.Payload)); err != nil {
					if !l.retired.Load() {
						s.linkDown(l, err)
					}
					return
				}
			}
		case wire.TypePadding:
			if s.params.OnPadding != nil {
				s.params.OnPadding(len(f.Payload))
			}
		case wire.TypePong:
			if len(f.Payload) == 8 {
				sent := int64(binary.BigEndian.Uint64(f.Payload))
				if d := time.Now().UnixNano() - sent; d > 0 {
					l.rtt.Store(d)
					if m := l.minRTT.Load(); m == 0 || d < m {
						l.minRTT.Store(d)
					}
					s.rtt.Store(d)
					s.stats.RTT.Store(d)
				}
			} else if bytes.Equal(f.Payload, BarrierPayload) {
				if ch := l.barrier.Swap(nil); ch != nil {
					close(*ch)
				}
			}
		case wire.TypeClose:
			if l.retired.Load() {
				return
			}
			code, msg := wire.ParseClose(f.Payload)
			s.fail(fmt.Errorf("server closed the session (code %d) %s", code, msg))
			return
		}
		burstEnd := !l.r.FrameBuffered()
		if b.Len() > 0 && (b.Full() || burstEnd) {
			if err := b.Flush(dev); err != nil {
				s.log.Debug("tun write", "err", err)
			}
		}
		// Once per burst, not per frame: counters and the liveness deadline.
		if burstEnd {
			if s.reorder != nil {
				s.reorder.Flush()
			}
			s.stats.RxPackets.Add(rxPackets)
			s.stats.RxBytes.Add(rxBytes)
			l.rx.Add(rxBytes)
			rxPackets, rxBytes = 0, 0
			now := time.Now()
			l.lastRecv.Store(now.UnixNano())
			if now.Sub(lastDeadline) > time.Second {
				lastDeadline = now
				l.c.SetReadDeadline(now.Add(dead))
			}
		}
	}
}

// send frames a batch of packets read from the TUN and writes one buffer per
// connection, the connection of each packet chosen by the scheduler. Only
// the Tunnel's reader goroutine calls it. A write that fails takes its
// connection out of the session and goes again on another one (inner TCP
// may see a duplicate, never a hole).
//
// opts, when not nil, are the offload headers of packets read whole from a
// SuperDevice: a super-packet goes in one GSO frame when it can, else it is
// split.
func (s *Session) send(bufs [][]byte, sizes []int, opts []gso.Options, n int) {
	select {
	case <-s.done:
		s.stats.Drops.Add(uint64(n))
		return
	default:
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	set := s.links.Load()
	if set != s.sentSet {
		if old := s.sentSet; old != nil && s.params.Mux != wire.MuxRoundRobin {
			s.barrierMoved(old, set)
		}
		s.sentSet = set
	}
	links := set.links
	var txBytes, txPackets uint64
	for i := 0; i < n; i++ {
		p := bufs[i][tundev.Offset : tundev.Offset+sizes[i]]
		if opts != nil && IsSuper(opts[i]) {
			// round_robin numbers packets: super-packets go split.
			if s.params.Mux != wire.MuxRoundRobin {
				l := set.pick(s.params.Mux, p, &s.rr)
				if CanSendWhole(s.peerGSO, l.proto, p) {
					if hdrLen, err := gso.Check(p, opts[i]); err == nil {
						l.out = wire.AppendGSO(l.out, opts[i], uint16(hdrLen), p)
						txBytes += uint64(len(p))
						txPackets++
						continue
					}
				}
			}
			k, err := s.split.Split(p, opts[i])
			if err != nil {
				s.stats.Drops.Add(1)
				s.log.Debug("super-packet from the TUN dropped", "err", err)
				continue
			}
			for j := 0; j < k; j++ {
				seg := s.split.Seg(j)
				s.frame(set, seg)
				txBytes += uint64(len(seg))
			}
			txPackets += uint64(k)
			continue
		}
		s.frame(set, p)
		txBytes += uint64(len(p))
		txPackets++
	}
	s.stats.TxPackets.Add(txPackets)
	s.stats.TxBytes.Add(txBytes)
	if s.shaper != nil {
		total := 0
		for _, l := range links {
			if len(l.out) > 0 {
				l.out = s.shaper.Pad(l.out)
				total += len(l.out)
			}
		}
		if d := s.shaper.Delay(total); d > 0 {
			time.Sleep(d)
		}
		s.lastSend.Store(time.Now().UnixNano())
	}
	for _, l := range links {
		if len(l.out) == 0 {
			continue
		}
		err := l.write(l.out)
		if err == nil {
			l.tx.Add(uint64(len(l.out)))
		} else if !l.retired.Load() {
			s.linkDown(l, fmt.Errorf("connection lost: %w", err))
			if rest := s.linkList(); len(rest) > 0 && rest[0] != l {
				rest[0].write(l.out) // best effort; its own failure is found later
			}
		}
		// else: moved away from meanwhile; lost like on a dropped path
		if cap(l.out) > 4<<20 {
			l.out = nil
		} else {
			l.out = l.out[:0]
		}
	}
}

// frame appends packet p to the output of the connection the scheduler
// picks for it. The caller holds sendMu.
func (s *Session) frame(set *linkSet, p []byte) {
	l := set.pick(s.params.Mux, p, &s.rr)
	if s.params.Mux == wire.MuxRoundRobin && len(p) <= wire.MaxPayload-wire.SeqLen {
		l.out = wire.AppendSeqData(l.out, s.seq, p)
		s.seq++
	} else {
		l.out = wire.AppendFrame(l.out, wire.TypeData, p)
	}
}
