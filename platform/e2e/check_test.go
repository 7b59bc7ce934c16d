//go:build linux

package e2e

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mirage-vpn/mirage/core/transport/tlsx"
)

// checkRow is one row of `mirage-server check --json`.
type checkRow struct {
	Section, Name, Status, Detail, Fix string
}

// runCheck runs `mirage-server check` in the server's namespace and
// returns its rows by name and its exit status.
func runCheck(t *testing.T, ns, cfg string, extra ...string) (map[string]checkRow, int) {
	t.Helper()
	argv := append([]string{bins(t).Server, "check", "-c", cfg, "--json", "--timeout", "3s"}, extra...)
	out, stderr, code := runBin(t, ns, "", argv...)
	var rep struct{ Results []checkRow }
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("check --json: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr)
	}
	rows := map[string]checkRow{}
	for _, r := range rep.Results {
		rows[r.Name] = r
		t.Logf("%-8s %-22s %s  %s", r.Section, r.Name, r.Status, r.Detail)
		if r.Fix != "" {
			t.Logf("%34s-> %s", "", r.Fix)
		}
	}
	return rows, code
}

// wantRow asserts a row's status and that its detail or fix says each word.
func wantRow(t *testing.T, rows map[string]checkRow, name, status string, words ...string) {
	t.Helper()
	r, ok := rows[name]
	if !ok {
		t.Errorf("check printed no row %q", name)
		return
	}
	if r.Status != status {
		t.Errorf("%s: %s (%s), want %s", name, r.Status, r.Detail, status)
	}
	for _, w := range words {
		if !strings.Contains(r.Detail+" "+r.Fix, w) {
			t.Errorf("%s: %q / %q does not say %q", name, r.Detail, r.Fix, w)
		}
	}
}

// copyDir copies the server's data directory (config, users, certificate)
// so a variant can be edited without touching the running server's files.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// `mirage-server check` against a correct REALITY server in netns: every
// probe a censor would send gets exactly what the stand-in site answers,
// and the command exits 0. Variants of its config FAIL with a reason: an
// unreachable camouflage target, a certificate that does not match its
// key, a world-readable users file.
func TestE2ECheck(t *testing.T) {
	tp, _, s := realitySetup(t, nil)

	rows, code := runCheck(t, tp.SRV, s.configPath())
	if code != 0 {
		t.Errorf("check of a correct server: exit status %d, want 0", code)
	}
	for _, name := range []string{"config file", "users file", "certificate", "reality target", "ports",
		"tun device", "ip forwarding", "nat interfaces", "fallback site"} {
		wantRow(t, rows, name, "PASS")
	}
	wantRow(t, rows, "ports", "PASS", "running server")
	for _, name := range []string{"HTTPS, target SNI", "HTTPS, unknown SNI", "TLS 1.2 only", "garbage bytes"} {
		wantRow(t, rows, name, "PASS", "identical to the target")
	}
	wantRow(t, rows, "HTTPS, target SNI", "PASS", realityTarget)
	wantRow(t, rows, "replayed ClientHello", "PASS", "target's handshake")
	// By design these differ from the target, and check says so.
	wantRow(t, rows, "HTTPS, no SNI", "WARN", "self-signed")
	wantRow(t, rows, "HTTP/3", "WARN", "prober comparing")

	t.Run("unreachable target", func(t *testing.T) {
		dir := copyDir(t, s.dataDir)
		cfg := filepath.Join(dir, "server.toml")
		m := readTOML(t, cfg)
		dead := net.JoinHostPort(hostAddr, "9") // nothing listens there
		table(m, "reality")["dest"] = dead
		writeTOML(t, cfg, m)
		rows, code := runCheck(t, tp.SRV, cfg)
		if code != 1 {
			t.Errorf("exit status %d, want 1", code)
		}
		wantRow(t, rows, "reality target", "FAIL", "unreachable", dead)
	})
	t.Run("certificate does not match its key", func(t *testing.T) {
		dir := copyDir(t, s.dataDir)
		other := t.TempDir()
		if _, _, err := tlsx.EnsureCert(filepath.Join(other, "cert.pem"), filepath.Join(other, "key.pem"), []string{srvAddr}); err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(dir, "server.toml")
		m := readTOML(t, cfg)
		table(m, "tls")["key_file"] = filepath.Join(other, "key.pem")
		writeTOML(t, cfg, m)
		rows, code := runCheck(t, tp.SRV, cfg, "--no-probe")
		if code != 1 {
			t.Errorf("exit status %d, want 1", code)
		}
		wantRow(t, rows, "certificate", "FAIL", "do not match")
	})
	t.Run("users file 0644", func(t *testing.T) {
		dir := copyDir(t, s.dataDir)
		cfg := filepath.Join(dir, "server.toml")
		users := filepath.Join(dir, filepath.Base(s.usersPath()))
		if err := os.Chmod(users, 0o644); err != nil {
			t.Fatal(err)
		}
		rows, code := runCheck(t, tp.SRV, cfg, "--no-probe")
		if code != 1 {
			t.Errorf("exit status %d, want 1", code)
		}
		wantRow(t, rows, "users file", "FAIL", "0644", "chmod 600")
	})
}

// check against a tcp-tls-only server (no REALITY): nothing to compare
// with, so the probes judge it as a web site; its self-signed certificate
// is a WARN, not a FAIL, and the command exits 0.
func TestE2ECheckTCPTLS(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	rows, code := runCheck(t, tp.SRV, s.configPath())
	if code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	wantRow(t, rows, "reality target", "SKIP")
	wantRow(t, rows, "ports", "PASS", "running server")
	wantRow(t, rows, "HTTPS", "WARN", "self-signed")
	wantRow(t, rows, "TLS 1.2 only", "PASS")
	wantRow(t, rows, "replayed ClientHello", "SKIP")
	wantRow(t, rows, "HTTP/3", "WARN", "self-signed")

	// Stopped, the same config checks the ports as free and says the
	// server was not probed.
	s.p.signal(syscall.SIGTERM)
	if code, err := s.p.wait(stopTimeout); err != nil || code != 0 {
		t.Fatalf("server after SIGTERM: status %d, %v", code, err)
	}
	rows, code = runCheck(t, tp.SRV, s.configPath())
	if code != 0 {
		t.Errorf("stopped server: exit status %d, want 0", code)
	}
	wantRow(t, rows, "ports", "PASS", "free")
	wantRow(t, rows, "detectability", "WARN", "not running")
}
