//go:build linux

// Command mirage-linkem emulates a WAN link on a TUN device (see package
// linkem): `make bench-wan` and the WAN end-to-end tests run it in a router
// namespace whose policy routing sends forwarded packets through the TUN.
//
//	mirage-linkem -dev wan0 -up 192.0.2.128/25 -rtt 150ms -loss 1 -rate 100mbit
//
// It writes its counters as JSON to -stats every second and on exit
// (SIGINT/SIGTERM), atomically.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mirage-vpn/mirage/core/config"
	"github.com/mirage-vpn/mirage/platform/internal/linkem"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mirage-linkem:", err)
		os.Exit(1)
	}
}

func run() error {
	dev := flag.String("dev", "wan0", "TUN device to attach to")
	up := flag.String("up", "", "comma-separated prefixes whose destinations take the up link")
	rtt := flag.Duration("rtt", 0, "round-trip propagation delay (half each way)")
	jitter := flag.Duration("jitter", 0, "extra one-way delay, uniform in [0, jitter], order kept")
	loss := flag.Float64("loss", 0, "random loss per direction, percent")
	rate := flag.String("rate", "0", "bottleneck rate per direction, e.g. 100mbit, 1gbit (0: none)")
	queue := flag.Int("queue", 0, "drop-tail queue in bytes (0: one BDP at -rtt)")
	seed := flag.Uint64("seed", uint64(time.Now().UnixNano()), "random seed")
	stats := flag.String("stats", "", "file to write counters to (JSON)")
	flag.Parse()

	bps, err := parseRate(*rate)
	if err != nil {
		return err
	}
	var prefixes []netip.Prefix
	for _, s := range strings.Split(*up, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("-up: %w", err)
		}
		prefixes = append(prefixes, p)
	}
	if len(prefixes) == 0 {
		return fmt.Errorf("-up: at least one prefix is needed")
	}
	p := linkem.Params{Delay: *rtt / 2, Jitter: *jitter, Loss: *loss / 100, RateBps: bps, QueueBytes: *queue}
	upL, err := linkem.NewLink(p, *seed)
	if err != nil {
		return err
	}
	downL, _ := linkem.NewLink(p, *seed+1)
	f, err := linkem.OpenTUN(*dev)
	if err != nil {
		return err
	}
	defer f.Close()

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	e := &linkem.Emulator{UpPrefixes: prefixes, Up: upL, Down: downL}
	if *stats != "" {
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					writeStats(*stats, e)
				}
			}
		}()
	}
	fmt.Fprintf(os.Stderr, "mirage-linkem: %s: rtt %v, jitter %v, loss %.3g %%, rate %d bit/s, queue %d bytes\n",
		*dev, *rtt, *jitter, *loss, bps, p.Queue())
	err = e.Run(ctx, f)
	if *stats != "" {
		writeStats(*stats, e)
	}
	return err
}

// parseRate reads "100mbit", "1gbit", "500kbit" or plain bits per second.
func parseRate(s string) (int64, error) {
	mult := int64(1)
	v := strings.ToLower(strings.TrimSpace(s))
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}} {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSuffix(v, u.suffix), u.m
			break
		}
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("-rate %q: want e.g. 100mbit", s)
	}
	return int64(f * float64(mult)), nil
}

type dirStats struct {
	Packets    uint64 `json:"packets"`
	Bytes      uint64 `json:"bytes"`
	LossDrops  uint64 `json:"loss_drops"`
	QueueDrops uint64 `json:"queue_drops"`
	Delivered  uint64 `json:"delivered"`
	DelivBytes uint64 `json:"delivered_bytes"`
}

func snapshot(l *linkem.Link) dirStats {
	s := &l.Stats
	return dirStats{s.Packets.Load(), s.Bytes.Load(), s.LossDrops.Load(), s.QueueDrops.Load(), s.Delivered.Load(), s.DelivBytes.Load()}
}

func writeStats(path string, e *linkem.Emulator) {
	b, _ := json.Marshal(map[string]dirStats{"up": snapshot(e.Up), "down": snapshot(e.Down)})
	_ = config.WriteFileAtomic(path, append(b, '\n'), 0o644)
}
