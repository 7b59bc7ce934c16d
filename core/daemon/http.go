package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/mirage-vpn/mirage/core/api"
)

// watchWriteTimeout drops a watcher that does not read for this long.
const watchWriteTimeout = 30 * time.Second

// Handler serves the /v1 API of core/api. It does no authentication: the
// listener (platform/ipc) only lets authorized peers in.
func (d *Daemon) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.Status())
	})
	mux.HandleFunc("GET /v1/watch", d.serveWatch)
	mux.Handle("GET /v1/metrics", d.metricsHandler())
	mux.HandleFunc("GET /v1/profiles", func(w http.ResponseWriter, r *http.Request) {
		ps, err := d.store.list()
		if err != nil {
			d.writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, ps)
	})
	mux.HandleFunc("GET /v1/profiles/{name}", func(w http.ResponseWriter, r *http.Request) {
		p, err := d.store.get(r.PathValue("name"))
		if err != nil {
			d.writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, p)
	})
	mux.HandleFunc("POST /v1/profiles/import", func(w http.ResponseWriter, r *http.Request) {
		var req api.ImportRequest
		if !decode(w, r, &req) {
			return
		}
		p, err := d.store.add(req)
		if err != nil {
			d.writeErr(w, err)
			return
		}
		d.log.Info("profile imported", "profile", p.Name)
		writeJSON(w, http.StatusCreated, p)
	})
	mux.HandleFunc("PUT /v1/profiles/{name}", func(w http.ResponseWriter, r *http.Request) {
		var req api.UpdateRequest
		if !decode(w, r, &req) {
			return
		}
		name := r.PathValue("name")
		p, err := d.store.update(name, req, d.renamed)
		if err != nil {
			d.writeErr(w, err)
			return
		}
		d.log.Info("profile updated", "profile", name, "name", p.Name)
		writeJSON(w, http.StatusOK, p)
	})
	mux.HandleFunc("DELETE /v1/profiles/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if err := d.store.remove(name, d.activeProfile); err != nil {
			d.writeErr(w, err)
			return
		}
		d.log.Info("profile deleted", "profile", name)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /v1/connect", func(w http.ResponseWriter, r *http.Request) {
		var req api.ConnectRequest
		if !decode(w, r, &req) {
			return
		}
		if err := d.Connect(req.Profile); err != nil {
			d.writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, d.Status())
	})
	mux.HandleFunc("POST /v1/disconnect", func(w http.ResponseWriter, r *http.Request) {
		if !drainEmpty(w, r) {
			return
		}
		if err := d.Disconnect(); err != nil {
			d.writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, d.Status())
	})
	mux.HandleFunc("GET /v1/logs", func(w http.ResponseWriter, r *http.Request) {
		var since int64
		if s := r.URL.Query().Get("since"); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				writeJSON(w, http.StatusBadRequest, &api.Error{Code: api.CodeBadRequest, Message: fmt.Sprintf("since: not an integer: %q", s)})
				return
			}
			since = n
		}
		writeJSON(w, http.StatusOK, d.logs.since(since))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, &api.Error{Code: api.CodeNotFound, Message: fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path)})
	})
	return mux
}

// serveWatch streams newline-delimited Status objects: one at once, then
// whenever the status changes, every second while connected and every
// few seconds otherwise. Updates a slow reader misses are merged: it gets
// the latest status when it catches up.
func (d *Daemon) serveWatch(w http.ResponseWriter, r *http.Request) {
	ch, unwatch := d.watch()
	defer unwatch()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	for {
		rc.SetWriteDeadline(time.Now().Add(watchWriteTimeout)) // best effort
		if err := enc.Encode(d.Status()); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-ch:
		case <-r.Context().Done():
			return
		case <-d.done:
			return
		}
	}
}

// decode reads one JSON object of at most api.MaxRequestBody bytes,
// rejecting unknown fields and trailing data. It answers the error itself.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	r.Body = http.MaxBytesReader(w, r.Body, api.MaxRequestBody)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("unexpected data after the JSON object")
			var mbe *http.MaxBytesError
			if errors.As(terr, &mbe) {
				err = terr
			}
		}
	}
	if err == nil {
		return true
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		writeJSON(w, http.StatusRequestEntityTooLarge, &api.Error{Code: api.CodeBadRequest, Message: fmt.Sprintf("request body larger than %d bytes", api.MaxRequestBody)})
	case errors.Is(err, io.EOF):
		writeJSON(w, http.StatusBadRequest, &api.Error{Code: api.CodeBadRequest, Message: "empty request body; expected a JSON object"})
	default:
		writeJSON(w, http.StatusBadRequest, &api.Error{Code: api.CodeBadRequest, Message: "malformed request: " + err.Error()})
	}
	return false
}

// drainEmpty accepts an empty body or an empty JSON object.
func drainEmpty(w http.ResponseWriter, r *http.Request) bool {
	r.Body = http.MaxBytesReader(w, r.Body, api.MaxRequestBody)
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeJSON(w, http.StatusRequestEntityTooLarge, &api.Error{Code: api.CodeBadRequest, Message: fmt.Sprintf("request body larger than %d bytes", api.MaxRequestBody)})
			return false
		}
		writeJSON(w, http.StatusBadRequest, &api.Error{Code: api.CodeBadRequest, Message: "read request: " + err.Error()})
		return false
	}
	if len(b) == 0 {
		return true
	}
	var v struct{}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		writeJSON(w, http.StatusBadRequest, &api.Error{Code: api.CodeBadRequest, Message: "malformed request: " + err.Error()})
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// httpStatus maps an API error code to its HTTP status.
func httpStatus(code string) int {
	switch code {
	case api.CodeBadRequest, api.CodeInvalidConfig:
		return http.StatusBadRequest
	case api.CodeNotFound:
		return http.StatusNotFound
	case api.CodeConflict:
		return http.StatusConflict
	case api.CodeForbidden:
		return http.StatusForbidden
	case api.CodeRejected:
		return http.StatusUnauthorized
	case api.CodeNetwork:
		return http.StatusBadGateway
	}
	return http.StatusInternalServerError
}

func (d *Daemon) writeErr(w http.ResponseWriter, err error) {
	var ae *api.Error
	if !errors.As(err, &ae) {
		d.log.Error("api request failed", "err", err)
		ae = &api.Error{Code: api.CodeInternal, Message: err.Error()}
		if errors.Is(err, ErrClosed) {
			writeJSON(w, http.StatusServiceUnavailable, ae)
			return
		}
	}
	writeJSON(w, httpStatus(ae.Code), ae)
}
