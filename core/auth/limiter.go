package auth

import (
	"context"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// limiterMaxEntries bounds the per-IP table.
const limiterMaxEntries = 1 << 16

// Limiter bounds Argon2 work so that a flood of logins cannot exhaust CPU or
// memory, nor push a real client's login behind it: a per-source token
// bucket (Allow) and a per-user-name failure back-off (UserAllowed,
// UserFailed) decide whether to try at all, and a priority semaphore
// (Acquire) caps how many hashes run at once (so memory is bounded by that
// many Argon2 states) and serves sources that logged in before (Good,
// MarkGood) first.
//
// IPv6 sources are bucketed per /64, since one host usually owns a whole
// /64. The table holds at most a fixed number of sources; when it is full,
// idle entries are dropped first and then arbitrary ones. Dropping an entry
// only ever gives a source a fresh bucket: it never locks anyone out, and the
// semaphore still caps total work.
type Limiter struct {
	sem *prioSem

	mu         sync.Mutex
	burst      int           // attempts per source in a burst; 0 disables Allow
	interval   time.Duration // one attempt earned back per interval
	buckets    map[netip.Addr]time.Time
	maxEntries int
	lastSweep  time.Time
	now        func() time.Time

	good  map[netip.Addr]time.Time // source -> last successful login
	users map[string]time.Time     // user name -> failure GCRA time

	// Counters of refusals, for metrics.
	RefusedSource, RefusedUser, RefusedBusy atomic.Uint64
}

// The per-source buckets are kept as GCRA "theoretical arrival times": a
// source whose time lies at or before now has a full bucket; each attempt
// moves it one interval later; an attempt is allowed while the time is at
// most burst-1 intervals ahead of now. One time value per source, integer
// arithmetic, no drift.

// NewLimiter returns a Limiter running at most maxConcurrent Argon2
// computations at once (runtime.NumCPU() if maxConcurrent <= 0) and letting
// each source start perIPPerMinute attempts per minute, in bursts up to that
// many (unlimited if perIPPerMinute <= 0).
func NewLimiter(maxConcurrent int, perIPPerMinute int) *Limiter {
	if maxConcurrent <= 0 {
		maxConcurrent = runtime.NumCPU()
	}
	l := &Limiter{
		sem:        newPrioSem(maxConcurrent, maxWaitingPerSlot*maxConcurrent),
		buckets:    map[netip.Addr]time.Time{},
		maxEntries: limiterMaxEntries,
		now:        time.Now,
		good:       map[netip.Addr]time.Time{},
		users:      map[string]time.Time{},
	}
	if perIPPerMinute > 0 {
		l.burst = perIPPerMinute
		l.interval = time.Minute / time.Duration(perIPPerMinute)
	}
	return l
}

// Allow takes one attempt from ip's budget and reports whether there was one.
func (l *Limiter) Allow(ip netip.Addr) bool {
	if l.burst == 0 {
		return true
	}
	key := sourceKey(ip)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	tat, ok := l.buckets[key]
	if !ok {
		l.makeRoom(now)
	}
	if !ok || tat.Before(now) {
		tat = now
	}
	if tat.Sub(now) > time.Duration(l.burst-1)*l.interval {
		l.buckets[key] = tat
		return false
	}
	l.buckets[key] = tat.Add(l.interval)
	return true
}

// makeRoom frees a table slot if the table is full. Called with l.mu held.
func (l *Limiter) makeRoom(now time.Time) {
	if len(l.buckets) < l.maxEntries {
		return
	}
	// A full bucket is the same as no bucket. Sweep at most once a second
	// so that a table full of busy sources does not cost a full scan per
	// new source.
	if now.Sub(l.lastSweep) >= time.Second || now.Before(l.lastSweep) {
		l.lastSweep = now
		for k, tat := range l.buckets {
			if !tat.After(now) {
				delete(l.buckets, k)
			}
		}
	}
	for k := range l.buckets { // map order is random
		if len(l.buckets) < l.maxEntries {
			break
		}
		delete(l.buckets, k)
	}
}

// sourceKey maps ip to its bucket: the address itself for IPv4 (including
// IPv4-mapped IPv6), its /64 for IPv6.
func sourceKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, err := ip.Prefix(64)
		if err == nil {
			return p.Addr()
		}
	}
	return ip
}

// Acquire waits for a slot to run one Argon2 computation. Priority callers
// (sources that logged in before, see Good) are served before the others;
// non-priority callers fail at once with ErrBusy when maxWaiting of them are
// already queued, so a flood from many addresses cannot build an unbounded
// queue in front of a real client. The caller must call release when done
// (calling it more than once is harmless). It also fails if ctx ends first.
func (l *Limiter) Acquire(ctx context.Context, priority bool) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := l.sem.acquire(ctx, priority); err != nil {
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(l.sem.release) }, nil
}
