//go:build linux

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mirage-vpn/mirage/core/engine"
)

// The hostile-peer suite: attacks on a generated server (defaults: 1024
// pending handshakes, 64 per source, 4 Argon2 checks at once) from the
// router namespace, which sits next to the server, while a legitimate
// client connects from the client namespace. Each test reports the
// legitimate login time and the server's file descriptors and RSS during
// the attack. Every attack is bounded in sockets and time.

// inNS runs fn on a thread that has entered network namespace ns; sockets
// fn opens belong to ns for their whole life. The thread goes back to its
// own namespace afterwards and lives on: a thread that ends takes with it
// every child process it forked with Pdeathsig (startProc's), which is how
// an earlier version of this killed the server under test.
func inNS(ns string, fn func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer unix.Close(orig)
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		fn()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread() // back home: the thread may serve others
		} // else stay locked: the thread, still in ns, ends with the goroutine
		errc <- nil
	}()
	return <-errc
}

// attackerAddrs adds n addresses to the router's server-side interface
// (192.0.2.160 up, inside the router's 192.0.2.128/25) and returns them.
func attackerAddrs(t *testing.T, tp *topology, n int) []string {
	t.Helper()
	var out []string
	for i := 0; i < n; i++ {
		a := fmt.Sprintf("192.0.2.%d", 160+i) // at most 64: .160-.223
		mustNS(t, tp.RTR, "ip", "addr", "add", a+"/32", "dev", rtrSrvIf)
		out = append(out, a)
	}
	return out
}

// holdIdle opens n TCP connections from src to the server that never send
// a byte, and keeps them until the test ends. It returns how many opened.
func holdIdle(t *testing.T, tp *topology, src string, n int) int {
	t.Helper()
	var conns []net.Conn
	var dialErr error
	err := inNS(tp.RTR, func() {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
		for i := 0; i < n; i++ {
			c, err := d.Dial("tcp", serverEndpoint())
			if err != nil {
				dialErr = err
				return
			}
			conns = append(conns, c)
		}
	})
	if dialErr != nil {
		ss, _ := nsOutput(tp.SRV, "ss", "-ltnp")
		t.Logf("attacker %s: dial %d failed: %v; server listeners:\n%s", src, len(conns)+1, dialErr, ss)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return len(conns)
}

// serverUsage returns the server process's open file descriptors and RSS.
func serverUsage(s *mserver) (fds int, rssKiB int) {
	pid := s.p.cmd.Process.Pid
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		fds = len(ents)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				rssKiB, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			}
		}
	}
	return fds, rssKiB
}

// timeLogin starts a client and returns how long it took to connect.
func timeLogin(t *testing.T, tp *topology, s *mserver) time.Duration {
	t.Helper()
	conf := derivedClient(t, s, func(map[string]any) {})
	start := time.Now()
	c := startClient(t, tp, conf)
	c.waitConnected(t, 1, 30*time.Second)
	d := time.Since(start)
	waitPing(t, tp.CLI, hostAddr, 5*time.Second)
	c.p.stop(5 * time.Second)
	return d
}

// TestE2EHostileSlowloris: one address holding 1,100 idle sockets, re-opened
// as the server closes them, gets its 64; a client from another address
// logs in.
func TestE2EHostileSlowloris(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	base := timeLogin(t, tp, s)
	src := attackerAddrs(t, tp, 1)[0]
	opened := holdIdle(t, tp, src, 1100)
	if opened < 1100 {
		t.Fatalf("attacker opened %d of 1100 sockets", opened)
	}
	time.Sleep(500 * time.Millisecond)
	fds, rss := serverUsage(s)
	d := timeLogin(t, tp, s)
	t.Logf("slowloris, 1 source, %d sockets: legitimate login %v (%v without attack); server %d fds, RSS %d KiB", opened, d.Round(time.Millisecond), base.Round(time.Millisecond), fds, rss)
	if fds > 400 {
		t.Errorf("server holds %d fds for one flooding source (per-source cap 64)", fds)
	}
}

// TestE2EHostileIdleBurst: 1,024 idle connections from 16 addresses fill
// every pending slot; a new client is admitted (the oldest idle one is
// shed) and logs in.
func TestE2EHostileIdleBurst(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	total := 0
	for _, a := range attackerAddrs(t, tp, 16) {
		total += holdIdle(t, tp, a, 64)
	}
	if total != 1024 {
		time.Sleep(time.Second)
		t.Fatalf("attackers opened %d of 1024 sockets; server exited: %v (status %d, %v)", total, s.p.exited(), s.p.exitStatus, s.p.waitErr)
	}
	time.Sleep(500 * time.Millisecond)
	fds, rss := serverUsage(s)
	d := timeLogin(t, tp, s)
	t.Logf("idle burst, 16 sources × 64: legitimate login %v; server %d fds, RSS %d KiB", d.Round(time.Millisecond), fds, rss)
}

// floodDialer is a tcp-tls dialer bound to a source address; it must be
// used from a thread in the router namespace.
type floodDialer struct{ src string }

func (d floodDialer) Protocol() string { return "tcp-tls" }
func (d floodDialer) Dial(ctx context.Context) (engine.Conn, error) {
	nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(d.src)}}
	c, err := nd.DialContext(ctx, "tcp", serverEndpoint())
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return exportingConn{tc}, nil
}

type exportingConn struct{ *tls.Conn }

func (c exportingConn) ExportKeyingMaterial(label string, ctx []byte, n int) ([]byte, error) {
	cs := c.ConnectionState()
	return cs.ExportKeyingMaterial(label, ctx, n)
}

// TestE2EHostileWrongPasswordFlood: 64 addresses try wrong passwords for the
// real user name as fast as the server answers, for 20 s at most. A user
// who logged in before from its address still logs in, ahead of the
// flood's Argon2 checks.
func TestE2EHostileWrongPasswordFlood(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	base := timeLogin(t, tp, s) // the user's address becomes known good
	user, _ := table(readTOML(t, s.clientPath()), "authentication")["username"].(string)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var attempts, rejected atomic.Int64
	var wg sync.WaitGroup
	for _, a := range attackerAddrs(t, tp, 64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inNS(tp.RTR, func() {
				for i := 0; i < 400 && ctx.Err() == nil; i++ { // bounded
					actx, acancel := context.WithTimeout(ctx, 5*time.Second)
					sess, err := engine.DialSession(actx, engine.SessionParams{
						Dialers: []engine.Dialer{floodDialer{a}}, Username: user, Password: "wrong-" + a,
						HandshakeTimeout: 5 * time.Second,
					})
					acancel()
					attempts.Add(1)
					if sess != nil {
						sess.Close()
						t.Errorf("a wrong password was accepted")
						return
					}
					if err != nil {
						rejected.Add(1)
					}
				}
			})
		}()
	}
	time.Sleep(3 * time.Second) // the flood is in full swing
	fds, rss := serverUsage(s)
	d := timeLogin(t, tp, s)
	cancel()
	wg.Wait()
	t.Logf("wrong-password flood, 64 sources, %d attempts (%d refused): legitimate login %v (%v before); server %d fds, RSS %d KiB during it",
		attempts.Load(), rejected.Load(), d.Round(time.Millisecond), base.Round(time.Millisecond), fds, rss)
	if rss > 400<<10 {
		t.Errorf("server RSS %d KiB during the flood (Argon2 budget: 4 × 19 MiB)", rss)
	}
}
