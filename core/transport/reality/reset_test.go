package reality

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// A site that resets the connection must be seen resetting through the
// splice too (a FIN instead would tell a prober it is not the site).
func TestSplicePassesResets(t *testing.T) {
	site, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer site.Close()
	go func() {
		for {
			c, err := site.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 16))
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	ts := newTestServer(t, site.Addr().String(), nil)
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("not a tls hello at all"))
	_, err = io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("got %v, want a connection reset", err)
	}
}
