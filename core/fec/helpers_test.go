package fec

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"
)

var t0 = time.Unix(1_700_000_000, 0)

// encodeAll runs pkts through a fresh encoder and returns copies of the
// shards it emitted, flushing at the end.
func encodeAll(t testing.TB, k, m, maxPacket int, pkts [][]byte) [][]byte {
	t.Helper()
	e, err := NewEncoder(k, m, maxPacket)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	emit := func(s []byte) { out = append(out, bytes.Clone(s)) }
	for _, p := range pkts {
		if err := e.Add(p, emit); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Flush(emit); err != nil {
		t.Fatal(err)
	}
	return out
}

// randPackets returns n packets of random contents and sizes 1..maxLen.
func randPackets(r *rand.Rand, n, maxLen int) [][]byte {
	pkts := make([][]byte, n)
	for i := range pkts {
		p := make([]byte, 1+r.IntN(maxLen))
		for j := range p {
			p[j] = byte(r.Uint32())
		}
		pkts[i] = p
	}
	return pkts
}

// sink collects delivered packets.
type sink struct {
	got [][]byte
}

func (s *sink) deliver(p []byte) { s.got = append(s.got, bytes.Clone(p)) }

// count returns how often each packet was delivered, keyed by contents.
func (s *sink) count() map[string]int {
	c := make(map[string]int)
	for _, p := range s.got {
		c[string(p)]++
	}
	return c
}

func newDecoder(t testing.TB, opt DecoderOptions) *Decoder {
	t.Helper()
	d, err := NewDecoder(opt)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// feed passes shards to d at time now, failing on any error.
func feed(t testing.TB, d *Decoder, s *sink, now time.Time, shards ...[]byte) {
	t.Helper()
	for _, sh := range shards {
		if err := d.Receive(sh, now, s.deliver); err != nil {
			t.Fatalf("Receive(%x...): %v", sh[:min(len(sh), 12)], err)
		}
	}
}

func shardHeader(s []byte) header {
	return header{
		group: binary.BigEndian.Uint32(s),
		index: int(s[4]), k: int(s[5]), m: int(s[6]),
	}
}

// byGroup splits shards by their group number, in order of appearance.
func byGroup(shards [][]byte) [][][]byte {
	var groups [][][]byte
	var last uint32
	for i, s := range shards {
		g := shardHeader(s).group
		if i == 0 || g != last {
			groups = append(groups, nil)
			last = g
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], s)
	}
	return groups
}

// wantAll fails unless s got exactly pkts, each once, in any order.
func wantAll(t testing.TB, s *sink, pkts [][]byte) {
	t.Helper()
	c := s.count()
	if len(s.got) != len(pkts) {
		t.Fatalf("delivered %d packets, want %d", len(s.got), len(pkts))
	}
	for i, p := range pkts {
		if c[string(p)] == 0 {
			t.Fatalf("packet %d (%d bytes) not delivered", i, len(p))
		}
		c[string(p)]--
	}
}
