//go:build !windows && !darwin

package bind

// bindSocket does nothing on an OS without a per-interface socket option;
// the bypass routes keep the transport outside the tunnel.
func bindSocket(fd uintptr, network string, ifc Interface) error { return nil }
