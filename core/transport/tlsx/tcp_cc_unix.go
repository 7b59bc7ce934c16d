//go:build linux || freebsd

package tlsx

import (
	"errors"
	"net"

	"golang.org/x/sys/unix"
)

func setCongestion(tc *net.TCPConn, name string) error {
	rc, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, name)
	}); err != nil {
		return err
	}
	return serr
}

func getCongestion(tc *net.TCPConn) string {
	rc, err := tc.SyscallConn()
	if err != nil {
		return ""
	}
	var name string
	_ = rc.Control(func(fd uintptr) {
		name, _ = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION)
	})
	return name
}

// congestionRefusal says why the kernel refused a TCP_CONGESTION.
func congestionRefusal(err error) string {
	switch {
	case errors.Is(err, unix.ENOENT):
		return "not available in this kernel (load its module, e.g. modprobe tcp_bbr)"
	case errors.Is(err, unix.EPERM):
		return "not allowed for this process (add it to net.ipv4.tcp_allowed_congestion_control or run with CAP_NET_ADMIN)"
	default:
		return err.Error()
	}
}
