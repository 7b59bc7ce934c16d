//go:build !linux

package tlsx

import "log/slog"

// checkBufferLimits does nothing: only Linux's limits are read.
func checkBufferLimits(*slog.Logger) {}
