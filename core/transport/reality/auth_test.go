package reality

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	utls "github.com/refraction-networking/utls"

	"github.com/mirage-vpn/mirage/core/transport/tlsx"
)

var testTime = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func newUTLSConfig(name string) *utls.Config {
	return &utls.Config{ServerName: name, InsecureSkipVerify: true}
}

// record wraps a handshake message into one TLS record.
func record(msg []byte) []byte {
	return append([]byte{22, 3, 1, byte(len(msg) >> 8), byte(len(msg))}, msg...)
}

// makeHello builds a reality ClientHello (as records) the way Dial does,
// without any network.
func makeHello(t testing.TB, sni string, pub [32]byte, sid [8]byte, now time.Time) (raw []byte, certKey [32]byte) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	u := tlsx.NewChromeClient(a, newUTLSConfig(sni))
	k, err := prepareHello(u, pub, sid, now)
	if err != nil {
		t.Fatal(err)
	}
	return record(u.HandshakeState.Hello.Raw), k
}

func fixedServer(t testing.TB, now time.Time) (*Server, [32]byte) {
	t.Helper()
	priv, pub, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(ServerConfig{
		PrivateKey:  priv,
		ShortIDs:    [][8]byte{{1, 2, 3, 4, 5, 6, 7, 8}, {0xaa}},
		ServerNames: []string{targetName, "cdn.example.com"},
		Dest:        "127.0.0.1:9", // never dialled here
		Now:         func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, pub
}

func TestAuthenticate(t *testing.T) {
	s, pub := fixedServer(t, testTime)
	_, otherPub, _ := GenerateKey()
	good := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	cases := []struct {
		name string
		sni  string
		pub  [32]byte
		sid  [8]byte
		at   time.Time
		ok   bool
	}{
		{"valid", targetName, pub, good, testTime, true},
		{"second short id, other SNI, upper case", "CDN.Example.COM", pub, [8]byte{0xaa}, testTime, true},
		{"clock 89s behind", targetName, pub, good, testTime.Add(-89 * time.Second), true},
		{"clock 89s ahead", targetName, pub, good, testTime.Add(89 * time.Second), true},
		{"clock 91s behind", targetName, pub, good, testTime.Add(-91 * time.Second), false},
		{"clock 91s ahead", targetName, pub, good, testTime.Add(91 * time.Second), false},
		{"unknown short id", targetName, pub, [8]byte{1, 2, 3}, testTime, false},
		{"wrong server key", targetName, otherPub, good, testTime, false},
		{"unknown SNI", "www.other.test", pub, good, testTime, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw, certKey := makeHello(t, tc.sni, tc.pub, tc.sid, tc.at)
			a, ok := s.Authenticate(raw, nil)
			if ok != tc.ok {
				_, reason := s.authenticate(raw, nil)
				t.Fatalf("Authenticate = %v (%s), want %v", ok, reason, tc.ok)
			}
			if !ok {
				if _, replayed := s.Check(raw, nil); replayed {
					t.Error("a refused hello that was never accepted reported as a replay")
				}
				return
			}
			if a.ShortID != tc.sid || a.ClientTime.Unix() != tc.at.Unix() || a.certKey != certKey {
				t.Errorf("auth = %+v", a)
			}
			if _, again := s.Authenticate(raw, nil); again {
				t.Error("the same hello authenticated twice (replay)")
			}
			if a, replayed := s.Check(raw, nil); a != nil || !replayed {
				t.Error("a replayed hello not reported as a replay")
			}
		})
	}
}

func TestAuthenticateTampered(t *testing.T) {
	s, pub := fixedServer(t, testTime)
	raw, _ := makeHello(t, targetName, pub, [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, testTime)
	h, err := tlsx.ParseClientHello(raw)
	if err != nil {
		t.Fatal(err)
	}
	// Flipping any byte of the message after the header must break it; a
	// sample of positions keeps the test fast (each costs one X25519).
	for i := 5 + 4; i < len(raw); i += 7 {
		m := bytes.Clone(raw)
		m[i] ^= 0x40
		if _, ok := s.Authenticate(m, nil); ok {
			t.Fatalf("hello with byte %d flipped authenticated", i)
		}
	}
	// The untouched hello still works after all those failures.
	if _, ok := s.Authenticate(raw, h); !ok {
		t.Fatal("valid hello refused")
	}
}

func TestClientShare(t *testing.T) {
	x := bytes.Repeat([]byte{1}, 32)
	hybrid := append(bytes.Repeat([]byte{2}, 1184), bytes.Repeat([]byte{3}, 32)...)
	cases := []struct {
		name string
		ks   []tlsx.KeyShare
		want []byte
	}{
		{"x25519 first", []tlsx.KeyShare{{Group: 0x0a0a, Data: []byte{0}}, {Group: 0x11ec, Data: hybrid}, {Group: 0x1d, Data: x}}, x},
		{"hybrid only", []tlsx.KeyShare{{Group: 0x11ec, Data: hybrid}}, hybrid[1184:]},
		{"short x25519", []tlsx.KeyShare{{Group: 0x1d, Data: x[:31]}, {Group: 0x11ec, Data: hybrid}}, nil},
		{"short hybrid", []tlsx.KeyShare{{Group: 0x11ec, Data: hybrid[1:]}}, nil},
		{"none", []tlsx.KeyShare{{Group: 0x17, Data: make([]byte, 65)}}, nil},
	}
	for _, tc := range cases {
		if got := clientShare(tc.ks); !bytes.Equal(got, tc.want) {
			t.Errorf("%s: got %x, want %x", tc.name, got, tc.want)
		}
	}
}

// TestHelloKeyHybridOnly: a hello with only an X25519MLKEM768 share
// authenticates with the X25519 half (client and server agree).
func TestHelloKeyHybridOnly(t *testing.T) {
	k, _ := ecdh.X25519().GenerateKey(rand.Reader)
	other, _ := ecdh.X25519().GenerateKey(rand.Reader)
	share := append(make([]byte, 1184), k.PublicKey().Bytes()...)
	hs := &utls.PubClientHandshakeState{
		Hello:   &utls.PubClientHelloMsg{KeyShares: []utls.KeyShare{{Group: utls.X25519MLKEM768, Data: share}}},
		State13: utls.TLS13OnlyState{KeyShareKeys: &utls.KeySharePrivateKeys{Ecdhe: other, MlkemEcdhe: k}},
	}
	got, err := helloKey(hs)
	if err != nil || got != k {
		t.Fatalf("helloKey = %v, %v; want the hybrid's X25519 key", got, err)
	}
	hs.State13.KeyShareKeys.MlkemEcdhe = nil
	if _, err := helloKey(hs); err == nil {
		t.Error("helloKey found a key that matches no share")
	}
}

func TestCertificateMAC(t *testing.T) {
	s, pub := fixedServer(t, testTime)
	raw, certKey := makeHello(t, targetName, pub, [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, testTime)
	a, ok := s.Authenticate(raw, nil)
	if !ok {
		t.Fatal("not authenticated")
	}
	cert := s.certificate(a)
	der := cert.Certificate[0]
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("patched certificate does not parse: %v", err)
	}
	if len(c.Signature) != 64 {
		t.Errorf("signature is %d bytes", len(c.Signature))
	}
	if err := verifyCert(certKey, [][]byte{der}); err != nil {
		t.Errorf("verifyCert: %v", err)
	}
	var wrong [32]byte
	wrong[0] = 1
	if err := verifyCert(wrong, [][]byte{der}); !errors.Is(err, ErrNotVerified) {
		t.Errorf("wrong key: %v", err)
	}
	bad := bytes.Clone(der)
	bad[len(bad)-1] ^= 1
	if err := verifyCert(certKey, [][]byte{bad}); !errors.Is(err, ErrNotVerified) {
		t.Errorf("tampered MAC: %v", err)
	}
	if err := verifyCert(certKey, nil); !errors.Is(err, ErrNotVerified) {
		t.Errorf("no certificate: %v", err)
	}
	if err := verifyCert(certKey, [][]byte{[]byte("junk")}); !errors.Is(err, ErrNotVerified) {
		t.Errorf("junk certificate: %v", err)
	}
}

func TestNewServerErrors(t *testing.T) {
	priv, _, _ := GenerateKey()
	ok := ServerConfig{PrivateKey: priv, ShortIDs: [][8]byte{{1}}, ServerNames: []string{targetName}}
	for name, mod := range map[string]func(*ServerConfig){
		"no key":       func(c *ServerConfig) { c.PrivateKey = [32]byte{} },
		"no short ids": func(c *ServerConfig) { c.ShortIDs = nil },
		"no names":     func(c *ServerConfig) { c.ServerNames = nil },
		"empty name":   func(c *ServerConfig) { c.ServerNames = []string{""} },
		"bad dest":     func(c *ServerConfig) { c.Dest = "no-port" },
		"negative":     func(c *ServerConfig) { c.MaxTimeDiff = -time.Second },
	} {
		c := ok
		mod(&c)
		if _, err := NewServer(c); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	s, err := NewServer(ok)
	if err != nil {
		t.Fatal(err)
	}
	if s.Dest() != "www.example.com:443" || s.maxDiff != DefaultMaxTimeDiff {
		t.Errorf("defaults: dest %q, max diff %v", s.Dest(), s.maxDiff)
	}
}

func TestKeys(t *testing.T) {
	priv, pub, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	p2, err := PublicKey(priv)
	if err != nil || p2 != pub {
		t.Fatalf("PublicKey = %x, %v; want %x", p2, err, pub)
	}
	if _, err := Dial(t.Context(), "127.0.0.1:1", ClientOptions{ServerName: targetName}); err == nil {
		t.Error("Dial without a public key succeeded")
	}
	if _, err := Dial(t.Context(), "127.0.0.1:1", ClientOptions{PublicKey: pub}); err == nil {
		t.Error("Dial without a server name succeeded")
	}
}

// TestReadClientHello: a real hello, also split over records and written
// slowly, is read exactly, never beyond.
func TestReadClientHello(t *testing.T) {
	_, pub, _ := GenerateKey()
	raw, _ := makeHello(t, targetName, pub, [8]byte{1}, time.Now())
	msg := raw[5:]
	split := append(append(record(msg[:3]), record(msg[3:200])...), record(msg[200:])...)
	for name, in := range map[string][]byte{"one record": raw, "three records": split} {
		a, b := tcpPair(t)
		go func() {
			for i := 0; i < len(in); i += 100 {
				b.Write(in[i:min(i+100, len(in))])
				time.Sleep(time.Millisecond)
			}
			b.Write([]byte("after")) // must not be consumed
		}()
		got, h, err := ReadClientHello(a, time.Now().Add(5*time.Second))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, in) || !bytes.Equal(h.Raw, msg) || h.ServerName != targetName {
			t.Errorf("%s: read %d bytes, want %d", name, len(got), len(in))
		}
		rest := make([]byte, 5)
		a.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.ReadFull(a, rest); err != nil || string(rest) != "after" {
			t.Errorf("%s: bytes after the hello: %q %v", name, rest, err)
		}
		a.Close()
		b.Close()
	}
}

func TestReadClientHelloDeadline(t *testing.T) {
	// A stalled client and a slowloris (a byte every 20 ms) both stop at
	// the deadline, with the bytes read so far.
	for _, slow := range []bool{false, true} {
		a, b := tcpPair(t)
		stop := make(chan struct{})
		go func() {
			b.Write([]byte{22, 3})
			for i := 0; slow && i < 500; i++ {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				b.Write([]byte{1})
			}
		}()
		start := time.Now()
		got, _, err := ReadClientHello(a, time.Now().Add(300*time.Millisecond))
		el := time.Since(start)
		close(stop)
		if err == nil || !isTimeout(err) {
			t.Errorf("slow=%v: err = %v, want a timeout", slow, err)
		}
		if el > 2*time.Second {
			t.Errorf("slow=%v: took %v", slow, el)
		}
		if len(got) < 2 || !bytes.Equal(got[:2], []byte{22, 3}) {
			t.Errorf("slow=%v: raw = %x, want the bytes sent", slow, got)
		}
		// The deadline is cleared afterwards.
		var zero time.Time
		if err := a.SetReadDeadline(zero); err != nil {
			t.Error(err)
		}
		a.Close()
		b.Close()
	}
}

func TestReadClientHelloBounds(t *testing.T) {
	cases := []struct {
		name   string
		in     func(w net.Conn)
		want   error
		maxLen int
	}{
		{"record too long", func(w net.Conn) { w.Write([]byte{22, 3, 1, 0x40, 0x01}) }, ErrNotTLS, 5},
		{"zero-length record", func(w net.Conn) { w.Write([]byte{22, 3, 1, 0, 0}) }, ErrNotTLS, 5},
		{"not handshake", func(w net.Conn) { w.Write([]byte{23, 3, 3, 0, 10}) }, ErrNotTLS, 5},
		{"http", func(w net.Conn) { w.Write([]byte("GET / HTTP/1.1\r\n")) }, ErrNotTLS, 5},
		{"not a ClientHello", func(w net.Conn) { w.Write(record([]byte{2, 0, 0, 1, 0})) }, ErrNotTLS, 10},
		{"hello length 16 MiB", func(w net.Conn) { w.Write(record([]byte{1, 0xff, 0xff, 0xff, 0})) }, ErrHelloTooLarge, 10},
		{"1-byte records", func(w net.Conn) {
			// A hello of 16380 bytes in 1-byte records: 6 bytes per
			// message byte, cut off at MaxHelloBytes.
			w.Write(append(append(record([]byte{1}), record([]byte{0})...), append(record([]byte{0x3f}), record([]byte{0xfc})...)...))
			one := record([]byte{0})
			for i := 0; i < 4000; i++ {
				if _, err := w.Write(one); err != nil {
					return
				}
			}
		}, ErrHelloTooLarge, MaxHelloBytes},
	}
	for _, tc := range cases {
		a, b := tcpPair(t)
		go tc.in(b)
		got, _, err := ReadClientHello(a, time.Now().Add(5*time.Second))
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
		if len(got) > tc.maxLen || cap(got) > 2*MaxHelloBytes {
			t.Errorf("%s: read %d bytes (cap %d), want at most %d", tc.name, len(got), cap(got), tc.maxLen)
		}
		a.Close()
		b.Close()
	}
}

func TestOpenSessionIDRoundTrip(t *testing.T) {
	random := bytes.Repeat([]byte{7}, 32)
	k, err := deriveKeys([]byte("shared secret"), random)
	if err != nil {
		t.Fatal(err)
	}
	p := payload{Version: Version, Time: 1234567890, ShortID: [8]byte{1, 2, 3}}
	sid, err := sealSessionID(k, random, []byte("aad"), p)
	if err != nil || len(sid) != 32 {
		t.Fatalf("seal: %d bytes, %v", len(sid), err)
	}
	got, err := openSessionID(k, random, []byte("aad"), sid)
	if err != nil || got != p {
		t.Fatalf("open = %+v, %v", got, err)
	}
	if _, err := openSessionID(k, random, []byte("aae"), sid); err == nil {
		t.Error("opened with different aad")
	}
	r2 := bytes.Clone(random)
	r2[0] ^= 1 // salt
	k2, _ := deriveKeys([]byte("shared secret"), r2)
	if _, err := openSessionID(k2, r2, []byte("aad"), sid); err == nil {
		t.Error("opened with a different salt")
	}
	if k.aead == k.cert {
		t.Error("AEAD and certificate keys are equal")
	}
}

// TestEmptySessionIDHello: a hello built without a session id gets one
// and still authenticates.
func TestEmptySessionIDHello(t *testing.T) {
	s, pub := fixedServer(t, testTime)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	u := tlsx.NewChromeClient(a, newUTLSConfig(targetName))
	if err := u.BuildHandshakeState(); err != nil {
		t.Fatal(err)
	}
	u.HandshakeState.Hello.SessionId = nil
	if err := u.MarshalClientHello(); err != nil {
		t.Fatal(err)
	}
	if u.HandshakeState.Hello.Raw[38] != 0 {
		t.Fatal("session id not removed")
	}
	if _, err := prepareHello(u, pub, [8]byte{0xaa}, testTime); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Authenticate(record(u.HandshakeState.Hello.Raw), nil); !ok {
		t.Fatal("not authenticated")
	}
}

// AuthenticatedHello builds a record the server authenticates once and
// then refuses as a replay; a wrong key or short id is not authenticated.
func TestAuthenticatedHello(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1:1", nil)
	rec, err := AuthenticatedHello(targetName, ts.pub, ts.sid, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if rec[0] != 22 || int(rec[3])<<8|int(rec[4]) != len(rec)-5 {
		t.Fatalf("not one TLS handshake record: % x", rec[:5])
	}
	h, err := tlsx.ParseClientHello(rec)
	if err != nil {
		t.Fatal(err)
	}
	if h.ServerName != targetName {
		t.Errorf("SNI %q, want %q", h.ServerName, targetName)
	}
	if a, replayed := ts.srv.Check(rec, h); a == nil || replayed {
		t.Fatalf("first copy: authenticated=%v replayed=%v, want authenticated", a != nil, replayed)
	}
	if a, replayed := ts.srv.Check(rec, h); a != nil || !replayed {
		t.Errorf("second copy: authenticated=%v replayed=%v, want a replay", a != nil, replayed)
	}
	other, err := AuthenticatedHello(targetName, ts.pub, [8]byte{9, 9}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := ts.srv.Check(other, nil); a != nil {
		t.Errorf("a hello with an unknown short id was authenticated")
	}
}
