package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/mirage-vpn/mirage/core/daemon"
	"github.com/mirage-vpn/mirage/core/netcfg"
	"github.com/mirage-vpn/mirage/platform/bind"
	"github.com/mirage-vpn/mirage/platform/ipc"
	"github.com/mirage-vpn/mirage/platform/killswitch"
	"github.com/mirage-vpn/mirage/platform/netmon"
	"github.com/mirage-vpn/mirage/platform/osnet"
	"github.com/mirage-vpn/mirage/platform/service"
	"github.com/mirage-vpn/mirage/platform/tun"
)

// Limits of the local API server. No read or write timeout: /v1/watch
// streams (a read deadline would cancel the stream's context); bodies are
// bounded by the daemon (api.MaxRequestBody).
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
	shutdownTimeout   = 5 * time.Second
)

// runFlags are the flags of `run`, also accepted by `service install`.
type runFlags struct {
	socket, stateDir, profilesDir, group string
}

func (f *runFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.socket, "socket", ipc.DefaultPath, "local API socket (named pipe on Windows)")
	fs.StringVar(&f.stateDir, "state-dir", defaultStateDir, "where OS changes are journaled for crash cleanup")
	fs.StringVar(&f.profilesDir, "profiles-dir", filepath.Join(defaultStateDir, "profiles"), "profile store")
	fs.StringVar(&f.group, "group", ipc.DefaultGroup, "members of this group may use the API (root always may)")
}

// cmdRun serves the local API until SIGINT/SIGTERM or the service manager
// stops it; then it disconnects (restoring routes and DNS) and exits 0.
func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f runFlags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return exitError
	}
	if fs.NArg() > 0 {
		return fail(stderr, "run: unexpected argument %q", fs.Arg(0))
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	err := service.Run(func(ctx context.Context) error { return serve(ctx, f, log) })
	if err != nil {
		return fail(stderr, "run: %v", err)
	}
	return exitOK
}

// serve runs the daemon behind the local API until ctx ends.
func serve(ctx context.Context, f runFlags, log *slog.Logger) error {
	if err := os.MkdirAll(f.stateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	// A previous run that crashed may have left routes, DNS or a TUN
	// behind. If it crashed while the user was connected (the resume
	// record is there), its kill switch stays on until the profile is
	// reconnected below or the user disconnects: a crash never opens it.
	resume := resumeFile(f.stateDir)
	if _, err := os.Stat(resume); err == nil {
		if err := osnet.Cleanup(log, f.stateDir); err != nil {
			log.Warn("cleaning up a previous run", "err", err)
		}
	} else if err := cleanupAll(log, f.stateDir); err != nil {
		log.Warn("cleaning up a previous run", "err", err)
	}
	mon := netmon.New(log)
	defer mon.Close()
	d, err := daemon.New(daemon.Options{
		ProfilesDir: f.profilesDir,
		CreateTUN:   tun.CreatePerCoreTUN,
		SuperTUN:    tun.SuperPackets,
		NewNet:      func() (netcfg.Configurator, error) { return osnet.New(log, f.stateDir) },
		Cleanup:     func() error { return osnet.Cleanup(log, f.stateDir) },
		ResumeFile:  resume,
		Logger:      log,
		Version:     version,
		Firewall:    killswitch.Firewall{Log: log},
		DialControl: func(tun string) func(string, string, syscall.RawConn) error { return bind.Control(tun, log.Debug) },
		NetChanges:  mon.Changes(),
	})
	if err != nil {
		return err
	}
	ln, err := ipc.Listen(f.socket, ipc.Policy{AllowGroup: f.group, Logger: log})
	if err != nil {
		d.Close()
		return err
	}
	srv := &http.Server{
		Handler:           logRequests(log, d.Handler()),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("local API listening", "socket", f.socket, "group", f.group, "version", version)
	if _, err := d.Resume(); err != nil {
		log.Error("reconnecting after a restart", "err", err)
	}

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("stopping")
	case serveErr = <-served:
		log.Error("local API server stopped", "err", serveErr)
	}
	// Disconnect first: routes and DNS are restored, and watch streams end.
	if err := d.Close(); err != nil {
		log.Warn("closing the tunnel", "err", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("local API: %w", serveErr)
	}
	log.Info("stopped")
	return nil
}

type connKey struct{}

// logRequests logs each API request with the caller's uid at debug level,
// and mutating ones at info.
func logRequests(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uid := -1
		if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
			if u, ok := ipc.PeerUID(c); ok {
				uid = u
			}
		}
		level := slog.LevelDebug
		if r.Method != http.MethodGet {
			level = slog.LevelInfo
		}
		log.Log(r.Context(), level, "api request", "method", r.Method, "path", r.URL.Path, "uid", uid)
		h.ServeHTTP(w, r)
	})
}

// cmdService manages the helper as a system service.
func cmdService(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return fail(stderr, "service: need install, uninstall, start, stop or status")
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	m := &service.Manager{Logger: log}
	switch args[0] {
	case "install":
		// Validate the run flags now rather than at the first boot.
		fs := flag.NewFlagSet("service install", flag.ContinueOnError)
		fs.SetOutput(stderr)
		var f runFlags
		f.register(fs)
		if err := fs.Parse(args[1:]); err != nil {
			return exitError
		}
		if fs.NArg() > 0 {
			return fail(stderr, "service install: unexpected argument %q", fs.Arg(0))
		}
		exe, err := os.Executable()
		if err == nil {
			exe, err = filepath.EvalSymlinks(exe)
		}
		if err != nil {
			return fail(stderr, "service install: path of this program: %v", err)
		}
		if err := m.Install(exe, append([]string{"run"}, args[1:]...)); err != nil {
			return fail(stderr, "%v", err)
		}
		fmt.Fprintf(stdout, "installed %s (%s run)\n", service.Name, exe)
		return exitOK
	case "uninstall", "start", "stop":
		if len(args) > 1 {
			return fail(stderr, "service %s: unexpected argument %q", args[0], args[1])
		}
		var err error
		switch args[0] {
		case "uninstall":
			err = m.Uninstall()
		case "start":
			err = m.Start()
		case "stop":
			err = m.Stop()
		}
		if err != nil {
			return fail(stderr, "%v", err)
		}
		fmt.Fprintf(stdout, "%s: %s done\n", service.Name, args[0])
		return exitOK
	case "status":
		st, err := m.Status()
		if err != nil {
			return fail(stderr, "%v", err)
		}
		fmt.Fprintln(stdout, st)
		return exitOK
	}
	return fail(stderr, "service: unknown action %q (want install, uninstall, start, stop or status)", args[0])
}
