//go:build !windows && !darwin

package apiclient

// DefaultSocket is the helper's unix socket.
func DefaultSocket() string { return "/run/mirage/helper.sock" }
