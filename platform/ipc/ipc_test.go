package ipc

import (
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
)

// lockedWriter serialises log writes from the accept goroutine.
type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func newTestLogger(w *lockedWriter) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, nil))
}

func TestPolicyRootAndUIDs(t *testing.T) {
	p := Policy{AllowUIDs: []int{1234}}
	if ok, _ := p.allowed(0, 0); !ok {
		t.Error("root refused")
	}
	if ok, _ := p.allowed(1234, 1234); !ok {
		t.Error("listed uid refused")
	}
	if ok, why := p.allowed(4321, 4321); ok || why == "" {
		t.Errorf("unlisted uid: ok=%v why=%q", ok, why)
	}
	p = Policy{AllowGroup: "no-such-group-mirage-test"}
	if ok, why := p.allowed(4321, 4321); ok || !strings.Contains(why, "no-such-group-mirage-test") {
		t.Errorf("missing group: ok=%v why=%q", ok, why)
	}
}

func TestPeerUIDNotUnix(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, ok := PeerUID(a); ok {
		t.Error("PeerUID of a net.Pipe reported a uid")
	}
}
