package fec

import (
	"fmt"
	"math/bits"
	"time"
)

const (
	slotEmpty  = iota
	slotOpen   // collecting shards, may still recover
	slotClosed // accounted for; kept until it leaves the window to drop duplicates
)

// group is the decoder's state for one group number.
type group struct {
	id     uint32
	state  uint8
	done   bool // no recovery will be tried: nothing missing, tried, or unusable
	m      int  // parity count, the same in every shard of the group
	k      int  // planned data count from data shards, 0 until one arrives
	pk     int  // actual data count from parity shards, 0 until one arrives
	size   int  // parity body length (encoding shard size), 0 until parity
	maxEnc int  // longest encoding shard among the data received
	maxIdx int  // 1 + highest data index received
	have   uint64
	dlv    uint64 // data indices delivered: received or rebuilt
	parity uint64 // parity numbers received
	nbuf   int    // buffers held in data and par
	opened time.Time
	data   [MaxK][]byte // encoding shards of the data received
	par    [MaxM][]byte // parity bodies received
}

func (g *group) open(id uint32, m int, now time.Time) {
	*g = group{id: id, state: slotOpen, m: m, opened: now, done: m == 0}
}

func mask(n int) uint64 {
	if n >= 64 {
		return ^uint64(0)
	}
	return 1<<n - 1
}

// dataCount is the number of data shards the group has, as far as known.
func (g *group) dataCount() int {
	switch {
	case g.pk != 0:
		return g.pk
	case g.m > 0:
		return g.k // a full group unless the sender flushed and all parity was lost
	default:
		return g.maxIdx // no parity tells a flushed group's size; tail losses go unseen
	}
}

// allData reports whether every data shard of the group has been delivered.
func (g *group) allData() bool {
	n := g.pk
	if n == 0 {
		n = g.k
	}
	return n != 0 && g.dlv&mask(n) == mask(n)
}

func (g *group) checkData(h header) error {
	switch {
	case h.m != g.m:
		return fmt.Errorf("%w: group %d data has m=%d, group has %d", ErrMalformed, h.group, h.m, g.m)
	case g.k != 0 && h.k != g.k:
		return fmt.Errorf("%w: group %d data has k=%d, earlier data %d", ErrMalformed, h.group, h.k, g.k)
	case g.pk != 0 && (h.k < g.pk || h.index >= g.pk):
		return fmt.Errorf("%w: group %d data index %d of k=%d, parity says %d data shards", ErrMalformed, h.group, h.index, h.k, g.pk)
	}
	return nil
}

func (g *group) checkParity(h header, bodyLen int) error {
	switch {
	case h.m != g.m:
		return fmt.Errorf("%w: group %d parity has m=%d, group has %d", ErrMalformed, h.group, h.m, g.m)
	case g.pk != 0 && h.k != g.pk:
		return fmt.Errorf("%w: group %d parity has k=%d, earlier parity %d", ErrMalformed, h.group, h.k, g.pk)
	case g.k != 0 && h.k > g.k:
		return fmt.Errorf("%w: group %d parity has k=%d, data planned %d", ErrMalformed, h.group, h.k, g.k)
	case g.maxIdx > h.k:
		return fmt.Errorf("%w: group %d parity has k=%d, data index %d arrived", ErrMalformed, h.group, h.k, g.maxIdx-1)
	case g.size != 0 && bodyLen != g.size:
		return fmt.Errorf("%w: group %d parity of %d bytes, earlier parity %d", ErrMalformed, h.group, bodyLen, g.size)
	case bodyLen < g.maxEnc:
		return fmt.Errorf("%w: group %d parity of %d bytes, shorter than data encoding %d", ErrMalformed, h.group, bodyLen, g.maxEnc)
	}
	return nil
}

func (d *Decoder) receiveData(g *group, h header, body []byte, deliver func(uint32, int, []byte)) error {
	if err := g.checkData(h); err != nil {
		d.stats.Malformed++
		return err
	}
	bit := uint64(1) << h.index
	if g.dlv&bit != 0 {
		d.stats.Duplicates++
		return nil
	}
	g.k = h.k
	g.have |= bit
	g.dlv |= bit
	g.maxIdx = max(g.maxIdx, h.index+1)
	enc := encHeaderLen + len(body)
	g.maxEnc = max(g.maxEnc, enc)
	if g.state == slotClosed {
		d.stats.Late++
	} else {
		d.stats.Delivered++
	}
	deliver(h.group, h.index, body)
	switch {
	case g.done:
		return nil
	case g.size != 0 && enc > g.size:
		d.release(g)
		d.stats.Malformed++
		return fmt.Errorf("%w: group %d data of %d bytes, parity is %d: parity ignored", ErrMalformed, h.group, len(body), g.size)
	case g.allData():
		d.release(g)
		return nil
	}
	b := d.take(g)
	if b == nil {
		d.release(g)
		return nil
	}
	g.data[h.index] = putEncoding(b, body)
	d.recover(g, deliver)
	return nil
}

func (d *Decoder) receiveParity(g *group, h header, body []byte, deliver func(uint32, int, []byte)) error {
	if err := g.checkParity(h, len(body)); err != nil {
		d.stats.Malformed++
		return err
	}
	j := h.index - h.k
	bit := uint64(1) << j
	if g.parity&bit != 0 {
		d.stats.Duplicates++
		return nil
	}
	if g.state == slotClosed {
		d.stats.Stale++
		return nil
	}
	g.parity |= bit
	g.pk, g.size = h.k, len(body)
	if g.done {
		return nil
	}
	if g.allData() {
		d.release(g)
		return nil
	}
	b := d.take(g)
	if b == nil {
		d.release(g)
		return nil
	}
	g.par[j] = b[:copy(b, body)]
	d.recover(g, deliver)
	return nil
}

// recover rebuilds the missing data shards of g once it has as many shards
// as data shards, delivers those whose length and CRC check out, and
// releases the group's buffers.
func (d *Decoder) recover(g *group, deliver func(uint32, int, []byte)) {
	k := g.pk
	if g.done || k == 0 || bits.OnesCount64(g.have&mask(k))+bits.OnesCount64(g.parity) < k {
		return
	}
	defer d.release(g)
	rs, err := d.codecs.get(k, g.m)
	if err != nil {
		return // cannot happen for k, m within limits; the loss is counted at close
	}
	shards := d.shards[:k+g.m]
	for i := range k {
		if g.have&(1<<i) == 0 {
			if d.rec[i] == nil {
				d.rec[i] = make([]byte, d.bufLen)
			}
			shards[i] = d.rec[i][:0]
			continue
		}
		s := g.data[i][:g.size]
		clear(s[len(g.data[i]):])
		shards[i] = s
	}
	for j := range g.m {
		shards[k+j] = g.par[j] // nil if missing
	}
	if err := rs.ReconstructData(shards); err != nil {
		return
	}
	for i := range k {
		bit := uint64(1) << i
		if g.dlv&bit != 0 {
			continue
		}
		pkt, ok := checkEncoding(shards[i])
		if !ok {
			d.stats.Corrupt++
			continue
		}
		g.dlv |= bit
		d.stats.Recovered++
		deliver(g.id, i, pkt)
	}
}

// close accounts for an open group: its loss events go into the loss
// estimate (see [Decoder.LossRate]) and the data never delivered into
// Unrecoverable.
func (d *Decoder) close(g *group) {
	d.release(g)
	g.state = slotClosed
	d.stats.GroupsClosed++
	n := g.dataCount()
	expected := n
	if g.m > 0 {
		planned := g.k
		if planned == 0 { // no data arrived: assume a full group
			planned = n
		}
		expected += FlushParity(g.m, n, planned)
	}
	d.loss.add(lossRuns(g.have, n, g.parity, expected-n), expected)
	d.lastExp = expected
	d.stats.Unrecoverable += uint64(n - bits.OnesCount64(g.dlv&mask(n)))
}

// lossRuns counts the runs of consecutive missing shards of a group in the
// order they were sent: its n data shards (received: bits of have), then
// its p parity shards (bits of parity).
func lossRuns(have uint64, n int, parity uint64, p int) int {
	runs, missing := 0, false
	for i := range n + p {
		var got bool
		if i < n {
			got = have&(1<<i) != 0
		} else {
			got = parity&(1<<(i-n)) != 0
		}
		if !got && !missing {
			runs++
		}
		missing = !got
	}
	return runs
}
