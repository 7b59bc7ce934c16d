package server

import "testing"

// TestSendQueueCountsBytes: the per-session send queue is bounded by bytes
// (send_queue_packets full-size packets), not by batches, so one-packet
// batches on a long path get the whole queue.
func TestSendQueueCountsBytes(t *testing.T) {
	srv := &Server{queueLen: 64, queueBytes: 10 * queuePacketBytes}
	ss := &session{srv: srv, queue: make(chan *outBuf, srv.queueLen), done: make(chan struct{})}
	batch := func(n int) *outBuf { ob := getOut(); ob.b = append(ob.b, make([]byte, n)...); return ob }
	for range 30 {
		ss.enqueue(batch(1000))
	}
	if got := len(ss.queue); got != 15 {
		t.Fatalf("queued %d batches of 1000 bytes, want 15 (15000 bytes)", got)
	}
	if d := srv.Stats.QueueDrops.Load(); d != 15 {
		t.Fatalf("drops %d, want 15", d)
	}
	// Taking five off makes room for five more.
	for range 5 {
		ss.dequeued(<-ss.queue)
	}
	for range 6 {
		ss.enqueue(batch(1000))
	}
	if got, q := len(ss.queue), ss.queued.Load(); got != 15 || q != 15000 {
		t.Fatalf("after draining five: %d batches, %d bytes queued; want 15 and 15000", got, q)
	}
	// A batch larger than the whole bound still goes into an empty queue.
	for len(ss.queue) > 0 {
		ss.dequeued(<-ss.queue)
	}
	ss.enqueue(batch(64 << 10))
	if len(ss.queue) != 1 {
		t.Fatal("a large batch was dropped from an empty queue")
	}
	ss.dequeued(<-ss.queue)
	if q := ss.queued.Load(); q != 0 {
		t.Fatalf("%d bytes still counted with the queue empty", q)
	}
}
