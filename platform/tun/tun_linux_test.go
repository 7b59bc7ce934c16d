package tun

import (
	"encoding/binary"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/tundev"
	"github.com/mirage-vpn/mirage/platform/internal/nstest"
)

func TestCreateTUNBadArgs(t *testing.T) {
	for _, c := range []struct {
		name string
		mtu  int
		want string
	}{
		{"mt0", 100, "mtu 100 out of range"},
		{"mt0", 70000, "mtu 70000 out of range"},
		{"a-name-that-is-too-long", 1400, "invalid interface name"},
		{"a/b", 1400, "invalid interface name"},
	} {
		_, err := CreateTUN(c.name, c.mtu)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("CreateTUN(%q, %d) = %v, want error containing %q", c.name, c.mtu, err, c.want)
		}
	}
}

// TestTUNNetns runs TestChildTUN inside a fresh network namespace.
func TestTUNNetns(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t)
	out := nstest.RunChild(t, ns, "TestChildTUN")
	if !strings.Contains(out, "--- PASS: TestChildTUN") {
		t.Fatalf("child did not pass:\n%s", out)
	}
}

// TestChildTUN creates a TUN in the current (test) namespace, checks that
// the kernel sends it no IPv6 autoconf traffic, and moves packets both ways.
func TestChildTUN(t *testing.T) {
	if !nstest.IsChild(t) {
		t.Skip("runs only as the child of TestTUNNetns")
	}
	dev, err := CreateTUN("mtun0", 1400)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if mtu, _ := dev.MTU(); mtu != 1400 {
		t.Errorf("MTU = %d, want 1400", mtu)
	}
	if name, _ := dev.Name(); name != "mtun0" {
		t.Errorf("Name = %q, want mtun0", name)
	}
	if b := dev.BatchSize(); b != 128 {
		t.Errorf("BatchSize = %d, want 128 (vnet_hdr with offloads)", b)
	}
	for _, s := range ipv6Quiet {
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/mtun0/" + s.key)
		if err != nil || strings.TrimSpace(string(b)) != s.value {
			t.Errorf("sysctl %s = %q (%v), want %s", s.key, b, err, s.value)
		}
	}
	runIP(t, "addr", "add", "192.0.2.1/24", "dev", "mtun0")
	runIP(t, "link", "set", "mtun0", "up")

	pkts := make(chan []byte, 256)
	go func() {
		bufs := make([][]byte, dev.BatchSize())
		for i := range bufs {
			bufs[i] = make([]byte, tundev.Offset+tundev.MaxPacket)
		}
		sizes := make([]int, len(bufs))
		for {
			n, err := dev.Read(bufs, sizes, tundev.Offset)
			for i := 0; i < n; i++ {
				pkts <- append([]byte(nil), bufs[i][tundev.Offset:tundev.Offset+sizes[i]]...)
			}
			if err != nil {
				close(pkts)
				return
			}
		}
	}()

	// Nothing (no IPv6 RS/MLD, no DAD) may arrive while the link idles.
	select {
	case p := <-pkts:
		t.Fatalf("unexpected packet on idle tun (version %d, %d bytes)", p[0]>>4, len(p))
	case <-time.After(1500 * time.Millisecond):
	}

	// Outbound: a UDP datagram to 192.0.2.2 is read from the tun.
	c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 9})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello tun")); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-pkts:
		if p[0]>>4 != 4 || !net.IP(p[16:20]).Equal(net.IPv4(192, 0, 2, 2)) || !strings.HasSuffix(string(p), "hello tun") {
			t.Fatalf("read unexpected packet % x", p)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no packet read from tun within 3s")
	}

	// Inbound: a packet written to the tun reaches a local socket.
	l, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5555})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pkt := udp4(net.IPv4(192, 0, 2, 2), net.IPv4(192, 0, 2, 1), 4444, 5555, []byte("injected"))
	buf := make([]byte, tundev.Offset+len(pkt), tundev.Offset+tundev.MaxPacket)
	copy(buf[tundev.Offset:], pkt)
	if _, err := dev.Write([][]byte{buf}, tundev.Offset); err != nil {
		t.Fatalf("write: %v", err)
	}
	l.SetReadDeadline(time.Now().Add(3 * time.Second))
	got := make([]byte, 100)
	n, from, err := l.ReadFromUDP(got)
	if err != nil || string(got[:n]) != "injected" || from.Port != 4444 {
		t.Fatalf("socket got %q from %v, err %v", got[:n], from, err)
	}

	if err := dev.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	select {
	case <-pkts: // drains or sees close
	case <-time.After(3 * time.Second):
		t.Fatal("read did not return after Close")
	}
}

func runIP(t *testing.T, args ...string) {
	t.Helper()
	if out, err := execIP(args...); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// udp4 builds an IPv4/UDP packet (UDP checksum 0, valid for IPv4).
func udp4(src, dst net.IP, sport, dport uint16, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64
	p[9] = 17
	copy(p[12:16], src.To4())
	copy(p[16:20], dst.To4())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}
