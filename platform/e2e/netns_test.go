//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Addresses of the test topology. Only documentation ranges and fd00::/8.
//
//	cli --192.0.2.0/25-- rtr --192.0.2.128/25-- srv --203.0.113.0/24-- host
//
// host has no route back to the client or tunnel networks: replies from host
// only come back when the server NATs tunnel traffic to its own address.
const (
	cliAddr     = "192.0.2.2"
	rtrCliAddr  = "192.0.2.1"
	rtrSrvAddr  = "192.0.2.129"
	srvAddr     = "192.0.2.130"
	srvHostAddr = "203.0.113.1"
	hostAddr    = "203.0.113.2"

	cliAddr6     = "fd00:6d:a::2"
	rtrCliAddr6  = "fd00:6d:a::1"
	rtrSrvAddr6  = "fd00:6d:b::1"
	srvAddr6     = "fd00:6d:b::2"
	srvHostAddr6 = "fd00:6d:c::1"
	hostAddr6    = "fd00:6d:c::2"

	tunNet4   = "198.51.100.1/24" // server.toml tunnel_network
	tunNet6   = "fd00:6d:1::1/64" // server.toml tunnel_network_v6
	tunSrv4   = "198.51.100.1"
	tunSrv6   = "fd00:6d:1::1"
	srvPort   = 443
	cliTUN    = "mirage0"
	srvTUN    = "mirage-srv0"
	cliIf     = "to-rtr" // in cli
	rtrCliIf  = "to-cli" // in rtr
	rtrSrvIf  = "to-srv" // in rtr
	srvRtrIf  = "to-rtr" // in srv
	srvHostIf = "to-host"
	hostIf    = "to-srv" // in host

	// cliResolvConf is the resolv.conf the client namespace starts with.
	cliResolvConf = "# mirage e2e: original resolv.conf\nnameserver 192.0.2.53\nsearch e2e.test\n"
)

var topoSeq atomic.Int32

// topology is one set of four namespaces wired as described above.
type topology struct {
	CLI, RTR, SRV, HOST string
}

// serverEndpoint is host:port of the server as the client dials it.
func serverEndpoint() string { return fmt.Sprintf("%s:%d", srvAddr, srvPort) }

// newTopology builds a fresh topology and removes it when the test ends.
func newTopology(t *testing.T) *topology {
	t.Helper()
	requirePrivileged(t)
	prefix := fmt.Sprintf("m2e%d-%d-", os.Getpid(), topoSeq.Add(1))
	tp := &topology{CLI: prefix + "cli", RTR: prefix + "rtr", SRV: prefix + "srv", HOST: prefix + "host"}
	t.Cleanup(func() {
		if err := tp.destroy(); err != nil {
			t.Errorf("remove topology: %v", err)
		}
	})
	if err := tp.build(); err != nil {
		t.Fatalf("build topology: %v", err)
	}
	return tp
}

func (tp *topology) all() []string { return []string{tp.CLI, tp.RTR, tp.SRV, tp.HOST} }

func (tp *topology) build() error {
	for _, ns := range tp.all() {
		// Every namespace gets its own /etc/netns/NAME/resolv.conf, bind-mounted
		// over /etc/resolv.conf by "ip netns exec": DNS changes made inside
		// stay inside the test.
		dir := filepath.Join("/etc/netns", ns)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(cliResolvConf), 0o644); err != nil {
			return err
		}
		if err := run("ip", "netns", "add", ns); err != nil {
			return err
		}
		// No duplicate address detection: addresses are usable at once and
		// "ip addr" output does not change while DAD runs.
		for _, kv := range []string{"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"} {
			if err := nsRun(ns, "sysctl", "-qw", kv); err != nil {
				return err
			}
		}
		if err := run("ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	steps := [][]string{
		{"ip", "-n", tp.CLI, "link", "add", cliIf, "type", "veth", "peer", "name", rtrCliIf, "netns", tp.RTR},
		{"ip", "-n", tp.RTR, "link", "add", rtrSrvIf, "type", "veth", "peer", "name", srvRtrIf, "netns", tp.SRV},
		{"ip", "-n", tp.SRV, "link", "add", srvHostIf, "type", "veth", "peer", "name", hostIf, "netns", tp.HOST},

		{"ip", "-n", tp.CLI, "addr", "add", cliAddr + "/25", "dev", cliIf},
		{"ip", "-n", tp.CLI, "addr", "add", cliAddr6 + "/64", "dev", cliIf, "nodad"},
		{"ip", "-n", tp.RTR, "addr", "add", rtrCliAddr + "/25", "dev", rtrCliIf},
		{"ip", "-n", tp.RTR, "addr", "add", rtrCliAddr6 + "/64", "dev", rtrCliIf, "nodad"},
		{"ip", "-n", tp.RTR, "addr", "add", rtrSrvAddr + "/25", "dev", rtrSrvIf},
		{"ip", "-n", tp.RTR, "addr", "add", rtrSrvAddr6 + "/64", "dev", rtrSrvIf, "nodad"},
		{"ip", "-n", tp.SRV, "addr", "add", srvAddr + "/25", "dev", srvRtrIf},
		{"ip", "-n", tp.SRV, "addr", "add", srvAddr6 + "/64", "dev", srvRtrIf, "nodad"},
		{"ip", "-n", tp.SRV, "addr", "add", srvHostAddr + "/24", "dev", srvHostIf},
		{"ip", "-n", tp.SRV, "addr", "add", srvHostAddr6 + "/64", "dev", srvHostIf, "nodad"},
		{"ip", "-n", tp.HOST, "addr", "add", hostAddr + "/24", "dev", hostIf},
		{"ip", "-n", tp.HOST, "addr", "add", hostAddr6 + "/64", "dev", hostIf, "nodad"},

		{"ip", "-n", tp.CLI, "link", "set", cliIf, "up"},
		{"ip", "-n", tp.RTR, "link", "set", rtrCliIf, "up"},
		{"ip", "-n", tp.RTR, "link", "set", rtrSrvIf, "up"},
		{"ip", "-n", tp.SRV, "link", "set", srvRtrIf, "up"},
		{"ip", "-n", tp.SRV, "link", "set", srvHostIf, "up"},
		{"ip", "-n", tp.HOST, "link", "set", hostIf, "up"},

		{"ip", "-n", tp.CLI, "route", "add", "default", "via", rtrCliAddr},
		{"ip", "-n", tp.CLI, "-6", "route", "add", "default", "via", rtrCliAddr6},
		{"ip", "-n", tp.SRV, "route", "add", "192.0.2.0/25", "via", rtrSrvAddr},
		{"ip", "-n", tp.SRV, "-6", "route", "add", "fd00:6d:a::/64", "via", rtrSrvAddr6},
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	for _, kv := range []string{"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"} {
		if err := nsRun(tp.RTR, "sysctl", "-qw", kv); err != nil {
			return err
		}
	}
	return nil
}

// destroy removes the namespaces and their /etc/netns directories. Processes
// started with startProc are stopped by their own cleanups, which run first.
func (tp *topology) destroy() error {
	var errs []string
	for _, ns := range tp.all() {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
			if err := run("ip", "netns", "del", ns); err != nil {
				errs = append(errs, err.Error())
			}
		}
		if err := os.RemoveAll(filepath.Join("/etc/netns", ns)); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// cmdTimeout bounds every short command the harness runs.
const cmdTimeout = 30 * time.Second

// output runs a short command and returns its combined output.
func output(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func run(name string, args ...string) error {
	_, err := output(name, args...)
	return err
}

// nsOutput runs a short command inside namespace ns.
func nsOutput(ns string, argv ...string) (string, error) {
	return output("ip", append([]string{"netns", "exec", ns}, argv...)...)
}

func nsRun(ns string, argv ...string) error {
	_, err := nsOutput(ns, argv...)
	return err
}

// mustNS runs a command in ns and fails the test if it fails.
func mustNS(t *testing.T, ns string, argv ...string) string {
	t.Helper()
	out, err := nsOutput(ns, argv...)
	if err != nil {
		t.Fatalf("in %s: %v", ns, err)
	}
	return out
}

// sysctl reads one sysctl inside ns.
func sysctl(t *testing.T, ns, key string) string {
	t.Helper()
	return strings.TrimSpace(mustNS(t, ns, "sysctl", "-n", key))
}

// linkExists reports whether ns has a link called name.
func linkExists(ns, name string) bool {
	return run("ip", "-n", ns, "link", "show", "dev", name) == nil
}

// pingArgs builds a bounded ping command for addr.
func pingArgs(addr string, count int) []string {
	fam := "-4"
	if strings.Contains(addr, ":") {
		fam = "-6"
	}
	return []string{"ping", fam, "-n", "-c", fmt.Sprint(count), "-i", "0.2", "-W", "2", addr}
}

// ping sends a few echo requests from ns and reports whether all came back.
func ping(ns, addr string) error {
	_, err := nsOutput(ns, pingArgs(addr, 3)...)
	return err
}

// waitPing retries single pings from ns to addr until one succeeds or the
// timeout passes.
func waitPing(t *testing.T, ns, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if _, err = nsOutput(ns, pingArgs(addr, 1)...); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("ping %s from %s: no reply within %v: %v", addr, ns, timeout, err)
}

// netState is what the client may change in its namespace and must restore.
type netState struct {
	Routes4, Routes6, Rules4, Rules6, Addrs, ResolvConf string
}

// snapshot records the client's routing tables, policy rules, addresses and
// resolv.conf.
func (tp *topology) snapshot(t *testing.T) netState {
	t.Helper()
	resolv, err := os.ReadFile(filepath.Join("/etc/netns", tp.CLI, "resolv.conf"))
	if err != nil {
		t.Fatalf("read resolv.conf of %s: %v", tp.CLI, err)
	}
	return netState{
		Routes4:    mustNS(t, tp.CLI, "ip", "-4", "route", "show", "table", "all"),
		Routes6:    mustNS(t, tp.CLI, "ip", "-6", "route", "show", "table", "all"),
		Rules4:     mustNS(t, tp.CLI, "ip", "-4", "rule", "show"),
		Rules6:     mustNS(t, tp.CLI, "ip", "-6", "rule", "show"),
		Addrs:      mustNS(t, tp.CLI, "ip", "addr"),
		ResolvConf: string(resolv),
	}
}

// diff lists the fields of s that differ from o, with both values.
func (s netState) diff(o netState) []string {
	var d []string
	add := func(name, a, b string) {
		if a != b {
			d = append(d, fmt.Sprintf("%s differs:\n--- before\n%s--- after\n%s", name, a, b))
		}
	}
	add("ip -4 route show table all", s.Routes4, o.Routes4)
	add("ip -6 route show table all", s.Routes6, o.Routes6)
	add("ip -4 rule", s.Rules4, o.Rules4)
	add("ip -6 rule", s.Rules6, o.Rules6)
	add("ip addr", s.Addrs, o.Addrs)
	add("resolv.conf", s.ResolvConf, o.ResolvConf)
	return d
}
