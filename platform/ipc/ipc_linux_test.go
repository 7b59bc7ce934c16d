package ipc

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// roleEnv makes the re-executed test binary act as an API client.
const roleEnv = "MIRAGE_IPC_TEST_CLIENT"

func TestMain(m *testing.M) {
	if sock := os.Getenv(roleEnv); sock != "" {
		fmt.Println(clientProbe(sock))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// clientProbe sends one HTTP request on sock and describes the outcome as
// "answer: BODY", "dial: ERR" or "no answer: ERR".
func clientProbe(sock string) string {
	c, err := net.DialTimeout("unix", sock, 3*time.Second)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprint(c, "GET /who HTTP/1.1\r\nHost: helper\r\nConnection: close\r\n\r\n"); err != nil {
		return "no answer: " + err.Error()
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "no answer: " + err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
	return "answer: " + b.String()
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("ipc test needs root (chown, other uids); CI=true: failing instead of skipping")
		}
		t.Skip("ipc test needs root (chown, other uids); run as root")
	}
}

// serve runs an HTTP server answering "uid=N" on a socket from Listen.
func serve(t *testing.T, policy Policy) (string, *lockedWriter) {
	t.Helper()
	dir := t.TempDir()
	// Let other users reach the socket's directory: only the socket's own
	// mode and the peer check may decide.
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "helper.sock")
	logs := &lockedWriter{}
	policy.Logger = newTestLogger(logs)
	ln, err := Listen(sock, policy)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := r.Context().Value(connKey{}).(net.Conn)
			uid, ok := PeerUID(c)
			fmt.Fprintf(w, "uid=%d ok=%v", uid, ok)
		}),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
		if _, err := os.Lstat(sock); err == nil {
			t.Errorf("socket %s still exists after Close", sock)
		}
	})
	return sock, logs
}

type connKey struct{}

// probeAs re-executes the test binary as a client with the given setpriv
// arguments (none: as root).
func probeAs(t *testing.T, sock string, setprivArgs ...string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	argv := []string{exe, "-test.run=^$"}
	if len(setprivArgs) > 0 {
		if _, err := exec.LookPath("setpriv"); err != nil {
			t.Skipf("setpriv (util-linux) not found: %v", err)
		}
		argv = append(append([]string{"setpriv"}, setprivArgs...), argv...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), roleEnv+"="+sock)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

const nobody = "65534"

func TestRootServed(t *testing.T) {
	requireRoot(t)
	sock, _ := serve(t, Policy{AllowGroup: "mirage-ipc-test-absent"})
	st, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if m := st.Mode().Perm(); m != 0o600 {
		t.Errorf("socket mode %o without the group, want 600", m)
	}
	if got := probeAs(t, sock); got != "answer: uid=0 ok=true" {
		t.Fatalf("root client got %q, want an answer with uid=0", got)
	}
}

func TestUnprivilegedRefused(t *testing.T) {
	requireRoot(t)
	sock, logs := serve(t, Policy{AllowGroup: "mirage-ipc-test-absent"})
	nob := []string{"--reuid=" + nobody, "--regid=" + nobody, "--clear-groups"}

	// Default mode 0600: the kernel refuses the connect.
	if got := probeAs(t, sock, nob...); !strings.HasPrefix(got, "dial: ") || !strings.Contains(got, "permission denied") {
		t.Errorf("uid %s on a 0600 socket got %q, want a permission denied dial error", nobody, got)
	}
	// Even if the socket were world-writable, the peer check drops it.
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	got := probeAs(t, sock, nob...)
	if !strings.HasPrefix(got, "no answer: ") {
		t.Fatalf("uid %s on a 0666 socket got %q, want the connection closed without an HTTP answer", nobody, got)
	}
	if !strings.Contains(logs.String(), "refused a connection") || !strings.Contains(logs.String(), "uid="+nobody) {
		t.Errorf("refusal not logged with the uid; log:\n%s", logs.String())
	}
	// Root still works afterwards: the refused caller did not stop Accept.
	if got := probeAs(t, sock); got != "answer: uid=0 ok=true" {
		t.Errorf("root after a refusal got %q", got)
	}
}

func TestAllowUIDs(t *testing.T) {
	requireRoot(t)
	sock, _ := serve(t, Policy{AllowUIDs: []int{65534}})
	st, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if m := st.Mode().Perm(); m != 0o666 {
		t.Errorf("socket mode %o with AllowUIDs, want 666", m)
	}
	got := probeAs(t, sock, "--reuid="+nobody, "--regid="+nobody, "--clear-groups")
	if got != "answer: uid=65534 ok=true" {
		t.Fatalf("allowed uid got %q", got)
	}
	// A uid that is not listed is refused.
	got = probeAs(t, sock, "--reuid=65533", "--regid=65533", "--clear-groups")
	if !strings.HasPrefix(got, "no answer: ") {
		t.Fatalf("unlisted uid 65533 got %q, want no answer", got)
	}
}

func TestGroupMemberAccepted(t *testing.T) {
	requireRoot(t)
	for _, tool := range []string{"groupadd", "groupdel", "useradd", "userdel"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found (Debian package passwd): cannot create a temporary group and user", tool)
		}
	}
	suffix := strconv.Itoa(os.Getpid() % 100000)
	group, member := "mirtg"+suffix, "mirtu"+suffix
	mustRun(t, "groupadd", "--system", group)
	t.Cleanup(func() { _ = exec.Command("groupdel", group).Run() })
	mustRun(t, "useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "-N", "-G", group, member)
	t.Cleanup(func() { _ = exec.Command("userdel", member).Run() })
	g, err := user.LookupGroup(group)
	if err != nil {
		t.Fatal(err)
	}
	u, err := user.Lookup(member)
	if err != nil {
		t.Fatal(err)
	}

	sock, _ := serve(t, Policy{AllowGroup: group})
	st, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if m := st.Mode().Perm(); m != 0o660 {
		t.Errorf("socket mode %o with the group present, want 660", m)
	}
	// The member's own primary group is not the allowed one: only its
	// supplementary membership (from the user database) qualifies it.
	got := probeAs(t, sock, "--reuid="+u.Uid, "--regid="+u.Gid, "--groups="+g.Gid)
	if want := "answer: uid=" + u.Uid + " ok=true"; got != want {
		t.Fatalf("group member got %q, want %q", got, want)
	}
	// A non-member holding the gid in its process (but not in the user
	// database) passes the file mode and is still dropped by the peer check.
	got = probeAs(t, sock, "--reuid="+nobody, "--regid="+nobody, "--groups="+g.Gid)
	if !strings.HasPrefix(got, "no answer: ") {
		t.Fatalf("non-member uid %s got %q, want no answer", nobody, got)
	}
}

func TestStaleSocketReplacedLiveRefused(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	// A socket file nobody listens on.
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	ln, err := Listen(sock, Policy{})
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer ln.Close()
	if _, err := Listen(sock, Policy{}); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second Listen on a live socket: %v, want 'another process is listening'", err)
	}
	reg := filepath.Join(dir, "file")
	if err := os.WriteFile(reg, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(reg, Policy{}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen on a regular file: %v, want 'not a socket'", err)
	}
	if b, _ := os.ReadFile(reg); string(b) != "x" {
		t.Fatal("Listen changed a regular file")
	}
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
