// Package vmtest provides an in-memory fake of the helper API for GUI tests.
package vmtest

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/mirage-vpn/mirage/core/api"
)

// ErrDial is what the fake returns while Down, like a dead socket.
var ErrDial = errors.New("helper not reachable: dial unix /run/mirage.sock: connect: no such file or directory")

// Fake is an in-memory helper implementing viewmodel.Client.
type Fake struct {
	mu         sync.Mutex
	Down       bool
	Stored     []api.Profile
	TOMLs      map[string]string
	State      api.Status
	LogEntries []api.LogEntry
	calls      []string
	ConnErr    error
	Watches    int
	WatchFeed  chan api.Status // statuses for the current Watch; closing it ends the stream
	// ConnectTo, when its State is set, is the status Connect switches to
	// (default: Connecting to the profile).
	ConnectTo api.Status
	// Validate returns an error for bad TOML, like the helper does.
	Validate func(string) error
}

// New returns an empty, reachable, disconnected fake.
func New() *Fake {
	return &Fake{TOMLs: map[string]string{}, State: api.Status{State: api.Disconnected}}
}

func (f *Fake) call(s string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
	if f.Down {
		return ErrDial
	}
	return nil
}

func (f *Fake) Status(ctx context.Context) (api.Status, error) {
	if err := f.call("status"); err != nil {
		return api.Status{}, err
	}
	return f.State, nil
}

func (f *Fake) Watch(ctx context.Context, fn func(api.Status)) error {
	if err := f.call("watch"); err != nil {
		return err
	}
	f.mu.Lock()
	f.Watches++
	feed := f.WatchFeed
	st := f.State
	f.mu.Unlock()
	fn(st)
	if feed == nil {
		<-ctx.Done()
		return ctx.Err()
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case s, ok := <-feed:
			if !ok {
				return errors.New("helper not reachable: stream closed")
			}
			fn(s)
		}
	}
}

func (f *Fake) Profiles(ctx context.Context) ([]api.Profile, error) {
	if err := f.call("profiles"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]api.Profile(nil), f.Stored...), nil
}

func (f *Fake) Profile(ctx context.Context, name string) (api.Profile, error) {
	if err := f.call("profile " + name); err != nil {
		return api.Profile{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.Stored {
		if p.Name == name {
			p.TOML = f.TOMLs[name]
			return p, nil
		}
	}
	return api.Profile{}, &api.Error{Code: api.CodeNotFound, Message: fmt.Sprintf("no profile %q", name)}
}

func (f *Fake) Import(ctx context.Context, req api.ImportRequest) (api.Profile, error) {
	if err := f.call("import"); err != nil {
		return api.Profile{}, err
	}
	if req.TOML != "" && f.Validate != nil {
		if err := f.Validate(req.TOML); err != nil {
			return api.Profile{}, err
		}
	}
	f.mu.Lock()
	name := req.Name
	if name == "" {
		name = fmt.Sprintf("server%d", len(f.Stored)+1)
	}
	p := api.Profile{Name: name, Server: "vpn.example.net:443", Protocols: []string{"reality"}}
	f.Stored = append(f.Stored, p)
	f.TOMLs[name] = req.TOML
	f.mu.Unlock()
	return p, nil
}

func (f *Fake) Update(ctx context.Context, name string, req api.UpdateRequest) (api.Profile, error) {
	if err := f.call("update " + name); err != nil {
		return api.Profile{}, err
	}
	if req.TOML != "" && f.Validate != nil {
		if err := f.Validate(req.TOML); err != nil {
			return api.Profile{}, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, p := range f.Stored {
		if p.Name != name {
			continue
		}
		if req.TOML != "" {
			f.TOMLs[name] = req.TOML
		}
		if req.KillSwitch != nil {
			p.KillSwitch = *req.KillSwitch
		}
		if req.AllowLAN != nil {
			p.AllowLAN = *req.AllowLAN
		}
		if req.Name != "" {
			f.TOMLs[req.Name] = f.TOMLs[name]
			delete(f.TOMLs, name)
			p.Name = req.Name
		}
		f.Stored[i] = p
		return p, nil
	}
	return api.Profile{}, &api.Error{Code: api.CodeNotFound, Message: fmt.Sprintf("no profile %q", name)}
}

func (f *Fake) Delete(ctx context.Context, name string) error {
	if err := f.call("delete " + name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, p := range f.Stored {
		if p.Name == name {
			f.Stored = append(f.Stored[:i], f.Stored[i+1:]...)
			return nil
		}
	}
	return &api.Error{Code: api.CodeNotFound, Message: fmt.Sprintf("no profile %q", name)}
}

func (f *Fake) Connect(ctx context.Context, profile string) (api.Status, error) {
	if err := f.call("connect " + profile); err != nil {
		return api.Status{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ConnErr != nil {
		return api.Status{}, f.ConnErr
	}
	f.State = api.Status{State: api.Connecting, Profile: profile}
	if f.ConnectTo.State != "" {
		f.State = f.ConnectTo
	}
	return f.State, nil
}

func (f *Fake) Disconnect(ctx context.Context) (api.Status, error) {
	if err := f.call("disconnect"); err != nil {
		return api.Status{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.State = api.Status{State: api.Disconnected}
	return f.State, nil
}

func (f *Fake) Logs(ctx context.Context, since int64) ([]api.LogEntry, error) {
	if err := f.call("logs"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []api.LogEntry
	for _, e := range f.LogEntries {
		if e.Seq > since {
			out = append(out, e)
		}
	}
	return out, nil
}

// Calls lists the calls made so far, e.g. "connect home".
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// Lock runs fn with the fake's lock held, for changing its fields while a
// VM is using it.
func (f *Fake) Lock(fn func(f *Fake)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// Refusing is a Fake whose Watch always fails with Err (an *api.Error
// such as forbidden).
type Refusing struct {
	*Fake
	Err error
}

// Watch returns r.Err.
func (r Refusing) Watch(ctx context.Context, fn func(api.Status)) error {
	_ = r.call("watch")
	return r.Err
}
