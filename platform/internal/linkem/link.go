// Package linkem is a user-space WAN link emulator for benchmarks and
// tests. This kernel has no netem, so the emulator sits in a router network
// namespace on a TUN device that policy routing sends every forwarded packet
// through; it applies, per direction and independently: random loss, a rate
// bottleneck with a drop-tail queue, a fixed one-way delay and optional
// jitter, and writes the packet back to the TUN, from where the kernel
// routes it on. Packets of one direction never overtake each other (jitter
// only ever adds to a packet's delay up to the previous packet's exit time).
//
// The model (Link) is pure and deterministic for a given seed; the runner
// (Run, Linux only) feeds it packets from a TUN device and times their
// release.
package linkem

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Params describe one direction of the emulated link.
type Params struct {
	Delay  time.Duration // fixed one-way propagation delay
	Jitter time.Duration // extra delay, uniform in [0, Jitter], order kept
	Loss   float64       // probability that a packet is lost, 0..1
	// RateBps is the bottleneck rate in bits per second; 0 means unlimited
	// (no queue either).
	RateBps int64
	// QueueBytes bounds the bytes waiting for the bottleneck (drop-tail);
	// 0 means one bandwidth-delay product at the round-trip time 2 × Delay.
	QueueBytes int
}

// Validate reports the first parameter that is out of range.
func (p Params) Validate() error {
	switch {
	case p.Delay < 0 || p.Delay > 10*time.Second:
		return fmt.Errorf("delay %v: want 0..10s", p.Delay)
	case p.Jitter < 0 || p.Jitter > 10*time.Second:
		return fmt.Errorf("jitter %v: want 0..10s", p.Jitter)
	case !(p.Loss >= 0 && p.Loss <= 1):
		return fmt.Errorf("loss %v: want 0..1", p.Loss)
	case p.RateBps < 0:
		return fmt.Errorf("rate %d bit/s: must not be negative", p.RateBps)
	case p.QueueBytes < 0:
		return fmt.Errorf("queue %d bytes: must not be negative", p.QueueBytes)
	}
	return nil
}

// Queue is the drop-tail limit in bytes that the parameters give.
func (p Params) Queue() int {
	if p.QueueBytes > 0 || p.RateBps == 0 {
		return p.QueueBytes
	}
	// One BDP at RTT = 2 × Delay, at least 64 full-size packets so a
	// zero-delay link still has a queue.
	bdp := int(p.RateBps / 8 * int64(2*p.Delay) / int64(time.Second))
	return max(bdp, 64*1500)
}

// Stats count what a direction did. All fields are updated atomically.
type Stats struct {
	Packets    atomic.Uint64 // packets offered to the link
	Bytes      atomic.Uint64 // their bytes
	LossDrops  atomic.Uint64 // lost to the random loss
	QueueDrops atomic.Uint64 // dropped because the queue was full
	Delivered  atomic.Uint64 // packets released at the far end
	DelivBytes atomic.Uint64 // their bytes
}

// Link is the model of one direction. It is not safe for concurrent use:
// one reader goroutine admits packets.
type Link struct {
	p     Params
	queue int
	rng   *rand.Rand
	// busyUntil is when the bottleneck finishes sending what it has taken.
	busyUntil time.Time
	// lastExit is the latest release time handed out, to keep order.
	lastExit time.Time
	Stats    Stats
}

// NewLink returns the model of one direction with its own random source.
func NewLink(p Params, seed uint64) (*Link, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &Link{p: p, queue: p.Queue(), rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}, nil
}

// Admit decides the fate of a packet of size bytes that arrives at now: ok
// false means it is dropped (loss or a full queue); otherwise exit is when
// it leaves the far end of the link.
func (l *Link) Admit(now time.Time, size int) (exit time.Time, ok bool) {
	l.Stats.Packets.Add(1)
	l.Stats.Bytes.Add(uint64(size))
	if l.p.Loss > 0 && l.rng.Float64() < l.p.Loss {
		l.Stats.LossDrops.Add(1)
		return time.Time{}, false
	}
	depart := now
	if l.p.RateBps > 0 {
		start := now
		if l.busyUntil.After(now) {
			// Bytes still waiting for the bottleneck: drop-tail.
			backlog := int(int64(l.busyUntil.Sub(now)) * l.p.RateBps / 8 / int64(time.Second))
			if backlog+size > l.queue {
				l.Stats.QueueDrops.Add(1)
				return time.Time{}, false
			}
			start = l.busyUntil
		}
		l.busyUntil = start.Add(time.Duration(int64(size) * 8 * int64(time.Second) / l.p.RateBps))
		depart = l.busyUntil
	}
	exit = depart.Add(l.p.Delay)
	if l.p.Jitter > 0 {
		exit = exit.Add(time.Duration(l.rng.Int64N(int64(l.p.Jitter) + 1)))
	}
	if exit.Before(l.lastExit) {
		exit = l.lastExit
	}
	l.lastExit = exit
	return exit, true
}

// Delivered records a packet released at the far end.
func (l *Link) Delivered(size int) {
	l.Stats.Delivered.Add(1)
	l.Stats.DelivBytes.Add(uint64(size))
}
