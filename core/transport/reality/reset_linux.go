package reality

import (
	"net"

	"golang.org/x/sys/unix"
)

// wasReset reports whether a TCP connection whose read just ended with EOF
// was in fact reset by its peer. Linux may report a received RST as EOF to
// a reader (it checks "done" before the socket error), but the state tells
// them apart: a FIN leaves CLOSE_WAIT, a reset leaves CLOSE.
func wasReset(c net.Conn) bool {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	reset := false
	_ = rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		reset = err == nil && info.State == tcpClose
	})
	return reset
}

// tcpClose is TCP_CLOSE in the kernel's tcp_states.h.
const tcpClose = 7
