package auth

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func TestTicketRoundTrip(t *testing.T) {
	k := NewTicketKey()
	for _, user := range []string{"a", "alice", "Алиса", strings.Repeat("x", MaxNameLen)} {
		tk := k.issueAt(user, t0, time.Hour)
		if len(tk) > MaxTicketLen {
			t.Fatalf("ticket for %q is %d bytes, max %d", user, len(tk), MaxTicketLen)
		}
		got, err := k.Open(tk, t0.Add(59*time.Minute))
		if err != nil || got != user {
			t.Fatalf("Open = %q, %v; want %q", got, err, user)
		}
	}
	a, b := k.issueAt("alice", t0, time.Hour), k.issueAt("alice", t0, time.Hour)
	if bytes.Equal(a, b) {
		t.Error("two tickets are identical: nonce not random")
	}
	// The public Issue uses the real clock.
	if got, err := k.Open(k.Issue("bob", time.Minute), time.Now()); err != nil || got != "bob" {
		t.Errorf("Issue/Open = %q, %v", got, err)
	}
}

func TestTicketInvalidUser(t *testing.T) {
	k := NewTicketKey()
	for _, u := range []string{"", "a:b", strings.Repeat("x", MaxNameLen+1)} {
		if tk := k.Issue(u, time.Hour); tk != nil {
			t.Errorf("Issue(%q) = %x, want nil", u, tk)
		}
	}
}

func TestTicketExpiry(t *testing.T) {
	k := NewTicketKey()
	tk := k.issueAt("alice", t0, time.Hour)
	if _, err := k.Open(tk, t0.Add(time.Hour)); !errors.Is(err, ErrTicketExpired) {
		t.Errorf("Open at expiry = %v, want ErrTicketExpired", err)
	}
	if _, err := k.Open(tk, t0.Add(48*time.Hour)); !errors.Is(err, ErrTicketExpired) {
		t.Errorf("Open long after expiry = %v, want ErrTicketExpired", err)
	}
	// Issued in the future beyond the allowed skew: refused.
	if _, err := k.Open(tk, t0.Add(-10*time.Minute)); !errors.Is(err, ErrTicketInvalid) {
		t.Errorf("Open before issue = %v, want ErrTicketInvalid", err)
	}
	if _, err := k.Open(tk, t0.Add(-time.Minute)); err != nil {
		t.Errorf("Open within clock skew = %v", err)
	}
	if _, err := k.Open(k.issueAt("alice", t0, -time.Second), t0); !errors.Is(err, ErrTicketExpired) {
		t.Errorf("negative ttl: %v", err)
	}
}

func TestTicketTamper(t *testing.T) {
	k := NewTicketKey()
	tk := k.issueAt("alice", t0, time.Hour)
	for i := range tk {
		for _, bit := range []byte{0x01, 0x80} {
			m := bytes.Clone(tk)
			m[i] ^= bit
			if u, err := k.Open(m, t0); err == nil {
				t.Fatalf("byte %d bit %#x flipped: Open = %q, nil", i, bit, u)
			}
		}
	}
	if _, err := k.Open(tk[:len(tk)-1], t0); err == nil {
		t.Error("truncated ticket accepted")
	}
	if _, err := k.Open(append(bytes.Clone(tk), 0), t0); err == nil {
		t.Error("extended ticket accepted")
	}
	for _, g := range [][]byte{nil, {}, {1}, make([]byte, 57), make([]byte, 300), bytes.Repeat([]byte{1}, 100)} {
		if _, err := k.Open(g, t0); !errors.Is(err, ErrTicketInvalid) {
			t.Errorf("Open(garbage %d bytes) = %v", len(g), err)
		}
	}
}

func TestTicketWrongKey(t *testing.T) {
	k1, k2 := NewTicketKey(), NewTicketKey()
	if _, err := k2.Open(k1.issueAt("alice", t0, time.Hour), t0); !errors.Is(err, ErrTicketInvalid) {
		t.Fatalf("Open with another key = %v, want ErrTicketInvalid", err)
	}
	k3, err := TicketKeyFromBytes(k1.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if u, err := k3.Open(k1.issueAt("alice", t0, time.Hour), t0); err != nil || u != "alice" {
		t.Fatalf("Open with restored key = %q, %v", u, err)
	}
	if _, err := TicketKeyFromBytes(make([]byte, 31)); err == nil {
		t.Error("31-byte key accepted")
	}
}

func FuzzTicketOpen(f *testing.F) {
	// Deterministic key and nonces: the fuzz workers rebuild the same
	// seed tickets in their own processes.
	k, _ := TicketKeyFromBytes(bytes.Repeat([]byte{7}, TicketKeyLen))
	k.nonce = rand.NewChaCha8([32]byte{1})
	valid := map[string]string{}
	for _, u := range []string{"alice", "b", strings.Repeat("z", MaxNameLen)} {
		tk := k.issueAt(u, t0, time.Hour)
		valid[string(tk)] = u
		f.Add(tk)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3})
	f.Add(bytes.Repeat([]byte{1}, 80))
	f.Fuzz(func(t *testing.T, tk []byte) {
		u, err := k.Open(tk, t0)
		if err != nil {
			if u != "" {
				t.Fatalf("user %q returned with error %v", u, err)
			}
			return
		}
		if want, ok := valid[string(tk)]; !ok || u != want {
			t.Fatalf("forged ticket %x opened as %q", tk, u)
		}
	})
}
