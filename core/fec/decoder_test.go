package fec

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func TestRoundTripNoLoss(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pkts := randPackets(r, 1000, 1400)
	shards := encodeAll(t, 10, 3, 1500, pkts)
	if want := 1000 + 100*3; len(shards) != want {
		t.Fatalf("%d shards, want %d", len(shards), want)
	}
	d := newDecoder(t, DecoderOptions{})
	var s sink
	feed(t, d, &s, t0, shards...)
	for i, p := range pkts { // no loss: in order, at once
		if string(s.got[i]) != string(p) {
			t.Fatalf("packet %d differs", i)
		}
	}
	wantAll(t, &s, pkts)
	st := d.Stats()
	if st.Delivered != 1000 || st.Recovered != 0 || st.Data != 1000 || st.Parity != 300 || st.Shards != 1300 {
		t.Fatalf("stats %+v", st)
	}
}

// TestRecoverEveryPattern drops every set of at most m shards of a group,
// for small shapes, and checks that all data comes out exactly.
func TestRecoverEveryPattern(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for k := 1; k <= 6; k++ {
		for m := 1; m <= 3; m++ {
			pkts := randPackets(r, k, 300)
			shards := encodeAll(t, k, m, 1500, pkts)
			n := k + m
			for lost := range uint(1 << n) {
				if popcount(lost) > m {
					continue
				}
				d := newDecoder(t, DecoderOptions{})
				var s sink
				for i, sh := range shards {
					if lost&(1<<i) == 0 {
						feed(t, d, &s, t0, sh)
					}
				}
				wantAll(t, &s, pkts)
				if st := d.Stats(); st.Recovered != uint64(popcount(lost&(1<<k-1))) {
					t.Fatalf("k=%d m=%d lost=%b: recovered %d", k, m, lost, st.Recovered)
				}
			}
		}
	}
}

func popcount(x uint) int {
	n := 0
	for ; x != 0; x &= x - 1 {
		n++
	}
	return n
}

func TestRecoverRandomLarge(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for iter := range 200 {
		k, m := 1+r.IntN(MaxK), 1+r.IntN(MaxM)
		pkts := randPackets(r, k, 1500)
		pkts[0] = pkts[0][:1]          // smallest
		pkts[k-1] = make([]byte, 1500) // largest, all zero
		shards := encodeAll(t, k, m, 1500, pkts)
		perm := r.Perm(k + m)[:r.IntN(m+1)]
		drop := make(map[int]bool)
		for _, i := range perm {
			drop[i] = true
		}
		d := newDecoder(t, DecoderOptions{})
		var s sink
		for _, i := range r.Perm(k + m) { // any order
			if !drop[i] {
				feed(t, d, &s, t0, shards[i])
			}
		}
		if len(s.got) != k {
			t.Fatalf("iter %d k=%d m=%d dropped %v: %d delivered", iter, k, m, perm, len(s.got))
		}
		wantAll(t, &s, pkts)
	}
}

func TestTooManyLosses(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	pkts := randPackets(r, 8, 500)
	shards := encodeAll(t, 8, 2, 1500, pkts)
	d := newDecoder(t, DecoderOptions{MaxWait: time.Second})
	var s sink
	// Lose data 1, 5 and parity 0: three losses, m = 2.
	for i, sh := range shards {
		if i != 1 && i != 5 && i != 8 {
			feed(t, d, &s, t0, sh)
		}
	}
	if len(s.got) != 6 || d.Stats().Recovered != 0 {
		t.Fatalf("delivered %d, recovered %d", len(s.got), d.Stats().Recovered)
	}
	if st := d.Stats(); st.Unrecoverable != 0 || st.GroupsClosed != 0 {
		t.Fatalf("counted before the group closed: %+v", st)
	}
	d.Expire(t0.Add(999 * time.Millisecond))
	if d.Stats().GroupsClosed != 0 {
		t.Fatal("closed before MaxWait")
	}
	d.Expire(t0.Add(time.Second))
	st := d.Stats()
	if st.Unrecoverable != 2 || st.GroupsClosed != 1 {
		t.Fatalf("stats %+v", st)
	}
	if got, want := d.LossRate(), 3.0/10; got < want-1e-9 || got > want+1e-9 {
		t.Fatalf("loss rate %v, want %v", got, want)
	}
	// The lost data arriving late is still delivered, once.
	feed(t, d, &s, t0.Add(2*time.Second), shards[1], shards[1], shards[8])
	if len(s.got) != 7 || d.Stats().Late != 1 || d.Stats().Duplicates != 1 || d.Stats().Stale != 1 || d.Stats().Unrecoverable != 2 {
		t.Fatalf("late: delivered %d, stats %+v", len(s.got), d.Stats())
	}
}

func TestReorderAcrossGroups(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	pkts := randPackets(r, 60, 1400)
	shards := encodeAll(t, 6, 2, 1500, pkts) // 10 groups of 8
	var kept [][]byte
	for i, sh := range shards {
		if i%8 != 3 && i%8 != 6 { // lose data 3 and parity 0 of each group
			kept = append(kept, sh)
		}
	}
	r.Shuffle(len(kept), func(i, j int) { kept[i], kept[j] = kept[j], kept[i] })
	d := newDecoder(t, DecoderOptions{})
	var s sink
	feed(t, d, &s, t0, kept...)
	wantAll(t, &s, pkts)
	if d.Stats().Recovered != 10 {
		t.Fatalf("recovered %d", d.Stats().Recovered)
	}
}

func TestDuplicates(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	pkts := randPackets(r, 40, 1000)
	shards := encodeAll(t, 4, 2, 1500, pkts)
	d := newDecoder(t, DecoderOptions{})
	var s sink
	for _, sh := range shards {
		feed(t, d, &s, t0, sh, sh)
	}
	feed(t, d, &s, t0, shards...)
	wantAll(t, &s, pkts)
	if st := d.Stats(); st.Duplicates != uint64(2*len(shards)) {
		t.Fatalf("duplicates %d, want %d", st.Duplicates, 2*len(shards))
	}
	// A duplicate of a rebuilt packet is not delivered again.
	d = newDecoder(t, DecoderOptions{})
	s = sink{}
	feed(t, d, &s, t0, shards[1], shards[2], shards[3], shards[4])
	feed(t, d, &s, t0, shards[0])
	wantAll(t, &s, pkts[:4])
}

func TestFlushPartialGroup(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	pkts := randPackets(r, 3, 1400)
	shards := encodeAll(t, 4, 3, 1500, pkts) // 3 of 4 data, then flushed parity: ceil(3*3/4) = 3
	if len(shards) != 6 {
		t.Fatalf("%d shards", len(shards))
	}
	for i, sh := range shards {
		h := shardHeader(sh)
		if wantK := map[bool]int{true: 4, false: 3}[i < 3]; h.k != wantK || h.index != i || h.m != 3 {
			t.Fatalf("shard %d header %+v", i, h)
		}
	}
	d := newDecoder(t, DecoderOptions{})
	var s sink
	feed(t, d, &s, t0, shards[0], shards[3], shards[5]) // lose data 1 and 2
	wantAll(t, &s, pkts)
	d.Expire(t0.Add(time.Hour))
	// Lost: data 1, 2 (one run) and parity 1 (another) of 3+3 shards.
	if st := d.Stats(); st.Unrecoverable != 0 || math.Abs(d.LossRate()-2.0/6) > 1e-9 {
		t.Fatalf("stats %+v loss %v", st, d.LossRate())
	}
}

// A group closed early gets the fewest parity shards that keep its
// packets as safe as a full group's at the loss the shape is made for:
// never more than m, never fewer than one, more for more data, and one
// fewer would miss the target. The receiver expects exactly those shards.
func TestFlushParityKeepsProtection(t *testing.T) {
	shapes := [][2]int{{10, 3}, {8, 2}, {20, 1}}
	for _, l := range []float64{0.002, 0.01, 0.03, 0.08} {
		k, m := Choose(l)
		shapes = append(shapes, [2]int{k, m})
	}
	for _, sh := range shapes {
		planned, m := sh[0], sh[1]
		if got := FlushParity(m, planned, planned); got != m {
			t.Errorf("full %d+%d group: %d parity, want %d", planned, m, got, m)
		}
		loss := shapeLoss(planned, m)
		target := max(TargetResidual, Residual(loss, planned, m))
		prev := 1
		for k := 1; k < planned; k++ {
			p := FlushParity(m, k, planned)
			switch {
			case p < prev || p > m:
				t.Errorf("%d+%d closed with %d: %d parity, want %d..%d", planned, m, k, p, prev, m)
			case Residual(loss, k, p) > target:
				t.Errorf("%d+%d closed with %d: %d parity leave %.2g residual at %.3g loss, full group %.2g", planned, m, k, p, Residual(loss, k, p), loss, target)
			case p > 1 && Residual(loss, k, p-1) <= target:
				t.Errorf("%d+%d closed with %d: %d parity, %d would do", planned, m, k, p, p-1)
			}
			prev = p
		}
	}
	for _, c := range []struct{ m, k, planned, want int }{
		{0, 5, 32, 0}, {4, 32, 32, 4}, {5, 29, 29, 5}, {7, 3, 32, 4}, {3, 3, 10, 3}, {4, 16, 32, 4}, {4, 1, 32, 2},
	} {
		if got := FlushParity(c.m, c.k, c.planned); got != c.want {
			t.Errorf("FlushParity(%d, %d, %d) = %d, want %d", c.m, c.k, c.planned, got, c.want)
		}
	}
	r := rand.New(rand.NewPCG(15, 16))
	pkts := randPackets(r, 3, 1400)
	shards := encodeAll(t, 10, 3, 1500, pkts) // 3 of 10 data: all 3 parity
	if len(shards) != 6 {
		t.Fatalf("%d shards for 3 packets of a 10+3 group, want 3 + 3 parity", len(shards))
	}
	d := newDecoder(t, DecoderOptions{})
	var s sink
	feed(t, d, &s, t0, shards[0], shards[2], shards[3], shards[5]) // lose data 1 and parity 1
	wantAll(t, &s, pkts)
	d.Expire(t0.Add(time.Hour))
	if l := d.LossRate(); math.Abs(l-2.0/6) > 1e-9 {
		t.Fatalf("loss %v, want 2 of 6 expected shards", l)
	}
}

func TestSetParamsBetweenGroups(t *testing.T) {
	e, err := NewEncoder(4, 1, 1500)
	if err != nil {
		t.Fatal(err)
	}
	var hdrs []header
	var shards [][]byte
	emit := func(s []byte) {
		hdrs = append(hdrs, shardHeader(s))
		shards = append(shards, append([]byte(nil), s...))
	}
	r := rand.New(rand.NewPCG(15, 16))
	pkts := randPackets(r, 9, 200)
	for i, p := range pkts {
		if i == 2 {
			if err := e.SetParams(2, 2); err != nil { // mid-group: next group
				t.Fatal(err)
			}
		}
		if err := e.Add(p, emit); err != nil {
			t.Fatal(err)
		}
	}
	// group 0: 4 data (k=4,m=1) + 1 parity; groups 1, 2: 2 data + 2 parity;
	// group 3: 1 data open.
	want := []header{
		{0, 0, 4, 1}, {0, 1, 4, 1}, {0, 2, 4, 1}, {0, 3, 4, 1}, {0, 4, 4, 1},
		{1, 0, 2, 2}, {1, 1, 2, 2}, {1, 2, 2, 2}, {1, 3, 2, 2},
		{2, 0, 2, 2}, {2, 1, 2, 2}, {2, 2, 2, 2}, {2, 3, 2, 2},
		{3, 0, 2, 2},
	}
	if len(hdrs) != len(want) {
		t.Fatalf("headers %v", hdrs)
	}
	for i := range want {
		if hdrs[i] != want[i] {
			t.Fatalf("shard %d: %+v, want %+v", i, hdrs[i], want[i])
		}
	}
	if e.Pending() != 1 {
		t.Fatalf("pending %d", e.Pending())
	}
	if err := e.SetParams(0, 1); err == nil {
		t.Fatal("k=0 accepted")
	}
	d := newDecoder(t, DecoderOptions{})
	var s sink
	for i, sh := range shards {
		if i != 1 && i != 5 && i != 6 && i != 10 { // one loss in group 0, two in 1, one in 2
			feed(t, d, &s, t0, sh)
		}
	}
	wantAll(t, &s, pkts)
}

func TestNoParityMeasuresLoss(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	pkts := randPackets(r, 20000, 100)
	shards := encodeAll(t, 32, 0, 1500, pkts)
	if len(shards) != len(pkts) {
		t.Fatalf("%d shards for %d packets with m=0", len(shards), len(pkts))
	}
	d := newDecoder(t, DecoderOptions{LossMemory: 1 << 20})
	var s sink
	lost := 0
	for _, sh := range shards {
		if r.Float64() < 0.02 {
			lost++
			continue
		}
		feed(t, d, &s, t0, sh)
	}
	d.Expire(t0.Add(time.Hour))
	// Tail losses of a group go unseen without parity: expect a little under.
	if got := d.LossRate(); got < 0.016 || got > 0.022 {
		t.Fatalf("loss rate %v for 2%% loss (%d lost)", got, lost)
	}
	if d.Stats().Recovered != 0 {
		t.Fatal("recovered without parity")
	}
}

func TestLossRateWithParity(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 20))
	pkts := randPackets(r, 30000, 100)
	shards := encodeAll(t, 10, 2, 1500, pkts)
	d := newDecoder(t, DecoderOptions{LossMemory: 1 << 20})
	var s sink
	for _, sh := range shards {
		if r.Float64() >= 0.01 {
			feed(t, d, &s, t0, sh)
		}
	}
	d.Expire(t0.Add(time.Hour))
	if got := d.LossRate(); got < 0.009 || got > 0.011 {
		t.Fatalf("loss rate %v for 1%%", got)
	}
	// What the session reports then picks a shape that protects for the
	// measured loss and costs at most 15 %.
	if k, m := Choose(d.CautiousLoss()); Residual(d.LossRate(), k, m) > TargetResidual || float64(m)/float64(k) > 0.15 {
		t.Fatalf("reported %.4f (rate %.4f) picks %d+%d", d.CautiousLoss(), d.LossRate(), k, m)
	}
	st := d.Stats()
	if st.Recovered == 0 || st.Delivered+st.Recovered+st.Unrecoverable != uint64(len(pkts)) {
		t.Fatalf("stats %+v", st)
	}
}

func TestGarbageParityNeverDelivers(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	rejected := 0
	for iter := range 300 {
		k, m := 1+r.IntN(10), 1+r.IntN(4)
		pkts := randPackets(r, k, 1400)
		shards := encodeAll(t, k, m, 1500, pkts)
		lostData := r.IntN(k)
		// Corrupt one byte of every parity shard. A byte in the lost
		// shard's padding leaves its packet intact; any other is caught.
		for j := k; j < k+m; j++ {
			shards[j][HeaderLen+r.IntN(len(shards[j])-HeaderLen)] ^= byte(1 + r.IntN(255))
		}
		d := newDecoder(t, DecoderOptions{})
		var s sink
		for i, sh := range shards {
			if i != lostData {
				feed(t, d, &s, t0, sh)
			}
		}
		d.Expire(t0.Add(time.Hour))
		st := d.Stats()
		if st.Corrupt+st.Recovered != 1 || st.Unrecoverable != st.Corrupt {
			t.Fatalf("iter %d: stats %+v", iter, st)
		}
		want := pkts
		if st.Corrupt == 1 {
			rejected++
			want = append(append([][]byte(nil), pkts[:lostData]...), pkts[lostData+1:]...)
		}
		wantAll(t, &s, want) // exactly these, byte for byte: nothing corrupt
	}
	if rejected < 150 { // about two in three land outside the padding
		t.Fatalf("only %d of 300 broken recoveries rejected: is the CRC checked?", rejected)
	}
}

func TestMalformed(t *testing.T) {
	good := encodeAll(t, 4, 2, 1500, [][]byte{{1, 2, 3}, {4}, {5, 6}, {7, 8, 9, 10}})
	mod := func(i int, f func(b []byte) []byte) []byte { return f(append([]byte(nil), good[i]...)) }
	cases := []struct {
		name   string
		before [][]byte // accepted first
		bad    []byte
	}{
		{"empty", nil, nil},
		{"short header", nil, good[0][:6]},
		{"k zero", nil, mod(0, func(b []byte) []byte { b[5] = 0; return b })},
		{"k too big", nil, mod(0, func(b []byte) []byte { b[5] = MaxK + 1; return b })},
		{"m too big", nil, mod(0, func(b []byte) []byte { b[6] = MaxM + 1; return b })},
		{"index beyond k+m", nil, mod(0, func(b []byte) []byte { b[4] = 6; return b })},
		{"empty data", nil, good[0][:HeaderLen]},
		{"data too long", nil, append(mod(0, func(b []byte) []byte { return b }), make([]byte, 1500)...)},
		{"parity too short", nil, good[4][:HeaderLen+encHeaderLen]},
		{"parity too long", nil, append(mod(4, func(b []byte) []byte { return b }), make([]byte, 1500)...)},
		{"data k differs", good[:1], mod(1, func(b []byte) []byte { b[5] = 5; return b })},
		{"data m differs", good[:1], mod(1, func(b []byte) []byte { b[6] = 3; b[4] = 1; return b })},
		{"parity m differs", good[:1], mod(4, func(b []byte) []byte { b[6] = 3; return b })},
		{"parity k above data k", good[:1], mod(4, func(b []byte) []byte { b[5] = 5; b[4] = 5; return b })},
		{"parity k below data index", good[:3], mod(4, func(b []byte) []byte { b[5] = 2; b[4] = 2; return b })},
		{"parity k differs", good[4:5], mod(5, func(b []byte) []byte { b[5] = 3; b[4] = 4; return b })},
		{"parity length differs", good[4:5], mod(5, func(b []byte) []byte { return b[:len(b)-1] })},
		{"parity shorter than data", good[3:4], mod(4, func(b []byte) []byte { return b[:HeaderLen+encHeaderLen+2] })},
		{"data index beyond parity k", [][]byte{mod(4, func(b []byte) []byte { b[5] = 2; b[4] = 2; return b })}, good[2]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := newDecoder(t, DecoderOptions{})
			var s sink
			feed(t, d, &s, t0, c.before...)
			n := len(s.got)
			err := d.Receive(c.bad, t0, s.deliver)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err %v, want ErrMalformed", err)
			}
			if len(s.got) != n {
				t.Fatal("malformed shard delivered")
			}
			if d.Stats().Malformed != 1 {
				t.Fatalf("malformed %d", d.Stats().Malformed)
			}
		})
	}
}

// A data shard longer than its group's parity allows is delivered (it is a
// real packet) but the group's parity is then ignored.
func TestDataLongerThanParity(t *testing.T) {
	shards := encodeAll(t, 3, 1, 1500, [][]byte{{1}, {2}, {3}})
	d := newDecoder(t, DecoderOptions{})
	var s sink
	feed(t, d, &s, t0, shards[3])
	long := append(append([]byte(nil), shards[0]...), 9, 9, 9)
	if err := d.Receive(long, t0, s.deliver); !errors.Is(err, ErrMalformed) || len(s.got) != 1 {
		t.Fatalf("err %v, delivered %d", err, len(s.got))
	}
	feed(t, d, &s, t0, shards[1])
	if len(s.got) != 2 || d.Stats().Recovered != 0 {
		t.Fatalf("recovered from a group with inconsistent parity: %d", len(s.got))
	}
}

// TestNoParityKeepsNothing: groups with m = 0 (a clean link under auto) are
// delivered and counted, and the decoder keeps no copy of their packets.
func TestNoParityKeepsNothing(t *testing.T) {
	enc, err := NewEncoder(32, 0, 1500)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := NewDecoder(DecoderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	delivered, sent := 0, 0
	pkt := make([]byte, 1400)
	for i := range 1000 {
		pkt[0] = byte(i)
		enc.Add(pkt, func(s []byte) {
			if i%10 == 3 {
				return // lost: the packets after it in the group are past a gap
			}
			sent++
			if err := dec.Receive(s, now, func([]byte) { delivered++ }); err != nil {
				t.Fatal(err)
			}
		})
	}
	if delivered != sent {
		t.Fatalf("delivered %d of %d", delivered, sent)
	}
	if dec.held != 0 {
		t.Fatalf("%d shard buffers held for groups without parity", dec.held)
	}
}

// Loss events, not lost shards: a burst counts once, scattered losses each.
func TestLossRuns(t *testing.T) {
	for _, c := range []struct {
		have   uint64
		n      int
		parity uint64
		p      int
		want   int
	}{
		{0b1111, 4, 0b11, 2, 0},
		{0b1011, 4, 0b11, 2, 1}, // data 2
		{0b0011, 4, 0b10, 2, 1}, // data 2, 3, parity 0: one burst
		{0b0101, 4, 0b01, 2, 3}, // data 1, data 3, parity 1
		{0, 4, 0, 2, 1},         // everything
		{0b1110, 4, 0b01, 2, 2}, // data 0, parity 1
	} {
		if got := lossRuns(c.have, c.n, c.parity, c.p); got != c.want {
			t.Errorf("lossRuns(%b, %d, %b, %d) = %d, want %d", c.have, c.n, c.parity, c.p, got, c.want)
		}
	}
	if got := lossRuns(1<<63-1, 64, 0, 1); got != 1 {
		t.Errorf("data 63 and the parity after it: %d runs, want 1", got)
	}
}

// The loss the session reports: the upper bound while few shards were
// seen (so a sender keeps its parity at the start of a flow), above
// CleanLoss until a few thousand clean shards were, then the rate (a clean
// link with a little congestion loss pays no parity).
func TestCautiousLoss(t *testing.T) {
	if b := (&lossEstimator{memory: 8192}).cautious(); b != 1 {
		t.Fatalf("with nothing seen = %v, want 1", b)
	}
	for _, c := range []struct {
		lost, total    int
		atLeast, below float64
	}{
		{0, 256, 0.01, 0.02},       // eight groups, no loss seen: keep 1 % protection
		{2, 256, 0.02, 0.05},       // eight groups at about 1 %: protect for more
		{0, 3000, CleanLoss, 1},    // no loss yet, but not enough seen
		{0, 6000, 0, CleanLoss},    // a clean link: no parity
		{3, 8000, 0, CleanLoss},    // a few congestion events: no parity either
		{80, 8000, 0.0099, 0.0101}, // 1 % over many shards: the rate
	} {
		l := lossEstimator{memory: 1e9}
		l.add(c.lost, c.total)
		b := l.cautious()
		if b < l.rate() || b < c.atLeast || b >= c.below {
			t.Errorf("%d of %d lost: %.5f, want in [%v, %v) and ≥ rate %v", c.lost, c.total, b, c.atLeast, c.below, l.rate())
		}
	}
}
