package config

import "os"

// filePermissions checks only that the file exists: Windows files inherit
// the ACL of their directory (ProgramData for the service), which the
// installer sets; mode bits say nothing there.
func filePermissions(path string) (FilePermissions, error) {
	_, err := os.Stat(path)
	return FilePermissions{}, err
}
