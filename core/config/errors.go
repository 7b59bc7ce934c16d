package config

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError is one problem in a config file. Every error returned by the
// parsers and validators of this package is a *FieldError or an errors.Join of
// them, so a caller (e.g. the GUI profile editor) can map problems to fields
// with FieldErrors.
type FieldError struct {
	File string // file name as given to the parser; "client.toml"/"server.toml" when built in memory
	Key  string // dotted key path, e.g. "connection.parallel_connections"; "" for whole-file problems
	Line int    // 1-based line of the key in the file, 0 if unknown
	Msg  string // what is wrong
}

// Error renders "<file>: <key path>: <problem>", e.g.
// "client.toml: [connection] parallel_connections: must be between 1 and 16 (got 0)".
// When the line is known it follows the file: "client.toml:5: ...".
func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(DisplayKey(e.Key))
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// DisplayKey renders a dotted key path the way a user sees it in the file:
// "connection_string" stays as is, "connection.mtu" becomes "[connection] mtu".
func DisplayKey(key string) string {
	parts := splitKey(key)
	if len(parts) <= 1 {
		return key
	}
	return "[" + strings.Join(parts[:len(parts)-1], ".") + "] " + parts[len(parts)-1]
}

// splitKey splits a dotted key path on dots outside double quotes.
func splitKey(key string) []string {
	var parts []string
	start, quoted := 0, false
	for i := 0; i < len(key); i++ {
		switch key[i] {
		case '"':
			quoted = !quoted
		case '\\':
			if quoted {
				i++
			}
		case '.':
			if !quoted {
				parts = append(parts, key[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, key[start:])
}

// FieldErrors returns every *FieldError inside err (which may be an
// errors.Join tree), in order.
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if fe, ok := e.(*FieldError); ok {
			out = append(out, fe)
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, c := range u.Unwrap() {
				walk(c)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

// errList collects FieldErrors for one file.
type errList struct {
	file string
	errs []error
}

func (l *errList) add(key, format string, args ...any) {
	l.errs = append(l.errs, &FieldError{File: l.file, Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (l *errList) addLine(key string, line int, format string, args ...any) {
	l.errs = append(l.errs, &FieldError{File: l.file, Key: key, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (l *errList) err() error {
	return errors.Join(l.errs...)
}
