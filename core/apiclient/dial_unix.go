//go:build !windows

package apiclient

import (
	"context"
	"net"
)

// Dial returns a dialer for the helper's unix socket at path.
func Dial(path string) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
}
