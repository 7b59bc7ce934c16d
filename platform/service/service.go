// Package service registers mirage-helper with the OS service manager
// (systemd or SysV init on Linux, launchd on macOS, rc.d on FreeBSD, the
// SCM on Windows) through github.com/kardianos/service, and is the entry
// point when the manager runs it.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"runtime"
	"strings"
	"syscall"
	"time"

	ksvc "github.com/kardianos/service"
)

// Service identity.
const (
	Name        = "mirage-helper"
	DisplayName = "Mirage VPN helper"
	Description = "Privileged helper of the Mirage VPN desktop app: runs the tunnel and serves its local API."
	// Group is the Unix group whose members may use the helper's API.
	Group = "mirage"
)

// StopTimeout bounds how long the program gets to shut down (disconnect,
// restore routes and DNS) after the service manager asks it to stop.
const StopTimeout = 30 * time.Second

// Manager installs and controls the service. The zero value acts on the
// real system; the fields let tests observe the side effects instead.
type Manager struct {
	// Exec runs an administration command (groupadd, usermod); nil runs it.
	Exec func(name string, args ...string) error
	// LookupGroup reports whether a group exists; nil uses os/user.
	LookupGroup func(name string) (bool, error)
	// LookupUserID returns the user name of a uid; nil uses os/user.
	LookupUserID func(uid string) (string, error)
	// Getenv reads the environment; nil uses os.Getenv.
	Getenv func(string) string
	// EtcDir is the root of /etc/rc?.d for SysV link cleanup; "" is /etc.
	EtcDir string
	// Logger receives progress notes; nil discards.
	Logger *slog.Logger
}

// Install registers exe with args (e.g. "run") as the service, to start at
// boot. On Linux it first makes sure the mirage group exists and adds the
// user who ran the installer through sudo or pkexec to it.
func Install(exe string, args []string) error { return (&Manager{}).Install(exe, args) }

// Uninstall stops and removes the service.
func Uninstall() error { return (&Manager{}).Uninstall() }

// Start starts the installed service.
func Start() error { return (&Manager{}).Start() }

// Stop stops the service.
func Stop() error { return (&Manager{}).Stop() }

// Status describes the service: "running", "stopped" or "not installed".
func Status() (string, error) { return (&Manager{}).Status() }

// Install registers exe with args as the service.
func (m *Manager) Install(exe string, args []string) error {
	if exe == "" || !isAbs(exe) {
		return fmt.Errorf("install %s: executable path %q must be absolute", Name, exe)
	}
	if runtime.GOOS == "linux" {
		if err := m.ensureGroup(); err != nil {
			return fmt.Errorf("install %s: %w", Name, err)
		}
	}
	s, err := newService(exe, args, nopProgram{})
	if err != nil {
		return err
	}
	m.logger().Info("installing service", "name", Name, "manager", s.Platform(), "exec", exe, "args", args)
	if err := s.Install(); err != nil {
		return fmt.Errorf("install %s (%s): %w", Name, s.Platform(), err)
	}
	return nil
}

// Uninstall stops the service if it runs and removes it.
func (m *Manager) Uninstall() error {
	s, err := newService("", nil, nopProgram{})
	if err != nil {
		return err
	}
	if st, err := s.Status(); err == nil && st == ksvc.StatusRunning {
		if err := s.Stop(); err != nil {
			m.logger().Warn("stopping the service before uninstall", "err", err)
		}
	}
	if err := s.Uninstall(); err != nil {
		return fmt.Errorf("uninstall %s (%s): %w", Name, s.Platform(), err)
	}
	if s.Platform() == "unix-systemv" {
		// kardianos/service leaves its /etc/rc?.d links behind.
		if err := m.removeRCLinks(); err != nil {
			return fmt.Errorf("uninstall %s: %w", Name, err)
		}
	}
	return nil
}

// Start starts the service.
func (m *Manager) Start() error {
	s, err := newService("", nil, nopProgram{})
	if err != nil {
		return err
	}
	if err := s.Start(); err != nil {
		return fmt.Errorf("start %s (%s): %w", Name, s.Platform(), err)
	}
	return nil
}

// Stop stops the service.
func (m *Manager) Stop() error {
	s, err := newService("", nil, nopProgram{})
	if err != nil {
		return err
	}
	if err := s.Stop(); err != nil {
		return fmt.Errorf("stop %s (%s): %w", Name, s.Platform(), err)
	}
	return nil
}

// Status describes the service.
func (m *Manager) Status() (string, error) {
	s, err := newService("", nil, nopProgram{})
	if err != nil {
		return "", err
	}
	st, err := s.Status()
	switch {
	case errors.Is(err, ksvc.ErrNotInstalled):
		return "not installed", nil
	case err != nil && s.Platform() == "unix-systemv":
		// The SysV script's "status" exits 1 when stopped, which
		// kardianos/service reports as an error.
		if _, serr := os.Stat("/etc/init.d/" + Name); serr == nil {
			return "stopped", nil
		}
		return "not installed", nil
	case err != nil:
		return "", fmt.Errorf("status of %s (%s): %w", Name, s.Platform(), err)
	}
	switch st {
	case ksvc.StatusRunning:
		return "running", nil
	case ksvc.StatusStopped:
		return "stopped", nil
	}
	return "unknown", nil
}

// Run is the service's entry point: it runs run until the service manager
// (or, interactively, SIGINT/SIGTERM) stops it, then cancels run's context
// and waits up to StopTimeout for it to return. It returns run's error.
//
// On Windows under the SCM, the kardianos/service control loop is used. On
// Unix the managers only send SIGTERM, which is handled directly: the
// library's Unix Run cannot learn that the program ended on its own.
func Run(run func(ctx context.Context) error) error {
	if runtime.GOOS != "windows" || ksvc.Interactive() {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return run(ctx)
	}
	p := &program{run: run, done: make(chan struct{})}
	s, err := newService("", nil, p)
	if err != nil {
		return err
	}
	if err := s.Run(); err != nil {
		return fmt.Errorf("service %s: %w", Name, err)
	}
	return p.err
}

// program adapts a run function to kardianos/service.Interface.
type program struct {
	run    func(ctx context.Context) error
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func (p *program) Start(s ksvc.Service) error {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() {
		defer close(p.done)
		p.err = p.run(ctx)
		if ctx.Err() == nil {
			// Ended on its own: exit so the SCM's recovery can restart it.
			fmt.Fprintf(os.Stderr, "%s: stopped unexpectedly: %v\n", Name, p.err)
			os.Exit(1)
		}
	}()
	return nil
}

func (p *program) Stop(s ksvc.Service) error {
	p.cancel()
	select {
	case <-p.done:
		return nil
	case <-time.After(StopTimeout):
		return fmt.Errorf("%s did not stop within %v", Name, StopTimeout)
	}
}

// nopProgram is the Interface for control commands, which never run it.
type nopProgram struct{}

func (nopProgram) Start(ksvc.Service) error { return nil }
func (nopProgram) Stop(ksvc.Service) error  { return nil }

// config is the service definition.
func config(exe string, args []string) *ksvc.Config {
	c := &ksvc.Config{
		Name:        Name,
		DisplayName: DisplayName,
		Description: Description,
		Executable:  exe,
		Arguments:   args,
		Option: ksvc.KeyValue{
			// Windows: restart after a crash.
			"OnFailure":              "restart",
			"OnFailureDelayDuration": "5s",
			// launchd: start at boot and restart after a crash.
			"RunAtLoad": true,
			"KeepAlive": true,
		},
	}
	if exe != "" {
		c.Option["SystemdScript"] = systemdUnit(exe, args)
	}
	return c
}

func newService(exe string, args []string, p ksvc.Interface) (ksvc.Service, error) {
	s, err := ksvc.New(p, config(exe, args))
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", Name, err)
	}
	return s, nil
}

// systemdUnit renders the unit file. It is passed to kardianos/service as
// its SystemdScript template; it contains no template actions, so it is
// written as is.
func systemdUnit(exe string, args []string) string {
	var b strings.Builder
	b.WriteString("[Unit]\n")
	fmt.Fprintf(&b, "Description=%s\n", DisplayName)
	b.WriteString("Wants=network-pre.target\nAfter=network-pre.target\n\n")
	b.WriteString("[Service]\nType=simple\n")
	b.WriteString("ExecStart=" + systemdQuote(exe))
	for _, a := range args {
		b.WriteString(" " + systemdQuote(a))
	}
	b.WriteString("\n")
	// SIGTERM makes the helper disconnect and restore routes and DNS.
	b.WriteString("KillSignal=SIGTERM\n")
	fmt.Fprintf(&b, "TimeoutStopSec=%d\n", int(StopTimeout/time.Second))
	b.WriteString("Restart=on-failure\nRestartSec=5\n")
	// /run/mirage holds the API socket, /var/lib/mirage-helper the
	// profiles and the crash-cleanup journal.
	b.WriteString("RuntimeDirectory=mirage\nRuntimeDirectoryMode=0755\n")
	b.WriteString("StateDirectory=" + Name + "\nStateDirectoryMode=0700\n\n")
	b.WriteString("[Install]\nWantedBy=multi-user.target\n")
	return b.String()
}

// systemdQuote quotes one ExecStart word: double quotes, with backslash,
// quote, specifier (%) and variable ($) characters escaped.
func systemdQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "%", "%%", "$", "$$", "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

func isAbs(p string) bool {
	return strings.HasPrefix(p, "/") || (runtime.GOOS == "windows" && len(p) > 2 && p[1] == ':')
}

// ensureGroup creates the mirage group if missing and adds the installing
// user (SUDO_USER, or the user of PKEXEC_UID) to it.
func (m *Manager) ensureGroup() error {
	ok, err := m.lookupGroup(Group)
	if err != nil {
		return fmt.Errorf("look up group %q: %w", Group, err)
	}
	if !ok {
		if err := m.exec("groupadd", "--system", Group); err != nil {
			return fmt.Errorf("create group %q: %w", Group, err)
		}
		m.logger().Info("created group", "group", Group)
	}
	name, err := m.installingUser()
	if err != nil {
		return err
	}
	if name == "" || name == "root" {
		return nil
	}
	if err := m.exec("usermod", "-aG", Group, name); err != nil {
		return fmt.Errorf("add %s to group %q: %w", name, Group, err)
	}
	m.logger().Info("added user to group; it takes effect at their next login", "user", name, "group", Group)
	return nil
}

// installingUser is the unprivileged user behind sudo or pkexec, or "".
func (m *Manager) installingUser() (string, error) {
	if u := strings.TrimSpace(m.getenv("SUDO_USER")); u != "" {
		return u, nil
	}
	uid := strings.TrimSpace(m.getenv("PKEXEC_UID"))
	if uid == "" {
		return "", nil
	}
	name, err := m.lookupUserID(uid)
	if err != nil {
		return "", fmt.Errorf("PKEXEC_UID=%s: %w", uid, err)
	}
	return name, nil
}

// removeRCLinks deletes the /etc/rc?.d links of the service whose target
// no longer exists.
func (m *Manager) removeRCLinks() error {
	etc := m.EtcDir
	if etc == "" {
		etc = "/etc"
	}
	var errs []error
	for _, lvl := range "0123456S" {
		for _, prefix := range []string{"S50", "K02"} {
			link := fmt.Sprintf("%s/rc%c.d/%s%s", etc, lvl, prefix, Name)
			st, err := os.Lstat(link)
			if err != nil || st.Mode()&os.ModeSymlink == 0 {
				continue
			}
			if _, err := os.Stat(link); err == nil {
				continue // not dangling: someone else's valid link
			}
			if err := os.Remove(link); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", link, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) exec(name string, args ...string) error {
	if m.Exec != nil {
		return m.Exec(name, args...)
	}
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (m *Manager) lookupGroup(name string) (bool, error) {
	if m.LookupGroup != nil {
		return m.LookupGroup(name)
	}
	_, err := user.LookupGroup(name)
	var unknown user.UnknownGroupError
	if errors.As(err, &unknown) {
		return false, nil
	}
	return err == nil, err
}

func (m *Manager) lookupUserID(uid string) (string, error) {
	if m.LookupUserID != nil {
		return m.LookupUserID(uid)
	}
	u, err := user.LookupId(uid)
	if err != nil {
		return "", err
	}
	return u.Username, nil
}

func (m *Manager) getenv(k string) string {
	if m.Getenv != nil {
		return m.Getenv(k)
	}
	return os.Getenv(k)
}

func (m *Manager) logger() *slog.Logger {
	if m.Logger != nil {
		return m.Logger
	}
	return slog.New(slog.DiscardHandler)
}
