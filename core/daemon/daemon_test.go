package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/api"
	"github.com/mirage-vpn/mirage/core/client"
	"github.com/mirage-vpn/mirage/core/config"
	"github.com/mirage-vpn/mirage/core/engine"
	"github.com/mirage-vpn/mirage/core/netcfg"
	"github.com/mirage-vpn/mirage/core/tundev"
	"github.com/mirage-vpn/mirage/core/wire"
)

const profileTOML = `
connection_string = "vpn.example.com:443"
[connection]
enabled_protocols = ["tcp-tls"]
[tls]
pinned_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[authentication]
username = "alice"
password = "secret"
`

func profileFor(host string) string {
	return strings.Replace(profileTOML, "vpn.example.com", host, 1)
}

// fakeRun stands in for client.Run: it emits the events a real run would,
// counts traffic into the shared Stats, bounces (Reconnecting → Connected)
// on request and returns when its context ends.
type fakeRun struct {
	mu      sync.Mutex
	runs    []string // profile server per run, in start order
	ends    []string
	bounce  chan struct{}
	fail    error                                             // returned right after Connecting
	do      func(ctx context.Context, o client.Options) error // overrides everything
	running chan struct{}                                     // receives once per Connected
	hold    chan struct{}                                     // if set, Connected waits for it
}

func newFakeRun() *fakeRun {
	return &fakeRun{bounce: make(chan struct{}), running: make(chan struct{}, 16)}
}

var welcome = &wire.Welcome{
	ClientAddrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/24"), netip.MustParsePrefix("fd00::2/64")},
	MTU:         1420,
}

func (f *fakeRun) run(ctx context.Context, o client.Options) error {
	f.mu.Lock()
	f.runs = append(f.runs, o.Config.ConnectionString)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.ends = append(f.ends, o.Config.ConnectionString)
		f.mu.Unlock()
	}()
	if f.do != nil {
		return f.do(ctx, o)
	}
	o.OnEvent(client.Event{State: client.Connecting})
	if f.fail != nil {
		o.OnEvent(client.Event{State: client.Disconnected, Err: f.fail})
		return f.fail
	}
	connected := func() {
		o.OnEvent(client.Event{State: client.Connected, Welcome: welcome, Protocol: "tcp-tls", Server: "192.0.2.1:443",
			Links: func() []engine.LinkInfo {
				return []engine.LinkInfo{{Transport: "tcp-tls", Local: "192.0.2.2:40000", Remote: "192.0.2.1:443",
					Family: "ipv4", RTT: 1500 * time.Microsecond, TxBytes: 10, RxBytes: 20, Age: 3 * time.Second}}
			}})
		f.running <- struct{}{}
	}
	if f.hold != nil {
		<-f.hold
	}
	connected()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			o.OnEvent(client.Event{State: client.Disconnected})
			return nil
		case <-t.C:
			o.Stats.TxBytes.Add(1000)
			o.Stats.TxPackets.Add(1)
			o.Stats.RxBytes.Add(3000)
			o.Stats.RxPackets.Add(2)
		case <-f.bounce:
			o.OnEvent(client.Event{State: client.Reconnecting, Err: errors.New("connection lost: EOF"), NextRetry: time.Second, Server: "192.0.2.1:443"})
			time.Sleep(20 * time.Millisecond)
			connected()
		}
	}
}

func (f *fakeRun) started() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.runs...)
}

type fakeNet struct{}

func (fakeNet) Set(netcfg.Config) error { return nil }
func (fakeNet) Close() error            { return nil }

func newDaemon(t *testing.T, f *fakeRun) *Daemon {
	t.Helper()
	d, err := New(Options{
		ProfilesDir: filepath.Join(t.TempDir(), "profiles"),
		CreateTUN: func(string, int) (tundev.Device, error) {
			return nil, errors.New("no TUN in tests")
		},
		NewNet:  func() (netcfg.Configurator, error) { return fakeNet{}, nil },
		Run:     f.run,
		Version: "test-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// serve serves the daemon's handler on a unix socket and returns an HTTP
// client bound to it.
func serve(t *testing.T, d *Daemon) *http.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "h.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: d.Handler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", sock)
	}}}
	t.Cleanup(hc.CloseIdleConnections)
	return hc
}

func importProfile(t *testing.T, d *Daemon, name, text string) {
	t.Helper()
	if _, err := d.store.add(api.ImportRequest{Name: name, TOML: text}); err != nil {
		t.Fatalf("import %s: %v", name, err)
	}
}

// waitFor polls the status until ok (bounded).
func waitFor(t *testing.T, d *Daemon, what string, ok func(api.Status) bool) api.Status {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := d.Status()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; status %+v", what, s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func inState(st api.State) func(api.Status) bool {
	return func(s api.Status) bool { return s.State == st }
}

func TestStateMachine(t *testing.T) {
	f := newFakeRun()
	d := newDaemon(t, f)
	importProfile(t, d, "home", profileTOML)

	if s := d.Status(); s.State != api.Disconnected || s.HelperVersion != "test-1" {
		t.Fatalf("initial status %+v", s)
	}
	if err := d.Connect("home"); err != nil {
		t.Fatal(err)
	}
	s := waitFor(t, d, "connected", inState(api.Connected))
	if s.Profile != "home" || s.Transport != "tcp-tls" || s.Server != "192.0.2.1:443" {
		t.Errorf("connected status %+v", s)
	}
	if len(s.Connections) != 1 || s.Connections[0] != (api.Connection{Transport: "tcp-tls", Local: "192.0.2.2:40000",
		Remote: "192.0.2.1:443", Family: "ipv4", RTTMillis: 1.5, TxBytes: 10, RxBytes: 20, AgeSecs: 3}) {
		t.Errorf("connections %+v", s.Connections)
	}
	if strings.Join(s.Addresses, ",") != "192.0.2.2/24,fd00::2/64" {
		t.Errorf("addresses %v", s.Addresses)
	}
	if s.ConnectedAt.IsZero() || s.LastHandshake.IsZero() || s.Error != nil {
		t.Errorf("connected status %+v", s)
	}
	first := s.ConnectedAt

	// Connecting the same profile again is a no-op.
	if err := d.Connect("home"); err != nil {
		t.Fatal(err)
	}
	if n := len(f.started()); n != 1 {
		t.Fatalf("%d runs after reconnecting the same profile, want 1", n)
	}

	time.Sleep(10 * time.Millisecond)
	f.bounce <- struct{}{}
	r := waitFor(t, d, "reconnecting", inState(api.Reconnecting))
	if r.Error == nil || r.Error.Code != api.CodeNetwork || !strings.Contains(r.Error.Message, "connection lost") {
		t.Errorf("reconnecting error %+v", r.Error)
	}
	if r.NextRetry.IsZero() {
		t.Error("reconnecting without next_retry")
	}
	s = waitFor(t, d, "connected again", inState(api.Connected))
	if s.Error != nil || !s.NextRetry.IsZero() {
		t.Errorf("connected after bounce %+v", s)
	}
	if !s.ConnectedAt.Equal(first) {
		t.Errorf("connected_at moved on reconnect: %v -> %v", first, s.ConnectedAt)
	}
	if !s.LastHandshake.After(first) {
		t.Errorf("last_handshake %v not after %v", s.LastHandshake, first)
	}

	if err := d.Disconnect(); err != nil {
		t.Fatal(err)
	}
	// Disconnect waits for the run to end.
	if s := d.Status(); s.State != api.Disconnected || s.Profile != "" || s.Stats != (api.Stats{}) {
		t.Errorf("after disconnect %+v", s)
	}
	f.mu.Lock()
	ends := len(f.ends)
	f.mu.Unlock()
	if ends != 1 {
		t.Errorf("run not finished after Disconnect")
	}
	// Disconnect without a connection is fine.
	if err := d.Disconnect(); err != nil {
		t.Fatal(err)
	}
}

func TestRejected(t *testing.T) {
	f := newFakeRun()
	f.fail = fmt.Errorf("session: %w", client.ErrRejected)
	d := newDaemon(t, f)
	importProfile(t, d, "home", profileTOML)
	if err := d.Connect("home"); err != nil {
		t.Fatal(err)
	}
	s := waitFor(t, d, "error", inState(api.Failed))
	if s.Error == nil || s.Error.Code != api.CodeRejected || s.Error.Message != "the server did not accept these credentials" || s.Profile != "home" {
		t.Fatalf("status %+v err %+v", s, s.Error)
	}
	// Disconnect acknowledges the error.
	d.Disconnect()
	if s := d.Status(); s.State != api.Disconnected || s.Error != nil {
		t.Fatalf("after disconnect %+v", s)
	}
	// A new connect after an error starts a new run.
	f.fail = nil
	if err := d.Connect("home"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, d, "connected", inState(api.Connected))
}

func TestSystemErrors(t *testing.T) {
	f := newFakeRun()
	var tunName string
	var tunMTU int
	f.do = func(ctx context.Context, o client.Options) error {
		o.OnEvent(client.Event{State: client.Connecting})
		tunName, tunMTU = "mirage0", 1420
		if _, err := o.CreateTUN(tunName, tunMTU); err != nil {
			return fmt.Errorf("create tun %s: %w", tunName, err)
		}
		return nil
	}
	d := newDaemon(t, f)
	importProfile(t, d, "home", profileTOML)
	if err := d.Connect("home"); err != nil {
		t.Fatal(err)
	}
	s := waitFor(t, d, "error", inState(api.Failed))
	if s.Error.Code != api.CodeSystem || !strings.Contains(s.Error.Message, "no TUN in tests") {
		t.Fatalf("error %+v", s.Error)
	}

	// The configurator's errors are system errors too.
	f.do = func(ctx context.Context, o client.Options) error {
		if err := o.Net.Set(netcfg.Config{}); err != nil {
			return fmt.Errorf("configure network: %w", err)
		}
		return nil
	}
	d.opts.NewNet = func() (netcfg.Configurator, error) { return failingNet{}, nil }
	d.Connect("home")
	s = waitFor(t, d, "error", func(s api.Status) bool { return s.State == api.Failed && strings.Contains(s.Error.Message, "route") })
	if s.Error.Code != api.CodeSystem {
		t.Fatalf("error %+v", s.Error)
	}

	// NewNet failing fails Connect synchronously.
	d.opts.NewNet = func() (netcfg.Configurator, error) { return nil, errors.New("no netlink") }
	err := d.Connect("home")
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeSystem {
		t.Fatalf("Connect with failing NewNet: %v", err)
	}
	if s := d.Status(); s.State != api.Failed || s.Error.Code != api.CodeSystem {
		t.Fatalf("status %+v", s)
	}
}

type failingNet struct{}

func (failingNet) Set(netcfg.Config) error { return errors.New("add route: permission denied") }
func (failingNet) Close() error            { return nil }

func TestClassify(t *testing.T) {
	fe := &config.FieldError{File: "x.toml", Key: "connection_string", Msg: "bad"}
	for _, tc := range []struct {
		err  error
		code string
	}{
		{fmt.Errorf("x: %w", client.ErrRejected), api.CodeRejected},
		{&systemError{errors.New("tun")}, api.CodeSystem},
		{fmt.Errorf("create tun: %w", &systemError{errors.New("tun")}), api.CodeSystem},
		{errors.Join(fe), api.CodeInvalidConfig},
		{fmt.Errorf("resolve vpn.example.com: %w", &net.DNSError{Err: "no such host", Name: "vpn.example.com"}), api.CodeNetwork},
		{errors.New("resolve vpn.example.com: no addresses"), api.CodeNetwork},
		{&net.OpError{Op: "dial", Err: errors.New("refused")}, api.CodeNetwork},
		{errors.New("something odd"), api.CodeInternal},
	} {
		if got := classify(tc.err); got.Code != tc.code || got.Message == "" {
			t.Errorf("classify(%v) = %+v, want %s", tc.err, got, tc.code)
		}
	}
}

func TestPanicInRunIsAnError(t *testing.T) {
	f := newFakeRun()
	f.do = func(ctx context.Context, o client.Options) error { panic("boom") }
	d := newDaemon(t, f)
	importProfile(t, d, "home", profileTOML)
	d.Connect("home")
	s := waitFor(t, d, "error", inState(api.Failed))
	if s.Error.Code != api.CodeInternal || !strings.Contains(s.Error.Message, "boom") {
		t.Fatalf("error %+v", s.Error)
	}
}

func TestSwitchProfile(t *testing.T) {
	f := newFakeRun()
	d := newDaemon(t, f)
	importProfile(t, d, "a", profileFor("a.example.com"))
	importProfile(t, d, "b", profileFor("b.example.com"))
	d.Connect("a")
	waitFor(t, d, "a connected", func(s api.Status) bool { return s.State == api.Connected && s.Profile == "a" })
	if err := d.Connect("b"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, d, "b connected", func(s api.Status) bool { return s.State == api.Connected && s.Profile == "b" })
	f.mu.Lock()
	defer f.mu.Unlock()
	// a ended before b started.
	if strings.Join(f.runs, " ") != "a.example.com:443 b.example.com:443" || len(f.ends) != 1 || f.ends[0] != "a.example.com:443" {
		t.Fatalf("runs %v ends %v", f.runs, f.ends)
	}
}

func TestConnectErrors(t *testing.T) {
	f := newFakeRun()
	d := newDaemon(t, f)
	// A build without QUIC: a profile that needs it is an invalid config.
	client.Implemented[config.ProtoQUIC] = false
	t.Cleanup(func() { client.Implemented[config.ProtoQUIC] = true })
	importProfile(t, d, "quic only", strings.Replace(profileTOML, `["tcp-tls"]`, `["quic"]`, 1))
	for _, tc := range []struct{ name, code string }{
		{"nope", api.CodeNotFound},
		{"../etc/passwd", api.CodeBadRequest},
		{"", api.CodeBadRequest},
		{"quic only", api.CodeInvalidConfig},
	} {
		err := d.Connect(tc.name)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != tc.code {
			t.Errorf("Connect(%q) = %v, want %s", tc.name, err, tc.code)
		}
	}
	if n := len(f.started()); n != 0 || d.Status().State != api.Disconnected {
		t.Fatalf("%d runs, status %+v", n, d.Status())
	}
}

// watchLines opens /v1/watch and delivers decoded lines.
func watchLines(t *testing.T, hc *http.Client, ctx context.Context) <-chan api.Status {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://h/v1/watch", nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("watch: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	ch := make(chan api.Status, 1000)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var s api.Status
			if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
				t.Errorf("bad watch line %q: %v", sc.Text(), err)
				return
			}
			select {
			case ch <- s:
			default:
			}
		}
	}()
	return ch
}

func next(t *testing.T, ch <-chan api.Status, within time.Duration) api.Status {
	t.Helper()
	select {
	case s, ok := <-ch:
		if !ok {
			t.Fatal("watch stream ended")
		}
		return s
	case <-time.After(within):
		t.Fatalf("no watch update within %v", within)
	}
	panic("unreachable")
}

func watcherCount(d *Daemon) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.watchers)
}

func TestWatch(t *testing.T) {
	f := newFakeRun()
	d := newDaemon(t, f)
	importProfile(t, d, "home", profileTOML)
	hc := serve(t, d)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := watchLines(t, hc, ctx)

	// The current status at once.
	if s := next(t, ch, 500*time.Millisecond); s.State != api.Disconnected || s.HelperVersion != "test-1" {
		t.Fatalf("first status %+v", s)
	}
	f.hold = make(chan struct{})
	d.Connect("home")
	if s := next(t, ch, time.Second); s.State != api.Connecting || s.Profile != "home" {
		t.Fatalf("after connect %+v", s)
	}
	close(f.hold)
	seen := map[api.State]bool{}
	deadline := time.After(3 * time.Second)
	for !seen[api.Connected] {
		select {
		case s := <-ch:
			seen[s.State] = true
		case <-deadline:
			t.Fatalf("states seen %v", seen)
		}
	}
	// While connected, about one update a second with rates from the
	// shared counters (the fake adds 50 kB/s up, 150 kB/s down).
	var withRate api.Status
	start := time.Now()
	for time.Since(start) < 4*time.Second {
		s := next(t, ch, 2*time.Second)
		if s.State == api.Connected && s.Stats.TxRate > 0 {
			withRate = s
			break
		}
	}
	st := withRate.Stats
	if st.TxRate < 10_000 || st.TxRate > 100_000 || st.RxRate < 2*st.TxRate || st.TxBytes == 0 || st.RxPackets == 0 {
		t.Fatalf("stats %+v", st)
	}
	// Periodic updates keep coming without state changes.
	a := next(t, ch, 2*time.Second)
	b := next(t, ch, 2*time.Second)
	if b.Stats.TxBytes <= a.Stats.TxBytes && a.Stats.TxBytes <= st.TxBytes {
		t.Errorf("counters not advancing: %d %d %d", st.TxBytes, a.Stats.TxBytes, b.Stats.TxBytes)
	}

	// A client that goes away frees its watcher.
	if n := watcherCount(d); n != 1 {
		t.Fatalf("%d watchers, want 1", n)
	}
	cancel()
	for i := 0; watcherCount(d) != 0; i++ {
		if i > 500 {
			t.Fatal("watcher not released after the client left")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWatchHeartbeatAndClose(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a heartbeat")
	}
	d := newDaemon(t, newFakeRun())
	hc := serve(t, d)
	ch := watchLines(t, hc, context.Background())
	next(t, ch, 500*time.Millisecond)
	// Nothing changes: the next line is the heartbeat, ~5 s later.
	t0 := time.Now()
	next(t, ch, 7*time.Second)
	if el := time.Since(t0); el < 3*time.Second {
		t.Errorf("heartbeat after %v, want about 5 s", el)
	}
	// Close ends the stream.
	d.Close()
	select {
	case _, ok := <-ch:
		for ok {
			_, ok = <-ch
		}
	case <-time.After(3 * time.Second):
		t.Fatal("watch stream still open after Close")
	}
}

func TestSlowWatcherDoesNotBlock(t *testing.T) {
	f := newFakeRun()
	d := newDaemon(t, f)
	importProfile(t, d, "a", profileFor("a.example.com"))
	importProfile(t, d, "b", profileFor("b.example.com"))
	// One registered watcher that never reads, and one HTTP watcher whose
	// client never reads its body.
	_, unwatch := d.watch()
	defer unwatch()
	hc := serve(t, d)
	req, _ := http.NewRequest("GET", "http://h/v1/watch", nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()

	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 40 {
			d.Connect([]string{"a", "b"}[i%2])
			<-f.running
		}
		d.Disconnect()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("state changes blocked by slow watchers")
	}
	// The lagging HTTP watcher catches up with the latest state.
	sc := bufio.NewScanner(resp.Body)
	var last api.Status
	deadline := time.Now().Add(3 * time.Second)
	for last.State != api.Disconnected && time.Now().Before(deadline) && sc.Scan() {
		json.Unmarshal(sc.Bytes(), &last)
	}
	if last.State != api.Disconnected {
		t.Fatalf("slow watcher ended at %+v", last)
	}
}

func TestLogs(t *testing.T) {
	d := newDaemon(t, newFakeRun())
	hc := serve(t, d)
	d.log.Info("hello", "k", "v", slog.Group("g", "x", 1))
	d.log.Debug("hidden") // below Info, the discarding inner handler takes nothing
	d.log.With("profile", "home").WithGroup("net").Warn("route", "dst", "0.0.0.0/0")

	var es []api.LogEntry
	getJSON(t, hc, "/v1/logs", 200, &es)
	if len(es) != 2 {
		t.Fatalf("entries %+v", es)
	}
	if es[0].Message != "hello" || es[0].Level != "INFO" || es[0].Attrs["k"] != "v" || es[0].Attrs["g.x"] != "1" || es[0].Time.IsZero() {
		t.Errorf("entry 0 %+v", es[0])
	}
	if es[1].Message != "route" || es[1].Level != "WARN" || es[1].Attrs["profile"] != "home" || es[1].Attrs["net.dst"] != "0.0.0.0/0" {
		t.Errorf("entry 1 %+v", es[1])
	}
	var newer []api.LogEntry
	getJSON(t, hc, fmt.Sprintf("/v1/logs?since=%d", es[0].Seq), 200, &newer)
	if len(newer) != 1 || newer[0].Seq != es[1].Seq {
		t.Errorf("since %d: %+v", es[0].Seq, newer)
	}
	getJSON(t, hc, fmt.Sprintf("/v1/logs?since=%d", es[1].Seq), 200, &newer)
	if len(newer) != 0 {
		t.Errorf("since last: %+v", newer)
	}
	var ae api.Error
	getJSON(t, hc, "/v1/logs?since=abc", 400, &ae)
	if ae.Code != api.CodeBadRequest || !strings.Contains(ae.Message, "since") {
		t.Errorf("bad since: %+v", ae)
	}

	// The ring keeps the last 1000.
	for i := range 1100 {
		d.log.Info("line", "i", i)
	}
	getJSON(t, hc, "/v1/logs", 200, &es)
	if len(es) != 1000 || es[999].Attrs["i"] != "1099" || es[0].Attrs["i"] != "100" || es[999].Seq != es[0].Seq+999 {
		t.Fatalf("ring: %d entries, first %+v last %+v", len(es), es[0], es[len(es)-1])
	}
}

func getJSON(t *testing.T, hc *http.Client, path string, code int, out any) {
	t.Helper()
	resp, err := hc.Get("http://h" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != code {
		t.Fatalf("GET %s: %d %s, want %d", path, resp.StatusCode, b, code)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, b)
		}
	}
}

func TestCloseStopsConnection(t *testing.T) {
	f := newFakeRun()
	d := newDaemon(t, f)
	importProfile(t, d, "home", profileTOML)
	d.Connect("home")
	waitFor(t, d, "connected", inState(api.Connected))
	d.Close()
	f.mu.Lock()
	ends := len(f.ends)
	f.mu.Unlock()
	if ends != 1 || d.Status().State != api.Disconnected {
		t.Fatalf("after Close: ends %d status %+v", ends, d.Status())
	}
	if err := d.Connect("home"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Connect after Close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// fakeFirewall counts what the daemon asks of the kill switch.
type fakeFirewall struct {
	mu       sync.Mutex
	disables int
}

func (f *fakeFirewall) Enable(netcfg.KillSwitch) error { return nil }
func (f *fakeFirewall) Disable() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.disables++
	return nil
}
func (f *fakeFirewall) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.disables
}

// newResumeDaemon is a daemon with a resume record at resume and a fake
// firewall, on the profiles in dir.
func newResumeDaemon(t *testing.T, f *fakeRun, dir, resume string, fw *fakeFirewall) *Daemon {
	t.Helper()
	d, err := New(Options{
		ProfilesDir: filepath.Join(dir, "profiles"),
		CreateTUN:   func(string, int) (tundev.Device, error) { return nil, errors.New("no TUN in tests") },
		NewNet:      func() (netcfg.Configurator, error) { return fakeNet{}, nil },
		Run:         f.run,
		Firewall:    fw,
		ResumeFile:  resume,
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// The resume record follows the user's intent: written on connect, kept
// while connected (a crash leaves it), removed by disconnect and by a
// clean stop; a restarted helper reconnects the recorded profile without
// touching the kill switch.
func TestResumeAfterCrash(t *testing.T) {
	dir := t.TempDir()
	resume := filepath.Join(dir, "resume")
	ks := strings.Replace(profileTOML, "[authentication]", "[network]\nkill_switch = true\n[authentication]", 1)

	f := newFakeRun()
	fw := &fakeFirewall{}
	d := newResumeDaemon(t, f, dir, resume, fw)
	importProfile(t, d, "home", ks)
	if err := d.Connect("home"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, d, "connected", inState(api.Connected))
	if b, err := os.ReadFile(resume); err != nil || strings.TrimSpace(string(b)) != "home" {
		t.Fatalf("resume record %q, %v", b, err)
	}
	if fw.count() != 0 {
		t.Fatal("connecting a kill-switch profile removed the kill switch first (a leak window)")
	}
	// "Crash": the helper goes away without Close; the record stays.
	// A new helper resumes the profile and leaves the firewall alone.
	f2 := newFakeRun()
	fw2 := &fakeFirewall{}
	d2 := newResumeDaemon(t, f2, dir, resume, fw2)
	t.Cleanup(func() { d2.Close(); d.Close() })
	if name, err := d2.Resume(); err != nil || name != "home" {
		t.Fatalf("resume: %q, %v", name, err)
	}
	if s := waitFor(t, d2, "reconnected", inState(api.Connected)); s.Profile != "home" {
		t.Fatalf("resumed %+v", s)
	}
	if fw2.count() != 0 {
		t.Fatal("resuming removed the kill switch")
	}
	// The user disconnects: record gone, and nothing to resume later.
	if err := d2.Disconnect(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(resume); !os.IsNotExist(err) {
		t.Fatalf("resume record after disconnect: %v", err)
	}
	if name, err := d2.Resume(); err != nil || name != "" {
		t.Fatalf("resume without a record: %q, %v", name, err)
	}
	// A profile without kill switch removes a leftover one; a clean stop
	// removes the record.
	importProfile(t, d2, "plain", profileTOML)
	before := fw2.count()
	if err := d2.Connect("plain"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, d2, "connected", inState(api.Connected))
	if fw2.count() != before+1 {
		t.Fatal("a profile without kill switch kept a leftover kill switch")
	}
	d2.Close()
	if _, err := os.Stat(resume); !os.IsNotExist(err) {
		t.Fatalf("resume record after a clean stop: %v", err)
	}
}

// A resume that cannot connect (the profile is gone) fails visibly and
// keeps blocking until the user disconnects, which removes the kill switch.
func TestResumeFailureKeepsBlockingUntilDisconnect(t *testing.T) {
	dir := t.TempDir()
	resume := filepath.Join(dir, "resume")
	if err := os.WriteFile(resume, []byte("gone\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fw := &fakeFirewall{}
	d := newResumeDaemon(t, newFakeRun(), dir, resume, fw)
	t.Cleanup(func() { d.Close() })
	if _, err := d.Resume(); err == nil {
		t.Fatal("resuming a missing profile succeeded")
	}
	if s := d.Status(); s.State != api.Failed || s.Profile != "gone" || s.Error == nil {
		t.Fatalf("status after a failed resume: %+v", s)
	}
	if fw.count() != 0 {
		t.Fatal("a failed resume opened the kill switch")
	}
	if err := d.Disconnect(); err != nil {
		t.Fatal(err)
	}
	if fw.count() != 1 || d.Status().State != api.Disconnected {
		t.Fatalf("disconnect after a failed resume: %d disables, status %+v", fw.count(), d.Status())
	}
	if _, err := os.Stat(resume); !os.IsNotExist(err) {
		t.Fatalf("resume record after disconnect: %v", err)
	}
}

// Each connection's dial control is made for its profile's TUN name, so
// the socket binder can refuse to bind to the tunnel itself.
func TestDialControlPerProfile(t *testing.T) {
	f := newFakeRun()
	var mu sync.Mutex
	var names []string
	d, err := New(Options{
		ProfilesDir: filepath.Join(t.TempDir(), "profiles"),
		CreateTUN:   func(string, int) (tundev.Device, error) { return nil, errors.New("no TUN in tests") },
		NewNet:      func() (netcfg.Configurator, error) { return fakeNet{}, nil },
		Run:         f.run,
		DialControl: func(tun string) func(string, string, syscall.RawConn) error {
			mu.Lock()
			names = append(names, tun)
			mu.Unlock()
			return func(string, string, syscall.RawConn) error { return nil }
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	importProfile(t, d, "home", strings.Replace(profileTOML, "[authentication]", "[network]\ninterface_name = \"mtest7\"\n[authentication]", 1))
	if err := d.Connect("home"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, d, "connected", inState(api.Connected))
	mu.Lock()
	defer mu.Unlock()
	if len(names) != 1 || names[0] != "mtest7" {
		t.Fatalf("dial control made for %q, want the profile's TUN mtest7", names)
	}
}
