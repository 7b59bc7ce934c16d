package tlsx

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// chromeFixture is the part of testdata/chromium-156-clienthello.json (a
// public capture of headless Chromium 156 on Debian 12, decoded with
// tshark) that the tests use.
type chromeFixture struct {
	ClientVersion string   `json:"client_version"`
	JA4Seen       []string `json:"ja4_values_seen"`
	AllHellos     []struct {
		ExtensionsNorm []string `json:"extensions_norm"`
	} `json:"all_hellos"`
	Hello struct {
		Record struct {
			ContentType int    `json:"record_content_type"`
			Version     string `json:"record_version"`
			Lengths     []int  `json:"record_lengths"`
		} `json:"record"`
		LegacyVersion           string          `json:"legacy_version"`
		SessionIDLength         int             `json:"session_id_length"`
		CompressionMethods      []int           `json:"compression_methods"`
		CipherSuitesNorm        []string        `json:"cipher_suites_norm"`
		ExtensionsNorm          []string        `json:"extensions_norm"`
		SNI                     []string        `json:"sni"`
		SupportedGroupsNorm     []string        `json:"supported_groups_norm"`
		SignatureAlgsNorm       []string        `json:"signature_algorithms_norm"`
		ALPN                    []string        `json:"alpn"`
		SupportedVersionsNorm   []string        `json:"supported_versions_norm"`
		KeyShareLengthsNorm     [][]any         `json:"key_share_lengths_norm"`
		ApplicationSettings     json.RawMessage `json:"application_settings"`
		RawClientHelloRecordHex string          `json:"raw_client_hello_record_hex"`
		JA4                     string          `json:"ja4"`
	} `json:"hello"`
}

func loadChromeFixture(t testing.TB) *chromeFixture {
	t.Helper()
	data, err := os.ReadFile("testdata/chromium-156-clienthello.json")
	if err != nil {
		t.Fatal(err)
	}
	var f chromeFixture
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("fixture: %v", err)
	}
	return &f
}

func (f *chromeFixture) raw(t testing.TB) []byte {
	b, err := hex.DecodeString(f.Hello.RawClientHelloRecordHex)
	if err != nil {
		t.Fatalf("fixture raw hex: %v", err)
	}
	return b
}

// norm renders a code point the way the fixture's *_norm lists do.
func norm(v uint16) string {
	if IsGREASE(v) {
		return "GREASE"
	}
	return fmt.Sprintf("0x%04x", v)
}

func normAll(vs []uint16) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = norm(v)
	}
	return out
}

func normKeyShares(ks []KeyShare) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = fmt.Sprintf("%s/%d", norm(k.Group), k.Len)
	}
	return out
}

func fixtureKeyShares(f *chromeFixture) []string {
	var out []string
	for _, pair := range f.Hello.KeyShareLengthsNorm {
		out = append(out, fmt.Sprintf("%v/%v", pair[0], pair[1]))
	}
	return out
}

// TestParseClientHelloChromeCapture checks the parser against tshark's
// decoding of the same bytes.
func TestParseClientHelloChromeCapture(t *testing.T) {
	f := loadChromeFixture(t)
	raw := f.raw(t)
	h, err := ParseClientHello(raw)
	if err != nil {
		t.Fatal(err)
	}
	fh := f.Hello
	check := func(what string, got, want any) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s:\n got  %v\n want %v", what, got, want)
		}
	}
	check("len", h.Len, len(raw))
	check("record version", fmt.Sprintf("0x%04x", h.RecordVersion), fh.Record.Version)
	check("record lengths", h.RecordLengths, fh.Record.Lengths)
	check("legacy version", fmt.Sprintf("0x%04x", h.LegacyVersion), fh.LegacyVersion)
	check("session id length", len(h.SessionID), fh.SessionIDLength)
	check("compression", h.CompressionMethods, fh.CompressionMethods)
	check("cipher suites", normAll(h.CipherSuites), fh.CipherSuitesNorm)
	check("extensions", normAll(h.Extensions), fh.ExtensionsNorm)
	check("sni", []string{h.ServerName}, fh.SNI)
	check("groups", normAll(h.SupportedGroups), fh.SupportedGroupsNorm)
	check("sigalgs", normAll(h.SignatureAlgorithms), fh.SignatureAlgsNorm)
	check("alpn", h.ALPN, fh.ALPN)
	check("versions", normAll(h.SupportedVersions), fh.SupportedVersionsNorm)
	check("key shares", normKeyShares(h.KeyShares), fixtureKeyShares(f))
	for _, k := range h.KeyShares {
		if len(k.Data) != k.Len || !bytes.Contains(h.Raw, k.Data) {
			t.Errorf("key share %#04x: Data (%d bytes) is not the %d-byte key exchange from the hello", k.Group, len(k.Data), k.Len)
		}
	}
	check("alps", h.ALPS, []string{"h2"})
	check("ja4", ja4(h), fh.JA4)
}

func TestParseClientHelloFragmented(t *testing.T) {
	raw := loadChromeFixture(t).raw(t)
	whole, err := ParseClientHello(raw)
	if err != nil {
		t.Fatal(err)
	}
	// Split the handshake message over three records, as a middlebox may.
	msg := raw[5:]
	cuts := []int{0, 3, 700, len(msg)}
	var frag []byte
	for i := 0; i+1 < len(cuts); i++ {
		part := msg[cuts[i]:cuts[i+1]]
		frag = append(frag, 22, 3, 1, byte(len(part)>>8), byte(len(part)))
		frag = append(frag, part...)
	}
	frag = append(frag, 23, 3, 3, 0, 1, 0) // following data is not consumed
	h, err := ParseClientHello(frag)
	if err != nil {
		t.Fatal(err)
	}
	if h.Len != len(frag)-6 || len(h.RecordLengths) != 3 {
		t.Errorf("Len %d records %v", h.Len, h.RecordLengths)
	}
	if !slices.Equal(h.Extensions, whole.Extensions) || h.ServerName != whole.ServerName || !slices.Equal(h.Raw, whole.Raw) {
		t.Error("fragmented hello parsed differently")
	}
	// Every strict prefix is incomplete, never an error of another kind.
	for n := 0; n < h.Len; n += 97 {
		if _, err := ParseClientHello(frag[:n]); !errors.Is(err, ErrIncomplete) {
			t.Fatalf("prefix %d: err = %v, want ErrIncomplete", n, err)
		}
	}
}

func TestParseClientHelloRejects(t *testing.T) {
	raw := loadChromeFixture(t).raw(t)
	mut := func(f func(b []byte) []byte) []byte { return f(slices.Clone(raw)) }
	cases := map[string]struct {
		in   []byte
		want string
	}{
		"http":            {[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "record type 71"},
		"ssl2 version":    {mut(func(b []byte) []byte { b[1] = 2; return b }), "not TLS"},
		"server hello":    {mut(func(b []byte) []byte { b[5] = 2; return b }), "want ClientHello"},
		"zero record":     {[]byte{22, 3, 1, 0, 0}, "out of range"},
		"huge record":     {[]byte{22, 3, 1, 0xff, 0xff}, "out of range"},
		"bad ext length":  {mut(func(b []byte) []byte { b[len(b)-3] = 0x40; return b }), "malformed"},
		"trailing in rec": {[]byte{22, 3, 1, 0, 6, 1, 0, 0, 1, 0, 0}, "trailing data"},
	}
	for name, c := range cases {
		_, err := ParseClientHello(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
}

func TestIsGREASE(t *testing.T) {
	n := 0
	for v := 0; v <= 0xffff; v++ {
		if IsGREASE(uint16(v)) {
			n++
			if v>>8 != v&0xff || v&0x0f != 0x0a {
				t.Errorf("%#04x classified as GREASE", v)
			}
		}
	}
	if n != 16 || !IsGREASE(0x1a1a) || !IsGREASE(0xfafa) || IsGREASE(0x1a2a) || IsGREASE(0x11ec) {
		t.Errorf("GREASE classification wrong (%d values)", n)
	}
}

func FuzzParseClientHello(f *testing.F) {
	fx := loadChromeFixture(f)
	raw := fx.raw(f)
	f.Add(raw)
	f.Add(raw[:100])
	f.Add([]byte{22, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseClientHello(data)
		if err != nil {
			if h != nil {
				t.Fatal("non-nil hello with error")
			}
			return
		}
		if h.Len > len(data) || h.Len < 9 {
			t.Fatalf("Len %d out of range for %d bytes", h.Len, len(data))
		}
		// Parsing exactly the consumed bytes gives the same result.
		h2, err := ParseClientHello(data[:h.Len])
		if err != nil || h2.ServerName != h.ServerName || !slices.Equal(h2.Extensions, h.Extensions) {
			t.Fatalf("reparse of consumed bytes differs: %v", err)
		}
	})
}
