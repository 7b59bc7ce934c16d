package server

import (
	"net/netip"
	"testing"
)

// TestRouteCacheFollowsTable: the cached lookup answers from the current
// client table, so a client that left (or took the address over) is never
// routed to from a stale entry.
func TestRouteCacheFollowsTable(t *testing.T) {
	s := &Server{}
	a, b := &session{}, &session{}
	dst := netip.MustParseAddr("198.51.100.7")
	other := netip.MustParseAddr("198.51.100.8")
	t1 := map[netip.Addr]*session{dst: a}
	s.table.Store(&t1)
	var rc routeCache
	if got := rc.lookup(s, dst); got != a {
		t.Fatalf("lookup: %p, want session a %p", got, a)
	}
	if got := rc.lookup(s, other); got != nil {
		t.Fatalf("lookup of an address nobody owns: %p, want nil", got)
	}
	t2 := map[netip.Addr]*session{dst: b}
	s.table.Store(&t2)
	if got := rc.lookup(s, dst); got != b {
		t.Fatalf("after the table changed: %p, want session b %p", got, b)
	}
	t3 := map[netip.Addr]*session{}
	s.table.Store(&t3)
	if got := rc.lookup(s, dst); got != nil {
		t.Fatalf("after the client left: %p, want nil", got)
	}
	if got := (*routeCache)(nil).lookup(s, dst); got != nil {
		t.Fatalf("nil cache: %p, want nil", got)
	}
}
