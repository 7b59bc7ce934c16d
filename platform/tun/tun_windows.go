package tun

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/mirage-vpn/mirage/core/tundev"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// CreateTUN creates a Wintun adapter with the given MTU. Buffers need
// tundev.Offset headroom. wintun.dll must be next to the executable.
func CreateTUN(name string, mtu int) (tundev.Device, error) {
	if err := checkArgs(name, mtu); err != nil {
		return nil, err
	}
	if err := checkWintunDLL(); err != nil {
		return nil, fmt.Errorf("create tun %q: %w", name, err)
	}
	dev, err := wgtun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create tun %q: %w", name, err)
	}
	return newDevice(dev), nil
}

// checkWintunDLL fails with the expected path when wintun.dll is missing
// from the executable's directory, where the wintun package loads it from.
func checkWintunDLL() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the executable's directory for wintun.dll: %w", err)
	}
	return wintunPresent(filepath.Dir(exe), runtime.GOARCH)
}

// wintunPresent checks dir/wintun.dll.
func wintunPresent(dir, arch string) error {
	path := filepath.Join(dir, "wintun.dll")
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("wintun.dll not found at %s: download the official signed Wintun from https://www.wintun.net/ and copy bin\\%s\\wintun.dll from the zip next to the executable", path, arch)
	}
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	if st.IsDir() {
		return fmt.Errorf("%s is a directory, not the Wintun DLL (get it from https://www.wintun.net/, bin\\%s\\wintun.dll)", path, arch)
	}
	return nil
}
