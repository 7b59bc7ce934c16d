package views

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/storage"
	"fyne.io/fyne/v2/test"

	"github.com/mirage-vpn/mirage/core/api"
	"github.com/mirage-vpn/mirage/gui/viewmodel"
	"github.com/mirage-vpn/mirage/gui/viewmodel/vmtest"
)

const badMTU = `client.toml: connection.mtu: 99999 is out of range (576..9000)`

func newFake() *vmtest.Fake {
	f := vmtest.New()
	f.Validate = func(s string) error {
		if strings.Contains(s, "mtu = 99999") {
			return &api.Error{Code: api.CodeInvalidConfig, Message: badMTU}
		}
		return nil
	}
	return f
}

type fakeAutostart struct{ on bool }

func (a *fakeAutostart) Enabled() (bool, error) { return a.on, nil }
func (a *fakeAutostart) Enable() error          { a.on = true; return nil }
func (a *fakeAutostart) Disable() error         { a.on = false; return nil }

// newUI builds the UI on the test driver; commands run synchronously.
func newUI(t *testing.T, f *vmtest.Fake) (*UI, *viewmodel.VM, fyne.Window) {
	t.Helper()
	a := test.NewTempApp(t)
	w := test.NewTempWindow(t, nil)
	w.Resize(fyne.NewSize(900, 600))
	vm := viewmodel.New(f, viewmodel.Options{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, LogInterval: 5 * time.Millisecond})
	installs := 0
	u := New(vm, a, w, Options{
		Async:         func(fn func()) { fn() },
		Autostart:     &fakeAutostart{},
		InstallHelper: func(context.Context) error { installs++; return nil },
		Quit:          func() {},
	})
	return u, vm, w
}

// sync runs vm.Run until cond holds, then stops it so the test goroutine
// owns the widgets again.
func sync(t *testing.T, vm *viewmodel.VM, cond func(viewmodel.Snapshot) bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { vm.Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for !cond(vm.Snapshot()) {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("timed out; snapshot %+v", vm.Snapshot())
		}
		time.Sleep(2 * time.Millisecond)
	}
	cancel()
	<-done
}

func TestImportBadFileShowsKeyLevelError(t *testing.T) {
	f := newFake()
	u, _, _ := newUI(t, f)
	dir := t.TempDir()
	bad := filepath.Join(dir, "client.toml")
	if err := os.WriteFile(bad, []byte("connection_string = \"vpn.example.net:443\"\n[connection]\nmtu = 99999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Drag-and-drop path (the file dialog uses the same importURI).
	u.dropped(fyne.NewPos(1, 1), []fyne.URI{storage.NewFileURI(bad)})
	if !u.notice.Visible() || u.notice.Text != badMTU {
		t.Fatalf("notice visible=%v text=%q, want %q", u.notice.Visible(), u.notice.Text, badMTU)
	}
	if len(f.Stored) != 0 {
		t.Fatal("invalid profile stored")
	}
	// A non-TOML drop is refused with a hint.
	u.dropped(fyne.NewPos(1, 1), []fyne.URI{storage.NewFileURI(filepath.Join(dir, "x.png"))})
	if !strings.Contains(u.notice.Text, "client.toml") {
		t.Fatalf("notice %q", u.notice.Text)
	}
	// A good file clears the notice and selects the new profile.
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte("connection_string = \"vpn.example.net:443\"\n"), 0o600)
	u.dropped(fyne.NewPos(1, 1), []fyne.URI{storage.NewFileURI(good)})
	if u.notice.Visible() || len(f.Stored) != 1 || u.snap.Selected != f.Stored[0].Name {
		t.Fatalf("after good import: notice %v %q, stored %v, selected %q", u.notice.Visible(), u.notice.Text, f.Stored, u.snap.Selected)
	}
}

func TestPasteLink(t *testing.T) {
	f := newFake()
	u, _, _ := newUI(t, f)
	u.app.Clipboard().SetContent("mirage://user@vpn.example.net:443?pk=abc#home")
	test.Tap(u.pasteBtn)
	if c := f.Calls(); len(c) == 0 || c[0] != "import" || len(f.Stored) != 1 {
		t.Fatalf("calls %v stored %v", c, f.Stored)
	}
}

func TestToggleCallsConnectAndDisconnect(t *testing.T) {
	f := newFake()
	f.Stored = []api.Profile{{Name: "home", Server: "vpn.example.net:443"}}
	u, vm, _ := newUI(t, f)
	sync(t, vm, func(s viewmodel.Snapshot) bool { return s.Helper.Reachable && len(s.Profiles) == 1 })
	u.Refresh()
	if u.toggle.Text != "Connect" || u.toggle.Disabled() {
		t.Fatalf("toggle %q disabled=%v", u.toggle.Text, u.toggle.Disabled())
	}
	test.Tap(u.toggle)
	if u.stateText.Text != "Connecting" || u.toggle.Text != "Disconnect" {
		t.Fatalf("after connect: state %q toggle %q", u.stateText.Text, u.toggle.Text)
	}
	test.Tap(u.toggle)
	if u.stateText.Text != "Disconnected" || u.toggle.Text != "Connect" {
		t.Fatalf("after disconnect: state %q toggle %q", u.stateText.Text, u.toggle.Text)
	}
	calls := strings.Join(f.Calls(), ";")
	if !strings.Contains(calls, "connect home;disconnect") {
		t.Fatalf("calls %s", calls)
	}
}

func TestStatsRender(t *testing.T) {
	f := newFake()
	f.Stored = []api.Profile{{Name: "home"}}
	f.State = api.Status{State: api.Connected, Profile: "home", Transport: "quic", Server: "203.0.113.7:443",
		Addresses: []string{"10.9.0.2/24", "fd00::2/64"}, ConnectedAt: time.Now().Add(-(time.Hour + 2*time.Minute + 3*time.Second)),
		Stats: api.Stats{TxBytes: 362387865, RxBytes: 5 << 30, TxRate: 1.2e6, RxRate: 34.5e6}}
	u, vm, w := newUI(t, f)
	sync(t, vm, func(s viewmodel.Snapshot) bool { return s.Conn.State == api.Connected })
	u.Refresh()
	checks := map[string]string{
		u.stateText.Text: "Connected", u.transport.Text: "quic", u.addresses.Text: "10.9.0.2/24\nfd00::2/64",
		u.uptime.Text: "1 h 02 min", u.upRate.Text: "1.2 MB/s", u.downRate.Text: "34.5 MB/s",
		u.sent.Text: "345.6 MiB", u.received.Text: "5.0 GiB", u.profile.Text: "home", u.server.Text: "203.0.113.7:443",
	}
	for got, want := range checks {
		if got != want {
			t.Errorf("label %q, want %q", got, want)
		}
	}
	if u.stateIcon.Resource != toneIcons[viewmodel.ToneOK] {
		t.Error("state icon is not the connected one")
	}
	if len(u.graph.up) == 0 || u.graph.up[len(u.graph.up)-1] != 1.2e6 {
		t.Errorf("graph data %v", u.graph.up)
	}
	if img := w.Canvas().Capture(); img.Bounds().Dx() == 0 {
		t.Error("empty render")
	}
	// The tray menu offers Disconnect for the connected profile.
	labels := menuLabels(u.TrayMenu())
	if !strings.Contains(labels, "Connected|Disconnect home|Kill switch|Show Mirage|Quit") {
		t.Errorf("tray menu %s", labels)
	}
}

// The kill switch checkbox stores the selected profile's switch (and
// reconnects it when active); the tray item mirrors it.
func TestKillSwitchToggle(t *testing.T) {
	f := newFake()
	f.Stored = []api.Profile{{Name: "home"}}
	u, vm, _ := newUI(t, f)
	sync(t, vm, func(s viewmodel.Snapshot) bool { return s.Helper.Reachable && len(s.Profiles) == 1 })
	u.Refresh()
	if u.killSwitch.Checked || u.killSwitch.Disabled() || !u.allowLAN.Disabled() {
		t.Fatalf("initial: kill switch checked=%v disabled=%v, allow LAN disabled=%v", u.killSwitch.Checked, u.killSwitch.Disabled(), u.allowLAN.Disabled())
	}
	test.Tap(u.killSwitch)
	sync(t, vm, func(s viewmodel.Snapshot) bool { p, _ := s.Profile("home"); return p.KillSwitch })
	u.Refresh()
	if !u.killSwitch.Checked || u.allowLAN.Disabled() {
		t.Fatalf("after tap: checked=%v allow LAN disabled=%v", u.killSwitch.Checked, u.allowLAN.Disabled())
	}
	test.Tap(u.allowLAN)
	sync(t, vm, func(s viewmodel.Snapshot) bool { p, _ := s.Profile("home"); return p.AllowLAN })
	u.Refresh()
	var item *fyne.MenuItem
	for _, it := range u.TrayMenu().Items {
		if it.Label == "Kill switch" {
			item = it
		}
	}
	if item == nil || !item.Checked {
		t.Fatalf("tray kill switch item %+v", item)
	}
	// The tray item switches it off again, keeping allow LAN.
	item.Action()
	sync(t, vm, func(s viewmodel.Snapshot) bool { p, _ := s.Profile("home"); return !p.KillSwitch && p.AllowLAN })
	if n := strings.Count(strings.Join(f.Calls(), ";"), "update home"); n != 3 {
		t.Fatalf("%d updates, want 3: %v", n, f.Calls())
	}
}

func menuLabels(m *fyne.Menu) string {
	var l []string
	for _, it := range m.Items {
		if !it.IsSeparator {
			l = append(l, it.Label)
		}
	}
	return strings.Join(l, "|")
}

func TestHelperUnreachableBanner(t *testing.T) {
	f := newFake()
	f.Down = true
	u, vm, _ := newUI(t, f)
	sync(t, vm, func(s viewmodel.Snapshot) bool { return s.Helper.Known })
	u.Refresh()
	if !u.banner.Visible() || u.bannerText.Text != viewmodel.HelperNotRunning || !u.bannerBtn.Visible() {
		t.Fatalf("banner visible=%v text=%q", u.banner.Visible(), u.bannerText.Text)
	}
	if u.stateText.Text != viewmodel.HelperNotRunning || !u.toggle.Disabled() {
		t.Fatalf("state %q toggle disabled=%v", u.stateText.Text, u.toggle.Disabled())
	}
	test.Tap(u.bannerBtn)
	if u.installMsg.Text != "The helper is installed." {
		t.Fatalf("install message %q", u.installMsg.Text)
	}
}

func TestEditorKeepsInvalidTOMLUnsaved(t *testing.T) {
	f := newFake()
	f.Stored = []api.Profile{{Name: "home"}}
	f.TOMLs["home"] = "connection_string = \"vpn.example.net:443\"\n"
	u, vm, _ := newUI(t, f)
	if err := vm.RefreshProfiles(context.Background()); err != nil {
		t.Fatal(err)
	}
	test.Tap(u.editBtn)
	ed := u.editor
	if ed == nil || ed.entry.Text != f.TOMLs["home"] {
		t.Fatalf("editor not open with the profile's TOML: %+v", ed)
	}
	ed.entry.SetText("connection_string = \"vpn.example.net:443\"\n[connection]\nmtu = 99999\n")
	test.Tap(ed.save)
	if !ed.err.Visible() || ed.err.Text != badMTU || u.editor != ed {
		t.Fatalf("inline error visible=%v %q", ed.err.Visible(), ed.err.Text)
	}
	if strings.Contains(f.TOMLs["home"], "99999") {
		t.Fatal("invalid TOML saved")
	}
	ed.entry.SetText("connection_string = \"vpn.example.net:8443\"\n")
	test.Tap(ed.save)
	if u.editor != nil || f.TOMLs["home"] != "connection_string = \"vpn.example.net:8443\"\n" {
		t.Fatalf("valid save: editor %v toml %q", u.editor, f.TOMLs["home"])
	}
}

func TestAutostartSetting(t *testing.T) {
	u, _, _ := newUI(t, newFake())
	as := u.opts.Autostart.(*fakeAutostart)
	test.Tap(u.autostart)
	if !as.on {
		t.Fatal("autostart not enabled")
	}
	test.Tap(u.autostart)
	if as.on {
		t.Fatal("autostart not disabled")
	}
}

func TestQuitAsksToDisconnect(t *testing.T) {
	f := newFake()
	f.Stored = []api.Profile{{Name: "home"}}
	u, vm, _ := newUI(t, f)
	quits := 0
	u.opts.Quit = func() { quits++ }
	// Idle: quit at once.
	test.Tap(u.quitBtn)
	if quits != 1 || u.quitDialog != nil {
		t.Fatalf("idle quit: quits=%d dialog=%v", quits, u.quitDialog != nil)
	}
	if err := vm.Connect(context.Background(), "home"); err != nil {
		t.Fatal(err)
	}
	test.Tap(u.quitBtn)
	if quits != 1 || u.quitDialog == nil {
		t.Fatalf("connected quit did not ask: quits=%d", quits)
	}
	test.Tap(u.quitDisconnect)
	if quits != 2 || !strings.HasSuffix(strings.Join(f.Calls(), ";"), "connect home;disconnect") {
		t.Fatalf("disconnect and quit: quits=%d calls=%v", quits, f.Calls())
	}
}
