//go:build !windows

package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestCheckPermissions(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		mode     os.FileMode
		unsafe   bool
		readable bool
	}{
		{0o600, false, false},
		{0o640, false, false},
		{0o644, false, true},
		{0o660, true, false},
		{0o666, true, true},
		{0o602, true, false},
	}
	for _, c := range cases {
		p := filepath.Join(dir, "f")
		os.WriteFile(p, []byte("x"), 0o600)
		if err := os.Chmod(p, c.mode); err != nil {
			t.Fatal(err)
		}
		readable, err := CheckPermissions(p, "users file")
		if got := errors.Is(err, ErrUnsafePermissions); got != c.unsafe {
			t.Errorf("mode %o: err = %v, want unsafe %v", c.mode, err, c.unsafe)
		}
		if readable != c.readable {
			t.Errorf("mode %o: readable = %v, want %v", c.mode, readable, c.readable)
		}
	}
	// A 0600 file in a world-writable, non-sticky directory can be replaced.
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o777)
	p := filepath.Join(open, "users")
	os.WriteFile(p, []byte("x"), 0o600)
	if _, err := CheckPermissions(p, "users file"); !errors.Is(err, ErrUnsafePermissions) {
		t.Errorf("file in a 0777 directory: err = %v, want unsafe", err)
	}
	// Sticky (as /tmp): only the owner may replace it.
	os.Chmod(open, 0o777|os.ModeSticky)
	if _, err := CheckPermissions(p, "users file"); err != nil {
		t.Errorf("file in a sticky 1777 directory: %v", err)
	}
	if _, err := CheckPermissions(filepath.Join(dir, "missing"), "users file"); err == nil || errors.Is(err, ErrUnsafePermissions) {
		t.Errorf("missing file: err = %v, want a not-found error", err)
	}
}
