//go:build darwin || freebsd

package ipc

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// peerCred returns the uid and primary gid of the peer (LOCAL_PEERCRED).
func peerCred(c net.Conn) (uid, gid int, err error) {
	var cred *unix.Xucred
	var serr error
	if err := rawControl(c, func(fd uintptr) {
		cred, serr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	}); err != nil {
		return 0, 0, err
	}
	if serr != nil {
		return 0, 0, fmt.Errorf("ipc: LOCAL_PEERCRED: %w", serr)
	}
	gid = -1
	if cred.Ngroups > 0 {
		gid = int(cred.Groups[0])
	}
	return int(cred.Uid), gid, nil
}
