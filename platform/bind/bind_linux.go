package bind

import "golang.org/x/sys/unix"

// bindSocket uses SO_BINDTODEVICE (the helper runs with CAP_NET_RAW).
func bindSocket(fd uintptr, network string, ifc Interface) error {
	return unix.BindToDevice(int(fd), ifc.Name)
}
