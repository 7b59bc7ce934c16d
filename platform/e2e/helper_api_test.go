//go:build linux

package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/api"
	"github.com/mirage-vpn/mirage/core/apiclient"
)

// helperAPI is a running "mirage-helper run" in cli and a client of its
// local API.
type helperAPI struct {
	p    *proc
	sock string
	c    *apiclient.Client
}

// startHelperAPI runs "mirage-helper run" in cli with its socket, state and
// profiles in a fresh temp dir, and waits until the API answers.
func startHelperAPI(t *testing.T, tp *topology, name string) *helperAPI {
	t.Helper()
	return startHelperAPIIn(t, tp, name, t.TempDir(), true)
}

// startHelperAPIIn runs "mirage-helper run" in cli with its socket, state
// and profiles under dir (a restart reuses the dir), and waits until the
// API answers; fresh says it must report Disconnected.
func startHelperAPIIn(t *testing.T, tp *topology, name, dir string, fresh bool) *helperAPI {
	t.Helper()
	// Other users may traverse to the socket: only its mode and the
	// helper's peer check decide who gets in.
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	h := &helperAPI{sock: filepath.Join(dir, "run", "helper.sock")}
	h.p = startProc(t, tp.CLI, name, procOpts{}, bins(t).Helper, "run",
		"--socket", h.sock,
		"--state-dir", filepath.Join(dir, "state"),
		"--profiles-dir", filepath.Join(dir, "profiles"),
		// A group that does not exist: the socket is root-only (0600).
		"--group", "mirage-e2e-nogroup",
	)
	h.c = apiclient.New(apiclient.Dial(h.sock))
	t.Cleanup(h.c.Close)
	deadline := time.Now().Add(listenTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := h.c.Status(ctx)
		cancel()
		if err == nil {
			if fresh && st.State != api.Disconnected {
				t.Fatalf("fresh helper status %q, want %q", st.State, api.Disconnected)
			}
			return h
		}
		if h.p.exited() {
			t.Fatalf("mirage-helper run exited with status %d before serving; stderr:\n%s", h.p.exitStatus, tail(h.p.Stderr(), 30))
		}
		if time.Now().After(deadline) {
			t.Fatalf("mirage-helper run: API not answering on %s within %v: %v; stderr:\n%s", h.sock, listenTimeout, err, tail(h.p.Stderr(), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// statusWatch follows /v1/watch in the background.
type statusWatch struct {
	mu      sync.Mutex
	last    api.Status
	updates int
	err     error
	ch      chan struct{}
}

func watchStatus(t *testing.T, c *apiclient.Client) *statusWatch {
	t.Helper()
	w := &statusWatch{ch: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := c.Watch(ctx, func(s api.Status) {
			w.mu.Lock()
			w.last, w.updates = s, w.updates+1
			w.mu.Unlock()
			w.poke()
		})
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
		w.poke()
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

func (w *statusWatch) poke() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// waitFor waits until a watched status satisfies ok.
func (w *statusWatch) waitFor(t *testing.T, what string, timeout time.Duration, ok func(api.Status) bool) api.Status {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		w.mu.Lock()
		last, n, err := w.last, w.updates, w.err
		w.mu.Unlock()
		if n > 0 && ok(last) {
			return last
		}
		if err != nil {
			t.Fatalf("waiting for %s: watch stream ended: %v (last status %+v)", what, err, last)
		}
		if n > 0 && last.State == api.Failed && last.Error != nil {
			t.Fatalf("waiting for %s: helper reports %s: %s", what, last.Error.Code, last.Error.Message)
		}
		select {
		case <-w.ch:
		case <-timer.C:
			t.Fatalf("waiting for %s: not within %v after %d updates; last status %+v", what, timeout, n, last)
		}
	}
}

// importAndConnect imports the server's generated profile and connects it,
// waiting for Connected and a ping through the tunnel.
func (h *helperAPI) importAndConnect(t *testing.T, tp *topology, s *mserver, w *statusWatch) api.Status {
	t.Helper()
	return h.importFileAndConnect(t, tp, s.clientPath(), w)
}

// importFileAndConnect is importAndConnect with the profile from path.
func (h *helperAPI) importFileAndConnect(t *testing.T, tp *topology, path string, w *statusWatch) api.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.Profile(ctx, "e2e"); err != nil {
		p, err := h.c.Import(ctx, api.ImportRequest{Name: "e2e", TOML: string(raw)})
		if err != nil {
			t.Fatalf("import the generated client.toml: %v", err)
		}
		if p.Name != "e2e" || p.Username == "" || !strings.Contains(p.Server, srvAddr) {
			t.Errorf("imported profile %+v: want name e2e, a username and server %s", p, srvAddr)
		}
	}
	if _, err := h.c.Connect(ctx, "e2e"); err != nil {
		t.Fatalf("connect: %v", err)
	}
	st := w.waitFor(t, "state connected", connectTimeout, func(s api.Status) bool { return s.State == api.Connected })
	if st.Profile != "e2e" {
		t.Errorf("connected status profile %q, want e2e", st.Profile)
	}
	var v4 bool
	for _, a := range st.Addresses {
		if strings.HasPrefix(a, "198.51.100.") && !strings.HasPrefix(a, tunSrv4+"/") {
			v4 = true
		}
	}
	if !v4 {
		t.Errorf("connected status addresses %q: want a client address in 198.51.100.0/24", st.Addresses)
	}
	waitPing(t, tp.CLI, tunSrv4, 5*time.Second)
	return st
}

// waitRestored waits until cli's network state equals before.
func waitRestored(t *testing.T, tp *topology, before netState, what string) {
	t.Helper()
	var d []string
	for range 50 {
		if d = before.diff(tp.snapshot(t)); len(d) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("%s: client namespace not restored:\n%s", what, strings.Join(d, "\n"))
}

// TestHelperAPI drives "mirage-helper run" through its local API the way the
// desktop app does: import the generated profile, connect, watch live
// counters, disconnect, and check the OS is left exactly as before; then
// check that a SIGTERM while connected disconnects cleanly, and that an
// unprivileged user gets nothing from the socket.
func TestHelperAPI(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	before := tp.snapshot(t)
	h := startHelperAPI(t, tp, "mirage-helper-run")
	w := watchStatus(t, h.c)

	h.importAndConnect(t, tp, s, w)
	if err := ping(tp.CLI, hostAddr); err != nil {
		t.Errorf("ping host %s through the tunnel: %v", hostAddr, err)
	}
	st := w.waitFor(t, "non-zero byte and packet counters", 5*time.Second, func(s api.Status) bool {
		return s.State == api.Connected && s.Stats.TxBytes > 0 && s.Stats.RxBytes > 0 &&
			s.Stats.TxPackets > 0 && s.Stats.RxPackets > 0
	})
	t.Logf("watch: %+v", st.Stats)

	t.Run("unprivileged caller refused", func(t *testing.T) {
		refusedUnprivileged(t, h)
	})

	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	dst, err := h.c.Disconnect(ctx)
	if err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	if dst.State != api.Disconnected {
		t.Errorf("status after disconnect %q, want %q", dst.State, api.Disconnected)
	}
	w.waitFor(t, "state disconnected", 5*time.Second, func(s api.Status) bool { return s.State == api.Disconnected })
	waitRestored(t, tp, before, "after disconnect")
	if err := ping(tp.CLI, tunSrv4); err == nil {
		t.Errorf("tunnel address %s still answers after disconnect", tunSrv4)
	}

	// Connected again, then SIGTERM: the helper disconnects and exits 0.
	h.importAndConnect(t, tp, s, w)
	h.p.signal(syscall.SIGTERM)
	code, err := h.p.wait(stopTimeout)
	if err != nil {
		t.Fatalf("mirage-helper run after SIGTERM: %v", err)
	}
	if code != 0 {
		t.Errorf("mirage-helper run exited %d after SIGTERM, want 0; stderr:\n%s", code, tail(h.p.Stderr(), 20))
	}
	waitRestored(t, tp, before, "after SIGTERM while connected")
	if _, err := os.Lstat(h.sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket %s after exit: %v, want it removed", h.sock, err)
	}
}

// refusedUnprivileged checks that uid 65534 gets no API answer: the 0600
// socket refuses the connect, and even a world-writable socket is closed by
// the helper's peer check (which logs it) without an HTTP answer.
func refusedUnprivileged(t *testing.T, h *helperAPI) {
	sock := h.sock
	refusals := func() int { return strings.Count(h.p.Stderr(), "local API: refused a connection") }
	for _, tool := range []string{"setpriv", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipOrFail(t, "needs %s (Debian packages util-linux, curl): %v", tool, err)
		}
	}
	get := func(asNobody bool) (string, int) {
		argv := []string{"curl", "-sS", "--max-time", "5", "--unix-socket", sock, "http://mirage-helper/v1/status"}
		if asNobody {
			argv = append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}, argv...)
		}
		out, errOut, code := runBin(t, "", "", argv...)
		return out + errOut, code
	}
	// Root gets an answer: curl itself works here.
	if out, code := get(false); code != 0 || !strings.Contains(out, `"state"`) {
		t.Fatalf("root: curl exit %d, output %q; want a status", code, out)
	}
	n0 := refusals()
	if out, code := get(true); code == 0 || strings.Contains(out, `"state"`) {
		t.Errorf("uid 65534 on the 0600 socket: curl exit %d, output %q; want refused", code, out)
	}
	if n := refusals(); n != n0 {
		t.Errorf("the 0600 socket let uid 65534 connect (the helper refused it %d times); the kernel should have", n-n0)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(sock, 0o600)
	out, code := get(true)
	if code == 0 || strings.Contains(out, `"state"`) {
		t.Errorf("uid 65534 on a 0666 socket: curl exit %d, output %q; want the connection closed without an answer", code, out)
	}
	// The helper, not the file mode, refused it: it logged the caller.
	deadline := time.Now().Add(3 * time.Second)
	for refusals() == n0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if refusals() == n0 || !strings.Contains(h.p.Stderr(), "uid=65534") {
		t.Errorf("uid 65534 on a 0666 socket: the helper logged no refusal with the uid; stderr:\n%s", tail(h.p.Stderr(), 20))
	}
}
