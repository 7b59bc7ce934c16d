//go:build !linux

package quictun

import "net"

// WrapUDP returns pc: receive coalescing (UDP GRO) is Linux-only.
func WrapUDP(pc net.PacketConn) net.PacketConn { return pc }
