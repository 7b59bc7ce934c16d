//go:build darwin || freebsd

package osnet

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/mirage-vpn/mirage/core/netcfg"
)

// New is not available on this OS.
func New(log *slog.Logger, stateDir string) (netcfg.Configurator, error) {
	return nil, fmt.Errorf("os network configuration: not supported on this OS yet: %w", errors.ErrUnsupported)
}

// Cleanup succeeds when there is nothing to clean up; a leftover journal
// cannot be replayed on this OS.
func Cleanup(log *slog.Logger, stateDir string) error {
	_, ok, err := loadJournal(stateDir)
	if err != nil || !ok {
		return err
	}
	return fmt.Errorf("clean up network state: not supported on this OS yet: %w", errors.ErrUnsupported)
}
