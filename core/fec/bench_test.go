package fec

import (
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkEncode: k=10, m=3, 1400-byte packets; bytes are packet bytes in.
func BenchmarkEncode(b *testing.B) {
	e, err := NewEncoder(10, 3, 1500)
	if err != nil {
		b.Fatal(err)
	}
	pkt := make([]byte, 1400)
	for i := range pkt {
		pkt[i] = byte(i)
	}
	out := 0
	emit := func(s []byte) { out += len(s) }
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		if err := e.Add(pkt, emit); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeRecover: k=10, m=3, 1400-byte packets, one data shard of
// every group lost and rebuilt; bytes are packet bytes out.
func BenchmarkDecodeRecover(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	pkts := make([][]byte, 10*64)
	for i := range pkts {
		pkts[i] = make([]byte, 1400)
		for j := range pkts[i] {
			pkts[i][j] = byte(r.Uint32())
		}
	}
	shards := encodeAll(b, 10, 3, 1500, pkts)
	var kept [][]byte
	for i, s := range shards {
		if i%13 != 4 {
			kept = append(kept, s)
		}
	}
	d := newDecoder(b, DecoderOptions{})
	deliver := func([]byte) {}
	now := t0
	b.SetBytes(int64(10 * 1400))
	b.ReportAllocs()
	group := uint32(0)
	for b.Loop() {
		// One group per iteration; renumber so groups keep advancing.
		for _, s := range kept[:12] {
			s[0], s[1], s[2], s[3] = byte(group>>24), byte(group>>16), byte(group>>8), byte(group)
			if err := d.Receive(s, now, deliver); err != nil {
				b.Fatal(err)
			}
		}
		group++
		now = now.Add(time.Millisecond)
	}
	if d.Stats().Recovered == 0 {
		b.Fatal("nothing recovered")
	}
}
