// Package views is the Fyne front end of the Mirage tray app: thin widgets
// that render viewmodel.Snapshot and forward the user's actions to the
// view-model. Commands run off the UI goroutine; results come back through
// the view-model's change callback wrapped in fyne.Do.
package views

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/dialog"
	"fyne.io/fyne/v2/driver/desktop"
	"fyne.io/fyne/v2/layout"
	"fyne.io/fyne/v2/storage"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/mirage-vpn/mirage/assets"
	"github.com/mirage-vpn/mirage/core/api"
	"github.com/mirage-vpn/mirage/gui/viewmodel"
)

// Autostart is the start-at-login seam (gui/autostart in the app).
type Autostart interface {
	Enabled() (bool, error)
	Enable() error
	Disable() error
}

// Options wires the OS-specific pieces into the UI.
type Options struct {
	// Context bounds every command; default context.Background().
	Context context.Context
	// Async runs a command off the UI goroutine; default `go f()`.
	Async func(f func())
	// InstallHelper installs or repairs the helper service with the OS's
	// administrator prompt; nil hides the button.
	InstallHelper func(ctx context.Context) error
	// Autostart controls start at login; nil disables the setting.
	Autostart Autostart
	// Quit ends the app; default app.Quit.
	Quit func()
}

// Icons per tone, for the tray and the status line.
var (
	appIcon   = fyne.NewStaticResource("app.png", assets.AppIcon)
	toneIcons = map[viewmodel.Tone]fyne.Resource{
		viewmodel.ToneIdle:  fyne.NewStaticResource("idle.png", assets.IdleIcon),
		viewmodel.ToneBusy:  fyne.NewStaticResource("busy.png", assets.BusyIcon),
		viewmodel.ToneOK:    fyne.NewStaticResource("ok.png", assets.OKIcon),
		viewmodel.ToneError: fyne.NewStaticResource("error.png", assets.ErrorIcon),
	}
)

// AppIcon is the application icon.
func AppIcon() fyne.Resource { return appIcon }

// UI is the main window's content plus the tray.
type UI struct {
	vm   *viewmodel.VM
	app  fyne.App
	win  fyne.Window
	opts Options
	ctx  context.Context
	snap viewmodel.Snapshot

	// profiles pane
	profileList *widget.List
	importBtn   *widget.Button
	pasteBtn    *widget.Button
	renameBtn   *widget.Button
	editBtn     *widget.Button
	deleteBtn   *widget.Button
	notice      *widget.Label
	syncing     bool // refresh is moving the list selection

	// helper banner
	banner     *fyne.Container
	bannerText *widget.Label
	bannerBtn  *widget.Button

	// connection panel
	stateIcon *widget.Icon
	stateText *widget.Label
	toggle    *widget.Button
	profile   *widget.Label
	server    *widget.Label
	transport *widget.Label
	addresses *widget.Label
	uptime    *widget.Label
	upRate    *widget.Label
	downRate  *widget.Label
	sent      *widget.Label
	received  *widget.Label
	graph     *Graph
	// kill switch of the selected profile
	killSwitch *widget.Check
	allowLAN   *widget.Check

	// logs
	logList *widget.List
	follow  *widget.Check
	copyBtn *widget.Button

	// settings
	autostart   *widget.Check
	helperState *widget.Label
	installBtn  *widget.Button
	installMsg  *widget.Label
	quitBtn     *widget.Button

	quitDialog               *dialog.CustomDialog
	quitDisconnect, quitKeep *widget.Button

	// editor is the open TOML editor, if any (tests reach it here).
	editor *editor

	// tray state, to rebuild the menu only when it changes
	tray     desktop.App
	trayKey  string
	trayTone viewmodel.Tone
}

// New builds the window content for vm in win, wires drag-and-drop, the
// close-to-tray behaviour and (when the app supports it) the system tray.
func New(vm *viewmodel.VM, a fyne.App, win fyne.Window, opts Options) *UI {
	if opts.Context == nil {
		opts.Context = context.Background()
	}
	if opts.Async == nil {
		opts.Async = func(f func()) { go f() }
	}
	if opts.Quit == nil {
		opts.Quit = a.Quit
	}
	u := &UI{vm: vm, app: a, win: win, opts: opts, ctx: opts.Context}
	u.build()
	win.SetContent(u.content())
	win.SetOnDropped(u.dropped)
	win.SetCloseIntercept(win.Hide)
	if d, ok := a.(desktop.App); ok {
		u.tray = d
		d.SetSystemTrayWindow(win)
	}
	vm.Subscribe(func() { fyne.Do(u.Refresh) })
	u.Refresh()
	return u
}

func (u *UI) build() {
	u.profileList = widget.NewList(
		func() int { return len(u.snap.Profiles) },
		func() fyne.CanvasObject {
			return container.NewVBox(widget.NewLabelWithStyle("name", fyne.TextAlignLeading, fyne.TextStyle{Bold: true}), widget.NewLabel("server"))
		},
		func(id widget.ListItemID, o fyne.CanvasObject) {
			if id >= len(u.snap.Profiles) {
				return
			}
			p := u.snap.Profiles[id]
			box := o.(*fyne.Container)
			box.Objects[0].(*widget.Label).SetText(p.Name)
			box.Objects[1].(*widget.Label).SetText(p.Server)
		})
	u.profileList.OnSelected = func(id widget.ListItemID) {
		if u.syncing || id >= len(u.snap.Profiles) {
			return
		}
		u.vm.Select(u.snap.Profiles[id].Name)
	}
	u.importBtn = widget.NewButtonWithIcon("Import…", theme.FileIcon(), u.showImportDialog)
	u.pasteBtn = widget.NewButtonWithIcon("Paste link", theme.ContentPasteIcon(), u.pasteLink)
	u.renameBtn = widget.NewButton("Rename", u.showRename)
	u.editBtn = widget.NewButtonWithIcon("Edit", theme.DocumentCreateIcon(), u.showEditor)
	u.deleteBtn = widget.NewButtonWithIcon("Delete", theme.DeleteIcon(), u.confirmDelete)
	u.notice = widget.NewLabel("")
	u.notice.Importance = widget.DangerImportance
	u.notice.Wrapping = fyne.TextWrapWord
	u.notice.Hide()

	u.bannerText = widget.NewLabel(viewmodel.HelperNotRunning)
	u.bannerText.Importance = widget.DangerImportance
	u.bannerBtn = widget.NewButton("Install helper", u.installHelper)
	if u.opts.InstallHelper == nil {
		u.bannerBtn.Hide()
	}
	u.banner = container.NewHBox(widget.NewIcon(toneIcons[viewmodel.ToneError]), u.bannerText, u.bannerBtn)
	u.banner.Hide()

	u.stateIcon = widget.NewIcon(toneIcons[viewmodel.ToneIdle])
	u.stateText = widget.NewLabelWithStyle("", fyne.TextAlignLeading, fyne.TextStyle{Bold: true})
	u.stateText.Wrapping = fyne.TextWrapWord
	u.toggle = widget.NewButton("Connect", u.toggleConnection)
	u.toggle.Importance = widget.HighImportance
	newLbl := func() *widget.Label { return widget.NewLabel("") }
	u.profile, u.server, u.transport, u.addresses = newLbl(), newLbl(), newLbl(), newLbl()
	u.uptime, u.upRate, u.downRate, u.sent, u.received = newLbl(), newLbl(), newLbl(), newLbl(), newLbl()
	u.upRate.Importance, u.downRate.Importance = widget.WarningImportance, widget.HighImportance
	u.graph = NewGraph()
	u.killSwitch = widget.NewCheck("Kill switch: block all traffic outside the tunnel", func(on bool) {
		if !u.syncing {
			u.setKillSwitch(on, u.allowLAN.Checked)
		}
	})
	u.allowLAN = widget.NewCheck("Allow the local network (printers, NAS) while blocking", func(on bool) {
		if !u.syncing {
			u.setKillSwitch(u.killSwitch.Checked, on)
		}
	})

	u.logList = widget.NewList(
		func() int { return len(u.snap.Logs) },
		func() fyne.CanvasObject {
			return widget.NewLabelWithStyle("", fyne.TextAlignLeading, fyne.TextStyle{Monospace: true})
		},
		func(id widget.ListItemID, o fyne.CanvasObject) {
			if id < len(u.snap.Logs) {
				o.(*widget.Label).SetText(u.snap.Logs[id])
			}
		})
	u.follow = widget.NewCheck("Follow", func(on bool) {
		if on {
			u.scrollLogs()
		}
	})
	u.follow.Checked = true
	u.copyBtn = widget.NewButtonWithIcon("Copy", theme.ContentCopyIcon(), func() {
		u.app.Clipboard().SetContent(strings.Join(u.snap.Logs, "\n"))
	})

	u.autostart = widget.NewCheck("Start Mirage at login", u.setAutostart)
	if u.opts.Autostart == nil {
		u.autostart.Disable()
	} else if on, err := u.opts.Autostart.Enabled(); err == nil {
		u.autostart.Checked = on
	}
	u.helperState = widget.NewLabel("")
	u.installBtn = widget.NewButton("Install helper", u.installHelper)
	if u.opts.InstallHelper == nil {
		u.installBtn.Hide()
	}
	u.installMsg = widget.NewLabel("")
	u.installMsg.Wrapping = fyne.TextWrapWord
	// Closing the window only hides it; without a tray host this is the way out.
	u.quitBtn = widget.NewButtonWithIcon("Quit Mirage", theme.LogoutIcon(), u.Quit)
}

func (u *UI) content() fyne.CanvasObject {
	buttons := container.NewGridWithColumns(2, u.importBtn, u.pasteBtn, u.renameBtn, u.editBtn, u.deleteBtn)
	profiles := container.NewBorder(widget.NewLabelWithStyle("Profiles", fyne.TextAlignLeading, fyne.TextStyle{Bold: true}),
		container.NewVBox(u.notice, buttons), nil, nil, u.profileList)

	row := func(k string, v fyne.CanvasObject) []fyne.CanvasObject {
		return []fyne.CanvasObject{widget.NewLabelWithStyle(k, fyne.TextAlignTrailing, fyne.TextStyle{}), v}
	}
	var grid []fyne.CanvasObject
	grid = append(grid, row("Profile", u.profile)...)
	grid = append(grid, row("Server", u.server)...)
	grid = append(grid, row("Transport", u.transport)...)
	grid = append(grid, row("Addresses", u.addresses)...)
	grid = append(grid, row("Uptime", u.uptime)...)
	grid = append(grid, row("Upload", u.upRate)...)
	grid = append(grid, row("Download", u.downRate)...)
	grid = append(grid, row("Sent", u.sent)...)
	grid = append(grid, row("Received", u.received)...)
	conn := container.NewVBox(
		container.NewBorder(nil, nil, u.stateIcon, u.toggle, u.stateText),
		container.New(layout.NewFormLayout(), grid...),
		u.killSwitch, u.allowLAN,
		widget.NewLabel("Last minute (orange: up, blue: down)"),
		u.graph,
	)
	logs := container.NewBorder(nil, container.NewHBox(u.follow, u.copyBtn), nil, nil, u.logList)
	settings := container.NewVBox(u.autostart, widget.NewSeparator(), u.helperState, u.installBtn, u.installMsg,
		widget.NewSeparator(), container.NewHBox(u.quitBtn))
	tabs := container.NewAppTabs(
		container.NewTabItem("Connection", container.NewVScroll(conn)),
		container.NewTabItem("Logs", logs),
		container.NewTabItem("Settings", settings),
	)
	split := container.NewHSplit(profiles, tabs)
	split.Offset = 0.32
	return container.NewBorder(u.banner, nil, nil, nil, split)
}

// Refresh renders the view-model's current snapshot. Call it on the UI
// goroutine (New subscribes it through fyne.Do).
func (u *UI) Refresh() {
	s := u.vm.Snapshot()
	prevLogs := len(u.snap.Logs)
	u.snap = s

	// Helper banner and settings.
	if s.Helper.Known && !s.Helper.Reachable {
		u.banner.Show()
	} else {
		u.banner.Hide()
	}
	switch {
	case !s.Helper.Known:
		u.helperState.SetText("Helper: checking…")
		u.installBtn.SetText("Install helper")
	case s.Helper.Reachable:
		v := s.Helper.Version
		if v == "" {
			v = "unknown version"
		}
		u.helperState.SetText("Helper: running (" + v + ")")
		u.installBtn.SetText("Repair helper")
	default:
		u.helperState.SetText(s.Helper.Message)
		u.installBtn.SetText("Install helper")
	}

	// Profiles.
	u.profileList.Refresh()
	idx := slices.IndexFunc(s.Profiles, func(p api.Profile) bool { return p.Name == s.Selected })
	u.syncing = true
	if idx >= 0 {
		u.profileList.Select(idx)
	} else {
		u.profileList.UnselectAll()
	}
	has := idx >= 0
	// The selected profile's kill switch (the helper is the source of truth).
	var sel api.Profile
	if has {
		sel = s.Profiles[idx]
	}
	u.killSwitch.SetChecked(sel.KillSwitch)
	u.allowLAN.SetChecked(sel.AllowLAN)
	setEnabled(u.killSwitch, has && s.Helper.Reachable)
	setEnabled(u.allowLAN, has && s.Helper.Reachable && sel.KillSwitch)
	u.syncing = false
	for _, b := range []*widget.Button{u.renameBtn, u.editBtn, u.deleteBtn} {
		setEnabled(b, has)
	}
	if s.Notice != "" {
		u.notice.SetText(s.Notice)
		u.notice.Show()
	} else {
		u.notice.Hide()
	}

	// Connection panel.
	c := s.Conn
	u.stateIcon.SetResource(toneIcons[c.Tone])
	u.stateText.SetText(c.Text)
	u.stateText.Importance = toneImportance(c.Tone)
	u.stateText.Refresh()
	if c.Active {
		u.toggle.SetText("Disconnect")
		u.toggle.Importance = widget.DangerImportance
	} else {
		u.toggle.SetText("Connect")
		u.toggle.Importance = widget.HighImportance
	}
	setEnabled(u.toggle, s.Helper.Reachable && (c.Active || has) && c.State != api.Disconnecting)
	u.toggle.Refresh()
	u.profile.SetText(orDash(c.Profile))
	u.server.SetText(orDash(c.Server))
	u.transport.SetText(orDash(c.Transport))
	u.addresses.SetText(orDash(strings.Join(c.Addresses, "\n")))
	u.uptime.SetText(orDash(c.Uptime))
	u.upRate.SetText(c.UpRate)
	u.downRate.SetText(c.DownRate)
	u.sent.SetText(c.Sent)
	u.received.SetText(c.Received)
	u.graph.SetData(s.Up, s.Down)

	// Logs.
	if len(s.Logs) != prevLogs {
		u.logList.Refresh()
		if u.follow.Checked {
			u.scrollLogs()
		}
	}

	u.refreshTray()
}

// scrollLogs follows the log. A List that was never laid out has no
// scroller yet (Fyne panics then), and a laid-out one has a size.
func (u *UI) scrollLogs() {
	if u.logList.Size().Height > 0 {
		u.logList.ScrollToBottom()
	}
}

func toneImportance(t viewmodel.Tone) widget.Importance {
	switch t {
	case viewmodel.ToneOK:
		return widget.SuccessImportance
	case viewmodel.ToneBusy:
		return widget.WarningImportance
	case viewmodel.ToneError:
		return widget.DangerImportance
	default:
		return widget.MediumImportance
	}
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func setEnabled(w fyne.Disableable, on bool) {
	if on {
		w.Enable()
	} else {
		w.Disable()
	}
}

// run executes a view-model command off the UI goroutine; its effects come
// back through the change callback.
func (u *UI) run(f func(ctx context.Context)) {
	u.opts.Async(func() { f(u.ctx) })
}

// setKillSwitch stores the selected profile's switches (reconnecting it
// when it is the active one).
func (u *UI) setKillSwitch(killSwitch, allowLAN bool) {
	name := u.snap.Selected
	u.run(func(ctx context.Context) { _ = u.vm.SetKillSwitch(ctx, name, killSwitch, allowLAN) })
}

func (u *UI) toggleConnection() {
	u.run(func(ctx context.Context) { _ = u.vm.Toggle(ctx) })
}

// importBytes imports one dropped or chosen file.
func (u *UI) importBytes(data []byte) {
	u.run(func(ctx context.Context) {
		_, _ = u.vm.ImportFile(ctx, data)
	})
}

// readURI reads a chosen or dropped file, bounded by the API's body limit.
func readURI(uri fyne.URI) ([]byte, error) {
	rc, err := storage.Reader(uri)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", uri.Name(), err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, api.MaxRequestBody+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", uri.Name(), err)
	}
	return data, nil
}

func (u *UI) importURI(uri fyne.URI) {
	data, err := readURI(uri)
	if err != nil {
		u.vm.ReportError(err.Error())
		return
	}
	u.importBytes(data)
}

func (u *UI) showImportDialog() {
	d := dialog.NewFileOpen(func(rc fyne.URIReadCloser, err error) {
		if err != nil {
			u.vm.ReportError("open file: " + err.Error())
			return
		}
		if rc == nil {
			return // cancelled
		}
		uri := rc.URI()
		rc.Close()
		u.importURI(uri)
	}, u.win)
	d.SetFilter(storage.NewExtensionFileFilter([]string{".toml"}))
	d.Show()
}

// dropped imports every .toml file dropped onto the window.
func (u *UI) dropped(_ fyne.Position, uris []fyne.URI) {
	n := 0
	for _, uri := range uris {
		if strings.EqualFold(uri.Extension(), ".toml") {
			u.importURI(uri)
			n++
		}
	}
	if n == 0 && len(uris) > 0 {
		u.vm.ReportError("Drop a client.toml file to import it")
	}
}

func (u *UI) pasteLink() {
	text := u.app.Clipboard().Content()
	u.run(func(ctx context.Context) { _, _ = u.vm.ImportText(ctx, text) })
}

func (u *UI) selected() string { return u.snap.Selected }

func (u *UI) showRename() {
	name := u.selected()
	if name == "" {
		return
	}
	e := widget.NewEntry()
	e.SetText(name)
	dialog.ShowForm("Rename profile", "Rename", "Cancel", []*widget.FormItem{widget.NewFormItem("Name", e)}, func(ok bool) {
		if ok && e.Text != name {
			newName := e.Text
			u.run(func(ctx context.Context) { _ = u.vm.Rename(ctx, name, newName) })
		}
	}, u.win)
}

func (u *UI) confirmDelete() {
	name := u.selected()
	if name == "" {
		return
	}
	dialog.ShowConfirm("Delete profile", fmt.Sprintf("Delete the profile %q? This cannot be undone.", name), func(ok bool) {
		if ok {
			u.run(func(ctx context.Context) { _ = u.vm.Delete(ctx, name) })
		}
	}, u.win)
}

func (u *UI) setAutostart(on bool) {
	if u.opts.Autostart == nil {
		return
	}
	var err error
	if on {
		err = u.opts.Autostart.Enable()
	} else {
		err = u.opts.Autostart.Disable()
	}
	if err != nil {
		u.installMsg.SetText(err.Error())
		u.autostart.Checked = !on
		u.autostart.Refresh()
	}
}

func (u *UI) installHelper() {
	if u.opts.InstallHelper == nil {
		return
	}
	u.installMsg.SetText("Waiting for the administrator prompt…")
	u.run(func(ctx context.Context) {
		err := u.opts.InstallHelper(ctx)
		fyne.Do(func() {
			if err != nil {
				u.installMsg.SetText("Install failed: " + err.Error())
				return
			}
			u.installMsg.SetText("The helper is installed.")
		})
	})
}
