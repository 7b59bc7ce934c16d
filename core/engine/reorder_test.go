package engine

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// seqDev records the sequence numbers (first 4 bytes) of written packets.
type seqDev struct {
	mu  sync.Mutex
	got []uint32
}

func (d *seqDev) Write(bufs [][]byte, offset int) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, b := range bufs {
		d.got = append(d.got, binary.BigEndian.Uint32(b[offset:]))
	}
	return len(bufs), nil
}
func (d *seqDev) Read([][]byte, []int, int) (int, error) { select {} }
func (d *seqDev) MTU() (int, error)                      { return 1500, nil }
func (d *seqDev) Name() (string, error)                  { return "seq", nil }
func (d *seqDev) BatchSize() int                         { return 16 }
func (d *seqDev) Close() error                           { return nil }

func (d *seqDev) delivered() []uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]uint32(nil), d.got...)
}

func seqPacket(seq uint32) []byte {
	p := make([]byte, 40)
	binary.BigEndian.PutUint32(p, seq)
	return p
}

// newTestReorder returns a Reorder whose holes wait exactly wait (0: the
// adaptive wait).
func newTestReorder(wait time.Duration) (*Reorder, *seqDev) {
	dev := &seqDev{}
	r := NewReorder(dev, 16, func(p []byte, b *Batch) { b.Add(p) })
	if wait > 0 {
		r.minWait, r.maxWait = wait, wait
	}
	return r, dev
}

func pushAll(r *Reorder, seqs ...uint32) {
	for _, s := range seqs {
		r.Push(nil, s, seqPacket(s))
	}
	r.Flush()
}

func wantSeqs(t *testing.T, got []uint32, want ...uint32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("delivered %v, want %v", got, want)
		}
	}
}

func span(from, n uint32) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = from + uint32(i)
	}
	return out
}

func TestReorderInOrderAndSwapped(t *testing.T) {
	r, dev := newTestReorder(time.Minute)
	pushAll(r, 0, 1, 2, 4, 3, 6, 5, 9, 8, 7)
	wantSeqs(t, dev.delivered(), span(0, 10)...)
	if r.held != 0 || r.armed {
		t.Fatalf("held %d armed %v after every hole filled", r.held, r.armed)
	}
}

// Two paths, one 30 packets behind the other: the receiver sees heavy
// reordering and delivers in order.
func TestReorderTwoPaths(t *testing.T) {
	r, dev := newTestReorder(time.Minute)
	var a, b []uint32
	for s := uint32(0); s < 4000; s++ {
		if s%2 == 0 {
			a = append(a, s)
		} else {
			b = append(b, s)
		}
	}
	const lag = 30
	for i := 0; i < len(a)+lag; i++ {
		if i < len(a) {
			r.Push(nil, a[i], seqPacket(a[i]))
		}
		if j := i - lag; j >= 0 && j < len(b) {
			r.Push(nil, b[j], seqPacket(b[j]))
		}
		r.Flush()
	}
	wantSeqs(t, dev.delivered(), span(0, 4000)...)
	if r.Late.Load()+r.Skipped.Load()+r.Dups.Load() != 0 {
		t.Fatalf("late %d skipped %d dups %d", r.Late.Load(), r.Skipped.Load(), r.Dups.Load())
	}
}

// A hole that never fills is skipped after the wait; the packet that
// finally comes is delivered late, not dropped.
func TestReorderHoleTimesOut(t *testing.T) {
	r, dev := newTestReorder(20 * time.Millisecond)
	pushAll(r, 0, 2, 3)
	wantSeqs(t, dev.delivered(), 0)
	deadline := time.Now().Add(5 * time.Second)
	for len(dev.delivered()) < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	wantSeqs(t, dev.delivered(), 0, 2, 3)
	if r.Skipped.Load() != 1 {
		t.Fatalf("skipped %d, want 1", r.Skipped.Load())
	}
	pushAll(r, 1, 4)
	wantSeqs(t, dev.delivered(), 0, 2, 3, 1, 4)
	if r.Late.Load() != 1 {
		t.Fatalf("late %d, want 1", r.Late.Load())
	}
}

// The window bounds memory: a packet a whole window ahead of a hole gives
// up on it at once, without waiting for the timer.
func TestReorderWindowOverflow(t *testing.T) {
	r, dev := newTestReorder(time.Minute)
	seqs := []uint32{0}
	seqs = append(seqs, span(2, ReorderWindow-1)...) // 2..W: held behind 1
	pushAll(r, seqs...)
	if n := len(dev.delivered()); n != 1 {
		t.Fatalf("delivered %d before the window filled", n)
	}
	pushAll(r, ReorderWindow+1)
	want := append([]uint32{0}, span(2, ReorderWindow)...)
	wantSeqs(t, dev.delivered(), want...)
	if r.Skipped.Load() != 1 || r.held != 0 {
		t.Fatalf("skipped %d held %d", r.Skipped.Load(), r.held)
	}
}

func TestReorderDuplicatesAndWrap(t *testing.T) {
	r, dev := newTestReorder(time.Minute)
	top := ^uint32(0)
	r.next = top - 2
	pushAll(r, top-2, top, top, 0, top-1, 1)
	wantSeqs(t, dev.delivered(), top-2, top-1, top, 0, 1)
	if r.Dups.Load() != 1 {
		t.Fatalf("dups %d, want 1", r.Dups.Load())
	}
}

func TestReorderStopDeliversHeld(t *testing.T) {
	r, dev := newTestReorder(time.Minute)
	pushAll(r, 5, 7, 9)
	r.Stop()
	wantSeqs(t, dev.delivered(), 5, 7, 9)
	pushAll(r, 10)
	wantSeqs(t, dev.delivered(), 5, 7, 9)
}

// The wait follows how long holes take to fill.
func TestReorderWaitAdapts(t *testing.T) {
	r, _ := newTestReorder(0)
	for range 20 {
		base := r.next
		pushAll(r, base+1)
		time.Sleep(15 * time.Millisecond)
		pushAll(r, base)
	}
	if w := r.wait(); w < 30*time.Millisecond {
		t.Fatalf("wait %v after holes that took 15 ms to fill, want >= 30 ms", w)
	}
	for range 300 { // 1.5 s of holes that fill at once
		base := r.next
		pushAll(r, base+1, base)
		time.Sleep(5 * time.Millisecond)
	}
	if w := r.wait(); w > 5*time.Millisecond {
		t.Fatalf("wait %v after holes that filled at once, want it to shrink", w)
	}
}

// Concurrent pushers (one per connection) and the timer: nothing lost or
// duplicated (run with -race).
func TestReorderConcurrent(t *testing.T) {
	r, dev := newTestReorder(2 * time.Millisecond)
	const n = 20000
	var wg sync.WaitGroup
	for k := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := uint32(k); s < n; s += 3 {
				r.Push(nil, s, seqPacket(s))
				if s%64 == 0 {
					r.Flush()
				}
			}
			r.Flush()
		}()
	}
	wg.Wait()
	r.Stop()
	got := dev.delivered()
	seen := make(map[uint32]bool, n)
	for _, s := range got {
		if seen[s] {
			t.Fatalf("seq %d delivered twice", s)
		}
		seen[s] = true
	}
	if len(seen) != n {
		t.Fatalf("delivered %d of %d", len(seen), n)
	}
}

// Every distinct sequence number pushed is delivered exactly once, whatever
// the order (in order, late, or after skipping).
func FuzzReorder(f *testing.F) {
	f.Add([]byte{0, 2, 1, 5, 4, 3})
	f.Add([]byte{0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, dev := newTestReorder(time.Minute)
		seen := map[uint32]bool{}
		rng := rand.New(rand.NewPCG(uint64(len(b)), 7))
		var pushed []uint32
		for i := 0; i+1 < len(b) && len(pushed) < 3000; i += 2 {
			// Mostly near each other, sometimes far.
			s := uint32(b[i])<<4 | uint32(b[i+1]>>4)
			if b[i+1]&0x0f == 0x0f {
				s = rng.Uint32()
			}
			if seen[s] {
				continue
			}
			seen[s] = true
			pushed = append(pushed, s)
			r.Push(nil, s, seqPacket(s))
		}
		r.Stop()
		got := map[uint32]int{}
		for _, s := range dev.delivered() {
			got[s]++
		}
		for _, s := range pushed {
			if got[s] != 1 {
				t.Fatalf("seq %d delivered %d times (pushed %v)", s, got[s], pushed)
			}
		}
		if len(got) != len(pushed) {
			t.Fatalf("delivered %d distinct, pushed %d", len(got), len(pushed))
		}
	})
}

// BenchmarkReorder: packets alternating over two paths, the odd ones 16
// places late (the round_robin receive path); 0 allocs/op once the ring
// has its buffers.
func BenchmarkReorder(b *testing.B) {
	r := NewReorder(&nullDev{}, 32, func(p []byte, b *Batch) { b.Add(p) })
	p := make([]byte, 1400)
	var seq uint32
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		// Odd packets come 16 places late.
		s := seq
		if s%2 == 1 {
			s -= 16
		}
		if int32(s) >= 0 {
			r.Push(nil, s, p)
		}
		seq++
		if seq%32 == 0 {
			r.Flush()
		}
	}
}

type nullDev struct{ seqDev }

func (*nullDev) Write(bufs [][]byte, _ int) (int, error) { return len(bufs), nil }

// TestReorderSourcesSkipLostAtOnce: two connections, each in order; packet
// 4 (on a) is lost. Once both connections delivered past it, the hole is
// skipped without waiting (the wait here is an hour), while a packet
// another connection has yet to deliver is still waited for.
func TestReorderSourcesSkipLostAtOnce(t *testing.T) {
	r, dev := newTestReorder(time.Hour)
	defer r.Stop()
	a, b := r.AddSource(), r.AddSource()
	push := func(src *Source, seqs ...uint32) {
		for _, s := range seqs {
			r.Push(src, s, seqPacket(s))
		}
		r.Flush()
	}
	push(a, 0, 2)
	push(b, 1, 3)
	wantSeqs(t, dev.delivered(), 0, 1, 2, 3)
	push(a, 6) // 4 lost on a; 5 not yet delivered by b
	wantSeqs(t, dev.delivered(), 0, 1, 2, 3)
	push(b, 5) // b is past 4 too, but 5 itself fills in behind the hole
	wantSeqs(t, dev.delivered(), 0, 1, 2, 3, 5, 6)
	if got := r.Passed.Load(); got != 1 {
		t.Errorf("Passed = %d, want 1", got)
	}
	if got := r.Skipped.Load(); got != 1 {
		t.Errorf("Skipped = %d, want 1 (packet 4)", got)
	}
	// Reordering across connections is still restored: 8 on a arrives
	// before 7 on b.
	push(a, 8)
	wantSeqs(t, dev.delivered(), 0, 1, 2, 3, 5, 6)
	push(b, 7)
	wantSeqs(t, dev.delivered(), 0, 1, 2, 3, 5, 6, 7, 8)
}

// TestReorderRemoveSourceReleases: a hole only a connection that ended could
// have filled is skipped when it is removed; a connection that has not
// delivered anything yet keeps holes waiting.
func TestReorderRemoveSourceReleases(t *testing.T) {
	r, dev := newTestReorder(time.Hour)
	defer r.Stop()
	a, b := r.AddSource(), r.AddSource()
	r.Push(a, 0, seqPacket(0))
	r.Push(a, 2, seqPacket(2)) // 1 was b's; b delivers nothing
	r.Flush()
	wantSeqs(t, dev.delivered(), 0)
	r.RemoveSource(b)
	wantSeqs(t, dev.delivered(), 0, 2)

	c := r.AddSource() // joined, nothing delivered: no inference
	r.Push(a, 4, seqPacket(4))
	r.Flush()
	wantSeqs(t, dev.delivered(), 0, 2)
	r.Push(c, 5, seqPacket(5))
	r.Push(a, 6, seqPacket(6))
	r.Flush()
	wantSeqs(t, dev.delivered(), 0, 2, 4, 5, 6)
}
