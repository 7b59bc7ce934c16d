package main

import (
	"archive/tar"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The image tarball, read back: its config runs mirage-server as the
// unprivileged user with the default-generating command, its filesystem
// has the binary with CAP_NET_ADMIN + CAP_NET_BIND_SERVICE file
// capabilities and the user's writable directories, and the binary from
// the unpacked root filesystem prints its version.
func TestImage(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "mirage-server")
	gobuild := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version=9.9.9 -X main.commit=abcdef", "-o", bin, "./server/cmd/mirage-server")
	gobuild.Dir = "../.."
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gobuild.CombinedOutput(); err != nil {
		t.Fatalf("build mirage-server: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "image.tar")
	if err := build(bin, "amd64", "mirage-server:test", out); err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" || strings.Join(c.Entrypoint, " ") != "/usr/bin/mirage-server" ||
		!strings.HasPrefix(strings.Join(c.Cmd, " "), "run --data-dir /etc/mirage") || cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Fatalf("image config %+v", cf)
	}
	if _, ok := c.Volumes["/etc/mirage"]; !ok {
		t.Errorf("no /etc/mirage volume: %v", c.Volumes)
	}

	root := filepath.Join(dir, "rootfs")
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	seen := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seen[strings.TrimSuffix(h.Name, "/")] = h
		p := filepath.Join(root, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			os.MkdirAll(filepath.Dir(p), 0o755)
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, os.FileMode(h.Mode))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(f, tr)
			f.Close()
		}
	}
	for name, want := range map[string]struct {
		mode int64
		uid  int
	}{"etc/mirage": {0o700, 65532}, "run/mirage-server": {0o700, 65532}, "usr/bin/mirage-server": {0o755, 0}} {
		h := seen[name]
		if h == nil || h.Mode&0o7777 != want.mode || h.Uid != want.uid {
			t.Errorf("%s in the image: %+v, want mode %o uid %d", name, h, want.mode, want.uid)
		}
	}
	caps := []byte(seen["usr/bin/mirage-server"].PAXRecords["SCHILY.xattr.security.capability"])
	if len(caps) != 20 || binary.LittleEndian.Uint32(caps) != 0x02000001 || binary.LittleEndian.Uint32(caps[4:]) != 1<<10|1<<12 {
		t.Errorf("file capabilities of mirage-server: %x", caps)
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if !strings.Contains(string(passwd), "mirage:x:65532:65532:") {
		t.Errorf("/etc/passwd: %s", passwd)
	}
	v, err := exec.Command(filepath.Join(root, "usr/bin/mirage-server"), "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(v), "mirage-server 9.9.9 (commit abcdef") {
		t.Fatalf("mirage-server --version from the image: %v %s", err, v)
	}
}
