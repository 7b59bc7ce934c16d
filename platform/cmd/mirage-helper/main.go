// Command mirage-helper is the privileged Mirage client: the headless
// client (`connect`), crash cleanup, and the service behind the desktop app
// (`run`, serving the local API of core/api on a unix socket or named pipe).
//
//	mirage-helper connect client.toml [--state-dir DIR]
//	mirage-helper cleanup [--state-dir DIR]
//	mirage-helper run [--socket PATH] [--state-dir DIR] [--profiles-dir DIR] [--group NAME]
//	mirage-helper service install|uninstall|start|stop|status
//	mirage-helper status [--socket PATH] [--json]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/mirage-vpn/mirage/core/buildinfo"
	"github.com/mirage-vpn/mirage/core/client"
	"github.com/mirage-vpn/mirage/core/config"
	"github.com/mirage-vpn/mirage/platform/bind"
	"github.com/mirage-vpn/mirage/platform/killswitch"
	"github.com/mirage-vpn/mirage/platform/netmon"
	"github.com/mirage-vpn/mirage/platform/osnet"
	"github.com/mirage-vpn/mirage/platform/tun"
)

var version = "dev"

// commit is set at build time with -ldflags "-X main.commit=...".
var commit = ""

const defaultStateDir = "/var/lib/mirage-helper"

const usage = `usage:
  mirage-helper connect client.toml [--state-dir DIR]   headless client in the foreground
  mirage-helper cleanup [--state-dir DIR]               undo OS changes left by a crashed run
  mirage-helper run [--socket PATH] [--state-dir DIR] [--profiles-dir DIR] [--group NAME]
                                                        serve the desktop app's local API
  mirage-helper service install [run flags]|uninstall|start|stop|status
                                                        manage the helper as a system service
  mirage-helper status [--socket PATH] [--json]         the running service's tunnel: state,
                                                        connections, FEC counters
  mirage-helper version
`

// Exit statuses.
const (
	exitOK       = 0
	exitError    = 1
	exitRejected = 2
)

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError
	}
	switch args[0] {
	case "connect":
		return cmdConnect(args[1:], stdout, stderr)
	case "cleanup":
		return cmdCleanup(args[1:], stdout, stderr)
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "service":
		return cmdService(args[1:], stdout, stderr)
	case "status":
		return cmdStatus(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, buildinfo.String("mirage-helper", version, commit))
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "mirage-helper: unknown command %q\n%s", args[0], usage)
	return exitError
}

func fail(stderr io.Writer, format string, a ...any) int {
	fmt.Fprintf(stderr, "mirage-helper: "+format+"\n", a...)
	return exitError
}

// parseWithFile parses flags that may come before or after one positional
// file argument.
func parseWithFile(fs *flag.FlagSet, args []string) (string, error) {
	var file string
	for {
		if err := fs.Parse(args); err != nil {
			return "", err
		}
		if fs.NArg() == 0 {
			return file, nil
		}
		if file != "" {
			return "", fmt.Errorf("unexpected argument %q", fs.Arg(0))
		}
		file = fs.Arg(0)
		args = fs.Args()[1:]
	}
}

func cmdConnect(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", defaultStateDir, "where OS changes are journaled for crash cleanup")
	insecure := fs.Bool("insecure-permissions", false, "connect even when the profile is writable by other users (logged as INSECURE)")
	file, err := parseWithFile(fs, args)
	if err != nil {
		return fail(stderr, "connect: %v", err)
	}
	if file == "" {
		return fail(stderr, "connect: need a client.toml")
	}
	// The profile holds the password and decides where this root process
	// sends all traffic: other users must not be able to change it.
	readable, err := config.CheckPermissions(file, "client profile")
	if errors.Is(err, config.ErrUnsafePermissions) && *insecure {
		fmt.Fprintf(stderr, "mirage-helper: INSECURE (--insecure-permissions): %v\n", err)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fail(stderr, "connect: %v", err)
	}
	cfg, err := config.LoadClient(file)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	if readable {
		fmt.Fprintf(stderr, "mirage-helper: warning: %s is readable by other users and holds the password; chmod o-r it\n", file)
	}
	if _, err := cfg.UsableProtocols(client.Implemented); err != nil {
		return fail(stderr, "%v", err)
	}
	log := cfg.Log.Logger(stderr)
	if err := os.MkdirAll(*stateDir, 0o700); err != nil {
		return fail(stderr, "state dir: %v", err)
	}
	// A previous run that crashed may have left routes, DNS or a TUN behind.
	if err := cleanupAll(log, *stateDir); err != nil {
		log.Warn("cleaning up a previous run", "err", err)
	}
	netc, err := osnet.New(log, *stateDir)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	mon := netmon.New(log)
	defer mon.Close()
	err = client.Run(ctx, client.Options{
		Config: cfg, CreateTUN: tun.CreatePerCoreTUN, SuperTUN: tun.SuperPackets, Net: netc, Logger: log, Version: version,
		Firewall:    killswitch.Firewall{Log: log},
		DialControl: bind.Control(cfg.Network.InterfaceName, log.Debug),
		NetChanges:  mon.Changes(),
		OnEvent: func(e client.Event) {
			if e.State == client.Connected {
				fmt.Fprintln(stdout, client.FormatConnected(e))
			}
		},
	})
	switch {
	case errors.Is(err, client.ErrRejected):
		fmt.Fprintln(stderr, "mirage-helper: the server did not accept these credentials")
		return exitRejected
	case err != nil:
		return fail(stderr, "%v", err)
	}
	fmt.Fprintln(stdout, "disconnected")
	return exitOK
}

func cmdCleanup(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cleanup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", defaultStateDir, "state directory of the run to clean up")
	if err := fs.Parse(args); err != nil {
		return exitError
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "state-dir" })
	if _, err := os.Stat(*stateDir); err != nil && explicit {
		// A mistyped --state-dir must not report "cleanup done".
		if kerr := killswitch.Disable(log); kerr != nil && !errors.Is(kerr, errors.ErrUnsupported) {
			log.Warn("removing the kill switch", "err", kerr)
		}
		return fail(stderr, "cleanup: state dir %s: %v (nothing journaled there was undone; the kill switch, if any, was removed)", *stateDir, err)
	}
	if err := cleanupAll(log, *stateDir); err != nil {
		return fail(stderr, "cleanup: %v", err)
	}
	fmt.Fprintln(stdout, "cleanup done")
	return exitOK
}

// cleanupAll undoes what a crashed run left: routes, addresses, DNS and the
// TUN device (from the journal in stateDir), a kill switch that is still
// blocking traffic, and the service's resume record (so it does not
// reconnect).
func cleanupAll(log *slog.Logger, stateDir string) error {
	err := osnet.Cleanup(log, stateDir)
	if kerr := killswitch.Disable(log); kerr != nil && !errors.Is(kerr, errors.ErrUnsupported) {
		err = errors.Join(err, kerr)
	}
	if rerr := os.Remove(resumeFile(stateDir)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	return err
}

// resumeFile is where the service records the profile the user connected
// (see daemon.Options.ResumeFile).
func resumeFile(stateDir string) string { return filepath.Join(stateDir, "resume") }
