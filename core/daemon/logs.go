package daemon

import (
	"context"
	"log/slog"
	"sync"

	"github.com/mirage-vpn/mirage/core/api"
)

const maxLogEntries = 1000

// logRing keeps the last entries for /v1/logs.
type logRing struct {
	mu      sync.Mutex
	entries []api.LogEntry // circular once full
	next    int            // index of the oldest entry once full
	seq     int64
	max     int
}

func newLogRing(n int) *logRing { return &logRing{max: n} }

func (r *logRing) add(e api.LogEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	e.Seq = r.seq
	if len(r.entries) < r.max {
		r.entries = append(r.entries, e)
		return
	}
	r.entries[r.next] = e
	r.next = (r.next + 1) % r.max
}

// since returns the entries with Seq > since, oldest first.
func (r *logRing) since(since int64) []api.LogEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []api.LogEntry{}
	for i := range r.entries {
		e := r.entries[(r.next+i)%len(r.entries)]
		if e.Seq > since {
			out = append(out, e)
		}
	}
	return out
}

// teeHandler passes records to the caller's handler and copies them (Info
// and above, plus whatever the inner handler enables) into the ring.
type teeHandler struct {
	inner  slog.Handler
	ring   *logRing
	attrs  []slog.Attr // WithAttrs so far, keys already prefixed by groups
	prefix string      // open groups, "a.b."
}

func (h *teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.inner.Enabled(ctx, l)
}

func (h *teeHandler) Handle(ctx context.Context, rec slog.Record) error {
	var err error
	if h.inner.Enabled(ctx, rec.Level) {
		err = h.inner.Handle(ctx, rec)
	}
	e := api.LogEntry{Time: rec.Time, Level: rec.Level.String(), Message: rec.Message}
	add := func(prefix string, a slog.Attr) {
		if e.Attrs == nil {
			e.Attrs = map[string]string{}
		}
		flatten(e.Attrs, prefix, a)
	}
	for _, a := range h.attrs {
		add("", a)
	}
	rec.Attrs(func(a slog.Attr) bool {
		add(h.prefix, a)
		return true
	})
	h.ring.add(e)
	return err
}

func flatten(m map[string]string, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range v.Group() {
			flatten(m, p, g)
		}
		return
	}
	if a.Key == "" {
		return
	}
	m[prefix+a.Key] = v.String()
}

func (h *teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.inner = h.inner.WithAttrs(as)
	n.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		a.Key = h.prefix + a.Key
		n.attrs = append(n.attrs, a)
	}
	return &n
}

func (h *teeHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	n := *h
	n.inner = h.inner.WithGroup(name)
	n.prefix = h.prefix + name + "."
	return &n
}
