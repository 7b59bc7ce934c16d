package fallback

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mirage-vpn/mirage/core/transport/tlsx"
	"golang.org/x/net/http2"
)

// testServer is a loopback TLS listener handing every connection to a Site,
// as the tcp-tls transport does after a failed authentication.
type testServer struct {
	addr    string
	pool    *x509.CertPool
	accepts atomic.Int32
	served  chan time.Duration // ServeConn durations, one per connection
}

// preReader reads the bytes the "transport" consumed before giving up;
// they become ServeConn's replay.
type preReader func(c *tls.Conn) ([]byte, error)

func startSite(t *testing.T, site *Site, pre preReader) *testServer {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if _, _, err := tlsx.EnsureCert(certFile, keyFile, []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := tlsx.ServerConfig(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pemData, _ := os.ReadFile(certFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemData)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: ln.Addr().String(), pool: pool, served: make(chan time.Duration, 64)}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		site.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ts.accepts.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				tc := tls.Server(c, cfg)
				_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
				if err := tc.Handshake(); err != nil {
					c.Close()
					return
				}
				var replay []byte
				if pre != nil {
					if replay, err = pre(tc); err != nil {
						t.Errorf("pre-read: %v", err)
						c.Close()
						return
					}
				}
				_ = tc.SetDeadline(time.Time{})
				start := time.Now()
				site.ServeConn(tc, replay, tc.ConnectionState().NegotiatedProtocol)
				ts.served <- time.Since(start)
			}()
		}
	}()
	return ts
}

func (ts *testServer) h1Client() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: ts.pool, ServerName: "localhost", NextProtos: []string{"http/1.1"}},
			TLSNextProto:    map[string]func(string, *tls.Conn) http.RoundTripper{}, // no h2
		},
	}
}

func (ts *testServer) h2Client() *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: ts.pool, ServerName: "localhost"}},
	}
}

func (ts *testServer) url(p string) string { return "https://" + ts.addr + p }

// rawTLS opens a TLS connection offering only alpn.
func (ts *testServer) rawTLS(t *testing.T, alpn string) *tls.Conn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ts.addr,
		&tls.Config{RootCAs: ts.pool, ServerName: "localhost", NextProtos: []string{alpn}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var forbidden = regexp.MustCompile(`(?i)mirage|vpn`)

// get fetches p and checks the response never mentions the product.
func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	assertClean(t, resp.Header, string(body))
	return resp, string(body)
}

func assertClean(t *testing.T, h http.Header, body string) {
	t.Helper()
	for k, vs := range h {
		for _, v := range vs {
			if forbidden.MatchString(k + ": " + v) {
				t.Errorf("header %s: %s gives us away", k, v)
			}
		}
	}
	if m := forbidden.FindString(body); m != "" {
		t.Errorf("body contains %q", m)
	}
}

func newSite(t *testing.T, cfg Config) *Site {
	t.Helper()
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStaticHTTP1(t *testing.T) {
	ts := startSite(t, newSite(t, Config{}), nil)
	c := ts.h1Client()

	resp, body := get(t, c, ts.url("/"))
	if resp.StatusCode != 200 || resp.ProtoMajor != 1 {
		t.Fatalf("GET / = %d over HTTP/%d", resp.StatusCode, resp.ProtoMajor)
	}
	if !strings.Contains(body, "<title>Halden &amp; Roe Photography</title>") {
		t.Errorf("index page not served: %.200s", body)
	}
	for k, want := range map[string]string{"Server": "nginx", "Content-Type": "text/html", "Accept-Ranges": "bytes"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	etag := resp.Header.Get("ETag")
	if !regexp.MustCompile(`^"[0-9a-f]+-[0-9a-f]+"$`).MatchString(etag) {
		t.Errorf("ETag %q not nginx-shaped", etag)
	}
	if resp.Header.Get("Last-Modified") == "" || resp.Header.Get("Date") == "" {
		t.Error("Last-Modified or Date missing")
	}

	for p, ct := range map[string]string{
		"/css/style.css": "text/css",
		"/robots.txt":    "text/plain",
		"/favicon.ico":   "image/x-icon",
		"/index.html":    "text/html",
	} {
		resp, _ := get(t, c, ts.url(p))
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ct || resp.Header.Get("Server") != "nginx" {
			t.Errorf("GET %s = %d %q %q", p, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Server"))
		}
	}

	resp, body = get(t, c, ts.url("/wp-login.php"))
	if resp.StatusCode != 404 || !strings.Contains(body, "<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>") {
		t.Errorf("404 page: %d %q", resp.StatusCode, body)
	}

	// Conditional request.
	req, _ := http.NewRequest("GET", ts.url("/"), nil)
	req.Header.Set("If-None-Match", etag)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %d, want 304", resp.StatusCode)
	}

	// Directory handling and methods, like nginx.
	noRedirect := *c
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, _ = get(t, &noRedirect, ts.url("/css"))
	if resp.StatusCode != 301 || resp.Header.Get("Location") != "/css/" {
		t.Errorf("/css: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := get(t, c, ts.url("/css/")); resp.StatusCode != 403 {
		t.Errorf("/css/ (no index): %d, want 403", resp.StatusCode)
	}
	resp, err = c.Post(ts.url("/"), "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}

	// All of that was one kept-alive connection.
	if n := ts.accepts.Load(); n != 1 {
		t.Errorf("%d TCP connections for sequential requests, want 1 (keep-alive)", n)
	}
}

func TestStaticHTTP2(t *testing.T) {
	ts := startSite(t, newSite(t, Config{}), nil)
	c := ts.h2Client()
	for _, p := range []string{"/", "/css/style.css", "/nothing-here"} {
		resp, body := get(t, c, ts.url(p))
		if resp.ProtoMajor != 2 {
			t.Fatalf("GET %s over HTTP/%d, want 2", p, resp.ProtoMajor)
		}
		if resp.Header.Get("Server") != "nginx" {
			t.Errorf("Server = %q", resp.Header.Get("Server"))
		}
		if p == "/" && (resp.StatusCode != 200 || !strings.Contains(body, "Halden")) {
			t.Errorf("index over h2: %d", resp.StatusCode)
		}
		if p == "/nothing-here" && resp.StatusCode != 404 {
			t.Errorf("missing over h2: %d", resp.StatusCode)
		}
	}
	if n := ts.accepts.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
	c.Transport.(*http2.Transport).CloseIdleConnections()
	select {
	case <-ts.served:
	case <-time.After(5 * time.Second):
		t.Error("ServeConn did not return after the h2 client closed")
	}
}

// readAllBounded reads until EOF and fails the test if that takes too long.
func readAllBounded(t *testing.T, c net.Conn, limit time.Duration) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	data, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("connection not closed within %v (read %q): %v", limit, data, err)
	}
	return string(data), time.Since(start)
}

func TestGarbageGets400AndClose(t *testing.T) {
	ts := startSite(t, newSite(t, Config{}), nil)
	c := ts.rawTLS(t, "http/1.1")
	garbage := []byte{0x00, 0x05, 0xff, 0x13, 0x37, 'x', 0x80, 0x81, '\r', '\n', '\r', '\n'}
	if _, err := c.Write(garbage); err != nil {
		t.Fatal(err)
	}
	out, took := readAllBounded(t, c, 10*time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 400 Bad Request\r\n") {
		t.Errorf("garbage answered with %q", out)
	}
	assertClean(t, nil, out)
	t.Logf("400 and close after %v", took)
	select {
	case <-ts.served:
	case <-time.After(5 * time.Second):
		t.Error("ServeConn did not return")
	}
}

func TestGarbageAsReplay(t *testing.T) {
	// The transport read 8 bytes of binary "hello" and gave up; those
	// bytes are replayed and must get the same answer as on the wire.
	ts := startSite(t, newSite(t, Config{}), func(c *tls.Conn) ([]byte, error) {
		b := make([]byte, 8)
		_, err := io.ReadFull(c, b)
		return b, err
	})
	c := ts.rawTLS(t, "http/1.1")
	c.Write([]byte{1, 0, 0, 0, 0x20, 0xde, 0xad, 0xbe, 0xef, '\n', '\n'})
	out, _ := readAllBounded(t, c, 10*time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 400 Bad Request\r\n") {
		t.Errorf("replayed garbage answered with %q", out)
	}
}

func TestSilentOrEndlessGarbageTimesOut(t *testing.T) {
	site := newSite(t, Config{})
	site.h1.ReadHeaderTimeout = 500 * time.Millisecond // default 10 s; shortened for the test
	ts := startSite(t, site, nil)

	// Garbage without a line end: the server waits for more, but not forever.
	c := ts.rawTLS(t, "http/1.1")
	c.Write(bytes.Repeat([]byte{0xab}, 100))
	_, took := readAllBounded(t, c, 10*time.Second)
	if took > 5*time.Second {
		t.Errorf("closed after %v", took)
	}

	// Nothing at all.
	c2 := ts.rawTLS(t, "http/1.1")
	readAllBounded(t, c2, 10*time.Second)
}

func TestGarbageOnHTTP2(t *testing.T) {
	ts := startSite(t, newSite(t, Config{}), nil)
	c := ts.rawTLS(t, "h2")
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q", p)
	}
	c.Write([]byte("\x16\x03\x01 definitely not an http2 preface\r\n\r\n"))
	out, took := readAllBounded(t, c, 15*time.Second)
	assertClean(t, nil, out)
	t.Logf("h2 garbage: %d bytes then close after %v", len(out), took)
}

func TestReplayHTTP1(t *testing.T) {
	const req = "GET /robots.txt HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n"
	half := len(req) / 2
	ts := startSite(t, newSite(t, Config{}), func(c *tls.Conn) ([]byte, error) {
		b := make([]byte, half)
		_, err := io.ReadFull(c, b)
		return b, err
	})
	c := ts.rawTLS(t, "http/1.1")
	c.Write([]byte(req[:half]))
	time.Sleep(50 * time.Millisecond) // make sure the halves arrive separately
	c.Write([]byte(req[half:]))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "User-agent: *\nDisallow:\n" {
		t.Fatalf("replayed request: %d %q", resp.StatusCode, body)
	}
	// Keep-alive: a second request on the same connection.
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Halden") {
		t.Errorf("second request: %d", resp.StatusCode)
	}
}

func TestReplayHTTP2(t *testing.T) {
	// The transport consumed the first 10 bytes of the h2 preface.
	ts := startSite(t, newSite(t, Config{}), func(c *tls.Conn) ([]byte, error) {
		b := make([]byte, 10)
		_, err := io.ReadFull(c, b)
		return b, err
	})
	resp, body := get(t, ts.h2Client(), ts.url("/"))
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || !strings.Contains(body, "Halden") {
		t.Errorf("h2 with replayed preface: %d HTTP/%d", resp.StatusCode, resp.ProtoMajor)
	}
}

func TestProxyMode(t *testing.T) {
	var sawHost atomic.Value
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawHost.Store(r.Host)
		w.Header().Set("Server", "Apache/2.4.1")
		w.Header().Set("X-Upstream", "yes")
		fmt.Fprintf(w, "upstream page %s?%s", r.URL.Path, r.URL.RawQuery)
	}))
	defer upstream.Close()

	site := newSite(t, Config{Mode: "proxy", ProxyURL: upstream.URL})
	ts := startSite(t, site, nil)
	for _, c := range []*http.Client{ts.h1Client(), ts.h2Client()} {
		resp, body := get(t, c, ts.url("/shop/item?id=7"))
		if resp.StatusCode != 200 || body != "upstream page /shop/item?id=7" {
			t.Errorf("proxied: %d %q", resp.StatusCode, body)
		}
		if resp.Header.Get("Server") != "nginx" || resp.Header.Get("X-Upstream") != "yes" {
			t.Errorf("headers: Server %q X-Upstream %q", resp.Header.Values("Server"), resp.Header.Get("X-Upstream"))
		}
		if h := sawHost.Load(); h != strings.TrimPrefix(upstream.URL, "http://") {
			t.Errorf("upstream saw Host %v, want %s", h, strings.TrimPrefix(upstream.URL, "http://"))
		}
	}

	upstream.Close()
	resp, body := get(t, ts.h1Client(), ts.url("/"))
	if resp.StatusCode != 502 || !strings.Contains(body, "<title>502 Bad Gateway</title>") || resp.Header.Get("Server") != "nginx" {
		t.Errorf("dead upstream: %d %q", resp.StatusCode, body)
	}
}

// rawGet sends a request line verbatim (clients normalise paths, probers don't).
func rawGet(t *testing.T, ts *testServer, target string) (int, string) {
	t.Helper()
	c := ts.rawTLS(t, "http/1.1")
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", target)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestStaticDirMode(t *testing.T) {
	base := t.TempDir()
	www := filepath.Join(base, "www")
	os.MkdirAll(filepath.Join(www, "sub"), 0o755)
	os.MkdirAll(filepath.Join(www, "empty"), 0o755)
	os.WriteFile(filepath.Join(www, "index.html"), []byte("<h1>Own site</h1>"), 0o644)
	os.WriteFile(filepath.Join(www, "sub", "a.txt"), []byte("file a"), 0o644)
	os.WriteFile(filepath.Join(www, ".env"), []byte("hidden"), 0o644)
	os.WriteFile(filepath.Join(base, "secret.txt"), []byte("TOP SECRET"), 0o644)
	if err := os.Symlink(filepath.Join(base, "secret.txt"), filepath.Join(www, "escape.txt")); err != nil {
		t.Fatal(err)
	}
	ts := startSite(t, newSite(t, Config{Dir: www}), nil)

	cases := []struct {
		target string
		code   int
		body   string
	}{
		{"/", 200, "<h1>Own site</h1>"},
		{"/sub/a.txt", 200, "file a"},
		{"/sub", 301, ""},
		{"/empty/", 403, ""},
		{"/sub/a.txt/", 404, ""},
		{"/.env", 404, ""},
		{"/../secret.txt", 404, ""},
		{"/sub/../../secret.txt", 404, ""},
		{"/%2e%2e/secret.txt", 404, ""},
		{"/..%2fsecret.txt", 404, ""},
		{"/escape.txt", 404, ""}, // symlink leaving the root
		{"/sub/..\\..\\secret.txt", 400, ""},
	}
	for _, c := range cases {
		code, body := rawGet(t, ts, c.target)
		if code != c.code {
			t.Errorf("GET %s = %d, want %d (%q)", c.target, code, c.code, body)
		}
		if strings.Contains(body, "TOP SECRET") || strings.Contains(body, "hidden") {
			t.Errorf("GET %s leaked %q", c.target, body)
		}
		if c.body != "" && body != c.body {
			t.Errorf("GET %s body %q", c.target, body)
		}
	}
}

func TestNewErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o644)
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{Mode: "mirror"}, `unknown mode "mirror"`},
		{Config{Mode: "proxy"}, "needs proxy_url"},
		{Config{Mode: "proxy", ProxyURL: "ftp://x"}, "scheme must be http or https"},
		{Config{Mode: "proxy", ProxyURL: "http://"}, "has no host"},
		{Config{Mode: "proxy", ProxyURL: "http://x", Dir: "/tmp"}, "dir is set but mode is proxy"},
		{Config{Mode: "static", ProxyURL: "http://x"}, "proxy_url is set but mode is static"},
		{Config{Dir: filepath.Join(t.TempDir(), "missing")}, "site directory"},
		{Config{Dir: file}, "is not a directory"},
	}
	for _, c := range cases {
		_, err := New(c.cfg, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want %q", c.cfg, err, c.want)
		}
	}
}

func TestHandlerDirect(t *testing.T) {
	site := newSite(t, Config{})
	rec := httptest.NewRecorder()
	site.Handler().ServeHTTP(rec, httptest.NewRequest("HEAD", "/", nil))
	if rec.Code != 200 || rec.Header().Get("Server") != "nginx" || rec.Body.Len() != 0 {
		t.Errorf("HEAD /: %d %q body %d", rec.Code, rec.Header().Get("Server"), rec.Body.Len())
	}
}

func TestCloseEndsConnections(t *testing.T) {
	site := newSite(t, Config{})
	ts := startSite(t, site, nil)
	c := ts.rawTLS(t, "http/1.1")
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	// The connection is now idle (keep-alive); Close must end it.
	site.Close()
	select {
	case <-ts.served:
	case <-time.After(5 * time.Second):
		t.Fatal("ServeConn still running after Site.Close")
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("connection still open after Site.Close")
	}
	// New connections after Close are closed at once.
	c2 := ts.rawTLS(t, "http/1.1")
	readAllBounded(t, c2, 5*time.Second)
}
