package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"testing"
)

func TestJoinProof(t *testing.T) {
	key := bytes.Repeat([]byte{0x42}, 32)
	sid := [16]byte{1, 2, 3}
	cb := []byte("exporter-value-of-this-connection")
	p := JoinProof(key, sid, "alice", cb)
	if !CheckJoinProof(key, sid, "alice", cb, p[:]) {
		t.Fatal("valid proof rejected")
	}

	// The construction is the documented one.
	m := hmac.New(sha256.New, key)
	m.Write([]byte("mirage join v1"))
	m.Write(sid[:])
	m.Write([]byte{0, 5})
	m.Write([]byte("alice"))
	m.Write(cb)
	if !bytes.Equal(m.Sum(nil), p[:]) {
		t.Fatal("JoinProof does not match its specification")
	}

	otherSID := sid
	otherSID[15] = 1
	otherKey := bytes.Clone(key)
	otherKey[0] ^= 1
	bad := []struct {
		name string
		ok   bool
	}{
		{"other user", CheckJoinProof(key, sid, "mallory", cb, p[:])},
		{"other session", CheckJoinProof(key, otherSID, "alice", cb, p[:])},
		{"other connection", CheckJoinProof(key, sid, "alice", []byte("exporter-value-of-another-conn!!!"), p[:])},
		{"other key", CheckJoinProof(otherKey, sid, "alice", cb, p[:])},
		{"truncated proof", CheckJoinProof(key, sid, "alice", cb, p[:31])},
		{"empty proof", CheckJoinProof(key, sid, "alice", cb, nil)},
		{"flipped bit", CheckJoinProof(key, sid, "alice", cb, append(bytes.Clone(p[:31]), p[31]^1))},
	}
	for _, b := range bad {
		if b.ok {
			t.Errorf("%s: proof accepted", b.name)
		}
	}

	// The length prefix keeps user and binding apart.
	p1 := JoinProof(key, sid, "ab", []byte("cd"))
	p2 := JoinProof(key, sid, "abc", []byte("d"))
	if p1 == p2 {
		t.Error("user/binding boundary is ambiguous")
	}

	// Refused configurations, even with a matching proof.
	short := key[:15]
	ps := JoinProof(short, sid, "alice", cb)
	if CheckJoinProof(short, sid, "alice", cb, ps[:]) {
		t.Error("15-byte join key accepted")
	}
	pn := JoinProof(key, sid, "alice", nil)
	if CheckJoinProof(key, sid, "alice", nil, pn[:]) {
		t.Error("proof without channel binding accepted")
	}
}
