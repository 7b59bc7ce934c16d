//go:build linux || darwin || freebsd

package ipc

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"
)

// Listen listens on the unix socket path. A stale socket file left by a
// crashed helper is removed first; a live one is an error. The socket is
// mode 0660 group-owned by policy.AllowGroup when that group exists, 0600
// (root only) otherwise, and 0666 when policy.AllowUIDs is not empty
// (those users need to reach it; peer credentials are then the only gate).
// Accept drops, and logs, connections from callers the policy refuses.
func Listen(path string, policy Policy) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("ipc: empty socket path")
	}
	// Only the socket's own directory is created (/run/mirage); a mistyped
	// path whose parent is missing is an error, not a tree made as root.
	if err := os.Mkdir(filepath.Dir(path), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("ipc: socket directory: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("ipc: listen on %s: %w", path, err)
	}
	ul := ln.(*net.UnixListener)
	// Close removes the socket file: no stale file after a clean stop.
	ul.SetUnlinkOnClose(true)
	if err := setMode(path, policy); err != nil {
		ln.Close()
		return nil, err
	}
	return &listener{Listener: ln, policy: policy}, nil
}

// removeStale deletes a socket file nobody listens on. Anything else at
// path (a regular file, a live helper) is an error.
func removeStale(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ipc: %w", err)
	}
	if st.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("ipc: %s exists and is not a socket; refusing to replace it", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("ipc: another process is listening on %s", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("ipc: remove stale socket: %w", err)
	}
	return nil
}

// setMode applies the socket's owner group and permissions.
func setMode(path string, policy Policy) error {
	mode := os.FileMode(0o600)
	if policy.AllowGroup != "" {
		if g, err := user.LookupGroup(policy.AllowGroup); err == nil {
			gid, err := strconv.Atoi(g.Gid)
			if err != nil {
				return fmt.Errorf("ipc: group %q has gid %q: %w", policy.AllowGroup, g.Gid, err)
			}
			if err := os.Chown(path, -1, gid); err != nil {
				return fmt.Errorf("ipc: chown socket to group %q: %w", policy.AllowGroup, err)
			}
			mode = 0o660
		}
	}
	if len(policy.AllowUIDs) > 0 {
		mode = 0o666
	}
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("ipc: chmod socket: %w", err)
	}
	return nil
}

// listener authorises each accepted connection.
type listener struct {
	net.Listener
	policy Policy
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, gid, err := peerCred(c)
		if err != nil {
			l.policy.logger().Warn("local API: refused a connection: no peer credentials", "err", err)
			c.Close()
			continue
		}
		if ok, why := l.policy.allowed(uid, gid); !ok {
			l.policy.logger().Warn("local API: refused a connection", "uid", uid, "reason", why)
			c.Close()
			continue
		}
		return &peerConn{Conn: c, uid: uid}, nil
	}
}

// rawControl runs f on the socket descriptor of a unix connection.
func rawControl(c net.Conn, f func(fd uintptr)) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("ipc: %T is not a unix socket", c)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return fmt.Errorf("ipc: %w", err)
	}
	return rc.Control(f)
}
