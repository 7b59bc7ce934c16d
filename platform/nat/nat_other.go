//go:build !linux && !darwin && !freebsd

package nat

import (
	"errors"
	"fmt"
	"log/slog"
)

// Rules is the installed NAT; never returned on this OS.
type Rules struct{}

// Setup is not available on this OS.
func Setup(log *slog.Logger, cfg Config) (*Rules, error) {
	return nil, fmt.Errorf("nat: not supported on this OS yet: %w", errors.ErrUnsupported)
}

// Close does nothing.
func (r *Rules) Close() error { return nil }

// CleanupLeftovers has nothing to clean on this OS.
func CleanupLeftovers(log *slog.Logger, stateDir string) error { return nil }

// Usage is not available on this OS.
func (r *Rules) Usage() (Usage, error) {
	return Usage{}, fmt.Errorf("nat usage: %w", errors.ErrUnsupported)
}
