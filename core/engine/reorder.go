package engine

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/mirage-vpn/mirage/core/tundev"
)

// ReorderWindow is how many packets a Reorder holds at most: a packet that
// arrives this far ahead of a hole gives up on the hole. At 1 Gbit/s of
// full-size packets it is about 12 ms of traffic; at 40 Mbit/s, 300 ms.
const ReorderWindow = 1024

// Reorder wait bounds: how long packets wait for a hole to fill. The wait
// follows twice the longest recent fill time (a maximum that decays by an
// eighth every reorderDecay, so it forgets in about a second), within
// these bounds, so two paths with different delays are reordered fully
// while a packet that is gone for good (a lost QUIC datagram, a dropped
// batch) stalls delivery only briefly.
const (
	minReorderWait     = 2 * time.Millisecond
	maxReorderWait     = 100 * time.Millisecond
	initialReorderWait = 20 * time.Millisecond
	reorderDecay       = 50 * time.Millisecond
)

// Reorder puts the packets of a round_robin session, numbered by the
// sender (SEQDATA frames) and spread over several connections, back in the
// order they were sent, so inner TCP sees no reordering. Every receiving
// connection of the session pushes into the one Reorder. Packets wait in a
// bounded window (ReorderWindow packets, and a wait of a few RTT
// differences); a hole that does not fill in time is skipped and a packet
// that comes after its hole was skipped is delivered at once (late rather
// than lost). Duplicates of held packets are dropped.
//
// Delivery goes to deliver, which adds the packet to the given batch (or
// routes it elsewhere); the batch is written to dev when full, at Flush and
// when a hole is skipped by the timer. The per-packet path takes one
// uncontended lock and copies a packet only when it has to wait.
type Reorder struct {
	dev     tundev.Device
	deliver func(p []byte, b *Batch)

	mu       sync.Mutex
	b        *Batch
	next     uint32 // the sequence number expected next (senders start at 0)
	held     int    // packets in ring
	ring     [ReorderWindow]heldPacket
	gapSince time.Time     // since when the current hole holds packets back
	est      time.Duration // decaying maximum of hole fill times
	decayed  time.Time     // when est last decayed
	// minWait and maxWait bound the wait (minReorderWait, maxReorderWait;
	// tests pin them).
	minWait, maxWait time.Duration
	timer            *time.Timer
	armed            bool
	stopped          bool
	// The last hole the timer skipped, [skipFrom, skipTo), when and after
	// what wait: a packet of it that comes later says the wait was short.
	skipFrom, skipTo uint32
	skipAt           time.Time
	skipWait         time.Duration

	// sources are the connections pushing packets (see Source).
	sources []*Source

	// Counters (diagnostics, tests). Passed counts the holes skipped
	// because every connection had delivered past them.
	Late, Skipped, Dups, Passed atomic.Uint64
}

// Source is one connection pushing into a Reorder. A connection delivers
// its own packets in the order they were sent (TCP does; QUIC datagrams on
// one path arrive in order unless the network reorders them), so once every
// source has delivered a packet numbered after a hole, nothing can fill the
// hole any more: it was lost (a QUIC datagram lost on the wire, a batch
// dropped by a full queue). The Reorder then skips it at once instead of
// holding everything behind it for the wait, which under 1 % loss meant a
// stall of milliseconds every millisecond. A packet that does come later
// (the network reordered it) is delivered late, as after a timed-out wait.
type Source struct {
	high uint32 // the highest sequence number delivered
	seen bool   // high is set
}

// AddSource registers a connection that will push packets.
func (r *Reorder) AddSource() *Source {
	src := &Source{}
	r.mu.Lock()
	r.sources = append(r.sources, src)
	r.mu.Unlock()
	return src
}

// RemoveSource unregisters src (its connection ended); the holes that
// only it could have filled are skipped now.
func (r *Reorder) RemoveSource(src *Source) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, x := range r.sources {
		if x == src {
			r.sources = append(r.sources[:i], r.sources[i+1:]...)
			break
		}
	}
	if !r.stopped && r.skipPassed() {
		r.flushLocked()
	}
}

// skipPassed skips the holes every source has delivered past; it reports
// whether it delivered anything.
func (r *Reorder) skipPassed() bool {
	if r.held == 0 || len(r.sources) == 0 {
		return false
	}
	low := r.sources[0].high
	for _, src := range r.sources {
		if !src.seen {
			return false // a connection that has not delivered yet
		}
		if int32(src.high-low) < 0 {
			low = src.high
		}
	}
	if int32(low-r.next) <= 0 {
		return false
	}
	r.Passed.Add(1)
	r.advanceTo(low)
	r.drain()
	return true
}

type heldPacket struct {
	seq uint32
	ok  bool
	p   []byte
}

// NewReorder returns a Reorder that delivers through deliver into batches
// of up to batchSize packets written to dev.
func NewReorder(dev tundev.Device, batchSize int, deliver func(p []byte, b *Batch)) *Reorder {
	r := &Reorder{
		dev: dev, deliver: deliver, b: NewBatch(batchSize),
		est: initialReorderWait / 2, minWait: minReorderWait, maxWait: maxReorderWait,
	}
	r.timer = time.AfterFunc(time.Hour, r.expire)
	r.timer.Stop()
	return r
}

// wait is how long packets wait behind a hole.
func (r *Reorder) wait() time.Duration {
	return min(max(2*r.est, r.minWait), r.maxWait)
}

// Push takes packet p numbered seq from src (nil: a connection not
// registered with AddSource); p is copied if it has to wait.
func (r *Reorder) Push(src *Source, seq uint32, p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	if src != nil && (!src.seen || int32(seq-src.high) > 0) {
		src.high, src.seen = seq, true
	}
	r.push(seq, p)
	r.skipPassed()
}

func (r *Reorder) push(seq uint32, p []byte) {
	d := int32(seq - r.next)
	switch {
	case d < 0: // its hole was skipped already
		r.Late.Add(1)
		if int32(seq-r.skipFrom) >= 0 && int32(seq-r.skipTo) < 0 {
			// The wait was too short: this is how long the hole
			// would have needed.
			r.noteFill(r.skipWait + time.Since(r.skipAt))
		}
		r.out(p)
		return
	case d >= ReorderWindow:
		// Too far ahead: give up on the holes that leave the window.
		r.advanceTo(seq - ReorderWindow + 1)
		r.drain()
		d = int32(seq - r.next)
	}
	if d == 0 {
		if r.held > 0 { // p filled the hole at the head
			r.noteFill(time.Since(r.gapSince))
		}
		r.out(p)
		r.next++
		r.drain()
		return
	}
	h := &r.ring[seq%ReorderWindow]
	if h.ok {
		r.Dups.Add(1)
		return
	}
	h.seq, h.ok, h.p = seq, true, append(h.p[:0], p...)
	if cap(h.p) > 4<<10 && len(p) <= 2<<10 {
		h.p = append([]byte(nil), p...) // don't keep a rare jumbo buffer
	}
	r.held++
	if !r.armed {
		r.gapSince = time.Now()
		r.armed = true
		r.timer.Reset(r.wait())
	}
}

// noteFill updates the fill-time estimate with a hole that took d to fill.
func (r *Reorder) noteFill(d time.Duration) {
	if d >= r.est {
		r.est = d
		return
	}
	if now := time.Now(); now.Sub(r.decayed) >= reorderDecay {
		r.decayed = now
		r.est = max(r.est-r.est/8, d)
	}
}

// drain delivers the held packets that are now in order; with packets
// still held behind a new hole, their wait starts now.
func (r *Reorder) drain() {
	for r.held > 0 {
		h := &r.ring[r.next%ReorderWindow]
		if !h.ok || h.seq != r.next {
			break
		}
		h.ok = false
		r.held--
		r.out(h.p)
		r.next++
	}
	if r.held == 0 {
		if r.armed {
			r.armed = false
			r.timer.Stop()
		}
		return
	}
	r.gapSince = time.Now()
	r.armed = true
	r.timer.Reset(r.wait())
}

// advanceTo moves the expected sequence number to target, delivering held
// packets before it in order and skipping the holes among them.
func (r *Reorder) advanceTo(target uint32) {
	for r.held > 0 && r.next != target {
		h := &r.ring[r.next%ReorderWindow]
		if h.ok && h.seq == r.next {
			h.ok = false
			r.held--
			r.out(h.p)
		} else {
			r.Skipped.Add(1)
		}
		r.next++
	}
	r.next = target
}

// expire skips the hole at the head when packets waited behind it long
// enough, and writes what that released.
func (r *Reorder) expire() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.armed || r.stopped || r.held == 0 {
		return
	}
	if left := r.wait() - time.Since(r.gapSince); left > 0 {
		r.timer.Reset(left) // the hole moved since the timer was set
		return
	}
	r.armed = false
	// The first held packet after the hole.
	for i := uint32(1); i < ReorderWindow; i++ {
		if h := &r.ring[(r.next+i)%ReorderWindow]; h.ok && h.seq == r.next+i {
			r.Skipped.Add(uint64(i))
			r.skipFrom, r.skipTo = r.next, r.next+i
			r.skipAt, r.skipWait = time.Now(), r.wait()
			r.next += i
			break
		}
	}
	r.drain()
	r.flushLocked()
}

func (r *Reorder) out(p []byte) {
	r.deliver(p, r.b)
	if r.b.Full() {
		r.flushLocked()
	}
}

func (r *Reorder) flushLocked() {
	if r.b.Len() > 0 {
		r.b.Flush(r.dev)
	}
}

// Flush writes the packets delivered so far (a receiver calls it at the
// end of each burst it read).
func (r *Reorder) Flush() {
	r.mu.Lock()
	r.flushLocked()
	r.mu.Unlock()
}

// Stop delivers what is held, in order, and ends the Reorder (the session
// ended): later pushes are dropped.
func (r *Reorder) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	r.stopped = true
	r.timer.Stop()
	r.advanceTo(r.next + ReorderWindow)
	r.flushLocked()
}
