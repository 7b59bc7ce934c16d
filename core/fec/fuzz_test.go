package fec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// FuzzDecoder feeds arbitrary bytes, cut into shards, to one decoder: it
// must not panic, must report every rejection as ErrMalformed, and must stay
// within its bounds.
func FuzzDecoder(f *testing.F) {
	shards := encodeAll(f, 3, 2, 1500, [][]byte{[]byte("abc"), []byte("defgh"), {1}, []byte("flushed")})
	var seed []byte
	for _, s := range shards {
		seed = append(seed, byte(len(s)))
		seed = append(seed, s...)
	}
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Add([]byte{7, 0, 0, 0, 0, 0, 1, 0})
	f.Add([]byte{0, 8, 255, 255, 255, 255, 2, 1, 1, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		d := newDecoder(t, DecoderOptions{Window: 8, MaxPacket: 200, MaxMemory: 1})
		now := t0
		for len(in) > 0 {
			n := min(int(in[0]), len(in)-1)
			shard := in[1 : 1+n]
			in = in[1+n:]
			now = now.Add(time.Duration(n) * 10 * time.Millisecond)
			err := d.Receive(shard, now, func(p []byte) {
				if len(p) == 0 || len(p) > 200 {
					t.Fatalf("delivered %d bytes", len(p))
				}
			})
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if d.Tracked() > 8 || d.held+len(d.free) > d.maxHeld || d.held < 0 {
				t.Fatalf("tracked %d, buffers %d+%d of %d", d.Tracked(), d.held, len(d.free), d.maxHeld)
			}
		}
	})
}

// byteSource hands out fuzz input bytes, then zeros.
type byteSource []byte

func (b *byteSource) next() int {
	if len(*b) == 0 {
		return 0
	}
	v := (*b)[0]
	*b = (*b)[1:]
	return int(v)
}

// arrival is one shard copy reaching the decoder.
type arrival struct {
	shard int // index into the emitted shards
	at    int // sort key: position in the arrival order
}

// FuzzRoundTrip derives packets, group shapes, flushes and a loss, reorder
// and duplication pattern from the input, runs them through an encoder and
// a decoder with a small window, and checks:
//
//  1. every delivered packet is one of the sent packets, byte for byte;
//  2. a packet is delivered more than once only if a copy of its data shard
//     arrived while its group was behind the decoder's window (such data is
//     delivered untracked, see [Stats].Late);
//  3. every packet of a group is delivered if at most m of the group's k+m
//     shards failed to arrive while the group was inside the window (k the
//     group's actual data count, m its parity count).
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{3, 2, 1, 20, 5, 9, 13, 200, 1, 0, 0, 0, 3, 0, 7, 1, 2, 3, 4})
	f.Add(bytes.Repeat([]byte{7, 3, 2, 40, 100, 1, 2, 250, 0, 3, 5, 8}, 20))
	f.Add(bytes.Repeat([]byte{0, 0, 0, 63, 255, 128}, 40))
	f.Fuzz(func(t *testing.T, in []byte) {
		src := byteSource(in)
		k, m, window := 1+src.next()%8, src.next()%5, 1<<(src.next()%4)
		npkts := 1 + src.next()%64
		e, err := NewEncoder(k, m, 300)
		if err != nil {
			t.Fatal(err)
		}
		var shards [][]byte
		emit := func(s []byte) { shards = append(shards, bytes.Clone(s)) }
		sent := make(map[string]int) // contents -> packet number
		for i := range npkts {
			p := make([]byte, 3+src.next()%250)
			binary.BigEndian.PutUint16(p, uint16(i))
			for j := 2; j < len(p); j++ {
				p[j] = byte(src.next())
			}
			sent[string(p)] = i
			if err := e.Add(p, emit); err != nil {
				t.Fatal(err)
			}
			switch op := src.next(); {
			case op%7 == 1:
				if err := e.Flush(emit); err != nil {
					t.Fatal(err)
				}
			case op%7 == 2:
				if err := e.SetParams(1+op/7%8, op/56%5); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := e.Flush(emit); err != nil {
			t.Fatal(err)
		}
		order := arrivalOrder(&src, len(shards))
		checkRoundTrip(t, shards, order, sent, window)
	})
}

// arrivalOrder drops, delays and duplicates shards as the input says.
func arrivalOrder(src *byteSource, n int) []int {
	var arr []arrival
	for i := range n {
		switch op := src.next(); op % 8 {
		case 0, 1, 2, 3: // in order
			arr = append(arr, arrival{i, 16 * i})
		case 4: // lost
		case 5: // late by up to 15 shards
			arr = append(arr, arrival{i, 16*i + 16*(op/8%16) + 1})
		case 6: // duplicated, the copy late
			arr = append(arr, arrival{i, 16 * i}, arrival{i, 16*i + 16*(op/8%16) + 2})
		case 7: // very late
			arr = append(arr, arrival{i, 16*i + 16*64 + 3})
		}
	}
	// Stable insertion sort by arrival position: inputs are small.
	for i := 1; i < len(arr); i++ {
		for j := i; j > 0 && arr[j].at < arr[j-1].at; j-- {
			arr[j], arr[j-1] = arr[j-1], arr[j]
		}
	}
	order := make([]int, len(arr))
	for i, a := range arr {
		order[i] = a.shard
	}
	return order
}

func checkRoundTrip(t *testing.T, shards [][]byte, order []int, sent map[string]int, window int) {
	d := newDecoder(t, DecoderOptions{Window: window, MaxPacket: 300, MaxWait: time.Hour, MaxMemory: 1 << 20}) // no eviction: at most 320 shards
	delivered := make(map[int]int)
	outside := make(map[int]bool)  // packet had a data copy arrive behind the window
	inWindow := make(map[int]bool) // shard had a copy arrive inside the window
	var head uint32
	for n, i := range order {
		h := shardHeader(shards[i])
		if n == 0 || int32(h.group-head) > 0 {
			head = h.group
		}
		behind := -int32(h.group-head) >= int32(window)
		if !behind {
			inWindow[i] = true
		}
		err := d.Receive(shards[i], t0, func(p []byte) {
			num, ok := sent[string(p)]
			if !ok {
				t.Fatalf("delivered a packet never sent: %x", p)
			}
			delivered[num]++
		})
		if err != nil {
			t.Fatalf("shard %d: %v", i, err)
		}
		if h.isData() && behind {
			outside[int(binary.BigEndian.Uint16(shards[i][HeaderLen:]))] = true
		}
	}
	for num, c := range delivered {
		if c > 1 && !outside[num] {
			t.Fatalf("packet %d delivered %d times", num, c)
		}
	}
	first := 0 // index of the group's first shard
	for _, g := range byGroup(shards) {
		checkGroupDelivered(t, g, first, inWindow, delivered)
		first += len(g)
	}
}

// checkGroupDelivered fails if group g (shards[first:first+len(g)]) missed
// no more shards inside the window than it has parity shards (m, or
// FlushParity's share for a group closed early) yet not all its packets
// came out.
func checkGroupDelivered(t *testing.T, g [][]byte, first int, inWindow map[int]bool, delivered map[int]int) {
	m := 0 // parity shards the group got (fewer than its m when it was flushed)
	missing := 0
	for j, sh := range g {
		if !shardHeader(sh).isData() {
			m++
		}
		if !inWindow[first+j] {
			missing++
		}
	}
	if missing > m {
		return
	}
	for _, s := range g {
		if shardHeader(s).isData() {
			if num := int(binary.BigEndian.Uint16(s[HeaderLen:])); delivered[num] == 0 {
				t.Fatalf("group %d lost %d of %d shards, m=%d, yet packet %d not delivered", shardHeader(s).group, missing, len(g), m, num)
			}
		}
	}
}
