package views

import (
	"context"
	"fmt"
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/dialog"
	"fyne.io/fyne/v2/widget"
)

// refreshTray updates the tray icon and rebuilds its menu when the
// profiles or the connection changed.
func (u *UI) refreshTray() {
	if u.tray == nil {
		return
	}
	c := u.snap.Conn
	if c.Tone != u.trayTone || u.trayKey == "" {
		u.tray.SetSystemTrayIcon(toneIcons[c.Tone])
		u.trayTone = c.Tone
	}
	m := u.TrayMenu()
	var key strings.Builder
	for _, it := range m.Items {
		fmt.Fprintf(&key, "%s|%v|%v;", it.Label, it.Disabled, it.Checked)
	}
	if key.String() == u.trayKey {
		return
	}
	u.trayKey = key.String()
	u.tray.SetSystemTrayMenu(m)
}

// TrayMenu is the tray menu for the current snapshot: the state, each
// profile with Connect or Disconnect, Show Mirage and Quit.
func (u *UI) TrayMenu() *fyne.Menu {
	c := u.snap.Conn
	state := fyne.NewMenuItem(c.Text, nil)
	state.Disabled = true
	items := []*fyne.MenuItem{state, fyne.NewMenuItemSeparator()}
	reachable := u.snap.Helper.Reachable
	for _, p := range u.snap.Profiles {
		name := p.Name
		var it *fyne.MenuItem
		if c.Active && c.Profile == name {
			it = fyne.NewMenuItem("Disconnect "+name, func() {
				u.run(func(ctx context.Context) { _ = u.vm.Disconnect(ctx) })
			})
		} else {
			it = fyne.NewMenuItem("Connect "+name, func() {
				u.run(func(ctx context.Context) { _ = u.vm.Connect(ctx, name) })
			})
		}
		it.Disabled = !reachable
		items = append(items, it)
	}
	if len(u.snap.Profiles) > 0 {
		items = append(items, fyne.NewMenuItemSeparator())
	}
	// The kill switch of the selected (or connected) profile.
	name := u.snap.Selected
	if c.Active {
		name = c.Profile
	}
	if p, ok := u.snap.Profile(name); ok {
		ks := fyne.NewMenuItem("Kill switch", func() {
			u.run(func(ctx context.Context) { _ = u.vm.SetKillSwitch(ctx, p.Name, !p.KillSwitch, p.AllowLAN) })
		})
		ks.Checked = p.KillSwitch
		ks.Disabled = !reachable
		items = append(items, ks, fyne.NewMenuItemSeparator())
	}
	items = append(items, fyne.NewMenuItem("Show Mirage", u.ShowWindow))
	quit := fyne.NewMenuItem("Quit", u.Quit)
	quit.IsQuit = true
	items = append(items, quit)
	return fyne.NewMenu("Mirage", items...)
}

// ShowWindow brings the window back from the tray.
func (u *UI) ShowWindow() {
	u.win.Show()
	u.win.RequestFocus()
}

// Quit ends the app; when a tunnel is up it first asks whether to
// disconnect it (the helper keeps it running otherwise).
func (u *UI) Quit() {
	if !u.vm.Snapshot().Conn.Active {
		u.opts.Quit()
		return
	}
	u.ShowWindow()
	var d *dialog.CustomDialog
	disc := widget.NewButton("Disconnect and quit", func() {
		d.Hide()
		u.run(func(ctx context.Context) {
			_ = u.vm.Disconnect(ctx)
			fyne.Do(u.opts.Quit)
		})
	})
	disc.Importance = widget.HighImportance
	keep := widget.NewButton("Quit, stay connected", func() { d.Hide(); u.opts.Quit() })
	cancel := widget.NewButton("Cancel", func() { d.Hide() })
	msg := widget.NewLabel(fmt.Sprintf("Mirage is connected to %q. Disconnect before quitting?", u.snap.Conn.Profile))
	d = dialog.NewCustomWithoutButtons("Quit Mirage", msg, u.win)
	d.SetButtons([]fyne.CanvasObject{cancel, keep, disc})
	u.quitDialog, u.quitDisconnect, u.quitKeep = d, disc, keep
	d.Show()
}
