//go:build linux

package e2e

// Roles of the REALITY tests (see roles_test.go for how roles run): the
// stand-in "real site", raw probes, an on-path relay that records a
// client's ClientHello, and a replay of that hello.

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mirage-vpn/mirage/core/transport/reality"
)

// runRealityRole runs the roles of this file; runRole falls back to it.
func runRealityRole(role string, args []string) error {
	switch role {
	case "site":
		return roleSite(args)
	case "rawsend":
		return roleRawSend(args)
	case "relay":
		return roleRelay(args)
	case "replay":
		return roleReplay(args)
	}
	return fmt.Errorf("unknown role %q", role)
}

// standInPage is what the stand-in site serves on every path.
const standInPage = "<!doctype html>\n<html><head><title>Example Domain</title></head>\n" +
	"<body><h1>Example Domain</h1><p>stand-in-site-7c1e: the real www.example.com of the e2e tests.</p></body></html>\n"

// peerListener prints "peer=IP" on stdout for every accepted connection, so
// the test can tell which connections reached the site.
type peerListener struct{ net.Listener }

func (l peerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		fmt.Printf("peer=%s\n", host)
	}
	return c, err
}

// roleSite: site ADDR CERT_CHAIN_PEM KEY_PEM TIMEOUT. An ordinary Go HTTPS
// server (HTTP/2 and HTTP/1.1) serving standInPage until TIMEOUT.
func roleSite(args []string) error {
	if len(args) != 4 {
		return errors.New("usage: site ADDR CERT KEY TIMEOUT")
	}
	timeout, err := argDuration(args[3])
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("X-Stand-In", "www.example.com")
			io.WriteString(w, standInPage)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(os.Stderr, "site: ", log.LstdFlags),
	}
	ln, err := net.Listen("tcp", args[0])
	if err != nil {
		return err
	}
	fmt.Println("ready")
	stop := time.AfterFunc(timeout, func() { srv.Close() })
	defer stop.Stop()
	err = srv.ServeTLS(peerListener{ln}, args[1], args[2])
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// roleRawSend: rawsend ADDR HEX WAIT. Sends the bytes, reads until the
// peer closes or WAIT passes, and prints "got=HEX end=eof|timeout|error".
func roleRawSend(args []string) error {
	if len(args) != 3 {
		return errors.New("usage: rawsend ADDR HEX WAIT")
	}
	data, err := hex.DecodeString(args[1])
	if err != nil {
		return fmt.Errorf("hex: %w", err)
	}
	wait, err := argDuration(args[2])
	if err != nil {
		return err
	}
	c, err := net.DialTimeout("tcp", args[0], 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write(data); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got, end := readUntil(c)
	fmt.Printf("got=%s end=%s\n", hex.EncodeToString(got), end)
	return nil
}

// readUntil reads c until EOF, an error or its deadline, and names how the
// read ended.
func readUntil(c net.Conn) ([]byte, string) {
	got, err := io.ReadAll(c)
	var ne net.Error
	switch {
	case err == nil:
		return got, "eof"
	case errors.As(err, &ne) && ne.Timeout():
		return got, "timeout"
	default:
		return got, "error"
	}
}

// roleRelay: relay LISTEN DEST HELLO_FILE TIMEOUT [drop]. An on-path
// observer: it forwards every connection from LISTEN to DEST unchanged and
// saves the first ClientHello it sees (the raw TLS records) to HELLO_FILE,
// printing "captured bytes=N". With drop it forwards nothing: it closes
// each connection after reading its hello.
func roleRelay(args []string) error {
	if len(args) != 4 && (len(args) != 5 || args[4] != "drop") {
		return errors.New("usage: relay LISTEN DEST HELLO_FILE TIMEOUT [drop]")
	}
	dest, file := args[1], args[2]
	if len(args) == 5 {
		dest = ""
	}
	timeout, err := argDuration(args[3])
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", args[0])
	if err != nil {
		return err
	}
	defer ln.Close()
	end := time.Now().Add(timeout)
	ln.(*net.TCPListener).SetDeadline(end)
	fmt.Println("ready")
	var once sync.Once
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			return nil // deadline: done
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			relayOne(c, dest, end, func(hello []byte) {
				once.Do(func() {
					if err := writeFileAtomic(file, hello); err != nil {
						fmt.Fprintf(os.Stderr, "relay: save hello: %v\n", err)
						return
					}
					fmt.Printf("captured bytes=%d\n", len(hello))
				})
			})
		}()
	}
}

func relayOne(c net.Conn, dest string, end time.Time, save func([]byte)) {
	defer c.Close()
	raw, _, err := reality.ReadClientHello(c, time.Now().Add(10*time.Second))
	if err != nil {
		fmt.Fprintf(os.Stderr, "relay: read ClientHello: %v\n", err)
		return
	}
	save(raw)
	if dest == "" {
		return
	}
	up, err := net.DialTimeout("tcp", dest, 5*time.Second)
	if err != nil {
		fmt.Fprintf(os.Stderr, "relay: %v\n", err)
		return
	}
	defer up.Close()
	c.SetDeadline(end)
	up.SetDeadline(end)
	if _, err := up.Write(raw); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		dst.(*net.TCPConn).CloseWrite()
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}

func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// roleReplay: replay ADDR HELLO_FILE WAIT. Sends the saved ClientHello as
// is, reads the answer until the peer closes, stays quiet for replayIdle
// after its last byte, or WAIT passes, and prints its
// TLS record structure: "records=TYPE/LEN,... first_msg=N bytes=N end=...".
// first_msg is the handshake type in the first record (2: ServerHello).
func roleReplay(args []string) error {
	if len(args) != 3 {
		return errors.New("usage: replay ADDR HELLO_FILE WAIT")
	}
	hello, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	wait, err := argDuration(args[2])
	if err != nil {
		return err
	}
	c, err := net.DialTimeout("tcp", args[0], 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write(hello); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got, end := readUntilIdle(c, time.Now().Add(wait))
	var recs []string
	first := -1
	rest := got
	for len(rest) >= 5 {
		n := int(rest[3])<<8 | int(rest[4])
		recs = append(recs, fmt.Sprintf("%d/%d", rest[0], n))
		if first < 0 && rest[0] == 22 && len(rest) > 5 {
			first = int(rest[5])
		}
		if len(rest) < 5+n {
			recs[len(recs)-1] += "(truncated)"
			break
		}
		rest = rest[5+n:]
	}
	fmt.Printf("records=%s first_msg=%d bytes=%d end=%s\n", strings.Join(recs, ","), first, len(got), end)
	return nil
}

// replayIdle ends the read of a handshake answer: the server has sent its
// whole flight and waits for the client.
const replayIdle = 500 * time.Millisecond

// readUntilIdle reads c until EOF, an error, end, or replayIdle without
// data once something arrived.
func readUntilIdle(c net.Conn, end time.Time) ([]byte, string) {
	var got []byte
	buf := make([]byte, 16<<10)
	c.SetReadDeadline(end)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		var ne net.Error
		switch {
		case errors.Is(err, io.EOF):
			return got, "eof"
		case errors.As(err, &ne) && ne.Timeout():
			if time.Now().Before(end) {
				return got, "idle"
			}
			return got, "timeout"
		case err != nil:
			return got, "error"
		}
		if n > 0 {
			d := time.Now().Add(replayIdle)
			if d.After(end) {
				d = end
			}
			c.SetReadDeadline(d)
		}
	}
}
