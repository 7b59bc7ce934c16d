package quictun

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/fec"
)

// memConn is one end of an in-memory datagram link; drop decides, per
// datagram sent, whether the link loses it.
type memConn struct {
	local, remote *net.UDPAddr
	in            chan []byte
	peer          *memConn
	drop          func(b []byte) bool

	mu sync.Mutex
	dl time.Time
}

func memPair() (*memConn, *memConn) {
	a := &memConn{local: &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1000}, in: make(chan []byte, 1<<14)}
	b := &memConn{local: &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 443}, in: make(chan []byte, 1<<14)}
	a.peer, b.peer = b, a
	a.remote, b.remote = b.local, a.local
	return a, b
}

func (c *memConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	if c.drop != nil && c.drop(b) {
		return len(b), nil
	}
	c.peer.in <- append([]byte(nil), b...)
	return len(b), nil
}

func (c *memConn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.mu.Lock()
	dl := c.dl
	c.mu.Unlock()
	var timeout <-chan time.Time
	if !dl.IsZero() {
		d := time.Until(dl)
		if d <= 0 {
			return 0, nil, os.ErrDeadlineExceeded
		}
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case p := <-c.in:
		return copy(b, p), c.remote, nil
	case <-timeout:
		return 0, nil, os.ErrDeadlineExceeded
	}
}

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.dl = t
	c.mu.Unlock()
	return nil
}
func (c *memConn) SetDeadline(t time.Time) error    { return c.SetReadDeadline(t) }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return c.local }

// quicLike is a short-header packet of n bytes: 0x40, a fixed connection
// ID, the sequence number, random bytes.
func quicLike(rng *rand.Rand, seq, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	b[0] = 0x40 | b[0]&0x1f
	for i := 1; i <= ConnectionIDLength; i++ {
		b[i] = byte(i)
	}
	binary.BigEndian.PutUint32(b[pathHeaderLen:], uint32(seq))
	return b
}

func seqOf(b []byte) int { return int(binary.BigEndian.Uint32(b[pathHeaderLen:])) }

// pathPair is a client and a server PathFEC over a memConn link whose
// client-to-server direction drops by drop.
func pathPair(t *testing.T, cfg fec.Config, drop func([]byte) bool) (cli, srv *PathFEC, link *memConn) {
	t.Helper()
	a, b := memPair()
	a.drop = drop
	key := NewPathFECKey()
	srv, err := NewServerPathFEC(b, nil, key, fec.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cli = NewClientPathFEC(a, nil)
	if err := cli.Start(cfg, key[:]); err != nil {
		t.Fatal(err)
	}
	return cli, srv, a
}

// sendInOrder sends pkts from cli and checks that srv hands them out
// byte for byte, in order.
func sendInOrder(t *testing.T, cli, srv *PathFEC, pkts [][]byte) {
	t.Helper()
	for _, p := range pkts {
		if _, err := cli.WriteTo(p, srv.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	got := readN(t, srv, len(pkts))
	for i := range got {
		if !bytes.Equal(got[i], pkts[i]) {
			t.Fatalf("packet %d: got seq %d (%d bytes, connection ID %x), want seq %d (%d bytes, ID %x)",
				i, seqOf(got[i]), len(got[i]), got[i][1:pathHeaderLen], i, len(pkts[i]), pkts[i][1:pathHeaderLen])
		}
	}
}

// readN reads n packets from c (failing after a second without one).
func readN(t *testing.T, c *PathFEC, n int) [][]byte {
	t.Helper()
	var got [][]byte
	buf := make([]byte, 2048)
	for len(got) < n {
		c.SetReadDeadline(time.Now().Add(time.Second))
		k, _, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatalf("after %d of %d packets: %v", len(got), n, err)
		}
		got = append(got, append([]byte(nil), buf[:k]...))
	}
	return got
}

func TestPathFECRecoversInOrder(t *testing.T) {
	// One data packet of every group of 10 lost: all rebuilt, delivered in
	// the order sent.
	var sent int
	drop := func(b []byte) bool {
		sent++
		return sent%12 == 3 // groups are 10 data + 2 parity
	}
	cli, srv, _ := pathPair(t, fec.Config{K: 10, M: 2}, drop)
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 1000
	var want [][]byte
	for i := range n {
		want = append(want, quicLike(rng, i, 200+rng.IntN(1200)))
	}
	sendInOrder(t, cli, srv, want)
	st := srv.Totals()
	if st.Recv.Recovered != n/10 {
		t.Errorf("recovered %d, want %d", st.Recv.Recovered, n/10)
	}
	if cs := cli.Totals(); cs.DataSent != n || cs.ParitySent != 2*n/10 {
		t.Errorf("sent %d data, %d parity; want %d, %d", cs.DataSent, cs.ParitySent, n, 2*n/10)
	}
}

// On the wire a group of full-size packets and its parity are all one
// size (the connection ID is left out of the code, the packets padded), so
// a bulk transfer shows one packet size; a group of short packets gets
// parity 7 bytes longer than its longest. Every packet arrives intact.
func TestPathFECOneWireSize(t *testing.T) {
	var mu sync.Mutex
	var sizes []int
	drop := func(b []byte) bool {
		mu.Lock()
		sizes = append(sizes, len(b))
		mu.Unlock()
		return false
	}
	cli, srv, _ := pathPair(t, fec.Config{K: 4, M: 2}, drop)
	rng := rand.New(rand.NewPCG(3, 4))
	var want [][]byte
	for i := range 8 {
		n := InitialPacketSize
		if i >= 4 {
			n = 600
		}
		p := quicLike(rng, i, n)
		want = append(want, p)
		if _, err := cli.WriteTo(p, srv.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range readN(t, srv, len(want)) {
		if !bytes.Equal(p, want[i]) {
			t.Fatalf("packet %d differs", i)
		}
	}
	full := InitialPacketSize + PathFECOverhead
	short := 600 + pathTrailerLen
	wantSizes := []int{full, full, full, full, full, full, short, short, short, short, short + pathPad, short + pathPad}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(sizes, wantSizes) {
		t.Fatalf("wire sizes %v, want %v", sizes, wantSizes)
	}
}

func TestPathFECGivesUpHoles(t *testing.T) {
	// A group losing more than its parity: the rest of it is still
	// delivered, in order, after the next group starts; the loss is not
	// waited for until maxHold.
	var sent int
	drop := func(b []byte) bool {
		sent++
		return sent >= 2 && sent <= 4 // 3 of group 0's 10 data, 1 parity
	}
	cli, srv, _ := pathPair(t, fec.Config{K: 10, M: 1}, drop)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 30 {
		cli.WriteTo(quicLike(rng, i, 500), srv.LocalAddr())
	}
	got := readN(t, srv, 27)
	last := -1
	for _, p := range got {
		s := seqOf(p)
		if s <= last || (s >= 1 && s <= 3) {
			t.Fatalf("order: seq %d after %d (lost: 1-3)", s, last)
		}
		last = s
	}
	if st := srv.Totals(); st.Recv.Unrecoverable != 0 && st.Recv.Recovered != 0 {
		t.Errorf("stats %+v", st.Recv)
	}
}

func TestPathFECHoldExpires(t *testing.T) {
	// The last group of a burst loses a packet and its parity: what is
	// behind the hole comes out after maxHold, not never.
	var sent int
	drop := func(b []byte) bool {
		sent++
		return sent == 2 || sent == 5 // data 1 and the one parity of a 4-packet group
	}
	cli, srv, _ := pathPair(t, fec.Config{K: 4, M: 1}, drop)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 4 {
		cli.WriteTo(quicLike(rng, i, 300), srv.LocalAddr())
	}
	start := time.Now()
	got := readN(t, srv, 3)
	if d := time.Since(start); d < pathMaxHold/2 {
		t.Errorf("held packets came out after %v: the hole was not waited for", d)
	}
	if seqOf(got[0]) != 0 || seqOf(got[1]) != 2 || seqOf(got[2]) != 3 {
		t.Errorf("got seqs %d %d %d, want 0 2 3", seqOf(got[0]), seqOf(got[1]), seqOf(got[2]))
	}
}

func TestPathFECPlainPassThrough(t *testing.T) {
	// Long-header packets, short ones and anything from an end that does
	// not frame pass unchanged both ways; a protected packet looks like a
	// short-header packet with its first bytes unchanged.
	a, b := memPair()
	key := NewPathFECKey()
	srv, _ := NewServerPathFEC(b, nil, key, fec.Config{})
	cli := NewClientPathFEC(a, nil) // not started: sends plain
	rng := rand.New(rand.NewPCG(7, 8))
	long := quicLike(rng, 1, 1200)
	long[0] = 0xc3
	short := quicLike(rng, 2, 30)
	plain := quicLike(rng, 3, 700)
	for _, p := range [][]byte{long, short, plain} {
		cli.WriteTo(p, srv.LocalAddr())
	}
	got := readN(t, srv, 3)
	for i, p := range [][]byte{long, short, plain} {
		if !bytes.Equal(got[i], p) {
			t.Errorf("packet %d changed", i)
		}
	}
	// The server answers plain to a peer that never framed.
	srv.WriteTo(plain, a.local)
	if w := <-a.in; !bytes.Equal(w, plain) {
		t.Error("server framed to a plain peer")
	}
	// Once the client frames, the server frames back.
	cli.Start(fec.Config{K: 2, M: 1}, key[:])
	cli.WriteTo(plain, srv.LocalAddr())
	w := <-b.in
	if len(w) != len(plain)+pathTrailerLen || !bytes.Equal(w[:pathHeaderLen], plain[:pathHeaderLen]) {
		t.Fatalf("protected packet: %d bytes, want %d with the same header", len(w), len(plain)+pathTrailerLen)
	}
	b.in <- w
	readN(t, srv, 1)
	srv.WriteTo(plain, a.local)
	if w := <-a.in; len(w) != len(plain)+pathTrailerLen {
		t.Errorf("server answered a framing peer with %d bytes, want %d", len(w), len(plain)+pathTrailerLen)
	}
}

func TestPathFECGarbage(t *testing.T) {
	// Random datagrams are plain packets to quic-go (which drops them);
	// forged trailers with a wrong tag never reach the decoder.
	a, b := memPair()
	key := NewPathFECKey()
	srv, _ := NewServerPathFEC(b, nil, key, fec.Config{})
	rng := rand.New(rand.NewPCG(9, 10))
	for i := range 500 {
		p := quicLike(rng, i, 40+rng.IntN(1400))
		a.WriteTo(p, b.local)
	}
	got := readN(t, srv, 500)
	if len(got) != 500 || srv.Totals().Recv.Shards != 0 {
		t.Errorf("garbage: %d packets back, %d shards decoded", len(got), srv.Totals().Recv.Shards)
	}
}

func TestPathFECAdaptsToReportedLoss(t *testing.T) {
	// auto: the receiver's loss report reaches the sender, whose group
	// shape follows it: parity on a lossy direction, none on a clean one.
	var mu sync.Mutex
	lossy := true
	drop := func(b []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		return lossy && rand.IntN(100) < 3
	}
	cli, srv, _ := pathPair(t, fec.Config{}, drop)
	rng := rand.New(rand.NewPCG(11, 12))
	buf := make([]byte, 2048)
	exchange := func(rounds int) {
		for r := range rounds {
			for i := range 32 {
				cli.WriteTo(quicLike(rng, r*32+i, 1000), srv.LocalAddr())
			}
			// The server answers, carrying its loss report.
			srv.WriteTo(quicLike(rng, r, 100), cli.LocalAddr())
			for {
				srv.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
				if _, _, err := srv.ReadFrom(buf); err != nil {
					break
				}
			}
			cli.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
			cli.ReadFrom(buf)
		}
	}
	exchange(150)
	st, _ := cli.Stats(srv.LocalAddr())
	if st.M == 0 || st.SendLoss < 0.01 {
		t.Errorf("at 3 %% loss: shape %d+%d, reported loss %.3f", st.K, st.M, st.SendLoss)
	}
	mu.Lock()
	lossy = false
	mu.Unlock()
	lossyM, lossyLoss := st.M, st.SendLoss
	exchange(300)
	st, _ = cli.Stats(srv.LocalAddr())
	// The estimate decays over about 8192 shards (fec.DecoderOptions).
	if st.M >= lossyM || st.SendLoss >= lossyLoss/2 {
		t.Errorf("on a clean link: shape %d+%d, reported loss %.4f; lossy it was m=%d at %.4f", st.K, st.M, st.SendLoss, lossyM, lossyLoss)
	}
}

// An IPv4 peer is one peer whichever form its address comes in.
func TestPathFECAddrForms(t *testing.T) {
	four := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1).To4(), Port: 443}
	mapped := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1).To16(), Port: 443}
	a, _ := addrPort(four)
	b, _ := addrPort(mapped)
	if a != b {
		t.Fatalf("%v and %v are different peers", a, b)
	}
}

// quic-go moves to new connection IDs during a connection, and the ID is
// part of what a packet's AEAD authenticates: a rebuilt packet must get
// the ID it was sent with, not the last one seen. Here the ID changes
// every 7 packets (groups of 10) and the first packet of every group but
// the first is lost; every packet arrives byte for byte, in order.
func TestPathFECRebuildsWithItsConnectionID(t *testing.T) {
	var mu sync.Mutex
	first := false // the next datagram opens a group (not the first: a hole before the first packet seen cannot be known)
	drop := func(b []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		lost := first
		// A parity packet (not a data packet of ours: seq marker) ends a
		// group; the next data packet opens one.
		first = b[pathHeaderLen+4] != 0xAA
		return lost && !first
	}
	cli, srv, _ := pathPair(t, fec.Config{K: 10, M: 2}, drop)
	rng := rand.New(rand.NewPCG(5, 6))
	const n = 700
	var want [][]byte
	for i := range n {
		p := quicLike(rng, i, 300+rng.IntN(900))
		p[pathHeaderLen+4] = 0xAA // marks a data packet for drop
		cid := byte(i / 7)
		for j := 1; j <= ConnectionIDLength; j++ {
			p[j] = cid ^ byte(j)
		}
		want = append(want, p)
	}
	sendInOrder(t, cli, srv, want)
	if st := srv.Totals(); st.Recv.Recovered+st.Recv.Delivered != n || st.Recv.Recovered < n/10 || st.Recv.Corrupt != 0 {
		t.Fatalf("receiver %+v: want all %d, ≥ %d rebuilt", st.Recv, n, n/10)
	}
}
