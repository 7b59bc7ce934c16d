//go:build !linux

package reality

import "net"

// wasReset: other kernels report a received reset to the reader as
// ECONNRESET, so an EOF is a FIN.
func wasReset(net.Conn) bool { return false }
