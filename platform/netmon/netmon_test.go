package netmon

import (
	"log/slog"
	"sync"
	"testing"
	"time"
)

// fakeSource is an event source driven by the test.
type fakeSource struct {
	ch   chan struct{}
	once sync.Once
}

func (f *fakeSource) Events() <-chan struct{} { return f.ch }
func (f *fakeSource) Close() error            { f.once.Do(func() { close(f.ch) }); return nil }

// fakePath is the probed default path.
type fakePath struct {
	mu     sync.Mutex
	path   string
	probes int
}

func (p *fakePath) set(s string) { p.mu.Lock(); p.path = s; p.mu.Unlock() }
func (p *fakePath) probe() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.probes++
	return p.path, nil
}

func expectChange(t *testing.T, m *Monitor, want bool, within time.Duration) {
	t.Helper()
	select {
	case <-m.Changes():
		if !want {
			t.Fatal("change reported although the default path stayed the same")
		}
	case <-time.After(within):
		if want {
			t.Fatalf("no change reported within %v", within)
		}
	}
}

func TestMonitorReportsOnlyPathChanges(t *testing.T) {
	src := &fakeSource{ch: make(chan struct{}, 16)}
	path := &fakePath{path: "gateway 192.0.2.1 via 192.0.2.10"}
	m := start(slog.New(slog.DiscardHandler), src, path.probe, 20*time.Millisecond, time.Hour)
	defer m.Close()

	// Route churn that leaves the default path alone (mirage's own routes).
	for range 5 {
		src.ch <- struct{}{}
	}
	expectChange(t, m, false, 200*time.Millisecond)

	// Wi-Fi switch: a burst of events, one change.
	path.set("gateway 198.51.100.1 via 198.51.100.20")
	for range 5 {
		src.ch <- struct{}{}
	}
	expectChange(t, m, true, 2*time.Second)
	expectChange(t, m, false, 200*time.Millisecond)

	// No default route at all is a change too, and so is its return.
	path.set("")
	src.ch <- struct{}{}
	expectChange(t, m, true, 2*time.Second)
	path.set("gateway 198.51.100.1 via 198.51.100.20")
	src.ch <- struct{}{}
	expectChange(t, m, true, 2*time.Second)
}

func TestMonitorDebouncesBursts(t *testing.T) {
	src := &fakeSource{ch: make(chan struct{}, 64)}
	path := &fakePath{path: "a"}
	m := start(slog.New(slog.DiscardHandler), src, path.probe, 100*time.Millisecond, time.Hour)
	defer m.Close()
	path.mu.Lock()
	base := path.probes
	path.mu.Unlock()
	for range 50 {
		src.ch <- struct{}{}
	}
	time.Sleep(400 * time.Millisecond)
	path.mu.Lock()
	n := path.probes - base
	path.mu.Unlock()
	if n < 1 || n > 3 {
		t.Fatalf("50 events caused %d probes, want 1..3 (debounced)", n)
	}
}

func TestMonitorPollsWithoutSource(t *testing.T) {
	path := &fakePath{path: "a"}
	m := start(slog.New(slog.DiscardHandler), nil, path.probe, time.Millisecond, 30*time.Millisecond)
	path.set("b")
	expectChange(t, m, true, 2*time.Second)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestMonitorCloseWithPendingEvents(t *testing.T) {
	src := &fakeSource{ch: make(chan struct{}, 1)}
	path := &fakePath{path: "a"}
	m := start(slog.New(slog.DiscardHandler), src, path.probe, time.Hour, time.Hour)
	src.ch <- struct{}{}
	done := make(chan struct{})
	go func() { m.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung")
	}
}
