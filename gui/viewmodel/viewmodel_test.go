package viewmodel_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/api"
	"github.com/mirage-vpn/mirage/gui/viewmodel"
	"github.com/mirage-vpn/mirage/gui/viewmodel/vmtest"
)

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

type clock struct{ t atomic.Int64 }

func newClock() *clock          { c := &clock{}; c.t.Store(t0.UnixNano()); return c }
func (c *clock) now() time.Time { return time.Unix(0, c.t.Load()).UTC() }
func (c *clock) add(d time.Duration) {
	c.t.Add(int64(d))
}

func newVM(t *testing.T, f viewmodel.Client) (*viewmodel.VM, *clock) {
	t.Helper()
	c := newClock()
	vm := viewmodel.New(f, viewmodel.Options{Now: c.now, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, LogInterval: 10 * time.Millisecond})
	return vm, c
}

// runVM starts vm.Run and stops it at cleanup.
func runVM(t *testing.T, vm *viewmodel.VM) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { vm.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestStates(t *testing.T) {
	tests := []struct {
		name   string
		st     api.Status
		text   string
		tone   viewmodel.Tone
		active bool
		uptime string
	}{
		{"disconnected", api.Status{State: api.Disconnected}, "Disconnected", viewmodel.ToneIdle, false, ""},
		{"empty state", api.Status{}, "Disconnected", viewmodel.ToneIdle, false, ""},
		{"connecting", api.Status{State: api.Connecting, Profile: "home"}, "Connecting", viewmodel.ToneBusy, true, ""},
		{"connected", api.Status{State: api.Connected, ConnectedAt: t0.Add(-(time.Hour + 2*time.Minute + 5*time.Second))}, "Connected", viewmodel.ToneOK, true, "1 h 02 min"},
		{"reconnecting in 4 s", api.Status{State: api.Reconnecting, NextRetry: t0.Add(3200 * time.Millisecond)}, "Reconnecting in 4 s", viewmodel.ToneBusy, true, ""},
		{"reconnecting now", api.Status{State: api.Reconnecting, NextRetry: t0.Add(-time.Second)}, "Reconnecting", viewmodel.ToneBusy, true, ""},
		{"disconnecting", api.Status{State: api.Disconnecting}, "Disconnecting", viewmodel.ToneBusy, false, ""},
		{"error rejected", api.Status{State: api.Failed, Error: &api.Error{Code: api.CodeRejected}}, "Error: The server rejected the username or password", viewmodel.ToneError, false, ""},
		{"error network", api.Status{State: api.Failed, Error: &api.Error{Code: api.CodeNetwork, Message: "dial tcp 192.0.2.1:443: i/o timeout"}}, "Error: Cannot reach the server: dial tcp 192.0.2.1:443: i/o timeout", viewmodel.ToneError, false, ""},
		{"error without detail", api.Status{State: api.Failed}, "Error: Connection failed", viewmodel.ToneError, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := vmtest.New()
			f.State = tc.st
			vm, _ := newVM(t, f)
			runVM(t, vm)
			eventually(t, "first status", func() bool { return vm.Snapshot().Helper.Reachable })
			c := vm.Snapshot().Conn
			if c.Text != tc.text || c.Tone != tc.tone || c.Active != tc.active || c.Uptime != tc.uptime {
				t.Errorf("got text %q tone %q active %v uptime %q; want %q %q %v %q", c.Text, c.Tone, c.Active, c.Uptime, tc.text, tc.tone, tc.active, tc.uptime)
			}
		})
	}
}

func TestStatsFormatting(t *testing.T) {
	f := vmtest.New()
	f.State = api.Status{State: api.Connected, Profile: "home", Transport: "reality", Server: "203.0.113.7:443",
		Addresses: []string{"10.9.0.2/24", "fd00::2/64"}, ConnectedAt: t0.Add(-42 * time.Second),
		Stats: api.Stats{TxBytes: 362387865, RxBytes: 1023, TxRate: 1.2e6, RxRate: 640}}
	vm, _ := newVM(t, f)
	runVM(t, vm)
	eventually(t, "status", func() bool { return vm.Snapshot().Conn.State == api.Connected })
	c := vm.Snapshot().Conn
	want := viewmodel.Connection{State: api.Connected, Text: "Connected", Tone: viewmodel.ToneOK, Profile: "home",
		Server: "203.0.113.7:443", Transport: "reality", Uptime: "42 s", UpRate: "1.2 MB/s", DownRate: "640 B/s",
		Sent: "345.6 MiB", Received: "1023 B", Active: true}
	if strings.Join(c.Addresses, ",") != "10.9.0.2/24,fd00::2/64" {
		t.Errorf("addresses %v", c.Addresses)
	}
	c.Addresses = nil
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v\nwant %+v", c, want)
	}
}

func TestFormatters(t *testing.T) {
	rates := map[float64]string{0: "0 B/s", -5: "0 B/s", 999: "999 B/s", 1000: "1.0 kB/s", 1.2e6: "1.2 MB/s", 12.34e6: "12.3 MB/s", 2.5e9: "2.5 GB/s"}
	for in, want := range rates {
		if got := viewmodel.FormatRate(in); got != want {
			t.Errorf("FormatRate(%v) = %q, want %q", in, got, want)
		}
	}
	bytes := map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 362387865: "345.6 MiB", 5 << 30: "5.0 GiB", 1048575: "1.0 MiB"}
	for in, want := range bytes {
		if got := viewmodel.FormatBytes(in); got != want {
			t.Errorf("FormatBytes(%v) = %q, want %q", in, got, want)
		}
	}
	ups := map[time.Duration]string{0: "0 s", 42 * time.Second: "42 s", 5*time.Minute + 3*time.Second: "5 min 03 s",
		time.Hour + 2*time.Minute: "1 h 02 min", 50 * time.Hour: "2 d 02 h", -time.Second: "0 s"}
	for in, want := range ups {
		if got := viewmodel.FormatUptime(in); got != want {
			t.Errorf("FormatUptime(%v) = %q, want %q", in, got, want)
		}
	}
}

// TestGraphWindow feeds 75 one-second samples and expects the last 60, oldest first.
func TestGraphWindow(t *testing.T) {
	f := vmtest.New()
	feed := make(chan api.Status)
	f.WatchFeed = feed
	f.State = api.Status{State: api.Connecting}
	vm, clk := newVM(t, f)
	runVM(t, vm)
	for i := 1; i <= 75; i++ {
		clk.add(time.Second)
		feed <- api.Status{State: api.Connected, Stats: api.Stats{TxRate: float64(i), RxRate: float64(1000 + i)}}
		eventually(t, "sample", func() bool { s := vm.Snapshot(); return len(s.Up) > 0 && s.Up[len(s.Up)-1] == float64(i) })
	}
	// A second update within the same second replaces the newest sample.
	clk.add(100 * time.Millisecond)
	feed <- api.Status{State: api.Connected, Stats: api.Stats{TxRate: 99, RxRate: 1099}}
	eventually(t, "last sample", func() bool {
		s := vm.Snapshot()
		return len(s.Up) > 0 && s.Up[len(s.Up)-1] == 99
	})
	s := vm.Snapshot()
	if len(s.Up) != viewmodel.Samples || len(s.Down) != viewmodel.Samples {
		t.Fatalf("window %d/%d samples, want %d", len(s.Up), len(s.Down), viewmodel.Samples)
	}
	for i := range viewmodel.Samples - 1 {
		if s.Up[i] != float64(16+i) || s.Down[i] != float64(1016+i) {
			t.Fatalf("sample %d = %v/%v, want %v/%v", i, s.Up[i], s.Down[i], 16+i, 1016+i)
		}
	}
	// Disconnecting records zero rates; a new session clears the graph.
	clk.add(time.Second)
	feed <- api.Status{State: api.Disconnected}
	clk.add(time.Second)
	feed <- api.Status{State: api.Connecting}
	eventually(t, "reset graph", func() bool { return len(vm.Snapshot().Up) == 1 })
}

func TestHelperUnreachableAndReconnect(t *testing.T) {
	f := vmtest.New()
	f.Down = true
	f.Stored = []api.Profile{{Name: "home"}}
	vm, _ := newVM(t, f)
	var changes atomic.Int32
	vm.Subscribe(func() { changes.Add(1) })
	runVM(t, vm)
	eventually(t, "unreachable", func() bool { return vm.Snapshot().Helper.Known })
	s := vm.Snapshot()
	if s.Helper.Reachable || !s.Helper.OfferInstall || s.Helper.Message != viewmodel.HelperNotRunning {
		t.Fatalf("helper = %+v", s.Helper)
	}
	if s.Conn.Text != viewmodel.HelperNotRunning || s.Conn.Tone != viewmodel.ToneError {
		t.Fatalf("conn = %q %q", s.Conn.Text, s.Conn.Tone)
	}
	if changes.Load() == 0 {
		t.Fatal("no change notification")
	}
	// Commands while unreachable say so.
	if err := vm.Connect(context.Background(), "home"); viewmodel.Message(err) != viewmodel.HelperNotRunning {
		t.Fatalf("connect error %v", err)
	}
	// The helper comes back: Run re-watches with backoff and loads the profiles.
	f.Lock(func(f *vmtest.Fake) {
		f.Down = false
		f.State = api.Status{State: api.Connected, HelperVersion: "1.2.3"}
	})
	eventually(t, "reachable", func() bool {
		s := vm.Snapshot()
		return s.Helper.Reachable && len(s.Profiles) == 1 && s.Conn.State == api.Connected
	})
	if v := vm.Snapshot().Helper.Version; v != "1.2.3" {
		t.Errorf("version %q", v)
	}
}

func TestWatchStreamBreaksThenResumes(t *testing.T) {
	f := vmtest.New()
	feed := make(chan api.Status)
	f.WatchFeed = feed
	vm, _ := newVM(t, f)
	runVM(t, vm)
	eventually(t, "first watch", func() bool { return vm.Snapshot().Helper.Reachable })
	f.Lock(func(f *vmtest.Fake) { f.WatchFeed = nil; f.State = api.Status{State: api.Reconnecting} })
	close(feed) // the stream breaks
	eventually(t, "second watch", func() bool {
		n := 0
		for _, c := range f.Calls() {
			if c == "watch" {
				n++
			}
		}
		return n >= 2 && vm.Snapshot().Conn.State == api.Reconnecting
	})
}

func TestImportShowsKeyLevelError(t *testing.T) {
	f := vmtest.New()
	f.Validate = func(s string) error {
		if strings.Contains(s, "mtu = 99999") {
			return &api.Error{Code: api.CodeInvalidConfig, Message: `client.toml: connection.mtu: 99999 is out of range (576..9000)`}
		}
		return nil
	}
	vm, _ := newVM(t, f)
	ctx := context.Background()
	_, err := vm.ImportFile(ctx, []byte("connection_string = \"vpn.example.net:443\"\n[connection]\nmtu = 99999\n"))
	want := `client.toml: connection.mtu: 99999 is out of range (576..9000)`
	if viewmodel.Message(err) != want {
		t.Fatalf("import error %q, want %q", viewmodel.Message(err), want)
	}
	if n := vm.Snapshot().Notice; n != want {
		t.Fatalf("notice %q", n)
	}
	p, err := vm.ImportFile(ctx, []byte("connection_string = \"vpn.example.net:443\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := vm.Snapshot()
	if s.Notice != "" || s.Selected != p.Name || len(s.Profiles) != 1 {
		t.Fatalf("after good import: %+v", s)
	}
	// A pasted link goes in as a link, other text as TOML.
	if _, err := vm.ImportText(ctx, "  mirage://abc@vpn.example.net:443#x \n"); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.ImportText(ctx, ""); err == nil {
		t.Fatal("empty clipboard imported")
	}
	if _, err := vm.ImportFile(ctx, make([]byte, api.MaxRequestBody+1)); err == nil || !strings.Contains(viewmodel.Message(err), "too large") {
		t.Fatalf("oversized import: %v", err)
	}
}

func TestEditRenameDelete(t *testing.T) {
	f := vmtest.New()
	f.Validate = func(s string) error {
		if strings.Contains(s, "bogus") {
			return &api.Error{Code: api.CodeInvalidConfig, Message: `client.toml: unknown key "bogus"`}
		}
		return nil
	}
	f.Stored = []api.Profile{{Name: "home"}, {Name: "work"}}
	f.TOMLs["home"] = "connection_string = \"a:1\"\n"
	vm, _ := newVM(t, f)
	ctx := context.Background()
	if err := vm.RefreshProfiles(ctx); err != nil {
		t.Fatal(err)
	}
	text, err := vm.LoadTOML(ctx, "home")
	if err != nil || text != f.TOMLs["home"] {
		t.Fatalf("load %q %v", text, err)
	}
	err = vm.SaveTOML(ctx, "home", text+"bogus = 1\n")
	if viewmodel.Message(err) != `client.toml: unknown key "bogus"` {
		t.Fatalf("save invalid: %v", err)
	}
	if f.TOMLs["home"] != text {
		t.Fatal("invalid TOML was saved")
	}
	if err := vm.SaveTOML(ctx, "home", "connection_string = \"b:2\"\n"); err != nil || f.TOMLs["home"] != "connection_string = \"b:2\"\n" {
		t.Fatalf("save valid: %v", err)
	}
	vm.Select("home")
	if err := vm.Rename(ctx, "home", " house "); err != nil {
		t.Fatal(err)
	}
	if s := vm.Snapshot(); s.Selected != "house" || s.Profiles[0].Name != "house" {
		t.Fatalf("after rename %+v", s)
	}
	if err := vm.Rename(ctx, "house", ""); err == nil {
		t.Fatal("empty rename accepted")
	}
	if err := vm.Delete(ctx, "house"); err != nil {
		t.Fatal(err)
	}
	if s := vm.Snapshot(); len(s.Profiles) != 1 || s.Selected != "work" {
		t.Fatalf("after delete %+v", s)
	}
	err = vm.Delete(ctx, "nope")
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeNotFound {
		t.Fatalf("delete missing: %v", err)
	}
}

func TestToggle(t *testing.T) {
	f := vmtest.New()
	f.Stored = []api.Profile{{Name: "home"}}
	vm, _ := newVM(t, f)
	ctx := context.Background()
	if err := vm.Toggle(ctx); err == nil {
		t.Fatal("connect with no profile selected succeeded")
	}
	if err := vm.RefreshProfiles(ctx); err != nil {
		t.Fatal(err)
	}
	if err := vm.Toggle(ctx); err != nil {
		t.Fatal(err)
	}
	if s := vm.Snapshot(); s.Conn.State != api.Connecting || !s.Conn.Active {
		t.Fatalf("after connect %+v", s.Conn)
	}
	if err := vm.Toggle(ctx); err != nil {
		t.Fatal(err)
	}
	if s := vm.Snapshot(); s.Conn.State != api.Disconnected {
		t.Fatalf("after disconnect %+v", s.Conn)
	}
	f.ConnErr = &api.Error{Code: api.CodeSystem, Message: "create TUN: operation not permitted"}
	err := vm.Connect(ctx, "home")
	if got := viewmodel.Message(err); got != "Could not set up the tunnel: create TUN: operation not permitted" {
		t.Fatalf("connect error %q", got)
	}
	calls := strings.Join(f.Calls(), ";")
	if calls != "profiles;connect home;disconnect;connect home" {
		t.Fatalf("calls %s", calls)
	}
}

func TestSetKillSwitch(t *testing.T) {
	f := vmtest.New()
	f.Stored = []api.Profile{{Name: "home"}, {Name: "work"}}
	vm, _ := newVM(t, f)
	ctx := context.Background()
	if err := vm.RefreshProfiles(ctx); err != nil {
		t.Fatal(err)
	}
	// Not connected: stored, no reconnect.
	if err := vm.SetKillSwitch(ctx, "home", true, false); err != nil {
		t.Fatal(err)
	}
	if p, ok := vm.Snapshot().Profile("home"); !ok || !p.KillSwitch || p.AllowLAN {
		t.Fatalf("after switching on: %+v", p)
	}
	// Connected to it: stored, then the tunnel reconnects to apply it.
	if err := vm.Connect(ctx, "home"); err != nil {
		t.Fatal(err)
	}
	if err := vm.SetKillSwitch(ctx, "home", true, true); err != nil {
		t.Fatal(err)
	}
	if p, _ := vm.Snapshot().Profile("home"); !p.AllowLAN {
		t.Fatalf("allow LAN not stored: %+v", p)
	}
	// Connected to another profile: no reconnect.
	if err := vm.SetKillSwitch(ctx, "work", true, false); err != nil {
		t.Fatal(err)
	}
	calls := strings.Join(f.Calls(), ";")
	want := "profiles;update home;profiles;connect home;update home;profiles;disconnect;connect home;update work;profiles"
	if calls != want {
		t.Fatalf("calls\n%s\nwant\n%s", calls, want)
	}
	if err := vm.SetKillSwitch(ctx, "nope", true, false); err == nil || vm.Snapshot().Notice == "" {
		t.Fatalf("unknown profile: err %v, notice %q", err, vm.Snapshot().Notice)
	}
	if _, ok := vm.Snapshot().Profile("nope"); ok {
		t.Fatal("Profile found a missing name")
	}
}

func TestLogs(t *testing.T) {
	f := vmtest.New()
	f.LogEntries = []api.LogEntry{
		{Seq: 1, Time: t0, Level: "info", Message: "connected", Attrs: map[string]string{"transport": "reality", "addr": "10.9.0.2"}},
		{Seq: 2, Time: t0, Level: "warn", Message: "path lost"},
	}
	vm, _ := newVM(t, f)
	runVM(t, vm)
	eventually(t, "logs", func() bool { return len(vm.Snapshot().Logs) == 2 })
	f.Lock(func(f *vmtest.Fake) {
		f.LogEntries = append(f.LogEntries, api.LogEntry{Seq: 3, Time: t0, Level: "error", Message: "boom"})
	})
	eventually(t, "third log", func() bool { return len(vm.Snapshot().Logs) == 3 })
	l := vm.Snapshot().Logs
	if !strings.HasSuffix(l[0], "INFO connected addr=10.9.0.2 transport=reality") || !strings.HasSuffix(l[2], "ERROR boom") {
		t.Fatalf("logs %q", l)
	}
}

func TestWatchRefusedShowsMessage(t *testing.T) {
	f := vmtest.New()
	vm, _ := newVM(t, vmtest.Refusing{Fake: f, Err: &api.Error{Code: api.CodeForbidden, Message: "user 1000 is not in group mirage"}})
	runVM(t, vm)
	eventually(t, "notice", func() bool {
		return vm.Snapshot().Notice == "The helper refused the request: user 1000 is not in group mirage"
	})
}
