//go:build linux

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// validServerTOML is a complete server.toml; %[1]s is its directory.
const validServerTOML = `bind_address = "192.0.2.130"
bind_port = 8443
tunnel_network = "198.51.100.1/24"
tunnel_network_v6 = "fd00:6d:1::1/64"

[tls]
cert_file = "%[1]s/cert.pem"
key_file = "%[1]s/key.pem"
auto_generate = true

[authentication]
type = "file"
users_file = "%[1]s/users"
`

// validClientTOML is a complete client.toml aimed at a loopback port where
// nothing listens, with a split tunnel and no DNS change, so that a broken
// validation cannot send traffic anywhere or take over the routes.
const validClientTOML = `connection_string = "127.0.0.1:9"

[connection]
enabled_protocols = ["tcp-tls"]
connect_timeout_s = 2

[tls]
pinned_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"

[authentication]
username = "mirage"
password = "e2e-password"

[network]
interface_name = "e2ebad0"
routes = ["198.51.100.0/24"]
set_dns = false
`

// configCase is one malformed config: edit turns the valid text into the
// bad one; want is what the one-line error must name.
type configCase struct {
	name string
	edit func(string) string
	want string
}

func replace(old, new string) func(string) string {
	return func(s string) string {
		if !strings.Contains(s, old) {
			panic(fmt.Sprintf("config case: %q not in the valid config", old))
		}
		return strings.Replace(s, old, new, 1)
	}
}

// prependText adds top-level keys (appended ones would land in the last table).
func prependText(extra string) func(string) string {
	return func(s string) string { return extra + s }
}

func appendText(extra string) func(string) string {
	return func(s string) string { return s + extra }
}

// checkConfigError asserts a failed run with a clear, one-line-reason error.
func checkConfigError(t *testing.T, stderr string, status int, timedOut bool, want string) {
	t.Helper()
	switch {
	case timedOut:
		t.Fatalf("still running after the bound: the malformed config was accepted; stderr:\n%s", stderr)
	case status == 0:
		t.Fatalf("exit status 0 for a malformed config; stderr:\n%s", stderr)
	}
	t.Logf("stderr: %s", strings.TrimSpace(stderr))
	if strings.Contains(stderr, "panic:") || strings.Contains(stderr, "goroutine ") {
		t.Fatalf("panicked on a malformed config:\n%s", stderr)
	}
	if !strings.Contains(stderr, want) {
		t.Errorf("error does not name %q:\n%s", want, stderr)
	}
	if !strings.Contains(stderr, "bad.toml") {
		t.Errorf("error does not name the file bad.toml:\n%s", stderr)
	}
}

// (i) Malformed configs: "mirage-server check" and "mirage-helper connect"
// fail with an error naming the file and the key.
func TestE2EMalformedConfig(t *testing.T) {
	b := bins(t)

	t.Run("server", func(t *testing.T) {
		dir := t.TempDir()
		if o, e, code := runBin(t, "", "e2e-password\n", b.Server, "users", "add", "-f", filepath.Join(dir, "users"), "mirage"); code != 0 {
			t.Fatalf("users add: status %d\n%s%s", code, o, e)
		}
		valid := fmt.Sprintf(validServerTOML, dir)
		// check tests the host too (it connects to bind_address to see
		// whether the server runs): as root, in a namespace of its own, so
		// nothing leaves the machine toward 192.0.2.130.
		ns := ""
		if os.Geteuid() == 0 {
			ns = newLoneNS(t)
		}
		cases := []configCase{
			{"port-out-of-range", replace("bind_port = 8443", "bind_port = 70000"), "bind_port"},
			{"port-wrong-type", replace("bind_port = 8443", `bind_port = "https"`), "bind_port"},
			{"unknown-top-level-key", prependText("bind_prot = 443\n"), "bind_prot"},
			{"unknown-key-in-table", appendText("[nat]\nipv4_interfce = \"to-host\"\n"), "ipv4_interfce"},
			{"bad-tunnel-network", replace(`tunnel_network = "198.51.100.1/24"`, `tunnel_network = "not-a-network"`), "tunnel_network"},
			{"bad-tunnel-network-v6", replace(`tunnel_network_v6 = "fd00:6d:1::1/64"`, `tunnel_network_v6 = "198.51.100.1/24"`), "tunnel_network_v6"},
			{"negative-handshake-timeout", appendText("[connection]\nhandshake_timeout_s = -5\n"), "handshake_timeout_s"},
			{"bad-congestion-control", appendText("[connection]\ncongestion_control = \"fast\"\n"), "congestion_control"},
			{"bad-fec", appendText("[connection]\nfec = \"sometimes\"\n"), "connection] fec"},
			{"missing-users-file", replace(dir+"/users", dir+"/no-such-users"), "users_file"},
			{"syntax-error", replace("bind_port = 8443", "bind_port = "), "bind_port"},
		}
		t.Run("valid", func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "server.toml")
			if err := os.WriteFile(path, []byte(valid), 0o600); err != nil {
				t.Fatal(err)
			}
			if o, e, code := runBin(t, ns, "", b.Server, "check", "-c", path, "--no-probe"); code != 0 {
				t.Fatalf("check of a valid server.toml: status %d\n%s%s\nconfig:\n%s", code, o, e, valid)
			}
		})
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "bad.toml")
				if err := os.WriteFile(path, []byte(c.edit(valid)), 0o600); err != nil {
					t.Fatal(err)
				}
				_, e, code, timedOut := runBinTimeout(t, 10*time.Second, ns, "", b.Server, "check", "-c", path, "--no-probe")
				checkConfigError(t, e, code, timedOut, c.want)
			})
		}
	})

	t.Run("client", func(t *testing.T) {
		// As root, run the helper in a namespace of its own, so that even a
		// helper that wrongly accepts a case cannot touch the host's routes.
		ns := ""
		if os.Geteuid() == 0 {
			ns = newLoneNS(t)
		}
		cases := []configCase{
			{"negative-parallel-connections", replace(`connect_timeout_s = 2`, "connect_timeout_s = 2\nparallel_connections = -1"), "parallel_connections"},
			{"parallel-connections-wrong-type", replace(`connect_timeout_s = 2`, "connect_timeout_s = 2\nparallel_connections = \"four\""), "parallel_connections"},
			{"unknown-top-level-key", replace(`connection_string = `, `conection_string = "127.0.0.1:9"`+"\nconnection_string = "), "conection_string"},
			{"unknown-key-in-table", replace(`set_dns = false`, "set_dns = false\nexclude_routes = []"), "exclude_routes"},
			{"bad-route", replace(`routes = ["198.51.100.0/24"]`, `routes = ["300.1.2.0/24"]`), "routes"},
			{"unknown-protocol", replace(`enabled_protocols = ["tcp-tls"]`, `enabled_protocols = ["carrier-pigeon"]`), "enabled_protocols"},
			{"connection-string-without-port", replace(`"127.0.0.1:9"`, `"127.0.0.1"`), "connection_string"},
			{"bad-mux-mode", replace(`connect_timeout_s = 2`, "connect_timeout_s = 2\nmux_mode = \"random\""), "mux_mode"},
			{"bad-congestion-control", replace(`connect_timeout_s = 2`, "connect_timeout_s = 2\ncongestion_control = \"fast\""), "congestion_control"},
			{"bad-fec-parity", replace(`connect_timeout_s = 2`, "connect_timeout_s = 2\nfec_parity = 3"), "fec_parity"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				dir := t.TempDir()
				path := filepath.Join(dir, "bad.toml")
				if err := os.WriteFile(path, []byte(c.edit(validClientTOML)), 0o600); err != nil {
					t.Fatal(err)
				}
				_, e, code, timedOut := runBinTimeout(t, 10*time.Second, ns, "", b.Helper, "connect", path, "--state-dir", filepath.Join(dir, "state"))
				checkConfigError(t, e, code, timedOut, c.want)
			})
		}
		t.Run("missing-file", func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "bad.toml")
			_, e, code, timedOut := runBinTimeout(t, 10*time.Second, ns, "", b.Helper, "connect", path, "--state-dir", filepath.Join(dir, "state"))
			checkConfigError(t, e, code, timedOut, path)
		})
	})
}

// newLoneNS makes one empty namespace (loopback only) for the test.
func newLoneNS(t *testing.T) string {
	t.Helper()
	ns := fmt.Sprintf("m2e%d-%d-lone", os.Getpid(), topoSeq.Add(1))
	dir := filepath.Join("/etc/netns", ns)
	t.Cleanup(func() {
		_ = run("ip", "netns", "del", ns)
		_ = os.RemoveAll(dir)
	})
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(cliResolvConf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run("ip", "netns", "add", ns); err != nil {
		t.Fatal(err)
	}
	if err := run("ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	return ns
}
