package fec

import (
	"encoding/binary"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// renumber adds off to the group number of every shard.
func renumber(shards [][]byte, off uint32) {
	for _, s := range shards {
		binary.BigEndian.PutUint32(s, binary.BigEndian.Uint32(s)+off)
	}
}

func TestGroupNumberWraps(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	pkts := randPackets(r, 50, 500)
	shards := encodeAll(t, 5, 1, 1500, pkts) // groups 0..9
	renumber(shards, ^uint32(0)-4)           // groups 2^32-5 .. 4
	d := newDecoder(t, DecoderOptions{Window: 4})
	var s sink
	for i, sh := range shards {
		if i%6 != 2 { // one data shard lost per group
			feed(t, d, &s, t0, sh)
		}
	}
	wantAll(t, &s, pkts)
	if st := d.Stats(); st.Recovered != 10 || st.Late != 0 || st.GroupsLost != 0 || st.GroupsClosed != 6 {
		t.Fatalf("stats %+v", st) // 10 groups, window 4: 6 left it
	}
	// Group 2^32-1 is now behind the window: its data is delivered untracked,
	// its parity dropped.
	feed(t, d, &s, t0, shards[4*6], shards[4*6+5])
	if st := d.Stats(); st.Late != 1 || st.Stale != 1 || len(s.got) != 51 {
		t.Fatalf("stats %+v", st)
	}
}

func TestWindowCountsMissingGroups(t *testing.T) {
	r := rand.New(rand.NewPCG(25, 26))
	shards := encodeAll(t, 4, 2, 1500, randPackets(r, 40, 100)) // groups 0..9, 6 shards each
	d := newDecoder(t, DecoderOptions{Window: 4, LossMemory: 1 << 30})
	var s sink
	for i, sh := range shards {
		if g := i / 6; g != 3 && g != 4 { // groups 3 and 4 lost whole
			feed(t, d, &s, t0, sh)
		}
	}
	if st := d.Stats(); st.GroupsLost != 2 || st.GroupsClosed != 4 {
		t.Fatalf("stats %+v", st)
	}
	// Each group lost whole is one loss event of its 6 shards.
	if got, want := d.LossRate(), 2.0/36; got < want-1e-6 || got > want+1e-6 {
		t.Fatalf("loss %v, want %v", got, want)
	}
	// A jump of more than a window closes everything tracked; the groups
	// jumped over are not counted.
	far := encodeAll(t, 4, 2, 1500, randPackets(r, 4, 100))
	renumber(far, 1000)
	feed(t, d, &s, t0, far...)
	if st := d.Stats(); st.GroupsLost != 2 || st.GroupsClosed != 8 || d.Tracked() != 1 {
		t.Fatalf("after jump: stats %+v, tracked %d", st, d.Tracked())
	}
}

func TestFirstGroupIsTheFloor(t *testing.T) {
	r := rand.New(rand.NewPCG(27, 28))
	shards := encodeAll(t, 2, 1, 1500, randPackets(r, 20, 100))
	renumber(shards, 100)
	d := newDecoder(t, DecoderOptions{Window: 4})
	var s sink
	feed(t, d, &s, t0, shards...)
	// Groups 97..99 fell out of the window but were never sent.
	if st := d.Stats(); st.GroupsLost != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestMemoryBound feeds hostile shards with random group numbers, shapes and
// lengths and checks the decoder's state stays within its bounds.
func TestMemoryBound(t *testing.T) {
	r := rand.New(rand.NewPCG(29, 30))
	opt := DecoderOptions{Window: 64, MaxPacket: 1500, MaxMemory: 1 << 20}
	d := newDecoder(t, opt)
	buf := make([]byte, HeaderLen+encHeaderLen+1500)
	// Even rounds: random group numbers and shapes. Odd rounds: random
	// shapes crowding the window plus consistent full-size groups that
	// never complete, to fill memory.
	hostile := func(round, i int) []byte {
		k, m := 1+r.IntN(MaxK), r.IntN(MaxM+1)
		g := r.Uint32()
		n := HeaderLen + 1 + r.IntN(len(buf)-HeaderLen)
		switch base := uint32(round*1000 + i/50); {
		case round%2 == 0:
		case i%2 == 0:
			g = base + uint32(r.IntN(32))
		default:
			g, k, m = base+32+uint32(r.IntN(32)), MaxK, MaxM
			n = len(buf) - encHeaderLen
		}
		idx := r.IntN(k + m)
		if idx >= k && round%2 == 1 {
			n = len(buf)
		}
		putHeader(buf, g, idx, k, m)
		return buf[:n]
	}
	var ms runtime.MemStats
	var heap [4]uint64
	for round := range 4 {
		for i := range 25_000 {
			_ = d.Receive(hostile(round, i), t0.Add(time.Duration(i)*time.Microsecond), func([]byte) {})
			if n := d.Tracked(); n > 64 {
				t.Fatalf("tracking %d groups, window 64", n)
			}
			if d.held+len(d.free) > d.maxHeld {
				t.Fatalf("%d buffers, bound %d", d.held+len(d.free), d.maxHeld)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		heap[round] = ms.HeapAlloc
	}
	if d.maxHeld*d.bufLen > 2<<20 {
		t.Fatalf("bound %d bytes for MaxMemory 1 MiB", d.maxHeld*d.bufLen)
	}
	// Growth up to the buffer bound is allowed, not beyond.
	for _, h := range heap {
		if h > heap[0]+uint64(d.maxHeld*d.bufLen)+512<<10 {
			t.Fatalf("heap grew: %v, buffer bound %d", heap, d.maxHeld*d.bufLen)
		}
	}
	st := d.Stats()
	t.Logf("stats %+v, buffers %d, heap %v", st, d.held+len(d.free), heap)
	if st.Shards != 100_000 || st.Evicted == 0 {
		t.Fatalf("shards %d", st.Shards)
	}
}

func TestEvictionKeepsNewestGroup(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	// Memory for the minimum, 2*(MaxK+MaxM) buffers: groups of 64+32 with
	// one loss each need 95 buffers, so the older must be evicted.
	pkts := randPackets(r, 64*4, 100)
	shards := encodeAll(t, 64, 32, 1500, pkts)
	d := newDecoder(t, DecoderOptions{MaxMemory: 1})
	var s sink
	for i, sh := range shards {
		// Lose data 0 of each group and hold back its parity, so every
		// group keeps its 63 buffers: the fourth group does not fit.
		if i%96 != 0 && i%96 < 64 {
			feed(t, d, &s, t0.Add(time.Duration(i)*time.Microsecond), sh)
		}
	}
	if st := d.Stats(); st.Evicted != 1 || d.held > d.maxHeld {
		t.Fatalf("stats %+v held %d max %d", st, d.held, d.maxHeld)
	}
	// The newest group still recovers.
	feed(t, d, &s, t0, shards[3*96+64])
	if d.Stats().Recovered != 1 {
		t.Fatalf("recovered %d", d.Stats().Recovered)
	}
	// The evicted one cannot any more.
	feed(t, d, &s, t0, shards[64])
	if st := d.Stats(); st.Recovered != 1 || st.Stale != 1 || st.Unrecoverable != 1 {
		t.Fatalf("stats %+v", st)
	}
}
