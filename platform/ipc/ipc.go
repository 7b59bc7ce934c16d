// Package ipc is the transport of the helper's local API: a unix socket on
// Linux, macOS and FreeBSD, a named pipe on Windows. On unix the listener
// checks every caller's credentials against a Policy before handing the
// connection to the HTTP server, so file permissions are not the only gate.
package ipc

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/user"
	"slices"
	"strconv"
)

// DefaultGroup is the group whose members may use the helper.
const DefaultGroup = "mirage"

// Policy says who may talk to the helper. Root (uid 0) is always allowed.
type Policy struct {
	// AllowUIDs are users allowed by uid.
	AllowUIDs []int
	// AllowGroup allows every member of this group (primary or
	// supplementary, as listed in the user database), e.g. "mirage".
	AllowGroup string
	// Logger receives a line for every refused connection; nil discards.
	Logger *slog.Logger
}

// ErrUnsupported is returned on systems without a local API transport.
var ErrUnsupported = errors.New("ipc: local API transport not supported on this OS")

// allowed reports whether uid (whose kernel-reported primary group is gid,
// or -1 when unknown) may use the API, and why not.
func (p Policy) allowed(uid, gid int) (bool, string) {
	if uid == 0 || slices.Contains(p.AllowUIDs, uid) {
		return true, ""
	}
	if p.AllowGroup == "" {
		return false, "not root and not an allowed uid"
	}
	g, err := user.LookupGroup(p.AllowGroup)
	if err != nil {
		return false, fmt.Sprintf("group %q: %v", p.AllowGroup, err)
	}
	if gid >= 0 && strconv.Itoa(gid) == g.Gid {
		return true, ""
	}
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return false, fmt.Sprintf("look up uid %d: %v", uid, err)
	}
	if u.Gid == g.Gid {
		return true, ""
	}
	ids, err := u.GroupIds()
	if err != nil {
		return false, fmt.Sprintf("groups of %s: %v", u.Username, err)
	}
	if slices.Contains(ids, g.Gid) {
		return true, ""
	}
	return false, fmt.Sprintf("user %s is not in group %q", u.Username, p.AllowGroup)
}

func (p Policy) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// peerConn is an accepted, authorised connection with its caller's uid.
type peerConn struct {
	net.Conn
	uid int
}

// PeerUID returns the uid of the process at the other end of a connection
// accepted by Listen (or of any unix socket connection on systems with peer
// credentials). It is false on Windows and when the uid is unknown.
func PeerUID(c net.Conn) (int, bool) {
	if pc, ok := c.(*peerConn); ok {
		return pc.uid, true
	}
	uid, _, err := peerCred(c)
	if err != nil {
		return 0, false
	}
	return uid, true
}
