package engine

import (
	"net/netip"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/tundev/tundevtest"
	"github.com/mirage-vpn/mirage/core/wire"
)

func TestLinkWeights(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name string
		rtts []time.Duration
		want []int
	}{
		{"equal", []time.Duration{ms, ms}, []int{1000, 1000}},
		{"twice as slow gets half", []time.Duration{ms, 2 * ms}, []int{1000, 500}},
		{"unmeasured weighs as the mean", []time.Duration{ms, 0, ms}, []int{1000, 1000, 1000}},
		{"none measured: equal", []time.Duration{0, 0}, []int{1000, 1000}},
		{"clamped at 1/16", []time.Duration{ms, 100 * ms}, []int{1000, 62}},
		{"sub-millisecond differences are noise", []time.Duration{100 * time.Microsecond, 900 * time.Microsecond}, []int{1000, 1000}},
	} {
		got := linkWeights(tc.rtts)
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: weights %v, want %v", tc.name, got, tc.want)
				break
			}
		}
	}
}

func TestSlotTable(t *testing.T) {
	count := func(tb [slotCount]uint8, n int) []int {
		c := make([]int, n)
		for _, x := range tb {
			c[x]++
		}
		return c
	}
	eq := slotTable([]int{1000, 1000})
	if c := count(eq, 2); c[0] != 32 || c[1] != 32 {
		t.Fatalf("equal weights: %v", c)
	}
	for i := 1; i < slotCount; i++ { // interleaved, not in runs
		if eq[i] == eq[i-1] {
			t.Fatalf("equal weights not alternating: %v", eq)
		}
	}
	if c := count(slotTable([]int{1000, 500}), 2); c[0] < 42 || c[0] > 43 {
		t.Fatalf("2:1 weights: %v", c)
	}
	if c := count(slotTable([]int{1000, 62, 1000}), 3); c[1] < 1 || c[0] < 30 || c[2] < 30 {
		t.Fatalf("a slow path keeps at least one slot: %v", c)
	}
}

// testLinks makes n links with the given RTTs (no connections).
func testLinks(rtts ...time.Duration) *linkSet {
	var ls []*link
	for _, r := range rtts {
		l := &link{}
		l.rtt.Store(int64(r))
		l.minRTT.Store(int64(r))
		ls = append(ls, l)
	}
	return newLinkSet(ls)
}

// A rotation (replaced) keeps every flow where it was even when the RTTs
// changed meanwhile; weights come from the lowest RTT, not the latest.
func TestFlowStability(t *testing.T) {
	a, b := &link{}, &link{}
	a.minRTT.Store(int64(2 * time.Millisecond))
	a.rtt.Store(int64(2 * time.Millisecond))
	b.minRTT.Store(int64(2 * time.Millisecond))
	// b's latest RTT is inflated by its own queue: flow mode ignores it.
	b.rtt.Store(int64(80 * time.Millisecond))
	set := newLinkSet([]*link{a, b})
	if set.slots != slotTable([]int{1000, 1000}) {
		t.Fatalf("weighted by the queue-inflated RTT: %v", set.slots)
	}
	var rr uint32
	before := map[int]*link{}
	for port := 1000; port < 1100; port++ {
		before[port] = set.pick(wire.MuxFlow, flowPacket(port), &rr)
	}
	nb := &link{}
	a.minRTT.Store(int64(40 * time.Millisecond)) // would change a rebuilt table
	next, ok := set.replaced(b, nb)
	if !ok {
		t.Fatal("replaced did not find the link")
	}
	for port := 1000; port < 1100; port++ {
		want := before[port]
		if want == b {
			want = nb
		}
		if got := next.pick(wire.MuxFlow, flowPacket(port), &rr); got != want {
			t.Fatalf("flow %d moved on rotation", port)
		}
	}
	if _, ok := next.replaced(b, nb); ok {
		t.Fatal("replaced found a link that is gone")
	}
}

func flowPacket(port int) []byte {
	p := tundevtest.UDP(netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("203.0.113.9"), []byte("x"))
	p[20], p[21] = byte(port>>8), byte(port) // UDP source port
	return p
}

func TestPickModes(t *testing.T) {
	set := testLinks(time.Millisecond, time.Millisecond)
	var rr uint32
	// flow: a flow stays on one link; many flows use both.
	used := map[*link]int{}
	for port := 1000; port < 1200; port++ {
		p := flowPacket(port)
		first := set.pick(wire.MuxFlow, p, &rr)
		for range 5 {
			if set.pick(wire.MuxFlow, p, &rr) != first {
				t.Fatalf("flow %d moved between links", port)
			}
		}
		used[first]++
	}
	if len(used) != 2 || used[set.links[0]] < 60 || used[set.links[1]] < 60 {
		t.Fatalf("200 flows over 2 equal links: %v", used)
	}
	// Flows that differ only in an even source port (Linux's connect()
	// picks even ports) spread too.
	even := map[*link]int{}
	for port := 0xa000; port < 0xa100; port += 2 { // one high byte

		even[set.pick(wire.MuxFlow, flowPacket(port), &rr)]++
	}
	if len(even) != 2 || even[set.links[0]] < 40 || even[set.links[1]] < 40 {
		t.Fatalf("128 flows from even source ports over 2 equal links: %v", even)
	}
	// active_standby: always the primary.
	for port := 1000; port < 1100; port++ {
		if set.pick(wire.MuxActiveStandby, flowPacket(port), &rr) != set.links[0] {
			t.Fatal("active_standby used a standby")
		}
	}
	// round_robin: one flow alternates links; weighted 2:1 by RTT.
	p := flowPacket(7)
	if a, b := set.pick(wire.MuxRoundRobin, p, &rr), set.pick(wire.MuxRoundRobin, p, &rr); a == b {
		t.Fatal("round_robin sent two packets in a row on one link")
	}
	w := testLinks(time.Millisecond, 2*time.Millisecond)
	n := map[*link]int{}
	for range 6400 {
		n[w.pick(wire.MuxRoundRobin, p, &rr)]++
	}
	if f, s := n[w.links[0]], n[w.links[1]]; f < 4200 || f > 4400 || s < 2000 {
		t.Fatalf("round_robin 1 ms vs 2 ms paths: %d / %d packets, want about 2:1", f, s)
	}
	// One link: always it, in every mode.
	one := testLinks(0)
	for _, m := range []uint8{wire.MuxFlow, wire.MuxRoundRobin, wire.MuxActiveStandby} {
		if one.pick(m, p, &rr) != one.links[0] {
			t.Fatal("single link not picked")
		}
	}
}

func BenchmarkPick(b *testing.B) {
	set := testLinks(time.Millisecond, 2*time.Millisecond, 3*time.Millisecond)
	p := flowPacket(9)
	var rr uint32
	b.ReportAllocs()
	for b.Loop() {
		set.pick(wire.MuxFlow, p, &rr)
		set.pick(wire.MuxRoundRobin, p, &rr)
	}
}
