package check

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/auth"
	"github.com/mirage-vpn/mirage/core/config"
	"github.com/mirage-vpn/mirage/core/transport/reality"
	"github.com/mirage-vpn/mirage/core/transport/tlsx"
)

// testConfig is a valid server config in a temporary directory: users
// file 0600 with one user, a generated certificate for vpn.example.org,
// bound to a free loopback port (nothing listens there).
func testConfig(t *testing.T) *config.Server {
	t.Helper()
	dir := t.TempDir()
	s := config.DefaultServer()
	s.Path = filepath.Join(dir, "server.toml")
	s.BindAddress = "127.0.0.1"
	s.BindPort = freePort(t)
	s.TLS.AutoGenerate = false
	s.TLS.CertFile, s.TLS.KeyFile = "cert.pem", "key.pem"
	s.Authentication.UsersFile = "users"
	if _, _, err := tlsx.EnsureCert(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), []string{"vpn.example.org"}); err != nil {
		t.Fatal(err)
	}
	u := auth.NewUsers()
	if err := u.Set("alice", "correct horse battery"); err != nil {
		t.Fatal(err)
	}
	if err := u.Save(filepath.Join(dir, "users")); err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	return s
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func run(t *testing.T, s *config.Server, o Options) *Report {
	t.Helper()
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	r := Run(context.Background(), s, o)
	var b bytes.Buffer
	r.WriteTable(&b)
	t.Logf("report:\n%s", b.String())
	return r
}

// want asserts the row name has status st and its detail and fix
// contain every word.
func want(t *testing.T, r *Report, name string, st Status, words ...string) {
	t.Helper()
	x, ok := r.Find(name)
	if !ok {
		t.Fatalf("no row %q", name)
	}
	if x.Status != st {
		t.Errorf("%s: %s (%s), want %s", name, x.Status, x.Detail, st)
	}
	for _, w := range words {
		if !strings.Contains(x.Detail+" "+x.Fix, w) {
			t.Errorf("%s: %q / %q does not say %q", name, x.Detail, x.Fix, w)
		}
	}
}

func TestGoodConfigPasses(t *testing.T) {
	s := testConfig(t)
	r := run(t, s, Options{})
	want(t, r, "config file", Pass)
	want(t, r, "users file", Pass, "1 users", "0600")
	want(t, r, "certificate", Pass, "vpn.example.org")
	want(t, r, "reality target", Skip)
	want(t, r, "ports", Pass, "free")
	want(t, r, "nat interfaces", Warn, "masquerades nothing")
	want(t, r, "detectability", Warn, "not running")
	if r.Failed() {
		t.Errorf("a good config failed")
	}
}

func TestUsersFileWorldReadableFails(t *testing.T) {
	s := testConfig(t)
	path := s.ResolvePath(s.Authentication.UsersFile)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	r := run(t, s, Options{NoProbe: true})
	want(t, r, "users file", Fail, "0644", "chmod 600 "+path)
	if !r.Failed() {
		t.Error("Failed() = false")
	}
	os.Chmod(path, 0o640)
	want(t, run(t, s, Options{NoProbe: true}), "users file", Warn, "group")
	os.Chmod(path, 0o600)
	os.WriteFile(path, []byte("alice:not-a-hash\n"), 0o600)
	want(t, run(t, s, Options{NoProbe: true}), "users file", Fail, "line 1")
}

func TestCertificateProblemsFail(t *testing.T) {
	t.Run("key of another certificate", func(t *testing.T) {
		s := testConfig(t)
		other := t.TempDir()
		if _, _, err := tlsx.EnsureCert(filepath.Join(other, "c.pem"), filepath.Join(other, "k.pem"), []string{"vpn.example.org"}); err != nil {
			t.Fatal(err)
		}
		s.TLS.KeyFile = filepath.Join(other, "k.pem")
		want(t, run(t, s, Options{NoProbe: true}), "certificate", Fail, "do not match")
	})
	t.Run("name not covered", func(t *testing.T) {
		s := testConfig(t)
		s.TLS.ServerNames = []string{"other.example.net"}
		want(t, run(t, s, Options{NoProbe: true}), "certificate", Fail, "other.example.net", "vpn.example.org")
	})
	t.Run("expired", func(t *testing.T) {
		s := testConfig(t)
		later := func() time.Time { return time.Now().AddDate(30, 0, 0) }
		want(t, run(t, s, Options{NoProbe: true, Now: later}), "certificate", Fail, "expired")
	})
	t.Run("missing but generated at start", func(t *testing.T) {
		s := testConfig(t)
		s.TLS.AutoGenerate = true
		s.TLS.CertFile, s.TLS.KeyFile = "new-cert.pem", "new-key.pem"
		want(t, run(t, s, Options{NoProbe: true}), "certificate", Pass, "first start")
	})
}

func TestNATInterfaceMissingFails(t *testing.T) {
	s := testConfig(t)
	s.NAT.IPv4Interface = "nosuch0"
	want(t, run(t, s, Options{NoProbe: true}), "nat interfaces", Fail, "nosuch0")
	s.NAT.IPv4Interface = "lo"
	want(t, run(t, s, Options{NoProbe: true}), "nat interfaces", Pass, "lo")
}

func TestUnreachableRealityTargetFails(t *testing.T) {
	s := testConfig(t)
	priv, _, err := reality.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s.Reality.PrivateKey = config.EncodeKey(priv)
	s.Reality.TargetSNI = "www.example.com"
	s.Reality.ShortIDs = []string{"0123456789abcdef"}
	s.Reality.Dest = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))) // nothing listens
	r := run(t, s, Options{NoProbe: true})
	want(t, r, "reality target", Fail, "unreachable", s.Reality.Dest)
	if !r.Failed() {
		t.Error("Failed() = false")
	}
}

func TestUDPPortHeldFails(t *testing.T) {
	s := testConfig(t)
	s.QUIC.Enabled = true
	pc, err := net.ListenPacket("udp", net.JoinHostPort(s.BindAddress, strconv.Itoa(s.BindPort)))
	if err != nil {
		t.Skipf("cannot bind the UDP port for the test: %v", err)
	}
	defer pc.Close()
	want(t, run(t, s, Options{}), "ports", Fail, "UDP", "another program")
	// --no-probe does not connect, so it cannot tell the server from
	// another program.
	want(t, run(t, s, Options{NoProbe: true}), "ports", Warn, "UDP", "in use")
}

func TestReportOutput(t *testing.T) {
	r := &Report{}
	r.add("config", "users file", Fail, "users is world-readable", "chmod 600 users")
	r.add("probe", "garbage bytes", Pass, "identical", "")
	var b bytes.Buffer
	r.WriteTable(&b)
	out := b.String()
	for _, w := range []string{"users file", "FAIL", "-> chmod 600 users", "1 PASS, 0 WARN, 1 FAIL, 0 SKIP"} {
		if !strings.Contains(out, w) {
			t.Errorf("table lacks %q:\n%s", w, out)
		}
	}
	b.Reset()
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Results []struct{ Name, Status, Fix string }
	}
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Results) != 2 || back.Results[0].Status != "FAIL" || back.Results[0].Fix != "chmod 600 users" {
		t.Errorf("JSON = %s", b.String())
	}
}

func TestRecordStructure(t *testing.T) {
	b := []byte{22, 3, 3, 0, 2, 1, 2, 20, 3, 3, 0, 1, 1, 23, 3, 3, 1, 0}
	if got := records(b); got != "22/2,20/1,23/256" {
		t.Errorf("records = %q", got)
	}
	if records(nil) != "none" {
		t.Error("records(nil) != none")
	}
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"22/90,20/1,23/2000", "22/90,20/1,23/2003", true},
		{"22/90,20/1,23/2000", "22/90,20/1,23/1200", false},
		{"22/90,20/1", "22/90,20/1,23/2000", false},
		{"21/2", "22/2", false},
		{"none", "none", true},
		{"none", "22/2", false},
	} {
		if got := similar(c.a, c.b); got != c.want {
			t.Errorf("similar(%q, %q) = %v", c.a, c.b, got)
		}
	}
}
