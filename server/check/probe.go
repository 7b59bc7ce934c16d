package check

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/mirage-vpn/mirage/core/transport/reality"
)

// answer is what one TLS probe saw.
type answer struct {
	// Dial is the connect error; "" when the TCP connection opened.
	Dial string
	// Err is how the handshake failed ("alert: ...", "closed", "reset",
	// "timeout", or the error); "" when it completed.
	Err        string
	Version    uint16
	ALPN       string
	Leaf       string // fingerprint of the leaf certificate
	Subject    string // its names
	SelfSigned bool
	// HTTP is "STATUS server=SERVER" of a GET /, or why there is none.
	HTTP string
}

// tlsKey is what must be equal for two TLS answers to look alike.
func (a answer) tlsKey() string {
	if a.Dial != "" {
		return "no connection"
	}
	if a.Err != "" {
		return a.Err
	}
	return fmt.Sprintf("%s, ALPN %q, certificate %s (%s)", tls.VersionName(a.Version), a.ALPN, a.Subject, a.Leaf)
}

func (a answer) String() string {
	if a.Dial != "" || a.Err != "" {
		return a.tlsKey()
	}
	return a.tlsKey() + ", HTTP " + a.HTTP
}

var http11 = []string{"http/1.1"}

// tlsProbe connects to addr, handshakes with Go's TLS client (as scanners
// and curl-like probers do) offering SNI sni (none when ""), TLS up to
// maxVersion (0: 1.3) and alpn, and when that works and HTTP/1.1 was
// agreed, asks GET / for sni.
func (c *checker) tlsProbe(ctx context.Context, addr, sni string, maxVersion uint16, alpn []string) answer {
	var a answer
	ctx, cancel := context.WithTimeout(ctx, 2*c.o.Timeout)
	defer cancel()
	d := net.Dialer{Timeout: c.o.Timeout}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		a.Dial = err.Error()
		return a
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(2 * c.o.Timeout))
	conn := tls.Client(raw, &tls.Config{
		ServerName:         sni,
		InsecureSkipVerify: true, // the certificate is compared, not verified
		MaxVersion:         maxVersion,
		MinVersion:         tls.VersionTLS12,
		NextProtos:         alpn,
	})
	if err := conn.HandshakeContext(ctx); err != nil {
		a.Err = classify(err)
		return a
	}
	st := conn.ConnectionState()
	a.Version, a.ALPN = st.Version, st.NegotiatedProtocol
	if len(st.PeerCertificates) > 0 {
		leaf := st.PeerCertificates[0]
		a.Leaf, a.Subject, a.SelfSigned = fingerprint(leaf.Raw), certNames(leaf), selfSigned(leaf)
	}
	if a.ALPN != "" && a.ALPN != "http/1.1" {
		a.HTTP = "not fetched (" + a.ALPN + ")"
		return a
	}
	host := sni
	if host == "" {
		host, _, _ = net.SplitHostPort(addr)
	}
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\nAccept: */*\r\nConnection: close\r\n\r\n", host)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		a.HTTP = "no response (" + classify(err) + ")"
		return a
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	a.HTTP = fmt.Sprintf("%d server=%q", resp.StatusCode, resp.Header.Get("Server"))
	return a
}

// classify names a handshake or read failure the way a prober tells them
// apart: the alert received, a clean close, a reset, or silence.
func classify(err error) string {
	var alert tls.AlertError
	var ne net.Error
	switch {
	case errors.As(err, &alert):
		return "alert: " + alert.Error()
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "closed"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return err.Error()
}

// probe runs the detectability self-test against the running server.
func (c *checker) probe(ctx context.Context) {
	addr := c.probeAddr()
	if !c.running {
		c.r.add("probe", "detectability", Warn, "nothing answers on "+addr+": the server is not running, so it was not probed",
			"start the server (systemctl start mirage-server) and run check again")
		return
	}
	var tcpAnswer answer
	if c.cfg.RealityEnabled() {
		tcpAnswer = c.probeReality(ctx, addr)
	} else {
		tcpAnswer = c.probeTLS(ctx, addr)
	}
	if c.cfg.QUIC.Enabled {
		c.probeHTTP3(ctx, addr, tcpAnswer)
	} else {
		c.r.add("probe", "HTTP/3", Skip, "[quic] is off", "")
	}
}

// probeReality compares the server's answers with the REALITY target's.
// Every probe without valid credentials must be spliced to the target,
// so all but the no-SNI one (served by tcp-tls) must be identical.
func (c *checker) probeReality(ctx context.Context, addr string) answer {
	dest, sni := c.cfg.RealityDest(), c.cfg.Reality.TargetSNI
	targetSNI := c.tlsProbe(ctx, addr, sni, 0, http11)
	if !c.targetOK {
		c.r.add("probe", "camouflage", Fail,
			"the REALITY target does not answer (see \"reality target\"): probers are spliced to a dead site", "fix the target first")
		return targetSNI
	}
	compare := func(name string, ours, theirs answer, sev Status, fix string) {
		switch {
		case ours.Dial != "":
			c.r.add("probe", name, Fail, fmt.Sprintf("%s: %s", addr, ours.Dial), "")
		case ours.tlsKey() != theirs.tlsKey():
			c.r.add("probe", name, sev, fmt.Sprintf("server: %s; target: %s", ours.tlsKey(), theirs.tlsKey()), fix)
		case ours.HTTP != theirs.HTTP:
			c.r.add("probe", name, Warn, fmt.Sprintf("same TLS; HTTP differs: server %s, target %s (a dynamic site varies; a real difference is a tell)", ours.HTTP, theirs.HTTP),
				"check the target answers the same to repeated requests")
		default:
			c.r.add("probe", name, Pass, "identical to the target: "+ours.String(), "")
		}
	}
	notSpliced := "the server must splice every unauthenticated hello to " + dest + "; check [reality] server_names and [tls] server_names do not overlap, and restart the server after changing them"
	compare("HTTPS, target SNI", targetSNI, c.tlsProbe(ctx, dest, sni, 0, http11), Fail, notSpliced)
	unknown := randomName()
	compare("HTTPS, unknown SNI", c.tlsProbe(ctx, addr, unknown, 0, http11), c.tlsProbe(ctx, dest, unknown, 0, http11), Fail, notSpliced)
	compare("TLS 1.2 only", c.tlsProbe(ctx, addr, sni, tls.VersionTLS12, http11), c.tlsProbe(ctx, dest, sni, tls.VersionTLS12, http11), Fail, notSpliced)

	// No SNI reaches tcp-tls (its clients may send none), so it differs
	// from the target by design; say how visible that is.
	ours, theirs := c.tlsProbe(ctx, addr, "", 0, http11), c.tlsProbe(ctx, dest, "", 0, http11)
	switch {
	case ours.tlsKey() == theirs.tlsKey():
		c.r.add("probe", "HTTPS, no SNI", Pass, "identical to the target: "+ours.String(), "")
	case ours.SelfSigned:
		c.r.add("probe", "HTTPS, no SNI", Warn,
			fmt.Sprintf("a prober connecting by IP gets tcp-tls's self-signed certificate (%s), the target gives %s", ours.Subject, theirs.tlsKey()),
			"use a CA-issued certificate for a domain of yours in [tls] (then it looks like a second site on the address), or have clients use reality only")
	default:
		c.r.add("probe", "HTTPS, no SNI", Warn,
			fmt.Sprintf("a prober connecting by IP gets tcp-tls's certificate (%s), the target gives %s: a second site on this address", ours.Subject, theirs.tlsKey()),
			"acceptable if that certificate's domain serves a plausible site; otherwise have clients use reality only")
	}

	c.garbage(ctx, addr, dest)
	c.replay(ctx, addr, dest, sni)
	return targetSNI
}

// probeTLS checks a server without REALITY: its tcp-tls face is all a
// prober sees, so it must look like an ordinary HTTPS site.
func (c *checker) probeTLS(ctx context.Context, addr string) answer {
	sni := ""
	if len(c.cfg.TLS.ServerNames) > 0 {
		sni = c.cfg.TLS.ServerNames[0]
	}
	a := c.tlsProbe(ctx, addr, sni, 0, http11)
	switch {
	case a.Dial != "" || a.Err != "":
		c.r.add("probe", "HTTPS", Fail, "no TLS from "+addr+": "+a.tlsKey(), "check the server log")
	case !strings.HasPrefix(a.HTTP, "200 ") && !strings.HasPrefix(a.HTTP, "30"):
		c.r.add("probe", "HTTPS", Warn, "a GET / gets "+a.HTTP+": not what a web site answers", "configure [fallback] (static page or proxy_url)")
	case a.SelfSigned:
		c.r.add("probe", "HTTPS", Warn, fmt.Sprintf("probers get a self-signed certificate (%s): a common tell of proxies", a.Subject),
			"use a CA-issued certificate (e.g. Let's Encrypt) for a domain of yours, or enable REALITY")
	default:
		c.r.add("probe", "HTTPS", Pass, "looks like a web site: "+a.String(), "")
	}
	if t12 := c.tlsProbe(ctx, addr, sni, tls.VersionTLS12, http11); t12.Err != "" || t12.Dial != "" {
		c.r.add("probe", "TLS 1.2 only", Warn, "refused: "+t12.tlsKey()+"; most web sites still accept TLS 1.2", "")
	} else {
		c.r.add("probe", "TLS 1.2 only", Pass, "accepted, as most web sites do: "+t12.tlsKey(), "")
	}
	u := c.tlsProbe(ctx, addr, randomName(), 0, http11)
	c.r.add("probe", "HTTPS, unknown SNI", Pass, "answered like a default virtual host: "+u.tlsKey(), "")
	got, end := c.exchange(ctx, addr, garbageBytes())
	c.r.add("probe", "garbage bytes", Pass, fmt.Sprintf("answer %s, then %s (no target to compare with; REALITY would give the target's)", summarize(got), end), "")
	c.r.add("probe", "replayed ClientHello", Skip, "REALITY is off", "")
	return a
}

// garbage sends the same non-TLS bytes to the server and the target.
func (c *checker) garbage(ctx context.Context, addr, dest string) {
	b := garbageBytes()
	ours, oe := c.exchange(ctx, addr, b)
	theirs, te := c.exchange(ctx, dest, b)
	if string(ours) == string(theirs) && oe == te {
		c.r.add("probe", "garbage bytes", Pass, fmt.Sprintf("identical to the target: %s, then %s", summarize(ours), oe), "")
		return
	}
	c.r.add("probe", "garbage bytes", Fail,
		fmt.Sprintf("server: %s then %s; target: %s then %s", summarize(ours), oe, summarize(theirs), te),
		"connections that are not TLS must be spliced to the target: update mirage-server")
}

// replay sends a fresh authenticated ClientHello twice. The first copy
// must get the server's own handshake (a control: the comparison means
// something), the second, a replay, the target's.
func (c *checker) replay(ctx context.Context, addr, dest, sni string) {
	const name = "replayed ClientHello"
	priv, err := c.cfg.RealityPrivateKey()
	if err != nil {
		c.r.add("probe", name, Fail, err.Error(), "")
		return
	}
	pub, err := reality.PublicKey(priv)
	if err != nil {
		c.r.add("probe", name, Fail, err.Error(), "")
		return
	}
	var sid [8]byte
	if b, err := hex.DecodeString(c.cfg.Reality.ShortIDs[0]); err == nil {
		copy(sid[:], b)
	}
	hello, err := reality.AuthenticatedHello(sni, pub, sid, c.o.Now())
	if err != nil {
		c.r.add("probe", name, Fail, err.Error(), "")
		return
	}
	first, _ := c.exchange(ctx, addr, hello)
	second, _ := c.exchange(ctx, addr, hello)
	direct, _ := c.exchange(ctx, dest, hello)
	f, s, d := records(first), records(second), records(direct)
	switch {
	case similar(f, d):
		c.r.add("probe", name, Fail,
			fmt.Sprintf("the running server did not accept a fresh hello made from this config's [reality] keys (answer %s, like the target's)", f),
			"the server runs with another key, short id or clock than "+c.cfg.Path+": restart it, and check the clock (max_time_diff_s)")
	case similar(s, d):
		c.r.add("probe", name, Pass, fmt.Sprintf("the replay got the target's handshake (%s); the first copy got the server's own", s), "")
	default:
		c.r.add("probe", name, Fail, fmt.Sprintf("the replay got %s, the target answers %s", s, d),
			"a replayed hello must be spliced to the target: update mirage-server")
	}
}

// probeHTTP3 asks GET / over HTTP/3 on the QUIC port without credentials.
func (c *checker) probeHTTP3(ctx context.Context, addr string, tcp answer) {
	const name = "HTTP/3"
	sni := c.cfg.Reality.TargetSNI
	if !c.cfg.RealityEnabled() && len(c.cfg.TLS.ServerNames) > 0 {
		sni = c.cfg.TLS.ServerNames[0]
	}
	ctx, cancel := context.WithTimeout(ctx, 2*c.o.Timeout)
	defer cancel()
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}},
		Dial: func(ctx context.Context, _ string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			return quic.DialAddr(ctx, addr, tc, qc)
		},
	}
	defer tr.Close()
	host := sni
	if host == "" {
		host = addr
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		c.r.add("probe", name, Fail, fmt.Sprintf("[quic] is on but UDP %s gives no HTTP/3 answer: %v", addr, err),
			"open the UDP port(s) in the firewall, or turn [quic] off")
		return
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	var leaf *x509.Certificate
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		leaf = resp.TLS.PeerCertificates[0]
	}
	got := fmt.Sprintf("%d server=%q", resp.StatusCode, resp.Header.Get("Server"))
	switch {
	case leaf == nil:
		c.r.add("probe", name, Warn, "answered "+got+" without a certificate", "")
	case c.cfg.RealityEnabled() && fingerprint(leaf.Raw) != tcp.Leaf:
		c.r.add("probe", name, Warn,
			fmt.Sprintf("HTTP/3 for %s answers %s with the server's own certificate (%s), while TCP gives the target's (%s): a prober comparing the two ports can tell", sni, got, certNames(leaf), tcp.Subject),
			"turn [quic] off on a REALITY server, or use tcp-tls and quic with a certificate for your own domain")
	case selfSigned(leaf):
		c.r.add("probe", name, Warn, fmt.Sprintf("answers %s with a self-signed certificate (%s)", got, certNames(leaf)),
			"use a CA-issued certificate for a domain of yours")
	default:
		c.r.add("probe", name, Pass, fmt.Sprintf("answers %s like a web server, certificate %s", got, certNames(leaf)), "")
	}
}

// exchange writes b to addr and reads the answer until the peer closes,
// resets, or stays idle (exchangeIdle after data, or the timeout). end is
// "closed", "reset" or "open".
func (c *checker) exchange(ctx context.Context, addr string, b []byte) (got []byte, end string) {
	d := net.Dialer{Timeout: c.o.Timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, "no connection: " + err.Error()
	}
	defer conn.Close()
	deadline := time.Now().Add(c.o.Timeout)
	conn.SetDeadline(deadline)
	if _, err := conn.Write(b); err != nil {
		return nil, classify(err)
	}
	buf := make([]byte, 16<<10)
	for {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			switch e := classify(err); e {
			case "timeout":
				return got, "open"
			default:
				return got, e
			}
		}
		if n > 0 {
			next := time.Now().Add(exchangeIdle)
			if next.After(deadline) {
				next = deadline
			}
			conn.SetReadDeadline(next)
		}
	}
}

// exchangeIdle ends a read once the peer has sent its flight and waits.
const exchangeIdle = 500 * time.Millisecond

// records describes a TLS answer's record structure: "22/122,20/1,23/2504".
func records(b []byte) string {
	var recs []string
	for len(b) >= 5 {
		n := int(b[3])<<8 | int(b[4])
		recs = append(recs, fmt.Sprintf("%d/%d", b[0], n))
		if len(b) < 5+n {
			break
		}
		b = b[5+n:]
	}
	if len(recs) == 0 {
		return "none"
	}
	return strings.Join(recs, ",")
}

// similar compares two record structures: same record types, lengths
// within a few bytes (ECDSA signatures vary in length by a byte or two).
func similar(a, b string) bool {
	if a == "none" || b == "none" {
		return a == b
	}
	ra, rb := strings.Split(a, ","), strings.Split(b, ",")
	if len(ra) != len(rb) {
		return false
	}
	for i := range ra {
		var ta, la, tb, lb int
		fmt.Sscanf(ra[i], "%d/%d", &ta, &la)
		fmt.Sscanf(rb[i], "%d/%d", &tb, &lb)
		if ta != tb || la-lb > 8 || lb-la > 8 {
			return false
		}
	}
	return true
}

// summarize shows an answer briefly: its size and first bytes.
func summarize(b []byte) string {
	if len(b) == 0 {
		return "nothing"
	}
	return fmt.Sprintf("%d bytes (%x)", len(b), b[:min(len(b), 8)])
}

// garbageBytes are 512 random bytes that do not start like TLS.
func garbageBytes() []byte {
	b := make([]byte, 512)
	rand.Read(b)
	b[0] = 'Q' // not 0x16: no TLS record
	return b
}

// randomName is a host name nobody serves.
func randomName() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "www." + hex.EncodeToString(b) + ".com"
}
