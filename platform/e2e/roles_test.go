//go:build linux

package e2e

// Roles: small network tools run by re-executing the test binary inside a
// namespace with MIRAGE_E2E_ROLE set. Each role is bounded in time and
// prints its result on stdout; exit status 0 means success.

import (
	"golang.org/x/sys/unix"

	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// runRole runs one role and returns the process exit status.
func runRole(role string, args []string) int {
	var err error
	switch role {
	case "xfer":
		err = roleXfer(args)
	case "peerlog":
		err = rolePeerLog(args)
	case "dial":
		err = roleDial(args)
	case "waitport":
		err = roleWaitPort(args)
	case "https":
		err = roleHTTPS(args)
	case "probe":
		err = roleProbe(args)
	case "udpecho":
		err = roleUDPEcho(args)
	case "udpask":
		err = roleUDPAsk(args)
	default:
		err = runRealityRole(role, args) // roles_reality_test.go; unknown roles fail there
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e role %s: %v\n", role, err)
		return 1
	}
	return 0
}

func argDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: %w", s, err)
	}
	return d, nil
}

// dialRetry dials addr until it answers or timeout passes.
func dialRetry(addr string, timeout time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("dial %s within %v: %w", addr, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// roleXfer: xfer send|recv listen|dial ADDR AMOUNT TIMEOUT.
// The sender writes AMOUNT pseudo-random bytes (a byte count, or a duration
// such as "20s" to send for that long), half-closes and waits for the
// receiver to close; the receiver reads to EOF. Both print
// "bytes=N sha256=HEX".
func roleXfer(args []string) error {
	if len(args) != 5 {
		return errors.New("usage: xfer send|recv listen|dial ADDR BYTES|DURATION TIMEOUT")
	}
	dir, mode, addr := args[0], args[1], args[2]
	size, err := strconv.ParseInt(args[3], 10, 64)
	var sendFor time.Duration
	if err != nil {
		if sendFor, err = time.ParseDuration(args[3]); err != nil || sendFor <= 0 {
			return fmt.Errorf("amount %q: want a byte count or a duration", args[3])
		}
		size = -1
	}
	timeout, err := argDuration(args[4])
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	var conn net.Conn
	switch mode {
	case "listen":
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		defer ln.Close()
		fmt.Println("ready")
		ln.(*net.TCPListener).SetDeadline(deadline)
		if conn, err = ln.Accept(); err != nil {
			return fmt.Errorf("accept: %w", err)
		}
	case "dial":
		if conn, err = dialRetry(addr, 10*time.Second); err != nil {
			return err
		}
	default:
		return fmt.Errorf("mode %q", mode)
	}
	defer conn.Close()
	conn.SetDeadline(deadline)
	h := sha256.New()
	var n int64
	switch dir {
	case "send":
		n, err = sendRandom(conn, h, size, sendFor)
		if err != nil {
			return fmt.Errorf("send after %d bytes: %w", n, err)
		}
		conn.(*net.TCPConn).CloseWrite()
		// The receiver closes after reading everything.
		if _, err := io.Copy(io.Discard, conn); err != nil {
			return fmt.Errorf("wait for receiver: %w", err)
		}
		// The sender's retransmissions, for tests that compare them.
		if rc, err := conn.(*net.TCPConn).SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) {
				if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
					fmt.Fprintf(os.Stderr, "retrans=%d\n", info.Total_retrans)
				}
			})
		}
	case "recv":
		n, err = io.Copy(h, conn)
		if err != nil {
			return fmt.Errorf("receive after %d bytes: %w", n, err)
		}
	default:
		return fmt.Errorf("direction %q", dir)
	}
	fmt.Printf("bytes=%d sha256=%s\n", n, hex.EncodeToString(h.Sum(nil)))
	return nil
}

// sendRandom writes size bytes, or (size < 0) writes for sendFor.
func sendRandom(w io.Writer, h hash.Hash, size int64, sendFor time.Duration) (int64, error) {
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return 0, err
	}
	src := mrand.NewChaCha8(seed)
	buf := make([]byte, 64<<10)
	var n int64
	end := time.Now().Add(sendFor)
	for (size < 0 && time.Now().Before(end)) || (size >= 0 && n < size) {
		chunk := buf
		if size >= 0 {
			chunk = buf[:min(int64(len(buf)), size-n)]
		}
		src.Read(chunk)
		h.Write(chunk)
		m, err := w.Write(chunk)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// rolePeerLog: peerlog ADDR TIMEOUT. Accepts connections until TIMEOUT and
// prints (and sends back) "peer=IP" for each.
func rolePeerLog(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: peerlog ADDR TIMEOUT")
	}
	timeout, err := argDuration(args[1])
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", args[0])
	if err != nil {
		return err
	}
	defer ln.Close()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(timeout))
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			return nil // deadline: done
		}
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		fmt.Printf("peer=%s\n", host)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "peer=%s\n", host)
		c.Close()
	}
}

// roleDial: dial ADDR TIMEOUT. Prints the first line the peer sends.
func roleDial(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: dial ADDR TIMEOUT")
	}
	timeout, err := argDuration(args[1])
	if err != nil {
		return err
	}
	c, err := net.DialTimeout("tcp", args[0], timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	fmt.Print(line)
	return nil
}

// roleWaitPort: waitport ADDR TIMEOUT. Exits 0 once a TCP connect works.
func roleWaitPort(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: waitport ADDR TIMEOUT")
	}
	timeout, err := argDuration(args[1])
	if err != nil {
		return err
	}
	c, err := dialRetry(args[0], timeout)
	if err != nil {
		return err
	}
	return c.Close()
}

// roleHTTPS: https URL TIMEOUT. A plain HTTPS client that accepts any
// certificate; prints "status=N" and the whole response.
func roleHTTPS(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: https URL TIMEOUT")
	}
	timeout, err := argDuration(args[1])
	if err != nil {
		return err
	}
	client := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		},
	}
	resp, err := client.Get(args[0])
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dump, err := httputil.DumpResponse(resp, true)
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	fmt.Printf("status=%d\n%s", resp.StatusCode, dump)
	return nil
}

// roleProbe: probe ADDR. Opens three hostile connections at once and prints
// one line per probe: "NAME closed_after=SECONDS got=BYTES err=..." or
// "NAME open_after=SECONDS" when the server kept it open for 20 s.
//   - garbage: 4 KiB of random bytes
//   - hello:   the first 64 bytes of a TLS ClientHello that claims 512 bytes
//   - idle:    nothing at all
func roleProbe(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: probe ADDR")
	}
	addr := args[0]
	junk := make([]byte, 4096)
	rand.Read(junk)
	hello := []byte{0x16, 0x03, 0x01, 0x02, 0x00, // record: handshake, 512 bytes
		0x01, 0x00, 0x01, 0xfc, // ClientHello, 508 bytes
		0x03, 0x03} // legacy version
	random := make([]byte, 53)
	rand.Read(random)
	hello = append(hello, random...)
	probes := []struct {
		name string
		send []byte
	}{{"garbage", junk}, {"hello", hello}, {"idle", nil}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failed error
	for _, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			line, err := probeOne(addr, p.send)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = fmt.Errorf("%s: %w", p.name, err)
				return
			}
			fmt.Printf("%s %s\n", p.name, line)
		}()
	}
	wg.Wait()
	return failed
}

const probeLimit = 20 * time.Second

func probeOne(addr string, send []byte) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	start := time.Now()
	c.SetDeadline(start.Add(probeLimit))
	if len(send) > 0 {
		if _, err := c.Write(send); err != nil {
			return fmt.Sprintf("closed_after=%.2f got=0 err=%q", time.Since(start).Seconds(), err.Error()), nil
		}
	}
	n, err := io.Copy(io.Discard, c)
	elapsed := time.Since(start).Seconds()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Sprintf("open_after=%.2f got=%d", elapsed, n), nil
	}
	errText := "EOF"
	if err != nil {
		errText = err.Error()
	}
	return fmt.Sprintf("closed_after=%.2f got=%d err=%q", elapsed, n, errText), nil
}

// roleUDPEcho: udpecho DURATION ADDR... Echoes every UDP datagram on each
// ADDR back to its sender until DURATION has passed.
func roleUDPEcho(args []string) error {
	if len(args) < 2 {
		return errors.New("usage: udpecho DURATION ADDR...")
	}
	d, err := argDuration(args[0])
	if err != nil {
		return err
	}
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for _, a := range args[1:] {
		pc, err := net.ListenPacket("udp", a)
		if err != nil {
			return err
		}
		pc.SetDeadline(deadline)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer pc.Close()
			buf := make([]byte, 2048)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(buf[:n], from)
			}
		}()
	}
	fmt.Println("listening")
	wg.Wait()
	return nil
}

// roleUDPAsk: udpask ADDR TIMEOUT. Sends a datagram (three tries) and exits
// 0 once the echo comes back; non-zero when nothing answers in TIMEOUT.
func roleUDPAsk(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: udpask ADDR TIMEOUT")
	}
	timeout, err := argDuration(args[1])
	if err != nil {
		return err
	}
	c, err := net.Dial("udp", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 64)
	for i := range 3 {
		if _, err := fmt.Fprintf(c, "ask %d", i); err != nil {
			return fmt.Errorf("send: %w", err) // e.g. EPERM from the firewall
		}
		c.SetReadDeadline(time.Now().Add(timeout / 3))
		if n, err := c.Read(buf); err == nil {
			fmt.Printf("answered %q\n", buf[:n])
			return nil
		}
	}
	return fmt.Errorf("no answer from %s within %v", args[0], timeout)
}

// udpAnswered reports whether addr echoes a datagram sent from ns.
func udpAnswered(t *testing.T, ns, addr string) bool {
	t.Helper()
	_, err := roleOutput(t, ns, 10*time.Second, "udpask", addr, "1500ms")
	return err == nil
}

// startRole runs a role in the background inside ns.
func startRole(t *testing.T, ns, name, role string, args ...string) *proc {
	t.Helper()
	return startProc(t, ns, name, procOpts{Env: []string{roleEnv + "=" + role}},
		append([]string{selfExe(t)}, args...)...)
}

// roleOutput runs a role inside ns to completion (bounded by timeout) and
// returns its stdout.
func roleOutput(t *testing.T, ns string, timeout time.Duration, role string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, selfExe(t)}, args...)...)
	cmd.Env = append(os.Environ(), roleEnv+"="+role)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("role %s in %s: %w: %s", role, ns, err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// waitPort waits until addr accepts TCP connections from ns.
func waitPort(t *testing.T, ns, addr string, timeout time.Duration) error {
	t.Helper()
	_, err := roleOutput(t, ns, timeout+5*time.Second, "waitport", addr, timeout.String())
	return err
}
