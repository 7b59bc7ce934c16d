package config

import (
	"io"
	"log/slog"
)

// Logger returns a logger writing to w with the [log] level and format.
func (l Log) Logger(w io.Writer) *slog.Logger {
	var lvl slog.Level
	switch l.Level {
	case "debug":
		lvl = slog.LevelDebug
	case "warn":
		lvl = slog.LevelWarn
	case "error":
		lvl = slog.LevelError
	}
	o := &slog.HandlerOptions{Level: lvl}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}
