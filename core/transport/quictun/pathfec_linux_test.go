package quictun

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/quic-go/quic-go"
	"golang.org/x/sys/unix"

	"github.com/mirage-vpn/mirage/core/fec"
)

// Runs for one GSO send: equal sizes, a shorter last one ends the run, a
// longer one starts the next; the kernel's 64 segments and 64 KiB.
func TestGSORuns(t *testing.T) {
	cut := func(lens []int) [][2]int {
		var runs [][2]int
		for i := 0; i < len(lens); {
			j, total := gsoRun(lens, i)
			runs = append(runs, [2]int{j - i, total})
			i = j
		}
		return runs
	}
	for _, c := range []struct {
		lens []int
		want [][2]int
	}{
		{[]int{1412, 1412, 1412}, [][2]int{{3, 3 * 1412}}},
		{[]int{1412, 1412, 900, 1412}, [][2]int{{3, 2*1412 + 900}, {1, 1412}}},
		{[]int{1412, 1439, 1439, 1412}, [][2]int{{1, 1412}, {3, 2*1439 + 1412}}},
		{slices.Repeat([]int{1000}, 70), [][2]int{{64, 64000}, {6, 6000}}},
		{slices.Repeat([]int{1412}, 50), [][2]int{{46, 46 * 1412}, {4, 4 * 1412}}},
	} {
		if got := cut(c.lens); !slices.Equal(got, c.want) {
			t.Errorf("runs of %v: %v, want %v", c.lens, got, c.want)
		}
	}
}

// splitSegment takes the GSO size out of quic-go's control messages and
// keeps the rest (here an ECN mark); appendSegment puts one back.
func TestSegmentControlMessage(t *testing.T) {
	tos := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafePointer(tos))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_TOS
	h.SetLen(unix.CmsgLen(4))
	tos[unix.CmsgSpace(0)] = 2
	oob := appendSegment(slices.Clone(tos), 1400)
	base, seg := splitSegment(oob)
	if seg != 1400 || !bytes.Equal(base, tos) {
		t.Fatalf("split: segment %d, rest %x; want 1400 and %x", seg, base, tos)
	}
	if base, seg := splitSegment(tos); seg != 0 || !bytes.Equal(base, tos) {
		t.Fatalf("no segment message: got %d, %x", seg, base)
	}
	if base, seg := splitSegment([]byte{1, 2, 3}); seg != 0 || !bytes.Equal(base, []byte{1, 2, 3}) {
		t.Fatalf("garbage: got %d, %x", seg, base)
	}
}

// loopbackPair is a QUIC connection over loopback whose sockets are
// wrapped with path FEC of shape cfg (nil: plain, WrapUDP as without FEC).
type loopbackPair struct {
	cc, sc   *quic.Conn
	cf, sf   *PathFEC
	cpc, spc *net.UDPConn
}

func newLoopbackPair(tb testing.TB, cfg *fec.Config) *loopbackPair {
	tb.Helper()
	lp := &loopbackPair{}
	var err error
	if lp.spc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		tb.Skip("no IPv4 loopback:", err)
	}
	if lp.cpc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		tb.Fatal(err)
	}
	sconn, cconn := WrapUDP(lp.spc, nil), WrapUDP(lp.cpc, nil)
	if cfg != nil {
		key := NewPathFECKey()
		if lp.sf, err = NewServerPathFEC(lp.spc, nil, key, *cfg); err != nil {
			tb.Fatal(err)
		}
		lp.cf = NewClientPathFEC(lp.cpc, nil)
		if err := lp.cf.Start(*cfg, key[:]); err != nil {
			tb.Fatal(err)
		}
		sconn, cconn = lp.sf.Conn(), lp.cf.Conn()
	}
	str := &quic.Transport{Conn: sconn, ConnectionIDLength: ConnectionIDLength}
	ctr := &quic.Transport{Conn: cconn, ConnectionIDLength: ConnectionIDLength}
	conf := &quic.Config{MaxIdleTimeout: 10 * time.Second, InitialPacketSize: InitialPacketSize, DisablePathMTUDiscovery: true}
	ln, err := str.Listen(&tls.Config{Certificates: []tls.Certificate{selfSigned(tb)}, NextProtos: []string{"pathfec"}}, conf)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if lp.cc, err = ctr.Dial(ctx, lp.spc.LocalAddr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"pathfec"}}, conf); err != nil {
		tb.Fatal(err)
	}
	if lp.sc, err = ln.Accept(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		lp.cc.CloseWithError(0, "")
		lp.sc.CloseWithError(0, "")
		ln.Close()
		ctr.Close()
		str.Close()
		for _, f := range []*PathFEC{lp.cf, lp.sf} {
			if f != nil {
				f.Close()
			}
		}
		lp.cpc.Close()
		lp.spc.Close()
	})
	return lp
}

// upload sends payload from client to server on a new stream and returns
// what arrived and the two streams.
func (lp *loopbackPair) upload(tb testing.TB, payload []byte) ([]byte, *quic.Stream, *quic.Stream) {
	return transfer(tb, lp.cc, lp.sc, payload)
}

// transfer sends payload from one end to the other on a new stream and
// returns what arrived, the sending and the receiving stream.
func transfer(tb testing.TB, from, to *quic.Conn, payload []byte) ([]byte, *quic.Stream, *quic.Stream) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := from.OpenStreamSync(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	go func() {
		out.Write(payload)
		out.Close()
	}()
	in, err := to.AcceptStream(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	got, err := io.ReadAll(in)
	if err != nil {
		tb.Fatal(err)
	}
	return got, out, in
}

// quic-go over loopback with path FEC on both ends, on the fast path
// (batched reads, GSO sends cut and resent): a 4 MiB stream arrives
// intact both ways, both ends sent protected packets and parity, the
// receivers decoded them without a malformed or corrupt shard.
func TestPathFECFastPathLoopback(t *testing.T) {
	lp := newLoopbackPair(t, &fec.Config{K: 10, M: 2})
	if _, ok := lp.cf.Conn().(*pathUDP); !ok {
		t.Fatalf("Conn() on a UDP socket is %T, want the fast path", lp.cf.Conn())
	}
	payload := make([]byte, 4<<20)
	rand.NewChaCha8([32]byte{1}).Read(payload)
	want := sha256.Sum256(payload)
	got, cs, ss := lp.upload(t, payload)
	if sha256.Sum256(got) != want {
		t.Fatalf("upload: %d bytes, not intact", len(got))
	}
	go func() {
		ss.Write(got)
		ss.Close()
	}()
	back, err := io.ReadAll(cs)
	if err != nil || sha256.Sum256(back) != want {
		t.Fatalf("download: %d bytes, err %v", len(back), err)
	}

	cst, _ := lp.cf.Stats(lp.spc.LocalAddr())
	sst, _ := lp.sf.Stats(lp.cpc.LocalAddr())
	t.Logf("client %+v", cst)
	t.Logf("server %+v", sst)
	for name, st := range map[string]fec.ConnStats{"client": cst, "server": sst} {
		if st.DataSent < 1000 || st.ParitySent == 0 {
			t.Errorf("%s sent %d protected packets and %d parity", name, st.DataSent, st.ParitySent)
		}
		if st.Recv.Data < 1000 || st.Recv.Parity == 0 || st.Recv.Malformed != 0 || st.Recv.Corrupt != 0 {
			t.Errorf("%s decoded %+v", name, st.Recv)
		}
	}
}

// A GSO write from quic-go (three packets in one buffer with a segment
// size, an ECN mark besides) is cut into packets, each protected, and sent
// on: the receiving path FEC hands back the three packets, in order, and
// the wrapper now sends its own runs with GSO.
func TestPathFECSplitsGSOWrite(t *testing.T) {
	rpc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Skip("no IPv4 loopback:", err)
	}
	key := NewPathFECKey()
	rf, err := NewServerPathFEC(rpc, nil, key, fec.Config{K: 8, M: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	spc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	sf := NewClientPathFEC(spc, nil)
	defer sf.Close()
	if err := sf.Start(fec.Config{K: 8, M: 2}, key[:]); err != nil {
		t.Fatal(err)
	}
	u, ok := sf.Conn().(*pathUDP)
	if !ok {
		t.Fatalf("Conn() is %T", sf.Conn())
	}
	if !kernelGSO(t, spc) {
		t.Skip("kernel without UDP GSO")
	}
	r := rand.NewChaCha8([32]byte{7})
	var buf []byte
	var pkts [][]byte
	for i := range 3 {
		p := make([]byte, 1200)
		if i == 2 {
			p = p[:700] // the last of a GSO buffer may be shorter
		}
		r.Read(p)
		p[0] = 0x40
		pkts = append(pkts, p)
		buf = append(buf, p...)
	}
	tos := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafePointer(tos))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_TOS
	h.SetLen(unix.CmsgLen(4))
	tos[unix.CmsgSpace(0)] = 2
	if n, _, err := u.WriteMsgUDP(buf, appendSegment(tos, 1200), rpc.LocalAddr().(*net.UDPAddr)); err != nil || n != len(buf) {
		t.Fatalf("write: %d, %v", n, err)
	}
	if !u.gso.Load() {
		t.Errorf("a write with a segment size did not turn on GSO for the wrapper's runs")
	}
	rf.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 2048)
	for i, want := range pkts {
		n, _, err := rf.ReadFrom(got)
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if !bytes.Equal(got[:n], want) {
			t.Fatalf("packet %d: %d bytes, want %d (in order, trailer removed)", i, n, len(want))
		}
	}
	if st, _ := rf.Stats(spc.LocalAddr()); st.Recv.Data != 3 || st.Recv.Malformed != 0 {
		t.Fatalf("receiver %+v, want 3 protected data packets", st.Recv)
	}
}

// BenchmarkPathFECLoopback: what path FEC costs quic-go on loopback, with no
// parity (fec = "auto" on a clean link) and with 32+4, against plain.
func BenchmarkPathFECLoopback(b *testing.B) {
	for _, c := range []struct {
		name string
		cfg  *fec.Config
	}{{"plain", nil}, {"noparity", &fec.Config{K: 32, M: 0}}, {"32+4", &fec.Config{K: 32, M: 4}}} {
		b.Run(c.name, func(b *testing.B) {
			lp := newLoopbackPair(b, c.cfg)
			payload := make([]byte, 16<<20)
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				if got, _, _ := lp.upload(b, payload); len(got) != len(payload) {
					b.Fatalf("%d bytes arrived", len(got))
				}
			}
		})
	}
}

// kernelGSO reports whether the socket takes a UDP_SEGMENT option.
func kernelGSO(t *testing.T, c *net.UDPConn) bool {
	_, err := sockopt(t, c, unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	return err == nil
}

func unsafePointer(b []byte) unsafe.Pointer { return unsafe.Pointer(&b[0]) }

// fec = "auto" over a clean loopback: each end reports the loss it sees to
// the other, which drops its parity (it starts as for 1 % loss) once the
// report's upper bound is under 0.1 %, a few thousand packets in. This
// fails if the reports do not reach the sending half, as when the two
// halves keyed the peer by different forms of its address.
func TestPathFECAutoDropsParityOnCleanLink(t *testing.T) {
	lp := newLoopbackPair(t, &fec.Config{})
	payload := make([]byte, 4<<20)
	// Pauses let the last groups age out of the decoder (300 ms), so it
	// has closed groups to report on.
	for range 3 {
		if got, cs, _ := lp.upload(t, payload); len(got) != len(payload) {
			t.Fatalf("%d bytes arrived", len(got))
		} else {
			cs.CancelRead(0)
		}
		if got, ss, _ := transfer(t, lp.sc, lp.cc, payload); len(got) != len(payload) {
			t.Fatalf("%d bytes arrived", len(got))
		} else {
			ss.CancelRead(0)
		}
		time.Sleep(400 * time.Millisecond)
	}
	cst, _ := lp.cf.Stats(lp.spc.LocalAddr())
	sst, _ := lp.sf.Stats(lp.cpc.LocalAddr())
	if cst.M != 0 || sst.M != 0 || cst.DataSent < 5000 || sst.DataSent < 5000 {
		t.Fatalf("after 12 MiB each way on a clean link the shapes are %d+%d (client) and %d+%d (server), want no parity; client %+v server %+v", cst.K, cst.M, sst.K, sst.M, cst, sst)
	}
}
