package engine

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/mirage-vpn/mirage/core/gso"
	"github.com/mirage-vpn/mirage/core/tundev"
	"github.com/mirage-vpn/mirage/core/tundev/tundevtest"
	"github.com/mirage-vpn/mirage/core/wire"
)

const tundevOffset = tundev.Offset

var (
	superSrc4 = netip.MustParseAddr("192.0.2.1")
	superDst4 = netip.MustParseAddr("198.51.100.7")
	superSrc6 = netip.MustParseAddr("fd00::1")
	superDst6 = netip.MustParseAddr("fd00::7")
)

func patternBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13 + i>>8)
	}
	return b
}

// tcpValid checks a segment's TCP checksum against its pseudo-header with
// a sum of its own.
func tcpValid(seg []byte) bool {
	iph, pseudo := 20, []byte{}
	if seg[0]>>4 == 6 {
		iph = 40
		pseudo = append(pseudo, seg[8:40]...)
	} else {
		pseudo = append(pseudo, seg[12:20]...)
	}
	th := seg[iph:]
	pseudo = append(pseudo, 0, 6, byte(len(th)>>8), byte(len(th)))
	var s uint64
	for _, b := range [][]byte{pseudo, th} {
		for i := 0; i < len(b); i += 2 {
			w := uint64(b[i]) << 8
			if i+1 < len(b) {
				w |= uint64(b[i+1])
			}
			s += w
		}
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return s == 0xffff
}

// A Splitter cuts a super-packet like the kernel: MSS-sized payloads in
// order, consecutive sequence numbers, valid checksums; and it reuses its
// memory.
func TestSplitter(t *testing.T) {
	for _, fam := range []struct {
		name     string
		src, dst netip.Addr
		iph      int
	}{{"v4", superSrc4, superDst4, 20}, {"v6", superSrc6, superDst6, 40}} {
		t.Run(fam.name, func(t *testing.T) {
			payload := patternBytes(5000)
			p, o := tundevtest.TCPSuper(fam.src, fam.dst, 1000, payload, 1400)
			var sp Splitter
			n, err := sp.Split(p, o)
			if err != nil {
				t.Fatal(err)
			}
			if n != 4 {
				t.Fatalf("%d segments, want 4", n)
			}
			var got []byte
			for i := 0; i < n; i++ {
				seg := sp.Seg(i)
				if !tcpValid(seg) {
					t.Errorf("segment %d: bad TCP checksum", i)
				}
				if seq := binary.BigEndian.Uint32(seg[fam.iph+4:]); seq != 1000+uint32(i*1400) {
					t.Errorf("segment %d: seq %d", i, seq)
				}
				got = append(got, seg[fam.iph+20:]...)
			}
			if !bytes.Equal(got, payload) {
				t.Error("payloads do not add up to the super-packet's")
			}
			if a := testing.AllocsPerRun(20, func() { sp.Split(p, o) }); a != 0 {
				t.Errorf("Split allocates %.0f times per call once warm", a)
			}
		})
	}
}

// Bad offload headers are errors, never panics: the peer's header is not
// trusted.
func TestSplitterBadHeaders(t *testing.T) {
	p, o := tundevtest.TCPSuper(superSrc4, superDst4, 1, patternBytes(3000), 1000)
	p6, _ := tundevtest.TCPSuper(superSrc6, superDst6, 1, patternBytes(3000), 1000)
	var sp Splitter
	for name, c := range map[string]struct {
		p []byte
		o gso.Options
	}{
		"v6 type on v4":    {p, gso.Options{Type: gso.TypeTCPv6, Size: 1000, CsumStart: 20, CsumOffset: 16, NeedsCsum: true}},
		"v4 type on v6":    {p6, o},
		"size 0":           {p, gso.Options{Type: gso.TypeTCPv4, CsumStart: 20, CsumOffset: 16, NeedsCsum: true}},
		"udp on tcp":       {p, gso.Options{Type: gso.TypeUDP, Size: 1000, CsumStart: 20, CsumOffset: 6, NeedsCsum: true}},
		"csum past end":    {p[:30], gso.Options{NeedsCsum: true, CsumStart: 20, CsumOffset: 16}},
		"unknown type":     {p, gso.Options{Type: 0x83, Size: 1000, CsumStart: 20, CsumOffset: 16, NeedsCsum: true}},
		"too many":         {p, gso.Options{Type: gso.TypeTCPv4, Size: 1, CsumStart: 20, CsumOffset: 16, NeedsCsum: true}},
		"truncated header": {p[:25], o},
	} {
		if _, err := sp.Split(c.p, c.o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// WriteGSO hands a super-packet to a SuperDevice whole, after the packets
// batched before it; to a plain device it writes the segments.
func TestWriteGSO(t *testing.T) {
	p, o := tundevtest.TCPSuper(superSrc4, superDst4, 7, patternBytes(4000), 1360)
	frame := wire.AppendGSO(nil, o, 40, p)
	var sp Splitter

	sd := tundevtest.NewSuper(1420)
	b := NewBatch(8)
	plain := tundevtest.UDP(superSrc4, superDst4, []byte("before"))
	b.Add(plain)
	fo, _, ok := wire.ParseGSO(frame[wire.HeaderLen:])
	if !ok || fo != o {
		t.Fatalf("ParseGSO = %+v, %v; want %+v", fo, ok, o)
	}
	if err := WriteGSO(sd, b, &sp, bytes.Clone(frame[wire.HeaderLen:]), fo); err != nil {
		t.Fatal(err)
	}
	if b.Len() != 0 || len(sd.Outbound) != 1 {
		t.Fatalf("the batched packet was not written first (batch %d, written %d)", b.Len(), len(sd.Outbound))
	}
	got := <-sd.SuperOut
	if !bytes.Equal(got.P, p) || got.O != o || got.HdrLen != 40 {
		t.Fatalf("written %d bytes, %+v, header length %d; want the packet whole, %+v, 40", len(got.P), got.O, got.HdrLen, o)
	}

	cd := tundevtest.New(1420)
	b = NewBatch(2) // smaller than the segment count: flushed on the way
	if err := WriteGSO(cd, b, &sp, bytes.Clone(frame[wire.HeaderLen:]), fo); err != nil {
		t.Fatal(err)
	}
	b.Flush(cd)
	if len(cd.Outbound) != 3 {
		t.Fatalf("plain device got %d packets, want 3 segments", len(cd.Outbound))
	}
	for i := 0; i < 3; i++ {
		if seg := <-cd.Outbound; !tcpValid(seg) || len(seg) > 40+1360 {
			t.Errorf("segment %d: %d bytes, checksum valid %v", i, len(seg), tcpValid(seg))
		}
	}

	// A device that refuses the super-packet gets its segments.
	<-sd.Outbound // the plain packet from above
	sd.Refuse = true
	if err := WriteGSO(sd, b, &sp, bytes.Clone(frame[wire.HeaderLen:]), fo); err != nil {
		t.Fatal(err)
	}
	b.Flush(sd)
	if len(sd.Outbound) != 3 || len(sd.SuperOut) != 0 {
		t.Fatalf("refused super-packet: %d segments written, %d whole; want 3, 0", len(sd.Outbound), len(sd.SuperOut))
	}
	for len(sd.Outbound) > 0 {
		<-sd.Outbound
	}
	sd.Refuse = false

	bad := bytes.Clone(frame[wire.HeaderLen:])
	bad[1] = 4 // TCPv6 on an IPv4 packet
	bo, _, _ := wire.ParseGSO(bad)
	if err := WriteGSO(sd, b, &sp, bad, bo); err == nil || len(sd.SuperOut) != 0 {
		t.Fatalf("bad header: err %v, written %d", err, len(sd.SuperOut))
	}
}

// discardConn is a Conn whose writes go nowhere.
type discardConn struct{ net.Conn }

func (discardConn) Write(b []byte) (int, error) { return len(b), nil }
func (discardConn) ExportKeyingMaterial(string, []byte, int) ([]byte, error) {
	return nil, nil
}

// benchSession is a one-connection Session writing to discardConn.
func benchSession(peerGSO bool) *Session {
	s := &Session{Protocol: "tcp-tls", stats: &Stats{}, done: make(chan struct{}),
		log: slog.New(slog.DiscardHandler), peerGSO: peerGSO}
	s.setLinks([]*link{s.newLink(discardConn{}, nil, 0)})
	return s
}

// BenchmarkSessionSend is Session.send, the TUN reader's path to one
// transport write: a 32-packet batch of 1400-byte packets (as wireguard/tun
// splits a super-packet), one 64 KiB super-packet in one GSO frame, and the
// same super-packet split for a peer without the capability. Bytes/s are
// inner bytes; all must be 0 allocs/op.
func BenchmarkSessionSend(b *testing.B) {
	super, o := tundevtest.TCPSuper(superSrc4, superDst4, 1, patternBytes(65000), 1360)
	b.Run("plain-batch", func(b *testing.B) {
		s := benchSession(false)
		pkt := tundevtest.UDP(superSrc4, superDst4, make([]byte, 1372))
		bufs, sizes := make([][]byte, 32), make([]int, 32)
		for i := range bufs {
			bufs[i] = make([]byte, tundevOffset+len(pkt))
			sizes[i] = copy(bufs[i][tundevOffset:], pkt)
		}
		b.ReportAllocs()
		b.SetBytes(int64(32 * len(pkt)))
		for i := 0; i < b.N; i++ {
			s.send(bufs, sizes, nil, 32)
		}
	})
	for _, c := range []struct {
		name    string
		peerGSO bool
	}{{"super-whole", true}, {"super-split", false}} {
		b.Run(c.name, func(b *testing.B) {
			s := benchSession(c.peerGSO)
			bufs := [][]byte{make([]byte, tundevOffset+len(super))}
			sizes := []int{copy(bufs[0][tundevOffset:], super)}
			opts := []gso.Options{o}
			b.ReportAllocs()
			b.SetBytes(int64(len(super)))
			for i := 0; i < b.N; i++ {
				s.send(bufs, sizes, opts, 1)
			}
		})
	}
}

// CapGSO is announced only where the server can use it.
func TestHelloCaps(t *testing.T) {
	for _, c := range []struct {
		accept bool
		proto  string
		mux    uint8
		want   uint32
	}{
		{true, "tcp-tls", wire.MuxFlow, wire.CapGSO},
		{true, "reality", wire.MuxActiveStandby, wire.CapGSO},
		{true, "quic", wire.MuxFlow, 0},
		{true, "tcp-tls", wire.MuxRoundRobin, 0},
		{false, "tcp-tls", wire.MuxFlow, 0},
	} {
		if got := helloCaps(SessionParams{AcceptGSO: c.accept, Mux: c.mux}, c.proto); got != c.want {
			t.Errorf("helloCaps(accept %v, %s, mux %d) = %#x, want %#x", c.accept, c.proto, c.mux, got, c.want)
		}
	}
}
