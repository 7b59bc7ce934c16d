// Command mirage is the desktop tray app. It is unprivileged and reaches the
// helper service only through its local API (core/apiclient).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/app"

	"github.com/mirage-vpn/mirage/core/apiclient"
	"github.com/mirage-vpn/mirage/core/buildinfo"
	"github.com/mirage-vpn/mirage/gui/autostart"
	"github.com/mirage-vpn/mirage/gui/elevate"
	"github.com/mirage-vpn/mirage/gui/viewmodel"
	"github.com/mirage-vpn/mirage/gui/views"
)

var version = "dev"

// commit is set at build time with -ldflags "-X main.commit=...".
var commit = ""

func main() {
	socket := flag.String("socket", apiclient.DefaultSocket(), "path of the helper's API socket (or named pipe)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	// One argument may be a mirage:// link (the desktop's URL handler):
	// it is imported as a profile once the window is up.
	link := ""
	if flag.NArg() == 1 && strings.HasPrefix(strings.ToLower(flag.Arg(0)), "mirage://") {
		link = flag.Arg(0)
	} else if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "mirage: unexpected argument %q (only a mirage:// link)\n", flag.Arg(0))
		os.Exit(2)
	}
	if *showVersion {
		fmt.Println(buildinfo.String("mirage", version, commit))
		return
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	client := apiclient.New(apiclient.Dial(*socket))
	defer client.Close()
	vm := viewmodel.New(client, viewmodel.Options{Logger: log})

	a := app.NewWithID("net.mirage-vpn.mirage")
	a.SetIcon(views.AppIcon())
	w := a.NewWindow("Mirage")
	w.Resize(fyne.NewSize(860, 560))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var args []string
	if *socket != apiclient.DefaultSocket() {
		args = []string{"--socket", *socket}
	}
	views.New(vm, a, w, views.Options{
		Context:       ctx,
		InstallHelper: installHelper,
		Autostart:     loginItem{args: args},
	})
	go vm.Run(ctx)
	if link != "" {
		go func() {
			// The view-model reports a failure (bad link, helper away)
			// in the window like a pasted link's.
			if p, err := vm.ImportText(ctx, link); err == nil {
				log.Info("imported a profile from a mirage:// link", "profile", p.Name)
			}
		}()
	}
	w.ShowAndRun()
}

// installHelper installs or repairs the helper service as administrator.
func installHelper(ctx context.Context) error {
	helper, err := elevate.HelperPath()
	if err != nil {
		return err
	}
	return elevate.Run(ctx, helper, elevate.InstallArgs...)
}

// loginItem adapts gui/autostart to the views' seam.
type loginItem struct{ args []string }

func (loginItem) Enabled() (bool, error) { return autostart.Enabled() }
func (loginItem) Disable() error         { return autostart.Disable() }
func (l loginItem) Enable() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the app's executable: %w", err)
	}
	return autostart.Enable(autostart.Entry{Name: "Mirage", Exec: exe, Args: l.args})
}
