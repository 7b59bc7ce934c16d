package tlsx

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTuneTCP: a tunnel connection gets TCP_NODELAY and the unsent-data
// bound; anything that is not a TCP connection is left alone.
func TestTuneTCP(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Skip("no IPv4 loopback:", err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			defer c.Close()
			var b [1]byte
			c.Read(b[:])
		}
	}()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	TuneTCP(c)
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var lowat, nodelay int
	var gerr1, gerr2 error
	rc.Control(func(fd uintptr) {
		lowat, gerr1 = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT)
		nodelay, gerr2 = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY)
	})
	if gerr1 != nil || gerr2 != nil {
		t.Fatal(gerr1, gerr2)
	}
	if lowat != NotSentLowat {
		t.Errorf("TCP_NOTSENT_LOWAT = %d, want %d", lowat, NotSentLowat)
	}
	if nodelay != 1 {
		t.Errorf("TCP_NODELAY = %d, want 1", nodelay)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	TuneTCP(a) // not TCP: nothing to do, no panic
}
