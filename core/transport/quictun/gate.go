package quictun

import (
	"sync"
	"sync/atomic"
	"time"
)

// Receive pacing (Gate).
//
// quic-go keeps at most 128 received DATAGRAM frames per connection and
// discards the rest, after their packets were acknowledged: the peer's
// congestion control never learns of it, the inner TCP sees loss. The
// queue overflows whenever the goroutine that drains it (Conn's datagram
// reader) is not scheduled for about a millisecond while quic-go's socket
// reader and connection loop keep running, which on a busy two-core
// machine happened to one datagram in ten of a bulk transfer.
//
// A Gate closes that gap from outside quic-go: the socket wrapper
// (WrapUDP) counts the packets it hands to quic-go that may carry a
// datagram, every Conn reading datagrams counts what it took, and while
// more than gateHigh are between the two the socket wrapper stops handing
// out packets until the readers are down to gateLow. Packets then wait in
// the kernel's socket buffer, where a real overflow is a loss that the
// sender's congestion control sees, instead of being dropped silently
// after the acknowledgement.
//
// The count is an estimate: a packet of at least minDatagramPacket bytes
// is counted as one datagram (acknowledgement-only packets are smaller).
// A full-size tunnel packet fills a QUIC packet on its own, and bulk
// transfers of those are what overflowed the queue, so for them the count
// is exact. quic-go packs smaller datagrams several to a packet (inner TCP
// acknowledgements, small UDP); they are undercounted and paced less, so
// at worst quic-go drops them as it would without a Gate. A large packet
// without a datagram is counted but never taken. A wait therefore never
// lasts longer than gateMaxWait: then the count starts from zero again. A
// Gate shared by several sockets and connections (a server) bounds their
// sum, which is stricter than quic-go's per-connection limit but never
// wedges. One connection whose reader is stuck (its tunnel stopped
// reading) would keep the shared count high and make every client wait
// gateMaxWait again and again; so after a wait times out the Gate stops
// pacing for a while (gateBackoffMin, doubling up to gateBackoffMax while
// waits keep timing out): a stuck connection costs the others at most one
// gateMaxWait per gateBackoffMax, and loses its own datagrams in quic-go's
// queue as it would without a Gate.
type Gate struct {
	pending atomic.Int64 // counted packets not yet taken
	waiters atomic.Int32
	// offUntil (UnixNano; 0: pacing on) ends a pause after a timed-out
	// wait.
	offUntil atomic.Int64
	// Timeouts counts waits that timed out (diagnostics, tests).
	Timeouts atomic.Uint64

	mu   sync.Mutex
	wake chan struct{} // closed (and replaced) when pending falls to gateLow
	// backoff is the last pause, lastTimeout when the last wait timed out.
	backoff     time.Duration
	lastTimeout time.Time
}

const (
	// gateHigh leaves room below quic-go's 128 for one more batch read.
	gateHigh = 96
	gateLow  = 64
	// gateMaxWait bounds one wait, so a count that drifted (large packets
	// without a datagram) costs a pause, never a stall. At 1 ms the
	// readers of the benchmark's busy two-core machine were late often
	// enough that the reset let the queue overflow (~500 resets and 6 000–9 000
	// inner retransmits in a 5 s upload); at 5 ms there was one reset and
	// no retransmit. The kernel's socket buffer holds 5 ms at several
	// Gbit/s.
	gateMaxWait = 5 * time.Millisecond
	// minDatagramPacket is the smallest QUIC packet counted as carrying a
	// datagram: short header with our 20-byte connection IDs (1 + 20 + 1)
	// + DATAGRAM frame (1 + 1) + quarter stream id and type byte (2) + an
	// IPv4 header (20) + AEAD tag (16) is 62; an acknowledgement-only
	// packet is 45–60 bytes.
	minDatagramPacket = 62
)

// Pauses after a timed-out wait; a timeout more than gateCalm after the
// last one starts again from gateBackoffMin. Variables so tests can
// lengthen them.
var (
	gateBackoffMin = 50 * time.Millisecond
	gateBackoffMax = time.Second
	gateCalm       = 10 * time.Second
)

// NewGate returns a Gate with nothing pending.
func NewGate() *Gate {
	return &Gate{wake: make(chan struct{})}
}

// handedOut counts n packets given to quic-go.
func (g *Gate) handedOut(n int) {
	if g != nil && n > 0 {
		g.pending.Add(int64(n))
	}
}

// Took counts one datagram taken from quic-go. A nil Gate does nothing.
func (g *Gate) Took() {
	if g == nil {
		return
	}
	p := g.pending.Add(-1)
	if p < 0 {
		// An undercount (a datagram in a packet below minDatagramPacket):
		// back to zero, unless handedOut raced in between.
		g.pending.CompareAndSwap(p, 0)
		p = 0
	}
	if p <= gateLow && g.waiters.Load() > 0 {
		g.release()
	}
}

func (g *Gate) release() {
	g.mu.Lock()
	close(g.wake)
	g.wake = make(chan struct{})
	g.mu.Unlock()
}

// wait blocks while more than gateHigh packets are pending, at most
// gateMaxWait; t is the caller's reusable timer (nil on first use).
func (g *Gate) wait(t **time.Timer) {
	if g == nil || g.pending.Load() <= gateHigh {
		return
	}
	if off := g.offUntil.Load(); off != 0 {
		if time.Now().UnixNano() < off {
			return // pacing paused
		}
		if g.offUntil.CompareAndSwap(off, 0) {
			g.pending.Store(0) // what was handed out meanwhile is unknown
		}
		return
	}
	g.waiters.Add(1)
	defer g.waiters.Add(-1)
	if *t == nil {
		*t = time.NewTimer(gateMaxWait)
	} else {
		(*t).Reset(gateMaxWait)
	}
	defer (*t).Stop()
	for {
		g.mu.Lock()
		wake := g.wake
		g.mu.Unlock()
		if g.pending.Load() <= gateLow {
			return
		}
		select {
		case <-wake:
		case <-(*t).C:
			// Drifted, or a reader is stalled for longer than the queue
			// would last anyway: pause pacing, then count afresh.
			g.timedOut(time.Now())
			return
		}
	}
}

// timedOut pauses pacing after a wait timed out at now.
func (g *Gate) timedOut(now time.Time) {
	g.Timeouts.Add(1)
	g.mu.Lock()
	if g.backoff == 0 || now.Sub(g.lastTimeout) > gateCalm {
		g.backoff = gateBackoffMin
	} else {
		g.backoff = min(2*g.backoff, gateBackoffMax)
	}
	g.lastTimeout = now
	g.offUntil.Store(now.Add(g.backoff).UnixNano())
	g.mu.Unlock()
	g.pending.Store(0)
}
