// Package check is `mirage-server check`: it validates a server's config
// and the host it runs on (TUN, forwarding, NAT interfaces, ports,
// certificate, users file), then plays an active prober against the
// running server and compares every answer with what the camouflage
// target answers to the same probe. A censor's prober does exactly this;
// the operator should see the differences first.
//
// Verdicts: PASS (nothing to do), WARN (works, but a prober or a client
// may notice; the row says what to change), FAIL (broken or plainly
// detectable; the command exits non-zero), SKIP (not applicable, or could
// not be checked, with the reason).
package check

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mirage-vpn/mirage/core/config"
)

// Status is the verdict of one check.
type Status int

const (
	Pass Status = iota
	Warn
	Fail
	Skip
)

func (s Status) String() string {
	switch s {
	case Pass:
		return "PASS"
	case Warn:
		return "WARN"
	case Fail:
		return "FAIL"
	}
	return "SKIP"
}

// MarshalText makes a Status print as its name in JSON.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Result is one row of the report.
type Result struct {
	// Section is "config", "host" or "probe".
	Section string `json:"section"`
	Name    string `json:"name"`
	Status  Status `json:"status"`
	// Detail says what was seen.
	Detail string `json:"detail"`
	// Fix says what to change; empty for PASS and SKIP.
	Fix string `json:"fix,omitempty"`
}

// Options tunes Run.
type Options struct {
	// Addr is the host:port probed; empty: bind_address:bind_port, with an
	// unspecified bind address replaced by loopback. Give the public
	// address to probe along the path clients and censors use.
	Addr string
	// NoProbe skips the detectability self-test.
	NoProbe bool
	// Timeout bounds each network step (dial, handshake, read). Zero: 5 s.
	Timeout time.Duration
	// Now is the clock for certificate validity. Nil: time.Now.
	Now func() time.Time
	// Logger receives debug details. Nil: discarded.
	Logger *slog.Logger
}

// Report is the outcome of Run.
type Report struct {
	Results []Result `json:"results"`
}

// Failed reports whether any check failed.
func (r *Report) Failed() bool { return r.count(Fail) > 0 }

func (r *Report) count(s Status) int {
	n := 0
	for _, x := range r.Results {
		if x.Status == s {
			n++
		}
	}
	return n
}

func (r *Report) add(section, name string, s Status, detail, fix string) {
	r.Results = append(r.Results, Result{Section: section, Name: name, Status: s, Detail: detail, Fix: fix})
}

// Find returns the first result named name, for tests and callers that
// act on one row.
func (r *Report) Find(name string) (Result, bool) {
	for _, x := range r.Results {
		if x.Name == name {
			return x, true
		}
	}
	return Result{}, false
}

// WriteTable prints the report for people: one row per check, the fix
// indented under its row, and a summary line.
func (r *Report) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SECTION\tCHECK\tRESULT\tDETAIL")
	for _, x := range r.Results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", x.Section, x.Name, x.Status, oneLine(x.Detail))
		if x.Fix != "" {
			fmt.Fprintf(tw, "\t\t\t-> %s\n", oneLine(x.Fix))
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d PASS, %d WARN, %d FAIL, %d SKIP\n", r.count(Pass), r.count(Warn), r.count(Fail), r.count(Skip))
}

// WriteJSON prints the report as one JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// Run checks cfg (already loaded and valid) and the host, then probes the
// running server unless o.NoProbe. It never returns an error: every
// problem is a row of the report.
func Run(ctx context.Context, cfg *config.Server, o Options) *Report {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Report{}
	c := &checker{cfg: cfg, o: o, r: r}
	c.config(ctx)
	c.host(ctx)
	if o.NoProbe {
		r.add("probe", "detectability", Skip, "skipped (--no-probe)", "")
		return r
	}
	c.probe(ctx)
	return r
}

// checker carries what the individual checks share.
type checker struct {
	cfg *config.Server
	o   Options
	r   *Report

	// running is set by the ports check: something answers on the probe
	// address.
	running bool
	// targetOK is set when the camouflage target answered TLS.
	targetOK bool
}
