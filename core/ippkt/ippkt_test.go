package ippkt

import (
	"net/netip"
	"testing"

	"github.com/mirage-vpn/mirage/core/tundev/tundevtest"
)

func TestAddrs(t *testing.T) {
	for _, c := range [][2]string{{"192.0.2.1", "203.0.113.5"}, {"fd00::1", "fd00:6d::9"}} {
		s, d := netip.MustParseAddr(c[0]), netip.MustParseAddr(c[1])
		gs, gd, ok := Addrs(tundevtest.UDP(s, d, []byte("x")))
		if !ok || gs != s || gd != d {
			t.Fatalf("%v: got %v %v %v", c, gs, gd, ok)
		}
		if dst, ok := Dst(tundevtest.UDP(s, d, nil)); !ok || dst != d {
			t.Fatalf("Dst: %v", dst)
		}
	}
	for _, bad := range [][]byte{nil, {0x45, 0}, make([]byte, 39), {0x50, 1, 2, 3}} {
		if _, _, ok := Addrs(bad); ok {
			t.Fatalf("accepted %x", bad)
		}
	}
}
