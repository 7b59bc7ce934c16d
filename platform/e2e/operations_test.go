//go:build linux

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/transport/tlsx"
)

// Operating a running server: `mirage-server status` lists the session;
// SIGHUP after `users add` lets the new user in and serves a renewed
// certificate, while the existing session keeps pinging throughout; and
// no log line of the whole run (server and clients at debug level) holds
// a password or the certificate's private key.
func TestE2EOperations(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	s.stop(t)
	m := readTOML(t, s.configPath())
	table(m, "log")["level"] = "debug"
	writeTOML(t, s.configPath(), m)
	s.restart(t)
	conf := derivedClient(t, s, func(m map[string]any) { table(m, "log")["level"] = "debug" })
	alicePass := readTOML(t, conf)["authentication"].(map[string]any)["password"].(string)
	user := readTOML(t, conf)["authentication"].(map[string]any)["username"].(string)
	c := startClient(t, tp, conf)
	c.waitConnected(t, 1, connectTimeout)
	waitPing(t, tp.CLI, tunSrv4, 5*time.Second)

	// status: text and JSON.
	out, errOut, code := runBin(t, tp.SRV, "", bins(t).Server, "status", "--state-dir", s.stateDir)
	if code != 0 {
		t.Fatalf("status: %d\n%s%s", code, out, errOut)
	}
	t.Logf("mirage-server status:\n%s", out)
	for _, want := range []string{"users online: 1, sessions: 1, connections: tcp-tls 1", user, "198.51.100.", "tcp-tls 192.0.2.2:"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q", want)
		}
	}
	js, _, code := runBin(t, tp.SRV, "", bins(t).Server, "status", "--state-dir", s.stateDir, "--json")
	var st struct {
		Sessions []struct {
			User string `json:"user"`
		} `json:"sessions"`
	}
	if err := json.Unmarshal([]byte(js), &st); code != 0 || err != nil || len(st.Sessions) != 1 || st.Sessions[0].User != user {
		t.Errorf("status --json: %d %v %s", code, err, js)
	}

	// The existing session pings during everything below.
	pinger := exec.Command("ip", "netns", "exec", tp.CLI, "ping", "-n", "-i", "0.2", "-c", "60", "-W", "1", tunSrv4)
	var pingOut strings.Builder
	pinger.Stdout = &pingOut
	if err := pinger.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pinger.Process.Kill(); pinger.Wait() })

	// A new user and a renewed certificate, then SIGHUP.
	const bobPass = "bob-e2e-password-7f3a"
	cmd := exec.Command("ip", "netns", "exec", tp.SRV, bins(t).Server, "users", "add", "-f", s.usersPath(), "bob")
	cmd.Stdin = strings.NewReader(bobPass + "\n")
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("users add: %v\n%s", err, o)
	}
	certFile, keyFile := filepath.Join(s.dataDir, "cert.pem"), filepath.Join(s.dataDir, "key.pem")
	oldPin := servedPin(t, tp)
	os.Remove(certFile)
	os.Remove(keyFile)
	newPin, _, err := tlsx.EnsureCert(certFile, keyFile, []string{srvAddr})
	if err != nil {
		t.Fatal(err)
	}
	s.p.signal(syscall.SIGHUP)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(s.p.Stderr(), "certificate reloaded"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged:\n%s", tail(s.p.Stderr(), 10))
		}
	}
	if got := servedPin(t, tp); got != newPin || got == oldPin {
		t.Errorf("after SIGHUP the server serves %s, want the new certificate %s (old %s)", got, newPin, oldPin)
	}

	// bob connects from the router's namespace (split tunnel to the
	// server's tunnel address only), with the new certificate's pin.
	bobConf := derivedClient(t, s, func(m map[string]any) {
		a := table(m, "authentication")
		a["username"], a["password"] = "bob", bobPass
		table(m, "tls")["pinned_sha256"] = newPin
		n := table(m, "network")
		n["routes"] = []string{tunSrv4 + "/32"}
		n["set_dns"] = false
		n["interface_name"] = "mirage-bob"
		table(m, "log")["level"] = "debug"
	})
	bob := startProc(t, tp.RTR, "mirage-helper-bob", procOpts{}, bins(t).Helper, "connect", bobConf, "--state-dir", t.TempDir())
	if _, err := bob.waitLines(connectedRE, 1, connectTimeout); err != nil {
		t.Fatalf("bob, added before SIGHUP, did not get in: %v\n%s", err, tail(bob.Stderr(), 20))
	}
	bob.stop(5 * time.Second)

	// The first session never stopped.
	if err := pinger.Wait(); err != nil {
		t.Errorf("ping through the first session during the reload: %v\n%s", err, tail(pingOut.String(), 5))
	}
	re := regexp.MustCompile(`(\d+) received`)
	if mm := re.FindStringSubmatch(pingOut.String()); mm == nil {
		t.Errorf("ping output: %s", pingOut.String())
	} else if n, _ := strconv.Atoi(mm[1]); n < 58 {
		t.Errorf("the existing session lost pings during the reload: %s", tail(pingOut.String(), 3))
	}
	if strings.Count(c.p.Stdout(), "connected ") != 1 {
		t.Errorf("the first client reconnected:\n%s", c.p.Stdout())
	}

	// No secrets in any log.
	key, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	logs := map[string]string{"server": s.p.Stderr() + s.p.Stdout(), "client": c.p.Stderr(), "bob": bob.Stderr() + bob.Stdout()}
	secrets := map[string]string{"the first user's password": alicePass, "bob's password": bobPass}
	for i, l := range strings.Split(string(key), "\n") {
		if len(l) >= 40 && !strings.HasPrefix(l, "-----") {
			secrets["a line of the private key "+strconv.Itoa(i)] = l
		}
	}
	for who, text := range logs {
		for what, secret := range secrets {
			if strings.Contains(text, secret) {
				t.Errorf("%s log contains %s", who, what)
			}
		}
	}
}

// servedPin is the SHA-256 pin of the certificate the server presents to a
// new TLS connection from cli.
func servedPin(t *testing.T, tp *topology) string {
	t.Helper()
	out, err := nsOutput(tp.CLI, "sh", "-c", "openssl s_client -connect "+serverEndpoint()+" </dev/null 2>/dev/null | openssl x509 -outform der | sha256sum")
	if err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	return strings.Fields(out)[0]
}
