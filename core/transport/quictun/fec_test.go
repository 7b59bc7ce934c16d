package quictun

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/fec"
	"github.com/mirage-vpn/mirage/core/wire"
)

// sentFEC returns the FEC shards a fake stream got as datagrams.
func sentFEC(t *testing.T, fs *fakeStream) [][]byte {
	t.Helper()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var out [][]byte
	for _, dg := range fs.sentDG {
		qsid, typ, p, ok := ParseHTTPDatagram(dg)
		if !ok || qsid != testQSID || typ != wire.TypeFEC {
			t.Fatalf("datagram %x is not an FEC frame of the tunnel", dg)
		}
		out = append(out, p)
	}
	return out
}

// writeFEC writes ps as DATA frames to a, whose stream is src, and returns
// the FEC shards that went out.
func writeFEC(t *testing.T, a *Conn, src *fakeStream, ps [][]byte) [][]byte {
	t.Helper()
	var frames []byte
	for _, p := range ps {
		frames = wire.AppendFrame(frames, wire.TypeData, p)
	}
	if _, err := a.Write(frames); err != nil {
		t.Fatal(err)
	}
	return sentFEC(t, src)
}

func packets(n int) [][]byte {
	var ps [][]byte
	for i := range n {
		ps = append(ps, bytes.Repeat([]byte{byte(i + 1)}, 100+i*37))
	}
	return ps
}

// Packets sent with FEC arrive at a Conn that drops up to m shards per
// group: every packet comes out as a DATA frame, the lost ones rebuilt,
// and the counters say so on both ends.
func TestFECRecoversLostDatagrams(t *testing.T) {
	src := newFakeStream()
	a := newConn(nil, src, src, nil, testStreamID, false, nil, nil)
	defer a.Close()
	if err := a.EnableFEC(fec.Config{K: 4, M: 2}); err != nil {
		t.Fatal(err)
	}
	ps := packets(8)
	shards := writeFEC(t, a, src, ps)
	if len(shards) != 12 {
		t.Fatalf("%d shards sent for 8 packets in groups of 4+2, want 12", len(shards))
	}
	st := a.FEC()
	if !st.Sending || st.K != 4 || st.M != 2 || st.DataSent != 8 || st.ParitySent != 4 {
		t.Fatalf("sender stats %+v", st)
	}

	dst := newFakeStream()
	b := newConn(nil, dst, dst, nil, testStreamID, false, nil, nil)
	defer b.Close()
	// Lose data shards 1 and 3 of the first group and 0 of the second.
	lost := map[int]bool{1: true, 3: true, 6: true}
	go func() {
		for i, s := range shards {
			if !lost[i] {
				dst.dgIn <- append([]byte{testQSID, byte(wire.TypeFEC)}, s...)
			}
		}
	}()
	var got [][]byte
	for _, f := range readFrames(t, b, 8) {
		if f.Type != wire.TypeData {
			t.Fatalf("frame type %v, want DATA", f.Type)
		}
		got = append(got, f.Payload)
	}
	sortBytes := func(x [][]byte) { slices.SortFunc(x, bytes.Compare) }
	sortBytes(got)
	sortBytes(ps)
	for i := range ps {
		if !bytes.Equal(got[i], ps[i]) {
			t.Fatalf("packet %d differs after recovery", i)
		}
	}
	if r := b.FEC().Recv; r.Recovered != 3 || r.Data != 5 || r.Parity != 4 {
		t.Fatalf("receiver stats %+v, want 3 recovered of 5 data + 4 parity", r)
	}
}

// A group that does not fill gets its parity after the flush wait, so a
// slow flow is protected too.
func TestFECFlushesPartialGroup(t *testing.T) {
	src := newFakeStream()
	a := newConn(nil, src, src, nil, testStreamID, false, nil, nil)
	defer a.Close()
	if err := a.EnableFEC(fec.Config{K: 8, M: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write(wire.AppendFrame(nil, wire.TypeData, []byte("lonely packet"))); err != nil {
		t.Fatal(err)
	}
	want := 1 + fec.FlushParity(2, 1, 8)
	deadline := time.Now().Add(5 * time.Second)
	for len(sentFEC(t, src)) < want && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // nothing more may follow
	if n := len(sentFEC(t, src)); n != want {
		t.Fatalf("%d shards after the flush wait, want the packet and its %d parity (fec.FlushParity)", n, want-1)
	}
}

// Broken FEC frames from the peer are dropped and counted; the connection
// keeps delivering.
func TestFECMalformedFramesDropped(t *testing.T) {
	dst := newFakeStream()
	b := newConn(nil, dst, dst, nil, testStreamID, false, nil, nil)
	defer b.Close()
	bad := [][]byte{
		{},                       // no header
		{0, 0, 0, 1, 0, 0, 0},    // k = 0
		{0, 0, 0, 1, 9, 4, 2, 1}, // index beyond k+m
		{0, 0, 0, 2, 0, 4, 2},    // data shard without a packet
	}
	go func() {
		for _, s := range bad {
			dst.dgIn <- append([]byte{testQSID, byte(wire.TypeFEC)}, s...)
		}
		dst.dgIn <- append([]byte{testQSID, byte(wire.TypeData)}, "after the garbage"...)
	}()
	f := readFrames(t, b, 1)[0]
	if string(f.Payload) != "after the garbage" {
		t.Fatalf("got %q", f.Payload)
	}
	if r := b.FEC().Recv; r.Malformed != uint64(len(bad)) {
		t.Fatalf("malformed %d, want %d (stats %+v)", r.Malformed, len(bad), r)
	}
}

// A packet that fits a datagram but not with the FEC overhead goes as a
// plain datagram.
func TestFECLargePacketUnprotected(t *testing.T) {
	src := newFakeStream()
	a := newConn(nil, src, src, nil, testStreamID, false, nil, nil)
	defer a.Close()
	a.EnableFEC(fec.Config{})
	p := bytes.Repeat([]byte("x"), initialMaxDatagram-FECOverhead)
	if _, err := a.Write(wire.AppendFrame(nil, wire.TypeData, p)); err != nil {
		t.Fatal(err)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if len(src.sentDG) != 1 || src.sentDG[0][1] != byte(wire.TypeData) || src.written.Len() != 0 {
		t.Fatalf("sent %d datagrams (%x…), %d stream bytes; want one plain DATA datagram", len(src.sentDG), src.sentDG, src.written.Len())
	}
}

// ipv4Packet is an IPv4 packet of n bytes (header length field set).
func ipv4Packet(n int, fill byte) []byte {
	p := bytes.Repeat([]byte{fill}, n)
	p[0] = 0x45
	p[2], p[3] = byte(n>>8), byte(n)
	return p
}

// Full-size packets' data shards are padded to their parity's length (so
// they stay full-size QUIC packets) and arrive, directly or rebuilt,
// without the padding; small packets are not padded.
func TestFECPadsFullSizeShards(t *testing.T) {
	src := newFakeStream()
	a := newConn(nil, src, src, nil, testStreamID, false, nil, nil)
	defer a.Close()
	if err := a.EnableFEC(fec.Config{K: 4, M: 1}); err != nil {
		t.Fatal(err)
	}
	ps := [][]byte{ipv4Packet(1345, 1), ipv4Packet(1345, 2), ipv4Packet(1300, 3), ipv4Packet(80, 4)}
	shards := writeFEC(t, a, src, ps)
	if len(shards) != 5 {
		t.Fatalf("%d shards, want 4 data + 1 parity", len(shards))
	}
	parity := len(shards[4])
	if len(shards[0]) != parity || len(shards[0]) != fec.HeaderLen+1345+fecPad {
		t.Errorf("full-size data shard %d bytes, parity %d: want both %d", len(shards[0]), parity, fec.HeaderLen+1345+fecPad)
	}
	if len(shards[2]) != fec.HeaderLen+1300+fecPad || len(shards[3]) != fec.HeaderLen+80 {
		t.Errorf("data shards of 1300 and 80 bytes: %d and %d (padding only from %d bytes)", len(shards[2]), len(shards[3]), fecPadMin)
	}
	dst := newFakeStream()
	b := newConn(nil, dst, dst, nil, testStreamID, false, nil, nil)
	defer b.Close()
	go func() {
		for i, s := range shards {
			if i != 1 { // lose a full-size one: rebuilt from parity
				dst.dgIn <- append([]byte{testQSID, byte(wire.TypeFEC)}, s...)
			}
		}
	}()
	var got [][]byte
	for _, f := range readFrames(t, b, 4) {
		got = append(got, f.Payload)
	}
	slices.SortFunc(got, bytes.Compare)
	slices.SortFunc(ps, bytes.Compare)
	for i := range ps {
		if !bytes.Equal(got[i], ps[i]) {
			t.Fatalf("packet %d: %d bytes, want %d unpadded", i, len(got[i]), len(ps[i]))
		}
	}
	if r := b.FEC().Recv; r.Recovered != 1 || r.Corrupt != 0 {
		t.Fatalf("receiver stats %+v, want 1 recovered, none corrupt", r)
	}
}

func TestTrimPadding(t *testing.T) {
	hdr := []byte{0, 0, 0, 1, 0, 4, 1} // group 1, index 0 of k=4, m=1
	v4 := append(append([]byte{}, hdr...), ipv4Packet(100, 9)...)
	v6 := append(append([]byte{}, hdr...), make([]byte, 100)...)
	v6[fec.HeaderLen] = 0x60
	v6[fec.HeaderLen+5] = 60 // payload length: 40 + 60 = 100
	for _, base := range [][]byte{v4, v6} {
		padded := append(slices.Clone(base), make([]byte, fecPad)...)
		if got := trimPadding(padded); !bytes.Equal(got, base) {
			t.Errorf("padded shard trimmed to %d bytes, want %d", len(got), len(base))
		}
		if got := trimPadding(base); !bytes.Equal(got, base) {
			t.Error("an unpadded shard was changed")
		}
		junk := append(slices.Clone(base), 0, 0, 7) // non-zero: not padding
		if got := trimPadding(junk); len(got) != len(junk) {
			t.Error("non-zero trailing bytes were trimmed")
		}
		long := append(slices.Clone(base), make([]byte, fecPad+1)...)
		if got := trimPadding(long); len(got) != len(long) {
			t.Error("more than fecPad trailing bytes were trimmed")
		}
	}
	parity := append([]byte{0, 0, 0, 1, 4, 4, 1}, make([]byte, 106)...)
	if got := trimPadding(parity); len(got) != len(parity) {
		t.Error("a parity shard was trimmed")
	}
}
