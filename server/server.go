// Package server is the Mirage VPN server: it accepts transport connections,
// authenticates Hellos, hands everything else to the camouflage web site,
// keeps the client table and routes packets between clients, the server's
// TUN device and each other.
package server

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/mirage-vpn/mirage/core/auth"
	"github.com/mirage-vpn/mirage/core/config"
	"github.com/mirage-vpn/mirage/core/engine"
	"github.com/mirage-vpn/mirage/core/fec"
	"github.com/mirage-vpn/mirage/core/ippkt"
	"github.com/mirage-vpn/mirage/core/shaping"
	"github.com/mirage-vpn/mirage/core/transport/quictun"
	"github.com/mirage-vpn/mirage/core/transport/reality"
	"github.com/mirage-vpn/mirage/core/transport/tlsx"
	"github.com/mirage-vpn/mirage/core/tundev"
	"github.com/mirage-vpn/mirage/core/wire"
)

// Fallback serves connections that did not authenticate, as a web server.
type Fallback interface {
	ServeConn(conn net.Conn, replay []byte, alpn string)
}

// Options are the server's parts, composed by the main package.
type Options struct {
	Config   *config.Server
	Logger   *slog.Logger
	TUN      tundev.Device
	Users    *auth.Users
	TLS      *tls.Config
	Fallback Fallback // nil: close unauthenticated connections
	// Reality, when set, shares the port: a ClientHello whose SNI is not
	// one of TLSNames goes to REALITY (authenticated, or spliced to its
	// destination site).
	Reality *reality.Server
	// TLSNames are the SNIs served by tcp-tls next to REALITY; "" (no SNI)
	// is always included.
	TLSNames []string
	// OnPadding, when set, is called with the payload size of every
	// padding frame a client sends (tests, diagnostics).
	OnPadding func(size int)
	// QUICWebIdle closes an HTTP/3 connection served by the web site after
	// this long without a request (0: 30 s, the fallback site's idle
	// timeout over TCP).
	QUICWebIdle time.Duration
}

// Stats are server-wide counters.
type Stats struct {
	Sessions     atomic.Int64
	AuthFailures atomic.Uint64
	SpoofDrops   atomic.Uint64
	NoRouteDrops atomic.Uint64
	QueueDrops   atomic.Uint64
	// DelayDrops are batches the send queue's CoDel dropped: they had
	// waited too long (see codel.go).
	DelayDrops     atomic.Uint64
	IsolationDrops atomic.Uint64
	// BadPacketDrops counts super-packets whose offload header does not
	// match the packet (from a client, or the TUN) or that a device refused.
	BadPacketDrops atomic.Uint64
	// Handshake outcomes (disjoint): a connection that joined a session,
	// wrong credentials or session proof, anything else handed to the
	// camouflage (web site or REALITY target), a replayed REALITY hello
	// (spliced too, counted only here), nothing sent before the deadline.
	HandshakeOK, HandshakeBadCredentials, HandshakeCamouflage atomic.Uint64
	HandshakeReplay, HandshakeTimeout                         atomic.Uint64
	// Traffic of all sessions: DATA from clients (rx) and frames to them
	// (tx, framed bytes).
	RxBytes, RxPackets, TxBytes atomic.Uint64
}

// ticketTTL is how long a resume ticket is accepted.
const ticketTTL = 24 * time.Hour

// queuePacketBytes is the full-size packet that send_queue_packets counts.
const queuePacketBytes = 1500

// Server is a running VPN server.
type Server struct {
	cfg *config.Server
	log *slog.Logger
	dev tundev.Device
	// queues are dev's queues (tundev.Queues): RunTUN reads each from a
	// goroutine of its own; connections write by flow (engine.NewFlowWriter).
	queues []tundev.Device
	// superSessions counts the sessions that take super-packets whole
	// (session.wantsSuper): while there are none, the TUN is read in
	// batches wireguard/tun has already cut.
	superSessions atomic.Int64
	users         *auth.Users
	tlsConf       *tls.Config
	fallback      Fallback
	reality       *reality.Server
	tlsNames      map[string]bool
	tickets       *auth.TicketKey
	limiter       *auth.Limiter
	pending       *admission
	quicPending   sync.Map     // *quic.Conn → *quicPending, while its handshake is pending
	limitLogged   atomic.Int64 // unix ns of the last "login budget" INFO line

	pool4, pool6 *Pool
	serverAddrs  []netip.Addr
	clientBits4  int
	clientBits6  int
	dns          []netip.Addr
	routes       []netip.Prefix
	keepalive    time.Duration
	hsTimeout    time.Duration
	queueLen     int   // batches a session's send queue holds at most
	queueBytes   int64 // bytes it holds at most
	// fec is how the server protects what it sends on QUIC datagrams to
	// clients that ask for it (nil: [connection] fec = "off").
	fec *fec.Config
	// fecMu guards fecEnded, the FEC counters of connections that ended.
	fecMu    sync.Mutex
	fecEnded fecCounters

	// table maps a client tunnel address to its session; read lock-free on
	// every packet, replaced copy-on-write under mu.
	table atomic.Pointer[map[netip.Addr]*session]
	// quicGate paces the QUIC sockets' reads (set by ServeQUIC; metrics).
	quicGate atomic.Pointer[quictun.Gate]
	// pathFEC are the QUIC sockets' path FEC wrappers (set by ServeQUIC
	// when fec is on) and pathFECKey the key clients get in the Welcome
	// (random per start).
	pathFEC    atomic.Pointer[quictun.PathFECs]
	pathFECKey [wire.PathFECKeyLen]byte

	mu       sync.Mutex
	sessions map[[16]byte]*session
	// userTotals is the traffic of each user's ended sessions (metrics).
	userTotals map[string]userTotal
	started    time.Time

	Stats Stats

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// shaping is [obfuscation] for what the server sends (nil: off).
	shaping     *shaping.Params
	onPadding   func(size int)
	quicWebIdle time.Duration
}

// New builds a server from its options.
func New(o Options) (*Server, error) {
	c := o.Config
	if c == nil || o.TUN == nil || o.Users == nil || o.TLS == nil {
		return nil, errors.New("server: config, TUN, users and TLS are required")
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v4, err := netip.ParsePrefix(c.TunnelNetwork)
	if err != nil {
		return nil, fmt.Errorf("tunnel_network: %w", err)
	}
	s := &Server{
		cfg: c, log: log, dev: o.TUN, users: o.Users, tlsConf: o.TLS, fallback: o.Fallback,
		reality: o.Reality, tlsNames: map[string]bool{"": true},
		tickets: auth.NewTicketKey(),
		limiter: auth.NewLimiter(max(c.Connection.MaxConcurrentAuth, 1), c.Connection.MaxHandshakesPerIP),
		pending: newAdmission(
			orDefault(c.Connection.MaxPendingHandshakes, config.DefaultMaxPendingHandshakes),
			orDefault(c.Connection.MaxPendingPerSource, config.DefaultMaxPendingPerSource),
			orDefault(c.Connection.SourcePrefixV4, config.DefaultSourcePrefixV4),
			orDefault(c.Connection.SourcePrefixV6, config.DefaultSourcePrefixV6)),
		pool4:    NewPool(v4),
		sessions: map[[16]byte]*session{}, userTotals: map[string]userTotal{}, started: time.Now(),
		// send_queue_packets full-size packets, counted in bytes: on a
		// long path a batch is often one packet, and a bound in batches
		// left a queue too short for the inner TCP's bursts (docs/perf-wan.md).
		queueLen:    c.Connection.SendQueuePackets,
		queueBytes:  int64(c.Connection.SendQueuePackets) * queuePacketBytes,
		fec:         c.Connection.FEC(),
		pathFECKey:  quictun.NewPathFECKey(),
		shaping:     c.Obfuscation.Shaping(),
		onPadding:   o.OnPadding,
		quicWebIdle: cmp.Or(o.QUICWebIdle, 30*time.Second),
	}
	if s.dev != nil {
		s.queues = tundev.Queues(s.dev)
	}
	for _, n := range o.TLSNames {
		s.tlsNames[strings.ToLower(n)] = true
	}
	s.serverAddrs = append(s.serverAddrs, v4.Addr())
	s.clientBits4 = v4.Bits()
	if c.TunnelNetworkV6 != "" {
		v6, err := netip.ParsePrefix(c.TunnelNetworkV6)
		if err != nil {
			return nil, fmt.Errorf("tunnel_network_v6: %w", err)
		}
		s.pool6 = NewPool(v6)
		s.serverAddrs = append(s.serverAddrs, v6.Addr())
		s.clientBits6 = v6.Bits()
	}
	for _, d := range c.DNSServers {
		a, err := netip.ParseAddr(d)
		if err != nil {
			return nil, fmt.Errorf("dns_servers: %w", err)
		}
		s.dns = append(s.dns, a)
	}
	for _, r := range c.Routes {
		p, err := netip.ParsePrefix(r)
		if err != nil {
			return nil, fmt.Errorf("routes: %w", err)
		}
		s.routes = append(s.routes, p.Masked())
	}
	s.keepalive = time.Duration(c.KeepaliveS) * time.Second
	if s.keepalive <= 0 {
		s.keepalive = 25 * time.Second
	}
	s.hsTimeout = time.Duration(c.Connection.HandshakeTimeoutS) * time.Second
	if s.hsTimeout <= 0 {
		s.hsTimeout = 10 * time.Second
	}
	empty := map[netip.Addr]*session{}
	s.table.Store(&empty)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Serve accepts connections on ln until Close. It returns nil after Close.
func (s *Server) Serve(ln net.Listener) error {
	go func() { <-s.ctx.Done(); ln.Close() }()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accept: %w", err)
			}
			// Out of file descriptors and similar: back off, keep serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed", "err", err)
			time.Sleep(delay)
			continue
		}
		delay = 0
		tlsx.TuneTCP(c, tlsx.TCPOptions{Congestion: s.cfg.Connection.CongestionControl, Log: s.log})
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handleConn(c)
		}()
	}
}

// Close stops accepting, tells every client and closes all sessions.
func (s *Server) Close() error {
	s.cancel()
	s.mu.Lock()
	var all []*session
	for _, ss := range s.sessions {
		all = append(all, ss)
	}
	s.mu.Unlock()
	for _, ss := range all {
		ss.shutdown(wire.CloseShutdown, "server shutting down")
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.log.Warn("some connections did not finish in time")
	}
	return nil
}

// handleConn runs the TLS handshake and the Hello check, then either serves
// the session or hands the connection to the fallback web site.
func (s *Server) handleConn(raw net.Conn) {
	remote := addrOf(raw.RemoteAddr())
	adm := s.pending.admit(remote, func() { raw.Close() })
	if adm == nil {
		s.log.Debug("too many handshakes in progress from this source", "remote", remote)
		raw.Close()
		return
	}
	release := adm.release
	defer release()

	deadline := time.Now().Add(s.hsTimeout)
	raw.SetDeadline(deadline)
	stop := context.AfterFunc(s.ctx, func() { raw.Close() })
	defer stop()
	tc, transport := s.demux(raw, deadline, remote, release)
	if tc == nil {
		return
	}
	if err := tc.HandshakeContext(s.ctx); err != nil {
		s.log.Debug("tls handshake failed", "remote", remote, "err", err)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.Stats.HandshakeTimeout.Add(1)
		} else {
			s.Stats.HandshakeCamouflage.Add(1) // a TLS client that gave up: nothing more to show it
		}
		raw.Close()
		return
	}
	alpn := tc.ConnectionState().NegotiatedProtocol
	br := bufio.NewReaderSize(tc, 256<<10)
	hdr, err := br.Peek(wire.HeaderLen)
	if err != nil {
		// Nothing (or too little) sent before the deadline: close, as an
		// idle web server would.
		s.Stats.HandshakeTimeout.Add(1)
		tc.Close()
		return
	}
	// toFallback serves the web site; refused is authenticate's error
	// (nil: not a valid Hello at all).
	toFallback := func(reason string, refused error) {
		s.Stats.AuthFailures.Add(1)
		s.countRefusal(refused)
		s.log.Debug("not a valid client, serving the web site", "remote", remote, "reason", reason)
		release()
		s.serveFallback(tc, br, alpn)
	}
	if wire.Type(hdr[0]) != wire.TypeHello {
		toFallback("not a hello", nil)
		return
	}
	n := int(hdr[1])<<8 | int(hdr[2])
	if n > wire.MaxHandshakePayload {
		toFallback("hello too large", nil)
		return
	}
	b, err := br.Peek(wire.HeaderLen + n)
	if err != nil {
		toFallback("truncated hello", nil)
		return
	}
	hello, err := wire.UnmarshalHello(b[wire.HeaderLen:])
	if err != nil {
		toFallback(err.Error(), nil)
		return
	}
	ekm := func() ([]byte, error) {
		cs := tc.ConnectionState()
		return cs.ExportKeyingMaterial(engine.JoinLabel, nil, 32)
	}
	ss, welcome, err := s.authenticate(ekm, hello, remote)
	if err != nil {
		toFallback(err.Error(), err)
		return
	}
	br.Discard(wire.HeaderLen + n)
	s.attach(ss, welcome, hello, tc, wire.NewReaderBufio(br), remote, transport, func() {
		raw.SetDeadline(time.Time{})
		release()
	})
}

// attach adds an authenticated connection to its session, sends the
// Welcome and serves the connection until it ends. ready runs once the
// Welcome is out.
func (s *Server) attach(ss *session, welcome *wire.Welcome, hello *wire.Hello, c net.Conn, r *wire.Reader, remote netip.Addr, transport string, ready func()) {
	// The connection joins the session before the Welcome is written, with
	// its write lock held, so no packet can overtake the Welcome and none
	// queued meanwhile is lost.
	l := &slink{c: c, transport: transport}
	l.wmu.Lock()
	added := ss.addLink(l)
	ss.mu.Lock()
	ss.pendingLinks.Add(-1)
	ss.mu.Unlock()
	if !added {
		l.wmu.Unlock()
		c.Close()
		ss.removeLink(l)
		return
	}
	if s.fec != nil && hello.Caps&wire.CapPathFEC != 0 && transport == "quic" && s.pathFEC.Load() != nil {
		// The sockets answer a client that protects its packets with
		// protected packets (quictun.PathFEC).
		welcome.Caps |= wire.CapPathFEC
		welcome.PathFECKey = s.pathFECKey
	}
	payload, err := welcome.Marshal()
	if err == nil {
		_, err = c.Write(wire.AppendFrame(nil, wire.TypeWelcome, payload))
	}
	l.wmu.Unlock()
	if err != nil {
		s.log.Debug("send welcome", "remote", remote, "err", err)
		c.Close()
		ss.removeLink(l)
		return
	}
	if ready != nil {
		ready()
	}
	s.Stats.HandshakeOK.Add(1)
	s.log.Info("client connected", "user", ss.user, "remote", remote, "transport", transport, "addrs", ss.addrs, "join", hello.Join != nil)
	ss.serveLink(l, r)
}

// demux picks the TLS server for a new connection. Without REALITY it is
// tcp-tls. With REALITY it reads the ClientHello first, without answering:
// an SNI of tcp-tls goes there; an authenticated REALITY hello gets the
// REALITY TLS server; everything else (bad or replayed auth, other SNIs,
// non-TLS bytes) is spliced to the real destination site, so a prober talks
// to that site. It returns nil when the connection was handled.
func (s *Server) demux(raw net.Conn, deadline time.Time, remote netip.Addr, release func()) (*tls.Conn, string) {
	if s.reality == nil {
		return tls.Server(raw, s.tlsConf), "tcp-tls"
	}
	hello, parsed, err := reality.ReadClientHello(raw, deadline)
	if err == nil && s.tlsNames[strings.ToLower(parsed.ServerName)] {
		return tls.Server(&replayConn{Conn: raw, pending: hello}, s.tlsConf), "tcp-tls"
	}
	replayed := false
	if err == nil {
		a, r := s.reality.Check(hello, parsed)
		if a != nil {
			s.log.Debug("reality client authenticated", "remote", remote, "sni", a.ServerName)
			return s.reality.TLSConn(raw, hello, a), "reality"
		}
		replayed = r
	}
	// Everything else, including a connection that sent nothing before the
	// deadline, goes to the real site, whose own timers then apply.
	s.Stats.AuthFailures.Add(1)
	if replayed {
		s.Stats.HandshakeReplay.Add(1)
	} else {
		s.Stats.HandshakeCamouflage.Add(1)
	}
	s.log.Debug("splicing to the destination site", "remote", remote, "reason", err)
	release()
	if err := s.reality.Splice(s.ctx, raw, hello); err != nil && s.ctx.Err() == nil {
		s.log.Debug("splice", "remote", remote, "err", err)
	}
	return nil, ""
}

// replayConn returns the bytes already read from a connection before the
// rest of it.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

func (s *Server) serveFallback(tc *tls.Conn, br *bufio.Reader, alpn string) {
	if s.fallback == nil {
		tc.Close()
		return
	}
	replay, _ := br.Peek(br.Buffered())
	replay = append([]byte(nil), replay...)
	tc.NetConn().SetDeadline(time.Time{})
	if alpn == "h2" && !h2PrefaceStart(replay) {
		// What a web server such as nginx answers on HTTP/2 to bytes that
		// are not the client preface: its SETTINGS, then GOAWAY
		// (PROTOCOL_ERROR). Writing it here, before closing, makes the
		// answer deterministic (an HTTP/2 library may close before its
		// SETTINGS are flushed), so a rejected client always recognises it.
		tc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		fr := http2.NewFramer(tc, nil)
		fr.WriteSettings(
			http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 128},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65536},
			http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16777215},
		)
		fr.WriteGoAway(0, http2.ErrCodeProtocol, nil)
		tc.Close()
		return
	}
	s.fallback.ServeConn(tc, replay, alpn)
}

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// h2PrefaceStart reports whether b could be the start of the HTTP/2 client
// preface.
func h2PrefaceStart(b []byte) bool {
	n := min(len(b), len(h2Preface))
	return n > 0 && string(b[:n]) == h2Preface[:n]
}

func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// countRefusal counts a connection handed to the camouflage: as bad
// credentials when authenticate refused the password or session proof
// (err), as camouflage otherwise (not a Hello, rate limit, no address...).
func (s *Server) countRefusal(err error) {
	if errors.Is(err, errBadCredentials) || errors.Is(err, errBadJoin) {
		s.Stats.HandshakeBadCredentials.Add(1)
	} else {
		s.Stats.HandshakeCamouflage.Add(1)
	}
}

var (
	errBadCredentials = errors.New("bad credentials")
	errBadJoin        = errors.New("bad session join")
)

// authenticate checks the Hello and returns the session the connection
// joins (a new one, or an existing one for a valid join).
// ekm is the connection's TLS exporter for the join label.
func (s *Server) authenticate(ekmFn func() ([]byte, error), h *wire.Hello, remote netip.Addr) (*session, *wire.Welcome, error) {
	ok := false
	if len(h.Ticket) > 0 {
		if u, err := s.tickets.Open(h.Ticket, time.Now()); err == nil && u == h.Username && s.users.Has(u) {
			ok = true
		}
	}
	if !ok {
		if h.Password == "" {
			return nil, nil, errBadCredentials
		}
		var err error
		if ok, err = s.checkPassword(h.Username, h.Password, remote); err != nil {
			return nil, nil, err
		}
	}
	if !ok {
		return nil, nil, errBadCredentials
	}
	s.limiter.MarkGood(remote)
	ticket := s.tickets.Issue(h.Username, ticketTTL)
	if h.Join != nil {
		ekm, err := ekmFn()
		if err != nil {
			return nil, nil, fmt.Errorf("channel binding: %w", err)
		}
		s.mu.Lock()
		ss := s.sessions[h.Join.SessionID]
		s.mu.Unlock()
		if ss == nil || ss.user != h.Username ||
			!auth.CheckJoinProof(ss.joinKey[:], ss.id, h.Username, ekm, h.Join.Proof[:]) {
			return nil, nil, errBadJoin
		}
		w := ss.welcome(s)
		w.Ticket = ticket
		ss.pendingLinks.Add(1)
		return ss, w, nil
	}
	ss, err := s.newSession(h)
	if err != nil {
		return nil, nil, err
	}
	w := ss.welcome(s)
	w.Ticket = ticket
	return ss, w, nil
}

// authWait bounds how long a login waits for an Argon2 slot.
const authWait = 3 * time.Second

// checkPassword runs one Argon2 check within the login budget: sources
// that logged in before go first and skip the per-user back-off; others
// are refused without hashing when their address's bucket is empty, when
// the user name failed too often lately, or when the queue is full.
func (s *Server) checkPassword(user, password string, remote netip.Addr) (bool, error) {
	l := s.limiter
	good := l.Good(remote)
	if !good {
		if !l.Allow(remote) {
			l.RefusedSource.Add(1)
			s.noteLimited()
			return false, errors.New("rate limited: too many logins from this address")
		}
		if !l.UserAllowed(user) {
			l.RefusedUser.Add(1)
			s.noteLimited()
			return false, errors.New("rate limited: too many failed logins for this user name")
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, authWait)
	defer cancel()
	release, err := l.Acquire(ctx, good)
	if err != nil {
		l.RefusedBusy.Add(1)
		s.noteLimited()
		return false, fmt.Errorf("rate limited: %w", err)
	}
	ok := s.users.Verify(user, password)
	release()
	if !ok {
		l.UserFailed(user)
	}
	return ok, nil
}

// noteLimited logs, at most every limitLogEvery, that the login budget is
// refusing attempts, with the counts so far.
func (s *Server) noteLimited() {
	now := time.Now().UnixNano()
	last := s.limitLogged.Load()
	if now-last < int64(limitLogEvery) || !s.limitLogged.CompareAndSwap(last, now) {
		return
	}
	l := s.limiter
	s.log.Info("login budget is refusing attempts (a flood?)",
		"by_address", l.RefusedSource.Load(), "by_user_name", l.RefusedUser.Load(), "busy", l.RefusedBusy.Load())
}

// limitLogEvery spaces the login budget's INFO lines.
const limitLogEvery = 10 * time.Second

// newSession allocates addresses (honouring requests; a request for an
// address held by another session of the same user replaces that session,
// which is how a reconnecting client gets its addresses back) and publishes
// the session in the client table.
func (s *Server) newSession(h *wire.Hello) (*session, error) {
	ss := &session{srv: s, user: h.Username, mux: h.Mux, queue: make(chan *outBuf, s.queueLen), done: make(chan struct{}), started: time.Now(),
		peerGSO: h.Caps&wire.CapGSO != 0}
	if h.Mux == wire.MuxRoundRobin {
		// The client numbers its packets; put them back in order
		// before routing them.
		var rc routeCache // used by the reorder's single consumer
		ss.reorder = engine.NewReorder(engine.NewFlowWriter(s.dev), s.dev.BatchSize(), func(p []byte, b *engine.Batch) { ss.route(p, b, &rc) })
	}
	rand.Read(ss.id[:])
	rand.Read(ss.joinKey[:])
	ss.pendingLinks.Add(1)

	s.mu.Lock()
	defer s.mu.Unlock()
	var want4, want6 netip.Addr
	for _, a := range h.Request {
		if a.Is4() {
			want4 = a
		} else {
			want6 = a
		}
	}
	tbl := *s.table.Load()
	for _, a := range []netip.Addr{want4, want6} {
		if old := tbl[a]; a.IsValid() && old != nil && old.user == h.Username {
			s.removeLocked(old)
			go old.shutdown(wire.CloseReplaced, "replaced by a new connection")
		}
	}
	a4, err := s.pool4.Allocate(want4)
	if err != nil {
		return nil, err
	}
	ss.addrs = append(ss.addrs, a4)
	if s.pool6 != nil {
		a6, err := s.pool6.Allocate(want6)
		if err != nil {
			s.pool4.Release(a4)
			return nil, err
		}
		ss.addrs = append(ss.addrs, a6)
	}
	s.sessions[ss.id] = ss
	s.publishLocked()
	s.Stats.Sessions.Add(1)
	if ss.wantsSuper() {
		s.superSessions.Add(1)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ss.writer()
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ss.liveness()
	}()
	if s.shaping != nil && s.shaping.Heartbeat > 0 {
		ss.lastSend.Store(time.Now().UnixNano())
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			shaping.Heartbeats(ss.done, shaping.New(*s.shaping), &ss.lastSend, ss.heartbeat)
		}()
	}
	return ss, nil
}

// removeLocked takes ss out of the tables and frees its addresses.
func (s *Server) removeLocked(ss *session) {
	if s.sessions[ss.id] != ss {
		return
	}
	delete(s.sessions, ss.id)
	for _, a := range ss.addrs {
		if a.Is4() {
			s.pool4.Release(a)
		} else if s.pool6 != nil {
			s.pool6.Release(a)
		}
	}
	s.publishLocked()
	s.Stats.Sessions.Add(-1)
	if ss.wantsSuper() {
		s.superSessions.Add(-1)
	}
}

func (s *Server) publishLocked() {
	m := make(map[netip.Addr]*session, 2*len(s.sessions))
	for _, ss := range s.sessions {
		for _, a := range ss.addrs {
			m[a] = ss
		}
	}
	s.table.Store(&m)
}

// SessionCount returns the number of live sessions.
func (s *Server) SessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// RunTUN reads the server's TUN device and sends each packet to the client
// owning its destination, batching per session. A multi-queue device is
// read by one goroutine per queue. It returns when the device is closed (or
// a queue keeps failing).
func (s *Server) RunTUN() error {
	if len(s.queues) == 0 {
		return errors.New("run tun: the server has no TUN device")
	}
	errc := make(chan error, len(s.queues))
	for _, q := range s.queues {
		go func() { errc <- s.readQueue(q) }()
	}
	return <-errc
}

// readQueue pumps one TUN queue into the sessions' staged batches. While
// some session takes super-packets whole (superSessions), a SuperDevice is
// read one whole packet at a time (readSuper); otherwise, and on other
// devices, in batches that wireguard/tun has already cut (readBatch).
func (s *Server) readQueue(dev tundev.Device) error {
	sd := tundev.Super(dev)
	bs := max(dev.BatchSize(), 1)
	bufs := make([][]byte, bs)
	for i := range bufs {
		bufs[i] = make([]byte, tundev.Offset+tundev.MaxPacket)
	}
	sizes := make([]int, bs)
	var touched []*session
	var rc routeCache
	var sp engine.Splitter
	errRun := 0
	for {
		var err error
		if sd != nil && s.superSessions.Load() > 0 {
			err = s.readSuper(sd, bufs[0], &sp, &rc)
		} else {
			touched, err = s.readBatch(dev, bufs, sizes, touched, &rc)
		}
		if err != nil {
			if s.ctx.Err() != nil || isClosed(err) {
				return nil
			}
			errRun++
			if errRun > 1000 {
				return fmt.Errorf("tun read: %w", err)
			}
			time.Sleep(time.Millisecond)
			continue
		}
		errRun = 0
	}
}

// readBatch reads one batch of packets and stages each for its session.
func (s *Server) readBatch(dev tundev.Device, bufs [][]byte, sizes []int, touched []*session, rc *routeCache) ([]*session, error) {
	n, err := dev.Read(bufs, sizes, tundev.Offset)
	if n > 0 {
		// locked is the session whose stageMu is held: once per run
		// of packets for one session, never two at a time.
		var locked *session
		for i := 0; i < n; i++ {
			p := bufs[i][tundev.Offset : tundev.Offset+sizes[i]]
			dst, ok := ippkt.Dst(p)
			if !ok {
				s.Stats.NoRouteDrops.Add(1)
				continue
			}
			ss := rc.lookup(s, dst)
			if ss == nil {
				s.Stats.NoRouteDrops.Add(1)
				continue
			}
			if ss != locked {
				if locked != nil {
					locked.stageMu.Unlock()
				}
				ss.stageMu.Lock()
				locked = ss
			}
			if ss.stage(p) {
				touched = append(touched, ss)
			}
		}
		if locked != nil {
			locked.stageMu.Unlock()
		}
		for i, ss := range touched {
			ss.flushStaged()
			touched[i] = nil
		}
		touched = touched[:0]
	}
	return touched, err
}

// readSuper reads one packet whole and stages it for its session: a
// super-packet goes in one GSO frame when the session can take it (see
// session.stageSuper).
func (s *Server) readSuper(dev tundev.SuperDevice, buf []byte, sp *engine.Splitter, rc *routeCache) error {
	n, o, err := dev.ReadSuper(buf, tundev.Offset)
	if err != nil {
		return err
	}
	p := buf[tundev.Offset : tundev.Offset+n]
	dst, ok := ippkt.Dst(p)
	if !ok {
		s.Stats.NoRouteDrops.Add(1)
		return nil
	}
	ss := rc.lookup(s, dst)
	if ss == nil {
		s.Stats.NoRouteDrops.Add(1)
		return nil
	}
	ss.stageMu.Lock()
	if engine.IsSuper(o) {
		ss.stageSuper(p, o, sp)
	} else {
		ss.stage(p)
	}
	ss.stageMu.Unlock()
	ss.flushStaged()
	return nil
}

// orDefault returns v, or def when v is not set (a config built without
// ApplyDefaults, as in tests).
func orDefault(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}
