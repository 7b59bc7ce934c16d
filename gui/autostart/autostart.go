// Package autostart turns "start Mirage at login" on and off for the
// current user. Linux uses an XDG autostart .desktop file; other systems
// report ErrUnsupported for now.
package autostart

import "errors"

// ErrUnsupported means this OS has no start-at-login support yet.
var ErrUnsupported = errors.New("start at login is not supported on this system yet")

// Entry describes the program to start at login.
type Entry struct {
	Name string // shown by the desktop's session settings
	Exec string // absolute path of the executable
	Args []string
}
