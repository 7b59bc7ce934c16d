package wire

import (
	"bytes"
	"errors"
	"github.com/mirage-vpn/mirage/core/gso"
	"io"
	"net/netip"
	"reflect"
	"testing"
)

func sampleHello() *Hello {
	return &Hello{
		Username: "alice", Password: "correct horse", Ticket: []byte{1, 2, 3},
		Join:     &Join{SessionID: [16]byte{9}, Proof: [32]byte{7}},
		Request:  []netip.Addr{netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("fd00::7")},
		MaxFrame: 65535, Caps: CapDatagrams, ClientVersion: "mirage/0.1", Mux: MuxActiveStandby,
	}
}

func sampleWelcome() *Welcome {
	return &Welcome{
		SessionID:   [16]byte{1, 2},
		JoinKey:     [32]byte{3, 4},
		ClientAddrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.2/24"), netip.MustParsePrefix("fd00:6d:1::2/64")},
		ServerAddrs: []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("fd00:6d:1::1")},
		MTU:         1420,
		DNS:         []netip.Addr{netip.MustParseAddr("192.0.2.53")},
		Routes:      []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
		Keepalive:   25, Ticket: []byte("ticket"), MaxFrame: 65535,
		QUICPorts:   [2]uint16{443, 20100},
		PublicAddrs: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("fd00::1")},
		Caps:        CapGSO | CapPathFEC,
		PathFECKey:  [PathFECKeyLen]byte{9, 8, 7},
	}
}

func TestHelloRoundTrip(t *testing.T) {
	h := sampleHello()
	b, err := h.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalHello(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, h) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, h)
	}
}

func TestWelcomeRoundTrip(t *testing.T) {
	w := sampleWelcome()
	b, err := w.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalWelcome(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, w) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, w)
	}
}

func TestHelloErrors(t *testing.T) {
	good, _ := sampleHello().Marshal()
	cases := map[string][]byte{
		"empty":        {},
		"bad version":  {2},
		"no username":  {Version},
		"trunc header": {Version, 1, 0},
		"trunc value":  {Version, 1, 0, 5, 'a'},
		"join size":    append([]byte{Version, 1, 0, 1, 'a', helloJoin, 0, 1}, 0),
		"dup username": append(append([]byte{}, good...), 1, 0, 1, 'b'),
		"mux mode 3":   {Version, 1, 0, 1, 'a', helloMux, 0, 1, 3},
		"mux size":     {Version, 1, 0, 1, 'a', helloMux, 0, 2, 0, 0},
	}
	for name, b := range cases {
		if _, err := UnmarshalHello(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// Unknown tags are skipped.
	b := append(append([]byte{}, good...), 200, 0, 2, 1, 2)
	if _, err := UnmarshalHello(b); err != nil {
		t.Errorf("unknown tag: %v", err)
	}
}

func TestWelcomeErrors(t *testing.T) {
	good, _ := sampleWelcome().Marshal()
	if _, err := UnmarshalWelcome(good[:len(good)-1]); err == nil {
		t.Error("truncated welcome accepted")
	}
	bad := append(append([]byte{}, good...), welcomeRoute, 0, 5, 192, 0, 2, 0, 33)
	if _, err := UnmarshalWelcome(bad); err == nil {
		t.Error("IPv4 /33 accepted")
	}
	if _, err := UnmarshalWelcome([]byte{Version}); err == nil {
		t.Error("empty welcome accepted")
	}
	for _, ports := range [][]byte{{0, 0, 0, 5}, {0, 9, 0, 5}, {0, 5, 0}} {
		bad := append(append([]byte{}, good...), welcomeQUICPorts, 0, byte(len(ports)))
		if _, err := UnmarshalWelcome(append(bad, ports...)); err == nil {
			t.Errorf("quic ports %v accepted", ports)
		}
	}
	if _, err := UnmarshalWelcome(append(append([]byte{}, good...), welcomePathFECKey, 0, 2, 0, 2)); err == nil {
		t.Error("a 2-byte path FEC key was accepted")
	}
	if _, err := UnmarshalWelcome(append(append([]byte{}, good...), welcomeCaps, 0, 2, 0, 2)); err == nil {
		t.Error("2-byte capabilities accepted")
	}
	w := sampleWelcome()
	w.QUICPorts = [2]uint16{9, 5}
	if _, err := w.Marshal(); err == nil {
		t.Error("reversed quic port range marshalled")
	}
}

func TestReader(t *testing.T) {
	var b []byte
	b = AppendFrame(b, TypeData, []byte("packet-1"))
	b = AppendFrame(b, Type(0x7f), []byte("unknown"))
	b = AppendFrame(b, TypePadding, make([]byte, 100))
	b = AppendFrame(b, TypeData, bytes.Repeat([]byte{0xab}, MaxPayload))
	b = AppendClose(b, CloseShutdown, "bye")
	r := NewReader(bytes.NewReader(b), 0)
	want := []struct {
		t Type
		n int
	}{{TypeData, 8}, {Type(0x7f), 7}, {TypePadding, 100}, {TypeData, MaxPayload}, {TypeClose, 4}}
	for i, w := range want {
		f, err := r.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if f.Type != w.t || len(f.Payload) != w.n {
			t.Fatalf("frame %d: got %s/%d want %s/%d", i, f.Type, len(f.Payload), w.t, w.n)
		}
		if f.Type == TypeClose {
			code, msg := ParseClose(f.Payload)
			if code != CloseShutdown || msg != "bye" {
				t.Fatalf("close: %d %q", code, msg)
			}
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
}

func TestReaderLimitAndTruncation(t *testing.T) {
	b := AppendFrame(nil, TypeHello, make([]byte, MaxHandshakePayload+1))
	r := NewReader(bytes.NewReader(b), 0)
	r.SetMaxPayload(MaxHandshakePayload)
	if _, err := r.Next(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversize: %v", err)
	}
	r = NewReader(bytes.NewReader(b[:10]), 0)
	if _, err := r.Next(); err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated: %v", err)
	}
}

func TestFrameBuffered(t *testing.T) {
	b := AppendFrame(nil, TypeData, []byte("a"))
	b = AppendFrame(b, TypeData, []byte("bb"))
	r := NewReader(io.MultiReader(bytes.NewReader(b), bytes.NewReader([]byte{1, 0})), 0)
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if !r.FrameBuffered() {
		t.Fatal("second frame should be buffered")
	}
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if r.FrameBuffered() {
		t.Fatal("no complete third frame")
	}
}

func FuzzReader(f *testing.F) {
	f.Add(AppendFrame(AppendFrame(nil, TypeData, []byte("x")), TypePing, []byte("12345678")))
	f.Add([]byte{1, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b), 0)
		r.SetMaxPayload(1000)
		for i := 0; i < 1000; i++ {
			r.FrameBuffered()
			f, err := r.Next()
			if err != nil {
				return
			}
			if len(f.Payload) > 1000 {
				t.Fatal("limit ignored")
			}
			if f.Type == TypeClose {
				ParseClose(f.Payload)
			}
		}
	})
}

func FuzzHello(f *testing.F) {
	b, _ := sampleHello().Marshal()
	f.Add(b)
	f.Add([]byte{Version, 1, 0, 1, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := UnmarshalHello(b)
		if err != nil {
			return
		}
		b2, err := h.Marshal()
		if err != nil {
			t.Fatalf("decoded hello does not re-encode: %v", err)
		}
		h2, err := UnmarshalHello(b2)
		if err != nil || !reflect.DeepEqual(h, h2) {
			t.Fatalf("re-decode differs: %v", err)
		}
	})
}

func FuzzWelcome(f *testing.F) {
	b, _ := sampleWelcome().Marshal()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := UnmarshalWelcome(b)
		if err != nil {
			return
		}
		b2, err := w.Marshal()
		if err != nil {
			t.Fatalf("decoded welcome does not re-encode: %v", err)
		}
		w2, err := UnmarshalWelcome(b2)
		if err != nil || !reflect.DeepEqual(w, w2) {
			t.Fatalf("re-decode differs: %v", err)
		}
	})
}

func BenchmarkAppendFrame(b *testing.B) {
	pkt := make([]byte, 1400)
	buf := make([]byte, 0, 64*1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for i := 0; i < b.N; i++ {
		buf = AppendFrame(buf[:0], TypeData, pkt)
	}
}

// BenchmarkReader reads DATA frames of a 1400-byte packet from one
// connection in steady state: 0 allocs/op.
func BenchmarkReader(b *testing.B) {
	pkt := make([]byte, 1400)
	var stream []byte
	for i := 0; i < 64; i++ {
		stream = AppendFrame(stream, TypeData, pkt)
	}
	r := NewReader(&repeatReader{b: stream}, 0)
	b.ReportAllocs()
	b.SetBytes(int64(HeaderLen + len(pkt)))
	for b.Loop() {
		if f, err := r.Next(); err != nil || len(f.Payload) != len(pkt) {
			b.Fatalf("frame %v, %v", f.Type, err)
		}
	}
}

// repeatReader reads b over and over, like a connection that never ends.
type repeatReader struct {
	b   []byte
	off int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := copy(p, r.b[r.off:])
	r.off = (r.off + n) % len(r.b)
	return n, nil
}

func TestSeqData(t *testing.T) {
	p := []byte{0x45, 1, 2, 3}
	b := AppendSeqData(nil, 0xdeadbeef, p)
	r := NewReader(bytes.NewReader(b), 0)
	f, err := r.Next()
	if err != nil || f.Type != TypeSeqData || f.Type.String() != "SEQDATA" {
		t.Fatalf("frame %v, %v", f.Type, err)
	}
	seq, got, ok := ParseSeqData(f.Payload)
	if !ok || seq != 0xdeadbeef || !bytes.Equal(got, p) {
		t.Fatalf("parsed %x %x %v", seq, got, ok)
	}
	for _, bad := range [][]byte{nil, {1, 2, 3}, {1, 2, 3, 4}} {
		if _, _, ok := ParseSeqData(bad); ok {
			t.Errorf("ParseSeqData(%x) accepted a payload without a packet", bad)
		}
	}
}

func FuzzSeqData(f *testing.F) {
	f.Add(uint32(0), []byte{0x45})
	f.Add(^uint32(0), bytes.Repeat([]byte{0x60}, 1500))
	f.Fuzz(func(t *testing.T, seq uint32, p []byte) {
		if len(p) > MaxPayload-SeqLen {
			p = p[:MaxPayload-SeqLen]
		}
		b := AppendSeqData(nil, seq, p)
		f, err := NewReader(bytes.NewReader(b), 0).Next()
		if err != nil || f.Type != TypeSeqData {
			t.Fatalf("frame %v, %v", f.Type, err)
		}
		s2, p2, ok := ParseSeqData(f.Payload)
		if ok != (len(p) > 0) || (ok && (s2 != seq || !bytes.Equal(p2, p))) {
			t.Fatalf("round trip: %x %x %v", s2, p2, ok)
		}
	})
}

func TestGSOFrame(t *testing.T) {
	o := gso.Options{Type: gso.TypeTCPv6, Size: 1380, CsumStart: 40, CsumOffset: 16, NeedsCsum: true}
	p := bytes.Repeat([]byte{0x60}, 3000)
	b := AppendGSO(nil, o, 60, p)
	if len(b) != HeaderLen+GSOHeaderLen+len(p) {
		t.Fatalf("frame of %d bytes", len(b))
	}
	// The header is big endian on the wire, whatever the host.
	if want := []byte{byte(TypeGSO), 0x0b, 0xc2, 1, 4, 0, 60, 0x05, 0x64, 0, 40, 0, 16}; !bytes.Equal(b[:13], want) {
		t.Fatalf("header % x, want % x", b[:13], want)
	}
	f, err := NewReader(bytes.NewReader(b), 0).Next()
	if err != nil || f.Type != TypeGSO {
		t.Fatalf("frame %v, %v", f.Type, err)
	}
	o2, p2, ok := ParseGSO(f.Payload)
	if !ok || o2 != o || !bytes.Equal(p2, p) {
		t.Fatalf("round trip: %+v %d bytes %v", o2, len(p2), ok)
	}
	for _, bad := range [][]byte{nil, make([]byte, GSOHeaderLen)} {
		if _, _, ok := ParseGSO(bad); ok {
			t.Errorf("ParseGSO(%x) accepted a payload without a packet", bad)
		}
	}
	if TypeGSO.String() != "GSO" {
		t.Error(TypeGSO.String())
	}
}

func FuzzGSO(f *testing.F) {
	f.Add(byte(1), byte(1), uint16(1400), uint16(20), uint16(16), []byte{0x45})
	f.Add(byte(0), byte(5), uint16(0), uint16(40), uint16(6), bytes.Repeat([]byte{0x60}, 1500))
	f.Fuzz(func(t *testing.T, flags, typ byte, size, start, off uint16, p []byte) {
		if len(p) > MaxGSOPacket {
			p = p[:MaxGSOPacket]
		}
		o := gso.Options{Type: typ, Size: size, CsumStart: start, CsumOffset: off, NeedsCsum: flags&1 != 0}
		b := AppendGSO(nil, o, 0, p)
		f, err := NewReader(bytes.NewReader(b), 0).Next()
		if err != nil || f.Type != TypeGSO {
			t.Fatalf("frame %v, %v", f.Type, err)
		}
		o2, p2, ok := ParseGSO(f.Payload)
		if ok != (len(p) > 0) || (ok && (o2 != o || !bytes.Equal(p2, p))) {
			t.Fatalf("round trip: %+v %x %v", o2, p2, ok)
		}
	})
}
