//go:build linux

package e2e

import (
	"context"
	"debug/elf"
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

// The packages `make package` built: every artifact is there; installed
// into a fresh Debian tree (installTree) the
// mirage-server .deb holds the binary, a hardened systemd unit that
// `systemd-analyze verify` accepts, and /etc/mirage 0700; the mirage .deb
// holds the tray app, the helper, the helper's unit (the same text
// `mirage-helper service install` writes) and the mirage:// handler; and
// the server, started exactly as its unit says (paths moved into a
// temporary root), writes its default configuration and a client connects.
func TestPackages(t *testing.T) {
	for _, p := range []string{"mirage-server_*_amd64.deb", "mirage-server_*_arm64.deb", "mirage-server-*.x86_64.rpm",
		"mirage-server-*.aarch64.rpm", "mirage_*_amd64.deb", "mirage-[0-9]*.x86_64.rpm", "mirage_*_arm64.deb",
		"mirage-[0-9]*.aarch64.rpm"} {
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

	checkArm64(t, onePackage(t, "mirage-server_*_arm64.deb"), onePackage(t, "mirage_*_arm64.deb"))
	root := installTree(t, server, client)
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

// debianMirror is where debootstrap takes Debian from
// (MIRAGE_DEBIAN_MIRROR overrides it).
func debianMirror() string {
	if m := os.Getenv("MIRAGE_DEBIAN_MIRROR"); m != "" {
		return m
	}
	return "http://deb.debian.org/debian"
}

// installTree makes a fresh Debian 12 tree (debootstrap minbase), installs
// the server .deb with `dpkg -i` and the desktop .deb with apt (which
// pulls its dependencies first), and checks what the maintainer scripts
// did: both packages installed, /etc/mirage 0700, the mirage group, and
// a config in /etc/mirage kept across a reinstall (upgrade) and removal.
func installTree(t *testing.T, server, client string) string {
	t.Helper()
	requirePrivileged(t)
	if _, err := exec.LookPath("debootstrap"); err != nil {
		skipOrFail(t, "needs debootstrap (apt-get install debootstrap): %v", err)
	}
	root := t.TempDir()
	run := func(timeout time.Duration, argv ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, tail(string(out), 30))
		}
		return string(out)
	}
	start := time.Now()
	run(10*time.Minute, "debootstrap", "--variant=minbase", "bookworm", root, debianMirror())
	t.Logf("debootstrap: %v", time.Since(start).Round(time.Second))
	for _, deb := range []string{server, client} {
		b, err := os.ReadFile(deb)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "tmp", filepath.Base(deb)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	in := func(p string) string { return "/tmp/" + filepath.Base(p) }
	chroot := func(timeout time.Duration, argv ...string) string {
		t.Helper()
		return run(timeout, append([]string{"chroot", root}, argv...)...)
	}
	chroot(2*time.Minute, "dpkg", "-i", in(server))
	chroot(5*time.Minute, "apt-get", "install", "-y", "--no-install-recommends", in(client))
	for _, pkg := range []string{"mirage-server", "mirage"} {
		if st := chroot(time.Minute, "dpkg-query", "-W", "-f", "${Status}", pkg); st != "install ok installed" {
			t.Errorf("dpkg status of %s: %q", pkg, st)
		}
	}
	if st, err := os.Stat(filepath.Join(root, "etc/mirage")); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("/etc/mirage after install: %v %v", err, st.Mode())
	}
	if out := chroot(time.Minute, "getent", "group", "mirage"); !strings.HasPrefix(out, "mirage:") {
		t.Errorf("the mirage group was not created: %q", out)
	}
	for _, b := range []string{"/usr/bin/mirage-server", "/usr/bin/mirage-helper"} {
		if out := chroot(time.Minute, b, "--version"); !strings.Contains(out, "commit ") {
			t.Errorf("%s --version in the installed tree: %q", b, out)
		}
	}

	// A config of the admin's survives a reinstall (upgrade) and removal.
	mine := []byte("# the admin's own server.toml\nbind_port = 8443\n")
	cfg := filepath.Join(root, "etc/mirage/server.toml")
	if err := os.WriteFile(cfg, mine, 0o600); err != nil {
		t.Fatal(err)
	}
	chroot(2*time.Minute, "dpkg", "-i", in(server))
	chroot(2*time.Minute, "dpkg", "-r", "mirage-server")
	if got, err := os.ReadFile(cfg); err != nil || string(got) != string(mine) {
		t.Errorf("/etc/mirage/server.toml after reinstall and removal: %q, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(root, "usr/bin/mirage-server")); err == nil {
		t.Errorf("dpkg -r left /usr/bin/mirage-server")
	}
	chroot(2*time.Minute, "dpkg", "-i", in(server))
	os.Remove(cfg)
	return root
}

// checkArm64 unpacks the arm64 .debs: every binary is an aarch64 ELF, and
// under qemu-user each prints its --version (the tray app loads Debian's
// arm64 X11/GL libraries for that, installed by `make gui-arm64`).
func checkArm64(t *testing.T, debs ...string) {
	t.Helper()
	root := t.TempDir()
	for _, deb := range debs {
		if out, err := exec.Command("dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb -x %s: %v\n%s", deb, err, out)
		}
	}
	qemu, qerr := exec.LookPath("qemu-aarch64")
	if qerr != nil {
		skipOrFail(t, "needs qemu-aarch64 (Debian package qemu-user) to run the arm64 binaries: %v", qerr)
	}
	for _, b := range []string{"mirage-server", "mirage-helper", "mirage"} {
		path := filepath.Join(root, "usr/bin", b)
		f, err := elf.Open(path)
		if err != nil {
			t.Errorf("arm64 package: %s: %v", b, err)
			continue
		}
		machine := f.Machine
		f.Close()
		if machine != elf.EM_AARCH64 {
			t.Errorf("arm64 package: %s is built for %v", b, machine)
			continue
		}
		out, _, code := runBin(t, "", "", qemu, path, "--version")
		if code != 0 || !strings.HasPrefix(out, b+" ") || !strings.Contains(out, "commit ") {
			t.Errorf("qemu-aarch64 %s --version: status %d, %q", b, code, out)
		}
	}
}
