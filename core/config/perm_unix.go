//go:build !windows

package config

import (
	"fmt"
	"os"
	"path/filepath"
)

func filePermissions(path string) (FilePermissions, error) {
	st, err := os.Stat(path)
	if err != nil {
		return FilePermissions{}, err
	}
	mode := st.Mode().Perm()
	p := FilePermissions{Readable: mode&0o004 != 0, Detail: fmt.Sprintf("mode %04o", mode)}
	if mode&0o022 != 0 {
		p.Writable = true
		return p, nil
	}
	// A directory others may write (and that is not sticky, as /tmp is)
	// lets them replace the file.
	if dst, err := os.Stat(filepath.Dir(path)); err == nil {
		dm := dst.Mode()
		if dm.Perm()&0o022 != 0 && dm&os.ModeSticky == 0 {
			p.Writable = true
			p.Detail = fmt.Sprintf("its directory %s has mode %04o", filepath.Dir(path), dm.Perm())
		}
	}
	return p, nil
}
