// Command image builds the mirage-server container image without a Docker
// engine (go-containerregistry): one layer on an empty base holding the
// static binary, a passwd/group entry for the unprivileged user it runs
// as, and its writable directories. The result is a docker-archive
// tarball (`docker load -i`, `podman load -i`).
//
//	go run . -binary ../../dist/build/linux-amd64/mirage-server -tag mirage-server:1.0 -out ../../dist/mirage-server-image.tar
//
// The server runs as uid 65532 ("mirage"). It needs CAP_NET_ADMIN (TUN,
// routes, nftables NAT) and CAP_NET_BIND_SERVICE (port 443): the binary
// carries them as file capabilities, so `docker run --cap-add NET_ADMIN`
// (which puts NET_ADMIN in the container's bounding set) is all it takes;
// see the README for the whole `docker run` line.
package main

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// uid/gid of the server inside the image (the "nonroot" id distroless
// images use).
const uid = 65532

func main() {
	bin := flag.String("binary", "", "the linux mirage-server binary (static)")
	arch := flag.String("arch", "amd64", "its architecture")
	tag := flag.String("tag", "mirage-server:dev", "image reference")
	out := flag.String("out", "mirage-server-image.tar", "output tarball")
	flag.Parse()
	if err := build(*bin, *arch, *tag, *out); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func build(binPath, arch, tag, out string) error {
	exe, err := os.ReadFile(binPath)
	if err != nil {
		return err
	}
	layerTar, err := rootfs(exe)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()} // reproducible
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", uid, uid),
		Entrypoint: []string{"/usr/bin/mirage-server"},
		// First start writes the default configuration into the volume;
		// NAT goes out of the container's eth0.
		Cmd:          []string{"run", "--data-dir", "/etc/mirage", "--state-dir", "/run/mirage-server", "--nat-interface", "eth0"},
		ExposedPorts: map[string]struct{}{"443/tcp": {}, "443/udp": {}},
		Volumes:      map[string]struct{}{"/etc/mirage": {}},
		WorkingDir:   "/etc/mirage",
		Labels: map[string]string{
			"org.opencontainers.image.title":       "mirage-server",
			"org.opencontainers.image.description": "Mirage VPN server; run with --cap-add NET_ADMIN --device /dev/net/tun",
			"org.opencontainers.image.licenses":    "MIT",
		},
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return err
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(out, ref, img)
}

// rootfs is the image's only layer: the binary with its file
// capabilities, passwd/group, and the directories the server writes.
func rootfs(exe []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mod := time.Unix(0, 0)
	dir := func(name string, mode int64, owner int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, Uid: owner, Gid: owner, ModTime: mod, Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, data []byte, pax map[string]string) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)),
			ModTime: mod, PAXRecords: pax, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	steps := []func() error{
		func() error { return dir("etc/", 0o755, 0) },
		func() error { return dir("etc/mirage/", 0o700, uid) },
		func() error {
			return file("etc/passwd", 0o644, []byte(fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nmirage:x:%d:%d:mirage:/etc/mirage:/sbin/nologin\n", uid, uid)), nil)
		},
		func() error {
			return file("etc/group", 0o644, []byte(fmt.Sprintf("root:x:0:\nmirage:x:%d:\n", uid)), nil)
		},
		func() error { return dir("run/", 0o755, 0) },
		func() error { return dir("run/mirage-server/", 0o700, uid) },
		func() error { return dir("tmp/", 0o1777, 0) },
		func() error { return dir("usr/", 0o755, 0) },
		func() error { return dir("usr/bin/", 0o755, 0) },
		func() error {
			return file("usr/bin/mirage-server", 0o755, exe, map[string]string{"SCHILY.xattr.security.capability": string(fileCaps())})
		},
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Linux capability numbers.
const (
	capNetBindService = 10
	capNetAdmin       = 12
)

// fileCaps is the security.capability xattr value giving the binary
// CAP_NET_ADMIN and CAP_NET_BIND_SERVICE, permitted and effective
// (struct vfs_cap_data, revision 2, little endian), like
// `setcap cap_net_admin,cap_net_bind_service+ep`.
func fileCaps() []byte {
	const revision2, flagEffective = 0x02000000, 0x000001
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], revision2|flagEffective)
	binary.LittleEndian.PutUint32(b[4:], 1<<capNetBindService|1<<capNetAdmin) // permitted, low word
	// inheritable 0; high words 0
	return b
}
