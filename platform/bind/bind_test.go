package bind

import (
	"errors"
	"strings"
	"syscall"
	"testing"
)

// fakeRawConn runs Control's function with a fixed fd.
type fakeRawConn struct {
	syscall.RawConn
	calls int
}

func (f *fakeRawConn) Control(fn func(fd uintptr)) error { f.calls++; fn(^uintptr(0)); return nil }

func TestControlSkipsWithoutDefaultOrOnTunnel(t *testing.T) {
	old := discover
	t.Cleanup(func() { discover = old })
	var logged []string
	logf := func(msg string, args ...any) { logged = append(logged, msg) }

	discover = func() (Interface, error) { return Interface{}, errors.New("no default route") }
	rc := &fakeRawConn{}
	if err := Control("mirage0", logf)("tcp4", "192.0.2.1:443", rc); err != nil {
		t.Fatalf("no default route must leave the socket unbound, got %v", err)
	}
	if rc.calls != 0 || len(logged) != 1 {
		t.Fatalf("socket touched (%d) or not logged (%v)", rc.calls, logged)
	}

	discover = func() (Interface, error) { return Interface{Name: "mirage0", Index: 7}, nil }
	if err := Control("mirage0", logf)("tcp4", "192.0.2.1:443", rc); err != nil || rc.calls != 0 {
		t.Fatalf("bound to the tunnel itself: err %v calls %d", err, rc.calls)
	}

	discover = func() (Interface, error) { return Interface{Name: "eth0", Index: 2}, nil }
	err := Control("mirage0", logf)("tcp4", "192.0.2.1:443", rc)
	if rc.calls != 1 {
		t.Fatalf("socket not bound to the default interface (calls %d)", rc.calls)
	}
	// On Linux binding is a no-op; elsewhere the fake fd makes the
	// socket option fail, which must be reported, naming the interface.
	if err != nil && !(strings.Contains(err.Error(), "bind socket") && strings.Contains(err.Error(), "eth0")) {
		t.Fatalf("error does not say what failed: %v", err)
	}
}
