package ipc

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// peerCred returns the uid and primary gid of the peer (SO_PEERCRED).
func peerCred(c net.Conn) (uid, gid int, err error) {
	var cred *unix.Ucred
	var serr error
	if err := rawControl(c, func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, 0, err
	}
	if serr != nil {
		return 0, 0, fmt.Errorf("ipc: SO_PEERCRED: %w", serr)
	}
	return int(cred.Uid), int(cred.Gid), nil
}
