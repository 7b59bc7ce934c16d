// Package apiclient is the typed client of the helper's local API
// (core/api), used by the GUI. Errors the helper answers are *api.Error;
// failures to reach it wrap ErrUnreachable.
package apiclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/mirage-vpn/mirage/core/api"
)

// ErrUnreachable wraps every failure to talk to the helper (not running,
// socket missing, access denied by the OS, connection dropped).
var ErrUnreachable = errors.New("the Mirage helper is not reachable")

// maxResponse bounds a non-streaming answer; maxLine one watch line.
const (
	maxResponse = 8 << 20
	maxLine     = 1 << 20
)

// Client talks to the helper over one transport (unix socket or named pipe).
type Client struct {
	hc *http.Client
}

// New returns a client that opens connections with dial.
func New(dial func(ctx context.Context) (net.Conn, error)) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx)
		},
		MaxIdleConns:       2,
		DisableCompression: true,
	}
	return &Client{hc: &http.Client{Transport: tr}}
}

// The host part is never resolved: every connection goes through dial.
const base = "http://mirage-helper/v1/"

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// do sends a request and returns the answer when it is 2xx.
func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, unwrapURL(err))
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, apiError(resp)
	}
	return resp, nil
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// apiError decodes the Error body of a non-2xx answer.
func apiError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e api.Error
	if json.Unmarshal(b, &e) == nil && e.Code != "" {
		return &e
	}
	msg := strings.TrimSpace(string(b))
	if msg == "" {
		msg = resp.Status
	}
	code := api.CodeInternal
	switch resp.StatusCode {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusMethodNotAllowed:
		code = api.CodeBadRequest
	case http.StatusNotFound:
		code = api.CodeNotFound
	case http.StatusForbidden, http.StatusUnauthorized:
		code = api.CodeForbidden
	}
	return &api.Error{Code: code, Message: fmt.Sprintf("HTTP %d: %s", resp.StatusCode, msg)}
}

// call does a request and decodes a JSON answer into out (nil: discard).
func (c *Client) call(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponse)).Decode(out); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: %s %s: read answer: %w", ErrUnreachable, method, path, err)
	}
	return nil
}

// Status returns the helper's state.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var s api.Status
	err := c.call(ctx, http.MethodGet, "status", nil, &s)
	return s, err
}

// Watch calls fn with the current status and then with every update until
// ctx ends (returns ctx.Err()) or the stream breaks (an error wrapping
// ErrUnreachable, or *api.Error if the helper refused).
func (c *Client) Watch(ctx context.Context, fn func(api.Status)) error {
	resp, err := c.do(ctx, http.MethodGet, "watch", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	for sc.Scan() {
		var s api.Status
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			return fmt.Errorf("watch: bad update from the helper: %w", err)
		}
		fn(s)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	err = sc.Err()
	if err == nil {
		err = io.EOF
	}
	return fmt.Errorf("%w: watch stream ended: %w", ErrUnreachable, err)
}

// Profiles lists the stored profiles (without TOML).
func (c *Client) Profiles(ctx context.Context) ([]api.Profile, error) {
	var ps []api.Profile
	err := c.call(ctx, http.MethodGet, "profiles", nil, &ps)
	return ps, err
}

// Profile returns one profile with its TOML.
func (c *Client) Profile(ctx context.Context, name string) (api.Profile, error) {
	var p api.Profile
	err := c.call(ctx, http.MethodGet, "profiles/"+url.PathEscape(name), nil, &p)
	return p, err
}

// Import stores a profile from client.toml text or a mirage:// link.
func (c *Client) Import(ctx context.Context, req api.ImportRequest) (api.Profile, error) {
	var p api.Profile
	err := c.call(ctx, http.MethodPost, "profiles/import", req, &p)
	return p, err
}

// Update renames a profile and/or replaces its TOML.
func (c *Client) Update(ctx context.Context, name string, req api.UpdateRequest) (api.Profile, error) {
	var p api.Profile
	err := c.call(ctx, http.MethodPut, "profiles/"+url.PathEscape(name), req, &p)
	return p, err
}

// Delete removes a profile.
func (c *Client) Delete(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, "profiles/"+url.PathEscape(name), nil, nil)
}

// Connect starts connecting a profile; follow the progress with Watch.
func (c *Client) Connect(ctx context.Context, profile string) (api.Status, error) {
	var s api.Status
	err := c.call(ctx, http.MethodPost, "connect", api.ConnectRequest{Profile: profile}, &s)
	return s, err
}

// Disconnect stops the tunnel and returns once it is down.
func (c *Client) Disconnect(ctx context.Context) (api.Status, error) {
	var s api.Status
	err := c.call(ctx, http.MethodPost, "disconnect", nil, &s)
	return s, err
}

// Logs returns the helper's log entries with a sequence number above since.
func (c *Client) Logs(ctx context.Context, since int64) ([]api.LogEntry, error) {
	var es []api.LogEntry
	err := c.call(ctx, http.MethodGet, "logs?since="+strconv.FormatInt(since, 10), nil, &es)
	return es, err
}
