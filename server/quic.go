package server

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/mirage-vpn/mirage/core/engine"
	"github.com/mirage-vpn/mirage/core/transport/quictun"
	"github.com/mirage-vpn/mirage/core/wire"
)

// quicConnKey carries the *quic.Conn of a request in its context.
type quicConnKey struct{}

// quicGateKey carries the listener's quictun.Gate to the request handler.
type quicGateKey struct{}

// ticketKeyPeriod is how long one derived session-ticket key is current;
// the previous one is still accepted, so a ticket lives 1–2 periods.
const ticketKeyPeriod = 7 * 24 * time.Hour

// ServeQUIC serves the QUIC transport (HTTP/3 on every socket in pcs: the
// port and the hopping range) until Close. A request whose body starts with
// a valid Hello becomes a tunnel; everything else — browsers, probers,
// wrong credentials — gets the fallback web site over HTTP/3.
func (s *Server) ServeQUIC(pcs []net.PacketConn) error {
	if len(pcs) == 0 {
		return errors.New("quic: no UDP sockets")
	}
	tlsConf, err := s.quicTLSConfig(time.Now())
	if err != nil {
		return err
	}
	qconf := &quic.Config{
		EnableDatagrams:         true,
		Allow0RTT:               true,
		InitialPacketSize:       quictun.InitialPacketSize,
		DisablePathMTUDiscovery: true, // packet sizing: see quictun.TunnelMTU
		MaxIdleTimeout:          3 * s.keepalive,
	}
	// One Gate paces every socket's reads to what the tunnels take from
	// quic-go (see quictun.Gate): with port hopping, one connection's
	// packets arrive on any of the sockets.
	gate := quictun.NewGate()
	s.quicGate.Store(gate)
	h3 := &http3.Server{
		Handler: http.HandlerFunc(s.serveH3),
		// Datagrams are on in qconf; the tunnel reads them from the QUIC
		// connection itself (quictun's package doc explains why).
		QUICConfig: qconf,
		Logger:     s.log,
		ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
			return context.WithValue(context.WithValue(ctx, quicConnKey{}, c), quicGateKey{}, gate)
		},
	}
	conns, pfs, err := s.quicSockets(pcs, gate)
	if err != nil {
		return err
	}
	defer func() {
		for _, pf := range pfs {
			pf.Close() // its flush timers (and the socket, which the transports closed)
		}
	}()
	errc := make(chan error, len(pcs))
	var trs []*quic.Transport
	for i, pc := range pcs {
		tr := &quic.Transport{Conn: conns[i], ConnectionIDLength: quictun.ConnectionIDLength}
		ln, err := tr.ListenEarly(http3.ConfigureTLSConfig(tlsConf), qconf)
		if err != nil {
			for _, t := range trs {
				t.Close()
			}
			tr.Close()
			return fmt.Errorf("quic listen on %s: %w", pc.LocalAddr(), err)
		}
		trs = append(trs, tr)
		go func() { errc <- s.serveQUICListener(ln, h3) }()
	}
	s.log.Info("quic listening", "sockets", len(pcs), "first", pcs[0].LocalAddr().String())
	select {
	case <-s.ctx.Done():
	case err = <-errc:
	}
	h3.Close()
	for _, t := range trs {
		t.Close()
	}
	if s.ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("quic: %w", err)
}

// serveQUICListener accepts QUIC connections and serves each over HTTP/3
// (h3), as a pending handshake from accept until its first request was
// authenticated as a tunnel or handed to the web site (s.pending, as for
// TCP): one source holds at most its share of the pending slots, a flood
// sheds the oldest, and a connection that makes no such request within the
// handshake timeout is closed — quic-go's idle timeout alone would keep it
// as long as the peer sends PINGs.
func (s *Server) serveQUICListener(ln *quic.EarlyListener, h3 *http3.Server) error {
	for {
		qc, err := ln.Accept(s.ctx)
		if err != nil {
			return err
		}
		go s.serveQUICConn(qc, h3)
	}
}

// quicPending is the handshake state of one QUIC connection.
type quicPending struct {
	adm   *admitted
	state atomic.Int32 // quicWaiting, then quicTunnel, quicWeb or quicExpired
	// Web requests in progress and when the last one ended (UnixNano):
	// a connection left to the web site is closed when idle.
	active  atomic.Int32
	lastUse atomic.Int64
}

const (
	quicWaiting = iota
	quicTunnel
	quicWeb
	quicExpired
)

// closeQUIC closes qc as an HTTP/3 server with nothing more to say.
func closeQUIC(qc *quic.Conn) {
	qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
}

func (s *Server) serveQUICConn(qc *quic.Conn, h3 *http3.Server) {
	remote := addrOf(qc.RemoteAddr())
	adm := s.pending.admit(remote, func() { closeQUIC(qc) })
	if adm == nil {
		s.log.Debug("too many handshakes in progress from this source", "remote", remote, "transport", "quic")
		closeQUIC(qc)
		return
	}
	p := &quicPending{adm: adm}
	s.quicPending.Store(qc, p)
	defer s.quicPending.Delete(qc)
	defer adm.release()
	deadline := time.AfterFunc(s.hsTimeout, func() {
		if p.state.CompareAndSwap(quicWaiting, quicExpired) {
			s.Stats.HandshakeTimeout.Add(1)
			s.log.Debug("no tunnel or web request within the handshake timeout", "remote", remote, "transport", "quic")
			closeQUIC(qc)
		}
	})
	defer deadline.Stop()
	go s.closeIdleWeb(qc, p)
	if err := h3.ServeQUICConn(qc); err != nil {
		s.log.Debug("http/3 connection ended", "remote", remote, "err", err)
	}
}

// closeIdleWeb closes qc once it is the web site's and has had no request
// in progress for s.quicWebIdle: quic-go's idle timeout alone would keep
// it as long as the peer sends PINGs.
func (s *Server) closeIdleWeb(qc *quic.Conn, p *quicPending) {
	t := time.NewTicker(s.quicWebIdle / 4)
	defer t.Stop()
	for {
		select {
		case <-qc.Context().Done():
			return
		case now := <-t.C:
			if p.state.Load() == quicWeb && p.active.Load() == 0 && now.Sub(time.Unix(0, p.lastUse.Load())) > s.quicWebIdle {
				closeQUIC(qc)
				return
			}
		}
	}
}

// settleQUIC ends the handshake of qc's connection: its request was
// authenticated (to: quicTunnel) or handed to the web site (quicWeb). It
// returns qc's state (nil: not accepted through serveQUICListener, as in
// some tests) and false when the handshake deadline closed the
// connection first.
func (s *Server) settleQUIC(qc *quic.Conn, to int32) (*quicPending, bool) {
	v, ok := s.quicPending.Load(qc)
	if !ok {
		return nil, true
	}
	p := v.(*quicPending)
	if p.state.CompareAndSwap(quicWaiting, to) {
		p.adm.release()
		return p, true
	}
	if to == quicTunnel {
		p.state.CompareAndSwap(quicWeb, quicTunnel) // a tunnel after web requests: no web idle timeout
	}
	st := p.state.Load()
	return p, st == quicTunnel || st == quicWeb
}

// quicSockets wraps the QUIC sockets for quic-go: with path FEC when fec
// is on (quictun.PathFEC: it answers protected packets with protected
// ones and passes the rest through), otherwise with receive coalescing
// (UDP GRO, quictun.WrapUDP).
func (s *Server) quicSockets(pcs []net.PacketConn, gate *quictun.Gate) ([]net.PacketConn, quictun.PathFECs, error) {
	conns := make([]net.PacketConn, len(pcs))
	if s.fec == nil {
		for i, pc := range pcs {
			conns[i] = quictun.WrapUDP(pc, gate)
		}
		return conns, nil, nil
	}
	pfs := make(quictun.PathFECs, len(pcs))
	for i, pc := range pcs {
		pf, err := quictun.NewServerPathFEC(pc, gate, s.pathFECKey, *s.fec)
		if err != nil {
			return nil, nil, fmt.Errorf("quic: %w", err)
		}
		conns[i], pfs[i] = pf.Conn(), pf
	}
	s.pathFEC.Store(&pfs)
	return conns, pfs, nil
}

// quicTLSConfig is the tcp-tls certificate with ALPN h3 and session-ticket
// keys derived from the certificate's private key and the current
// ticketKeyPeriod (plus the previous one), so tickets (and 0-RTT) survive a
// server restart without another secret on disk. The keys are chosen at
// start; a restart in a later period rotates them.
func (s *Server) quicTLSConfig(now time.Time) (*tls.Config, error) {
	c := s.tlsConf.Clone()
	c.NextProtos = []string{quictun.ALPN}
	c.MinVersion = tls.VersionTLS13
	var key any
	if len(c.Certificates) > 0 {
		key = c.Certificates[0].PrivateKey
	} else if c.GetCertificate != nil { // a reloadable certificate: the one at start
		if cert, err := c.GetCertificate(&tls.ClientHelloInfo{}); err == nil && cert != nil {
			key = cert.PrivateKey
		}
	}
	if key == nil {
		return c, nil // random keys: resumption works until a restart
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("quic: session ticket key: %w", err)
	}
	epoch := now.Unix() / int64(ticketKeyPeriod/time.Second)
	var keys [][32]byte
	for _, e := range []int64{epoch, epoch - 1} {
		k, err := hkdf.Key(sha256.New, der, nil, fmt.Sprintf("mirage quic session ticket key %d", e), 32)
		if err != nil {
			return nil, fmt.Errorf("quic: session ticket key: %w", err)
		}
		keys = append(keys, [32]byte(k))
	}
	c.SetSessionTicketKeys(keys)
	return c, nil
}

// serveH3 handles one HTTP/3 request: a tunnel when the body starts with a
// Hello that authenticates, the web site otherwise.
func (s *Server) serveH3(w http.ResponseWriter, r *http.Request) {
	qc, _ := r.Context().Value(quicConnKey{}).(*quic.Conn)
	if qc == nil || r.Method != http.MethodConnect || r.Proto != quictun.ConnectProtocol {
		s.h3Fallback(w, r, nil, "not a tunnel request", nil)
		return
	}
	remote := addrOf(qc.RemoteAddr())
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(s.hsTimeout))
	consumed := make([]byte, 0, wire.HeaderLen+256)
	hdr := make([]byte, wire.HeaderLen)
	n, err := io.ReadFull(r.Body, hdr)
	consumed = append(consumed, hdr[:n]...)
	if err != nil || wire.Type(hdr[0]) != wire.TypeHello {
		s.h3Fallback(w, r, consumed, "not a hello", nil)
		return
	}
	size := int(hdr[1])<<8 | int(hdr[2])
	if size > wire.MaxHandshakePayload {
		s.h3Fallback(w, r, consumed, "hello too large", nil)
		return
	}
	payload := make([]byte, size)
	n, err = io.ReadFull(r.Body, payload)
	consumed = append(consumed, payload[:n]...)
	if err != nil {
		s.h3Fallback(w, r, consumed, "truncated hello", nil)
		return
	}
	hello, err := wire.UnmarshalHello(payload)
	if err != nil {
		s.h3Fallback(w, r, consumed, err.Error(), nil)
		return
	}
	// A Hello that arrived as 0-RTT data could be a replay of a recorded
	// flight. Nothing is decided before the handshake completes: a
	// replayer cannot complete it (it lacks the client's key share), so a
	// replay never starts a session or touches one.
	select {
	case <-qc.HandshakeComplete():
	case <-time.After(s.hsTimeout):
		s.log.Debug("quic handshake did not complete; dropping the early request", "remote", remote)
		s.Stats.HandshakeTimeout.Add(1)
		return
	case <-s.ctx.Done():
		return
	}
	ekm := func() ([]byte, error) {
		st := qc.ConnectionState().TLS
		return st.ExportKeyingMaterial(engine.JoinLabel, nil, 32)
	}
	ss, welcome, err := s.authenticate(ekm, hello, remote)
	if err != nil {
		s.h3Fallback(w, r, consumed, err.Error(), err)
		return
	}
	if _, ok := s.settleQUIC(qc, quicTunnel); !ok {
		ss.dropPending()
		return
	}
	rc.SetReadDeadline(time.Time{})
	w.WriteHeader(http.StatusOK)
	str, err := w.(http3.HTTPStreamer).HTTPStream()
	if err != nil {
		s.log.Debug("take over the tunnel stream", "remote", remote, "err", err)
		ss.dropPending()
		return
	}
	gate, _ := r.Context().Value(quicGateKey{}).(*quictun.Gate)
	var pfs quictun.PathFECs
	if p := s.pathFEC.Load(); p != nil {
		pfs = *p
	}
	c := quictun.NewServerConn(qc, str, gate, pfs)
	s.attach(ss, welcome, hello, c, wire.NewReader(c, 256<<10), remote, "quic", nil)
}

// h3Fallback serves the web site for a request that is not a tunnel; the
// bytes read while looking for a Hello are put back in front of the body.
func (s *Server) h3Fallback(w http.ResponseWriter, r *http.Request, consumed []byte, reason string, refused error) {
	if qc, _ := r.Context().Value(quicConnKey{}).(*quic.Conn); qc != nil {
		if p, _ := s.settleQUIC(qc, quicWeb); p != nil { // handed to the web site
			p.active.Add(1)
			defer func() {
				p.lastUse.Store(time.Now().UnixNano())
				p.active.Add(-1)
			}()
		}
	}
	s.Stats.AuthFailures.Add(1)
	s.countRefusal(refused)
	s.log.Debug("not a valid client, serving the web site over HTTP/3", "remote", r.RemoteAddr, "reason", reason)
	http.NewResponseController(w).SetReadDeadline(time.Time{})
	if r.Method == http.MethodConnect {
		// A CONNECT stream has no end: a site handler must never wait for
		// its body.
		r.Body = http.NoBody
	} else if len(consumed) > 0 {
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(consumed), r.Body), r.Body}
	}
	if h, ok := s.fallback.(interface{ Handler() http.Handler }); ok {
		h.Handler().ServeHTTP(w, r)
		return
	}
	http.NotFound(w, r)
}
