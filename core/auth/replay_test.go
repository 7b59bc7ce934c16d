package auth

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func key(i int) [16]byte { return [16]byte{byte(i), byte(i >> 8), byte(i >> 16), 0xaa} }

func TestReplayWindow(t *testing.T) {
	w := NewReplayWindow(time.Minute, 100)
	now := t0
	if w.Seen(key(1), now, now) {
		t.Fatal("fresh message rejected")
	}
	if !w.Seen(key(1), now, now) {
		t.Fatal("replay accepted")
	}
	if !w.Seen(key(1), now, now.Add(30*time.Second)) {
		t.Fatal("replay later in the window accepted")
	}
	now = now.Add(30 * time.Second)
	if w.Seen(key(2), now.Add(-59*time.Second), now) || w.Seen(key(3), now.Add(59*time.Second), now) {
		t.Fatal("message inside ±window rejected")
	}
	if !w.Seen(key(4), now.Add(-61*time.Second), now) {
		t.Fatal("stale message accepted")
	}
	if !w.Seen(key(5), now.Add(61*time.Second), now) {
		t.Fatal("future message accepted")
	}
	now = t0
	// Keys are forgotten once their timestamp leaves the window, and the
	// time check still rejects them.
	later := now.Add(2*time.Minute + time.Second)
	if !w.Seen(key(1), now, later) {
		t.Fatal("old message accepted after expiry")
	}
	// Only key 3 (timestamp t0+89s) is still inside the window.
	if w.Len() != 1 || !w.Seen(key(3), t0.Add(89*time.Second), later) {
		t.Fatalf("%d keys remembered, want only key 3", w.Len())
	}
	// Exactly at the boundary the key is still remembered.
	w2 := NewReplayWindow(time.Minute, 100)
	w2.Seen(key(9), now, now)
	if !w2.Seen(key(9), now, now.Add(time.Minute)) {
		t.Fatal("replay at window edge accepted")
	}
}

func TestReplayWindowClockSkewBetweenCallers(t *testing.T) {
	w := NewReplayWindow(time.Minute, 100)
	w.Seen(key(1), t0, t0)
	// One caller with a clock a little ahead expires old keys...
	w.Seen(key(2), t0.Add(61*time.Second), t0.Add(61*time.Second))
	// ...then a caller slightly behind must still reject the replay.
	if !w.Seen(key(1), t0, t0.Add(59*time.Second)) {
		t.Fatal("replay accepted by a caller with an older clock")
	}
}

func TestReplayWindowBounded(t *testing.T) {
	w := NewReplayWindow(time.Minute, 10)
	for i := range 10 {
		if w.Seen(key(i), t0, t0) {
			t.Fatalf("message %d rejected before full", i)
		}
	}
	if !w.Seen(key(100), t0, t0) {
		t.Fatal("accepted a message while full (must fail closed)")
	}
	if w.Len() != 10 {
		t.Fatalf("Len = %d, want 10", w.Len())
	}
	after := t0.Add(61 * time.Second)
	if w.Seen(key(100), after, after) {
		t.Fatal("still full after all entries expired")
	}
}

func TestReplayWindowConcurrent(t *testing.T) {
	w := NewReplayWindow(time.Minute, 10000)
	var accepted atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 500 {
				if !w.Seen(key(i), t0, t0) {
					accepted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := accepted.Load(); n != 500 {
		t.Fatalf("%d messages accepted, want each of 500 exactly once", n)
	}
}
