//go:build darwin || freebsd

package killswitch

import (
	"errors"
	"fmt"
	"log/slog"
)

var errUnsupported = fmt.Errorf("killswitch: not supported on this OS yet: %w", errors.ErrUnsupported)

// Enable is not available on this OS.
func Enable(log *slog.Logger, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	return errUnsupported
}

// Disable is not available on this OS.
func Disable(log *slog.Logger) error { return errUnsupported }

// Active is not available on this OS.
func Active() (bool, error) { return false, errUnsupported }
