package config

import (
	"errors"
	"fmt"
)

// ErrUnsafePermissions means a file holding secrets or deciding who may
// connect can be changed by other local users.
var ErrUnsafePermissions = errors.New("unsafe file permissions")

// FilePermissions is what CheckFilePermissions found.
type FilePermissions struct {
	// Writable: group or others may write the file, or replace it (its
	// directory is writable by them without the sticky bit).
	Writable bool
	// Readable: others may read it.
	Readable bool
	// Detail says which bits, for messages ("mode 0666").
	Detail string
}

// CheckPermissions reports an error wrapping ErrUnsafePermissions when what
// names a file other local users may change, and whether others may read
// it (the caller warns). what names the file's role in messages ("users
// file", "REALITY private key"). On Windows, where files inherit their
// directory's ACL, nothing is checked.
func CheckPermissions(path, what string) (readable bool, err error) {
	p, err := filePermissions(path)
	if err != nil {
		return false, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if p.Writable {
		return p.Readable, fmt.Errorf("%s %s is writable by other users (%s): %w; run chmod go-w on it (or chown it to the service user), or start with --insecure-permissions",
			what, path, p.Detail, ErrUnsafePermissions)
	}
	return p.Readable, nil
}
