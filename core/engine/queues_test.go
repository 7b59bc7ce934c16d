package engine

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/mirage-vpn/mirage/core/tundev"
	"github.com/mirage-vpn/mirage/core/tundev/tundevtest"
)

// Two writers (two connections' receivers) share a 4-queue device: every
// packet of a flow goes through its flow's queue, whichever writer wrote
// it, in order; the flows spread over the queues.
func TestFlowWriter(t *testing.T) {
	m := tundevtest.NewMulti(1420, 4)
	defer m.Close()
	w1, w2 := NewFlowWriter(m), NewFlowWriter(m)
	src := netip.MustParseAddr("198.51.100.2")
	const flows, per = 16, 6
	for i := 0; i < flows*per; i++ {
		var pl [8]byte
		binary.BigEndian.PutUint32(pl[:4], uint32(i%flows))
		binary.BigEndian.PutUint32(pl[4:], uint32(i/flows))
		p := tundevtest.UDP(src, netip.MustParseAddr("203.0.113.9"), pl[:])
		p[21] = byte(i % flows) // source port per flow
		buf := make([]byte, tundev.Offset+len(p))
		copy(buf[tundev.Offset:], p)
		w := w1
		if (i/flows)%2 == 1 {
			w = w2 // the flow moved to the other connection
		}
		if _, err := w.Write([][]byte{buf}, tundev.Offset); err != nil {
			t.Fatal(err)
		}
	}
	queueOf := map[uint32]int{}
	next := map[uint32]uint32{}
	used := 0
	for qi, q := range m.Q {
		if len(q.Outbound) > 0 {
			used++
		}
		for len(q.Outbound) > 0 {
			p := <-q.Outbound
			flow, seq := binary.BigEndian.Uint32(p[28:]), binary.BigEndian.Uint32(p[32:])
			if prev, ok := queueOf[flow]; ok && prev != qi {
				t.Errorf("flow %d written to queues %d and %d", flow, prev, qi)
			}
			queueOf[flow] = qi
			if want := FlowQueue(p, 4); want != qi {
				t.Errorf("flow %d on queue %d, FlowQueue says %d", flow, qi, want)
			}
			if seq != next[flow] {
				t.Errorf("flow %d: packet %d, want %d", flow, seq, next[flow])
			}
			next[flow]++
		}
	}
	if len(queueOf) != flows || used < 3 {
		t.Errorf("%d flows seen over %d queues, want %d flows over 3 or more", len(queueOf), used, flows)
	}
	for f, n := range next {
		if n != per {
			t.Errorf("flow %d: %d packets, want %d", f, n, per)
		}
	}
	// One queue: the device itself.
	c := tundevtest.New(1420)
	if NewFlowWriter(c) != tundev.Device(c) {
		t.Error("NewFlowWriter of a single-queue device is not the device")
	}
}

// discardDev is a Device whose Write only counts.
type discardDev struct{ n int }

func (d *discardDev) Read([][]byte, []int, int) (int, error) { return 0, nil }
func (d *discardDev) Write(bufs [][]byte, _ int) (int, error) {
	d.n += len(bufs)
	return len(bufs), nil
}
func (d *discardDev) MTU() (int, error)     { return 1420, nil }
func (d *discardDev) Name() (string, error) { return "discard", nil }
func (d *discardDev) BatchSize() int        { return 32 }
func (d *discardDev) Close() error          { return nil }

type discardMulti struct {
	*discardDev
	qs []tundev.Device
}

func (m *discardMulti) Queues() []tundev.Device { return m.qs }

// BenchmarkFlowWriter spreads a 32-packet batch of 8 flows over 4 queues:
// 0 allocs/op once its per-queue slices have grown.
func BenchmarkFlowWriter(b *testing.B) {
	m := &discardMulti{discardDev: &discardDev{}}
	for range 4 {
		m.qs = append(m.qs, &discardDev{})
	}
	w := NewFlowWriter(m)
	src, dst := netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("203.0.113.9")
	bufs := make([][]byte, 32)
	for i := range bufs {
		p := tundevtest.UDP(src, dst, make([]byte, 1372))
		p[21] = byte(i % 8)
		bufs[i] = append(make([]byte, tundev.Offset), p...)
	}
	b.ReportAllocs()
	b.SetBytes(int64(32 * 1400))
	for b.Loop() {
		if _, err := w.Write(bufs, tundev.Offset); err != nil {
			b.Fatal(err)
		}
	}
}
