package quictun

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// cmsg is one control message.
func cmsg(level, typ int, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = int32(level), int32(typ)
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

// groCmsg is a UDP_GRO control message carrying segment size seg.
func groCmsg(seg int) []byte {
	return cmsg(unix.IPPROTO_UDP, unix.UDP_GRO, binary.NativeEndian.AppendUint32(nil, uint32(seg)))
}

// tosCmsg is an IP_TOS control message (what quic-go reads ECN from).
func tosCmsg(tos byte) []byte { return cmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{tos}) }

func newMsgs(n, size int) []ipv4.Message {
	ms := make([]ipv4.Message, n)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, size)}
		ms[i].OOB = make([]byte, 128)
	}
	return ms
}

// TestGROSplit checks the user-space split of coalesced reads: every
// segment becomes one message with the right bytes, the GRO control
// message is removed and the others are kept, an uncoalesced read is one
// message, and a caller with fewer messages than segments gets the rest on
// the next call.
func TestGROSplit(t *testing.T) {
	payload := make([]byte, 3*100+40) // 3 full segments and a short last one
	for i := range payload {
		payload[i] = byte(i)
	}
	single := []byte("one packet")
	addr := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 4433}
	c := &groConn{oob: make([]byte, 0, groOOBSize), msgs: newMsgs(3, groBufSize)}
	set := func(i int, p, oob []byte) {
		c.msgs[i].N = copy(c.msgs[i].Buffers[0], p)
		c.msgs[i].NN = copy(c.msgs[i].OOB, oob)
		c.msgs[i].Addr = addr
	}
	tos := tosCmsg(0x02) // ECT(0)
	set(0, payload, append(append([]byte(nil), tos...), groCmsg(100)...))
	set(1, single, tos)
	set(2, nil, nil) // an empty datagram
	c.n, c.cur = 3, 0
	c.start()

	var got [][]byte
	var oobs [][]byte
	for len(got) < 6 {
		ms := newMsgs(2, 1452) // fewer than the segments: several calls
		n := c.fill(ms)
		if n == 0 {
			break
		}
		for _, m := range ms[:n] {
			got = append(got, append([]byte(nil), m.Buffers[0][:m.N]...))
			oobs = append(oobs, append([]byte(nil), m.OOB[:m.NN]...))
			if m.Addr != addr {
				t.Errorf("address %v, want %v", m.Addr, addr)
			}
		}
	}
	want := [][]byte{payload[0:100], payload[100:200], payload[200:300], payload[300:], single, {}}
	if len(got) != len(want) {
		t.Fatalf("%d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("message %d: %d bytes %x..., want %d bytes", i, len(got[i]), got[i][:min(4, len(got[i]))], len(want[i]))
		}
		wantOOB := tos
		if i == 5 {
			wantOOB = nil
		}
		if !bytes.Equal(oobs[i], wantOOB) {
			t.Errorf("message %d: control messages %x, want %x (TOS kept, GRO removed)", i, oobs[i], wantOOB)
		}
	}
	if c.cur != c.n {
		t.Errorf("segments left over: cur %d, n %d", c.cur, c.n)
	}
}

// TestGROLoopback sends a GSO burst over loopback to a wrapped socket and
// reads it back packet by packet, whether or not the kernel coalesced it.
func TestGROLoopback(t *testing.T) {
	rc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Skip("no IPv4 loopback:", err)
	}
	defer rc.Close()
	w := WrapUDP(rc, nil)
	gc, ok := w.(*groConn)
	if !ok {
		t.Skip("kernel without UDP_GRO")
	}
	sc, err := net.DialUDP("udp4", nil, rc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	const seg, count = 1200, 5
	burst := make([]byte, seg*count)
	for i := range burst {
		burst[i] = byte(i / seg)
	}
	oob := cmsg(unix.IPPROTO_UDP, unix.UDP_SEGMENT, binary.NativeEndian.AppendUint16(nil, seg))
	if _, _, err := sc.WriteMsgUDP(burst, oob, nil); err != nil {
		// No GSO: send the packets one by one.
		for i := 0; i < count; i++ {
			if _, err := sc.Write(burst[i*seg : (i+1)*seg]); err != nil {
				t.Fatal(err)
			}
		}
	}
	rc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got int
	for got < count {
		ms := newMsgs(8, 1452)
		n, err := gc.ReadBatch(ms, 0)
		if err != nil {
			t.Fatalf("ReadBatch after %d packets: %v", got, err)
		}
		for _, m := range ms[:n] {
			if m.N != seg {
				t.Fatalf("packet %d: %d bytes, want %d", got, m.N, seg)
			}
			for _, b := range m.Buffers[0][:m.N] {
				if b != byte(got) {
					t.Fatalf("packet %d holds bytes of packet %d", got, b)
				}
			}
			got++
		}
	}
	if gc.msgs[0].N > seg {
		t.Logf("the kernel coalesced %d bytes into one read", gc.msgs[0].N)
	}
}

// BenchmarkGROFill is the per-packet cost of the user-space split.
func BenchmarkGROFill(b *testing.B) {
	c := &groConn{oob: make([]byte, 0, groOOBSize), msgs: newMsgs(1, groBufSize)}
	const seg = 1358
	c.msgs[0].N = 40 * seg
	c.msgs[0].NN = copy(c.msgs[0].OOB, groCmsg(seg))
	ms := newMsgs(8, 1452)
	b.SetBytes(seg)
	b.ReportAllocs()
	for b.Loop() {
		if c.cur >= c.n {
			c.n, c.cur = 1, 0
			c.start()
		}
		c.fill(ms[:1])
	}
}

// TestGROConnCountsDatagramPackets: the socket wrapper counts packets of
// datagram size and not acknowledgement-sized ones, and holds back the
// next hand-out while too many are pending.
func TestGROConnCountsDatagramPackets(t *testing.T) {
	g := NewGate()
	c := &groConn{oob: make([]byte, 0, groOOBSize), msgs: newMsgs(2, groBufSize), gate: g}
	// One coalesced read of 4 datagram packets and a separate ack-sized one.
	c.msgs[0].N = 4 * 1300
	c.msgs[0].NN = copy(c.msgs[0].OOB, groCmsg(1300))
	c.msgs[1].N = minDatagramPacket - 1
	c.n, c.cur = 2, 0
	c.start()
	ms := newMsgs(8, 1452)
	n, err := c.ReadBatch(ms, 0)
	if err != nil || n != 5 {
		t.Fatalf("ReadBatch: %d packets, %v; want 5", n, err)
	}
	if p := g.pending.Load(); p != 4 {
		t.Fatalf("pending %d, want 4 (the %d-byte packet is not a datagram)", p, minDatagramPacket-1)
	}
}
