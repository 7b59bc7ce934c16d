package linkem

import (
	"math"
	"testing"
	"time"
)

var t0 = time.Unix(1_000_000, 0)

func TestRateAndDelay(t *testing.T) {
	l, err := NewLink(Params{Delay: 20 * time.Millisecond, RateBps: 8_000_000}, 1) // 1 MB/s
	if err != nil {
		t.Fatal(err)
	}
	// Three 1000-byte packets at once: they leave the bottleneck 1 ms apart
	// and arrive 20 ms later.
	for i := 1; i <= 3; i++ {
		exit, ok := l.Admit(t0, 1000)
		if !ok {
			t.Fatalf("packet %d dropped", i)
		}
		want := t0.Add(time.Duration(i)*time.Millisecond + 20*time.Millisecond)
		if !exit.Equal(want) {
			t.Fatalf("packet %d exits at +%v, want +%v", i, exit.Sub(t0), want.Sub(t0))
		}
	}
	// Once the link is idle again a packet only pays its own serialization.
	later := t0.Add(time.Second)
	if exit, _ := l.Admit(later, 500); !exit.Equal(later.Add(500*time.Microsecond + 20*time.Millisecond)) {
		t.Fatalf("idle link: exit at +%v", exit.Sub(later))
	}
}

func TestDropTailQueue(t *testing.T) {
	// 10 packets of queue at 1 MB/s.
	l, _ := NewLink(Params{RateBps: 8_000_000, QueueBytes: 10_000}, 1)
	ok := 0
	for range 50 {
		if _, admitted := l.Admit(t0, 1000); admitted {
			ok++
		}
	}
	// The first packet goes straight to the bottleneck; the queue holds ten.
	if ok != 10 || l.Stats.QueueDrops.Load() != 40 {
		t.Fatalf("admitted %d, queue drops %d; want 10 and 40", ok, l.Stats.QueueDrops.Load())
	}
	// 5 ms later five packets have left: five fit again.
	ok = 0
	for range 10 {
		if _, admitted := l.Admit(t0.Add(5*time.Millisecond), 1000); admitted {
			ok++
		}
	}
	if ok != 5 {
		t.Fatalf("after 5 ms admitted %d, want 5", ok)
	}
}

func TestDefaultQueueIsOneBDP(t *testing.T) {
	p := Params{Delay: 75 * time.Millisecond, RateBps: 100_000_000}
	if got, want := p.Queue(), 100_000_000/8*150/1000; got != want {
		t.Fatalf("queue %d, want one BDP %d", got, want)
	}
	if got := (Params{RateBps: 100_000_000}).Queue(); got != 64*1500 {
		t.Fatalf("zero-delay queue %d, want the 64-packet floor", got)
	}
}

func TestLossRate(t *testing.T) {
	const n = 200_000
	for _, p := range []float64{0, 0.01, 0.03} {
		l, _ := NewLink(Params{Loss: p}, 7)
		for range n {
			l.Admit(t0, 100)
		}
		got := float64(l.Stats.LossDrops.Load()) / n
		// Four standard deviations of a binomial count.
		if tol := 4 * math.Sqrt(p*(1-p)/n); math.Abs(got-p) > tol+1e-12 {
			t.Errorf("loss %.4f measured %.4f (tolerance %.4f)", p, got, tol)
		}
	}
}

func TestJitterKeepsOrder(t *testing.T) {
	l, _ := NewLink(Params{Delay: 10 * time.Millisecond, Jitter: 5 * time.Millisecond}, 3)
	var last time.Time
	spread := false
	for i := range 10_000 {
		now := t0.Add(time.Duration(i) * 100 * time.Microsecond)
		exit, ok := l.Admit(now, 100)
		if !ok {
			t.Fatal("dropped without loss or rate")
		}
		if exit.Before(last) {
			t.Fatalf("packet %d overtakes: exit %v before %v", i, exit, last)
		}
		if d := exit.Sub(now); d < 10*time.Millisecond {
			t.Fatalf("packet %d delayed %v, less than the fixed delay", i, d)
		} else if d > 12*time.Millisecond {
			spread = true
		}
		last = exit
	}
	if !spread {
		t.Fatal("jitter never added more than 2 ms")
	}
}

func TestValidate(t *testing.T) {
	for _, p := range []Params{{Delay: -1}, {Loss: 1.5}, {Loss: math.NaN()}, {RateBps: -1}, {QueueBytes: -1}, {Jitter: -1}} {
		if _, err := NewLink(p, 1); err == nil {
			t.Errorf("%+v accepted", p)
		}
	}
}
