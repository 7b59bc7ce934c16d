// Package daemon is the logic of the privileged helper behind the desktop
// app: a profile store, one tunnel at a time driven by client.Run, its
// state machine and live statistics, and a log ring. It is a plain Go type
// (Connect, Disconnect, Status, ...); Handler is a thin HTTP+JSON codec
// around it implementing the core/api contract. The caller (mirage-helper)
// owns the listener and authenticates peers; the OS pieces (TUN, network
// configuration, crash cleanup) are injected.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mirage-vpn/mirage/core/api"
	"github.com/mirage-vpn/mirage/core/client"
	"github.com/mirage-vpn/mirage/core/config"
	"github.com/mirage-vpn/mirage/core/engine"
	"github.com/mirage-vpn/mirage/core/fec"
	"github.com/mirage-vpn/mirage/core/netcfg"
	"github.com/mirage-vpn/mirage/core/tundev"
)

// Options are the daemon's parts.
type Options struct {
	// ProfilesDir is the profile store: created 0700, one <name>.toml (0600)
	// per profile, written atomically.
	ProfilesDir string
	// CreateTUN opens the tunnel device.
	CreateTUN func(name string, mtu int) (tundev.Device, error)
	// SuperTUN: CreateTUN's devices take GSO super-packets (client.Options).
	SuperTUN bool
	// NewNet returns a fresh network configurator for each connection.
	NewNet func() (netcfg.Configurator, error)
	// Cleanup, when set, undoes the routes, DNS and TUN a crashed run left
	// behind; it is called before each connect. It must leave the kill
	// switch alone: a connect with kill_switch replaces it in one step (no
	// leak between), one without removes it through Firewall.
	Cleanup func() error
	// ResumeFile, when set, records the profile the user connected (0600,
	// atomic) until the user disconnects or the helper stops cleanly. A
	// helper that crashed and is restarted by its service manager finds it
	// and reconnects (Resume), and a kill switch the crashed run left on
	// stays closed all the while.
	ResumeFile string
	// Run runs one connection until its context ends; nil means client.Run.
	Run func(ctx context.Context, o client.Options) error
	// Logger receives the daemon's and the client's logs; the daemon also
	// keeps the last 1000 entries for /v1/logs. Nil discards (the ring
	// still records Info and above).
	Logger  *slog.Logger
	Version string
	// Firewall is the kill switch for profiles with [network] kill_switch.
	Firewall netcfg.Firewall
	// DialControl, when set, gives the dial control of a connection whose
	// TUN is named tunName ([network] interface_name), and NetChanges is
	// passed to every connection (see client.Options).
	DialControl func(tunName string) func(network, address string, c syscall.RawConn) error
	NetChanges  <-chan struct{}
}

// ErrClosed is returned by Connect after Close.
var ErrClosed = errors.New("the helper is shutting down")

// How often stats are sampled (and watchers updated while connected), and
// how often watchers get a heartbeat otherwise.
const (
	tickInterval = time.Second
	heartbeat    = 5 // ticks
)

// Daemon runs at most one tunnel and serves the local API.
type Daemon struct {
	opts  Options
	log   *slog.Logger
	logs  *logRing
	store *store
	run   func(ctx context.Context, o client.Options) error

	// opMu serializes Connect, Disconnect and Close.
	opMu sync.Mutex

	mu       sync.Mutex
	st       api.Status
	cur      *session // the running connection, nil if none
	pending  string   // profile being started (guards Delete)
	watchers map[chan struct{}]struct{}
	closed   bool

	done     chan struct{} // closed by Close: stops the ticker and watchers
	tickDone chan struct{}

	// For /v1/metrics (under mu): traffic of the connections that ended,
	// and how often a connection came up (first connect or reconnect).
	ended    api.Stats
	connects uint64
}

// session is one run of the client.
type session struct {
	profile string
	cancel  context.CancelFunc
	done    chan struct{}
	stats   *engine.Stats
	links   func() []engine.LinkInfo // while connected

	// Rate sampling (under Daemon.mu).
	lastTx, lastRx uint64
	lastAt         time.Time
}

// New creates the profile store directory and starts the stats sampler.
func New(o Options) (*Daemon, error) {
	if o.ProfilesDir == "" {
		return nil, errors.New("daemon: no profiles directory")
	}
	if o.CreateTUN == nil || o.NewNet == nil {
		return nil, errors.New("daemon: CreateTUN and NewNet are required")
	}
	inner := slog.DiscardHandler
	if o.Logger != nil {
		inner = o.Logger.Handler()
	}
	ring := newLogRing(maxLogEntries)
	log := slog.New(&teeHandler{inner: inner, ring: ring})
	st, err := openStore(o.ProfilesDir)
	if err != nil {
		return nil, err
	}
	d := &Daemon{
		opts: o, log: log, logs: ring, store: st, run: o.Run,
		st:       api.Status{State: api.Disconnected},
		watchers: map[chan struct{}]struct{}{},
		done:     make(chan struct{}),
		tickDone: make(chan struct{}),
	}
	if d.run == nil {
		d.run = client.Run
	}
	go d.ticker()
	return d, nil
}

// Status returns the current state with live counters.
func (d *Daemon) Status() api.Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.statusLocked()
}

func (d *Daemon) statusLocked() api.Status {
	s := d.st
	s.Addresses = append([]string(nil), d.st.Addresses...)
	if d.st.Error != nil {
		e := *d.st.Error
		s.Error = &e
	}
	if d.cur != nil {
		c := d.cur.stats
		s.Stats.TxBytes, s.Stats.RxBytes = c.TxBytes.Load(), c.RxBytes.Load()
		s.Stats.TxPackets, s.Stats.RxPackets = c.TxPackets.Load(), c.RxPackets.Load()
		if d.cur.links != nil && s.State == api.Connected {
			for _, l := range d.cur.links() {
				s.Connections = append(s.Connections, api.Connection{
					Transport: l.Transport, Local: l.Local, Remote: l.Remote, Family: l.Family,
					RTTMillis: float64(l.RTT.Microseconds()) / 1000, TxBytes: l.TxBytes, RxBytes: l.RxBytes,
					AgeSecs: l.Age.Seconds(), Congestion: l.Congestion, FEC: apiFEC(l.FEC),
				})
			}
		}
	}
	s.HelperVersion = d.opts.Version
	return s
}

// apiFEC is a connection's FEC counters for the local API (nil: no FEC).
func apiFEC(st *fec.ConnStats) *api.FEC {
	if st == nil {
		return nil
	}
	r := st.Recv
	return &api.FEC{Sending: st.Sending, Data: st.K, Parity: st.M, SendLoss: st.SendLoss,
		DataSent: st.DataSent, ParitySent: st.ParitySent,
		Seen: r.Data + r.Parity, Recovered: r.Recovered, Unrecoverable: r.Unrecoverable, Malformed: r.Malformed, RecvLoss: r.Loss}
}

// setLocked applies fn to the status and wakes the watchers.
func (d *Daemon) setLocked(fn func(s *api.Status)) {
	fn(&d.st)
	d.notifyLocked()
}

func (d *Daemon) notifyLocked() {
	for ch := range d.watchers {
		select {
		case ch <- struct{}{}:
		default: // an update is already pending; the watcher reads the latest
		}
	}
}

// Connect starts connecting the named profile and returns without waiting
// for the connection (watch the status). A different connected profile is
// disconnected first; connecting the profile already up is a no-op.
func (d *Daemon) Connect(name string) error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return ErrClosed
	}

	cfg, err := d.store.loadFor(name, func() { d.mu.Lock(); d.pending = name; d.mu.Unlock() })
	defer func() { d.mu.Lock(); d.pending = ""; d.mu.Unlock() }()
	if err != nil {
		return err
	}
	if _, err := cfg.UsableProtocols(client.Implemented); err != nil {
		return &api.Error{Code: api.CodeInvalidConfig, Message: err.Error()}
	}

	d.mu.Lock()
	if d.cur != nil && d.cur.profile == name {
		d.mu.Unlock()
		return nil
	}
	d.mu.Unlock()
	d.stop()

	if d.opts.Cleanup != nil {
		if err := d.opts.Cleanup(); err != nil {
			d.log.Warn("cleaning up a previous run", "err", err)
		}
	}
	if !cfg.Network.KillSwitch {
		// A kill switch left by a crashed run (or the previous profile)
		// would block this one.
		d.disableFirewall()
	}
	d.saveResume(name)
	netc, err := d.opts.NewNet()
	if err != nil {
		e := &api.Error{Code: api.CodeSystem, Message: "network configuration: " + err.Error()}
		d.mu.Lock()
		d.setLocked(func(s *api.Status) { *s = api.Status{State: api.Failed, Profile: name, Error: e} })
		d.mu.Unlock()
		d.log.Error("connect", "profile", name, "err", err)
		return e
	}

	ctx, cancel := context.WithCancel(context.Background())
	d.mu.Lock()
	if d.pending != "" {
		name = d.pending // renamed meanwhile
	}
	cur := &session{profile: name, cancel: cancel, done: make(chan struct{}), stats: &engine.Stats{}, lastAt: time.Now()}
	d.cur = cur
	d.setLocked(func(s *api.Status) { *s = api.Status{State: api.Connecting, Profile: name} })
	d.mu.Unlock()

	d.log.Info("connecting", "profile", name, "server", cfg.ConnectionString)
	opts := client.Options{
		Config:    cfg,
		CreateTUN: systemTUN(d.opts.CreateTUN),
		SuperTUN:  d.opts.SuperTUN,
		Net:       systemNet{netc},
		Logger:    d.log.With("profile", name),
		OnEvent:   func(e client.Event) { d.onEvent(cur, e) },
		Version:   d.opts.Version,
		Stats:     cur.stats,
		Firewall:  d.opts.Firewall,

		DialControl: dialControl(d.opts.DialControl, cfg.Network.InterfaceName),
		NetChanges:  d.opts.NetChanges,
	}
	go func() {
		defer close(cur.done)
		err := d.runSafe(ctx, opts)
		d.finished(cur, ctx, err)
	}()
	return nil
}

func dialControl(f func(string) func(string, string, syscall.RawConn) error, tun string) func(string, string, syscall.RawConn) error {
	if f == nil {
		return nil
	}
	return f(tun)
}

// runSafe turns a panic in the client into an error so the helper stays up.
func (d *Daemon) runSafe(ctx context.Context, o client.Options) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error: %v", r)
		}
	}()
	return d.run(ctx, o)
}

// Disconnect stops the connection and waits until the OS state is
// restored. Without a connection it clears a previous error. The user's
// intent is "no tunnel": the resume record goes, and so does a kill switch
// that a crashed run or a failed resume left blocking.
func (d *Daemon) Disconnect() error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	d.clearResume()
	if !d.stop() {
		d.disableFirewall()
		d.mu.Lock()
		if d.st.State == api.Failed {
			d.setLocked(func(s *api.Status) { *s = api.Status{State: api.Disconnected} })
		}
		d.mu.Unlock()
	}
	return nil
}

// Resume reconnects the profile of the resume record, if there is one: the
// helper was restarted after a crash while the user was connected. It
// reports the profile ("" without a record).
func (d *Daemon) Resume() (string, error) {
	if d.opts.ResumeFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(d.opts.ResumeFile)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("resume record: %w", err)
	}
	name := strings.TrimSpace(string(b))
	if name == "" {
		d.clearResume()
		return "", nil
	}
	d.log.Warn("the helper stopped while connected; reconnecting", "profile", name)
	if err := d.Connect(name); err != nil {
		// The record stays (and so does a kill switch) until the user
		// disconnects: the status shows why.
		d.mu.Lock()
		if d.cur == nil {
			e, ok := err.(*api.Error)
			if !ok {
				e = &api.Error{Code: api.CodeSystem, Message: err.Error()}
			}
			d.setLocked(func(s *api.Status) { *s = api.Status{State: api.Failed, Profile: name, Error: e} })
		}
		d.mu.Unlock()
		return name, fmt.Errorf("reconnect %q: %w", name, err)
	}
	return name, nil
}

func (d *Daemon) saveResume(name string) {
	if d.opts.ResumeFile == "" {
		return
	}
	if err := config.WriteFileAtomic(d.opts.ResumeFile, []byte(name+"\n"), 0o600); err != nil {
		d.log.Warn("saving the resume record", "err", err)
	}
}

func (d *Daemon) clearResume() {
	if d.opts.ResumeFile == "" {
		return
	}
	if err := os.Remove(d.opts.ResumeFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.log.Warn("removing the resume record", "err", err)
	}
}

func (d *Daemon) disableFirewall() {
	if d.opts.Firewall == nil {
		return
	}
	if err := d.opts.Firewall.Disable(); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		d.log.Warn("removing the kill switch", "err", err)
	}
}

// stop cancels the running connection, if any, and waits for it; it
// reports whether there was one. Called with opMu held.
func (d *Daemon) stop() bool {
	d.mu.Lock()
	cur := d.cur
	if cur == nil {
		d.mu.Unlock()
		return false
	}
	profile := cur.profile
	d.setLocked(func(s *api.Status) { s.State = api.Disconnecting; s.NextRetry = time.Time{} })
	d.mu.Unlock()
	d.log.Info("disconnecting", "profile", profile)
	cur.cancel()
	<-cur.done
	return true
}

// Close disconnects, waits, and stops the sampler and the watch streams.
func (d *Daemon) Close() error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	d.stop()
	d.clearResume() // a clean stop: nothing to resume
	close(d.done)
	<-d.tickDone
	return nil
}

func (d *Daemon) onEvent(cur *session, e client.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur != cur || d.st.State == api.Disconnecting {
		return
	}
	now := time.Now()
	switch e.State {
	case client.Connecting:
		d.setLocked(func(s *api.Status) { s.State = api.Connecting })
	case client.Connected:
		cur.links = e.Links
		d.connects++
		d.setLocked(func(s *api.Status) {
			s.State = api.Connected
			s.Error = nil
			s.NextRetry = time.Time{}
			s.Transport = e.Protocol
			s.Server = e.Server
			s.Addresses = nil
			if e.Welcome != nil {
				for _, p := range e.Welcome.ClientAddrs {
					s.Addresses = append(s.Addresses, p.String())
				}
			}
			if s.ConnectedAt.IsZero() {
				s.ConnectedAt = now
			}
			s.LastHandshake = now
		})
	case client.Reconnecting:
		cur.links = nil
		d.setLocked(func(s *api.Status) {
			s.State = api.Reconnecting
			s.NextRetry = now.Add(e.NextRetry)
			if e.Server != "" {
				s.Server = e.Server
			}
			if e.Err != nil {
				s.Error = &api.Error{Code: api.CodeNetwork, Message: e.Err.Error()}
			}
		})
	}
}

// finished records the end of a run.
func (d *Daemon) finished(cur *session, ctx context.Context, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur != cur {
		return
	}
	d.cur = nil
	d.ended.TxBytes += cur.stats.TxBytes.Load()
	d.ended.RxBytes += cur.stats.RxBytes.Load()
	d.ended.TxPackets += cur.stats.TxPackets.Load()
	d.ended.RxPackets += cur.stats.RxPackets.Load()
	stopped := ctx.Err() != nil
	if err == nil || (stopped && errors.Is(err, context.Canceled)) {
		d.log.Info("disconnected", "profile", cur.profile)
		d.setLocked(func(s *api.Status) { *s = api.Status{State: api.Disconnected} })
		return
	}
	e := classify(err)
	d.log.Error("connection ended", "profile", cur.profile, "code", e.Code, "err", err)
	d.setLocked(func(s *api.Status) { *s = api.Status{State: api.Failed, Profile: cur.profile, Error: e} })
}

// systemError marks failures of the OS pieces (TUN, routes, DNS).
type systemError struct{ err error }

func (e *systemError) Error() string { return e.err.Error() }
func (e *systemError) Unwrap() error { return e.err }

func systemTUN(create func(string, int) (tundev.Device, error)) func(string, int) (tundev.Device, error) {
	return func(name string, mtu int) (tundev.Device, error) {
		dev, err := create(name, mtu)
		if err != nil {
			return nil, &systemError{err}
		}
		return dev, nil
	}
}

// systemNet marks the configurator's errors as system errors.
type systemNet struct{ c netcfg.Configurator }

func (n systemNet) Set(cfg netcfg.Config) error {
	if err := n.c.Set(cfg); err != nil {
		return &systemError{err}
	}
	return nil
}

func (n systemNet) Close() error {
	if err := n.c.Close(); err != nil {
		return &systemError{err}
	}
	return nil
}

// classify maps a run's error to the API's error codes.
func classify(err error) *api.Error {
	var se *systemError
	var ne net.Error
	switch {
	case errors.Is(err, client.ErrRejected):
		return &api.Error{Code: api.CodeRejected, Message: "the server did not accept these credentials"}
	case errors.As(err, &se):
		return &api.Error{Code: api.CodeSystem, Message: err.Error()}
	case len(config.FieldErrors(err)) > 0:
		return &api.Error{Code: api.CodeInvalidConfig, Message: err.Error()}
	case errors.As(err, &ne), strings.HasPrefix(err.Error(), "resolve "):
		return &api.Error{Code: api.CodeNetwork, Message: err.Error()}
	}
	return &api.Error{Code: api.CodeInternal, Message: err.Error()}
}

// ticker samples the rates once a second and wakes the watchers: every tick
// while a connection runs, every few ticks otherwise.
func (d *Daemon) ticker() {
	defer close(d.tickDone)
	t := time.NewTicker(tickInterval)
	defer t.Stop()
	n := 0
	for {
		select {
		case <-d.done:
			d.mu.Lock()
			d.notifyLocked() // watchers see done and leave
			d.mu.Unlock()
			return
		case now := <-t.C:
			n++
			d.mu.Lock()
			if cur := d.cur; cur != nil {
				tx, rx := cur.stats.TxBytes.Load(), cur.stats.RxBytes.Load()
				if el := now.Sub(cur.lastAt).Seconds(); el > 0 {
					d.st.Stats.TxRate = float64(tx-cur.lastTx) / el
					d.st.Stats.RxRate = float64(rx-cur.lastRx) / el
				}
				cur.lastTx, cur.lastRx, cur.lastAt = tx, rx, now
				d.st.Stats.RTTMillis = float64(cur.stats.RTT.Load()) / 1e6
				d.notifyLocked()
			} else if n%heartbeat == 0 {
				d.notifyLocked()
			}
			d.mu.Unlock()
		}
	}
}

// watch registers a watcher: ch receives a token whenever the status may
// have changed. The returned func unregisters it.
func (d *Daemon) watch() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	d.mu.Lock()
	d.watchers[ch] = struct{}{}
	d.mu.Unlock()
	return ch, func() {
		d.mu.Lock()
		delete(d.watchers, ch)
		d.mu.Unlock()
	}
}

// activeProfile is the profile in use (connecting, connected or being
// started), "" if none.
func (d *Daemon) activeProfile() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur != nil {
		return d.cur.profile
	}
	return d.pending
}

// renamed follows a rename of the profile in use.
func (d *Daemon) renamed(from, to string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur != nil && d.cur.profile == from {
		d.cur.profile = to
		d.saveResume(to)
	}
	if d.pending == from {
		d.pending = to
	}
	if d.st.Profile == from {
		d.setLocked(func(s *api.Status) { s.Profile = to })
	}
}
