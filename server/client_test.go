package server

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/client"
	"github.com/mirage-vpn/mirage/core/config"
	"github.com/mirage-vpn/mirage/core/engine"
	"github.com/mirage-vpn/mirage/core/netcfg"
	"github.com/mirage-vpn/mirage/core/tundev"
	"github.com/mirage-vpn/mirage/core/tundev/tundevtest"
)

// recordingNet is a netcfg.Configurator that remembers what it was asked.
type recordingNet struct {
	mu     sync.Mutex
	sets   []netcfg.Config
	closed int
}

func (r *recordingNet) Set(c netcfg.Config) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sets = append(r.sets, c)
	return nil
}

func (r *recordingNet) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed++
	return nil
}

func clientConfig(t *testing.T, addr, user, pw string) *config.Client {
	t.Helper()
	c := config.DefaultClient()
	c.ConnectionString = addr
	c.Authentication.Username = user
	c.Authentication.Password = pw
	c.Network.Routes = []string{"0.0.0.0/0"}
	c.Network.ExcludedRoutes = []string{"192.0.2.0/25"}
	c.Connection.ReconnectMaxBackoffS = 2
	c.Network.DNSServers = []string{"192.0.2.54"}
	c.Network.IPv4Address = "198.51.100.77"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientRunConfiguresAndReconnects(t *testing.T) {
	r := newRig(t, nil)
	cfg := clientConfig(t, r.addr, "alice", "alice-pw")
	nw := &recordingNet{}
	var tunMu sync.Mutex
	var ctun *tundevtest.ChannelTUN
	events := make(chan client.Event, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- client.Run(ctx, client.Options{
			Config: cfg, Net: nw, Dialers: []engine.Dialer{testDialer{r.addr}},
			CreateTUN: func(name string, mtu int) (tundev.Device, error) {
				tunMu.Lock()
				defer tunMu.Unlock()
				if ctun != nil {
					t.Error("TUN created twice")
				}
				ctun = tundevtest.New(mtu)
				return ctun, nil
			},
			OnEvent: func(e client.Event) { events <- e },
		})
	}()
	waitState := func(want client.State) client.Event {
		t.Helper()
		timeout := time.After(15 * time.Second)
		for {
			select {
			case e := <-events:
				if e.State == want {
					return e
				}
			case <-timeout:
				t.Fatalf("no %v event", want)
			}
		}
	}
	e := waitState(client.Connected)
	if client.FormatConnected(e) == "" || e.Protocol != "tcp-tls" {
		t.Fatalf("event %+v", e)
	}
	nw.mu.Lock()
	got := nw.sets[0]
	nw.mu.Unlock()
	want4 := netip.MustParsePrefix("198.51.100.77/24") // [network] ipv4_address
	if got.Addrs[0] != want4 || got.MTU != 1420 || got.Interface != "chantun" {
		t.Fatalf("netcfg %+v", got)
	}
	// Server-pushed route first, then the profile's; server address bypassed.
	wantRoutes := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("0.0.0.0/0")}
	if len(got.Routes) != 2 || got.Routes[0] != wantRoutes[0] || got.Routes[1] != wantRoutes[1] {
		t.Fatalf("routes %v", got.Routes)
	}
	if len(got.Bypass) != 1 || got.Bypass[0] != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("bypass %v", got.Bypass)
	}
	if len(got.DNS) != 2 || got.DNS[0] != netip.MustParseAddr("192.0.2.54") || got.DNS[1] != netip.MustParseAddr("192.0.2.53") {
		t.Fatalf("dns %v (want the profile's, then the pushed server)", got.DNS)
	}
	if len(got.ExcludedRoutes) != 1 {
		t.Fatalf("excluded %v", got.ExcludedRoutes)
	}

	// Traffic flows.
	up := tundevtest.UDP(want4.Addr(), internet4, []byte("1"))
	ctun.Inbound <- up
	expect(t, r.tun.Outbound, up)

	// The server goes away and comes back on the same port: the client
	// reconnects, keeps its TUN and gets the same address.
	r.srv.Close()
	waitState(client.Reconnecting)
	r2 := restartRig(t, r)
	e = waitState(client.Connected)
	if e.Welcome.ClientAddrs[0] != want4 {
		t.Fatalf("address after reconnect: %v", e.Welcome.ClientAddrs)
	}
	up2 := tundevtest.UDP(want4.Addr(), internet4, []byte("2"))
	ctun.Inbound <- up2
	expect(t, r2.tun.Outbound, up2)

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if nw.closed != 1 {
		t.Fatalf("network config closed %d times", nw.closed)
	}
}

// restartRig starts a new server on the old rig's address.
func restartRig(t *testing.T, old *rig) *rig {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", old.addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	r := newRigAt(t, old.addr, nil)
	return r
}

func TestClientRunRejected(t *testing.T) {
	r := newRig(t, nil)
	cfg := clientConfig(t, r.addr, "alice", "wrong")
	nw := &recordingNet{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := client.Run(ctx, client.Options{
		Config: cfg, Net: nw, Dialers: []engine.Dialer{testDialer{r.addr}},
		CreateTUN: func(string, int) (tundev.Device, error) { return nil, errors.New("must not be called") },
	})
	if !errors.Is(err, client.ErrRejected) {
		t.Fatalf("got %v", err)
	}
	if len(nw.sets) != 0 || nw.closed != 0 {
		t.Fatal("network touched for a rejected client")
	}
}

func TestClientRunBackoffUntilServerAppears(t *testing.T) {
	// Reserve a port with nothing listening.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := clientConfig(t, addr, "alice", "alice-pw")
	var retries []time.Duration
	var mu sync.Mutex
	connected := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- client.Run(ctx, client.Options{
			Config: cfg, Net: &recordingNet{}, Dialers: []engine.Dialer{testDialer{addr}},
			CreateTUN: func(string, int) (tundev.Device, error) { return tundevtest.New(1420), nil },
			OnEvent: func(e client.Event) {
				mu.Lock()
				defer mu.Unlock()
				switch e.State {
				case client.Reconnecting:
					retries = append(retries, e.NextRetry)
				case client.Connected:
					close(connected)
				}
			},
		})
	}()
	time.Sleep(3500 * time.Millisecond) // retries at 1 s, 2 s (cap 2 s) ...
	newRigAt(t, addr, nil)
	select {
	case <-connected:
	case <-time.After(10 * time.Second):
		t.Fatal("never connected")
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(retries) < 2 || retries[0] != time.Second || retries[1] != 2*time.Second {
		t.Fatalf("backoff sequence %v, want 1s, 2s, 2s...", retries)
	}
	for _, d := range retries[1:] {
		if d != 2*time.Second {
			t.Fatalf("backoff above the cap: %v", retries)
		}
	}
}

// recordingFirewall counts kill switch changes.
type recordingFirewall struct {
	mu       sync.Mutex
	enabled  []netcfg.KillSwitch
	disabled int
}

func (f *recordingFirewall) Enable(k netcfg.KillSwitch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.enabled = append(f.enabled, k)
	return nil
}

func (f *recordingFirewall) Disable() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.disabled++
	return nil
}

// A network change re-applies the OS configuration and the kill switch and
// moves the session at once (same addresses, same TUN); during a
// reconnect backoff it cuts the wait short.
func TestClientRunNetworkChange(t *testing.T) {
	r := newRig(t, nil)
	cfg := clientConfig(t, r.addr, "alice", "alice-pw")
	cfg.Network.KillSwitch = true
	cfg.Connection.ReconnectMaxBackoffS = 30
	nw := &recordingNet{}
	fw := &recordingFirewall{}
	changes := make(chan struct{}, 1)
	events := make(chan client.Event, 32)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var ctun *tundevtest.ChannelTUN
	go func() {
		done <- client.Run(ctx, client.Options{
			Config: cfg, Net: nw, Firewall: fw, NetChanges: changes,
			Dialers: []engine.Dialer{testDialer{r.addr}},
			CreateTUN: func(name string, mtu int) (tundev.Device, error) {
				ctun = tundevtest.New(mtu)
				return ctun, nil
			},
			OnEvent: func(e client.Event) { events <- e },
		})
	}()
	waitState := func(want client.State, within time.Duration) client.Event {
		t.Helper()
		timeout := time.After(within)
		for {
			select {
			case e := <-events:
				if e.State == want {
					return e
				}
			case <-timeout:
				t.Fatalf("no %v event within %v", want, within)
			}
		}
	}
	first := waitState(client.Connected, 15*time.Second)
	counts := func() (int, int) {
		nw.mu.Lock()
		defer nw.mu.Unlock()
		fw.mu.Lock()
		defer fw.mu.Unlock()
		return len(nw.sets), len(fw.enabled)
	}
	sets0, en0 := counts()

	changes <- struct{}{}
	e := waitState(client.Reconnecting, 5*time.Second)
	if e.Err == nil || e.Err.Error() != "the network changed" {
		t.Fatalf("reconnect reason %v", e.Err)
	}
	second := waitState(client.Connected, 5*time.Second)
	if second.Welcome.ClientAddrs[0] != first.Welcome.ClientAddrs[0] {
		t.Fatalf("address changed across the move: %v -> %v", first.Welcome.ClientAddrs, second.Welcome.ClientAddrs)
	}
	sets1, en1 := counts()
	if sets1 != sets0+1 || en1 != en0+1 {
		t.Fatalf("after a network change: %d→%d network sets, %d→%d kill switch enables (want one more each)", sets0, sets1, en0, en1)
	}
	nw.mu.Lock()
	if !slices.Equal(nw.sets[sets1-1].Routes, nw.sets[sets0-1].Routes) {
		t.Errorf("re-applied config differs: %+v vs %+v", nw.sets[sets1-1], nw.sets[sets0-1])
	}
	nw.mu.Unlock()
	up := tundevtest.UDP(first.Welcome.ClientAddrs[0].Addr(), internet4, []byte("after move"))
	ctun.Inbound <- up
	expect(t, r.tun.Outbound, up)

	// Server gone: the client backs off (1 s, 2 s, 4 s ...); a network
	// change makes it try at once, so it is back well before the backoff.
	r.srv.Close()
	waitState(client.Reconnecting, 5*time.Second)
	start := time.Now()
	for range 3 { // let the backoff grow past a few seconds
		waitState(client.Reconnecting, 10*time.Second)
	}
	grown := time.Since(start)
	r2 := restartRig(t, r)
	changes <- struct{}{}
	waitState(client.Connected, 3*time.Second)
	t.Logf("backoff had grown for %v; reconnected right after the network change", grown)
	up2 := tundevtest.UDP(first.Welcome.ClientAddrs[0].Addr(), internet4, []byte("after change"))
	ctun.Inbound <- up2
	expect(t, r2.tun.Outbound, up2)

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if fw.disabled != 1 {
		t.Fatalf("kill switch disabled %d times", fw.disabled)
	}
}
