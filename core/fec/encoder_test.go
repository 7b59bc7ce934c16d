package fec

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/klauspost/reedsolomon"
)

func TestEncoderLimits(t *testing.T) {
	for _, c := range []struct{ k, m, max int }{
		{0, 1, 1500}, {MaxK + 1, 1, 1500}, {4, -1, 1500}, {4, MaxM + 1, 1500}, {4, 1, 0}, {4, 1, MaxPacket + 1},
	} {
		if _, err := NewEncoder(c.k, c.m, c.max); err == nil {
			t.Errorf("NewEncoder(%d, %d, %d) accepted", c.k, c.m, c.max)
		}
	}
	e, err := NewEncoder(MaxK, MaxM, MaxPacket)
	if err != nil {
		t.Fatal(err)
	}
	emitted := 0
	emit := func([]byte) { emitted++ }
	if err := e.Add(make([]byte, MaxPacket+1), emit); !errors.Is(err, ErrTooLarge) || emitted != 0 || e.Pending() != 0 {
		t.Fatalf("too large: %v, emitted %d", err, emitted)
	}
	if err := e.Add(nil, emit); !errors.Is(err, ErrEmpty) || emitted != 0 {
		t.Fatalf("empty: %v", err)
	}
	if err := e.Flush(emit); err != nil || emitted != 0 {
		t.Fatalf("flush of nothing: %v, emitted %d", err, emitted)
	}
}

// TestExtremeSizes protects packets of 1 byte and of the 64 KiB maximum in
// one group, the largest shape.
func TestExtremeSizes(t *testing.T) {
	r := rand.New(rand.NewPCG(33, 34))
	pkts := randPackets(r, MaxK, 100)
	pkts[0] = []byte{0}
	pkts[1] = make([]byte, MaxPacket)
	for i := range pkts[1] {
		pkts[1][i] = byte(i * 7)
	}
	shards := encodeAll(t, MaxK, MaxM, MaxPacket, pkts)
	if n := len(shards[MaxK]) - HeaderLen; n != encHeaderLen+MaxPacket {
		t.Fatalf("parity body %d bytes", n)
	}
	d := newDecoder(t, DecoderOptions{MaxPacket: MaxPacket})
	var s sink
	for i, sh := range shards {
		if i >= MaxM { // lose the first 32 data shards, both extremes among them
			feed(t, d, &s, t0, sh)
		}
	}
	wantAll(t, &s, pkts)
}

func TestEncoderAllocs(t *testing.T) {
	e, err := NewEncoder(10, 3, 1500)
	if err != nil {
		t.Fatal(err)
	}
	pkt := make([]byte, 1400)
	emit := func([]byte) {}
	for range 20 { // warm up buffers and the codec
		_ = e.Add(pkt, emit)
	}
	// A whole group per run: AllocsPerRun truncates to whole allocations
	// per run, so one allocation per group must still show.
	if n := testing.AllocsPerRun(100, func() {
		for range 10 {
			if err := e.Add(pkt, emit); err != nil {
				t.Fatal(err)
			}
		}
	}); n != 0 {
		t.Fatalf("%v allocs per group of 10 Adds", n)
	}
}

func TestDecoderAllocsWithoutLoss(t *testing.T) {
	r := rand.New(rand.NewPCG(35, 36))
	shards := encodeAll(t, 10, 3, 1500, randPackets(r, 10*200, 1400))
	d := newDecoder(t, DecoderOptions{})
	deliver := func([]byte) {}
	i := 0
	now := t0
	if n := testing.AllocsPerRun(len(shards)/13-1, func() {
		for range 13 { // a whole group per run, as for the encoder
			now = now.Add(time.Millisecond)
			if err := d.Receive(shards[i], now, deliver); err != nil {
				t.Fatal(err)
			}
			i++
		}
	}); n != 0 {
		t.Fatalf("%v allocs per group received", n)
	}
}

func TestChooseTable(t *testing.T) {
	for _, c := range []struct {
		loss    float64
		k, m    int
		maxOver float64
	}{
		{0, 32, 0, 0},
		{0.0005, 32, 0, 0},
		{0.005, 32, 3, 0.10},
		{0.01, 32, 4, 0.15},
		{0.02, 29, 5, 0.18},
		{0.03, 32, 7, 0.22},
		{0.05, 32, 9, 0.29},
	} {
		k, m := Choose(c.loss)
		over := float64(m) / float64(k)
		t.Logf("loss %5.2f%%: k=%2d m=%d overhead %4.1f%% residual %.1e", 100*c.loss, k, m, 100*over, Residual(c.loss, k, m))
		if k != c.k || m != c.m || over > c.maxOver {
			t.Errorf("Choose(%v) = %d, %d; want %d, %d", c.loss, k, m, c.k, c.m)
		}
		if c.m > 0 && Residual(c.loss, k, m) > TargetResidual {
			t.Errorf("Choose(%v): residual %v above target", c.loss, Residual(c.loss, k, m))
		}
	}
	// Beyond what the cap can meet: the best within the cap.
	if k, m := Choose(0.2); float64(m)/float64(k) > MaxOverhead || m == 0 {
		t.Errorf("Choose(0.2) = %d, %d", k, m)
	}
}

// TestResidualMatchesSimulation checks the binomial model against a Monte
// Carlo run of the decoder's rule (a group recovers with at most m losses).
func TestResidualMatchesSimulation(t *testing.T) {
	r := rand.New(rand.NewPCG(37, 38))
	const loss, k, m, groups = 0.05, 10, 2, 200_000
	lostData := 0
	for range groups {
		var lost [k + m]bool
		n := 0
		for i := range lost {
			lost[i] = r.Float64() < loss
			if lost[i] {
				n++
			}
		}
		if n > m {
			for i := range k {
				if lost[i] {
					lostData++
				}
			}
		}
	}
	got, want := float64(lostData)/(groups*k), Residual(loss, k, m)
	if got < want*0.9 || got > want*1.1 {
		t.Fatalf("simulated residual %v, model %v", got, want)
	}
}

// TestFieldMatchesCodec checks that gfMul is the field the codec computes
// in, so that the Cauchy matrix built with gfInv is one in that field.
func TestFieldMatchesCodec(t *testing.T) {
	for a := 1; a < 256; a++ {
		if gfMul(byte(a), gfInv(byte(a))) != 1 {
			t.Fatalf("gfInv(%d) wrong", a)
		}
	}
	data := make([]byte, 256)
	for i := range data {
		data[i] = byte(i)
	}
	for c := range 256 {
		rs, err := reedsolomon.New(1, 1, reedsolomon.WithCustomMatrix([][]byte{{byte(c)}}))
		if err != nil {
			t.Fatal(err)
		}
		par := make([]byte, 256)
		if err := rs.Encode([][]byte{data, par}); err != nil {
			t.Fatal(err)
		}
		for a := range 256 {
			if par[a] != gfMul(byte(c), byte(a)) {
				t.Fatalf("codec %d*%d = %d, gfMul %d", c, a, par[a], gfMul(byte(c), byte(a)))
			}
		}
	}
}

// TestCauchyMinors checks every 1x1 and 2x2 minor of the parity matrix is
// non-zero (a necessary condition for MDS; Cauchy guarantees all orders).
func TestCauchyMinors(t *testing.T) {
	for j := range MaxM {
		for i := range MaxK {
			if cauchy[j][i] == 0 {
				t.Fatalf("zero at %d,%d", j, i)
			}
			for j2 := j + 1; j2 < MaxM; j2++ {
				for i2 := i + 1; i2 < MaxK; i2++ {
					if gfMul(cauchy[j][i], cauchy[j2][i2]) == gfMul(cauchy[j][i2], cauchy[j2][i]) {
						t.Fatalf("singular minor rows %d,%d cols %d,%d", j, j2, i, i2)
					}
				}
			}
		}
	}
}

// TestParityMatchesDocumentedFormula computes parity the slow way from the
// package doc's definition and compares it with the encoder's output, for a
// full and a flushed group.
func TestParityMatchesDocumentedFormula(t *testing.T) {
	r := rand.New(rand.NewPCG(39, 40))
	for _, n := range []int{7, 3} { // k=7: full, then 3 flushed
		pkts := randPackets(r, n, 300)
		shards := encodeAll(t, 7, 4, 1500, pkts)
		size := 0
		for _, p := range pkts {
			size = max(size, encHeaderLen+len(p))
		}
		for j := range FlushParity(4, n, 7) {
			want := make([]byte, size)
			for i, p := range pkts {
				e := make([]byte, size)
				putEncoding(e, p)
				for b := range e {
					want[b] ^= gfMul(cauchy[j][i], e[b])
				}
			}
			got := shards[n+j]
			if h := shardHeader(got); h.index != n+j || h.k != n || h.m != 4 {
				t.Fatalf("parity header %+v", h)
			}
			if string(got[HeaderLen:]) != string(want) {
				t.Fatalf("k=%d parity %d differs from the documented formula", n, j)
			}
		}
	}
}
