//go:build !linux && !darwin && !freebsd && !windows

package ipc

import "net"

// DefaultPath is empty: there is no local API transport on this OS.
const DefaultPath = ""

// Listen returns ErrUnsupported.
func Listen(path string, policy Policy) (net.Listener, error) { return nil, ErrUnsupported }

func peerCred(c net.Conn) (uid, gid int, err error) { return 0, 0, ErrUnsupported }
