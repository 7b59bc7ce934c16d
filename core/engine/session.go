package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mirage-vpn/mirage/core/auth"
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
	// Parallel is the number of connections of the session (>= 1).
	Parallel         int
	HandshakeTimeout time.Duration
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
}

// Session is an established client session: one or more connections that
// share the tunnel addresses from the Welcome.
type Session struct {
	Welcome  *wire.Welcome
	Protocol string
	// ZeroRTT is true when the transport resumed with 0-RTT (QUIC).
	ZeroRTT bool

	// links is copy-on-write: the sender and the keepalive read it without
	// a lock; Hop replaces it under mu.
	links     atomic.Pointer[[]*link]
	mu        sync.Mutex
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
	c   Conn
	r   *wire.Reader
	wmu sync.Mutex
	// out is the batch being assembled by the single sending goroutine.
	out []byte
	// retired is set before a link is closed on purpose (a hop): its end
	// does not end the session.
	retired atomic.Bool
	done    chan struct{} // closed when its receiver returns
}

func (l *link) write(b []byte) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	_, err := l.c.Write(b)
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
	}
	var errs []error
	for _, d := range p.Dialers {
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
		st := p.Stats
		if st == nil {
			st = &Stats{}
		}
		s := &Session{
			Welcome: w, Protocol: d.Protocol(), log: log, stats: st,
			params: p, done: make(chan struct{}),
		}
		s.setLinks([]*link{newLink(c, r)})
		if p.Shaping != nil {
			s.shaper = shaping.New(*p.Shaping)
		}
		if z, ok := c.(interface{ Used0RTT() bool }); ok {
			s.ZeroRTT = z.Used0RTT()
		}
		s.keepalive = time.Duration(w.Keepalive) * time.Second
		if p.Keepalive > 0 {
			s.keepalive = p.Keepalive
		}
		if s.keepalive <= 0 {
			s.keepalive = 25 * time.Second
		}
		for i := 1; i < p.Parallel; i++ {
			l, err := s.join(ctx, d, p)
			if err != nil {
				s.Close()
				return nil, fmt.Errorf("join connection %d: %w", i+1, err)
			}
			s.setLinks(append(s.linkList(), l))
		}
		return s, nil
	}
	return nil, errors.Join(errs...)
}

// join opens one more connection and proves it belongs to this session.
func (s *Session) join(ctx context.Context, d Dialer, p SessionParams) (*link, error) {
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
	return newLink(c, r), nil
}

func newLink(c Conn, r *wire.Reader) *link { return &link{c: c, r: r, done: make(chan struct{})} }

func (s *Session) linkList() []*link {
	if p := s.links.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *Session) setLinks(ls []*link) { s.links.Store(&ls) }

// Hop moves the session to a new connection from d, make-before-break: the
// new connection joins the session (proof bound to it), starts carrying
// traffic, and only then is the oldest one retired — told with a CLOSE
// frame, given up to drain to finish, then closed. Addresses, the TUN and
// inner connections are untouched. It is used for QUIC port hopping and
// connection rotation. Only after Start.
func (s *Session) Hop(ctx context.Context, d Dialer, drain time.Duration) error {
	select {
	case <-s.done:
		return errors.New("session ended")
	default:
	}
	l, err := s.join(ctx, d, s.params)
	if err != nil {
		return fmt.Errorf("hop: %w", err)
	}
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		l.c.Close()
		return errors.New("session ended")
	default:
	}
	old := s.linkList()
	var victim *link
	rest := make([]*link, 0, len(old))
	for i, x := range old {
		if i == 0 {
			victim = x
			continue
		}
		rest = append(rest, x)
	}
	s.setLinks(append(rest, l))
	go s.receive(l, s.dev)
	s.mu.Unlock()
	if victim != nil {
		victim.retired.Store(true)
		victim.c.SetWriteDeadline(time.Now().Add(time.Second))
		victim.write(wire.AppendClose(nil, wire.CloseNormal, "moved"))
		select {
		case <-victim.done: // the server closed it after the CLOSE
		case <-time.After(drain):
		case <-s.done:
		}
		victim.c.Close()
	}
	return nil
}

// LocalAddrs lists the local addresses of the session's connections.
func (s *Session) LocalAddrs() []string {
	var out []string
	for _, l := range s.linkList() {
		out = append(out, l.c.LocalAddr().String())
	}
	return out
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
	for _, l := range s.linkList() {
		go s.receive(l, dev)
	}
	s.mu.Unlock()
	go s.keepaliveLoop()
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
		s.fail(fmt.Errorf("heartbeat: %w", err))
		return
	}
	l.c.SetWriteDeadline(time.Time{})
}

func (s *Session) keepaliveLoop() {
	t := time.NewTicker(s.keepalive)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			var p [8]byte
			binary.BigEndian.PutUint64(p[:], uint64(time.Now().UnixNano()))
			f := wire.AppendFrame(nil, wire.TypePing, p[:])
			for _, l := range s.linkList() {
				l.c.SetWriteDeadline(time.Now().Add(2 * s.keepalive))
				if err := l.write(f); err != nil {
					if l.retired.Load() {
						continue
					}
					s.fail(fmt.Errorf("keepalive: %w", err))
					return
				}
				l.c.SetWriteDeadline(time.Time{})
			}
		}
	}
}

// receive reads frames from one connection and writes DATA packets to dev in
// batches: a batch is flushed when no further complete frame is buffered.
func (s *Session) receive(l *link, dev tundev.Device) {
	defer close(l.done)
	b := NewBatch(dev.BatchSize())
	dead := 3 * s.keepalive
	lastDeadline := time.Now()
	l.c.SetReadDeadline(lastDeadline.Add(dead))
	var rxPackets, rxBytes uint64
	for {
		f, err := l.r.Next()
		if err != nil {
			if b.Len() > 0 {
				b.Flush(dev)
			}
			if l.retired.Load() {
				return // hopped away from
			}
			s.fail(fmt.Errorf("connection lost: %w", err))
			return
		}
		switch f.Type {
		case wire.TypeData:
			if _, _, ok := ippkt.Addrs(f.Payload); ok {
				b.Add(f.Payload)
				rxPackets++
				rxBytes += uint64(len(f.Payload))
			}
		case wire.TypePing:
			if len(f.Payload) <= 64 {
				if err := l.write(wire.AppendFrame(nil, wire.TypePong, f.Payload)); err != nil {
					if !l.retired.Load() {
						s.fail(err)
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
					s.rtt.Store(d)
					s.stats.RTT.Store(d)
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
			s.stats.RxPackets.Add(rxPackets)
			s.stats.RxBytes.Add(rxBytes)
			rxPackets, rxBytes = 0, 0
			if now := time.Now(); now.Sub(lastDeadline) > time.Second {
				lastDeadline = now
				l.c.SetReadDeadline(now.Add(dead))
			}
		}
	}
}

// send frames a batch of packets read from the TUN and writes one buffer per
// connection. Only the Tunnel's reader goroutine calls it.
func (s *Session) send(bufs [][]byte, sizes []int, n int) {
	select {
	case <-s.done:
		s.stats.Drops.Add(uint64(n))
		return
	default:
	}
	links := s.linkList()
	nl := len(links)
	var txBytes uint64
	for i := 0; i < n; i++ {
		p := bufs[i][tundev.Offset : tundev.Offset+sizes[i]]
		l := links[0]
		if nl > 1 {
			l = links[FlowHash(p)%uint32(nl)]
		}
		l.out = wire.AppendFrame(l.out, wire.TypeData, p)
		txBytes += uint64(len(p))
	}
	s.stats.TxPackets.Add(uint64(n))
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
		if cap(l.out) > 4<<20 {
			l.out = nil
		} else {
			l.out = l.out[:0]
		}
		if err != nil {
			if l.retired.Load() {
				continue // hopped away from meanwhile; the packets are lost like on a dropped path
			}
			s.fail(fmt.Errorf("connection lost: %w", err))
			return
		}
	}
}
