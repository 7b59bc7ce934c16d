//go:build !linux

package autostart

// Enabled reports false: not supported on this OS yet.
func Enabled() (bool, error) { return false, nil }

// Enable returns ErrUnsupported.
func Enable(Entry) error { return ErrUnsupported }

// Disable returns ErrUnsupported.
func Disable() error { return ErrUnsupported }
