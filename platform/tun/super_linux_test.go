package tun

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/gso"
	"github.com/mirage-vpn/mirage/core/tundev"
	"github.com/mirage-vpn/mirage/core/tundev/tundevtest"
	"github.com/mirage-vpn/mirage/platform/internal/nstest"
)

// TestSuperTUNNetns runs TestChildSuperTUN in a fresh namespace.
func TestSuperTUNNetns(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t)
	out := nstest.RunChild(t, ns, "TestChildSuperTUN")
	t.Log(out)
	if !strings.Contains(out, "--- PASS: TestChildSuperTUN") {
		t.Fatalf("child did not pass:\n%s", out)
	}
}

// TestChildSuperTUN plays the far end of a TCP connection through a real
// TUN with ReadSuper and WriteSuper: the kernel's SYN is read, a SYN-ACK
// written; a super-packet written whole with a partial checksum (GSO) is
// delivered to the socket as its bytes; and the kernel's bulk send is read
// as super-packets larger than the MTU, whose offload header core/gso cuts
// into segments with valid checksums.
func TestChildSuperTUN(t *testing.T) {
	if !nstest.IsChild(t) {
		t.Skip("runs only as the child of TestSuperTUNNetns")
	}
	dev, err := CreateTUN("suptun0", 1400)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	sd := tundev.Super(dev)
	if sd == nil {
		t.Fatal("a Linux TUN with offloads is not a SuperDevice")
	}
	runIP(t, "addr", "add", "192.0.2.1/24", "dev", "suptun0")
	runIP(t, "link", "set", "suptun0", "up")

	type dialed struct {
		c   net.Conn
		err error
	}
	dc := make(chan dialed, 1)
	go func() {
		c, err := net.DialTimeout("tcp4", "192.0.2.2:5201", 5*time.Second)
		dc <- dialed{c, err}
	}()
	buf := make([]byte, tundev.Offset+tundev.MaxPacket)
	deadline := time.Now().Add(5 * time.Second)
	// read returns the next TCP packet from 192.0.2.1 to port 5201.
	read := func() ([]byte, gso.Options) {
		for time.Now().Before(deadline) {
			n, o, err := sd.ReadSuper(buf, tundev.Offset)
			if err != nil {
				t.Fatalf("ReadSuper: %v", err)
			}
			p := buf[tundev.Offset : tundev.Offset+n]
			if n >= 40 && p[0] == 0x45 && p[9] == 6 && binary.BigEndian.Uint16(p[22:]) == 5201 {
				return p, o
			}
		}
		t.Fatal("no TCP packet read before the deadline")
		return nil, gso.Options{}
	}

	syn, _ := read()
	if syn[33]&0x02 == 0 {
		t.Fatalf("first packet has flags %#x, want a SYN", syn[33])
	}
	cport := binary.BigEndian.Uint16(syn[20:])
	cseq := binary.BigEndian.Uint32(syn[24:])
	const ourISN = 1000
	// SYN-ACK with MSS 1300, checksum complete (no offload header).
	synack := tcp4(cport, ourISN, cseq+1, 0x12, []byte{2, 4, 0x05, 0x14}, nil)
	full := completeChecksum(t, synack)
	if err := writeSuper(sd, full, gso.Options{}, 0); err != nil {
		t.Fatalf("WriteSuper SYN-ACK: %v", err)
	}
	d := <-dc
	if d.err != nil {
		t.Fatalf("dial through the TUN: %v", d.err)
	}
	defer d.c.Close()
	d.c.SetDeadline(time.Now().Add(5 * time.Second))

	// Down: one 3-segment super-packet, partial checksum, written whole.
	payload := make([]byte, 3900)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	data := tcp4(cport, ourISN+1, cseq+1, 0x18, nil, payload)
	o := gso.Options{Type: gso.TypeTCPv4, Size: 1300, CsumStart: 20, CsumOffset: 16, NeedsCsum: true}
	hdrLen, err := gso.Check(data, o)
	if err != nil || hdrLen != 40 {
		t.Fatalf("Check = %d, %v", hdrLen, err)
	}
	if err := writeSuper(sd, data, o, hdrLen); err != nil {
		t.Fatalf("WriteSuper super-packet: %v", err)
	}
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(d.c, got); err != nil {
		t.Fatalf("socket read: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("the socket received other bytes than the super-packet's")
	}

	// Up: the kernel's bulk send comes out as super-packets.
	go d.c.Write(make([]byte, 60000))
	var seen, biggest int
	for seen < 3*1300 {
		p, o := read()
		if len(p) <= 40 {
			continue // a pure ACK
		}
		seen += len(p) - 40
		biggest = max(biggest, len(p))
		if o.Type == gso.TypeNone {
			continue
		}
		if o.Type != gso.TypeTCPv4 || o.Size != 1300 || o.CsumStart != 20 || o.CsumOffset != 16 || !o.NeedsCsum {
			t.Fatalf("offload header %+v, want TCPv4 size 1300 at 20+16 with a partial checksum", o)
		}
		out := make([][]byte, 64)
		for i := range out {
			out[i] = make([]byte, 1400)
		}
		sizes := make([]int, 64)
		n, err := gso.Split(p, o, out, sizes, 0)
		if err != nil {
			t.Fatalf("split the kernel's super-packet: %v", err)
		}
		for i := 0; i < n; i++ {
			if !tcpChecksumOK(out[i][:sizes[i]]) {
				t.Fatalf("segment %d of the kernel's super-packet: bad checksum", i)
			}
		}
	}
	if biggest <= 1400 {
		t.Fatalf("largest packet read %d bytes: no super-packet over the MTU", biggest)
	}
	t.Logf("largest super-packet read: %d bytes", biggest)
}

// writeSuper writes p through sd with o.
func writeSuper(sd tundev.SuperDevice, p []byte, o gso.Options, hdrLen int) error {
	buf := make([]byte, tundev.Offset+len(p))
	copy(buf[tundev.Offset:], p)
	return sd.WriteSuper(buf, tundev.Offset, o, hdrLen)
}

// tcp4 builds a TCP packet 192.0.2.2:5201 -> 192.0.2.1:dport with a valid
// IP header checksum and the TCP checksum field holding the pseudo-header
// sum (CHECKSUM_PARTIAL).
func tcp4(dport uint16, seq, ack uint32, flags byte, opts, payload []byte) []byte {
	th := 20 + len(opts)
	p := make([]byte, 20+th+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8], p[9] = 64, 6
	copy(p[12:], []byte{192, 0, 2, 2, 192, 0, 2, 1})
	binary.BigEndian.PutUint16(p[10:], ^tundevtest.Fold(tundevtest.Sum(p[:20], 0)))
	binary.BigEndian.PutUint16(p[20:], 5201)
	binary.BigEndian.PutUint16(p[22:], dport)
	binary.BigEndian.PutUint32(p[24:], seq)
	binary.BigEndian.PutUint32(p[28:], ack)
	p[32] = byte(th/4) << 4
	p[33] = flags
	binary.BigEndian.PutUint16(p[34:], 65535)
	copy(p[40:], opts)
	copy(p[20+th:], payload)
	pseudo := tundevtest.Sum(p[12:20], 0) + 6 + uint32(th+len(payload))
	binary.BigEndian.PutUint16(p[36:], tundevtest.Fold(pseudo))
	return p
}

// completeChecksum turns a CHECKSUM_PARTIAL packet into a complete one.
func completeChecksum(t *testing.T, p []byte) []byte {
	out := [][]byte{make([]byte, len(p))}
	if _, err := gso.Split(p, gso.Options{NeedsCsum: true, CsumStart: 20, CsumOffset: 16}, out, []int{0}, 0); err != nil {
		t.Fatal(err)
	}
	return out[0]
}

func tcpChecksumOK(seg []byte) bool {
	th := seg[20:]
	s := tundevtest.Sum(seg[12:20], 0) + 6 + uint32(len(th))
	return tundevtest.Fold(tundevtest.Sum(th, s)) == 0xffff
}
