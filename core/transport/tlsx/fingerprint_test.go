package tlsx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"
)

// captureHello dials a loopback listener with Dial and returns the
// ClientHello it sent (the handshake then fails, which is expected).
func captureHello(t *testing.T, serverName string) *ClientHello {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		h   *ClientHello
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var buf []byte
		tmp := make([]byte, 4096)
		for i := 0; i < 64; i++ {
			n, err := c.Read(tmp)
			buf = append(buf, tmp[:n]...)
			h, perr := ParseClientHello(buf)
			if perr == nil {
				got <- result{h: h}
				return
			}
			if !errors.Is(perr, ErrIncomplete) {
				got <- result{err: perr}
				return
			}
			if err != nil {
				got <- result{err: err}
				return
			}
		}
		got <- result{err: errors.New("ClientHello not complete after 64 reads")}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = Dial(ctx, ln.Addr().String(), ClientOptions{ServerName: serverName, Insecure: true})
	r := <-got
	if r.err != nil {
		t.Fatalf("capture ClientHello: %v", r.err)
	}
	return r.h
}

// Known, accepted differences between uTLS's newest Chrome parrot
// (HelloChrome_Auto = Chrome 133 in utls v1.8.2) and the Chromium 156
// capture in testdata. No newer parrot exists in a usable uTLS version
// (GO-STACK.md §5.1); these are what a fingerprinting censor could see:
//
//  1. Extension 0xca34 (TLS Trust Anchor Identifiers, draft-ietf-tls-
//     trust-anchor-ids; Chrome sends ~186 bytes of anchor ids) is missing
//     from the parrot. This also changes JA4's extension count
//     (t13d1516h2 vs t13d1517h2) and JA4_c.
//  2. signature_algorithms: Chrome 156 prepends a GREASE value and the
//     ML-DSA schemes 0x0904, 0x0905, 0x0906 (mldsa44/65/87); the parrot
//     sends only the eight classic schemes, which otherwise match in order.
//  3. Consequently the record is shorter (Chrome: 1950 bytes payload).
//     The GREASE ECH payload length is random per connection in both.
//
// Everything else (cipher suites in order, GREASE placement, groups, key
// shares and their sizes, supported versions, ALPN, ALPS codepoint 0x44cd,
// compression, session id, record/legacy versions, extension shuffling)
// matches and is asserted below.
var (
	knownMissingExtensions = []uint16{0xca34}
	knownMissingSigAlgs    = []uint16{0x0904, 0x0905, 0x0906}
)

func TestClientHelloFingerprint(t *testing.T) {
	f := loadChromeFixture(t)
	fh := f.Hello
	h := captureHello(t, "www.example.com")

	// Record layer and fixed header fields.
	if fh.Record.ContentType != 22 {
		t.Fatalf("fixture record type %d", fh.Record.ContentType)
	}
	if got := fmt.Sprintf("0x%04x", h.RecordVersion); got != fh.Record.Version {
		t.Errorf("record version %s, Chrome %s", got, fh.Record.Version)
	}
	if len(h.RecordLengths) != 1 {
		t.Errorf("hello spans %d records, Chrome sends 1", len(h.RecordLengths))
	}
	if got := fmt.Sprintf("0x%04x", h.LegacyVersion); got != fh.LegacyVersion {
		t.Errorf("legacy version %s, Chrome %s", got, fh.LegacyVersion)
	}
	if len(h.SessionID) != fh.SessionIDLength {
		t.Errorf("session id length %d, Chrome %d", len(h.SessionID), fh.SessionIDLength)
	}
	if fmt.Sprint(h.CompressionMethods) != fmt.Sprint(fh.CompressionMethods) {
		t.Errorf("compression %v, Chrome %v", h.CompressionMethods, fh.CompressionMethods)
	}

	// GREASE where Chrome puts it.
	if !IsGREASE(h.CipherSuites[0]) {
		t.Errorf("first cipher suite %#04x is not GREASE", h.CipherSuites[0])
	}
	if !IsGREASE(h.Extensions[0]) || !IsGREASE(h.Extensions[len(h.Extensions)-1]) {
		t.Errorf("extensions do not start and end with GREASE: %v", normAll(h.Extensions))
	}
	if !IsGREASE(h.SupportedGroups[0]) || !IsGREASE(h.SupportedVersions[0]) || !IsGREASE(h.KeyShares[0].Group) {
		t.Error("groups / versions / key shares do not start with GREASE")
	}

	// Exact matches with the capture.
	eq := func(what string, got, chrome []string) {
		t.Helper()
		if !slices.Equal(got, chrome) {
			t.Errorf("%s differ:\n ours   %v\n chrome %v", what, got, chrome)
		}
	}
	eq("cipher suites", normAll(h.CipherSuites), fh.CipherSuitesNorm)
	eq("supported groups", normAll(h.SupportedGroups), fh.SupportedGroupsNorm)
	eq("supported versions", normAll(h.SupportedVersions), fh.SupportedVersionsNorm)
	eq("key shares (group/length)", normKeyShares(h.KeyShares), fixtureKeyShares(f))
	eq("ALPN", h.ALPN, fh.ALPN)
	eq("ALPN (explicit)", h.ALPN, []string{"h2", "http/1.1"})
	eq("ALPS protocols", h.ALPS, []string{"h2"})
	if h.ServerName != "www.example.com" {
		t.Errorf("SNI %q, want the ServerName www.example.com", h.ServerName)
	}
	var groups []uint16
	for _, k := range h.KeyShares {
		groups = append(groups, k.Group)
	}
	if !slices.Contains(groups, GroupX25519MLKEM768) || !slices.Contains(groups, GroupX25519) {
		t.Errorf("key shares %v lack X25519MLKEM768 or X25519", normKeyShares(h.KeyShares))
	}

	// Extension sets: equal apart from the documented difference.
	ours := extSet(normAll(h.Extensions))
	chrome := extSet(fh.ExtensionsNorm)
	var missing, extra []string
	for e := range chrome {
		if !ours[e] {
			missing = append(missing, e)
		}
	}
	for e := range ours {
		if !chrome[e] {
			extra = append(extra, e)
		}
	}
	slices.Sort(missing)
	if !slices.Equal(missing, normAll(knownMissingExtensions)) || len(extra) != 0 {
		t.Errorf("extension set drifted: missing vs Chrome %v (known: %v), extra %v",
			missing, normAll(knownMissingExtensions), extra)
	}
	if n := countGREASE(h.Extensions); n != 2 {
		t.Errorf("%d GREASE extensions, Chrome sends 2", n)
	}
	// The same set in every hello of the capture (Chrome shuffles the order).
	for i, ah := range f.AllHellos {
		if s := extSet(ah.ExtensionsNorm); !mapsEqual(s, chrome) {
			t.Errorf("fixture hello %d has a different extension set", i)
		}
	}

	// Signature algorithms: Chrome's list minus GREASE and ML-DSA equals ours.
	var chromeClassic []string
	for _, s := range fh.SignatureAlgsNorm {
		if s != "GREASE" && !slices.Contains(normAll(knownMissingSigAlgs), s) {
			chromeClassic = append(chromeClassic, s)
		}
	}
	eq("signature algorithms (classic part)", normAll(h.SignatureAlgorithms), chromeClassic)
	if len(fh.SignatureAlgsNorm) != len(chromeClassic)+1+len(knownMissingSigAlgs) {
		t.Errorf("Chrome's signature algorithms changed beyond the known difference: %v", fh.SignatureAlgsNorm)
	}

	// JA4: the cipher part is identical; a and c differ only as documented.
	a, _, _ := ja4Parts(h)
	ourJA4 := ja4(h)
	chromeJA4 := fh.JA4
	if ourJA4[11:23] != chromeJA4[11:23] {
		t.Errorf("JA4 cipher hash %s, Chrome %s", ourJA4[11:23], chromeJA4[11:23])
	}
	if a != "t13d1516h2" || chromeJA4[:10] != "t13d1517h2" {
		t.Errorf("JA4_a ours %s Chrome %s; expected t13d1516h2 vs t13d1517h2 (missing 0xca34)", a, chromeJA4[:10])
	}
	t.Logf("JA4 ours %s, Chrome 156 %s", ourJA4, chromeJA4)
	t.Logf("record payload ours %d bytes, Chrome 156 %v", h.RecordLengths[0], fh.Record.Lengths)
}

// TestClientHelloRandomised checks what must differ per connection like in
// Chrome: random, session id, and the extension order.
func TestClientHelloRandomised(t *testing.T) {
	h1 := captureHello(t, "a.example")
	h2 := captureHello(t, "b.example")
	if slices.Equal(h1.Random, h2.Random) || slices.Equal(h1.SessionID, h2.SessionID) {
		t.Error("random or session id repeated")
	}
	if h1.ServerName != "a.example" || h2.ServerName != "b.example" {
		t.Errorf("SNI %q %q", h1.ServerName, h2.ServerName)
	}
	if !mapsEqual(extSet(normAll(h1.Extensions)), extSet(normAll(h2.Extensions))) {
		t.Error("extension set differs between connections")
	}
	// With ~16 shuffled extensions two equal orders are practically
	// impossible; equal orders mean the shuffle is gone.
	if slices.Equal(normAll(h1.Extensions), normAll(h2.Extensions)) {
		t.Error("extension order not randomised (Chrome shuffles it)")
	}
}

func extSet(norms []string) map[string]bool {
	m := make(map[string]bool)
	for _, e := range norms {
		m[e] = true
	}
	return m
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func countGREASE(vs []uint16) int {
	n := 0
	for _, v := range vs {
		if IsGREASE(v) {
			n++
		}
	}
	return n
}
