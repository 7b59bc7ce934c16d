//go:build !linux

package quictun

import "net"

// Conn is what to give quic.Transport: c itself (batched reads and GSO
// through path FEC are Linux-only, see pathfec_linux.go).
func (c *PathFEC) Conn() net.PacketConn { return c }
