//go:build linux

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// Bounds of the waits on the binaries under test.
const (
	listenTimeout  = 10 * time.Second // server start until its port accepts
	connectTimeout = 20 * time.Second // client start until "connected"
	stopTimeout    = 15 * time.Second // SIGTERM until exit
)

var connectedRE = regexp.MustCompile(`^connected\b`)

// mserver is a running mirage-server inside the srv namespace.
type mserver struct {
	tp       *topology
	p        *proc
	dataDir  string
	stateDir string // journal and admin socket, per test
	starts   int
}

// configPath is the generated server.toml.
func (s *mserver) configPath() string { return filepath.Join(s.dataDir, "server.toml") }

// clientPath is the generated client.toml.
func (s *mserver) clientPath() string { return filepath.Join(s.dataDir, "client.toml") }

// usersPath is the generated users file.
func (s *mserver) usersPath() string { return filepath.Join(s.dataDir, "users") }

// startGeneratedServer runs "mirage-server run --data-dir" in srv with an
// empty data dir, so the server writes its default config, certificate,
// first user and client profile, then serves. NAT goes out of srv's veth to
// host.
func startGeneratedServer(t *testing.T, tp *topology) *mserver {
	t.Helper()
	b := bins(t)
	dir := t.TempDir()
	s := &mserver{tp: tp, dataDir: filepath.Join(dir, "server"), stateDir: filepath.Join(dir, "state")}
	s.p = startProc(t, tp.SRV, "mirage-server", procOpts{}, b.Server, "run",
		"--data-dir", s.dataDir, "--state-dir", s.stateDir,
		"--bind", srvAddr,
		"--port", fmt.Sprint(srvPort),
		"--host", srvAddr,
		"--tunnel-network", tunNet4,
		"--tunnel-network-v6", tunNet6,
		"--nat-interface", srvHostIf,
	)
	s.starts++
	s.waitListening(t)
	st, err := os.Stat(s.clientPath())
	if err != nil {
		t.Fatalf("generated client profile: %v", err)
	}
	if mode := st.Mode().Perm(); mode != 0o600 {
		t.Errorf("generated %s has mode %o, want 600 (it holds the password)", s.clientPath(), mode)
	}
	// The password stays in the 0600 file: stdout (journald, docker logs)
	// only says where it is.
	out := s.p.Stdout()
	prof, _ := os.ReadFile(s.clientPath())
	pw := regexp.MustCompile(`(?m)^password = "([^"]+)"`).FindSubmatch(prof)
	if pw == nil {
		t.Fatalf("no password line in the generated %s", s.clientPath())
	}
	if strings.Contains(out, string(pw[1])) || strings.Contains(out, "connection_string") || !strings.Contains(out, s.clientPath()) {
		t.Errorf("mirage-server run --data-dir: stdout must name %s and carry no profile or password; stdout:\n%s", s.clientPath(), out)
	}
	return s
}

// waitListening waits until the server's port accepts TCP from cli.
func (s *mserver) waitListening(t *testing.T) {
	t.Helper()
	err := waitPort(t, s.tp.CLI, serverEndpoint(), listenTimeout)
	if err != nil {
		if s.p.exited() {
			t.Fatalf("mirage-server exited with status %d before listening; stderr:\n%s", s.p.exitStatus, tail(s.p.Stderr(), 30))
		}
		t.Fatalf("mirage-server not listening on %s within %v: %v; stderr:\n%s", serverEndpoint(), listenTimeout, err, tail(s.p.Stderr(), 30))
	}
	if !strings.Contains(s.p.Stderr(), "listening") {
		t.Errorf("mirage-server accepts connections but never logged \"listening\" on stderr")
	}
}

// stop sends SIGTERM and waits for a graceful exit, failing on a non-zero
// status.
func (s *mserver) stop(t *testing.T) {
	t.Helper()
	s.p.signal(syscall.SIGTERM)
	code, err := s.p.wait(stopTimeout)
	if err != nil {
		t.Fatalf("mirage-server after SIGTERM: %v", err)
	}
	if code != 0 {
		t.Errorf("mirage-server exited with status %d after SIGTERM, want 0; stderr:\n%s", code, tail(s.p.Stderr(), 20))
	}
}

// restart starts the server again from its config file.
func (s *mserver) restart(t *testing.T) {
	t.Helper()
	s.starts++
	s.p = startProc(t, s.tp.SRV, fmt.Sprintf("mirage-server-%d", s.starts), procOpts{},
		bins(t).Server, "run", "-c", s.configPath(), "--state-dir", s.stateDir)
	s.waitListening(t)
}

// mclient is a running "mirage-helper connect" inside cli.
type mclient struct {
	p        *proc
	conf     string
	stateDir string
}

// startClient runs "mirage-helper connect CONF --state-dir DIR" in cli.
func startClient(t *testing.T, tp *topology, conf string) *mclient {
	t.Helper()
	c := &mclient{conf: conf, stateDir: filepath.Join(t.TempDir(), "helper-state")}
	c.p = startProc(t, tp.CLI, "mirage-helper", procOpts{}, bins(t).Helper, "connect", conf, "--state-dir", c.stateDir)
	return c
}

// waitConnected waits for the n-th "connected" line and returns it.
func (c *mclient) waitConnected(t *testing.T, n int, timeout time.Duration) string {
	t.Helper()
	lines, err := c.p.waitLines(connectedRE, n, timeout)
	if err != nil {
		t.Fatalf("waiting for connection %d: %v", n, err)
	}
	return lines[n-1]
}

// connectedField returns the value of key=value in a "connected" line.
func connectedField(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// connect starts a client with the server's generated profile and waits
// until it is connected and the server's tunnel address answers.
func connect(t *testing.T, tp *topology, s *mserver) (*mclient, string) {
	t.Helper()
	c := startClient(t, tp, s.clientPath())
	line := c.waitConnected(t, 1, connectTimeout)
	t.Logf("client: %s", line)
	waitPing(t, tp.CLI, tunSrv4, 5*time.Second)
	return c, line
}

// readTOML decodes a TOML file into a generic map.
func readTOML(t *testing.T, path string) map[string]any {
	t.Helper()
	m := map[string]any{}
	if _, err := toml.DecodeFile(path, &m); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	return m
}

// writeTOML encodes m into path with mode 0600.
func writeTOML(t *testing.T, path string, m map[string]any) {
	t.Helper()
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(m); err != nil {
		t.Fatalf("encode %s: %v", path, err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// table returns m[name] as a table, creating it.
func table(m map[string]any, name string) map[string]any {
	if v, ok := m[name].(map[string]any); ok {
		return v
	}
	v := map[string]any{}
	m[name] = v
	return v
}

// derivedClient writes a copy of the server's generated client profile with
// edit applied and returns its path.
func derivedClient(t *testing.T, s *mserver, edit func(m map[string]any)) string {
	t.Helper()
	m := readTOML(t, s.clientPath())
	edit(m)
	path := filepath.Join(t.TempDir(), "client.toml")
	writeTOML(t, path, m)
	return path
}

// runBin runs a binary to completion with optional stdin (bounded by
// cmdTimeout) and returns stdout, stderr and the exit status.
func runBin(t *testing.T, ns, stdin string, argv ...string) (stdout, stderr string, status int) {
	t.Helper()
	stdout, stderr, status, timedOut := runBinTimeout(t, cmdTimeout, ns, stdin, argv...)
	if timedOut {
		t.Fatalf("%s: still running after %v", strings.Join(argv, " "), cmdTimeout)
	}
	return stdout, stderr, status
}

// runBinTimeout is runBin with its own bound; a process still running at the
// bound is killed and reported with timedOut.
func runBinTimeout(t *testing.T, timeout time.Duration, ns, stdin string, argv ...string) (stdout, stderr string, status int, timedOut bool) {
	t.Helper()
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.WaitDelay = 2 * time.Second
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ctx.Err() != nil {
		return o.String(), e.String(), -1, true
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("%s: %v", strings.Join(argv, " "), err)
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode(), false
}
