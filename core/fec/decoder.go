package fec

import (
	"fmt"
	"math"
	"math/bits"
	"time"

	"github.com/klauspost/reedsolomon"
)

// DecoderOptions bound what a [Decoder] tracks. Zero fields take defaults.
type DecoderOptions struct {
	// Window is how many consecutive groups, ending at the highest group
	// number seen, are tracked; rounded up to a power of two. Default 64,
	// at most 4096.
	Window int
	// MaxWait is how long a group stays open after its first shard; then
	// it is closed and its missing data counted as unrecoverable. Default
	// 500 ms: longer than a group takes to fill plus the sender's flush
	// timer plus reordering, short enough that the loss count is fresh.
	MaxWait time.Duration
	// MaxPacket is the longest packet a data shard may carry; it should
	// equal the peer encoder's. Default 1500, at most [MaxPacket].
	MaxPacket int
	// MaxMemory bounds the bytes held in shard buffers. When full, the
	// oldest open group is closed early. Default 16 MiB.
	MaxMemory int
	// LossMemory is about how many shards the loss estimate averages over.
	// Default 8192.
	LossMemory int
}

const maxWindow = 4096

func (o DecoderOptions) withDefaults() (DecoderOptions, error) {
	if o.Window == 0 {
		o.Window = 64
	}
	if o.Window < 1 || o.Window > maxWindow {
		return o, fmt.Errorf("fec: window %d outside 1..%d", o.Window, maxWindow)
	}
	o.Window = 1 << bits.Len(uint(o.Window-1))
	if o.MaxWait == 0 {
		o.MaxWait = 500 * time.Millisecond
	}
	if o.MaxWait < 0 {
		return o, fmt.Errorf("fec: negative max wait %v", o.MaxWait)
	}
	if o.MaxPacket == 0 {
		o.MaxPacket = 1500
	}
	if o.MaxPacket < 1 || o.MaxPacket > MaxPacket {
		return o, fmt.Errorf("fec: max packet %d outside 1..%d", o.MaxPacket, MaxPacket)
	}
	if o.MaxMemory == 0 {
		o.MaxMemory = 16 << 20
	}
	if o.LossMemory == 0 {
		o.LossMemory = 8192
	}
	if o.MaxMemory < 0 || o.LossMemory < 0 {
		return o, fmt.Errorf("fec: negative max memory %d or loss memory %d", o.MaxMemory, o.LossMemory)
	}
	return o, nil
}

// Decoder delivers the packets of received shards and rebuilds lost ones.
// It is not safe for concurrent use. Its memory is bounded by its options
// whatever it is fed: Window group slots, at most MaxMemory bytes of shard
// buffers (never fewer than two full groups' worth), and a bounded codec
// cache.
type Decoder struct {
	opt   DecoderOptions
	slots []group

	started     bool
	head        uint32 // highest group number seen (serial arithmetic)
	floor       uint32 // first group seen; groups before it were never sent to us
	floorActive bool   // the window still reaches back to floor
	deadline    time.Time

	free    [][]byte // shard buffers not in use
	held    int      // buffers in use by groups
	maxHeld int
	rec     [][]byte // scratch outputs for reconstruction
	shards  [][]byte // scratch shard list for reconstruction
	bufLen  int
	codecs  codecs
	stats   Stats
	loss    lossEstimator
	lastExp int // shards expected in the last group closed
}

// NewDecoder returns a decoder with the given bounds.
func NewDecoder(opt DecoderOptions) (*Decoder, error) {
	opt, err := opt.withDefaults()
	if err != nil {
		return nil, err
	}
	bufLen := encHeaderLen + opt.MaxPacket
	maxHeld := max(opt.MaxMemory/bufLen, 2*(MaxK+MaxM))
	return &Decoder{
		opt:     opt,
		slots:   make([]group, opt.Window),
		free:    make([][]byte, 0, maxHeld),
		maxHeld: maxHeld,
		rec:     make([][]byte, MaxK),
		shards:  make([][]byte, MaxK+MaxM),
		bufLen:  bufLen,
		// No inversion cache: hostile loss patterns would grow it without
		// bound, and inverting a 64x64 matrix is cheap next to a packet.
		codecs: newCodecs(reedsolomon.WithInversionCache(false), reedsolomon.WithMaxGoroutines(1)),
		loss:   lossEstimator{memory: float64(max(opt.LossMemory, 1))},
	}, nil
}

// Stats returns the counters so far and the current loss estimate.
func (d *Decoder) Stats() Stats {
	s := d.stats
	s.Loss = d.loss.rate()
	return s
}

// LossRate returns the rate of loss events among the shards (data and
// parity), averaged over about LossMemory recent shards of closed groups:
// a run of consecutive shards lost (in the order sent) counts once, and so
// does a group of which nothing arrived (counted as the size of the group
// closed before it). Random loss shows as itself; a full queue's overflow,
// which drops a burst that no parity covers and which parity would only
// feed, shows as one event.
func (d *Decoder) LossRate() float64 { return d.loss.rate() }

// CautiousLoss is the loss rate a session reports to the peer for
// [Choose]: while the estimate rests on fewer than 4,096 shards, the upper
// end of its Wilson interval (z = 2), after that LossRate itself. A rate
// measured over a few hundred shards says little (at 1 % loss, one time in
// thirteen it is 0 over 256 shards), and a sender that believed it would
// drop its parity at the start of a flow, when a loss costs the most: a
// loss-based congestion control in slow start leaves it at the first
// unrepaired loss and then grows its window slowly. The bound starts high
// (1.5 % over 256 clean shards, 3 % with two lost) and closes in on the
// rate; trusting the rate once it is well measured keeps a clean link
// that sees the odd burst of congestion loss from paying for parity.
func (d *Decoder) CautiousLoss() float64 { return d.loss.cautious() }

// Tracked returns the number of groups the decoder holds state for.
func (d *Decoder) Tracked() int {
	n := 0
	for i := range d.slots {
		if d.slots[i].state != slotEmpty {
			n++
		}
	}
	return n
}

// Receive takes one shard. It calls deliver for its packet if it is a data
// shard seen for the first time, and for every packet the shard lets the
// decoder rebuild; the slice is valid only during the call. A shard it
// cannot use returns an error wrapping [ErrMalformed]; the one case where
// deliver was still called is a data shard longer than its group's parity
// says it may be: the packet is real, the group's parity is then ignored.
func (d *Decoder) Receive(shard []byte, now time.Time, deliver func(pkt []byte)) error {
	return d.ReceiveAt(shard, now, func(_ uint32, _ int, pkt []byte) { deliver(pkt) })
}

// ReceiveAt is Receive for a caller that needs to know where each packet
// stood in the sender's sequence (to deliver in order): deliver also gets
// the packet's group number and data index. Rebuilt packets of a group are
// delivered in index order.
func (d *Decoder) ReceiveAt(shard []byte, now time.Time, deliver func(group uint32, index int, pkt []byte)) error {
	d.stats.Shards++
	h, err := parseHeader(shard)
	if err != nil {
		d.stats.Malformed++
		return err
	}
	body := shard[HeaderLen:]
	if err := d.checkBody(h, len(body)); err != nil {
		d.stats.Malformed++
		return err
	}
	if h.isData() {
		d.stats.Data++
	} else {
		d.stats.Parity++
	}
	d.Expire(now)
	g := d.lookup(h.group, h.m, now)
	if g == nil { // behind the window
		if h.isData() {
			d.stats.Late++
			deliver(h.group, h.index, body)
		} else {
			d.stats.Stale++
		}
		return nil
	}
	if h.isData() {
		return d.receiveData(g, h, body, deliver)
	}
	return d.receiveParity(g, h, body, deliver)
}

func (d *Decoder) checkBody(h header, n int) error {
	if h.isData() {
		if n == 0 || n > d.opt.MaxPacket {
			return fmt.Errorf("%w: data body of %d bytes outside 1..%d", ErrMalformed, n, d.opt.MaxPacket)
		}
		return nil
	}
	if n <= encHeaderLen || n > encHeaderLen+d.opt.MaxPacket {
		return fmt.Errorf("%w: parity body of %d bytes outside %d..%d", ErrMalformed, n, encHeaderLen+1, encHeaderLen+d.opt.MaxPacket)
	}
	return nil
}

// Expire closes the groups that have been open for MaxWait or longer. The
// decoder calls it on every Receive; a session may call it from a timer so
// that the loss estimate moves while no shards arrive.
func (d *Decoder) Expire(now time.Time) {
	if d.deadline.IsZero() || now.Before(d.deadline) {
		return
	}
	var next time.Time
	for i := range d.slots {
		g := &d.slots[i]
		if g.state != slotOpen {
			continue
		}
		dl := g.opened.Add(d.opt.MaxWait)
		if !now.Before(dl) {
			d.close(g)
		} else if next.IsZero() || dl.Before(next) {
			next = dl
		}
	}
	d.deadline = next
}

// lookup returns the slot of group id, opening it if new and moving the
// window forward if id is ahead of it, or nil if id is behind the window.
// Group numbers compare in serial-number arithmetic (RFC 1982): id is ahead
// if id-head, as a signed 32-bit number, is positive.
func (d *Decoder) lookup(id uint32, m int, now time.Time) *group {
	if !d.started {
		d.started, d.head, d.floor, d.floorActive = true, id, id, true
	}
	w := uint32(len(d.slots))
	pos := int32(id - d.head)
	if pos > 0 {
		d.advance(id)
	} else if pos == math.MinInt32 || uint32(-pos) >= w {
		return nil
	}
	g := &d.slots[id&(w-1)]
	if g.state != slotEmpty && g.id == id {
		return g
	}
	d.retireSlot(g) // defensive: the window invariants keep it empty
	g.open(id, m, now)
	if dl := now.Add(d.opt.MaxWait); d.deadline.IsZero() || dl.Before(d.deadline) {
		d.deadline = dl
	}
	return g
}

// advance moves the head to id, retiring the groups that fall out of the
// window. Groups that were never inside the window (a jump of more than a
// window) are not accounted for.
func (d *Decoder) advance(id uint32) {
	w := uint32(len(d.slots))
	delta := min(id-d.head, w)
	for i := uint32(1); i <= delta; i++ {
		old := d.head - w + i
		g := &d.slots[old&(w-1)]
		if g.state != slotEmpty && g.id == old {
			d.retireSlot(g)
		} else if !d.floorActive || int32(old-d.floor) >= 0 {
			// Nothing of this group arrived: one loss event.
			d.stats.GroupsLost++
			d.loss.add(1, d.lastExp)
		}
	}
	d.head = id
	if d.floorActive && int32(d.head-d.floor) >= int32(w) {
		d.floorActive = false
	}
}

// retireSlot closes the group in g if open and frees the slot.
func (d *Decoder) retireSlot(g *group) {
	if g.state == slotOpen {
		d.close(g)
	}
	g.state = slotEmpty
}

// take returns a shard buffer for group g, closing the oldest other open
// group if the memory bound is reached, or nil if nothing can be freed.
func (d *Decoder) take(g *group) []byte {
	if d.held >= d.maxHeld && len(d.free) == 0 {
		d.evict(g)
	}
	if n := len(d.free); n > 0 {
		b := d.free[n-1]
		d.free = d.free[:n-1]
		d.held++
		g.nbuf++
		return b
	}
	if d.held >= d.maxHeld {
		return nil
	}
	d.held++
	g.nbuf++
	return make([]byte, d.bufLen)
}

// evict closes the open group other than keep that holds buffers and opened
// first.
func (d *Decoder) evict(keep *group) {
	var oldest *group
	for i := range d.slots {
		g := &d.slots[i]
		if g == keep || g.state != slotOpen || g.nbuf == 0 {
			continue
		}
		if oldest == nil || g.opened.Before(oldest.opened) {
			oldest = g
		}
	}
	if oldest != nil {
		d.stats.Evicted++
		d.close(oldest)
	}
}

// release returns g's buffers and stops recovery for it.
func (d *Decoder) release(g *group) {
	g.done = true
	if g.nbuf == 0 {
		return
	}
	for i := range g.data {
		if b := g.data[i]; b != nil {
			d.free = append(d.free, b[:cap(b)])
			g.data[i] = nil
		}
	}
	for j := range g.par {
		if b := g.par[j]; b != nil {
			d.free = append(d.free, b[:cap(b)])
			g.par[j] = nil
		}
	}
	d.held -= g.nbuf
	g.nbuf = 0
}
