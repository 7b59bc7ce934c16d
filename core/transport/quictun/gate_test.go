package quictun

import (
	"testing"
	"time"
)

// TestGateWaitsForReaders: above gateHigh a wait lasts until the readers
// took the count down to gateLow, not longer.
func TestGateWaitsForReaders(t *testing.T) {
	g := NewGate()
	var tm *time.Timer
	g.handedOut(gateHigh)
	start := time.Now()
	g.wait(&tm) // at the limit: no wait
	if d := time.Since(start); d >= gateMaxWait {
		t.Fatalf("wait at gateHigh lasted %v; it must not wait", d)
	}
	g.handedOut(8)
	done := make(chan struct{})
	go func() {
		g.wait(&tm)
		close(done)
	}()
	// The waiter must still be waiting while nothing was taken; this
	// sleep only gives it the chance to return wrongly.
	for g.waiters.Load() == 0 {
		time.Sleep(10 * time.Microsecond)
	}
	for g.pending.Load() > gateLow+1 {
		g.Took()
		select {
		case <-done:
			t.Fatalf("wait returned with %d pending, above gateLow %d", g.pending.Load(), gateLow)
		default:
		}
	}
	g.Took() // down to gateLow: the waiter goes on
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("wait did not return after the readers caught up")
	}
	if p := g.pending.Load(); p != gateLow {
		t.Errorf("pending %d after the wait, want %d (a release must not reset the count)", p, gateLow)
	}
}

// TestGateDrift: a count that nobody takes down (large packets without a
// datagram) costs one bounded wait and starts afresh.
func TestGateDrift(t *testing.T) {
	g := NewGate()
	var tm *time.Timer
	g.handedOut(1000)
	done := make(chan struct{})
	go func() {
		g.wait(&tm)
		g.wait(&tm) // the count is zero now: no second wait
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a drifted count wedged the reader")
	}
	if p := g.pending.Load(); p != 0 {
		t.Errorf("pending %d after a timed-out wait, want 0", p)
	}
}

// TestGateUndercount: more datagrams taken than counted never makes the
// count negative (a negative count would let the queue overflow later).
func TestGateUndercount(t *testing.T) {
	g := NewGate()
	g.handedOut(2)
	for range 5 {
		g.Took()
	}
	if p := g.pending.Load(); p != 0 {
		t.Fatalf("pending %d, want 0", p)
	}
	var nilGate *Gate // a Conn without a gate
	nilGate.Took()
	nilGate.handedOut(3)
	var tm *time.Timer
	nilGate.wait(&tm)
}

// TestGatePausesAfterTimeout: a reader that stays stuck (a connection whose
// tunnel stopped reading keeps a shared count high) costs one timed-out
// wait, then pacing pauses instead of making every read wait again; the
// pause doubles while timeouts recur and starts small again after calm.
func TestGatePausesAfterTimeout(t *testing.T) {
	defer func(a, b time.Duration) { gateBackoffMin, gateBackoffMax = a, b }(gateBackoffMin, gateBackoffMax)
	gateBackoffMin, gateBackoffMax = time.Minute, 4*time.Minute
	g := NewGate()
	var tm *time.Timer
	g.handedOut(1000)
	g.wait(&tm) // nobody takes anything: times out
	if n := g.Timeouts.Load(); n != 1 {
		t.Fatalf("Timeouts = %d, want 1", n)
	}
	g.handedOut(1000)
	g.wait(&tm) // paused: returns at once, count untouched
	if n := g.Timeouts.Load(); n != 1 {
		t.Fatalf("a wait during the pause timed out (Timeouts = %d)", n)
	}
	if p := g.pending.Load(); p != 1000 {
		t.Fatalf("pending %d during the pause, want 1000 (no wait, no reset)", p)
	}
	// The pause is over: the count starts afresh, pacing is on again.
	g.offUntil.Store(time.Now().Add(-time.Second).UnixNano())
	g.wait(&tm)
	if p, off := g.pending.Load(), g.offUntil.Load(); p != 0 || off != 0 {
		t.Fatalf("after the pause: pending %d, offUntil %d; want 0, 0", p, off)
	}

	now := time.Now()
	g.timedOut(now)
	if g.backoff != 2*time.Minute {
		t.Errorf("backoff after a second timeout: %v, want 2m", g.backoff)
	}
	g.timedOut(now.Add(time.Second))
	g.timedOut(now.Add(2 * time.Second))
	if g.backoff != 4*time.Minute {
		t.Errorf("backoff after four timeouts: %v, want the 4m maximum", g.backoff)
	}
	g.timedOut(now.Add(2*time.Second + gateCalm + time.Second))
	if g.backoff != time.Minute {
		t.Errorf("backoff after a calm spell: %v, want 1m", g.backoff)
	}
}
