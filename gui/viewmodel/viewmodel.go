// Package viewmodel is the GUI's logic without any GUI toolkit: it follows
// the helper's state over the local API, formats what the window and the
// tray show, and runs the user's commands. Views subscribe to changes and
// render Snapshot; everything here is tested without a display.
package viewmodel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mirage-vpn/mirage/core/api"
)

// Client is what the GUI needs from the helper's local API; core/apiclient
// implements it. Errors that are not *api.Error mean the helper could not
// be reached.
type Client interface {
	Status(ctx context.Context) (api.Status, error)
	Watch(ctx context.Context, fn func(api.Status)) error
	Profiles(ctx context.Context) ([]api.Profile, error)
	Profile(ctx context.Context, name string) (api.Profile, error)
	Import(ctx context.Context, req api.ImportRequest) (api.Profile, error)
	Update(ctx context.Context, name string, req api.UpdateRequest) (api.Profile, error)
	Delete(ctx context.Context, name string) error
	Connect(ctx context.Context, profile string) (api.Status, error)
	Disconnect(ctx context.Context) (api.Status, error)
	Logs(ctx context.Context, since int64) ([]api.LogEntry, error)
}

// Tone classifies a state for colouring the window and picking the tray icon.
type Tone string

const (
	ToneIdle  Tone = "idle"  // disconnected
	ToneBusy  Tone = "busy"  // connecting, reconnecting, disconnecting
	ToneOK    Tone = "ok"    // connected
	ToneError Tone = "error" // failed, or the helper is unreachable
)

// MaxLogLines bounds the log lines kept for the log view.
const MaxLogLines = 1000

// Connection is the formatted connection panel.
type Connection struct {
	State     api.State
	Text      string // "Connected", "Reconnecting in 4 s", "Error: …"
	Tone      Tone
	Error     string // human message when State is Failed
	Profile   string
	Server    string
	Transport string
	Addresses []string
	Uptime    string // empty unless connected
	UpRate    string
	DownRate  string
	Sent      string
	Received  string
	// Active is true when the toggle should read "Disconnect".
	Active bool
}

// Helper is the reachability of the privileged helper.
type Helper struct {
	Reachable bool
	Known     bool   // false until the first answer or failure
	Message   string // HelperNotRunning when unreachable
	Version   string
	// OfferInstall is true when the window should offer to install the helper.
	OfferInstall bool
}

// Snapshot is everything the views render, copied out under the lock.
type Snapshot struct {
	Helper   Helper
	Conn     Connection
	Profiles []api.Profile
	Selected string
	Up       []float64 // bytes/s, oldest first, at most Samples
	Down     []float64
	Logs     []string
	// Notice is the outcome of the last command that failed ("" when none).
	Notice string
}

// Options tunes a VM; the zero value is fine.
type Options struct {
	Logger      *slog.Logger
	Now         func() time.Time
	MinBackoff  time.Duration // first wait before re-watching (default 500 ms)
	MaxBackoff  time.Duration // cap (default 10 s)
	LogInterval time.Duration // log polling period (default 1 s)
}

// VM is the view-model. Its methods are safe for concurrent use.
type VM struct {
	c    Client
	log  *slog.Logger
	now  func() time.Time
	opts Options

	mu        sync.Mutex
	status    api.Status
	helper    Helper
	profiles  []api.Profile
	selected  string
	up, down  ring
	lastPush  time.Time
	logs      []string
	logSeq    int64
	notice    string
	listeners []func()
}

// New returns a VM that talks to the helper through c.
func New(c Client, opts Options) *VM {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 500 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(10*time.Second, opts.MinBackoff)
	}
	if opts.LogInterval <= 0 {
		opts.LogInterval = time.Second
	}
	return &VM{c: c, log: opts.Logger, now: opts.Now, opts: opts,
		status: api.Status{State: api.Disconnected}}
}

// Subscribe registers fn to be called (from any goroutine) after every
// change. Views wrap it in fyne.Do.
func (vm *VM) Subscribe(fn func()) {
	vm.mu.Lock()
	vm.listeners = append(vm.listeners, fn)
	vm.mu.Unlock()
}

func (vm *VM) changed() {
	vm.mu.Lock()
	ls := slices.Clone(vm.listeners)
	vm.mu.Unlock()
	for _, fn := range ls {
		fn()
	}
}

// Run follows the helper until ctx ends: it watches the status stream,
// re-dials with exponential backoff when the stream breaks, and polls logs.
func (vm *VM) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { vm.pollLogs(ctx) })
	defer wg.Wait()
	backoff := vm.opts.MinBackoff
	for ctx.Err() == nil {
		got := false
		err := vm.c.Watch(ctx, func(s api.Status) {
			if !got {
				got = true
				backoff = vm.opts.MinBackoff
				wasReachable := vm.setReachable(true, s.HelperVersion)
				if !wasReachable {
					vm.refreshProfilesQuiet(ctx)
				}
			}
			vm.apply(s)
		})
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("watch stream ended")
		}
		vm.log.Debug("helper watch ended", "err", err)
		if isUnreachable(err) {
			vm.setReachable(false, "")
		} else {
			// The helper answered but refused, e.g. forbidden for this user.
			vm.ReportError(Humanize(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, vm.opts.MaxBackoff)
	}
}

func (vm *VM) pollLogs(ctx context.Context) {
	t := time.NewTicker(vm.opts.LogInterval)
	defer t.Stop()
	for {
		vm.mu.Lock()
		ok := vm.helper.Reachable
		vm.mu.Unlock()
		if ok {
			_ = vm.RefreshLogs(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// setReachable records helper reachability and reports the previous value.
func (vm *VM) setReachable(ok bool, version string) bool {
	vm.mu.Lock()
	was, known := vm.helper.Reachable, vm.helper.Known
	vm.helper = Helper{Reachable: ok, Known: true, Version: version}
	if !ok {
		vm.helper.Message = HelperNotRunning
		vm.helper.OfferInstall = true
	}
	vm.mu.Unlock()
	if was != ok || !known {
		vm.changed()
	}
	return was
}

// apply takes a status from the helper and records one rate sample.
func (vm *VM) apply(s api.Status) {
	now := vm.now()
	vm.mu.Lock()
	vm.helper.Reachable, vm.helper.Known = true, true
	vm.helper.Message, vm.helper.OfferInstall = "", false
	if s.HelperVersion != "" {
		vm.helper.Version = s.HelperVersion
	}
	prev := vm.status
	vm.status = s
	idle := prev.State == "" || prev.State == api.Disconnected || prev.State == api.Failed
	if idle && (s.State == api.Connecting || s.State == api.Connected) {
		// A new session starts with an empty graph.
		vm.up.reset()
		vm.down.reset()
		vm.lastPush = time.Time{}
	}
	tx, rx := s.Stats.TxRate, s.Stats.RxRate
	if s.State != api.Connected {
		tx, rx = 0, 0
	}
	if vm.lastPush.IsZero() || now.Sub(vm.lastPush) >= 900*time.Millisecond {
		vm.up.push(tx)
		vm.down.push(rx)
		vm.lastPush = now
	} else {
		vm.up.setLast(tx)
		vm.down.setLast(rx)
	}
	if vm.selected == "" && s.Profile != "" {
		vm.selected = s.Profile
	}
	vm.mu.Unlock()
	vm.changed()
}

// Snapshot returns the current state, formatted.
func (vm *VM) Snapshot() Snapshot {
	now := vm.now()
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return Snapshot{
		Helper:   vm.helper,
		Conn:     formatConnection(vm.status, vm.helper, now),
		Profiles: slices.Clone(vm.profiles),
		Selected: vm.selected,
		Up:       vm.up.values(),
		Down:     vm.down.values(),
		Logs:     slices.Clone(vm.logs),
		Notice:   vm.notice,
	}
}

// Tone is the current tone, for the tray icon.
func (vm *VM) Tone() Tone { return vm.Snapshot().Conn.Tone }

func formatConnection(s api.Status, h Helper, now time.Time) Connection {
	c := Connection{
		State: s.State, Profile: s.Profile, Server: s.Server, Transport: s.Transport,
		Addresses: slices.Clone(s.Addresses),
		Sent:      FormatBytes(s.Stats.TxBytes), Received: FormatBytes(s.Stats.RxBytes),
		UpRate: FormatRate(0), DownRate: FormatRate(0),
	}
	switch s.State {
	case api.Connected:
		c.Text, c.Tone, c.Active = "Connected", ToneOK, true
		c.UpRate, c.DownRate = FormatRate(s.Stats.TxRate), FormatRate(s.Stats.RxRate)
		if !s.ConnectedAt.IsZero() {
			c.Uptime = FormatUptime(now.Sub(s.ConnectedAt))
		}
	case api.Connecting:
		c.Text, c.Tone, c.Active = "Connecting", ToneBusy, true
	case api.Reconnecting:
		c.Text, c.Tone, c.Active = "Reconnecting", ToneBusy, true
		if !s.NextRetry.IsZero() {
			if left := s.NextRetry.Sub(now); left > 0 {
				c.Text = fmt.Sprintf("Reconnecting in %d s", int(math.Ceil(left.Seconds())))
			}
		}
	case api.Disconnecting:
		c.Text, c.Tone = "Disconnecting", ToneBusy
	case api.Failed:
		c.Tone = ToneError
		c.Error = "Connection failed"
		if s.Error != nil {
			c.Error = humanizeAPI(s.Error)
		}
		c.Text = "Error: " + c.Error
	default:
		c.State = api.Disconnected
		c.Text, c.Tone = "Disconnected", ToneIdle
	}
	if h.Known && !h.Reachable {
		c.Text, c.Tone, c.Active = HelperNotRunning, ToneError, false
	}
	return c
}

// fail records the outcome of a failed command and returns it as an error
// carrying the human message.
func (vm *VM) fail(what string, err error) error {
	msg := Humanize(err)
	vm.mu.Lock()
	vm.notice = msg
	vm.mu.Unlock()
	if isUnreachable(err) {
		vm.setReachable(false, "")
	}
	vm.changed()
	vm.log.Debug("command failed", "cmd", what, "err", err)
	return &CommandError{Op: what, Message: msg, Err: err}
}

func (vm *VM) ok() {
	vm.mu.Lock()
	vm.notice = ""
	vm.mu.Unlock()
}

// CommandError is returned by the commands; Message is for the user.
type CommandError struct {
	Op      string
	Message string
	Err     error
}

func (e *CommandError) Error() string { return e.Op + ": " + e.Message }
func (e *CommandError) Unwrap() error { return e.Err }

// Message returns the human text of an error returned by a VM command.
func Message(err error) string {
	var ce *CommandError
	if errors.As(err, &ce) {
		return ce.Message
	}
	return Humanize(err)
}

// Select marks a profile as the one the toggle connects.
func (vm *VM) Select(name string) {
	vm.mu.Lock()
	vm.selected = name
	vm.mu.Unlock()
	vm.changed()
}

// RefreshProfiles reloads the profile list.
func (vm *VM) RefreshProfiles(ctx context.Context) error {
	ps, err := vm.c.Profiles(ctx)
	if err != nil {
		return vm.fail("list profiles", err)
	}
	vm.mu.Lock()
	vm.profiles = ps
	if vm.selected != "" && !slices.ContainsFunc(ps, func(p api.Profile) bool { return p.Name == vm.selected }) {
		vm.selected = ""
	}
	if vm.selected == "" && len(ps) > 0 {
		vm.selected = ps[0].Name
	}
	vm.mu.Unlock()
	vm.changed()
	return nil
}

func (vm *VM) refreshProfilesQuiet(ctx context.Context) {
	if err := vm.RefreshProfiles(ctx); err != nil {
		vm.log.Debug("refresh profiles", "err", err)
	}
}

// RefreshLogs fetches log lines newer than the last seen.
func (vm *VM) RefreshLogs(ctx context.Context) error {
	vm.mu.Lock()
	since := vm.logSeq
	vm.mu.Unlock()
	entries, err := vm.c.Logs(ctx, since)
	if err != nil {
		if isUnreachable(err) {
			vm.setReachable(false, "")
		}
		return fmt.Errorf("fetch logs: %w", err)
	}
	if len(entries) == 0 {
		return nil
	}
	vm.mu.Lock()
	for _, e := range entries {
		if e.Seq <= vm.logSeq && vm.logSeq != 0 {
			continue
		}
		vm.logs = append(vm.logs, FormatLog(e))
		vm.logSeq = max(vm.logSeq, e.Seq)
	}
	if n := len(vm.logs); n > MaxLogLines {
		vm.logs = slices.Clone(vm.logs[n-MaxLogLines:])
	}
	vm.mu.Unlock()
	vm.changed()
	return nil
}

// FormatLog renders one log entry as a single line.
func FormatLog(e api.LogEntry) string {
	var b strings.Builder
	b.WriteString(e.Time.Local().Format("15:04:05"))
	b.WriteByte(' ')
	b.WriteString(strings.ToUpper(e.Level))
	b.WriteByte(' ')
	b.WriteString(e.Message)
	keys := make([]string, 0, len(e.Attrs))
	for k := range e.Attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%s", k, e.Attrs[k])
	}
	return b.String()
}

// Connect connects the named profile (the selected one when name is "").
func (vm *VM) Connect(ctx context.Context, name string) error {
	if name == "" {
		vm.mu.Lock()
		name = vm.selected
		vm.mu.Unlock()
	}
	if name == "" {
		return vm.fail("connect", &api.Error{Code: api.CodeBadRequest, Message: "Import or select a profile first"})
	}
	vm.mu.Lock()
	vm.selected = name
	vm.mu.Unlock()
	s, err := vm.c.Connect(ctx, name)
	if err != nil {
		return vm.fail("connect", err)
	}
	vm.ok()
	vm.apply(s)
	return nil
}

// Disconnect tears the tunnel down.
func (vm *VM) Disconnect(ctx context.Context) error {
	s, err := vm.c.Disconnect(ctx)
	if err != nil {
		return vm.fail("disconnect", err)
	}
	vm.ok()
	vm.apply(s)
	return nil
}

// Toggle connects the selected profile when idle and disconnects otherwise.
func (vm *VM) Toggle(ctx context.Context) error {
	if vm.Snapshot().Conn.Active {
		return vm.Disconnect(ctx)
	}
	return vm.Connect(ctx, "")
}

// ImportFile imports the contents of a client.toml file.
func (vm *VM) ImportFile(ctx context.Context, data []byte) (api.Profile, error) {
	if len(data) > api.MaxRequestBody {
		return api.Profile{}, vm.fail("import", &api.Error{Code: api.CodeBadRequest,
			Message: fmt.Sprintf("the file is too large (%d bytes, at most %d)", len(data), api.MaxRequestBody)})
	}
	return vm.importReq(ctx, api.ImportRequest{TOML: string(data)})
}

// ImportText imports pasted text: a mirage:// link or client.toml text.
func (vm *VM) ImportText(ctx context.Context, text string) (api.Profile, error) {
	t := strings.TrimSpace(text)
	if t == "" {
		return api.Profile{}, vm.fail("import", &api.Error{Code: api.CodeBadRequest, Message: "the clipboard is empty"})
	}
	if strings.HasPrefix(strings.ToLower(t), "mirage://") {
		return vm.importReq(ctx, api.ImportRequest{Link: t})
	}
	return vm.ImportFile(ctx, []byte(text))
}

func (vm *VM) importReq(ctx context.Context, req api.ImportRequest) (api.Profile, error) {
	p, err := vm.c.Import(ctx, req)
	if err != nil {
		return api.Profile{}, vm.fail("import", err)
	}
	vm.ok()
	vm.mu.Lock()
	vm.selected = p.Name
	vm.mu.Unlock()
	if err := vm.RefreshProfiles(ctx); err != nil {
		return p, err
	}
	return p, nil
}

// Rename renames a stored profile.
func (vm *VM) Rename(ctx context.Context, from, to string) error {
	to = strings.TrimSpace(to)
	if to == "" {
		return vm.fail("rename", &api.Error{Code: api.CodeBadRequest, Message: "the new name is empty"})
	}
	p, err := vm.c.Update(ctx, from, api.UpdateRequest{Name: to})
	if err != nil {
		return vm.fail("rename", err)
	}
	vm.ok()
	vm.mu.Lock()
	if vm.selected == from {
		vm.selected = p.Name
	}
	vm.mu.Unlock()
	return vm.RefreshProfiles(ctx)
}

// Delete removes a stored profile.
func (vm *VM) Delete(ctx context.Context, name string) error {
	if err := vm.c.Delete(ctx, name); err != nil {
		return vm.fail("delete", err)
	}
	vm.ok()
	return vm.RefreshProfiles(ctx)
}

// LoadTOML returns a profile's client.toml text for editing.
func (vm *VM) LoadTOML(ctx context.Context, name string) (string, error) {
	p, err := vm.c.Profile(ctx, name)
	if err != nil {
		return "", vm.fail("load profile", err)
	}
	return p.TOML, nil
}

// SaveTOML replaces a profile's TOML. The helper validates it; when invalid
// nothing is saved and the returned error's Message names the key.
func (vm *VM) SaveTOML(ctx context.Context, name, text string) error {
	if strings.TrimSpace(text) == "" {
		return vm.fail("save profile", &api.Error{Code: api.CodeInvalidConfig, Message: "the profile is empty"})
	}
	if _, err := vm.c.Update(ctx, name, api.UpdateRequest{TOML: text}); err != nil {
		return vm.fail("save profile", err)
	}
	vm.ok()
	return vm.RefreshProfiles(ctx)
}

// SetKillSwitch stores a profile's kill switch and allow-LAN switches.
// When that profile is the active one the tunnel is reconnected so the
// change takes effect now (switching the kill switch on cannot open a gap:
// traffic was unprotected until then anyway).
func (vm *VM) SetKillSwitch(ctx context.Context, name string, killSwitch, allowLAN bool) error {
	if name == "" {
		return vm.fail("kill switch", &api.Error{Code: api.CodeBadRequest, Message: "Import or select a profile first"})
	}
	if _, err := vm.c.Update(ctx, name, api.UpdateRequest{KillSwitch: &killSwitch, AllowLAN: &allowLAN}); err != nil {
		return vm.fail("kill switch", err)
	}
	vm.ok()
	if err := vm.RefreshProfiles(ctx); err != nil {
		return err
	}
	if c := vm.Snapshot().Conn; c.Active && c.Profile == name {
		if err := vm.Disconnect(ctx); err != nil {
			return err
		}
		return vm.Connect(ctx, name)
	}
	return nil
}

// Profile returns the listed profile name, if any.
func (s Snapshot) Profile(name string) (api.Profile, bool) {
	i := slices.IndexFunc(s.Profiles, func(p api.Profile) bool { return p.Name == name })
	if i < 0 {
		return api.Profile{}, false
	}
	return s.Profiles[i], true
}

// ReportError shows a message from the views (e.g. an unreadable file) as
// the notice.
func (vm *VM) ReportError(msg string) {
	vm.mu.Lock()
	vm.notice = msg
	vm.mu.Unlock()
	vm.changed()
}

// ClearNotice dismisses the last command error.
func (vm *VM) ClearNotice() {
	vm.ok()
	vm.changed()
}
