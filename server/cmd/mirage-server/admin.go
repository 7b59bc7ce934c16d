package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mirage-vpn/mirage/server"
)

// defaultStateDir holds the journal of OS changes and the admin socket.
const defaultStateDir = "/run/mirage-server"

// adminSocket is the local admin socket of a server run with stateDir:
// mode 0600 in a 0700 directory, so only root (the server's user) reads
// the status. It carries no secrets, but who is online is private.
func adminSocket(stateDir string) string { return filepath.Join(stateDir, "admin.sock") }

// adminStatus is what GET /v1/status on the admin socket returns.
type adminStatus struct {
	Version string `json:"version"`
	server.Status
}

// serveAdmin serves the admin API on path until the returned stop is
// called.
func serveAdmin(path string, srv *server.Server, log *slog.Logger) (stop func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	// A socket left by a killed run is stale: a live server would still
	// answer on it.
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		log.Warn("another server answers on the admin socket: `mirage-server status` shows that one; give each server its own --state-dir", "socket", path)
		return func() {}, nil
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(adminStatus{Version: version, Status: srv.Status()})
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("admin socket", "err", err)
		}
	}()
	return func() { hs.Close(); os.Remove(path) }, nil
}

// cmdStatus prints the running server's sessions from its admin socket.
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", defaultStateDir, "the state directory of the running server")
	asJSON := fs.Bool("json", false, "print the raw JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		return fail(stderr, "status: unexpected argument %q", fs.Arg(0))
	}
	path := adminSocket(*stateDir)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	resp, err := hc.Get("http://mirage-server/v1/status")
	if err != nil {
		return fail(stderr, "status: no server answers on %s (is it running, with --state-dir %s, and are you root?): %v", path, *stateDir, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return fail(stderr, "status: %s: %v %s", path, err, resp.Status)
	}
	if *asJSON {
		stdout.Write(body)
		return 0
	}
	var st adminStatus
	if err := json.Unmarshal(body, &st); err != nil {
		return fail(stderr, "status: bad answer from %s: %v", path, err)
	}
	printStatus(stdout, st, time.Now())
	return 0
}

func printStatus(w io.Writer, st adminStatus, now time.Time) {
	fmt.Fprintf(w, "mirage-server %s, up %s\n", st.Version, now.Sub(st.Started).Round(time.Second))
	fmt.Fprintf(w, "users online: %d, sessions: %d, connections: tcp-tls %d, reality %d, quic %d\n",
		st.UsersOnline, len(st.Sessions), st.Connections["tcp-tls"], st.Connections["reality"], st.Connections["quic"])
	if len(st.Sessions) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "\nUSER\tADDRESSES\tFOR\tMUX\tCONNECTIONS\tFROM CLIENT\tTO CLIENT")
	for _, s := range st.Sessions {
		var conns []string
		for _, c := range s.Connections {
			conn := c.Transport + " " + c.Remote
			if c.Congestion != "" {
				conn += " (" + c.Congestion + ")"
			}
			conns = append(conns, conn)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.User, strings.Join(s.Addrs, ", "),
			now.Sub(s.Since).Round(time.Second), s.Mux, strings.Join(conns, ", "), byteSize(s.RxBytes), byteSize(s.TxBytes))
	}
	tw.Flush()
}

// byteSize formats n bytes for people (1000-based, as ip and ss do).
func byteSize(n uint64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}
