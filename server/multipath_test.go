package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/config"
	"github.com/mirage-vpn/mirage/core/engine"
	"github.com/mirage-vpn/mirage/core/tundev/tundevtest"
	"github.com/mirage-vpn/mirage/core/wire"
)

// multiSession dials a tcp-tls session with p (dialer and credentials
// filled in) and runs its tunnel.
func multiSession(t *testing.T, r *rig, p engine.SessionParams) (*engine.Session, *tundevtest.ChannelTUN) {
	t.Helper()
	p.Dialers = []engine.Dialer{testDialer{r.addr}}
	p.Username, p.Password = "alice", "alice-pw"
	return startSession(t, p, 1420)
}

func onlySession(s *Server) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ss := range s.sessions {
		return ss
	}
	return nil
}

func waitLinks(t *testing.T, s *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for linkCount(s) != n {
		if time.Now().After(deadline) {
			t.Fatalf("server has %d connections, want %d", linkCount(s), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitClientLinks waits until the client session has n connections (the
// server counts a joining one before the client adds it).
func waitClientLinks(t *testing.T, sess *engine.Session, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(sess.LocalAddrs()) != n {
		if time.Now().After(deadline) {
			t.Fatalf("client has %d connections, want %d", len(sess.LocalAddrs()), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A connection that dies moves its traffic to the others; the session and
// its addresses survive and a replacement joins.
func TestMultipathFailover(t *testing.T) {
	for _, mode := range []uint8{wire.MuxFlow, wire.MuxActiveStandby, wire.MuxRoundRobin} {
		t.Run(fmt.Sprint("mux", mode), func(t *testing.T) {
			r := newRig(t, nil)
			sess, ctun := multiSession(t, r, engine.SessionParams{Parallel: 2, Mux: mode})
			waitLinks(t, r.srv, 2)
			waitClientLinks(t, sess, 2)
			v4 := sess.Welcome.ClientAddrs[0].Addr()
			before := sess.LocalAddrs()
			for i := range 2 { // kill the primary, then the other
				victim := onlySession(r.srv).linkList()[0].c
				victim.Close()
				// What was in flight on it is lost, as on a failed path;
				// once the client noticed, everything goes through.
				gone := victim.RemoteAddr().String()
				deadline := time.Now().Add(5 * time.Second)
				for slices.Contains(sess.LocalAddrs(), gone) {
					if time.Now().After(deadline) {
						t.Fatalf("the client still uses the dead connection %s", gone)
					}
					time.Sleep(5 * time.Millisecond)
				}
				// The server must have noticed too, or a packet down can
				// still take the dead connection (a CI run lost one so).
				for slices.ContainsFunc(onlySession(r.srv).linkList(), func(l *slink) bool { return l.c == victim }) {
					if time.Now().After(deadline) {
						t.Fatalf("the server still uses the dead connection %s", gone)
					}
					time.Sleep(5 * time.Millisecond)
				}
				for port := range 8 {
					up := tundevtest.UDP(v4, internet4, []byte{byte(i), byte(port), 'u'})
					up[20] = byte(port)
					ctun.Inbound <- up
					expect(t, r.tun.Outbound, up)
					down := tundevtest.UDP(internet4, v4, []byte{byte(i), byte(port), 'd'})
					down[22] = byte(port)
					r.tun.Inbound <- down
					expect(t, ctun.Outbound, down)
				}
				waitLinks(t, r.srv, 2)
				waitClientLinks(t, sess, 2)
			}
			if err := sess.Err(); err != nil {
				t.Fatalf("session ended: %v", err)
			}
			if after := sess.LocalAddrs(); len(after) != 2 || after[0] == before[0] && after[1] == before[1] {
				t.Fatalf("connections not replaced: before %v after %v", before, after)
			}
			if len(sess.Links()) != 2 || sess.Links()[0].Transport != "tcp-tls" || sess.Links()[0].Family != "ipv4" {
				t.Fatalf("link info: %+v", sess.Links())
			}
		})
	}
}

// seqFlows sends numbered packets of nFlows flows through in until stop,
// at most one every 200 µs; check verifies out delivers each flow's
// packets exactly in order, none lost or doubled.
type seqFlows struct {
	src, dst netip.Addr
	sent     []uint32
}

func (f *seqFlows) packet(flow int, seq uint32) []byte {
	var pl [8]byte
	binary.BigEndian.PutUint32(pl[:4], uint32(flow))
	binary.BigEndian.PutUint32(pl[4:], seq)
	p := tundevtest.UDP(f.src, f.dst, pl[:])
	p[20], p[21] = 0x40, byte(flow) // source port per flow
	return p
}

func (f *seqFlows) run(in chan []byte, nFlows int, stop <-chan struct{}) {
	f.sent = make([]uint32, nFlows)
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		flow := i % nFlows
		in <- f.packet(flow, f.sent[flow])
		f.sent[flow]++
		if i%8 == 7 {
			time.Sleep(time.Millisecond)
		}
	}
}

// collect checks the packets of nFlows flows on out while they arrive:
// each flow's sequence numbers must come exactly in order, none lost or
// doubled. It returns once final (the counts sent) is known and reached.
func collect(out chan []byte, nFlows int, final <-chan []uint32) error {
	next := make([]uint32, nFlows)
	var want []uint32
	var deadline <-chan time.Time
	for {
		if want != nil {
			done := true
			for i := range want {
				if next[i] < want[i] {
					done = false
				}
			}
			if done {
				return nil
			}
		}
		select {
		case w := <-final:
			want = w
			deadline = time.After(10 * time.Second)
		case p := <-out:
			if len(p) != 28+8 {
				continue
			}
			flow := binary.BigEndian.Uint32(p[28:32])
			seq := binary.BigEndian.Uint32(p[32:36])
			if int(flow) >= nFlows {
				continue
			}
			if seq != next[flow] {
				// Keep the pipeline moving so the senders can stop.
				go func() {
					for {
						select {
						case <-out:
						case <-time.After(15 * time.Second):
							return
						}
					}
				}()
				return fmt.Errorf("flow %d: got packet %d, want %d (reordered, lost or doubled)", flow, seq, next[flow])
			}
			next[flow]++
		case <-deadline:
			return fmt.Errorf("timeout: got %v of %v", next, want)
		}
	}
}

// Rotation every ~1 s under traffic, both directions: no packet of any
// flow is lost, doubled or reordered, and the session survives.
func TestRotationKeepsOrder(t *testing.T) {
	for _, tc := range []struct {
		name     string
		parallel int
		mux      uint8
	}{{"one", 1, wire.MuxFlow}, {"two-flow", 2, wire.MuxFlow}, {"two-standby", 2, wire.MuxActiveStandby}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, nil)
			sess, ctun := multiSession(t, r, engine.SessionParams{
				Parallel: tc.parallel, Mux: tc.mux, MaxLifetime: time.Second, MaxLifetimeJitter: 200 * time.Millisecond,
			})
			v4 := sess.Welcome.ClientAddrs[0].Addr()
			up := &seqFlows{src: v4, dst: internet4}
			down := &seqFlows{src: internet4, dst: v4}
			const flows = 6
			upFinal, downFinal := make(chan []uint32, 1), make(chan []uint32, 1)
			errs := make(chan error, 2)
			go func() { errs <- collect(r.tun.Outbound, flows, upFinal) }()
			go func() { errs <- collect(ctun.Outbound, flows, downFinal) }()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); up.run(ctun.Inbound, flows, stop); upFinal <- up.sent }()
			go func() { defer wg.Done(); down.run(r.tun.Inbound, flows, stop); downFinal <- down.sent }()
			seen := map[string]bool{}
			for t0 := time.Now(); time.Since(t0) < 4500*time.Millisecond; time.Sleep(50 * time.Millisecond) {
				for _, a := range sess.LocalAddrs() {
					seen[a] = true
				}
			}
			close(stop)
			wg.Wait()
			for range 2 {
				if err := <-errs; err != nil {
					t.Error(err)
				}
			}
			if err := sess.Err(); err != nil {
				t.Fatalf("session ended: %v", err)
			}
			// Each connection rotates about every 1.2 s (lifetime, check
			// interval, barrier).
			if rotations := len(seen) - tc.parallel; rotations < 3*tc.parallel {
				t.Fatalf("%d rotations in 4.5 s with a 1 s lifetime (local addresses %v)", rotations, seen)
			}
			t.Logf("%d rotations; %d packets up, %d down, all in order", len(seen)-tc.parallel, sum(up.sent), sum(down.sent))
		})
	}
}

func sum(s []uint32) (n uint32) {
	for _, x := range s {
		n += x
	}
	return n
}

// slowDialer dials like testDialer; every second connection it makes is
// slow: what is written on it, and what arrives on it, is held back for
// delay (a delay line, not a rate limit), so packets spread over the
// connections arrive out of order.
type slowDialer struct {
	addr  string
	delay time.Duration
	n     *atomic.Int32
}

func (d slowDialer) Protocol() string { return "tcp-tls" }
func (d slowDialer) Dial(ctx context.Context) (engine.Conn, error) {
	c, err := testDialer{d.addr}.Dial(ctx)
	if err != nil || d.n.Add(1)%2 == 1 {
		return c, err
	}
	sc := &slowConn{Conn: c, delay: d.delay, in: make(chan chunk, 4096), out: make(chan chunk, 4096)}
	go sc.readLoop()
	go sc.writeLoop()
	return sc, nil
}

type chunk struct {
	b   []byte
	at  time.Time
	err error
}

type slowConn struct {
	engine.Conn
	delay   time.Duration
	in, out chan chunk
	rest    []byte
	err     error
}

func (c *slowConn) readLoop() {
	for {
		b := make([]byte, 64<<10)
		n, err := c.Conn.Read(b)
		c.in <- chunk{b[:n], time.Now().Add(c.delay), err}
		if err != nil {
			return
		}
	}
}

func (c *slowConn) writeLoop() {
	for ch := range c.out {
		time.Sleep(time.Until(ch.at))
		if _, err := c.Conn.Write(ch.b); err != nil {
			return
		}
	}
}

func (c *slowConn) Read(b []byte) (int, error) {
	if len(c.rest) == 0 && c.err == nil {
		ch := <-c.in
		time.Sleep(time.Until(ch.at))
		c.rest, c.err = ch.b, ch.err
	}
	if len(c.rest) > 0 {
		n := copy(b, c.rest)
		c.rest = c.rest[n:]
		return n, nil
	}
	return 0, c.err
}

func (c *slowConn) Write(b []byte) (int, error) {
	c.out <- chunk{b: append([]byte(nil), b...), at: time.Now().Add(c.delay)}
	return len(b), nil
}

// countOrder reads flow 0's numbered packets from out until final (the
// count sent) is known and every packet came, and counts those that came
// after a later one (reordered); lost or doubled packets are an error.
func countOrder(out chan []byte, final <-chan []uint32) (reordered int, err error) {
	seen := map[uint32]bool{}
	var top uint32
	want := -1
	var deadline <-chan time.Time
	for want < 0 || len(seen) < want {
		select {
		case w := <-final:
			want = int(w[0])
			deadline = time.After(10 * time.Second)
		case p := <-out:
			if len(p) != 28+8 || binary.BigEndian.Uint32(p[28:32]) != 0 {
				continue
			}
			seq := binary.BigEndian.Uint32(p[32:36])
			if seen[seq] {
				return reordered, fmt.Errorf("packet %d doubled", seq)
			}
			seen[seq] = true
			if len(seen) > 1 && seq < top {
				reordered++
			}
			top = max(top, seq)
		case <-deadline:
			return reordered, fmt.Errorf("%d of %d packets came", len(seen), want)
		}
	}
	return reordered, nil
}

// round_robin over a fast and a slow connection (3 ms more each way): one
// flow's packets alternate between them, and the receivers (server and
// client) put them back in order, both directions; none lost or doubled.
// Without the reorder window about half the packets come out of order;
// with it, at most a few (a hole skipped when the busy test machine
// stalled a reader longer than the wait).
func TestRoundRobinInOrder(t *testing.T) {
	logs := &syncBuffer{}
	r := newRigWith(t, "127.0.0.1:0", nil, func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	sess, ctun := startSession(t, engine.SessionParams{
		Dialers:  []engine.Dialer{slowDialer{r.addr, 3 * time.Millisecond, new(atomic.Int32)}},
		Username: "alice", Password: "alice-pw", Parallel: 2, Mux: wire.MuxRoundRobin,
	}, 1420)
	waitLinks(t, r.srv, 2)
	waitClientLinks(t, sess, 2)
	v4 := sess.Welcome.ClientAddrs[0].Addr()
	up := &seqFlows{src: v4, dst: internet4}
	down := &seqFlows{src: internet4, dst: v4}
	upFinal, downFinal := make(chan []uint32, 1), make(chan []uint32, 1)
	type result struct {
		n   int
		err error
	}
	upRes, downRes := make(chan result, 1), make(chan result, 1)
	go func() { n, err := countOrder(r.tun.Outbound, upFinal); upRes <- result{n, err} }()
	go func() { n, err := countOrder(ctun.Outbound, downFinal); downRes <- result{n, err} }()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); up.run(ctun.Inbound, 1, stop); upFinal <- up.sent }()
	go func() { defer wg.Done(); down.run(r.tun.Inbound, 1, stop); downFinal <- down.sent }()
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	ur, dr := <-upRes, <-downRes
	for _, x := range []struct {
		dir  string
		r    result
		sent uint32
	}{{"up", ur, up.sent[0]}, {"down", dr, down.sent[0]}} {
		if x.r.err != nil {
			t.Errorf("%s: %v", x.dir, x.r.err)
		} else if x.r.n > int(x.sent)/500+2 {
			t.Errorf("%s: %d of %d packets out of order", x.dir, x.r.n, x.sent)
		}
	}
	if err := sess.Err(); err != nil {
		t.Fatalf("session ended: %v", err)
	}
	// Both connections carried traffic each way.
	for _, l := range sess.Links() {
		if l.TxBytes == 0 || l.RxBytes == 0 {
			t.Fatalf("round_robin left a connection unused: %+v", sess.Links())
		}
	}
	ro := onlySession(r.srv).reorder
	if ro == nil {
		t.Fatal("the server session has no reorder window in round_robin mode")
	}
	late, skipped, _ := sess.ReorderStats()
	t.Logf("up: %d packets, %d out of order (server: %d holes skipped, %d late); down: %d packets, %d out of order (client: %d skipped, %d late)",
		up.sent[0], ur.n, ro.Skipped.Load(), ro.Late.Load(), down.sent[0], dr.n, skipped, late)

	// The server sums the session up when it ends.
	sess.Close()
	re := regexp.MustCompile(`msg="session ended" user=alice .* connections=2 mux=round_robin rx_bytes=(\d+) tx_bytes=(\d+) reorder_late=\d+ reorder_skipped=\d+`)
	deadline := time.Now().Add(5 * time.Second)
	for re.FindStringSubmatch(logs.String()) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no session summary in the server log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	m := re.FindStringSubmatch(logs.String())
	if rx, _ := strconv.Atoi(m[1]); rx < int(up.sent[0])*36 {
		t.Errorf("summary rx_bytes=%s, want at least the %d packets of 36 bytes sent up", m[1], up.sent[0])
	}
	if tx, _ := strconv.Atoi(m[2]); tx < int(down.sent[0])*36 {
		t.Errorf("summary tx_bytes=%s, want at least the %d packets of 36 bytes sent down", m[2], down.sent[0])
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// darkConn can go dark like a path that drops everything: writes then
// block (as on a full socket buffer) and reads never return, until Close.
type darkConn struct {
	net.Conn
	dark   chan struct{}
	once   sync.Once
	closed chan struct{}
	cOnce  sync.Once
}

func (c *darkConn) goDark() { c.once.Do(func() { close(c.dark) }) }

func (c *darkConn) Write(b []byte) (int, error) {
	select {
	case <-c.dark:
		<-c.closed
		return 0, net.ErrClosed
	default:
		return c.Conn.Write(b)
	}
}

func (c *darkConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	select {
	case <-c.dark:
		<-c.closed
		return 0, net.ErrClosed
	default:
		return n, err
	}
}

func (c *darkConn) Close() error {
	c.cOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

type darkDialer struct {
	addr  string
	mu    sync.Mutex
	conns []*darkConn
}

func (d *darkDialer) Protocol() string { return "tcp-tls" }
func (d *darkDialer) Dial(ctx context.Context) (engine.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, err
	}
	dc := &darkConn{Conn: c, dark: make(chan struct{}), closed: make(chan struct{})}
	d.mu.Lock()
	d.conns = append(d.conns, dc)
	d.mu.Unlock()
	tc := tls.Client(dc, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return tlsConn{tc}, nil
}

// A connection whose path goes dark while the TUN reader is stuck writing
// to it is found by the keepalive check (no answer for 1.5 intervals), not
// only when its read deadline (3 intervals) expires: the keepalive loop
// must not wait behind the stuck write.
func TestMultipathDarkPathFoundByKeepalive(t *testing.T) {
	r := newRig(t, func(c *config.Server) { c.KeepaliveS = 1 })
	d := &darkDialer{addr: r.addr}
	var logs syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := engine.DialSession(ctx, engine.SessionParams{
		Dialers: []engine.Dialer{d}, Username: "alice", Password: "alice-pw", Parallel: 2,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctun := tundevtest.New(1420)
	runTunnel(t, sess, ctun)
	// Runs first (cleanups are LIFO): closing the connections releases
	// writes stuck on the dark one, so sess.Close cannot hang.
	t.Cleanup(func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, c := range d.conns {
			c.Close()
		}
	})
	waitClientLinks(t, sess, 2)
	v4 := sess.Welcome.ClientAddrs[0].Addr()

	// Keep packets of 16 flows coming, so the TUN reader writes to both
	// connections and blocks on the dark one.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; ; i++ {
			p := tundevtest.UDP(v4, internet4, make([]byte, 1200))
			p[21] = byte(i % 16)
			select {
			case ctun.Inbound <- p:
			case <-stop:
				return
			}
			if i%32 == 31 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	go func() {
		for {
			select {
			case <-r.tun.Outbound:
			case <-stop:
				return
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	d.mu.Lock()
	victim := d.conns[0]
	d.mu.Unlock()
	victim.goDark()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "connection lost") {
		if time.Now().After(deadline) {
			t.Fatalf("the dark connection was not given up within 10 s; log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if line := logs.String(); !strings.Contains(line, "no answer to keepalives") {
		t.Fatalf("the dark connection was found by something else than the keepalive check:\n%s", line)
	}
}
