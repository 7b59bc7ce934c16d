//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/platform/internal/linkem"
)

// wanLink is a link emulator running in the router namespace of a topology.
type wanLink struct {
	up, down *linkem.Link
}

// emulate puts a WAN link emulator (package linkem, in this process) between
// cli and srv: policy routing in rtr sends every forwarded packet through
// a TUN whose packets the emulator delays, drops and rate-limits before
// the kernel routes them on. It stops when t ends.
func emulate(t *testing.T, tp *topology, p linkem.Params) *wanLink {
	t.Helper()
	for _, argv := range [][]string{
		{"ip", "tuntap", "add", "dev", "wan0", "mode", "tun"},
		{"ip", "link", "set", "wan0", "up", "txqueuelen", "10000"},
		{"sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", "net.ipv4.conf.wan0.rp_filter=0"},
		{"ip", "route", "add", "default", "dev", "wan0", "table", "100"},
		{"ip", "-6", "route", "add", "default", "dev", "wan0", "table", "100"},
	} {
		mustNS(t, tp.RTR, argv...)
	}
	for i, dev := range []string{rtrCliIf, rtrSrvIf} {
		pref := fmt.Sprint(100 + i)
		mustNS(t, tp.RTR, "ip", "rule", "add", "iif", dev, "lookup", "100", "pref", pref)
		mustNS(t, tp.RTR, "ip", "-6", "rule", "add", "iif", dev, "lookup", "100", "pref", pref)
	}
	f, err := openTUNIn(tp.RTR, "wan0")
	if err != nil {
		t.Fatalf("emulator TUN: %v", err)
	}
	seed := uint64(time.Now().UnixNano())
	up, err := linkem.NewLink(p, seed)
	if err != nil {
		t.Fatal(err)
	}
	down, _ := linkem.NewLink(p, seed+1)
	e := &linkem.Emulator{
		UpPrefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.128/25"), netip.MustParsePrefix("fd00:6d:b::/64")},
		Up:         up, Down: down,
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := e.Run(ctx, f); err != nil {
			t.Errorf("link emulator: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		f.Close()
	})
	t.Logf("link emulator: one-way delay %v, loss %.2f %% each way, %d Mbit/s, queue %d bytes",
		p.Delay, p.Loss*100, p.RateBps/1e6, p.Queue())
	return &wanLink{up: up, down: down}
}

// openTUNIn attaches to the TUN device name inside network namespace ns. The
// attach happens on a thread moved into ns for the call (inNS);
// the descriptor keeps working from any thread.
func openTUNIn(ns, name string) (*os.File, error) {
	var f *os.File
	var err error
	if nerr := inNS(ns, func() { f, err = linkem.OpenTUN(name) }); nerr != nil {
		return nil, nerr
	}
	return f, err
}

// losses returns the packets the emulator dropped at random, up and down.
func (w *wanLink) losses() (up, down uint64) {
	return w.up.Stats.LossDrops.Load(), w.down.Stats.LossDrops.Load()
}

// A lossy long link (40 ms RTT, 2 % loss each way, 50 Mbit/s): the default
// profile (REALITY, then tcp-tls) and QUIC carry data byte for byte both
// ways, and the emulator really dropped packets in both directions.
func TestE2EWANTransfer(t *testing.T) {
	tp := newTopology(t)
	w := emulate(t, tp, linkem.Params{Delay: 20 * time.Millisecond, Loss: 0.02, RateBps: 50_000_000})
	s := startGeneratedServer(t, tp)
	for _, tc := range []struct {
		name string
		conf func() string
		size int64 // quic-go's loss-based congestion control is slow here
	}{
		{"default", s.clientPath, 4 << 20},
		{"quic", func() string { return quicClient(t, s, nil) }, 2 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startClient(t, tp, tc.conf())
			line := c.waitConnected(t, 1, connectTimeout)
			t.Logf("client: %s", line)
			waitPing(t, tp.CLI, tunSrv4, 10*time.Second)
			up0, down0 := w.losses()
			checkTransfer(t, tp.SRV, tp.CLI, tunSrv4, tc.size, 90*time.Second)
			up1, down1 := w.losses()
			if up1 == up0 || down1 == down0 {
				t.Fatalf("the emulator dropped %d packets up and %d down during the transfer; want both > 0", up1-up0, down1-down0)
			}
			t.Logf("emulator losses during the transfer: %d up, %d down", up1-up0, down1-down0)
			c.p.stop(5 * time.Second)
		})
	}
}

// FEC through a lossy link (40 ms RTT, 2 % loss each way, 50 Mbit/s): the
// same QUIC upload with fec = "off" and "auto" on the client (the server
// allows it). With FEC (path FEC: the QUIC packets are protected) the
// server rebuilds lost packets (its recovered counter grows) and an inner
// UDP flow loses a fraction of what it loses without, in the same test;
// the TCP upload arrives byte for byte both times.
func TestE2EWANFEC(t *testing.T) {
	tp := newTopology(t)
	w := emulate(t, tp, linkem.Params{Delay: 20 * time.Millisecond, Loss: 0.02, RateBps: 50_000_000})
	s := startGeneratedServer(t, tp)
	s.stop(t)
	m := readTOML(t, s.configPath())
	mt := table(m, "metrics")
	mt["enabled"], mt["listen"] = true, "127.0.0.1:9090"
	table(m, "connection")["fec"] = "auto" // the server allows FEC
	writeTOML(t, s.configPath(), m)
	s.restart(t)

	recovered := func() float64 {
		out, err := nsOutput(tp.SRV, "curl", "-sS", "--max-time", "5", "http://127.0.0.1:9090/metrics")
		if err != nil {
			t.Fatalf("scrape: %v\n%s", err, out)
		}
		mm := regexp.MustCompile(`(?m)^mirage_fec_received_total\{event="recovered"\} (\S+)$`).FindStringSubmatch(out)
		if mm == nil {
			t.Fatalf("no mirage_fec_received_total{event=\"recovered\"} on the metrics page:\n%s", out)
		}
		v, _ := strconv.ParseFloat(mm[1], 64)
		return v
	}
	const size = 2 << 20
	results := map[string][3]float64{}
	for _, mode := range []string{"off", "auto"} {
		c := startClient(t, tp, quicClient(t, s, func(m map[string]any) {
			table(m, "connection")["fec"] = mode
		}))
		c.waitConnected(t, 1, connectTimeout)
		waitPing(t, tp.CLI, tunSrv4, 10*time.Second)
		r0 := recovered()
		up0, _ := w.losses()
		q0 := w.up.Stats.QueueDrops.Load()
		total, elapsed, retrans := uploadStreams(t, tp, 1, strconv.Itoa(size), 120*time.Second)
		up1, _ := w.losses()
		q1 := w.up.Stats.QueueDrops.Load()
		rec := recovered() - r0
		t.Logf("fec=%s: %d bytes in %v, %d packets lost on the way up (+%d queue drops), %.0f rebuilt by the server, inner TCP retransmits %d",
			mode, total, elapsed.Round(time.Millisecond), up1-up0, q1-q0, rec, retrans)
		if up1 == up0 {
			t.Fatalf("fec=%s: the emulator dropped nothing", mode)
		}
		lost, sent := iperfUDPLoss(t, tp, "2M", 8)
		t.Logf("fec=%s: inner UDP at 2 Mbit/s for 8 s: %d of %d datagrams lost", mode, lost, sent)
		paced := iperfPacedRetrans(t, tp, "8M", 8)
		t.Logf("fec=%s: inner TCP paced at 8 Mbit/s for 8 s: %d retransmits", mode, paced)
		results[mode] = [3]float64{rec, float64(lost) / float64(sent), float64(paced)}
		c.p.stop(5 * time.Second)
		// Both ends have path FEC: it protects the QUIC packets, not the
		// datagrams.
		on := regexp.MustCompile(`forward error correction on.*protects=(?:"([^"]+)"|(\S+))`).FindStringSubmatch(c.p.Stderr())
		switch {
		case mode == "off" && on != nil:
			t.Errorf("fec=off: the client logged %q", on[0])
		case mode == "auto" && (on == nil || on[1] != "quic packets"):
			t.Errorf("fec=auto: want path FEC (protects=\"quic packets\"), the client logged %q", on)
		}
	}
	off, auto := results["off"], results["auto"]
	if off[0] != 0 {
		t.Errorf("fec=off: the server rebuilt %.0f packets; want 0 (no FEC frames)", off[0])
	}
	if auto[0] <= 0 {
		t.Errorf("fec=auto: the server rebuilt no packet")
	}
	// The unpaced upload's retransmits are no measure: with path FEC
	// quic-go no longer backs off for random loss, the upload fills the
	// 50 Mbit/s queue and the inner TCP sees its overflow (congestion).
	// Inner flows at a fixed rate far below the link lose only what the
	// outer packets lose.
	if off[1] < 0.005 {
		t.Errorf("fec=off: inner UDP loss %.2f %%; want about the link's 2 %%", 100*off[1])
	}
	if auto[1] > off[1]/3 {
		t.Errorf("inner UDP loss with FEC %.2f %%, without %.2f %%: want FEC to rebuild most of it", 100*auto[1], 100*off[1])
	}
	if auto[2] >= off[2] {
		t.Errorf("paced inner TCP retransmits with FEC %.0f, without %.0f: want fewer with FEC", auto[2], off[2])
	}
}

// iperfUDPLoss sends inner UDP (1200-byte datagrams, which fit the tunnel
// MTU) at rate for secs from the client to the server and returns the
// datagrams the receiver missed and those sent.
func iperfUDPLoss(t *testing.T, tp *topology, rate string, secs int) (lost, sent int) {
	t.Helper()
	r := iperfRun(t, tp, secs+20, "-u", "-l", "1200", "-b", rate, "-t", strconv.Itoa(secs))
	return r.End.Sum.Lost, r.End.Sum.Packets
}

// iperfPacedRetrans sends one inner TCP stream paced at rate for secs from
// the client to the server and returns its retransmits.
func iperfPacedRetrans(t *testing.T, tp *topology, rate string, secs int) int {
	t.Helper()
	return iperfRun(t, tp, secs+20, "-b", rate, "-t", strconv.Itoa(secs)).End.SumSent.Retransmits
}
