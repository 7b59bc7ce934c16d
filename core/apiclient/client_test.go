package apiclient_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/api"
	"github.com/mirage-vpn/mirage/core/apiclient"
	"github.com/mirage-vpn/mirage/core/client"
	"github.com/mirage-vpn/mirage/core/config"
	"github.com/mirage-vpn/mirage/core/daemon"
	"github.com/mirage-vpn/mirage/core/netcfg"
	"github.com/mirage-vpn/mirage/core/tundev"
	"github.com/mirage-vpn/mirage/core/wire"
)

const profileTOML = `
connection_string = "vpn.example.com:443"
[tls]
pinned_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[authentication]
username = "alice"
password = "secret"
`

type nopNet struct{}

func (nopNet) Set(netcfg.Config) error { return nil }
func (nopNet) Close() error            { return nil }

// fakeRun connects at once, counts traffic and stays up until cancelled;
// the "bad" profile's credentials are rejected.
func fakeRun(ctx context.Context, o client.Options) error {
	o.OnEvent(client.Event{State: client.Connecting})
	if o.Config.Authentication.Username == "mallory" {
		return client.ErrRejected
	}
	o.OnEvent(client.Event{State: client.Connected, Protocol: "tcp-tls", Server: "192.0.2.1:443",
		Welcome: &wire.Welcome{ClientAddrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/24")}}})
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			o.Stats.TxBytes.Add(100)
			o.Stats.RxBytes.Add(100)
		}
	}
}

// start runs a daemon behind a unix socket and returns a client for it.
func start(t *testing.T) (*daemon.Daemon, *apiclient.Client, string) {
	t.Helper()
	dir := t.TempDir()
	d, err := daemon.New(daemon.Options{
		ProfilesDir: filepath.Join(dir, "profiles"),
		CreateTUN:   func(string, int) (tundev.Device, error) { return nil, errors.New("no TUN") },
		NewNet:      func() (netcfg.Configurator, error) { return nopNet{}, nil },
		Run:         fakeRun,
		Version:     "v-test",
	})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "helper.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: d.Handler()}
	go srv.Serve(ln)
	c := apiclient.New(apiclient.Dial(sock))
	t.Cleanup(func() {
		c.Close()
		d.Close()
		srv.Close()
	})
	return d, c, sock
}

func apiCode(t *testing.T, err error, code string) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != code {
		t.Fatalf("error %v, want *api.Error %s", err, code)
	}
	if errors.Is(err, apiclient.ErrUnreachable) {
		t.Fatalf("API error %v also reports unreachable", err)
	}
}

func TestClientMethods(t *testing.T) {
	_, c, _ := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	s, err := c.Status(ctx)
	if err != nil || s.State != api.Disconnected || s.HelperVersion != "v-test" {
		t.Fatalf("Status: %+v %v", s, err)
	}
	ps, err := c.Profiles(ctx)
	if err != nil || len(ps) != 0 {
		t.Fatalf("Profiles: %+v %v", ps, err)
	}

	p, err := c.Import(ctx, api.ImportRequest{TOML: profileTOML})
	if err != nil || p.Name != "vpn.example.com" || p.Username != "alice" {
		t.Fatalf("Import: %+v %v", p, err)
	}
	_, err = c.Import(ctx, api.ImportRequest{TOML: profileTOML})
	apiCode(t, err, api.CodeConflict)
	_, err = c.Import(ctx, api.ImportRequest{Name: "x", TOML: "nonsense ="})
	apiCode(t, err, api.CodeInvalidConfig)
	if _, err := c.Import(ctx, api.ImportRequest{Name: "bad", TOML: strings.Replace(profileTOML, "alice", "mallory", 1)}); err != nil {
		t.Fatal(err)
	}

	p, err = c.Profile(ctx, "vpn.example.com")
	if err != nil || p.TOML == "" {
		t.Fatalf("Profile: %+v %v", p, err)
	}
	if _, err := config.ParseClient([]byte(p.TOML), "p.toml"); err != nil {
		t.Fatalf("stored TOML: %v", err)
	}
	_, err = c.Profile(ctx, "nope")
	apiCode(t, err, api.CodeNotFound)
	// Names with spaces and odd characters are escaped, not interpreted.
	_, err = c.Profile(ctx, "../x y?z")
	apiCode(t, err, api.CodeBadRequest)

	p, err = c.Update(ctx, "vpn.example.com", api.UpdateRequest{Name: "Home VPN"})
	if err != nil || p.Name != "Home VPN" {
		t.Fatalf("Update: %+v %v", p, err)
	}
	_, err = c.Update(ctx, "Home VPN", api.UpdateRequest{Name: "bad"})
	apiCode(t, err, api.CodeConflict)

	ps, err = c.Profiles(ctx)
	if err != nil || len(ps) != 2 || ps[0].Name != "Home VPN" || ps[1].Name != "bad" {
		t.Fatalf("Profiles: %+v %v", ps, err)
	}

	// Watch in the background while connecting.
	wctx, wcancel := context.WithCancel(ctx)
	updates := make(chan api.Status, 100)
	werr := make(chan error, 1)
	go func() {
		werr <- c.Watch(wctx, func(s api.Status) {
			select {
			case updates <- s:
			default:
			}
		})
	}()
	if s := <-updates; s.State != api.Disconnected {
		t.Fatalf("first watch update %+v", s)
	}

	s, err = c.Connect(ctx, "Home VPN")
	if err != nil || s.Profile != "Home VPN" {
		t.Fatalf("Connect: %+v %v", s, err)
	}
	_, err = c.Connect(ctx, "nope")
	apiCode(t, err, api.CodeNotFound)
	for s.State != api.Connected || s.Stats.TxRate == 0 {
		select {
		case s = <-updates:
		case <-time.After(5 * time.Second):
			t.Fatalf("no connected update with rates; last %+v", s)
		}
	}
	if len(s.Addresses) != 1 || s.Transport != "tcp-tls" {
		t.Fatalf("watched %+v", s)
	}
	apiCode(t, c.Delete(ctx, "Home VPN"), api.CodeConflict)

	s, err = c.Disconnect(ctx)
	if err != nil || s.State != api.Disconnected {
		t.Fatalf("Disconnect: %+v %v", s, err)
	}

	// A rejected profile: the error arrives through the status.
	if _, err := c.Connect(ctx, "bad"); err != nil {
		t.Fatal(err)
	}
	for s.State != api.Failed {
		select {
		case s = <-updates:
		case <-time.After(5 * time.Second):
			t.Fatalf("no error update; last %+v", s)
		}
	}
	if s.Error == nil || s.Error.Code != api.CodeRejected {
		t.Fatalf("rejected: %+v", s)
	}

	wcancel()
	if err := <-werr; !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch after cancel: %v", err)
	}

	if err := c.Delete(ctx, "Home VPN"); err != nil {
		t.Fatal(err)
	}
	apiCode(t, c.Delete(ctx, "Home VPN"), api.CodeNotFound)

	logs, err := c.Logs(ctx, 0)
	if err != nil || len(logs) == 0 {
		t.Fatalf("Logs: %d %v", len(logs), err)
	}
	var sawImport bool
	for _, e := range logs {
		sawImport = sawImport || e.Message == "profile imported"
	}
	if !sawImport {
		t.Errorf("logs lack the import: %+v", logs)
	}
	last := logs[len(logs)-1].Seq
	newer, err := c.Logs(ctx, last)
	if err != nil || len(newer) != 0 {
		t.Fatalf("Logs(since last): %+v %v", newer, err)
	}
}

func TestUnreachable(t *testing.T) {
	c := apiclient.New(apiclient.Dial(filepath.Join(t.TempDir(), "missing.sock")))
	ctx := context.Background()
	_, err := c.Status(ctx)
	if !errors.Is(err, apiclient.ErrUnreachable) {
		t.Fatalf("Status without a helper: %v", err)
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		t.Fatalf("transport error looks like an API error: %v", err)
	}
	if err := c.Watch(ctx, func(api.Status) {}); !errors.Is(err, apiclient.ErrUnreachable) {
		t.Fatalf("Watch without a helper: %v", err)
	}
	if _, err := c.Profiles(ctx); !errors.Is(err, apiclient.ErrUnreachable) {
		t.Fatalf("Profiles without a helper: %v", err)
	}
}

func TestWatchEndsWhenHelperStops(t *testing.T) {
	d, c, _ := start(t)
	errc := make(chan error, 1)
	got := make(chan struct{}, 10)
	go func() {
		errc <- c.Watch(context.Background(), func(api.Status) {
			select {
			case got <- struct{}{}:
			default:
			}
		})
	}()
	<-got
	d.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, apiclient.ErrUnreachable) {
			t.Fatalf("Watch after the helper stopped: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch still running after the helper stopped")
	}
}

func TestDefaultSocket(t *testing.T) {
	if s := apiclient.DefaultSocket(); s == "" {
		t.Fatal("no default socket")
	}
}

// A helper (or something else on the socket) answering without an api.Error
// body still gives *api.Error; a garbled watch line ends Watch with an error.
func TestNonAPIAnswers(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "odd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream exploded", http.StatusBadGateway)
	})
	mux.HandleFunc("GET /v1/profiles", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusForbidden)
	})
	mux.HandleFunc("GET /v1/watch", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("{\"state\":\"connected\"}\nnot json\n"))
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := apiclient.New(apiclient.Dial(sock))
	defer c.Close()
	ctx := context.Background()

	_, err = c.Status(ctx)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeInternal || !strings.Contains(ae.Message, "HTTP 502") || !strings.Contains(ae.Message, "upstream exploded") {
		t.Fatalf("502: %v", err)
	}
	_, err = c.Profiles(ctx)
	apiCode(t, err, api.CodeForbidden)
	var got []api.State
	err = c.Watch(ctx, func(s api.Status) { got = append(got, s.State) })
	if err == nil || !strings.Contains(err.Error(), "bad update") || len(got) != 1 || got[0] != api.Connected {
		t.Fatalf("Watch: %v, got %v", err, got)
	}
}
