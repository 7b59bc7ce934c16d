package shaping

import (
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/wire"
)

func TestParseProfile(t *testing.T) {
	p, err := ParseProfile(DefaultProfileString)
	if err != nil || FormatProfile(p) != DefaultProfileString || len(p) != 3 || p[2] != (Bucket{10, 800, 1200}) {
		t.Fatalf("default profile: %v %v", p, err)
	}
	if p, err := ParseProfile(" 1 : 5 - 5 "); err != nil || p[0] != (Bucket{1, 5, 5}) {
		t.Fatalf("spaces: %v %v", p, err)
	}
	for in, want := range map[string]string{
		"":                                     "empty",
		"60":                                   "want weight:min-max",
		"60:40":                                "want weight:min-max",
		"x:1-2":                                `weight "x" is not a number`,
		"0:1-2":                                "weight 0 is outside 1-1000",
		"1:5-4":                                "min 5 is above max 4",
		"1:0-1301":                             "max 1301 is outside 0-1300",
		"1:-1-2":                               "min",
		"1:1-2,":                               "bucket 2",
		strings.Repeat("1:1-2,", 16) + "1:1-2": "at most 16",
	} {
		_, err := ParseProfile(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseProfile(%q) = %v, want an error with %q", in, err, want)
		}
	}
}

func FuzzParseProfile(f *testing.F) {
	f.Add(DefaultProfileString)
	f.Add("1:0-0")
	f.Add("5:10-20,,")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseProfile(s)
		if err != nil {
			return
		}
		for _, b := range p {
			if b.Weight < 1 || b.Min < 0 || b.Min > b.Max || b.Max > MaxPaddingSize {
				t.Fatalf("accepted a bad bucket %+v from %q", b, s)
			}
		}
		if q, err := ParseProfile(FormatProfile(p)); err != nil || FormatProfile(q) != FormatProfile(p) {
			t.Fatalf("round trip of %q: %v", s, err)
		}
	})
}

// The drawn sizes follow the profile: bucket shares pass a chi-square
// test (2 degrees of freedom, p = 0.001 critical value 13.8) and every
// size is inside a bucket.
func TestPaddingSizesFollowProfile(t *testing.T) {
	s := NewSeeded(Params{Probability: 1}, 1, 2)
	const n = 20000
	var got [3]int
	for range n {
		size := s.PaddingSize()
		switch {
		case size >= 40 && size <= 100:
			got[0]++
		case size >= 250 && size <= 600:
			got[1]++
		case size >= 800 && size <= 1200:
			got[2]++
		default:
			t.Fatalf("size %d outside every bucket", size)
		}
	}
	if chi := ChiSquare(got[:], DefaultProfile); chi > 13.8 {
		t.Fatalf("bucket counts %v: chi-square %.1f > 13.8", got, chi)
	}
	// A skewed source fails the same test (the test can fail).
	if chi := ChiSquare([]int{n / 3, n / 3, n / 3}, DefaultProfile); chi < 13.8 {
		t.Fatalf("uniform counts pass the test (chi-square %.1f)", chi)
	}
}

func TestPadProbability(t *testing.T) {
	s := NewSeeded(Params{Probability: 0.1}, 3, 4)
	const n = 20000
	padded := 0
	buf := make([]byte, 0, 4096)
	for range n {
		b := s.Pad(buf[:0])
		if len(b) > 0 {
			padded++
			if wire.Type(b[0]) != wire.TypePadding || int(b[1])<<8|int(b[2]) != len(b)-wire.HeaderLen {
				t.Fatalf("not one padding frame: % x", b[:3])
			}
		}
	}
	// 2000 expected, standard deviation about 42.
	if math.Abs(float64(padded)-2000) > 250 {
		t.Fatalf("%d of %d writes padded, want about 2000", padded, n)
	}
	var nilShaper *Shaper
	if b := nilShaper.Pad(buf[:0]); len(b) != 0 || nilShaper.Delay(10) != 0 || nilShaper.NextHeartbeat() != 0 {
		t.Fatal("a nil shaper shaped")
	}
	if b := NewSeeded(Params{}, 1, 1).Pad(buf[:0]); len(b) != 0 {
		t.Fatal("probability 0 padded")
	}
}

func TestDelay(t *testing.T) {
	s := NewSeeded(Params{JitterMax: 5 * time.Millisecond}, 5, 6)
	var maxD time.Duration
	for range 1000 {
		d := s.Delay(100)
		if d < 0 || d > 5*time.Millisecond {
			t.Fatalf("delay %v out of bounds", d)
		}
		maxD = max(maxD, d)
	}
	if maxD < 4*time.Millisecond {
		t.Fatalf("largest of 1000 delays %v: not spread up to the bound", maxD)
	}
	if d := s.Delay(SmallWrite + 1); d != 0 {
		t.Fatalf("bulk write delayed %v", d)
	}
}

func TestHeartbeats(t *testing.T) {
	s := NewSeeded(Params{Heartbeat: 20 * time.Millisecond}, 7, 8)
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	sent := make(chan int, 100)
	go func() {
		Heartbeats(done, s, &last, func(f []byte) {
			if wire.Type(f[0]) != wire.TypePadding {
				t.Errorf("heartbeat frame type %v", wire.Type(f[0]))
			}
			sent <- len(f)
		})
		close(sent)
	}()
	deadline := time.After(5 * time.Second)
	for i := 0; i < 3; i++ {
		select {
		case <-sent:
		case <-deadline:
			t.Fatal("fewer than 3 heartbeats in 5 s at a 20 ms interval")
		}
	}
	// Busy: with writes every 2 ms, no heartbeat goes out.
	stop := time.Now().Add(300 * time.Millisecond)
	for len(sent) > 0 {
		<-sent
	}
	busyBeats := 0
	for time.Now().Before(stop) {
		last.Store(time.Now().UnixNano())
		time.Sleep(2 * time.Millisecond)
		for len(sent) > 0 {
			<-sent
			busyBeats++
		}
	}
	close(done)
	if busyBeats > 1 { // one may have been in flight when the writes began
		t.Fatalf("%d heartbeats while the connection was busy", busyBeats)
	}
	// Off: returns at once.
	ret := make(chan struct{})
	go func() { Heartbeats(make(chan struct{}), NewSeeded(Params{}, 1, 1), &last, func([]byte) {}); close(ret) }()
	select {
	case <-ret:
	case <-time.After(2 * time.Second):
		t.Fatal("Heartbeats without an interval did not return")
	}
}

func BenchmarkPad(b *testing.B) {
	s := New(Params{Probability: 0.1})
	buf := make([]byte, 0, 64<<10)
	b.ReportAllocs()
	for b.Loop() {
		buf = s.Pad(buf[:0])
	}
}
