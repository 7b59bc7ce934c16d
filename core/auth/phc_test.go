package auth

import (
	"bytes"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
)

// Known answers from independent implementations:
//   - ref*: the test vectors of the Argon2 reference implementation
//     (phc-winner-argon2 src/test.c), password "password", salt "somesalt".
//   - cli*: made for this test with Debian's argon2 CLI (the reference C
//     implementation, 0~20171227), e.g.
//     printf 'correct horse battery staple' | argon2 mirage-test-salt -id -t 2 -k 19456 -p 1 -l 32 -e
//     The first is exactly what the Rust argon2 crate's defaults produce in
//     shape: m=19456,t=2,p=1, 16-byte salt (22 chars), 32-byte hash (43 chars).
var knownAnswers = []struct {
	name, phc, password string
}{
	{"cli argon2id rust defaults", "$argon2id$v=19$m=19456,t=2,p=1$bWlyYWdlLXRlc3Qtc2FsdA$xh6xWlUDV51lA6RLJjUmH6SiLqdKQGgSNmA28oTwecQ", "correct horse battery staple"},
	{"cli argon2i", "$argon2i$v=19$m=19456,t=2,p=1$bWlyYWdlLXRlc3Qtc2FsdA$YtZ1UtQAv0CFTK5yGNkyWiSk7sLqyHI7g7KSSMuYOVw", "correct horse battery staple"},
	{"cli argon2id p=4 16-byte output utf8", "$argon2id$v=19$m=4096,t=3,p=4$c2l4dGVlbi1ieXRlLXNsdA$hs1WBdpnwtRICAcAn9zFQA", "pässwörd"},
	{"ref argon2id m=256 p=2", "$argon2id$v=19$m=256,t=2,p=2$c29tZXNhbHQ$bQk8UB/VmZZF4Oo79iDXuL5/0ttZwg2f/5U52iv1cDc", "password"},
	{"ref argon2id m=65536", "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc", "password"},
	{"ref argon2id other password", "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$C4TWUs9rDEvq7w3+J4umqA32aWKB1+DSiRuBfYxFj94", "differentpassword"},
	{"ref argon2i m=256 p=2", "$argon2i$v=19$m=256,t=2,p=2$c29tZXNhbHQ$T/XOJ2mh1/TIpJHfCdQan76Q5esCFVoT5MAeIM1Oq2E", "password"},
}

func TestKnownAnswers(t *testing.T) {
	for _, tc := range knownAnswers {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := VerifyPHC(tc.phc, tc.password)
			if err != nil || !ok {
				t.Fatalf("VerifyPHC(right password) = %v, %v; want true, nil", ok, err)
			}
			ok, err = VerifyPHC(tc.phc, tc.password+"x")
			if err != nil || ok {
				t.Fatalf("VerifyPHC(wrong password) = %v, %v; want false, nil", ok, err)
			}
			h, err := parsePHC(tc.phc)
			if err != nil {
				t.Fatal(err)
			}
			if got := h.String(); got != tc.phc {
				t.Errorf("format round trip:\n got %s\nwant %s", got, tc.phc)
			}
		})
	}
}

// TestRawKnownAnswer pins x/crypto's raw output for the reference vector, in
// hex as printed by the reference implementation.
func TestRawKnownAnswer(t *testing.T) {
	got := argon2.IDKey([]byte("password"), []byte("somesalt"), 2, 65536, 1, 32)
	want, _ := hex.DecodeString("09316115d5cf24ed5a15a31a3ba326e5cf32edc24702987c02b6566f61913cf7")
	if !bytes.Equal(got, want) {
		t.Fatalf("IDKey = %x, want %x", got, want)
	}
}

var rustShape = regexp.MustCompile(`^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)

func TestHashPassword(t *testing.T) {
	a, err := HashPassword("hunter2")
	if err != nil {
		t.Fatal(err)
	}
	if !rustShape.MatchString(a) {
		t.Fatalf("HashPassword = %q, not in the Rust argon2 crate's format", a)
	}
	b, _ := HashPassword("hunter2")
	if a == b {
		t.Fatal("two hashes of the same password are equal: salt not random")
	}
	for _, phc := range []string{a, b} {
		if ok, err := VerifyPHC(phc, "hunter2"); !ok || err != nil {
			t.Fatalf("VerifyPHC(own hash) = %v, %v", ok, err)
		}
		if ok, _ := VerifyPHC(phc, "hunter3"); ok {
			t.Fatal("wrong password verified")
		}
	}
	if _, err := HashPassword(""); err == nil {
		t.Error("HashPassword(\"\") succeeded")
	}
	if _, err := HashPassword(strings.Repeat("x", MaxPasswordLen+1)); err == nil {
		t.Error("HashPassword(too long) succeeded")
	}
}

// TestHashRegression guards against accidental changes in the hash: a PHC
// string made with this package once and checked in (the argon2 CLI gives the
// same for: printf regression | argon2 0123456789abcdef -id -t 1 -k 64 -p 1 -l 32 -e).
func TestHashRegression(t *testing.T) {
	h := &phcHash{alg: algArgon2id, memory: 64, time: 1, par: 1, salt: []byte("0123456789abcdef")}
	h.hash = make([]byte, 32)
	h.hash = h.derive([]byte("regression"))
	const want = "$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$uaOnIjWG2Ut/Yv28soEB6f+ptzD1uHUpdEkMB3aAVH4"
	if got := h.String(); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestParsePHCErrors(t *testing.T) {
	const salt, hash = "c29tZXNhbHQ", "bQk8UB/VmZZF4Oo79iDXuL5/0ttZwg2f/5U52iv1cDc"
	cases := []struct{ phc, want string }{
		{"", `must start with "$"`},
		{"argon2id$v=19$m=256,t=2,p=2$" + salt + "$" + hash, `must start with "$"`},
		{"$argon2d$v=19$m=19456,t=2,p=1$bWlyYWdlLXRlc3Qtc2FsdA$ccQucFnXCYEmjiGl7t/hOoLWY5Ffs3u9reb/EXj7NOQ", "argon2d is not supported"},
		{"$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E", "unsupported algorithm"},
		{"$argon2id$m=256,t=2,p=2$" + salt + "$" + hash, "missing version"},
		{"$argon2id$v=16$m=256,t=2,p=2$" + salt + "$" + hash, "unsupported Argon2 version 16"},
		{"$argon2id$v=19$m=256,t=2,p=2$" + salt, "want 5"},
		{"$argon2id$v=19$m=256,t=2,p=2$" + salt + "$" + hash + "$", "want 5"},
		{"$argon2id$v=19$m=256,t=2$" + salt + "$" + hash, `missing parameter "p"`},
		{"$argon2id$v=19$m=256,t=2,p=2,m=256$" + salt + "$" + hash, "duplicate parameter"},
		{"$argon2id$v=19$m=256,t=2,p=2,keyid=AAAA$" + salt + "$" + hash, "not supported"},
		{"$argon2id$v=19$m=256,t=2,p=2,x=1$" + salt + "$" + hash, "unknown parameter"},
		{"$argon2id$v=19$m=-1,t=2,p=2$" + salt + "$" + hash, "bad number"},
		{"$argon2id$v=19$m=99999999999,t=2,p=2$" + salt + "$" + hash, "bad number"},
		{"$argon2id$v=19$m=256,t=0,p=2$" + salt + "$" + hash, "time cost t=0"},
		{"$argon2id$v=19$m=256,t=2,p=0$" + salt + "$" + hash, "parallelism p=0"},
		{"$argon2id$v=19$m=256,t=2,p=256$" + salt + "$" + hash, "parallelism p=256"},
		{"$argon2id$v=19$m=15,t=2,p=2$" + salt + "$" + hash, "memory cost m=15"},
		{"$argon2id$v=19$m=4294967295,t=2,p=2$" + salt + "$" + hash, "memory cost"},
		{"$argon2id$v=19$m=256,t=2,p=2$c29tZQ$" + hash, "salt is 4 bytes"},
		{"$argon2id$v=19$m=256,t=2,p=2$c29tZXNhbHQ=$" + hash, "padding"},
		{"$argon2id$v=19$m=256,t=2,p=2$c29t*XNhbHQ$" + hash, "salt: bad base64"},
		{"$argon2id$v=19$m=256,t=2,p=2$" + salt + "$AAA", "hash is 2 bytes"},
		{"$argon2id$v=19$m=256,t=2,p=2$" + salt + "$" + hash + "\r", "control"},
		{"$argon2id$v=19$m=256,t=2,p=2$" + salt + "$" + strings.Repeat("A", 600), "longer than"},
	}
	for _, tc := range cases {
		_, err := parsePHC(tc.phc)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parsePHC(%q) = %v, want error containing %q", tc.phc, err, tc.want)
		}
		if ok, err := VerifyPHC(tc.phc, "password"); ok || err == nil {
			t.Errorf("VerifyPHC(%q) = %v, %v; want false and an error", tc.phc, ok, err)
		}
	}
}

// TestParamsAnyOrder: PHC allows the parameters in any order.
func TestParamsAnyOrder(t *testing.T) {
	ok, err := VerifyPHC("$argon2id$v=19$p=2,t=2,m=256$c29tZXNhbHQ$bQk8UB/VmZZF4Oo79iDXuL5/0ttZwg2f/5U52iv1cDc", "password")
	if !ok || err != nil {
		t.Fatalf("VerifyPHC = %v, %v", ok, err)
	}
}
