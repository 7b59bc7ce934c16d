package auth

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestLimiterPriorityAndBusy(t *testing.T) {
	l := NewLimiter(1, 0)
	hold, err := l.Acquire(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	// Fill the non-priority queue (4 per slot).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lowDone := make(chan error, maxWaitingPerSlot)
	for range maxWaitingPerSlot {
		go func() {
			rel, err := l.Acquire(ctx, false)
			if err == nil {
				rel()
			}
			lowDone <- err
		}()
	}
	waitQueued(t, l, 0, maxWaitingPerSlot)
	if _, err := l.Acquire(context.Background(), false); !errors.Is(err, ErrBusy) {
		t.Fatalf("Acquire with a full queue = %v, want ErrBusy", err)
	}
	// A priority caller queues behind nobody: it gets the next free slot.
	got := make(chan func(), 1)
	go func() {
		rel, err := l.Acquire(context.Background(), true)
		if err != nil {
			t.Error(err)
		}
		got <- rel
	}()
	waitQueued(t, l, 1, maxWaitingPerSlot)
	hold()
	select {
	case rel := <-got:
		l.sem.mu.Lock()
		low := len(l.sem.low)
		l.sem.mu.Unlock()
		if low != maxWaitingPerSlot {
			t.Errorf("a non-priority waiter was served before the priority one (%d left)", low)
		}
		rel()
	case <-time.After(5 * time.Second):
		t.Fatal("priority waiter not served")
	}
	for range maxWaitingPerSlot {
		if err := <-lowDone; err != nil {
			t.Errorf("queued waiter: %v", err)
		}
	}
	// All slots back.
	rel, err := l.Acquire(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	rel()
}

func waitQueued(t *testing.T, l *Limiter, high, low int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.sem.mu.Lock()
		h, lo := len(l.sem.high), len(l.sem.low)
		l.sem.mu.Unlock()
		if h == high && lo == low {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queued %d/%d, want %d/%d", h, lo, high, low)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestLimiterCancelledWaiterFreesNothing: a waiter whose context ends
// leaves the queue without taking or losing a slot.
func TestLimiterCancelledWaiter(t *testing.T) {
	l := NewLimiter(1, 0)
	hold, _ := l.Acquire(context.Background(), false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := l.Acquire(ctx, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	hold()
	r1, err := l.Acquire(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if _, err := l.Acquire(ctx2, true); err == nil {
		t.Fatal("a second slot appeared")
	}
	r1()
}

func TestLimiterUserBackoffAndGood(t *testing.T) {
	l, clk := newTestLimiter(1, 0)
	for i := 0; i < userFailBurst; i++ {
		if !l.UserAllowed("alice") {
			t.Fatalf("refused after %d failures, want %d allowed", i, userFailBurst)
		}
		l.UserFailed("alice")
	}
	if l.UserAllowed("alice") {
		t.Fatal("allowed after a burst of failures")
	}
	if !l.UserAllowed("bob") {
		t.Fatal("another user refused")
	}
	clk.add(userFailInterval)
	if !l.UserAllowed("alice") {
		t.Fatal("not allowed again after one interval")
	}
	a := netip.MustParseAddr("2001:db8:7::1")
	if l.Good(a) {
		t.Fatal("good before any login")
	}
	l.MarkGood(a)
	if !l.Good(netip.MustParseAddr("2001:db8:7::99")) {
		t.Fatal("the same /64 is not good")
	}
	clk.add(goodFor)
	if l.Good(a) {
		t.Fatal("still good after goodFor")
	}
}
