//go:build !linux

package quictun

import "net"

// WrapUDP returns pc: receive coalescing (UDP GRO), and with it receive
// pacing by a Gate, is Linux-only.
func WrapUDP(pc net.PacketConn, _ *Gate) net.PacketConn { return pc }
