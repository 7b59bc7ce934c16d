package netmon

import (
	"errors"
	"fmt"
)

// newSource: placeholder until the OS event source exists; the monitor polls.
func newSource() (source, error) {
	return nil, fmt.Errorf("network change events: not implemented yet: %w", errors.ErrUnsupported)
}
