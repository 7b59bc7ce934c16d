package bind

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/windows"
)

// Socket options from ws2ipdef.h.
const (
	ipUnicastIf   = 31 // IP_UNICAST_IF, level IPPROTO_IP
	ipv6UnicastIf = 31 // IPV6_UNICAST_IF, level IPPROTO_IPV6
)

// bindSocket pins the socket's unicast traffic to ifc with IP_UNICAST_IF
// (the index in network byte order) or IPV6_UNICAST_IF (host byte order).
// For "tcp"/"udp" the socket's family is not known from the network name
// (Go opens an IPv6 socket for an IPv6 address, an IPv4 one otherwise), so
// both options are tried; the one that does not apply to the socket's
// family fails and is ignored, and only if both fail is it an error.
func bindSocket(fd uintptr, network string, ifc Interface) error {
	h := windows.Handle(fd)
	set4 := func() error {
		var idx [4]byte
		binary.BigEndian.PutUint32(idx[:], uint32(ifc.Index))
		return windows.SetsockoptInt(h, windows.IPPROTO_IP, ipUnicastIf, int(binary.NativeEndian.Uint32(idx[:])))
	}
	set6 := func() error {
		return windows.SetsockoptInt(h, windows.IPPROTO_IPV6, ipv6UnicastIf, ifc.Index)
	}
	switch network {
	case "tcp4", "udp4":
		if err := set4(); err != nil {
			return fmt.Errorf("IP_UNICAST_IF %d: %w", ifc.Index, err)
		}
		return nil
	case "tcp6", "udp6":
		if err := set6(); err != nil {
			return fmt.Errorf("IPV6_UNICAST_IF %d: %w", ifc.Index, err)
		}
		return nil
	}
	err4, err6 := set4(), set6()
	if err4 != nil && err6 != nil {
		return fmt.Errorf("IP_UNICAST_IF/IPV6_UNICAST_IF %d: %w", ifc.Index, errors.Join(err4, err6))
	}
	return nil
}
