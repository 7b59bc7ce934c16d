// Package shaping disguises the sizes and timing of a tunnel's writes:
// padding frames drawn from a weighted size profile, a bounded random delay
// for small writes, and padding heartbeats on an idle connection.
//
// Choices (the seed asks for "weighted padding, jitter, heartbeat"; these
// are ours):
//
//   - The unit is a write: one buffer of frames handed to the transport
//     (what an observer sees as TLS records or QUIC packets). With
//     probability Probability a write gets one PADDING frame whose payload
//     size is drawn from the profile. Bulk transfers write many packets per
//     buffer, so padding costs them almost nothing; a lone small packet
//     (a keystroke, a DNS query, a TCP ACK) changes its size.
//   - Jitter delays only small writes (at most SmallWrite bytes), by a
//     uniform random time up to JitterMax: that is interactive traffic,
//     whose timing is what correlation attacks use, while bulk writes are
//     never delayed and keep their throughput.
//   - A heartbeat sends one padding frame after a random idle time between
//     0.5 and 1.5 × Heartbeat, so an idle tunnel is not silent on a
//     schedule a censor could recognise.
//
// A Shaper is used by one goroutine (its random source is not locked);
// each sender and each heartbeat loop has its own.
package shaping

import (
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mirage-vpn/mirage/core/wire"
)

// Bucket is one class of padding sizes: payloads of Min..Max bytes
// (inclusive), chosen with relative Weight.
type Bucket struct {
	Weight, Min, Max int
}

// DefaultProfile is about 60 % 40–100 B, 30 % 250–600 B, 10 % 800–1200 B,
// the three-state mix of real HTTPS record sizes the seed describes.
var DefaultProfile = []Bucket{{60, 40, 100}, {30, 250, 600}, {10, 800, 1200}}

// DefaultProfileString is DefaultProfile in the config syntax.
const DefaultProfileString = "60:40-100,30:250-600,10:800-1200"

// MaxPaddingSize bounds a profile's sizes so a padding frame always fits a
// QUIC datagram (quictun.TunnelMTU is larger).
const MaxPaddingSize = 1300

// SmallWrite is the largest write that jitter may delay.
const SmallWrite = 1500

// ParseProfile reads a profile written as comma-separated buckets
// "weight:min-max" (e.g. DefaultProfileString). Weights are 1–1000, sizes
// 0–MaxPaddingSize with min <= max; at most 16 buckets.
func ParseProfile(s string) ([]Bucket, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("empty padding profile")
	}
	parts := strings.Split(s, ",")
	if len(parts) > 16 {
		return nil, fmt.Errorf("padding profile has %d buckets, at most 16", len(parts))
	}
	out := make([]Bucket, 0, len(parts))
	for i, part := range parts {
		part = strings.TrimSpace(part)
		w, sizes, ok := strings.Cut(part, ":")
		if !ok {
			return nil, fmt.Errorf("padding profile bucket %d %q: want weight:min-max", i+1, part)
		}
		lo, hi, ok := strings.Cut(sizes, "-")
		if !ok {
			return nil, fmt.Errorf("padding profile bucket %d %q: want weight:min-max", i+1, part)
		}
		var b Bucket
		var err error
		if b.Weight, err = atoiIn(w, 1, 1000); err != nil {
			return nil, fmt.Errorf("padding profile bucket %d %q: weight %w", i+1, part, err)
		}
		if b.Min, err = atoiIn(lo, 0, MaxPaddingSize); err != nil {
			return nil, fmt.Errorf("padding profile bucket %d %q: min %w", i+1, part, err)
		}
		if b.Max, err = atoiIn(hi, 0, MaxPaddingSize); err != nil {
			return nil, fmt.Errorf("padding profile bucket %d %q: max %w", i+1, part, err)
		}
		if b.Min > b.Max {
			return nil, fmt.Errorf("padding profile bucket %d %q: min %d is above max %d", i+1, part, b.Min, b.Max)
		}
		out = append(out, b)
	}
	return out, nil
}

func atoiIn(s string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("%d is outside %d-%d", n, lo, hi)
	}
	return n, nil
}

// FormatProfile writes p in the ParseProfile syntax.
func FormatProfile(p []Bucket) string {
	var sb strings.Builder
	for i, b := range p {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, "%d:%d-%d", b.Weight, b.Min, b.Max)
	}
	return sb.String()
}

// Params configure a Shaper.
type Params struct {
	// Probability (0–1) that a write gets a padding frame.
	Probability float64
	// Profile of padding payload sizes; nil: DefaultProfile.
	Profile []Bucket
	// JitterMax bounds the random delay of a small write (0: none).
	JitterMax time.Duration
	// Heartbeat is the mean idle time before a padding heartbeat (0: none).
	Heartbeat time.Duration
}

// Shaper applies Params to one sender's writes. A nil *Shaper shapes
// nothing, so callers need no "enabled" checks on the fast path.
type Shaper struct {
	p     Params
	cum   []int // cumulative weights
	total int
	rng   *rand.Rand
	zeros [MaxPaddingSize]byte
}

// New returns a Shaper for p, seeded from crypto/rand.
func New(p Params) *Shaper {
	var seed [16]byte
	crand.Read(seed[:])
	return NewSeeded(p, binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:]))
}

// NewSeeded is New with a fixed seed (tests).
func NewSeeded(p Params, s1, s2 uint64) *Shaper {
	if p.Profile == nil {
		p.Profile = DefaultProfile
	}
	s := &Shaper{p: p, rng: rand.New(rand.NewPCG(s1, s2))}
	for _, b := range p.Profile {
		s.total += b.Weight
		s.cum = append(s.cum, s.total)
	}
	return s
}

// Clone returns a Shaper with the same parameters and its own random
// source, for another goroutine.
func (s *Shaper) Clone() *Shaper {
	if s == nil {
		return nil
	}
	return New(s.p)
}

// Params returns the parameters.
func (s *Shaper) Params() Params {
	if s == nil {
		return Params{}
	}
	return s.p
}

// PaddingSize draws one padding payload size from the profile.
func (s *Shaper) PaddingSize() int {
	if s.total == 0 {
		return 0
	}
	r := s.rng.IntN(s.total)
	for i, c := range s.cum {
		if r < c {
			b := s.p.Profile[i]
			return b.Min + s.rng.IntN(b.Max-b.Min+1)
		}
	}
	return 0
}

// AppendPadding appends one PADDING frame of a profile size to b.
func (s *Shaper) AppendPadding(b []byte) []byte {
	return wire.AppendFrame(b, wire.TypePadding, s.zeros[:s.PaddingSize()])
}

// Pad appends, with the configured probability, one PADDING frame to the
// write buffer b. It does not allocate when b has room.
func (s *Shaper) Pad(b []byte) []byte {
	if s == nil || s.p.Probability <= 0 || s.rng.Float64() >= s.p.Probability {
		return b
	}
	return s.AppendPadding(b)
}

// Delay is how long to hold a write of n bytes: a uniform random time up
// to JitterMax for a small write, 0 for a bulk one or without jitter.
func (s *Shaper) Delay(n int) time.Duration {
	if s == nil || s.p.JitterMax <= 0 || n > SmallWrite {
		return 0
	}
	return time.Duration(s.rng.Int64N(int64(s.p.JitterMax) + 1))
}

// NextHeartbeat is the idle time before the next heartbeat: uniform in
// 0.5–1.5 × Heartbeat; 0 when heartbeats are off.
func (s *Shaper) NextHeartbeat() time.Duration {
	if s == nil || s.p.Heartbeat <= 0 {
		return 0
	}
	h := int64(s.p.Heartbeat)
	return time.Duration(h/2 + s.rng.Int64N(h+1))
}

// Heartbeats sends padding heartbeats until done is closed: whenever
// nothing was written for a random idle time (NextHeartbeat), it calls
// send with one PADDING frame. last holds the time of the latest write
// (UnixNano), kept by the caller's sender and by this loop. It returns at
// once when heartbeats are off.
func Heartbeats(done <-chan struct{}, s *Shaper, last *atomic.Int64, send func(frame []byte)) {
	if s.NextHeartbeat() == 0 {
		return
	}
	var buf []byte
	idle := s.NextHeartbeat()
	wait := idle
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		now := time.Now()
		since := now.Sub(time.Unix(0, last.Load()))
		if since >= idle {
			buf = s.AppendPadding(buf[:0])
			send(buf)
			last.Store(now.UnixNano())
			idle = s.NextHeartbeat()
			wait = idle
		} else {
			wait = idle - since
		}
		t.Reset(wait)
	}
}

// ChiSquare is Pearson's statistic of observed per-bucket counts against
// the profile's weights (len(counts) == len(profile)); tests use it to check
// padding sizes seen on a connection.
func ChiSquare(counts []int, profile []Bucket) float64 {
	n, total := 0, 0
	for i, c := range counts {
		n += c
		total += profile[i].Weight
	}
	chi := 0.0
	for i, c := range counts {
		e := float64(n) * float64(profile[i].Weight) / float64(total)
		d := float64(c) - e
		chi += d * d / e
	}
	return chi
}

// BucketOf is the index of the first bucket holding size, or -1.
func BucketOf(size int, profile []Bucket) int {
	for i, b := range profile {
		if size >= b.Min && size <= b.Max {
			return i
		}
	}
	return -1
}
