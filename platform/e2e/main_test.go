//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// roleEnv selects a helper role when the test binary is re-executed inside a
// network namespace (see roles_test.go).
const roleEnv = "MIRAGE_E2E_ROLE"

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(role, os.Args[1:]))
	}
	if os.Geteuid() == 0 {
		sweepStale()
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// staleNS matches the namespaces of this harness; group 1 is the pid of the
// test process that made them.
var staleNS = regexp.MustCompile(`^m2e(\d+)-\d+-(cli|rtr|srv|host|lone)$`)

// sweepStale removes namespaces left by earlier test processes that died
// before their cleanups ran (e.g. killed by a go test timeout).
func sweepStale() {
	out, err := output("ip", "netns", "list")
	if err != nil {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		m := staleNS.FindStringSubmatch(fields[0])
		if m == nil {
			continue
		}
		if _, err := os.Stat("/proc/" + m[1]); err == nil {
			continue // its test process still runs
		}
		_ = run("ip", "netns", "del", fields[0])
		_ = os.RemoveAll(filepath.Join("/etc/netns", fields[0]))
	}
}

// inCI reports whether missing prerequisites must fail instead of skip.
func inCI() bool { return os.Getenv("CI") == "true" }

// skipOrFail skips the test, or fails it under CI=true.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if inCI() {
		t.Fatalf("%s (CI=true: missing prerequisites are a failure)", msg)
	}
	t.Skip(msg)
}

// requirePrivileged skips (or fails under CI) unless the test can build
// namespaces, TUN devices and firewall rules.
func requirePrivileged(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "e2e test needs root (network namespaces, TUN, nftables); run as root, e.g. sudo go test ./platform/e2e/")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		skipOrFail(t, "e2e test needs /dev/net/tun: %v", err)
	}
	for _, tool := range []string{"ip", "nft", "ping", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipOrFail(t, "e2e test needs %s in PATH (Debian packages: iproute2 nftables iputils-ping procps): %v", tool, err)
		}
	}
}

// binaries holds the paths of the binaries under test.
type binaries struct {
	Server string // mirage-server
	Helper string // mirage-helper
}

var (
	buildOnce sync.Once
	buildDir  string
	builtBins binaries
	buildErr  error
)

// bins returns the binaries under test, building them once per test run
// unless MIRAGE_BIN_DIR points at prebuilt ones.
func bins(t *testing.T) binaries {
	t.Helper()
	buildOnce.Do(func() { builtBins, buildErr = buildBinaries() })
	if buildErr != nil {
		t.Fatalf("binaries under test: %v", buildErr)
	}
	return builtBins
}

func buildBinaries() (binaries, error) {
	if dir := os.Getenv("MIRAGE_BIN_DIR"); dir != "" {
		b := binaries{Server: filepath.Join(dir, "mirage-server"), Helper: filepath.Join(dir, "mirage-helper")}
		for _, p := range []string{b.Server, b.Helper} {
			if _, err := os.Stat(p); err != nil {
				return b, fmt.Errorf("MIRAGE_BIN_DIR: %w", err)
			}
		}
		return b, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return binaries{}, err
	}
	buildDir, err = os.MkdirTemp("", "mirage-e2e-bin-")
	if err != nil {
		return binaries{}, fmt.Errorf("build dir: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", buildDir+string(os.PathSeparator),
		"./server/cmd/mirage-server", "./platform/cmd/mirage-helper")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return binaries{}, fmt.Errorf("go build ./server/cmd/mirage-server ./platform/cmd/mirage-helper: %w\n%s", err, out)
	}
	return binaries{
		Server: filepath.Join(buildDir, "mirage-server"),
		Helper: filepath.Join(buildDir, "mirage-helper"),
	}, nil
}

// moduleRoot finds the directory holding go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("go env GOMOD: not inside the module")
	}
	return filepath.Dir(gomod), nil
}

// selfExe is the test binary, re-executed for helper roles.
func selfExe(t *testing.T) string {
	t.Helper()
	p, err := os.Executable()
	if err != nil {
		t.Fatalf("test executable: %v", err)
	}
	return p
}
