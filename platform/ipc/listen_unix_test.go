//go:build linux || darwin || freebsd

package ipc

import (
	"os"
	"path/filepath"
	"testing"
)

// TestListenMissingParent: only the socket's own directory is created; a
// path under a missing parent is an error and creates nothing.
func TestListenMissingParent(t *testing.T) {
	base := t.TempDir()
	if _, err := Listen(filepath.Join(base, "missing", "dir", "s.sock"), Policy{}); err == nil {
		t.Fatal("Listen under a missing parent succeeded")
	}
	if _, err := os.Stat(filepath.Join(base, "missing")); !os.IsNotExist(err) {
		t.Errorf("Listen created %s", filepath.Join(base, "missing"))
	}
	ln, err := Listen(filepath.Join(base, "run", "s.sock"), Policy{})
	if err != nil {
		t.Fatalf("Listen creating its own directory: %v", err)
	}
	ln.Close()
}
