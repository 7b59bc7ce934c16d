package auth

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"
)

// Limits of the login budget beyond the per-source bucket.
const (
	// maxWaitingPerSlot bounds the non-priority callers queued for an
	// Argon2 slot, per slot.
	maxWaitingPerSlot = 4
	// userFailBurst failed logins per user name are checked in a burst;
	// then one per userFailInterval (10 per minute), unless the source is
	// known good.
	userFailBurst    = 10
	userFailInterval = 6 * time.Second
	// goodFor is how long a source that logged in keeps its priority.
	goodFor = 7 * 24 * time.Hour
)

// ErrBusy means every Argon2 slot is taken and the queue for them is full.
var ErrBusy = errors.New("too many logins in progress")

// Good reports whether ip's source logged in successfully within goodFor.
func (l *Limiter) Good(ip netip.Addr) bool {
	key := sourceKey(ip)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.good[key]
	return ok && now.Sub(t) < goodFor
}

// MarkGood records a successful login from ip: its later logins get
// priority and skip the per-user back-off.
func (l *Limiter) MarkGood(ip netip.Addr) {
	key := sourceKey(ip)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.good[key]; !ok && len(l.good) >= l.maxEntries {
		evictOne(l.good, func(t time.Time) bool { return now.Sub(t) >= goodFor })
	}
	l.good[key] = now
}

// UserAllowed reports whether user may have another password check: false
// once userFailBurst failures for that name came faster than one per
// userFailInterval. It does not consume anything; UserFailed does.
func (l *Limiter) UserAllowed(user string) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	tat, ok := l.users[user]
	return !ok || tat.Sub(now) <= (userFailBurst-1)*userFailInterval
}

// UserFailed records a failed password check for user.
func (l *Limiter) UserFailed(user string) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	tat, ok := l.users[user]
	if !ok && len(l.users) >= l.maxEntries {
		evictOne(l.users, func(t time.Time) bool { return !t.After(now) })
	}
	if !ok || tat.Before(now) {
		tat = now
	}
	l.users[user] = tat.Add(userFailInterval)
}

// evictOne deletes an entry stale reports true for, or else an arbitrary
// one (map order is random), to keep a table within its bound.
func evictOne[K comparable](m map[K]time.Time, stale func(time.Time) bool) {
	n := 0
	for k, t := range m {
		if stale(t) {
			delete(m, k)
			return
		}
		if n++; n >= 64 { // bounded scan
			break
		}
	}
	for k := range m {
		delete(m, k)
		return
	}
}

// prioSem is a counting semaphore with two FIFO queues: priority waiters
// get a freed slot before the others, and the non-priority queue is
// bounded.
type prioSem struct {
	mu        sync.Mutex
	free      int
	maxLow    int
	high, low []chan struct{}
}

func newPrioSem(n, maxLow int) *prioSem { return &prioSem{free: n, maxLow: maxLow} }

func (p *prioSem) acquire(ctx context.Context, high bool) error {
	p.mu.Lock()
	if p.free > 0 && len(p.high) == 0 && (high || len(p.low) == 0) {
		p.free--
		p.mu.Unlock()
		return nil
	}
	if !high && len(p.low) >= p.maxLow {
		p.mu.Unlock()
		return ErrBusy
	}
	ch := make(chan struct{})
	if high {
		p.high = append(p.high, ch)
	} else {
		p.low = append(p.low, ch)
	}
	p.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, q := range []*[]chan struct{}{&p.high, &p.low} {
		for i, c := range *q {
			if c == ch {
				*q = append((*q)[:i], (*q)[i+1:]...)
				return ctx.Err()
			}
		}
	}
	// Granted while ctx ended: hand the slot on.
	p.releaseLocked()
	return ctx.Err()
}

func (p *prioSem) release() {
	p.mu.Lock()
	p.releaseLocked()
	p.mu.Unlock()
}

// releaseLocked gives the slot to the first priority waiter, else the
// first other waiter, else frees it.
func (p *prioSem) releaseLocked() {
	for _, q := range []*[]chan struct{}{&p.high, &p.low} {
		if len(*q) > 0 {
			ch := (*q)[0]
			*q = (*q)[1:]
			close(ch)
			return
		}
	}
	p.free++
}
