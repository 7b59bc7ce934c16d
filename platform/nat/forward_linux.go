package nat

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/mirage-vpn/mirage/core/config"
)

// forwardingJournal is the file in the state directory that holds the
// forwarding sysctls' values from before Setup changed them. It is written
// before the first change and removed after Close restored them, so the
// CleanupLeftovers of the next run restores them after a kill -9 (without
// it, a restart read "1" as the original value and never turned forwarding
// off again).
const forwardingJournal = "nat-forwarding.json"

// enableForwarding turns on the sysctls in paths that are off, journaling
// their old values first.
func (r *Rules) enableForwarding(paths []string) error {
	var change []sysctlWas
	for _, p := range paths {
		old, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("nat: read %s: %w", p, err)
		}
		if v := strings.TrimSpace(string(old)); v != "1" {
			change = append(change, sysctlWas{Path: p, Value: v})
		}
		// Already on (a container's --sysctl, where /proc/sys is
		// read-only): nothing to write or to restore.
	}
	if len(change) == 0 {
		return nil
	}
	if err := saveJournal(r.cfg.StateDir, change); err != nil {
		return err
	}
	for _, s := range change {
		if err := os.WriteFile(s.Path, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("nat: enable forwarding (%s): %w", s.Path, err)
		}
		r.sysctl = append(r.sysctl, s)
	}
	return nil
}

// restoreSysctls writes back the values in was (last first), then removes
// the journal.
func restoreSysctls(was []sysctlWas, stateDir string) error {
	var errs []error
	for i := len(was) - 1; i >= 0; i-- {
		s := was[i]
		if err := os.WriteFile(s.Path, []byte(s.Value), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore %s: %w", s.Path, err))
		}
	}
	if len(errs) == 0 && stateDir != "" {
		if err := os.Remove(filepath.Join(stateDir, forwardingJournal)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove forwarding journal: %w", err))
		}
	}
	return errors.Join(errs...)
}

// restoreJournaled restores the sysctls a crashed run journaled in
// stateDir, if any.
func restoreJournaled(log *slog.Logger, stateDir string) error {
	if stateDir == "" {
		return nil
	}
	path := filepath.Join(stateDir, forwardingJournal)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("nat: read forwarding journal: %w", err)
	}
	var was []sysctlWas
	if err := json.Unmarshal(b, &was); err != nil {
		return fmt.Errorf("nat: forwarding journal %s: %w", path, err)
	}
	for _, s := range was {
		if !strings.HasPrefix(s.Path, "/proc/sys/net/") || s.Value == "" || len(s.Value) > 16 {
			return fmt.Errorf("nat: forwarding journal %s: bad entry %q=%q", path, s.Path, s.Value)
		}
	}
	log.Info("restoring forwarding settings of a previous run", "journal", path, "sysctls", len(was))
	if err := restoreSysctls(was, stateDir); err != nil {
		return fmt.Errorf("nat: %w", err)
	}
	return nil
}

// saveJournal records was in stateDir before anything changes.
func saveJournal(stateDir string, was []sysctlWas) error {
	if stateDir == "" {
		return nil
	}
	b, err := json.Marshal(was)
	if err != nil {
		return fmt.Errorf("nat: encode forwarding journal: %w", err)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("nat: create state dir: %w", err)
	}
	if err := config.WriteFileAtomic(filepath.Join(stateDir, forwardingJournal), b, 0o600); err != nil {
		return fmt.Errorf("nat: write forwarding journal: %w", err)
	}
	return nil
}
