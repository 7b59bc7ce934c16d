package ipc

import (
	"errors"
	"fmt"
	"net"

	"github.com/Microsoft/go-winio"
)

// DefaultPath is the helper's pipe. Only SYSTEM and Administrators can
// create pipes under ProtectedPrefix\Administrators, so an unprivileged
// process cannot squat the name before the helper starts.
const DefaultPath = `\\.\pipe\ProtectedPrefix\Administrators\Mirage\helper`

// pipeSDDL gives SYSTEM and Administrators full access and interactive
// users read/write; everyone else (network logons, services) is denied.
const pipeSDDL = "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;IU)"

// Listen listens on the named pipe path. Access is enforced by the pipe's
// security descriptor; policy is not consulted on Windows.
func Listen(path string, policy Policy) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("ipc: empty pipe path")
	}
	ln, err := winio.ListenPipe(path, &winio.PipeConfig{SecurityDescriptor: pipeSDDL})
	if err != nil {
		return nil, fmt.Errorf("ipc: listen on %s: %w", path, err)
	}
	return ln, nil
}

// peerCred is not available for pipes; callers are authorised by the SDDL.
func peerCred(c net.Conn) (uid, gid int, err error) {
	return 0, 0, errors.New("ipc: no uid for a named pipe caller")
}
