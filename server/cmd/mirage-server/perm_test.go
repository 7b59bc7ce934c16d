//go:build !windows

package main

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mirage-vpn/mirage/core/config"
)

// TestCheckFilesRefusesUnsafe: a users file, key or config other users
// may change stops the server; --insecure-permissions turns it into a
// warning; a world-readable secret is a warning.
func TestCheckFilesRefusesUnsafe(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	cfg := config.DefaultServer()
	cfg.Path = filepath.Join(dir, "server.toml")
	for _, f := range []string{"server.toml", "users", "key.pem", "cert.pem"} {
		os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600)
	}
	var logb bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logb, nil))
	if err := checkFiles(cfg, log, false); err != nil {
		t.Fatalf("0600 files: %v", err)
	}
	for _, f := range []string{"server.toml", "users", "key.pem", "cert.pem"} {
		p := filepath.Join(dir, f)
		for _, mode := range []os.FileMode{0o666, 0o620, 0o602} {
			os.Chmod(p, mode)
			err := checkFiles(cfg, log, false)
			if !errors.Is(err, config.ErrUnsafePermissions) || !strings.Contains(err.Error(), p) {
				t.Errorf("%s mode %o: err = %v, want refused naming the file", f, mode, err)
			}
			logb.Reset()
			if err := checkFiles(cfg, log, true); err != nil || !strings.Contains(logb.String(), "INSECURE") {
				t.Errorf("%s mode %o with --insecure-permissions: err = %v, log %q", f, mode, err, logb.String())
			}
		}
		os.Chmod(p, 0o600)
	}
	os.Chmod(filepath.Join(dir, "users"), 0o644)
	logb.Reset()
	if err := checkFiles(cfg, log, false); err != nil || !strings.Contains(logb.String(), "readable by other users") {
		t.Errorf("world-readable users file: err = %v, log %q; want a warning", err, logb.String())
	}
}
