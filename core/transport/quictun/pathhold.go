package quictun

import (
	"time"

	"github.com/mirage-vpn/mirage/core/fec"
)

// Delivering in order (pathHold).
//
// quic-go declares a packet lost when a packet sent three or more after it
// is acknowledged first (RFC 9002's packet threshold), and its congestion
// window shrinks for it. A packet path FEC rebuilds comes out of the
// decoder only when its group's parity arrives, after the rest of the
// group: handed to quic-go as it comes, it would be acknowledged late and
// counted as lost all the same. So the receiving side hands quic-go the
// packets of a peer in the order they were sent: after a hole, the
// packets behind it wait (here) until the hole is filled (a late or
// rebuilt packet), or is given up because
//   - a packet of a later group arrived: the hole's group's parity, sent
//     before the next group's first packet, came or was lost;
//   - the group has no parity (m = 0): nothing can rebuild it;
//   - the oldest waiting packet waited maxHold (the sender closes a group
//     that does not fill after pathFlushWait, well inside it); or
//   - holdMax packets wait.
//
// While packets wait quic-go acknowledges nothing behind the hole, so it
// sees no packet-threshold loss; maxHold stays below its probe timeout
// (at least max_ack_delay, 25 ms). Positions are (group, index) pairs in
// the sender's order; group numbers compare in serial arithmetic.

const (
	// holdMax bounds the packets waiting behind holes of one peer: two
	// full groups.
	holdMax = 2 * fec.MaxK
	// holdGroups is how many recent groups' shapes are remembered.
	holdGroups = 16
)

// pos is a packet's place in the sender's sequence.
type pos struct {
	group uint32
	index int
}

// before reports whether a comes before b.
func (a pos) before(b pos) bool {
	if a.group != b.group {
		return int32(a.group-b.group) < 0
	}
	return a.index < b.index
}

type heldPkt struct {
	at    pos
	p     []byte
	since time.Time
}

// groupShape is what the shards of one group said about it.
type groupShape struct {
	id    uint32
	valid bool
	k     int  // data count: planned (from data shards) or final (from parity)
	final bool // k came from parity
	m     int
}

// pathHold orders one peer's packets; only the socket's reader uses it.
type pathHold struct {
	maxHold time.Duration
	started bool
	next    pos // the next packet due
	held    []heldPkt
	shapes  [holdGroups]groupShape
	// Skipped counts holes given up (packets quic-go will see as lost or
	// late).
	Skipped uint64
}

// learn records what a shard's header says about its group.
func (h *pathHold) learn(group uint32, index, k, m int) {
	s := &h.shapes[group%holdGroups]
	if !s.valid || s.id != group {
		*s = groupShape{id: group, valid: true, k: k, m: m}
	}
	if index >= k { // parity: k is the data the group really got
		s.k, s.final = k, true
	} else if !s.final {
		s.k = k
	}
}

func (h *pathHold) shape(group uint32) (groupShape, bool) {
	s := h.shapes[group%holdGroups]
	return s, s.valid && s.id == group
}

// offer takes a packet at position at and calls out for every packet now
// due, in order (p is copied by the caller's out only if it keeps it; a
// held packet is copied here).
func (h *pathHold) offer(at pos, p []byte, now time.Time, out func([]byte)) {
	if !h.started {
		h.started, h.next = true, at
	}
	h.normalize()
	if at.group != h.next.group && h.next.before(at) {
		// A later group: the hole's group had its chance.
		h.skipGroup(out)
	}
	switch {
	case at.before(h.next):
		out(p) // late: its hole was given up
		return
	case at == h.next:
		out(p)
		h.next.index++
		h.drain(out)
		return
	}
	if s, ok := h.shape(h.next.group); ok && s.m == 0 {
		h.skipTo(at, out) // nothing can fill the hole
		out(p)
		h.next = pos{at.group, at.index + 1}
		h.drain(out)
		return
	}
	h.insert(heldPkt{at: at, p: append([]byte(nil), p...), since: now})
	if len(h.held) > holdMax {
		h.skipTo(h.held[0].at, out)
		h.drain(out)
	}
}

// insert adds a packet to held in order (duplicates dropped).
func (h *pathHold) insert(x heldPkt) {
	i := len(h.held)
	for i > 0 && x.at.before(h.held[i-1].at) {
		i--
	}
	if i > 0 && h.held[i-1].at == x.at {
		return
	}
	h.held = append(h.held, heldPkt{})
	copy(h.held[i+1:], h.held[i:])
	h.held[i] = x
}

// normalize moves next past the end of its group when the group's size is
// known and next reached it.
func (h *pathHold) normalize() {
	for {
		s, ok := h.shape(h.next.group)
		if !ok || h.next.index < s.k {
			return
		}
		h.next = pos{h.next.group + 1, 0}
	}
}

// drain hands out the held packets that are now due.
func (h *pathHold) drain(out func([]byte)) {
	for {
		h.normalize()
		if len(h.held) == 0 || h.held[0].at != h.next {
			if len(h.held) > 0 && h.held[0].at.before(h.next) {
				h.pop(out) // a duplicate position already passed
				continue
			}
			return
		}
		h.pop(out)
		h.next.index++
	}
}

func (h *pathHold) pop(out func([]byte)) {
	out(h.held[0].p)
	h.held[0] = heldPkt{}
	h.held = h.held[1:]
	if len(h.held) == 0 {
		h.held = h.held[:0:0]
	}
}

// skipGroup gives up the holes of next's group: its held packets go out
// and next moves to the following group.
func (h *pathHold) skipGroup(out func([]byte)) {
	g := h.next.group
	if len(h.held) > 0 && h.held[0].at.group == g {
		h.Skipped++
	}
	for len(h.held) > 0 && h.held[0].at.group == g {
		h.pop(out)
	}
	h.next = pos{g + 1, 0}
	h.drain(out)
}

// skipTo gives up every hole before at, handing out the held packets
// before it.
func (h *pathHold) skipTo(at pos, out func([]byte)) {
	for len(h.held) > 0 && h.held[0].at.before(at) {
		h.pop(out)
	}
	if h.next.before(at) {
		h.Skipped++
		h.next = at
	}
}

// expire gives up holes whose first waiting packet waited maxHold.
func (h *pathHold) expire(now time.Time, out func([]byte)) {
	for len(h.held) > 0 && !now.Before(h.deadline()) {
		h.skipTo(h.held[0].at, out)
		h.drain(out)
	}
}

// deadline is when the oldest waiting packet is due to be given up (zero:
// none waits).
func (h *pathHold) deadline() time.Time {
	if len(h.held) == 0 {
		return time.Time{}
	}
	oldest := h.held[0].since
	for _, x := range h.held[1:] {
		if x.since.Before(oldest) {
			oldest = x.since
		}
	}
	return oldest.Add(h.maxHold)
}
