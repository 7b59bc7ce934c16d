package config

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// MaxFileSize bounds what the loaders and parsers accept; real configs are a
// few KiB.
const MaxFileSize = 1 << 20

const (
	defaultClientName = "client.toml"
	defaultServerName = "server.toml"
)

// LoadClient reads, parses and validates a client.toml.
func LoadClient(path string) (*Client, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return ParseClient(data, path)
}

// LoadServer reads, parses and validates a server.toml.
func LoadServer(path string) (*Server, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return ParseServer(data, path)
}

// ParseClient parses and validates client.toml content. path is only used in
// error messages and stored in Client.Path. Absent keys get their defaults;
// every problem (syntax, unknown key, wrong type, invalid value) is reported,
// joined into one error.
func ParseClient(data []byte, path string) (*Client, error) {
	c := DefaultClient()
	c.Path = path
	unknown, err := decode(data, c.fileName(), c)
	if err != nil {
		return nil, err
	}
	c.normalize()
	if err := joinAll(unknown, c.Validate()); err != nil {
		return nil, err
	}
	return c, nil
}

// ParseServer parses and validates server.toml content; see ParseClient.
func ParseServer(data []byte, path string) (*Server, error) {
	s := DefaultServer()
	s.Path = path
	unknown, err := decode(data, s.fileName(), s)
	if err != nil {
		return nil, err
	}
	s.normalize()
	if err := joinAll(unknown, s.Validate()); err != nil {
		return nil, err
	}
	return s, nil
}

// joinAll puts the unknown-key errors and the validation errors into one flat
// errors.Join.
func joinAll(first []error, rest error) error {
	all := first
	for _, fe := range FieldErrors(rest) {
		all = append(all, fe)
	}
	return errors.Join(all...)
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	return data, nil
}

func fileName(path, def string) string {
	if path == "" {
		return def
	}
	return path
}

// decode fills dst (which holds the defaults) from data. It checks the whole
// document against the schema first, so that every unknown key and every type
// mismatch is reported at once with its line, not just the first one the toml
// decoder trips over. Syntax and type errors are fatal (err). Unknown keys do
// not stop decoding; they are returned in unknown so the caller can report
// them together with validation errors.
func decode(data []byte, file string, dst any) (unknown []error, err error) {
	defer func() {
		// The toml library is fuzzed upstream, but a config may come from an
		// unprivileged process (profile import): never let a parser bug panic.
		if r := recover(); r != nil {
			unknown = nil
			err = &FieldError{File: file, Msg: fmt.Sprintf("cannot parse: internal error: %v", r)}
		}
	}()
	if len(data) > MaxFileSize {
		return nil, &FieldError{File: file, Msg: fmt.Sprintf("file too large (%d bytes, limit %d)", len(data), MaxFileSize)}
	}

	var raw map[string]any
	md, err := toml.Decode(string(data), &raw)
	if err != nil {
		return nil, syntaxError(file, err)
	}

	lines := keyLines(data)
	unk := &errList{file: file}
	typ := &errList{file: file}
	checkSchema(&md, raw, reflect.TypeOf(dst).Elem(), lines, unk, typ)
	if len(typ.errs) > 0 {
		return nil, errors.Join(append(unk.errs, typ.errs...)...)
	}

	md2, err := toml.Decode(string(data), dst)
	if err != nil {
		// checkSchema should have caught this; report it anyway.
		return nil, &FieldError{File: file, Msg: err.Error()}
	}
	if len(unk.errs) == 0 {
		// Backstop: anything the decoder did not use is unknown.
		for _, k := range md2.Undecoded() {
			if len(unk.errs) >= maxSchemaErrors {
				break
			}
			unk.addLine(k.String(), lines[k.String()], "unknown key")
		}
	}
	return unk.errs, nil
}

func syntaxError(file string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		fe := &FieldError{File: file, Line: pe.Position.Line}
		if pe.LastKey != "" {
			fe.Msg = fmt.Sprintf("syntax error after key %q: %s", pe.LastKey, pe.Message)
		} else {
			fe.Msg = "syntax error: " + pe.Message
		}
		return fe
	}
	return &FieldError{File: file, Msg: "syntax error: " + err.Error()}
}

// maxSchemaErrors bounds how many unknown-key and type errors are listed, so
// that a huge garbage file cannot produce a huge error.
const maxSchemaErrors = 50

// checkSchema walks every key of the document (in document order) against the
// Go type t and records unknown keys and type mismatches. An unknown key is
// reported once, at the first segment the schema does not know; keys below a
// reported one are skipped.
func checkSchema(md *toml.MetaData, raw map[string]any, t reflect.Type, lines map[string]int, unk, typ *errList) {
	bad := make(map[string]bool) // reported keys
	for _, key := range md.Keys() {
		if len(unk.errs)+len(typ.errs) >= maxSchemaErrors {
			typ.add("", "too many problems; stopped after %d", maxSchemaErrors)
			return
		}
		ft, depth := lookupField(t, key)
		if depth < len(key) {
			k := key[:depth+1]
			ks := k.String()
			if bad[ks] || hasBadAncestor(k, bad) {
				continue
			}
			bad[ks] = true
			msg := "unknown key"
			if s := suggest(t, k); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			unk.addLine(ks, lines[ks], "%s", msg)
			continue
		}
		if hasBadAncestor(key, bad) {
			continue
		}
		v, ok := lookupValue(raw, key)
		if !ok {
			continue // inside an array of tables; the parent was reported
		}
		if secretKeys[key[len(key)-1]] {
			v = redacted{v}
		}
		if msg := typeMismatch(ft, v); msg != "" {
			ks := key.String()
			typ.addLine(ks, lines[ks], "%s", msg)
			bad[ks] = true
		}
	}
}

// hasBadAncestor reports whether a proper prefix of key was reported. Keys
// reaching here are at most one segment deeper than the schema, so this is
// cheap.
func hasBadAncestor(key toml.Key, bad map[string]bool) bool {
	for i := 1; i < len(key); i++ {
		if bad[key[:i].String()] {
			return true
		}
	}
	return false
}

// lookupField descends struct t along key by toml tags (case-sensitive). It
// returns the Go type of the key and how many segments matched; the key is
// known when depth == len(key).
func lookupField(t reflect.Type, key toml.Key) (reflect.Type, int) {
	for i, part := range key {
		if t.Kind() != reflect.Struct {
			return nil, i
		}
		f, ok := fieldByTag(t, part)
		if !ok {
			return nil, i
		}
		t = f.Type
	}
	return t, len(key)
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		if tag == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// suggest proposes a known key for a mistyped one: same name in another case,
// or at most two edits away (and at most a third of the name).
func suggest(t reflect.Type, key toml.Key) string {
	parent, depth := lookupField(t, key[:len(key)-1])
	if depth != len(key)-1 || parent.Kind() != reflect.Struct {
		return ""
	}
	name := key[len(key)-1]
	best, bestD := "", 3
	for i := 0; i < parent.NumField(); i++ {
		tag, _, _ := strings.Cut(parent.Field(i).Tag.Get("toml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		if strings.EqualFold(tag, name) {
			return tag
		}
		// Only suggest when the typo is small relative to the name.
		if d := editDistance(strings.ToLower(tag), strings.ToLower(name)); d < bestD && d*3 <= len(name) {
			best, bestD = tag, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance, bounded to short key names.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return math.MaxInt
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func lookupValue(raw map[string]any, key toml.Key) (any, bool) {
	var v any = raw
	for _, part := range key {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[part]; !ok {
			return nil, false
		}
	}
	return v, true
}

// typeMismatch returns "" when the TOML value v fits Go type t, else a message.
func typeMismatch(t reflect.Type, v any) string {
	if r, ok := v.(redacted); ok {
		if msg := typeMismatch(t, r.v); msg == "" {
			return ""
		}
		// Same message, with the value left out.
		return typeMismatchRedacted(t, r)
	}
	switch t.Kind() {
	case reflect.String:
		if _, ok := v.(string); ok {
			return ""
		}
		return "expected a string, got " + tomlType(v)
	case reflect.Int:
		n, ok := v.(int64)
		if !ok {
			return "expected an integer, got " + tomlType(v)
		}
		if int64(int(n)) != n {
			return fmt.Sprintf("integer %d out of range", n)
		}
		return ""
	case reflect.Float64:
		switch v.(type) {
		case float64, int64:
			return ""
		}
		return "expected a number, got " + tomlType(v)
	case reflect.Bool:
		if _, ok := v.(bool); ok {
			return ""
		}
		return "expected true or false, got " + tomlType(v)
	case reflect.Struct:
		if _, ok := v.(map[string]any); ok {
			return ""
		}
		return "expected a table, got " + tomlType(v)
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok {
			return "expected an array, got " + tomlType(v)
		}
		for i, e := range arr {
			if msg := typeMismatch(t.Elem(), e); msg != "" {
				return fmt.Sprintf("element %d: %s", i, msg)
			}
		}
		return ""
	}
	return "unsupported field type " + t.String()
}

// typeMismatchRedacted describes a wrong-typed secret without its value.
func typeMismatchRedacted(t reflect.Type, r redacted) string {
	what := map[reflect.Kind]string{reflect.String: "a string", reflect.Int: "an integer", reflect.Float64: "a number",
		reflect.Bool: "true or false", reflect.Struct: "a table", reflect.Slice: "an array"}[t.Kind()]
	if what == "" {
		what = t.Kind().String()
	}
	return "expected " + what + ", got " + tomlType(r) + " (value not shown: it is secret)"
}

// secretKeys are the keys whose values never appear in an error message
// (logs and the GUI show them), even when they have the wrong type.
var secretKeys = map[string]bool{"password": true, "private_key": true}

// redacted wraps a secret value: typeMismatch sees its type, messages never
// its content.
type redacted struct{ v any }

func tomlType(v any) string {
	if r, ok := v.(redacted); ok {
		return strings.SplitN(tomlType(r.v), " (", 2)[0]
	}
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("a string (%q)", truncate(v, 40))
	case int64:
		return fmt.Sprintf("an integer (%d)", v)
	case float64:
		return fmt.Sprintf("a float (%v)", v)
	case bool:
		return fmt.Sprintf("a boolean (%v)", v)
	case time.Time:
		return "a date/time"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("%T", v)
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

// keyLines maps each key path (toml.Key.String form) to the first line it is
// defined on. It is a line-based approximation of TOML (table headers and
// "key = value" lines, skipping multi-line strings) used only to point the
// user at a line; keys it cannot place get line 0.
func keyLines(data []byte) map[string]int {
	out := make(map[string]int)
	var table []string
	inMulti := "" // `"""` or `'''` while inside a multi-line string
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		if inMulti != "" {
			if strings.Count(line, inMulti)%2 == 1 {
				inMulti = ""
			}
			continue
		}
		s := strings.TrimSpace(line)
		if s == "" || s[0] == '#' {
			continue
		}
		if s[0] == '[' {
			hdr := strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(s, "["), "["))
			end := strings.Index(hdr, "]")
			if end < 0 {
				continue
			}
			table = parseDottedKey(hdr[:end])
			setLine(out, table, n)
			continue
		}
		eq := keyEnd(s)
		if eq < 0 {
			continue
		}
		k := parseDottedKey(s[:eq])
		if len(k) == 0 {
			continue
		}
		full := append(append([]string{}, table...), k...)
		setLine(out, full, n)
		rest := s[eq+1:]
		for _, q := range []string{`"""`, `'''`} {
			if strings.Count(rest, q)%2 == 1 {
				inMulti = q
				break
			}
		}
	}
	return out
}

func setLine(m map[string]int, key []string, n int) {
	if len(key) == 0 {
		return
	}
	ks := toml.Key(key).String()
	if _, ok := m[ks]; !ok {
		m[ks] = n
	}
}

// keyEnd returns the index of the '=' that ends the key on a key/value line,
// or -1.
func keyEnd(s string) int {
	quote := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' && quote == '"' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '=':
			return i
		case c == '{' || c == '[' || c == '#':
			return -1
		}
	}
	return -1
}

// parseDottedKey splits `a."b.c" . d` into [a b.c d]; quoted parts keep
// their content (escapes are not interpreted, which is fine for line lookup).
func parseDottedKey(s string) []string {
	var parts []string
	var cur strings.Builder
	quote := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '.':
			parts = append(parts, strings.TrimSpace(cur.String()))
			cur.Reset()
		case c == ' ' || c == '\t':
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, strings.TrimSpace(cur.String()))
}
