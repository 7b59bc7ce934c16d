package auth

import (
	"container/heap"
	"sync"
	"time"
)

// ReplayWindow rejects messages that are stale or were seen before, for
// timestamped one-shot authenticators (REALITY auth, 0-RTT). A message is
// accepted once if its timestamp is within ±window of now; it is remembered
// until its timestamp leaves the window, after which the time check alone
// rejects it. Memory is bounded: when full, new messages are refused (fail
// closed) until old ones expire. A ReplayWindow is safe for concurrent use.
type ReplayWindow struct {
	window time.Duration
	max    int

	mu     sync.Mutex
	latest time.Time
	seen   map[[16]byte]struct{}
	exp    expiryHeap
}

// NewReplayWindow returns a window of ±window holding at most maxEntries
// keys (at least 1).
func NewReplayWindow(window time.Duration, maxEntries int) *ReplayWindow {
	return &ReplayWindow{
		window: window,
		max:    max(maxEntries, 1),
		seen:   map[[16]byte]struct{}{},
	}
}

// Seen records key with timestamp ts and reports whether the message must be
// rejected: ts is outside now±window, key was seen before, or the window is
// full.
func (w *ReplayWindow) Seen(key [16]byte, ts time.Time, now time.Time) bool {
	if ts.After(now.Add(w.window)) {
		return true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	// Callers may pass slightly different clocks; judge staleness by the
	// latest now seen, so a key forgotten for one caller is stale for all.
	// A step back of more than the window is a clock change: follow it.
	if now.After(w.latest) || w.latest.Sub(now) > w.window {
		w.latest = now
	}
	for len(w.exp) > 0 && !w.exp[0].at.After(w.latest) {
		e := heap.Pop(&w.exp).(expiry)
		delete(w.seen, e.key)
	}
	if ts.Before(w.latest.Add(-w.window)) {
		return true
	}
	if _, dup := w.seen[key]; dup {
		return true
	}
	if len(w.seen) >= w.max {
		return true
	}
	w.seen[key] = struct{}{}
	// Forget the key just after ts leaves the window; from then on the
	// staleness check above rejects it.
	heap.Push(&w.exp, expiry{at: ts.Add(w.window + time.Nanosecond), key: key})
	return false
}

// Len returns the number of remembered keys.
func (w *ReplayWindow) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.seen)
}

type expiry struct {
	at  time.Time
	key [16]byte
}

// expiryHeap is a min-heap of expiries, for container/heap.
type expiryHeap []expiry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
