package check

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mirage-vpn/mirage/core/auth"
)

// certWarnBefore: a certificate expiring sooner than this is a warning.
const certWarnBefore = 14 * 24 * time.Hour

// config checks the files the config names: users file, certificate,
// REALITY target, fallback.
func (c *checker) config(ctx context.Context) {
	c.r.add("config", "config file", Pass, c.cfg.Path+" is valid", "")
	c.usersFile()
	c.certificate()
	c.realityTarget(ctx)
	c.fallback(ctx)
}

func (c *checker) usersFile() {
	const name = "users file"
	path := c.cfg.ResolvePath(c.cfg.Authentication.UsersFile)
	st, err := os.Stat(path)
	if err != nil {
		c.r.add("config", name, Fail, fmt.Sprintf("[authentication] users_file %s: %v", path, err),
			"create it with `mirage-server users add -f "+path+" NAME`")
		return
	}
	u, err := auth.LoadUsers(path)
	if err != nil {
		c.r.add("config", name, Fail, "[authentication] users_file: "+err.Error(), "fix the line named, or recreate the file with `mirage-server users add`")
		return
	}
	switch mode := st.Mode().Perm(); {
	case mode&0o007 != 0:
		c.r.add("config", name, Fail,
			fmt.Sprintf("%s is readable or writable by every user (mode %04o): anyone on the host can copy the password hashes", path, mode),
			"chmod 600 "+path)
	case mode&0o070 != 0:
		c.r.add("config", name, Warn,
			fmt.Sprintf("%s is group-accessible (mode %04o)", path, mode), "chmod 600 "+path)
	case u.Len() == 0:
		c.r.add("config", name, Warn, path+" has no users: nobody can connect",
			"mirage-server users add -f "+path+" NAME")
	default:
		c.r.add("config", name, Pass, fmt.Sprintf("%s: %d users, mode %04o", path, u.Len(), mode), "")
	}
}

func (c *checker) certificate() {
	const name = "certificate"
	certFile, keyFile := c.cfg.ResolvePath(c.cfg.TLS.CertFile), c.cfg.ResolvePath(c.cfg.TLS.KeyFile)
	if c.cfg.TLS.AutoGenerate {
		if _, err := os.Stat(certFile); errors.Is(err, fs.ErrNotExist) {
			c.r.add("config", name, Pass, certFile+" does not exist yet: auto_generate makes a self-signed one at first start", "")
			return
		}
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		fix := "give a cert_file and key_file that belong together (the key that signed the certificate request)"
		if strings.Contains(err.Error(), "does not match") {
			c.r.add("config", name, Fail, fmt.Sprintf("%s and %s do not match: %v", certFile, keyFile, err), fix)
			return
		}
		c.r.add("config", name, Fail, fmt.Sprintf("load %s / %s: %v", certFile, keyFile, err), fix)
		return
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		c.r.add("config", name, Fail, fmt.Sprintf("%s: %v", certFile, err), "")
		return
	}
	now := c.o.Now()
	switch {
	case now.After(leaf.NotAfter):
		c.r.add("config", name, Fail, fmt.Sprintf("%s expired on %s", certFile, leaf.NotAfter.UTC().Format(time.DateOnly)),
			"renew it (clients pinning it need a new invite)")
		return
	case now.Before(leaf.NotBefore):
		c.r.add("config", name, Fail, fmt.Sprintf("%s is not valid before %s (clock wrong?)", certFile, leaf.NotBefore.UTC().Format(time.DateTime)),
			"check the system clock, or reissue the certificate")
		return
	}
	for _, n := range c.cfg.TLS.ServerNames {
		if err := leaf.VerifyHostname(n); err != nil {
			c.r.add("config", name, Fail,
				fmt.Sprintf("%s does not cover [tls] server_names entry %q (it names %s)", certFile, n, certNames(leaf)),
				"use a certificate for every name in server_names, or remove the name")
			return
		}
	}
	detail := fmt.Sprintf("%s for %s, valid until %s", certFile, certNames(leaf), leaf.NotAfter.UTC().Format(time.DateOnly))
	if left := leaf.NotAfter.Sub(now); left < certWarnBefore {
		c.r.add("config", name, Warn, fmt.Sprintf("%s: expires in %d days", detail, int(left.Hours()/24)), "renew it soon")
		return
	}
	c.r.add("config", name, Pass, detail, "")
}

// certNames lists a certificate's DNS names, else its subject.
func certNames(c *x509.Certificate) string {
	if len(c.DNSNames) > 0 {
		return strings.Join(c.DNSNames, ", ")
	}
	return c.Subject.String()
}

// selfSigned reports whether c is its own issuer and signature (what
// auto_generate makes; CheckSignatureFrom would refuse a non-CA parent).
func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) &&
		c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// realityTarget dials the REALITY target as the server will splice to it
// and checks it speaks TLS 1.3 for target_sni, as REALITY needs.
func (c *checker) realityTarget(ctx context.Context) {
	const name = "reality target"
	if !c.cfg.RealityEnabled() {
		c.r.add("config", name, Skip, "REALITY is off (no [reality] private_key)", "")
		return
	}
	dest, sni := c.cfg.RealityDest(), c.cfg.Reality.TargetSNI
	a := c.tlsProbe(ctx, dest, sni, 0, []string{"h2", "http/1.1"})
	if a.Dial != "" {
		c.r.add("config", name, Fail,
			fmt.Sprintf("%s (target_sni %s) is unreachable from this host: %s; probers would get a dead port", dest, sni, a.Dial),
			"pick a target this host can reach (reality.dest / target_sni), or fix its DNS and routing")
		return
	}
	if a.Err != "" {
		c.r.add("config", name, Fail, fmt.Sprintf("%s answers no TLS for %s: %s", dest, sni, a.Err),
			"pick a target that serves HTTPS for target_sni")
		return
	}
	c.targetOK = true
	if a.Version != tls.VersionTLS13 {
		c.r.add("config", name, Fail, fmt.Sprintf("%s negotiated %s for %s; REALITY needs a TLS 1.3 target", dest, tls.VersionName(a.Version), sni),
			"pick a target that supports TLS 1.3")
		return
	}
	if a.ALPN != "h2" {
		c.r.add("config", name, Warn, fmt.Sprintf("%s speaks TLS 1.3 for %s but not HTTP/2 (ALPN %q); browsers' clients negotiate h2 with big sites", dest, sni, a.ALPN),
			"prefer a target with HTTP/2")
		return
	}
	c.r.add("config", name, Pass, fmt.Sprintf("%s: TLS 1.3, h2, certificate %s", dest, a.Subject), "")
}

// fallback checks what unauthenticated clients of tcp-tls and quic are
// given: the static directory exists, or the proxy URL answers.
func (c *checker) fallback(ctx context.Context) {
	const name = "fallback site"
	f := c.cfg.Fallback
	switch f.Mode {
	case "proxy":
		ctx, cancel := context.WithTimeout(ctx, 2*c.o.Timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.ProxyURL, nil)
		if err != nil {
			c.r.add("config", name, Fail, fmt.Sprintf("proxy_url %q: %v", f.ProxyURL, err), "")
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			c.r.add("config", name, Fail, fmt.Sprintf("proxy_url %s does not answer: %v; probers would get 502 pages", f.ProxyURL, err),
				"point [fallback] proxy_url at a site this host reaches, or use mode = \"static\"")
			return
		}
		resp.Body.Close()
		c.r.add("config", name, Pass, fmt.Sprintf("proxy to %s (answers %s)", f.ProxyURL, resp.Status), "")
	default:
		if f.Dir == "" {
			c.r.add("config", name, Pass, "static: the built-in page", "")
			return
		}
		dir := c.cfg.ResolvePath(f.Dir)
		st, err := os.Stat(dir)
		if err != nil || !st.IsDir() {
			c.r.add("config", name, Fail, fmt.Sprintf("[fallback] dir %s is not a readable directory: %v", dir, err), "create it, or remove dir to use the built-in page")
			return
		}
		if _, err := os.Stat(dir + "/index.html"); err != nil {
			c.r.add("config", name, Warn, dir+" has no index.html: probers asking for / get a 404", "add an index.html")
			return
		}
		c.r.add("config", name, Pass, "static: "+dir, "")
	}
}

// host checks the machine: TUN, forwarding, NAT interfaces, ports.
func (c *checker) host(ctx context.Context) {
	c.ports(ctx) // first: the others read c.running
	c.tunDevice()
	c.forwarding()
	c.natInterfaces()
}

func (c *checker) natInterfaces() {
	const name = "nat interfaces"
	var missing, found []string
	for _, n := range []string{c.cfg.NAT.IPv4Interface, c.cfg.NAT.IPv6Interface} {
		if n == "" {
			continue
		}
		if slices.Contains(found, n) || slices.Contains(missing, n) {
			continue
		}
		if _, err := net.InterfaceByName(n); err != nil {
			missing = append(missing, n)
		} else {
			found = append(found, n)
		}
	}
	switch {
	case len(missing) > 0:
		c.r.add("host", name, Fail, fmt.Sprintf("[nat] names interface %s, which this host does not have", strings.Join(missing, ", ")),
			"set [nat] ipv4_interface / ipv6_interface to the interface with the default route (`ip route show default`), or remove them to masquerade out of every interface")
	case len(found) > 0:
		c.r.add("host", name, Pass, "masquerading out of "+strings.Join(found, ", "), "")
	default:
		c.r.add("host", name, Warn, "no [nat] interface: the server masquerades nothing, so clients reach the server and networks routed to it, not the internet",
			"set [nat] ipv4_interface (and ipv6_interface) to the interface of the default route (`ip route show default`), unless the tunnel network is routed")
	}
}

// ports tells a running server (something answers on the probe address)
// from a stopped one (the ports can be bound), and finds ports held by
// another program.
func (c *checker) ports(ctx context.Context) {
	const name = "ports"
	addr := c.probeAddr()
	d := net.Dialer{Timeout: c.o.Timeout}
	// With NoProbe nothing connects anywhere: the ports are only bound.
	if !c.o.NoProbe {
		if conn, err := d.DialContext(ctx, "tcp", addr); err == nil {
			conn.Close()
			c.running = true
			c.r.add("host", name, Pass, fmt.Sprintf("TCP %s accepts connections (the running server, probed below)", addr), "")
			return
		}
	}
	var busy []string
	ln, err := net.Listen("tcp", c.cfg.ListenAddr())
	if err == nil {
		ln.Close()
	} else if errors.Is(err, syscall.EADDRINUSE) {
		busy = append(busy, "TCP "+c.cfg.ListenAddr())
	} else {
		fix := ""
		if errors.Is(err, syscall.EACCES) {
			fix = "run check as root"
		}
		c.r.add("host", name, Warn, fmt.Sprintf("cannot test TCP %s: %v", c.cfg.ListenAddr(), err), fix)
		return
	}
	if c.cfg.QUIC.Enabled {
		lo, hi := c.cfg.QUICPorts()
		ports := []int{c.cfg.BindPort}
		for p := lo; p <= hi && p-lo < 1024; p++ {
			if p != c.cfg.BindPort {
				ports = append(ports, p)
			}
		}
		for _, p := range ports {
			a := net.JoinHostPort(c.cfg.BindAddress, strconv.Itoa(p))
			pc, err := net.ListenPacket("udp", a)
			if err != nil {
				if errors.Is(err, syscall.EADDRINUSE) {
					busy = append(busy, "UDP "+a)
				}
				continue
			}
			pc.Close()
		}
	}
	switch {
	case len(busy) > 0 && c.o.NoProbe:
		c.r.add("host", name, Warn, fmt.Sprintf("%s in use (the server, or another program: --no-probe does not connect to tell)", strings.Join(busy, ", ")), "")
		return
	case len(busy) > 0:
		c.r.add("host", name, Fail, fmt.Sprintf("%s held by another program (%s does not answer)", strings.Join(busy, ", "), addr),
			"stop the other program (`ss -ltnup`), or change bind_port / [quic] port_range")
		return
	}
	c.r.add("host", name, Pass, fmt.Sprintf("TCP %s free (server not running)", c.cfg.ListenAddr()), "")
}

// probeAddr is where the server is probed.
func (c *checker) probeAddr() string {
	if c.o.Addr != "" {
		return c.o.Addr
	}
	host := c.cfg.BindAddress
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, strconv.Itoa(c.cfg.BindPort))
}

// fingerprint is the hex SHA-256 of a DER certificate, shortened for
// display.
func fingerprint(der []byte) string {
	h := sha256.Sum256(der)
	return hex.EncodeToString(h[:8])
}
