package reality

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// TestSpliceIdleBound: a splice on which neither side sends anything is
// closed after SpliceIdle; one that keeps moving bytes is not.
func TestSpliceIdleBound(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }() // an echo site that never times out
		}
	}()
	const idle = 300 * time.Millisecond
	srv := mustServer(t, func(c *ServerConfig) { c.Dest = ln.Addr().String(); c.SpliceIdle = idle })

	// Idle: closed after about idle.
	a, b := tcpPair(t)
	defer b.Close()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- srv.Splice(context.Background(), a, nil) }()
	select {
	case <-done:
		if d := time.Since(start); d < idle {
			t.Errorf("idle splice closed after %v, before the %v bound", d, idle)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("idle splice not closed")
	}

	// Busy for 3× idle: still open, then closed once it goes quiet.
	a2, b2 := tcpPair(t)
	defer b2.Close()
	go func() { done <- srv.Splice(context.Background(), a2, nil) }()
	buf := make([]byte, 1)
	for end := time.Now().Add(3 * idle); time.Now().Before(end); time.Sleep(idle / 4) {
		b2.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := b2.Write([]byte{'x'}); err != nil {
			t.Fatalf("busy splice: write: %v", err)
		}
		if _, err := io.ReadFull(b2, buf); err != nil {
			t.Fatalf("busy splice closed while in use: %v", err)
		}
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("splice not closed after going idle")
	}
}
