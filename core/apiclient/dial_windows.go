package apiclient

import (
	"context"
	"net"

	"github.com/Microsoft/go-winio"
)

// DefaultSocket is the helper's named pipe; only administrators can create
// pipes under ProtectedPrefix\Administrators, so a user process cannot
// impersonate the helper.
func DefaultSocket() string { return `\\.\pipe\ProtectedPrefix\Administrators\Mirage\helper` }

// Dial returns a dialer for the helper's named pipe at path.
func Dial(path string) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		return winio.DialPipeContext(ctx, path)
	}
}
