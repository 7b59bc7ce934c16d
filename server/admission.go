package server

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

// admission bounds the handshakes in progress (accepted connections that
// have not authenticated yet, or been handed to the camouflage): at most
// perSource per source prefix (an IPv4 /32 and an IPv6 /64 by default: one
// host or one customer line) and total overall.
//
// A source at its cap gets its new connection refused: it can only hurt
// itself. When the global cap is reached the new connection is still
// admitted, and the oldest pending handshake of the source holding the most
// is closed to make room, so neither one flooding address nor a burst of
// idle connections from many addresses can lock a real client out (a
// client's handshake takes a few round trips; a flooder's sockets are
// shed long before it ends).
type admission struct {
	total, perSource int
	v4Bits, v6Bits   int

	mu       sync.Mutex
	n        int
	bySource map[netip.Prefix][]*admitted

	// Counters for metrics and status.
	refusedSource atomic.Uint64 // new connection refused: its source was at perSource
	shed          atomic.Uint64 // pending handshake closed to admit a newer one
}

// admitted is one pending handshake; release ends it.
type admitted struct {
	a     *admission
	src   netip.Prefix
	close func()
	gone  bool // under a.mu: released or shed
}

func newAdmission(total, perSource, v4Bits, v6Bits int) *admission {
	return &admission{
		total: max(total, 1), perSource: max(perSource, 1),
		v4Bits: v4Bits, v6Bits: v6Bits,
		bySource: make(map[netip.Prefix][]*admitted),
	}
}

// source returns the prefix remote is counted under.
func (a *admission) source(remote netip.Addr) netip.Prefix {
	bits := a.v6Bits
	if remote.Is4() {
		bits = a.v4Bits
	}
	p, err := remote.Prefix(bits)
	if err != nil { // an invalid address: all of them share one slot
		return netip.Prefix{}
	}
	return p
}

// admit registers a new handshake from remote; closeFn closes its
// connection if it is shed. It returns nil when remote's source is at its
// cap (the caller closes the connection).
func (a *admission) admit(remote netip.Addr, closeFn func()) *admitted {
	src := a.source(remote)
	a.mu.Lock()
	if len(a.bySource[src]) >= a.perSource {
		a.mu.Unlock()
		a.refusedSource.Add(1)
		return nil
	}
	var victim *admitted
	if a.n >= a.total {
		victim = a.oldestOfLargest()
		a.removeLocked(victim)
	}
	t := &admitted{a: a, src: src, close: closeFn}
	a.bySource[src] = append(a.bySource[src], t)
	a.n++
	a.mu.Unlock()
	if victim != nil {
		a.shed.Add(1)
		victim.close()
	}
	return t
}

// oldestOfLargest returns the first-admitted pending handshake of the
// source with the most; a.n > 0. The caller holds a.mu.
func (a *admission) oldestOfLargest() *admitted {
	var best []*admitted
	for _, l := range a.bySource {
		if len(l) > len(best) {
			best = l
		}
	}
	return best[0]
}

// removeLocked forgets t. The caller holds a.mu.
func (a *admission) removeLocked(t *admitted) {
	if t.gone {
		return
	}
	t.gone = true
	l := a.bySource[t.src]
	for i, x := range l {
		if x == t {
			l = append(l[:i], l[i+1:]...)
			break
		}
	}
	if len(l) == 0 {
		delete(a.bySource, t.src)
	} else {
		a.bySource[t.src] = l
	}
	a.n--
}

// release ends the handshake t (authenticated, handed to the camouflage,
// or failed). It may be called more than once, and after t was shed.
func (t *admitted) release() {
	t.a.mu.Lock()
	t.a.removeLocked(t)
	t.a.mu.Unlock()
}

// pending returns how many handshakes are in progress.
func (a *admission) pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}
