package gso

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// naiveSum is an independent one's complement sum (the test does not trust
// the package's own).
func naiveSum(parts ...[]byte) uint16 {
	var s int64
	for _, b := range parts {
		for i := 0; i+1 < len(b); i += 2 {
			s += int64(b[i])<<8 | int64(b[i+1])
		}
		if len(b)%2 == 1 {
			s += int64(b[len(b)-1]) << 8
		}
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// transportValid checks a segment's transport checksum with its pseudo
// header (a correct checksum sums to 0xffff).
func transportValid(seg []byte, iphLen int, proto byte) bool {
	th := seg[iphLen:]
	var pseudo []byte
	if seg[0]>>4 == 4 {
		pseudo = append(pseudo, seg[12:20]...)
	} else {
		pseudo = append(pseudo, seg[8:40]...)
	}
	pseudo = append(pseudo, 0, proto, byte(len(th)>>8), byte(len(th)))
	return naiveSum(pseudo, th) == 0xffff
}

func ipv4Header(proto byte, payloadLen int) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+payloadLen))
	binary.BigEndian.PutUint16(h[4:], 0xfffe) // the IDs wrap
	h[8], h[9] = 64, proto
	copy(h[12:], []byte{192, 0, 2, 1, 192, 0, 2, 2})
	return h
}

func ipv6Header(proto byte, payloadLen int) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(payloadLen))
	h[6], h[7] = proto, 64
	h[8], h[9], h[23] = 0xfd, 0x00, 1
	h[24], h[25], h[39] = 0xfd, 0x00, 2
	return h
}

// tcpHeader has 12 bytes of options (NOP NOP timestamps), PSH|ACK|FIN|CWR.
func tcpHeader(seq uint32) []byte {
	h := make([]byte, 32)
	binary.BigEndian.PutUint16(h[0:], 40000)
	binary.BigEndian.PutUint16(h[2:], 5201)
	binary.BigEndian.PutUint32(h[4:], seq)
	binary.BigEndian.PutUint32(h[8:], 777)
	h[12] = 8 << 4
	h[13] = tcpFlagCWR | 0x10 | tcpFlagPSH | tcpFlagFIN
	binary.BigEndian.PutUint16(h[14:], 512)
	copy(h[20:], []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2})
	return h
}

func pattern(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + i>>8)
	}
	return p
}

func outBufs(n, size int) ([][]byte, []int) {
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, 16+size)
	}
	return out, make([]int, n)
}

func TestSplitTCP(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		payload := pattern(5000)
		th := tcpHeader(0xfffffc00) // the sequence numbers wrap
		var pkt []byte
		typ, iphLen := TypeTCPv4, 20
		if v6 {
			pkt = append(ipv6Header(6, len(th)+len(payload)), th...)
			typ, iphLen = TypeTCPv6, 40
		} else {
			pkt = append(ipv4Header(6, len(th)+len(payload)), th...)
		}
		pkt = append(pkt, payload...)
		out, sizes := outBufs(8, 2000)
		n, err := Split(pkt, Options{Type: typ, Size: 1448, CsumStart: uint16(iphLen), CsumOffset: 16, NeedsCsum: true}, out, sizes, 16)
		if err != nil {
			t.Fatalf("v6=%v: %v", v6, err)
		}
		if n != 4 {
			t.Fatalf("v6=%v: %d segments, want 4 (3 × 1448 + 656)", v6, n)
		}
		var got []byte
		for i := 0; i < n; i++ {
			seg := out[i][16 : 16+sizes[i]]
			hdr := iphLen + 32
			want := min(1448, len(payload)-i*1448)
			if len(seg) != hdr+want {
				t.Fatalf("segment %d: %d bytes, want %d", i, len(seg), hdr+want)
			}
			if v6 {
				if pl := int(binary.BigEndian.Uint16(seg[4:])); pl != len(seg)-40 {
					t.Errorf("segment %d: IPv6 payload length %d, want %d", i, pl, len(seg)-40)
				}
			} else {
				if tl := int(binary.BigEndian.Uint16(seg[2:])); tl != len(seg) {
					t.Errorf("segment %d: IPv4 total length %d, want %d", i, tl, len(seg))
				}
				if id := binary.BigEndian.Uint16(seg[4:]); id != 0xfffe+uint16(i) {
					t.Errorf("segment %d: IPv4 ID %#x, want %#x", i, id, 0xfffe+uint16(i))
				}
				if naiveSum(seg[:20]) != 0xffff {
					t.Errorf("segment %d: IPv4 header checksum wrong", i)
				}
			}
			tcp := seg[iphLen:]
			if seq := binary.BigEndian.Uint32(tcp[4:]); seq != 0xfffffc00+uint32(i*1448) {
				t.Errorf("segment %d: seq %#x, want %#x", i, seq, 0xfffffc00+uint32(i*1448))
			}
			flags := tcp[13]
			last, first := i == n-1, i == 0
			if (flags&tcpFlagFIN != 0) != last || (flags&tcpFlagPSH != 0) != last {
				t.Errorf("segment %d: FIN/PSH %#x, want them on the last segment only", i, flags)
			}
			if (flags&tcpFlagCWR != 0) != first {
				t.Errorf("segment %d: CWR %#x, want it on the first segment only", i, flags)
			}
			if flags&0x10 == 0 {
				t.Errorf("segment %d: ACK lost", i)
			}
			if !bytes.Equal(tcp[20:32], th[20:32]) {
				t.Errorf("segment %d: TCP options changed", i)
			}
			if !transportValid(seg, iphLen, 6) {
				t.Errorf("segment %d: TCP checksum wrong", i)
			}
			got = append(got, seg[hdr:]...)
		}
		if !bytes.Equal(got, payload) {
			t.Errorf("v6=%v: the segments' payloads are not the packet's", v6)
		}
	}
}

func TestSplitUDP(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		payload := pattern(3000)
		uh := make([]byte, 8)
		binary.BigEndian.PutUint16(uh[0:], 4433)
		binary.BigEndian.PutUint16(uh[2:], 443)
		var pkt []byte
		iphLen := 20
		if v6 {
			pkt, iphLen = ipv6Header(17, 8+len(payload)), 40
		} else {
			pkt = ipv4Header(17, 8+len(payload))
		}
		pkt = append(append(pkt, uh...), payload...)
		out, sizes := outBufs(4, 1500)
		n, err := Split(pkt, Options{Type: TypeUDP, Size: 1200, CsumStart: uint16(iphLen), CsumOffset: 6, NeedsCsum: true}, out, sizes, 16)
		if err != nil || n != 3 {
			t.Fatalf("v6=%v: %d segments, %v; want 3", v6, n, err)
		}
		var got []byte
		for i := 0; i < n; i++ {
			seg := out[i][16 : 16+sizes[i]]
			udp := seg[iphLen:]
			if l := int(binary.BigEndian.Uint16(udp[4:])); l != len(udp) {
				t.Errorf("segment %d: UDP length %d, want %d", i, l, len(udp))
			}
			if binary.BigEndian.Uint16(udp[0:]) != 4433 || binary.BigEndian.Uint16(udp[2:]) != 443 {
				t.Errorf("segment %d: ports changed", i)
			}
			if !transportValid(seg, iphLen, 17) {
				t.Errorf("segment %d: UDP checksum wrong", i)
			}
			got = append(got, udp[8:]...)
		}
		if !bytes.Equal(got, payload) {
			t.Errorf("v6=%v: the segments' payloads are not the packet's", v6)
		}
	}
}

// A packet that needs no segmentation but a checksum (CHECKSUM_PARTIAL:
// the field holds the pseudo-header sum) comes out whole with it done.
func TestSplitNoneCompletesChecksum(t *testing.T) {
	payload := pattern(301)
	th := tcpHeader(5)
	pkt := append(append(ipv4Header(6, len(th)+len(payload)), th...), payload...)
	tcpLen := len(th) + len(payload)
	pseudo := append(append([]byte(nil), pkt[12:20]...), 0, 6, byte(tcpLen>>8), byte(tcpLen))
	binary.BigEndian.PutUint16(pkt[20+16:], naiveSum(pseudo))
	out, sizes := outBufs(1, 1500)
	n, err := Split(pkt, Options{Type: TypeNone, CsumStart: 20, CsumOffset: 16, NeedsCsum: true}, out, sizes, 16)
	if err != nil || n != 1 || sizes[0] != len(pkt) {
		t.Fatalf("n=%d size=%d err=%v", n, sizes[0], err)
	}
	if !transportValid(out[0][16:16+sizes[0]], 20, 6) {
		t.Error("checksum not completed")
	}
}

func TestSplitBadInput(t *testing.T) {
	th := tcpHeader(1)
	good := append(append(ipv4Header(6, len(th)+3000), th...), pattern(3000)...)
	ok := Options{Type: TypeTCPv4, Size: 1448, CsumStart: 20, CsumOffset: 16}
	v6 := append(append(ipv6Header(6, len(th)+100), th...), pattern(100)...)
	for _, c := range []struct {
		name string
		pkt  []byte
		o    Options
		bufs int
		want string
	}{
		{"empty", nil, ok, 4, "empty packet"},
		{"version", append([]byte{0x55}, good[1:]...), ok, 4, "IP version 5"},
		{"type vs version", v6, ok, 4, "on an IPv6 packet"},
		{"unknown type", good, Options{Type: 9, Size: 1448, CsumStart: 20, CsumOffset: 16}, 4, "unknown type 9"},
		{"size 0", good, Options{Type: TypeTCPv4, CsumStart: 20, CsumOffset: 16}, 4, "segment size 0"},
		{"csum start", good, Options{Type: TypeTCPv4, Size: 1448, CsumStart: 24, CsumOffset: 16}, 4, "IPv4 header length 20, transport at 24"},
		{"csum offset", good, Options{Type: TypeTCPv4, Size: 1448, CsumStart: 20, CsumOffset: 6}, 4, "checksum offset 6"},
		{"tcp truncated", good[:30], ok, 4, "TCP header truncated"},
		{"tcp options truncated", good[:45], ok, 4, "TCP header length 32"},
		{"too many segments", good, ok, 2, "3 segments, room for 2"},
		{"none buffer", good, Options{}, 1, "does not fit"},
		{"none csum outside", good[:40], Options{NeedsCsum: true, CsumStart: 20, CsumOffset: 40}, 1, "outside"},
	} {
		out, sizes := outBufs(c.bufs, 1500)
		if c.name == "none buffer" {
			out[0] = out[0][:100]
		}
		_, err := Split(c.pkt, c.o, out, sizes, 16)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one containing %q", c.name, err, c.want)
		}
	}
}

func FuzzSplit(f *testing.F) {
	th := tcpHeader(1)
	f.Add(append(append(ipv4Header(6, len(th)+3000), th...), pattern(3000)...), TypeTCPv4, uint16(1448), uint16(20), uint16(16), true)
	f.Add(append(append(ipv6Header(17, 1008), make([]byte, 8)...), pattern(1000)...), TypeUDP, uint16(500), uint16(40), uint16(6), false)
	f.Fuzz(func(t *testing.T, pkt []byte, typ uint8, size, start, off uint16, needs bool) {
		out, sizes := outBufs(8, 2000)
		n, err := Split(pkt, Options{Type: typ, Size: size, CsumStart: start, CsumOffset: off, NeedsCsum: needs}, out, sizes, 16)
		if err != nil {
			return
		}
		if n < 1 || n > len(out) {
			t.Fatalf("n = %d", n)
		}
		for i := 0; i < n; i++ {
			if sizes[i] < 1 || sizes[i] > 2000 {
				t.Fatalf("segment %d: size %d", i, sizes[i])
			}
		}
	})
}
