package server

import (
	"net"
	"testing"
	"time"
)

// TestCoDel: bursts and short queues pass; a queue that stays above the
// target for an interval loses batches, more often the longer it stays,
// and none once it drains.
func TestCoDel(t *testing.T) {
	var c codel
	t0 := time.Unix(1000, 0)
	backlog := int64(100 * queuePacketBytes)
	// A burst: long waits, but for less than an interval.
	for i := range 50 {
		now := t0.Add(time.Duration(i) * 4 * time.Millisecond) // 200 ms
		if c.drop(now, 100*time.Millisecond, backlog) {
			t.Fatalf("dropped at +%v, inside the first interval", now.Sub(t0))
		}
	}
	// The delay stays up: drops start, and come faster.
	var drops []time.Duration
	for i := 50; i < 500; i++ { // to +2 s
		now := t0.Add(time.Duration(i) * 4 * time.Millisecond)
		if c.drop(now, 100*time.Millisecond, backlog) {
			drops = append(drops, now.Sub(t0))
		}
	}
	if len(drops) < 4 {
		t.Fatalf("drops at %v; want several over 1.8 s of standing delay", drops)
	}
	if drops[0] > codelInterval+8*time.Millisecond {
		t.Errorf("first drop at +%v, want right after one interval", drops[0])
	}
	if first, last := drops[1]-drops[0], drops[len(drops)-1]-drops[len(drops)-2]; last >= first {
		t.Errorf("drop spacing %v then %v: want it to shrink while the delay stays", first, last)
	}
	// Drained: short waits, or almost nothing behind, never drop.
	for i := range 100 {
		now := t0.Add(3*time.Second + time.Duration(i)*4*time.Millisecond)
		if c.drop(now, 5*time.Millisecond, backlog) || c.drop(now, time.Second, 100) {
			t.Fatalf("dropped at +%v with the queue drained", now.Sub(t0))
		}
	}
}

// stallConn is a client connection that takes 5 ms per write.
type stallConn struct{ net.Conn }

func (stallConn) Write(b []byte) (int, error)      { time.Sleep(5 * time.Millisecond); return len(b), nil }
func (stallConn) SetWriteDeadline(time.Time) error { return nil }
func (stallConn) Close() error                     { return nil }

// TestSendQueueDropsStaleBatches: a client that drains its queue slower
// than it fills keeps batches waiting; after an interval the session writer
// drops some (counted) instead of letting the delay grow with the queue.
func TestSendQueueDropsStaleBatches(t *testing.T) {
	srv := &Server{queueLen: 1024, queueBytes: 1024 * queuePacketBytes, keepalive: time.Second}
	ss := &session{srv: srv, queue: make(chan *outBuf, srv.queueLen), done: make(chan struct{})}
	ss.links.Store(&[]*slink{{c: stallConn{}}})
	go ss.writer()
	defer close(ss.done)
	// 2 batches every 5 ms for 1 s against one written per 5 ms.
	for range 200 {
		for range 2 {
			ob := getOut()
			ob.b = append(ob.b, make([]byte, 1400)...)
			ss.enqueue(ob)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if d := srv.Stats.DelayDrops.Load(); d == 0 {
		t.Fatalf("no batch dropped by queue delay (%d queued, %d queue-full drops)", len(ss.queue), srv.Stats.QueueDrops.Load())
	}
}
