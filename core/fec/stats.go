package fec

import "math"

// Stats counts what a [Decoder] has seen. Counters only grow.
type Stats struct {
	Shards    uint64 // shards passed to Receive
	Data      uint64 // well-formed data shards among them
	Parity    uint64 // well-formed parity shards among them
	Delivered uint64 // data shards delivered as they arrived, in a tracked group
	Recovered uint64 // data shards rebuilt from parity and delivered
	// Unrecoverable counts data shards of closed groups that were never
	// delivered: lost with more than m losses in their group, or rebuilt
	// but rejected (Corrupt).
	Unrecoverable uint64
	Malformed     uint64 // shards dropped as malformed or inconsistent
	Duplicates    uint64 // shards dropped because their (group, index) was already in
	Corrupt       uint64 // rebuilt data shards rejected by their length or CRC
	// Late counts data shards delivered although their group was already
	// closed or had left the window; the inner TCP may have given up on
	// them already, and outside the window they are not deduplicated.
	Late         uint64
	Stale        uint64 // parity dropped because its group was closed or had left the window
	GroupsClosed uint64 // groups closed by age, by the window moving on, or evicted
	GroupsLost   uint64 // groups inside the window of which not one shard arrived
	Evicted      uint64 // groups closed early to keep within the memory bound
	// Loss is the loss estimate, see [Decoder.LossRate].
	Loss float64
}

// lossEstimator is a shard loss rate averaged with exponential decay over
// about memory shards, so that it follows changes within seconds at a few
// thousand packets per second yet resolves rates of 0.1 %.
type lossEstimator struct {
	lost, total float64
	memory      float64
}

// add accounts for a closed group that should have brought total shards
// and missed lost of them.
func (l *lossEstimator) add(lost, total int) {
	if total <= 0 {
		return
	}
	decay := math.Exp(-float64(total) / l.memory)
	l.lost = l.lost*decay + float64(lost)
	l.total = l.total*decay + float64(total)
}

func (l *lossEstimator) rate() float64 {
	if l.total == 0 {
		return 0
	}
	return l.lost / l.total
}

// boundZ is the normal quantile of [lossEstimator.bound]: about 98 % one
// sided.
const boundZ = 2

// cautiousShards is how many shards (decayed count) the estimate must
// average over before [lossEstimator.cautious] trusts the rate itself: at
// 1 % loss its standard error is then 0.16 %.
const cautiousShards = 4096

// cautious is the rate to choose parity by: the upper bound while fewer
// than cautiousShards (or half the memory) were seen, the rate after.
func (l *lossEstimator) cautious() float64 {
	if l.total < min(cautiousShards, l.memory/2) {
		return l.bound()
	}
	return l.rate()
}

// bound is the upper end of the Wilson score interval of the rate, the
// decayed counts taken as the sample: with few shards seen it is well above
// the rate (no shards: 1), and it closes in on the rate as they add up.
func (l *lossEstimator) bound() float64 {
	n := l.total
	if n <= 0 {
		return 1
	}
	p := min(l.lost/n, 1)
	z2 := float64(boundZ * boundZ)
	centre := p + z2/(2*n)
	spread := boundZ * math.Sqrt(p*(1-p)/n+z2/(4*n*n))
	return min((centre+spread)/(1+z2/n), 1)
}

// ConnStats is what the forward error correction of one connection did,
// both ways.
type ConnStats struct {
	Sending    bool    // this end sends FEC frames
	K, M       int     // the group shape it sends with now
	SendLoss   float64 // loss measured on what this end sends (auto only)
	DataSent   uint64  // data shards sent
	ParitySent uint64  // parity shards sent
	Recv       Stats   // what the decoder saw of the peer's shards
}
