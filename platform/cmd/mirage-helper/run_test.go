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
	var out, errOut bytes.Buffer
	if code := dispatch([]string{"status", "--socket", f.socket}, &out, &errOut); code != exitOK || !strings.Contains(out.String(), "state: disconnected") {
		t.Errorf("mirage-helper status: exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
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
	// A profile any local user may rewrite (it decides where this root
	// process sends all traffic) is refused before anything is changed.
	unsafe := filepath.Join(t.TempDir(), "client.toml")
	os.WriteFile(unsafe, []byte("connection_string = \"192.0.2.1:443\"\n[authentication]\nusername = \"u\"\npassword = \"p\"\n"), 0o600)
	if err := os.Chmod(unsafe, 0o666); err != nil {
		t.Fatal(err)
	}
	cases := [][]string{
		{"connect", unsafe},
		{"cleanup", "--state-dir", "/nonexistent/mirage-test-state"},
		{"run", "extra"},
		{"run", "--bogus"},
		{"service"},
		{"service", "bogus"},
		{"service", "start", "extra"},
		{"service", "install", "--bogus"},
		{"status", "extra"},
		{"status", "--socket", "/nonexistent/mirage-test.sock"},
	}
	for _, args := range cases {
		var out, errb bytes.Buffer
		if code := dispatch(args, &out, &errb); code != exitError {
			t.Errorf("%q: exit %d, want %d", args, code, exitError)
		}
		if errb.Len() == 0 {
			t.Errorf("%q: no error message", args)
		}
		if args[0] == "connect" && !strings.Contains(errb.String(), "writable by other users") {
			t.Errorf("connect with a 0666 profile: %q, want it refused for its permissions", errb.String())
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

// TestPrintStatus: the status of a QUIC connection shows its FEC counters
// both ways; a TCP connection its congestion control.
func TestPrintStatus(t *testing.T) {
	st := api.Status{State: api.Connected, Profile: "home", Transport: "quic", Server: "192.0.2.1:443",
		Addresses: []string{"198.51.100.2/24"},
		Connections: []api.Connection{
			{Transport: "quic", Local: "192.0.2.2:5000", Remote: "192.0.2.1:443", RTTMillis: 151.2,
				FEC: &api.FEC{Sending: true, Data: 32, Parity: 4, SendLoss: 0.0102, DataSent: 1000, ParitySent: 125,
					Seen: 5000, Recovered: 41, Unrecoverable: 2, Malformed: 1, RecvLoss: 0.011}},
			{Transport: "tcp-tls", Local: "192.0.2.2:5001", Remote: "192.0.2.1:443", Congestion: "bbr"},
		}}
	var b bytes.Buffer
	printStatus(&b, st)
	for _, want := range []string{
		"state: connected (profile home)",
		"connection 1: quic 192.0.2.2:5000 -> 192.0.2.1:443, rtt 151.2 ms",
		"fec sent: groups of 32+4 (loss on the way out 1.02 %), 1000 packets, 125 parity",
		"fec received: 5000 shards seen, 41 packets recovered, 2 unrecoverable, 1 malformed (loss on the way in 1.10 %)",
		"connection 2: tcp-tls 192.0.2.2:5001 -> 192.0.2.1:443, rtt 0.0 ms, bbr",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, b.String())
		}
	}
}
