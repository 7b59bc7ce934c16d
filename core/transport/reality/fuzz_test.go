package reality

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// byteConn is a net.Conn reading from a byte slice.
type byteConn struct {
	net.Conn
	r *bytes.Reader
}

func (c byteConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// FuzzAuthenticate: random and mutated hellos never panic and never
// authenticate. The one valid seed is consumed before fuzzing, so an
// unmutated copy is a replay.
func FuzzAuthenticate(f *testing.F) {
	s, pub := fixedServer(f, testTime)
	valid, _ := makeHello(f, targetName, pub, [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, testTime)
	if _, ok := s.Authenticate(valid, nil); !ok {
		f.Fatal("seed hello does not authenticate")
	}
	f.Add(valid)
	msg := valid[5:]
	f.Add(append(append(record(msg[:10]), record(msg[10:])...), 0))
	f.Add(append(bytes.Clone(valid[:len(valid)-1]), valid[len(valid)-1]^1))
	other, _ := makeHello(f, targetName, pub, [8]byte{9}, testTime)
	f.Add(other)
	f.Add([]byte{22, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, ok := s.Authenticate(data, nil); ok {
			t.Fatalf("fuzzed hello authenticated: %x", data)
		}
		raw, h, err := ReadClientHello(byteConn{r: bytes.NewReader(data)}, time.Time{})
		if len(raw) > MaxHelloBytes || !bytes.HasPrefix(data, raw) {
			t.Fatalf("ReadClientHello returned %d bytes not from the input", len(raw))
		}
		if err == nil {
			if _, ok := s.Authenticate(raw, h); ok {
				t.Fatalf("fuzzed hello authenticated: %x", data)
			}
		}
	})
}

// FuzzOpenBlob: the session id decoder never panics on any input, opens
// what was sealed, and refuses any single-bit change.
func FuzzOpenBlob(f *testing.F) {
	f.Add([]byte("shared"), bytes.Repeat([]byte{1}, 32), []byte("aad"), make([]byte, 32), uint16(0))
	f.Add([]byte{}, []byte{1}, []byte{}, []byte{}, uint16(300))
	f.Fuzz(func(t *testing.T, shared, random, aad, sid []byte, flip uint16) {
		var k keys
		copy(k.aead[:], shared)
		_, _ = openSessionID(k, random, aad, sid)
		k, err := deriveKeys(shared, random)
		if len(random) != 32 {
			if err == nil {
				t.Fatal("deriveKeys accepted a short random")
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := openSessionID(k, random, aad, sid); err == nil && len(sid) == 32 {
			// Forging a GCM tag by chance is negligible: a fuzzer that
			// finds one has found a bug.
			t.Fatalf("random session id opened: %x", sid)
		}
		p := payload{Version: Version, Time: uint32(len(aad)), ShortID: [8]byte{byte(flip)}}
		blob, err := sealSessionID(k, random, aad, p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := openSessionID(k, random, aad, blob)
		if err != nil || got != p {
			t.Fatalf("round trip: %+v, %v", got, err)
		}
		blob[int(flip/8)%len(blob)] ^= 1 << (flip % 8)
		if _, err := openSessionID(k, random, aad, blob); err == nil {
			t.Fatal("opened a modified session id")
		}
	})
}
