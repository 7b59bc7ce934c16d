// Package bind keeps the transport's sockets on the physical network: each
// socket the client dials to the server is pinned to the interface that
// carries the original default route, where the OS offers a socket option
// for it (IP_BOUND_IF on macOS, IP_UNICAST_IF/IPV6_UNICAST_IF on Windows),
// as the WireGuard apps there do. The bypass host routes already keep the
// server outside the tunnel; the binding is a second guard, so a missing or
// raced route can never loop the transport into its own tunnel.
//
// Linux and FreeBSD rely on the routes alone: on Linux the bypass host
// route is exact (and SO_BINDTODEVICE would break a server reached through
// a non-default interface); FreeBSD has no per-interface option (SO_SETFIB
// selects a routing table, and mirage's routes live in the default one).
//
// The interface is looked up at every dial, so a reconnect after a
// network change (Wi-Fi to Ethernet) binds to the new interface.
package bind

import (
	"fmt"
	"net"
	"syscall"

	"github.com/jackpal/gateway"
)

// Interface is a network interface by name and index.
type Interface struct {
	Name  string
	Index int
}

// discover finds the interface of the default route; a seam for tests.
var discover = defaultInterface

// defaultInterface is the interface holding the address the OS uses
// toward the default gateway.
func defaultInterface() (Interface, error) {
	ip, err := gateway.DiscoverInterface()
	if err != nil {
		return Interface{}, fmt.Errorf("find default interface: %w", err)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return Interface{}, fmt.Errorf("list interfaces: %w", err)
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return Interface{Name: ifc.Name, Index: ifc.Index}, nil
			}
		}
	}
	return Interface{}, fmt.Errorf("find default interface: no interface has address %s", ip)
}

// Default returns the interface of the current default route.
func Default() (Interface, error) { return discover() }

// Control returns a net.Dialer Control function that binds every socket
// to the default interface found at dial time. A socket is left unbound
// (the routes still apply) when there is no default route, when the
// default interface is the tunnel itself (tun), or on an OS without an
// option for it; log receives a line saying so (nil: silent).
func Control(tun string, log func(msg string, args ...any)) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		ifc, err := discover()
		if err != nil || ifc.Name == tun || ifc.Index == 0 {
			if log != nil {
				log("transport socket not bound to an interface", "err", err, "interface", ifc.Name)
			}
			return nil
		}
		var serr error
		if err := c.Control(func(fd uintptr) { serr = bindSocket(fd, network, ifc) }); err != nil {
			return fmt.Errorf("bind socket to %s: %w", ifc.Name, err)
		}
		if serr != nil {
			return fmt.Errorf("bind socket to %s: %w", ifc.Name, serr)
		}
		return nil
	}
}
