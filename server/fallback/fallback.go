// Package fallback is the web site an unauthenticated TLS client sees on
// the tcp-tls port: either a small built-in static site (or a directory)
// served the way nginx would serve it, or a reverse proxy to another site.
// It must look like an ordinary web server, so nothing here names the VPN.
package fallback

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// Timeouts of the fallback server. All are bounded so slow or garbage
// clients cannot hold a connection forever.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 30 * time.Second
	maxHeaderBytes    = 16 << 10
)

// Modes of Config.Mode.
const (
	ModeStatic = "static"
	ModeProxy  = "proxy"
)

// Config selects what the fallback site serves.
type Config struct {
	// Mode is "static" (default when empty) or "proxy".
	Mode string
	// ProxyURL is the upstream for proxy mode, e.g. "https://www.example.com".
	ProxyURL string
	// Dir, in static mode, is a directory served instead of the built-in
	// site (no listings, no access outside it, dot files hidden).
	Dir string
}

// Site serves the fallback web site on connections handed over by the
// transport listener.
type Site struct {
	log     *slog.Logger
	handler http.Handler
	h1      *http.Server
	h2      *http2.Server
	closers []func() error

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// New builds the site described by cfg. log may be nil.
func New(cfg Config, log *slog.Logger) (*Site, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Site{log: log, conns: make(map[net.Conn]struct{})}
	var inner http.Handler
	switch cfg.Mode {
	case "", ModeStatic:
		if cfg.ProxyURL != "" {
			return nil, errors.New("fallback: proxy_url is set but mode is static")
		}
		if cfg.Dir == "" {
			inner = newBuiltinSite()
			break
		}
		st, err := os.Stat(cfg.Dir)
		if err != nil {
			return nil, fmt.Errorf("fallback: site directory: %w", err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("fallback: site directory %s is not a directory", cfg.Dir)
		}
		root, err := os.OpenRoot(cfg.Dir)
		if err != nil {
			return nil, fmt.Errorf("fallback: open site directory: %w", err)
		}
		s.closers = append(s.closers, root.Close)
		inner = &fileSite{fsys: root.FS()}
	case ModeProxy:
		if cfg.Dir != "" {
			return nil, errors.New("fallback: dir is set but mode is proxy")
		}
		target, err := parseProxyURL(cfg.ProxyURL)
		if err != nil {
			return nil, err
		}
		p := newProxy(target, log)
		s.closers = append(s.closers, func() error { p.Transport.(*http.Transport).CloseIdleConnections(); return nil })
		inner = p
	default:
		return nil, fmt.Errorf("fallback: unknown mode %q (want %q or %q)", cfg.Mode, ModeStatic, ModeProxy)
	}
	s.handler = nginxHeaders(inner)
	s.h1 = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	s.h2 = &http2.Server{IdleTimeout: idleTimeout}
	return s, nil
}

func parseProxyURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("fallback: proxy mode needs proxy_url")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("fallback: proxy_url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("fallback: proxy_url %q: scheme must be http or https", raw)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("fallback: proxy_url %q has no host", raw)
	}
	return u, nil
}

// Handler returns the site's HTTP handler (also used for HTTP/3).
func (s *Site) Handler() http.Handler { return s.handler }

// ServeConn serves HTTP on conn, an established TLS connection whose first
// bytes replay were already read by the caller; they are processed before
// anything else read from conn. alpn is the negotiated ALPN protocol: "h2"
// selects HTTP/2, anything else HTTP/1.1. ServeConn returns when the
// connection is finished, and it always closes conn.
//
// Requests that never reach the handler are answered by Go's HTTP servers
// themselves: malformed HTTP/1.1 gets Go's plain-text "400 Bad Request"
// (without a Server header) and a close; a bad HTTP/2 preface closes the
// connection. Both are bounded by the timeouts above.
func (s *Site) ServeConn(conn net.Conn, replay []byte, alpn string) {
	rc, c := newReplayConn(conn, replay)
	if !s.track(c, true) {
		_ = c.Close()
		return
	}
	defer s.track(c, false)
	defer c.Close()

	if alpn == http2.NextProtoTLS {
		s.h2.ServeConn(c, &http2.ServeConnOpts{Handler: s.handler, BaseConfig: s.h1})
		return
	}
	l := newOneConnListener(c, rc.closed)
	if err := s.h1.Serve(l); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
		s.log.Debug("fallback connection", "remote", conn.RemoteAddr(), "err", err)
	}
}

// track adds (add=true) or removes a served connection; adding fails once
// the site is closed.
func (s *Site) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conns, c)
		return true
	}
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// Close closes all connections being served and releases the site's
// resources. ServeConn calls made afterwards close their connection at once.
func (s *Site) Close() error {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = map[net.Conn]struct{}{}
	s.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
	err := s.h1.Close()
	for _, f := range s.closers {
		err = errors.Join(err, f())
	}
	return err
}

// replayConn returns the replayed bytes first, then reads from Conn.
// Like any net.Conn used by net/http, it is not read concurrently.
type replayConn struct {
	net.Conn
	replay    []byte
	closeOnce sync.Once
	closed    chan struct{}
	closeErr  error
}

// tlsReplayConn additionally exposes the TLS state, so HTTP/2 can apply
// its TLS checks and handlers see r.TLS.
type tlsReplayConn struct{ *replayConn }

func (c tlsReplayConn) ConnectionState() tls.ConnectionState {
	return c.Conn.(interface{ ConnectionState() tls.ConnectionState }).ConnectionState()
}

// newReplayConn wraps conn; the returned net.Conn is the wrapper to serve
// (with ConnectionState when conn has it), rc gives access to its state.
func newReplayConn(conn net.Conn, replay []byte) (rc *replayConn, c net.Conn) {
	rc = &replayConn{Conn: conn, replay: replay, closed: make(chan struct{})}
	if _, ok := conn.(interface{ ConnectionState() tls.ConnectionState }); ok {
		return rc, tlsReplayConn{rc}
	}
	return rc, rc
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.replay) > 0 {
		n := copy(b, c.replay)
		c.replay = c.replay[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

func (c *replayConn) Close() error {
	c.closeOnce.Do(func() {
		c.closeErr = c.Conn.Close()
		close(c.closed)
	})
	return c.closeErr
}

// oneConnListener hands one connection to http.Server.Serve; its second
// Accept blocks until that connection is closed (done) or the listener is
// closed, so Serve returns exactly when the connection is finished.
type oneConnListener struct {
	conn     net.Conn
	done     <-chan struct{}
	stop     chan struct{}
	stopOnce sync.Once

	mu       sync.Mutex
	accepted bool
}

func newOneConnListener(c net.Conn, done <-chan struct{}) *oneConnListener {
	return &oneConnListener{conn: c, done: done, stop: make(chan struct{})}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	first := !l.accepted
	l.accepted = true
	l.mu.Unlock()
	if first {
		return l.conn, nil
	}
	select {
	case <-l.done:
	case <-l.stop:
	}
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.stopOnce.Do(func() { close(l.stop) })
	l.mu.Lock()
	accepted := l.accepted
	l.accepted = true
	l.mu.Unlock()
	if !accepted {
		// Serve gave up before taking the connection.
		return l.conn.Close()
	}
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }
