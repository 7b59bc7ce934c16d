package auth

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newTestLimiter(conc, perMin int) (*Limiter, *fakeClock) {
	l := NewLimiter(conc, perMin)
	c := &fakeClock{t: t0}
	l.now = c.now
	return l, c
}

func TestLimiterTokenBucket(t *testing.T) {
	l, clk := newTestLimiter(1, 6) // burst 6, one token per 10 s
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("192.0.2.2")
	for i := range 6 {
		if !l.Allow(a) {
			t.Fatalf("attempt %d refused within burst", i+1)
		}
	}
	if l.Allow(a) {
		t.Fatal("7th attempt allowed")
	}
	if !l.Allow(b) {
		t.Fatal("other source refused")
	}
	clk.add(9 * time.Second)
	if l.Allow(a) {
		t.Fatal("allowed before a token was earned")
	}
	clk.add(time.Second)
	if !l.Allow(a) || l.Allow(a) {
		t.Fatal("want exactly one token after 10 s")
	}
	clk.add(time.Hour)
	n := 0
	for l.Allow(a) && n < 100 {
		n++
	}
	if n != 6 {
		t.Fatalf("after an hour %d attempts allowed, want the burst of 6", n)
	}
}

func TestLimiterSourceKey(t *testing.T) {
	l, _ := newTestLimiter(1, 1)
	if !l.Allow(netip.MustParseAddr("2001:db8:1:2::1")) {
		t.Fatal("first v6 attempt refused")
	}
	if l.Allow(netip.MustParseAddr("2001:db8:1:2:ffff::9")) {
		t.Error("same /64 got its own bucket")
	}
	if !l.Allow(netip.MustParseAddr("2001:db8:1:3::1")) {
		t.Error("other /64 shares a bucket")
	}
	if !l.Allow(netip.MustParseAddr("198.51.100.7")) {
		t.Fatal("v4 refused")
	}
	if l.Allow(netip.MustParseAddr("::ffff:198.51.100.7")) {
		t.Error("v4-mapped address got its own bucket")
	}
}

func TestLimiterDisabled(t *testing.T) {
	l, _ := newTestLimiter(1, 0)
	for range 1000 {
		if !l.Allow(netip.MustParseAddr("192.0.2.1")) {
			t.Fatal("disabled limiter refused")
		}
	}
	if len(l.buckets) != 0 {
		t.Fatal("disabled limiter keeps state")
	}
}

func TestLimiterBounded(t *testing.T) {
	l, clk := newTestLimiter(1, 2)
	l.maxEntries = 100
	ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}) }
	for i := range 250 {
		l.Allow(ip(i))
		if len(l.buckets) > l.maxEntries {
			t.Fatalf("table grew to %d entries, max %d", len(l.buckets), l.maxEntries)
		}
	}
	// Idle sources are swept first: after a full refill, one new source
	// empties the table of stale entries instead of evicting at random.
	clk.add(2 * time.Minute)
	l.Allow(netip.MustParseAddr("192.0.2.99"))
	if len(l.buckets) != 1 {
		t.Fatalf("after sweep %d entries, want 1", len(l.buckets))
	}
}

func TestLimiterAcquire(t *testing.T) {
	l := NewLimiter(2, 0)
	r1, err := l.Acquire(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := l.Acquire(context.Background(), false)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := l.Acquire(ctx, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third Acquire = %v, want DeadlineExceeded", err)
	}
	r1()
	r1() // double release must not free a second slot
	r3, err := l.Acquire(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if _, err := l.Acquire(ctx2, false); err == nil {
		t.Fatal("double release freed an extra slot")
	}
	r2()
	r3()
	cancelled, c := context.WithCancel(context.Background())
	c()
	if _, err := l.Acquire(cancelled, false); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire(cancelled) = %v", err)
	}
}

func TestLimiterConcurrencyCap(t *testing.T) {
	l := NewLimiter(3, 0)
	var cur, peak atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			rel, err := l.Acquire(context.Background(), true) // priority: its queue is not bounded
			if err != nil {
				t.Error(err)
				return
			}
			defer rel()
			n := cur.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(2 * time.Millisecond)
			cur.Add(-1)
		})
	}
	wg.Wait()
	if p := peak.Load(); p > 3 || p < 1 {
		t.Fatalf("peak concurrency %d, want 1..3", p)
	}
}
