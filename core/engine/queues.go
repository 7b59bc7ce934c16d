package engine

import (
	"github.com/mirage-vpn/mirage/core/gso"
	"github.com/mirage-vpn/mirage/core/tundev"
)

// flowWriter writes each packet to the queue of a multi-queue TUN chosen by
// its flow, so a flow is always written through the same queue whichever
// connection carried it. This matters for reading too: the kernel steers
// a flow's packets to the queue that last wrote one of them (tun automq),
// so a flow whose write queue changed (it moved to another connection)
// would be read from two queues by two goroutines at once and reordered.
type flowWriter struct {
	tundev.Device // queue 0, for everything but Write
	qs            []tundev.Device
	parts         [][][]byte // per queue, reused between writes
}

// NewFlowWriter returns what a goroutine writing packets to dev uses: dev
// itself when it has one queue, else a writer that spreads packets over
// dev's queues by flow. It is not safe for concurrent use; each writer
// goroutine takes its own (the queues themselves are).
func NewFlowWriter(dev tundev.Device) tundev.Device {
	qs := tundev.Queues(dev)
	if len(qs) < 2 {
		return dev
	}
	return &flowWriter{Device: dev, qs: qs, parts: make([][][]byte, len(qs))}
}

// FlowQueue is the queue (of n) that packets of p's flow are written to.
// It takes the hash's high bits: the low ones pick the connection.
func FlowQueue(p []byte, n int) int {
	return int(FlowHash(p)>>16) % n
}

// Write writes each buffer (packet at offset) to its flow's queue, in order
// within each queue.
func (w *flowWriter) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		q := FlowQueue(b[offset:], len(w.qs))
		w.parts[q] = append(w.parts[q], b)
	}
	total := 0
	var first error
	for i, part := range w.parts {
		if len(part) == 0 {
			continue
		}
		n, err := w.qs[i].Write(part, offset)
		total += n
		if err != nil && first == nil {
			first = err
		}
		clear(part)
		w.parts[i] = part[:0]
	}
	return total, first
}

// CanSuper reports whether every queue takes super-packets.
func (w *flowWriter) CanSuper() bool {
	for _, q := range w.qs {
		if tundev.Super(q) == nil {
			return false
		}
	}
	return true
}

// ReadSuper reads queue 0; a flowWriter is for writing, readers read the
// queues themselves.
func (w *flowWriter) ReadSuper(buf []byte, offset int) (int, gso.Options, error) {
	return tundev.Super(w.qs[0]).ReadSuper(buf, offset)
}

// WriteSuper writes a super-packet to its flow's queue.
func (w *flowWriter) WriteSuper(buf []byte, offset int, o gso.Options, hdrLen int) error {
	q := FlowQueue(buf[offset:], len(w.qs))
	return tundev.Super(w.qs[q]).WriteSuper(buf, offset, o, hdrLen)
}
