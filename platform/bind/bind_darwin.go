package bind

import (
	"strings"

	"golang.org/x/sys/unix"
)

// bindSocket pins the socket to ifc with IP_BOUND_IF (IPv4) or
// IPV6_BOUND_IF (IPv6). Any other network (e.g. unix) is left alone.
func bindSocket(fd uintptr, network string, ifc Interface) error {
	switch {
	case strings.HasSuffix(network, "6"):
		return unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_BOUND_IF, ifc.Index)
	case strings.HasSuffix(network, "4"):
		return unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BOUND_IF, ifc.Index)
	case network == "tcp" || network == "udp":
		// A dual-stack socket: the address family is only known from the
		// socket itself.
		sa, err := unix.Getsockname(int(fd))
		if err != nil {
			return err
		}
		if _, ok := sa.(*unix.SockaddrInet6); ok {
			return unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_BOUND_IF, ifc.Index)
		}
		return unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BOUND_IF, ifc.Index)
	}
	return nil
}
