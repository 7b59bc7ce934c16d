//go:build linux

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// packagesDir is where `make package` writes the packages.
const packagesDir = "../../dist/packages"

// onePackage is the single file in packagesDir matching pattern.
func onePackage(t *testing.T, pattern string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(packagesDir, pattern))
	if len(m) != 1 {
		skipOrFail(t, "want one %s in %s (run `make package` first), found %d", pattern, packagesDir, len(m))
	}
	return m[0]
}

// The packages `make package` built: every artifact is there; the
// mirage-server .deb holds the binary, a hardened systemd unit that
// `systemd-analyze verify` accepts, and /etc/mirage 0700; the mirage .deb
// holds the tray app, the helper, the helper's unit (the same text
// `mirage-helper service install` writes) and the mirage:// handler; and
// the server, started exactly as its unit says (paths moved into a
// temporary root), writes its default configuration and a client connects.
func TestPackages(t *testing.T) {
	for _, p := range []string{"mirage-server_*_amd64.deb", "mirage-server_*_arm64.deb", "mirage-server-*.x86_64.rpm",
		"mirage-server-*.aarch64.rpm", "mirage_*_amd64.deb", "mirage-[0-9]*.x86_64.rpm"} {
		st, err := os.Stat(onePackage(t, p))
		if err != nil || st.Size() < 1<<20 {
			t.Errorf("%s: %v (%d bytes)", p, err, st.Size())
		}
	}
	contents := func(deb string) string {
		out, err := exec.Command("dpkg-deb", "-c", deb).CombinedOutput()
		if err != nil {
			t.Fatalf("dpkg-deb -c %s: %v\n%s", deb, err, out)
		}
		return string(out)
	}
	server := onePackage(t, "mirage-server_*_amd64.deb")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^drwx------ root/root .* \./etc/mirage/$`),
		regexp.MustCompile(`(?m)^-rwxr-xr-x root/root .* \./usr/bin/mirage-server$`),
		regexp.MustCompile(`(?m)^-rw-r--r-- root/root .* \./lib/systemd/system/mirage-server\.service$`),
	} {
		if !want.MatchString(contents(server)) {
			t.Errorf("%s lacks %s:\n%s", filepath.Base(server), want, contents(server))
		}
	}
	client := onePackage(t, "mirage_*_amd64.deb")
	for _, want := range []string{"./usr/bin/mirage\n", "./usr/bin/mirage-helper\n", "./lib/systemd/system/mirage-helper.service\n",
		"./usr/share/applications/mirage.desktop\n", "./usr/share/icons/hicolor/64x64/apps/mirage.png\n"} {
		if !strings.Contains(contents(client), want) {
			t.Errorf("%s lacks %s", filepath.Base(client), strings.TrimSpace(want))
		}
	}

	root := t.TempDir()
	for _, deb := range []string{server, client} {
		if out, err := exec.Command("dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
		}
	}
	desktop, _ := os.ReadFile(filepath.Join(root, "usr/share/applications/mirage.desktop"))
	if !strings.Contains(string(desktop), "MimeType=x-scheme-handler/mirage;") || !strings.Contains(string(desktop), "Exec=/usr/bin/mirage %u") {
		t.Errorf("mirage.desktop does not handle mirage:// links:\n%s", desktop)
	}
	unitPath := filepath.Join(root, "lib/systemd/system/mirage-server.service")
	unit, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE", "NoNewPrivileges=yes",
		"ProtectSystem=strict", "ReadWritePaths=/etc/mirage", "DeviceAllow=/dev/net/tun rw"} {
		if !strings.Contains(string(unit), want+"\n") {
			t.Errorf("mirage-server.service lacks %q", want)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		skipOrFail(t, "needs systemd-analyze (Debian package systemd): %v", err)
	}
	for _, u := range []string{"mirage-server.service", "mirage-helper.service"} {
		text, _ := os.ReadFile(filepath.Join(root, "lib/systemd/system", u))
		moved := strings.ReplaceAll(string(text), "/usr/bin/", root+"/usr/bin/")
		check := filepath.Join(t.TempDir(), u)
		os.WriteFile(check, []byte(moved), 0o644)
		if out, err := exec.Command("systemd-analyze", "verify", "--recursive-errors=no", check).CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze verify %s: %v\n%s", u, err, out)
		}
	}

	// The server as its unit starts it, on an empty data directory.
	m := regexp.MustCompile(`(?m)^ExecStart=(.*)$`).FindStringSubmatch(string(unit))
	if m == nil {
		t.Fatal("no ExecStart in mirage-server.service")
	}
	dataDir, stateDir := filepath.Join(t.TempDir(), "etc-mirage"), filepath.Join(t.TempDir(), "run")
	argv := strings.Fields(strings.NewReplacer("/usr/bin/", root+"/usr/bin/", "/etc/mirage", dataDir,
		"/run/mirage-server", stateDir).Replace(m[1]))
	out, _, code := runBin(t, "", "", argv[0], "--version")
	if code != 0 || !strings.HasPrefix(out, "mirage-server 0.") || !strings.Contains(out, "commit ") {
		t.Errorf("packaged mirage-server --version: %d %q", code, out)
	}
	tp := newTopology(t)
	s := &mserver{tp: tp, dataDir: dataDir, stateDir: stateDir}
	s.p = startProc(t, tp.SRV, "packaged-mirage-server", procOpts{}, argv...)
	s.waitListening(t)
	if st, err := os.Stat(dataDir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("generated data dir: %v %v", err, st.Mode())
	}
	// The default tunnel network is private (10.66.0.0/24); tests use only
	// documentation ranges, so the first start carries no traffic and the
	// server is started again, as the unit would, on 198.51.100.0/24.
	s.stop(t)
	cfg := readTOML(t, s.configPath())
	cfg["tunnel_network"] = tunNet4
	writeTOML(t, s.configPath(), cfg)
	s.p = startProc(t, tp.SRV, "packaged-mirage-server-2", procOpts{}, argv...)
	s.waitListening(t)
	conf := derivedClient(t, s, func(m map[string]any) {
		m["connection_string"] = serverEndpoint() // the default profile names 0.0.0.0
	})
	c := startClient(t, tp, conf)
	c.waitConnected(t, 1, connectTimeout)
	waitPing(t, tp.CLI, tunSrv4, 10*time.Second)
}
