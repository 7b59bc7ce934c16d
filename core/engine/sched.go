package engine

import (
	"time"

	"github.com/mirage-vpn/mirage/core/wire"
)

// slotCount is the size of the scheduler's slot table. Each connection owns
// slots in proportion to its weight; flow mode hashes a packet to a slot,
// round-robin walks the slots. The table is rebuilt only when the set of
// connections changes (flow mode) or on a keepalive tick (round-robin), so
// the per-packet path is one array lookup, no lock and no allocation.
const slotCount = 64

// linkSet is a snapshot of a session's connections with their slot table,
// replaced as a whole (copy-on-write).
type linkSet struct {
	links []*link
	slots [slotCount]uint8
}

// newLinkSet builds the snapshot for ls; weights come from each link's
// lowest keepalive RTT seen (see linkWeights): the path's own delay, not
// the queue the session's traffic built on it. Weighting by the latest
// RTT sent nearly everything to the idle path at each rebuild, which then
// queued and lost it again at the next (round_robin over two equal paths
// alternated 58:6 and 6:58 slots every second, barely above one path).
func newLinkSet(ls []*link) *linkSet {
	set := &linkSet{links: ls}
	if len(ls) > 1 {
		rtts := make([]time.Duration, len(ls))
		for i, l := range ls {
			rtts[i] = time.Duration(l.minRTT.Load())
		}
		set.slots = slotTable(linkWeights(rtts))
	}
	return set
}

// replaced is set with old swapped for nl in the same slots (rotation, hop):
// every flow stays on the connection that took its old one's place.
func (set *linkSet) replaced(old, nl *link) (*linkSet, bool) {
	for i, l := range set.links {
		if l == old {
			ls := append([]*link(nil), set.links...)
			ls[i] = nl
			return &linkSet{links: ls, slots: set.slots}, true
		}
	}
	return nil, false
}

// pick chooses the connection for packet p. rr is the round-robin cursor
// (owned by the single sending goroutine).
func (set *linkSet) pick(mode uint8, p []byte, rr *uint32) *link {
	ls := set.links
	if len(ls) == 1 {
		return ls[0]
	}
	switch mode {
	case wire.MuxActiveStandby:
		return ls[0]
	case wire.MuxRoundRobin:
		i := *rr
		*rr = i + 1
		return ls[set.slots[i%slotCount]]
	default:
		return ls[set.slots[FlowHash(p)%slotCount]]
	}
}

// maxWeightRatio bounds how much more traffic the fastest path gets than
// the slowest: every live path keeps carrying some, so its RTT stays
// measured and a failover finds it warm.
const maxWeightRatio = 16

// rttFloor is the smallest RTT linkWeights tells apart: below a
// millisecond, differences are scheduling noise, not path capacity.
const rttFloor = time.Millisecond

// linkWeights turns per-link RTTs into integer weights proportional to
// 1/RTT (a path twice as slow gets half the traffic), clamped to
// maxWeightRatio. Links without a measurement yet weigh as the mean of
// the measured ones (or all equal when none is measured).
func linkWeights(rtts []time.Duration) []int {
	w := make([]float64, len(rtts))
	var sum float64
	known := 0
	for i, r := range rtts {
		if r > 0 {
			w[i] = 1 / float64(max(r, rttFloor))
			sum += w[i]
			known++
		}
	}
	mean := 1.0
	if known > 0 {
		mean = sum / float64(known)
	}
	top := 0.0
	for i := range w {
		if w[i] == 0 {
			w[i] = mean
		}
		top = max(top, w[i])
	}
	out := make([]int, len(w))
	for i := range w {
		out[i] = max(int(1000*w[i]/top+0.5), 1000/maxWeightRatio)
	}
	return out
}

// slotTable spreads slotCount slots over len(w) links in proportion to the
// weights, interleaved (smooth weighted round-robin), so a round-robin walk
// alternates links instead of sending bursts to one. len(w) <= 255.
func slotTable(w []int) [slotCount]uint8 {
	var t [slotCount]uint8
	total := 0
	for _, x := range w {
		total += x
	}
	cur := make([]int, len(w))
	for s := range t {
		best := 0
		for i := range w {
			cur[i] += w[i]
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		t[s] = uint8(best)
	}
	return t
}
