//go:build !linux

package tun

// SuperPackets says this OS's TUN devices cannot take super-packets whole:
// only Linux's vnet_hdr device can.
const SuperPackets = false
