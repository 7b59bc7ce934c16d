//go:build !linux

package tun

import "github.com/mirage-vpn/mirage/core/tundev"

// CreateMultiQueueTUN is CreateTUN: only Linux TUN devices have queues
// (IFF_MULTI_QUEUE); elsewhere one reader pumps the device.
func CreateMultiQueueTUN(name string, mtu, queues int) (tundev.Device, error) {
	return CreateTUN(name, mtu)
}
