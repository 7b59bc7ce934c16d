//go:build !linux && !windows && !darwin && !freebsd

package netmon

import (
	"errors"
	"fmt"
)

// newSource: no event source on this OS; the monitor polls.
func newSource() (source, error) {
	return nil, fmt.Errorf("network change events: %w", errors.ErrUnsupported)
}
