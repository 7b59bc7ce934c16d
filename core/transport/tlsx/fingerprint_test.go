package tlsx

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	utls "github.com/refraction-networking/utls"
	"golang.org/x/crypto/cryptobyte"
)

// knownDifferences lists the fields (as named by compareHellos) in which
// our ClientHello is allowed to differ from the Chromium 156 capture, each
// with its reason. TestClientHelloFingerprint fails on any other
// difference, and on an entry here that no longer differs. Keep
// docs/fingerprint.md in sync.
//
// Empty: with the hand-built spec in chrome.go every field the capture
// shows matches (GREASE values, random, session id, key shares, the ECH
// GREASE payload and the extension order are random on both sides and
// compared only in shape). Differences beyond the ClientHello are listed
// in docs/fingerprint.md.
var knownDifferences = map[string]string{}

// fixtureSNI is the server name in the capture. Our hello is captured with
// the same name so the SNI extension and the lengths compare exactly.
const fixtureSNI = "www.example.com"

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

// builtHello builds (without sending) the ClientHello of u and parses it.
// The record header is the one uTLS writes for a first flight.
func builtHello(t *testing.T, u *utls.UConn) *helloView {
	t.Helper()
	if err := u.BuildHandshakeState(); err != nil {
		t.Fatalf("BuildHandshakeState: %v", err)
	}
	msg := u.HandshakeState.Hello.Raw
	rec := append([]byte{22, 3, 1, byte(len(msg) >> 8), byte(len(msg))}, msg...)
	v, err := newHelloView(rec)
	if err != nil {
		t.Fatalf("parse built hello: %v", err)
	}
	return v
}

// newPipeClient returns NewChromeClient over one end of a pipe (nothing is
// ever written to it).
func newPipeClient(t *testing.T, serverName string) *utls.UConn {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return NewChromeClient(a, &utls.Config{ServerName: serverName})
}

// chromeFixtureMore is the part of the fixture the fingerprint comparison
// needs beyond chromeFixture.
type chromeFixtureMore struct {
	AllHellos []struct {
		JA4    string `json:"ja4"`
		JA3N   string `json:"ja3n"`
		Record struct {
			Lengths         []int `json:"record_lengths"`
			ECHExtLength    int   `json:"ech_extension_length"`
			LengthExclECH   int   `json:"record_length_excl_ech"`
			RecordCount     int   `json:"record_count"`
			HandshakeLength int   `json:"handshake_length"`
		} `json:"record"`
		PreSharedKey bool `json:"pre_shared_key"`
	} `json:"all_hellos"`
	Hello struct {
		JA4R     string `json:"ja4_r"`
		JA3NFull string `json:"ja3n_full"`
		JA3Full  string `json:"ja3_full"`
	} `json:"hello"`
}

func loadChromeFixtureMore(t *testing.T) *chromeFixtureMore {
	t.Helper()
	data, err := os.ReadFile("testdata/chromium-156-clienthello.json")
	if err != nil {
		t.Fatal(err)
	}
	var f chromeFixtureMore
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("fixture: %v", err)
	}
	if len(f.AllHellos) == 0 {
		t.Fatal("fixture has no all_hellos")
	}
	return &f
}

// rawExt is one extension as sent: type and body.
type rawExt struct {
	typ  uint16
	body []byte
}

// helloView is a parsed ClientHello plus its extensions' raw bodies.
type helloView struct {
	h    *ClientHello
	exts []rawExt // wire order
	// echLengths are the ECH extension body lengths to accept (Chrome
	// picks one of a few at random); set for the Chrome side only.
	echLengths []int
}

func newHelloView(record []byte) (*helloView, error) {
	h, err := ParseClientHello(record)
	if err != nil {
		return nil, err
	}
	s := cryptobyte.String(h.Raw[4:])
	var sid, suites, comp, exts cryptobyte.String
	if !s.Skip(2+32) || !s.ReadUint8LengthPrefixed(&sid) || !s.ReadUint16LengthPrefixed(&suites) ||
		!s.ReadUint8LengthPrefixed(&comp) || !s.ReadUint16LengthPrefixed(&exts) {
		return nil, errors.New("malformed hello")
	}
	v := &helloView{h: h}
	for !exts.Empty() {
		var typ uint16
		var body cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&body) {
			return nil, errors.New("malformed extension")
		}
		v.exts = append(v.exts, rawExt{typ, []byte(body)})
	}
	return v, nil
}

func (v *helloView) ext(typ uint16) ([]byte, bool) {
	for _, e := range v.exts {
		if e.typ == typ {
			return e.body, true
		}
	}
	return nil, false
}

// extSetNorm is the sorted set of extension types with GREASE types
// counted ("GREASE x2").
func (v *helloView) extSetNorm() []string {
	var out []string
	n := 0
	for _, e := range v.exts {
		if IsGREASE(e.typ) {
			n++
			continue
		}
		out = append(out, norm(e.typ))
	}
	sort.Strings(out)
	return append(out, fmt.Sprintf("GREASE x%d", n))
}

func (v *helloView) pointFormats() []byte {
	b, _ := v.ext(0x000b)
	if len(b) < 1 {
		return nil
	}
	return b[1:]
}

// difference is one field in which two hellos differ.
type difference struct {
	field, ours, chrome string
}

// Extension names, for readable field names.
var extNames = map[uint16]string{
	0x0000: "server_name", 0x0005: "status_request", 0x000a: "supported_groups",
	0x000b: "ec_point_formats", 0x000d: "signature_algorithms", 0x0010: "alpn",
	0x0012: "signed_certificate_timestamp", 0x0015: "padding", 0x0017: "extended_master_secret",
	0x001b: "compress_certificate", 0x0023: "session_ticket", 0x0029: "pre_shared_key",
	0x002a: "early_data", 0x002b: "supported_versions", 0x002d: "psk_key_exchange_modes",
	0x0033: "key_share", 0x4469: "application_settings_old", 0x44cd: "application_settings",
	0xca34: "trust_anchors", 0xfe0d: "encrypted_client_hello", 0xff01: "renegotiation_info",
}

func extField(typ uint16) string {
	return fmt.Sprintf("ext %s %s", norm(typ), extNames[typ])
}

// compareHellos compares ours with Chrome's field by field. GREASE values
// are normalised, extension order is ignored (both sides shuffle), and the
// random parts (random, session id, key share data, ECH GREASE content)
// are compared only in shape.
func compareHellos(ours, chrome *helloView) []difference {
	var diffs []difference
	cmp := func(field string, o, c any) {
		os, cs := fmt.Sprint(o), fmt.Sprint(c)
		if os != cs {
			diffs = append(diffs, difference{field, os, cs})
		}
	}
	oh, ch := ours.h, chrome.h

	cmp("record version", fmt.Sprintf("0x%04x", oh.RecordVersion), fmt.Sprintf("0x%04x", ch.RecordVersion))
	cmp("record count", len(oh.RecordLengths), len(ch.RecordLengths))
	cmp("legacy version", fmt.Sprintf("0x%04x", oh.LegacyVersion), fmt.Sprintf("0x%04x", ch.LegacyVersion))
	cmp("session id length", len(oh.SessionID), len(ch.SessionID))
	cmp("cipher suites", normAll(oh.CipherSuites), normAll(ch.CipherSuites))
	cmp("compression methods", oh.CompressionMethods, ch.CompressionMethods)
	cmp("extension set", ours.extSetNorm(), chrome.extSetNorm())

	// GREASE extensions: first and last, empty then one zero byte.
	greaseShape := func(v *helloView) string {
		var parts []string
		for i, e := range v.exts {
			if !IsGREASE(e.typ) {
				continue
			}
			pos := fmt.Sprintf("position %d", i)
			switch i {
			case 0:
				pos = "first"
			case len(v.exts) - 1:
				pos = "last"
			}
			parts = append(parts, fmt.Sprintf("%s body %x", pos, e.body))
		}
		return strings.Join(parts, "; ")
	}
	cmp("GREASE extensions", greaseShape(ours), greaseShape(chrome))
	// BoringSSL relations between GREASE values: key share and groups use
	// the same value, the two GREASE extensions differ.
	greaseRel := func(v *helloView) string {
		var g []uint16
		for _, e := range v.exts {
			if IsGREASE(e.typ) {
				g = append(g, e.typ)
			}
		}
		sameGroup := len(v.h.KeyShares) > 0 && len(v.h.SupportedGroups) > 0 &&
			v.h.KeyShares[0].Group == v.h.SupportedGroups[0]
		return fmt.Sprintf("keyshare=groups:%v extensions distinct:%v", sameGroup, len(g) == 2 && g[0] != g[1])
	}
	cmp("GREASE relations", greaseRel(ours), greaseRel(chrome))

	// Each extension's content.
	types := map[uint16]bool{}
	for _, v := range []*helloView{ours, chrome} {
		for _, e := range v.exts {
			if !IsGREASE(e.typ) {
				types[e.typ] = true
			}
		}
	}
	sorted := make([]uint16, 0, len(types))
	for typ := range types {
		sorted = append(sorted, typ)
	}
	slices.Sort(sorted)
	for _, typ := range sorted {
		ob, oOK := ours.ext(typ)
		cb, cOK := chrome.ext(typ)
		if !oOK || !cOK {
			cmp(extField(typ), presence(oOK), presence(cOK))
			continue
		}
		switch typ {
		case ExtSupportedGroups:
			cmp(extField(typ), normAll(oh.SupportedGroups), normAll(ch.SupportedGroups))
		case ExtSignatureAlgorithms:
			cmp(extField(typ), normAll(oh.SignatureAlgorithms), normAll(ch.SignatureAlgorithms))
		case ExtSupportedVersions:
			cmp(extField(typ), normAll(oh.SupportedVersions), normAll(ch.SupportedVersions))
		case ExtKeyShare:
			cmp(extField(typ), normKeyShares(oh.KeyShares), normKeyShares(ch.KeyShares))
		case 0xfe0d:
			cmp(extField(typ), echShape(ob), echShape(cb))
			if !slices.Contains(chrome.echLengths, len(ob)) {
				cmp("ECH GREASE length", len(ob), fmt.Sprintf("one of %v", chrome.echLengths))
			}
		default: // deterministic: byte for byte
			cmp(extField(typ), hex.EncodeToString(ob), hex.EncodeToString(cb))
		}
	}

	// Size: everything but the random-length ECH GREASE must match; with
	// the same SNI the hello has the same length as Chrome's.
	exclECH := func(v *helloView) int {
		b, _ := v.ext(0xfe0d)
		return v.h.RecordLengths[0] - 4 - len(b)
	}
	cmp("record length excl. ECH", exclECH(ours), exclECH(chrome))

	cmp("JA4", ja4(oh), ja4(ch))
	oa, ob, oc := ja4Parts(oh)
	ca, cb, cc := ja4Parts(ch)
	cmp("JA4_r", oa+"_"+ob+"_"+oc, ca+"_"+cb+"_"+cc)
	cmp("JA3N", ja3String(oh, ours.pointFormats(), true), ja3String(ch, chrome.pointFormats(), true))
	return diffs
}

func presence(ok bool) string {
	if ok {
		return "present"
	}
	return "absent"
}

// echShape renders an ECH extension without its random parts: type, KDF,
// AEAD, enc length (config id, enc and payload are random).
func echShape(b []byte) string {
	s := cryptobyte.String(b)
	var typ uint8
	var kdf, aead uint16
	var cfgID uint8
	var enc, payload cryptobyte.String
	if !s.ReadUint8(&typ) || !s.ReadUint16(&kdf) || !s.ReadUint16(&aead) || !s.ReadUint8(&cfgID) ||
		!s.ReadUint16LengthPrefixed(&enc) || !s.ReadUint16LengthPrefixed(&payload) || !s.Empty() {
		return "malformed " + hex.EncodeToString(b)
	}
	return fmt.Sprintf("type %d kdf %d aead %d enc %d", typ, kdf, aead, len(enc))
}

// chromeView returns the fixture's hello with the ECH lengths Chrome used
// over all its captured hellos.
func chromeView(t *testing.T) *helloView {
	t.Helper()
	f := loadChromeFixture(t)
	more := loadChromeFixtureMore(t)
	v, err := newHelloView(f.raw(t))
	if err != nil {
		t.Fatalf("parse fixture: %v", err)
	}
	for _, h := range more.AllHellos {
		if !slices.Contains(v.echLengths, h.Record.ECHExtLength) {
			v.echLengths = append(v.echLengths, h.Record.ECHExtLength)
		}
	}
	slices.Sort(v.echLengths)
	return v
}

// TestFingerprintFixtureConsistent checks the comparison's inputs: our
// parser and JA3/JA4 code agree with the fixture's own decoding, and the
// ten captured hellos agree on everything but order and ECH length.
func TestFingerprintFixtureConsistent(t *testing.T) {
	f := loadChromeFixture(t)
	more := loadChromeFixtureMore(t)
	c := chromeView(t)
	if d := compareHellos(c, c); len(d) != 0 {
		t.Errorf("fixture differs from itself: %v", d)
	}
	if got := ja4(c.h); got != f.Hello.JA4 {
		t.Errorf("JA4 of fixture %s, recorded %s", got, f.Hello.JA4)
	}
	a, b, cc := ja4Parts(c.h)
	if got := a + "_" + b + "_" + cc; got != more.Hello.JA4R {
		t.Errorf("JA4_r of fixture\n %s\nrecorded\n %s", got, more.Hello.JA4R)
	}
	if got := ja3String(c.h, c.pointFormats(), true); got != more.Hello.JA3NFull {
		t.Errorf("JA3N of fixture\n %s\nrecorded\n %s", got, more.Hello.JA3NFull)
	}
	if got := ja3String(c.h, c.pointFormats(), false); got != more.Hello.JA3Full {
		t.Errorf("JA3 of fixture\n %s\nrecorded\n %s", got, more.Hello.JA3Full)
	}
	echBody, _ := c.ext(0xfe0d)
	exclECH := c.h.RecordLengths[0] - 4 - len(echBody)
	for i, h := range more.AllHellos {
		if h.JA4 != f.Hello.JA4 || h.PreSharedKey || h.Record.RecordCount != 1 ||
			h.Record.LengthExclECH != exclECH || h.Record.Lengths[0] != exclECH+4+h.Record.ECHExtLength {
			t.Errorf("fixture hello %d: JA4 %s psk %v records %d length %v excl. ECH %d, want %s/false/1/%d",
				i, h.JA4, h.PreSharedKey, h.Record.RecordCount, h.Record.Lengths, h.Record.LengthExclECH, f.Hello.JA4, exclECH)
		}
		if got := extSet(f.AllHellos[i].ExtensionsNorm); !mapsEqual(got, extSet(normAll(c.h.Extensions))) {
			t.Errorf("fixture hello %d has another extension set: %v", i, f.AllHellos[i].ExtensionsNorm)
		}
	}
	if !slices.Equal(c.echLengths, []int{186, 218, 250, 282}) {
		t.Errorf("Chrome's ECH GREASE lengths %v", c.echLengths)
	}
}

// TestClientHelloFingerprint compares the hello Dial sends with the
// Chromium 156 capture, field by field. Any difference not listed in
// knownDifferences fails.
func TestClientHelloFingerprint(t *testing.T) {
	chrome := chromeView(t)
	f := loadChromeFixture(t)
	// Several hellos: the random parts (ECH length, order, GREASE) vary.
	for i := range 4 {
		h := captureHello(t, fixtureSNI)
		ours, err := newHelloView(append(recordHeader(h), h.Raw...))
		if err != nil {
			t.Fatal(err)
		}
		if len(h.RecordLengths) != 1 {
			t.Fatalf("hello spans %d records", len(h.RecordLengths))
		}
		seen := map[string]bool{}
		for _, d := range compareHellos(ours, chrome) {
			seen[d.field] = true
			if reason, ok := knownDifferences[d.field]; ok {
				if i == 0 {
					t.Logf("known difference %s (%s):\n ours   %s\n chrome %s", d.field, reason, d.ours, d.chrome)
				}
				continue
			}
			t.Errorf("hello %d: %s differs:\n ours   %s\n chrome %s", i, d.field, d.ours, d.chrome)
		}
		for field := range knownDifferences {
			if !seen[field] {
				t.Errorf("known difference %q no longer occurs: remove it here and in docs/fingerprint.md", field)
			}
		}
		if i == 0 {
			t.Logf("JA4 ours %s, Chrome 156 %s", ja4(h), f.Hello.JA4)
			t.Logf("record payload ours %d bytes, Chrome 156 %v", h.RecordLengths[0], f.Hello.Record.Lengths)
		}
	}
}

// recordHeader rebuilds the single record header of a captured hello.
func recordHeader(h *ClientHello) []byte {
	return []byte{22, byte(h.RecordVersion >> 8), byte(h.RecordVersion), byte(len(h.Raw) >> 8), byte(len(h.Raw))}
}

// TestFingerprintDetectsParrot checks that the comparison is not blind: the
// plain uTLS Chrome 133 parrot (our previous hello) must show exactly the
// differences it is known to have.
func TestFingerprintDetectsParrot(t *testing.T) {
	chrome := chromeView(t)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	parrot := builtHello(t, utls.UClient(a, &utls.Config{ServerName: fixtureSNI}, utls.HelloChrome_133))
	var fields []string
	for _, d := range compareHellos(parrot, chrome) {
		fields = append(fields, d.field)
	}
	want := []string{
		"extension set", "ext 0x000d signature_algorithms", "ext 0xca34 trust_anchors",
		"record length excl. ECH", "JA4", "JA4_r", "JA3N",
	}
	if !slices.Equal(fields, want) {
		t.Errorf("parrot differences %v, want %v", fields, want)
	}
}

// TestClientHelloRandomised checks what must differ per connection like in
// Chrome: random, session id, GREASE values, ECH length and the extension
// order; and that nothing else does.
func TestClientHelloRandomised(t *testing.T) {
	h1 := captureHello(t, "a.example")
	h2 := captureHello(t, "b.example")
	if slices.Equal(h1.Random, h2.Random) || slices.Equal(h1.SessionID, h2.SessionID) {
		t.Error("random or session id repeated")
	}
	if h1.ServerName != "a.example" || h2.ServerName != "b.example" {
		t.Errorf("SNI %q %q", h1.ServerName, h2.ServerName)
	}

	const n = 24
	orders := map[string]bool{}
	sigGREASE := map[uint16]bool{}
	cipherGREASE := map[uint16]bool{}
	echLens := map[int]bool{}
	var first *helloView
	for range n {
		v := builtHello(t, newPipeClient(t, fixtureSNI))
		orders[strings.Join(normAll(v.h.Extensions), ",")] = true
		sigGREASE[v.h.SignatureAlgorithms[0]] = true
		cipherGREASE[v.h.CipherSuites[0]] = true
		body, _ := v.ext(0xfe0d)
		echLens[len(body)] = true
		if first == nil {
			// Same fingerprint every time; the ECH length only needs to
			// be one of those Chrome uses.
			first = v
			first.echLengths = []int{186, 218, 250, 282}
			continue
		}
		for _, d := range compareHellos(v, first) {
			t.Errorf("hello differs from the first in %s: %s vs %s", d.field, d.ours, d.chrome)
		}
	}
	// With 16 shuffled extensions, repeated orders mean the shuffle is gone.
	if len(orders) < n-1 {
		t.Errorf("only %d distinct extension orders in %d hellos", len(orders), n)
	}
	// 16 possible values each: all equal in 24 draws means no randomness.
	if len(sigGREASE) < 2 || len(cipherGREASE) < 2 {
		t.Errorf("GREASE not randomised: signature algorithms %v, cipher suites %v", sigGREASE, cipherGREASE)
	}
	if len(echLens) < 2 {
		t.Errorf("ECH GREASE length not randomised: %v", echLens)
	}
}

// TestChromeClientKeyShares checks what the REALITY transport relies on: a
// separate X25519 key share whose private key is exposed after
// BuildHandshakeState and matches the public key in the hello.
func TestChromeClientKeyShares(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	// The config the REALITY client uses (GO-STACK.md §5.3).
	u := NewChromeClient(a, &utls.Config{ServerName: fixtureSNI, InsecureSkipVerify: true, SessionTicketsDisabled: true})
	v := builtHello(t, u) // calls BuildHandshakeState
	if d := compareHellos(v, chromeView(t)); len(d) != 0 {
		t.Errorf("hello with the REALITY config differs from Chrome's: %v", d)
	}
	keys := u.HandshakeState.State13.KeyShareKeys
	if keys == nil || keys.Ecdhe == nil {
		t.Fatal("no X25519 private key after BuildHandshakeState")
	}
	if keys.Mlkem == nil || keys.MlkemEcdhe == nil {
		t.Error("no X25519MLKEM768 keys")
	}
	if keys.MlkemEcdhe == keys.Ecdhe {
		t.Error("hybrid and plain X25519 share one key")
	}
	var x25519 []byte
	for _, e := range u.Extensions {
		if ks, ok := e.(*utls.KeyShareExtension); ok {
			for _, k := range ks.KeyShares {
				if k.Group == utls.X25519 {
					x25519 = k.Data
				}
			}
		}
	}
	if pub := keys.Ecdhe.PublicKey().Bytes(); len(x25519) != 32 || string(pub) != string(x25519) {
		t.Errorf("X25519 key share %x does not match the private key's public %x", x25519, pub)
	}
}

// TestChromeSpecPerConnection checks that two connections share no
// extension objects and no key material.
func TestChromeSpecPerConnection(t *testing.T) {
	u1, u2 := newPipeClient(t, "a.example"), newPipeClient(t, "b.example")
	for _, u := range []*utls.UConn{u1, u2} {
		if err := u.BuildHandshakeState(); err != nil {
			t.Fatal(err)
		}
	}
	for _, e1 := range u1.Extensions {
		// Stateless (zero-size) extensions may share an address.
		if reflect.TypeOf(e1).Kind() == reflect.Pointer && reflect.TypeOf(e1).Elem().Size() == 0 {
			continue
		}
		for _, e2 := range u2.Extensions {
			if e1 == e2 {
				t.Errorf("extension %T shared between connections", e1)
			}
		}
	}
	if u1.HandshakeState.State13.KeyShareKeys.Ecdhe.Equal(u2.HandshakeState.State13.KeyShareKeys.Ecdhe) {
		t.Error("X25519 key reused between connections")
	}
	if u1.HandshakeState.Hello.ServerName != "a.example" || u2.HandshakeState.Hello.ServerName != "b.example" {
		t.Error("server names mixed up")
	}
}

// countingConn records whether anything was written.
type countingConn struct {
	net.Conn
	written int
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.written += len(b)
	return c.Conn.Write(b)
}

// TestChromeClientBadConfig checks that a config the hello cannot be built
// from fails the handshake with a clear error and sends nothing.
func TestChromeClientBadConfig(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cc := &countingConn{Conn: a}
	// Neither ServerName nor InsecureSkipVerify: uTLS refuses.
	u := NewChromeClient(cc, &utls.Config{})
	_ = a.SetDeadline(time.Now().Add(2 * time.Second))
	err := u.Handshake()
	if err == nil {
		t.Fatal("handshake succeeded without a server name")
	}
	if !strings.Contains(err.Error(), "ServerName") {
		t.Errorf("error %q does not name the missing ServerName", err)
	}
	if cc.written != 0 {
		t.Errorf("%d bytes sent despite the error", cc.written)
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
