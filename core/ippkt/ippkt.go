// Package ippkt reads the few IP header fields the data path needs (version,
// source, destination) without allocating.
package ippkt

import "net/netip"

// Addrs returns the source and destination of an IPv4 or IPv6 packet.
// ok is false for anything too short or of another version.
func Addrs(p []byte) (src, dst netip.Addr, ok bool) {
	if len(p) < 1 {
		return
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return
		}
		return netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])), true
	case 6:
		if len(p) < 40 {
			return
		}
		return netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40])), true
	}
	return
}

// Dst returns the destination address of a packet.
func Dst(p []byte) (netip.Addr, bool) {
	_, d, ok := Addrs(p)
	return d, ok
}
