package server

import (
	"math"
	"time"
)

// The per-session send queue is bounded in bytes (send_queue_packets) so
// memory is bounded, and by the time its batches wait (CoDel, RFC 8289) so
// latency is: a byte bound alone is a second of delay on a 10 Mbit/s path,
// and an inner TCP fills any queue it is given. CoDel lets bursts through
// (slow start, the bursts a lossy outer TCP releases after a hole) and
// drops only when the queue has stayed above codelTarget for a whole
// codelInterval, then more often while it stays there, so the inner TCP
// backs off at the queue's door instead of the queue growing.
const (
	// codelTarget is the standing queue delay CoDel tolerates.
	codelTarget = 20 * time.Millisecond
	// codelInterval is how long the delay must stay above the target before
	// the first drop: longer than the round trips of the paths users have
	// (150-250 ms), so a long path's slow start is not cut short.
	codelInterval = 250 * time.Millisecond
)

// codel is the drop decision of one queue; only its consumer uses it.
type codel struct {
	firstAbove time.Time // when the delay went above target (+ interval)
	dropNext   time.Time
	count      int
	lastCount  int
	dropping   bool
}

// drop reports whether the batch leaving the queue at now, after waiting
// sojourn with backlog bytes still queued behind it, should be dropped.
func (c *codel) drop(now time.Time, sojourn time.Duration, backlog int64) bool {
	ok := false
	if sojourn < codelTarget || backlog < queuePacketBytes {
		c.firstAbove = time.Time{}
	} else if c.firstAbove.IsZero() {
		c.firstAbove = now.Add(codelInterval)
	} else if !now.Before(c.firstAbove) {
		ok = true
	}
	switch {
	case c.dropping && !ok:
		c.dropping = false
	case c.dropping:
		if now.Before(c.dropNext) {
			return false
		}
		c.count++
		c.dropNext = c.next(c.dropNext)
		return true
	case ok:
		c.dropping = true
		// Resume near the last drop rate if the queue was in drop state
		// recently.
		if d := c.count - c.lastCount; d > 1 && now.Sub(c.dropNext) < 16*codelInterval {
			c.count = d
		} else {
			c.count = 1
		}
		c.lastCount = c.count
		c.dropNext = c.next(now)
		return true
	}
	return false
}

// next is CoDel's control law: drops come interval/sqrt(count) apart.
func (c *codel) next(t time.Time) time.Time {
	return t.Add(time.Duration(float64(codelInterval) / math.Sqrt(float64(c.count))))
}
