package fec

import (
	"fmt"

	"github.com/klauspost/reedsolomon"
)

// Encoder turns a stream of packets into data and parity shards. It is not
// safe for concurrent use.
//
// Each packet is folded into the group's parity as it passes, so the
// encoder keeps no copy of the data and the work is spread over the group.
//
// The caller owns the group timer: when Add returns with Pending() == 1 a
// new group has opened, and if it is still open after a while (a fraction
// of the RTT) the caller calls Flush so that the parity of a half-full group
// does not wait for traffic that may never come.
type Encoder struct {
	k, m      int // shape of the open group
	nextK     int // shape for the next group (SetParams)
	nextM     int
	maxPacket int
	group     uint32
	n         int      // data shards in the open group
	size      int      // encoding shard size of the open group so far
	parity    [][]byte // accumulators; zero beyond size
	views     [][]byte // parity[:len] views handed to the codec
	enc       []byte   // encoding shard of the packet being added
	out       []byte   // header + body handed to emit
	codecs    codecs
}

// NewEncoder returns an encoder that closes a group after k data shards,
// emits m parity shards for it, and accepts packets of up to maxPacket
// bytes.
func NewEncoder(k, m, maxPacket int) (*Encoder, error) {
	if err := checkShape(k, m); err != nil {
		return nil, err
	}
	if maxPacket < 1 || maxPacket > MaxPacket {
		return nil, fmt.Errorf("fec: max packet %d outside 1..%d", maxPacket, MaxPacket)
	}
	return &Encoder{
		k: k, m: m, nextK: k, nextM: m,
		maxPacket: maxPacket,
		parity:    make([][]byte, MaxM),
		views:     make([][]byte, MaxM),
		enc:       make([]byte, encHeaderLen+maxPacket),
		out:       make([]byte, HeaderLen+encHeaderLen+maxPacket),
		// One goroutine: shards are small, and a codec that never spawns
		// keeps Add allocation-free.
		codecs: newCodecs(reedsolomon.WithMaxGoroutines(1)),
	}, nil
}

func checkShape(k, m int) error {
	if k < 1 || k > MaxK {
		return fmt.Errorf("fec: k=%d outside 1..%d", k, MaxK)
	}
	if m < 0 || m > MaxM {
		return fmt.Errorf("fec: m=%d outside 0..%d", m, MaxM)
	}
	return nil
}

// SetParams sets the group shape; it takes effect when the next group opens,
// so the open group keeps the shape its data shards announced.
func (e *Encoder) SetParams(k, m int) error {
	if err := checkShape(k, m); err != nil {
		return err
	}
	e.nextK, e.nextM = k, m
	return nil
}

// Params returns the shape of the open group, or of the next one if none is
// open.
func (e *Encoder) Params() (k, m int) {
	if e.n == 0 {
		return e.nextK, e.nextM
	}
	return e.k, e.m
}

// Pending returns the number of data shards in the open group.
func (e *Encoder) Pending() int { return e.n }

// Add emits pkt as a data shard and, if that completes the group, the
// group's parity shards. The slice passed to emit is valid only during the
// call. A packet longer than the maximum returns [ErrTooLarge] and changes
// nothing.
func (e *Encoder) Add(pkt []byte, emit func(shard []byte)) error {
	if len(pkt) == 0 {
		return ErrEmpty
	}
	if len(pkt) > e.maxPacket {
		return fmt.Errorf("%w: %d bytes, max %d", ErrTooLarge, len(pkt), e.maxPacket)
	}
	if e.n == 0 {
		e.k, e.m = e.nextK, e.nextM
	}
	if e.m > 0 {
		if err := e.fold(pkt); err != nil {
			return err
		}
	}
	putHeader(e.out, e.group, e.n, e.k, e.m)
	n := copy(e.out[HeaderLen:], pkt)
	emit(e.out[:HeaderLen+n])
	e.n++
	if e.n == e.k {
		e.finish(emit)
	}
	return nil
}

// fold adds the encoding shard of pkt, data shard e.n, into the parity.
func (e *Encoder) fold(pkt []byte) error {
	rs, err := e.codecs.get(MaxK, e.m)
	if err != nil {
		return err
	}
	enc := putEncoding(e.enc, pkt)
	views := e.views[:e.m]
	for j := range views {
		if e.parity[j] == nil {
			e.parity[j] = make([]byte, encHeaderLen+e.maxPacket)
		}
		views[j] = e.parity[j][:len(enc)]
	}
	if err := rs.EncodeIdx(enc, e.n, views); err != nil {
		return fmt.Errorf("fec: encoding group %d shard %d: %w", e.group, e.n, err)
	}
	e.size = max(e.size, len(enc))
	return nil
}

// Flush closes the open group early: it emits parity over the data shards
// sent so far (its header's k is their count). It does nothing if no group
// is open.
func (e *Encoder) Flush(emit func(shard []byte)) error {
	if e.n > 0 {
		e.finish(emit)
	}
	return nil
}

// finish emits the parity of the open group, zeroes the accumulators and
// opens the next group.
func (e *Encoder) finish(emit func(shard []byte)) {
	send := FlushParity(e.m, e.n, e.k)
	for j := range e.m {
		if j >= send {
			clear(e.parity[j][:e.size])
			continue
		}
		p := e.parity[j][:e.size]
		putHeader(e.out, e.group, e.n+j, e.n, e.m)
		copy(e.out[HeaderLen:], p)
		emit(e.out[:HeaderLen+e.size])
		clear(p)
	}
	e.group++
	e.n, e.size = 0, 0
}
