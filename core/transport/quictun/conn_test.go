package quictun

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"

	"github.com/mirage-vpn/mirage/core/wire"
)

// fakeStream is an in-memory request stream with datagrams.
type fakeStream struct {
	r       *io.PipeReader
	w       *io.PipeWriter
	dgIn    chan []byte
	mu      sync.Mutex
	written bytes.Buffer
	sentDG  [][]byte
	maxDG   int
}

func newFakeStream() *fakeStream {
	r, w := io.Pipe()
	return &fakeStream{r: r, w: w, dgIn: make(chan []byte, 16), maxDG: 1 << 20}
}

func (f *fakeStream) Read(b []byte) (int, error) { return f.r.Read(b) }
func (f *fakeStream) Write(b []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written.Write(b)
}
func (f *fakeStream) Close() error                     { return f.w.Close() }
func (f *fakeStream) SetReadDeadline(time.Time) error  { return nil }
func (f *fakeStream) SetWriteDeadline(time.Time) error { return nil }
func (f *fakeStream) CancelRead(quic.StreamErrorCode)  { f.r.Close() }
func (f *fakeStream) CancelWrite(quic.StreamErrorCode) {}
func (f *fakeStream) SendDatagram(b []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(b) > f.maxDG {
		return &quic.DatagramTooLargeError{MaxDatagramPayloadSize: int64(f.maxDG)}
	}
	f.sentDG = append(f.sentDG, append([]byte(nil), b...))
	return nil
}
func (f *fakeStream) ReceiveDatagram(ctx context.Context) ([]byte, error) {
	select {
	case b := <-f.dgIn:
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// testStreamID is the request stream of the fake tunnels; testQSID is its
// quarter stream id (the one-byte HTTP Datagram prefix).
const (
	testStreamID = 8
	testQSID     = testStreamID / 4
)

// readFrames reads n frames from c through tiny reads.
func readFrames(t *testing.T, c *Conn, n int) []wire.Frame {
	t.Helper()
	r := wire.NewReader(oneByteReader{c}, 0)
	var out []wire.Frame
	for range n {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		f, err := r.Next()
		if err != nil {
			t.Fatalf("read frame %d: %v", len(out), err)
		}
		out = append(out, wire.Frame{Type: f.Type, Payload: append([]byte(nil), f.Payload...)})
	}
	return out
}

type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(b []byte) (int, error) { return o.r.Read(b[:1]) }

// Datagrams wait for the first stream frame (the Welcome); frames come out
// whole and in wire format even through one-byte reads.
func TestConnMergesStreamAndDatagrams(t *testing.T) {
	fs := newFakeStream()
	c := newConn(nil, fs, fs, nil, testStreamID, true, nil, nil)
	defer c.Close()
	fs.dgIn <- append([]byte{testQSID, byte(wire.TypeData)}, "early packet"...)
	fs.dgIn <- []byte{}                                              // empty: ignored
	fs.dgIn <- []byte{testQSID}                                      // no type: ignored
	fs.dgIn <- []byte{0x40}                                          // truncated stream id: ignored
	fs.dgIn <- append([]byte{testQSID, byte(wire.TypePing)}, "x"...) // not DATA: ignored
	fs.dgIn <- append([]byte{testQSID + 1, byte(wire.TypeData)}, "other stream"...)
	fs.dgIn <- append([]byte{testQSID, byte(wire.TypeData)}, "second"...)
	fs.dgIn <- append([]byte{testQSID, byte(wire.TypeSeqData)}, "\x00\x00\x00\x07numbered"...)
	go fs.w.Write(wire.AppendFrame(nil, wire.TypeWelcome, []byte("welcome")))
	got := readFrames(t, c, 4)
	if got[0].Type != wire.TypeWelcome || string(got[0].Payload) != "welcome" {
		t.Fatalf("first frame %v %q, want the Welcome before any datagram", got[0].Type, got[0].Payload)
	}
	if string(got[1].Payload) != "early packet" || string(got[2].Payload) != "second" || got[1].Type != wire.TypeData {
		t.Fatalf("datagram frames %+v", got[1:])
	}
	if seq, p, ok := wire.ParseSeqData(got[3].Payload); got[3].Type != wire.TypeSeqData || !ok || seq != 7 || string(p) != "numbered" {
		t.Fatalf("SEQDATA datagram came out as %v %q", got[3].Type, got[3].Payload)
	}
	// A stream error is sticky after the queued frames.
	fs.w.CloseWithError(errors.New("reset by peer"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	for i := range 2 {
		if _, err := c.Read(buf); err == nil || err.Error() != "reset by peer" {
			t.Fatalf("read %d after reset: %v", i, err)
		}
	}
}

func TestConnReadDeadline(t *testing.T) {
	fs := newFakeStream()
	c := newConn(nil, fs, fs, nil, testStreamID, false, nil, nil)
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, context.DeadlineExceeded) && err.Error() != "i/o timeout" {
		t.Fatalf("err %v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatal("deadline ignored")
	}
	// Moving the deadline into the past wakes a blocked Read.
	c.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 10)); done <- err }()
	time.Sleep(50 * time.Millisecond)
	c.SetReadDeadline(time.Unix(1, 0))
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("read returned data")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("blocked Read not woken by a past deadline")
	}
}

// Write: DATA frames go as datagrams, others (and DATA too big for a
// datagram) on the stream, in order; the limit learnt sticks.
func TestConnWriteSplits(t *testing.T) {
	fs := newFakeStream()
	fs.maxDG = 102 // quarter stream id, type, 100 bytes
	c := newConn(nil, fs, fs, nil, testStreamID, false, nil, nil)
	defer c.Close()
	var b []byte
	b = wire.AppendFrame(b, wire.TypePing, []byte("12345678"))
	b = wire.AppendFrame(b, wire.TypeData, bytes.Repeat([]byte{1}, 100)) // 102 with id and type: fits
	b = wire.AppendFrame(b, wire.TypeData, bytes.Repeat([]byte{2}, 500)) // too big: stream
	b = wire.AppendFrame(b, wire.TypeData, bytes.Repeat([]byte{3}, 10))
	b = wire.AppendSeqData(b, 9, bytes.Repeat([]byte{4}, 10)) // numbered packets too
	if n, err := c.Write(b); err != nil || n != len(b) {
		t.Fatalf("write: %d %v", n, err)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if len(fs.sentDG) != 3 || fs.sentDG[0][0] != testQSID || fs.sentDG[0][1] != byte(wire.TypeData) || len(fs.sentDG[0]) != 102 || fs.sentDG[1][2] != 3 ||
		fs.sentDG[2][1] != byte(wire.TypeSeqData) || len(fs.sentDG[2]) != 2+4+10 {
		t.Fatalf("datagrams %d", len(fs.sentDG))
	}
	var want []byte
	want = wire.AppendFrame(want, wire.TypePing, []byte("12345678"))
	want = wire.AppendFrame(want, wire.TypeData, bytes.Repeat([]byte{2}, 500))
	if !bytes.Equal(fs.written.Bytes(), want) {
		t.Fatalf("stream got %d bytes, want ping + big packet (%d)", fs.written.Len(), len(want))
	}
	if got := c.MaxDatagramPayload(); got != 100 {
		t.Fatalf("learnt datagram limit %d, want 100", got)
	}
	if _, err := c.Write(b[:5]); err == nil {
		t.Fatal("partial frame accepted")
	}
}

func FuzzParseDatagram(f *testing.F) {
	f.Add([]byte{})
	f.Add(append([]byte{byte(wire.TypeData)}, 0x45, 0, 0, 20))
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, p, ok := ParseDatagram(b)
		if !ok {
			if len(b) != 0 && len(b)-1 <= wire.MaxPayload {
				t.Fatalf("rejected a valid datagram of %d bytes", len(b))
			}
			return
		}
		if byte(typ) != b[0] || !bytes.Equal(p, b[1:]) {
			t.Fatal("split wrong")
		}
	})
}

func FuzzParseHTTPDatagram(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{testQSID, byte(wire.TypeData), 0x45})
	f.Add([]byte{0x40, 0x02, byte(wire.TypeData)}) // two-byte quarter stream id
	f.Add([]byte{0xc0})
	f.Fuzz(func(t *testing.T, b []byte) {
		qsid, typ, p, ok := ParseHTTPDatagram(b)
		if !ok {
			return
		}
		// Re-encoding what was parsed gives back the input (the varint
		// length is the one the input used).
		n := len(b) - len(p) - 1
		id, m, err := quicvarint.Parse(b[:n])
		if err != nil || m != n || id != qsid || byte(typ) != b[n] || !bytes.Equal(p, b[n+1:]) {
			t.Fatalf("split wrong: %d %v %d bytes", qsid, typ, len(p))
		}
	})
}
