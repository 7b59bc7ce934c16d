package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/api"
	"github.com/mirage-vpn/mirage/core/apiclient"
)

// TestServeLifecycle serves the API on a temporary socket, answers a status
// request, and shuts down cleanly (socket removed) when its context ends.
func TestServeLifecycle(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root (the API only admits root and the mirage group); CI=true: failing instead of skipping")
		}
		t.Skip("needs root: the API only admits root and the mirage group")
	}
	dir := t.TempDir()
	f := runFlags{
		socket:      filepath.Join(dir, "run", "helper.sock"),
		stateDir:    filepath.Join(dir, "state"),
		profilesDir: filepath.Join(dir, "profiles"),
		group:       "mirage-test-absent-group",
	}
	logs := &syncWriter{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, f, log) }()
	defer cancel()

	c := apiclient.New(apiclient.Dial(f.socket))
	defer c.Close()
	var st api.Status
	var err error
	for range 50 {
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err = c.Status(rctx)
		rcancel()
		if err == nil || !errors.Is(err, apiclient.ErrUnreachable) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if st.State != api.Disconnected || st.HelperVersion != version {
		t.Errorf("status = %+v, want disconnected with version %q", st, version)
	}
	if fi, err := os.Stat(f.socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket: %v, mode %v; want 0600 without the group", err, fi)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v after its context ended, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop within 15s")
	}
	if _, err := os.Lstat(f.socket); err == nil {
		t.Error("socket left behind after shutdown")
	}
	if !strings.Contains(logs.String(), "local API listening") {
		t.Errorf("log:\n%s", logs.String())
	}
}

func TestDispatchErrors(t *testing.T) {
	cases := [][]string{
		{"run", "extra"},
		{"run", "--bogus"},
		{"service"},
		{"service", "bogus"},
		{"service", "start", "extra"},
		{"service", "install", "--bogus"},
	}
	for _, args := range cases {
		var out, errb bytes.Buffer
		if code := dispatch(args, &out, &errb); code != exitError {
			t.Errorf("%q: exit %d, want %d", args, code, exitError)
		}
		if errb.Len() == 0 {
			t.Errorf("%q: no error message", args)
		}
	}
}

// syncWriter is a log sink safe for concurrent writes and reads.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
