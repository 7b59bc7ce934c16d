//go:build !linux && !darwin

package tlsx

import "net"

// setNotSentLowat does nothing: Windows and FreeBSD have no TCP_NOTSENT_LOWAT.
func setNotSentLowat(*net.TCPConn, int) {}
