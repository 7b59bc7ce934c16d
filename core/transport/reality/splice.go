package reality

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultSpliceIdle closes a spliced connection on which neither side has
// sent anything for this long. The real site's own timers normally end an
// idle connection much sooner (nginx: 60-75 s); this bounds the ones whose
// site keeps them open, so probers cannot pile up connections.
const DefaultSpliceIdle = 3 * time.Minute

// Splice connects conn to the real site: it dials Dest, writes replay
// (the bytes already read from conn), then copies both ways until both
// directions end, forwarding a half-close with CloseWrite where the
// connection supports it. ctx bounds the whole splice; conn is closed on
// return. The error is non-nil only if Dest could not be reached or ctx
// ended the splice.
func (s *Server) Splice(ctx context.Context, conn net.Conn, replay []byte) error {
	defer conn.Close()
	_ = conn.SetDeadline(time.Time{})
	dctx, cancel := context.WithTimeout(ctx, destDialTimeout)
	up, err := s.dial(dctx, "tcp", s.dest)
	cancel()
	if err != nil {
		return fmt.Errorf("reality splice: dial %s: %w", s.dest, err)
	}
	defer up.Close()
	stop := context.AfterFunc(ctx, func() {
		conn.Close()
		up.Close()
	})
	defer stop()
	replay = appendPending(replay, conn)
	if len(replay) > 0 {
		if _, err := up.Write(replay); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("reality splice: write to %s: %w", s.dest, err)
		}
	}
	idle := newIdleWatch(s.idle, func() {
		conn.Close()
		up.Close()
	})
	defer idle.stop()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		defer func() { done <- struct{}{} }()
		_, err := io.CopyBuffer(dst, idle.reader(src), make([]byte, 32<<10))
		if err == nil && wasReset(src) {
			err = syscall.ECONNRESET
		}
		if err != nil {
			// A reset on one side is passed on as a reset (not a FIN), so
			// the prober sees what the site did; otherwise just close.
			// EPIPE is a reset too: a write after the peer's RST, when
			// the other direction's read took the ECONNRESET first.
			if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
				abort(conn)
				abort(up)
			}
			conn.Close()
			up.Close()
			return
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			if cw.CloseWrite() == nil {
				return
			}
		}
		conn.Close()
		up.Close()
	}
	go pipe(up, conn)
	go pipe(conn, up)
	<-done
	<-done
	return ctx.Err()
}

// pendingWait bounds appendPending's read: bytes the prober sent with its
// first ones are already in the socket by the time Dest answered the dial.
const pendingWait = 2 * time.Millisecond

// appendPending appends to b what conn has already received, so the site
// gets the prober's first bytes in one write, as from a direct connection.
// Split writes would show: a site that reads once and closes leaves the
// second part unread, and its kernel answers with a reset instead of a FIN
// (`mirage-server check`'s garbage probe saw exactly that). A read error
// is left for the copy that follows (EOF and resets are sticky or seen by
// wasReset).
func appendPending(b []byte, conn net.Conn) []byte {
	if conn.SetReadDeadline(time.Now().Add(pendingWait)) != nil {
		return b
	}
	defer conn.SetReadDeadline(time.Time{})
	buf := make([]byte, 16<<10)
	n, _ := conn.Read(buf)
	return append(b, buf[:n]...)
}

// abort makes Close send a TCP reset instead of a FIN.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
}

// idleWatch closes a splice when no byte has moved either way for d.
type idleWatch struct {
	last atomic.Int64 // unix nanoseconds of the last read
	done chan struct{}
}

func newIdleWatch(d time.Duration, closeBoth func()) *idleWatch {
	w := &idleWatch{done: make(chan struct{})}
	w.last.Store(time.Now().UnixNano())
	go func() {
		t := time.NewTicker(max(d/8, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-w.done:
				return
			case now := <-t.C:
				if now.Sub(time.Unix(0, w.last.Load())) >= d {
					closeBoth()
					return
				}
			}
		}
	}()
	return w
}

func (w *idleWatch) stop() { close(w.done) }

// reader returns src whose reads count as activity.
func (w *idleWatch) reader(src io.Reader) io.Reader { return activityReader{src, w} }

type activityReader struct {
	r io.Reader
	w *idleWatch
}

func (a activityReader) Read(b []byte) (int, error) {
	n, err := a.r.Read(b)
	if n > 0 {
		a.w.last.Store(time.Now().UnixNano())
	}
	return n, err
}
