// Package buildinfo formats what --version prints on every binary: the
// release version (set at link time), the commit it was built from and the
// Go toolchain, so a bug report names exactly what ran.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// String is "NAME VERSION (commit HASH[+dirty], GOVERSION)". The commit is
// the one set at link time (make sets main.commit from git), else the VCS
// revision Go stamped into the binary, else "unknown".
func String(name, version, commit string) string {
	if commit != "" {
		return name + " " + version + " (commit " + commit + ", " + runtime.Version() + ")"
	}
	commit, dirty := "unknown", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
				if len(commit) > 12 {
					commit = commit[:12]
				}
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if dirty {
		commit += "+dirty"
	}
	return name + " " + version + " (commit " + commit + ", " + runtime.Version() + ")"
}
