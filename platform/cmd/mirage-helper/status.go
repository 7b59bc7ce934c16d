package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mirage-vpn/mirage/core/api"
	"github.com/mirage-vpn/mirage/core/apiclient"
)

// cmdStatus asks the running helper service (mirage-helper run) for the
// tunnel's state over its local API and prints it: state, addresses,
// traffic and, per connection, RTT, congestion control and what forward
// error correction did.
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", apiclient.DefaultSocket(), "the helper's local API socket")
	asJSON := fs.Bool("json", false, "print the status as JSON (the local API's)")
	if err := fs.Parse(args); err != nil {
		return exitError
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mirage-helper status: unexpected argument %q\n", fs.Arg(0))
		return exitError
	}
	c := apiclient.New(apiclient.Dial(*socket))
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "mirage-helper status: %v (socket %s)\n", err, *socket)
		return exitError
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(st)
		return exitOK
	}
	printStatus(stdout, st)
	return exitOK
}

// printStatus writes st for a person.
func printStatus(w io.Writer, st api.Status) {
	fmt.Fprintf(w, "state: %s", st.State)
	if st.Profile != "" {
		fmt.Fprintf(w, " (profile %s)", st.Profile)
	}
	fmt.Fprintln(w)
	if st.Error != nil {
		fmt.Fprintf(w, "error: %s\n", st.Error.Message)
	}
	if st.Transport != "" {
		fmt.Fprintf(w, "transport: %s to %s\n", st.Transport, st.Server)
	}
	if len(st.Addresses) > 0 {
		fmt.Fprintf(w, "addresses: %s\n", strings.Join(st.Addresses, ", "))
	}
	fmt.Fprintf(w, "traffic: sent %d bytes (%d packets), received %d bytes (%d packets)\n",
		st.Stats.TxBytes, st.Stats.TxPackets, st.Stats.RxBytes, st.Stats.RxPackets)
	for i, c := range st.Connections {
		fmt.Fprintf(w, "connection %d: %s %s -> %s, rtt %.1f ms", i+1, c.Transport, c.Local, c.Remote, c.RTTMillis)
		if c.Congestion != "" {
			fmt.Fprintf(w, ", %s", c.Congestion)
		}
		fmt.Fprintln(w)
		if f := c.FEC; f != nil {
			printFEC(w, f)
		}
	}
}

// printFEC writes one connection's FEC counters.
func printFEC(w io.Writer, f *api.FEC) {
	if f.Sending {
		fmt.Fprintf(w, "  fec sent: groups of %d+%d (loss on the way out %.2f %%), %d packets, %d parity\n",
			f.Data, f.Parity, f.SendLoss*100, f.DataSent, f.ParitySent)
	} else {
		fmt.Fprintln(w, "  fec sent: off")
	}
	fmt.Fprintf(w, "  fec received: %d shards seen, %d packets recovered, %d unrecoverable, %d malformed (loss on the way in %.2f %%)\n",
		f.Seen, f.Recovered, f.Unrecoverable, f.Malformed, f.RecvLoss*100)
}
