//go:build linux

package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The REALITY tests: the server imitates realityTarget, served by a
// stand-in site in host (its own CA, a certificate for the name) that every
// unauthenticated connection is spliced to.
const (
	realityTarget = "www.example.com"
	realityPort   = 443
	siteTimeout   = 5 * time.Minute
)

// siteAddr is the stand-in's endpoint, also the server's --reality-dest.
func siteAddr() string { return net.JoinHostPort(hostAddr, fmt.Sprint(realityPort)) }

// standIn is the running stand-in site.
type standIn struct {
	p      *proc
	caFile string   // root CA, for curl --cacert and openssl -CAfile
	chain  []string // the PEM blocks it serves: leaf, intermediate
}

// startStandIn makes a CA hierarchy and runs the site role in host.
func startStandIn(t *testing.T, tp *topology) *standIn {
	t.Helper()
	dir := t.TempDir()
	caFile, certFile, keyFile, chain := makeSiteCerts(t, dir)
	st := &standIn{caFile: caFile, chain: chain}
	st.p = startRole(t, tp.HOST, "stand-in-site", "site", siteAddr(), certFile, keyFile, siteTimeout.String())
	if _, err := st.p.waitLines(matchLine("ready"), 1, 5*time.Second); err != nil {
		t.Fatalf("stand-in site: %v", err)
	}
	return st
}

// peers counts the connections the site accepted from ip.
func (st *standIn) peers(ip string) int {
	return strings.Count(st.p.Stdout(), "peer="+ip+"\n")
}

// waitPeers waits until the site has accepted at least n connections from ip.
func (st *standIn) waitPeers(t *testing.T, ip string, n int, what string) {
	t.Helper()
	if _, err := st.p.waitLines(matchLine("peer="+ip), n, 3*time.Second); err != nil {
		t.Errorf("%s: the stand-in site did not see the spliced connection from %s: %v", what, ip, err)
	}
}

// makeSiteCerts writes a root CA, an intermediate and an RSA leaf for
// realityTarget (RSA: its CertificateVerify has a fixed length, so the
// site's handshake records have fixed lengths). It returns the root's PEM
// file, the served chain (leaf + intermediate) and the leaf key files, and
// the chain's PEM blocks.
func makeSiteCerts(t *testing.T, dir string) (caFile, certFile, keyFile string, chain []string) {
	t.Helper()
	now := time.Now()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("stand-in certificates: %v", err)
		}
	}
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1001),
		Subject:      pkix.Name{CommonName: "E2E Example Root CA", Organization: []string{"Example Trust"}},
		NotBefore:    now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	must(err)
	root, err := x509.ParseCertificate(rootDER)
	must(err)

	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	interTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1002),
		Subject:      pkix.Name{CommonName: "E2E Example Issuing CA", Organization: []string{"Example Trust"}},
		NotBefore:    now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	interDER, err := x509.CreateCertificate(rand.Reader, interTmpl, root, &interKey.PublicKey, rootKey)
	must(err)
	inter, err := x509.ParseCertificate(interDER)
	must(err)

	leafKey, err := rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1003),
		Subject:      pkix.Name{CommonName: realityTarget},
		DNSNames:     []string{realityTarget},
		NotBefore:    now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, inter, &leafKey.PublicKey, interKey)
	must(err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	must(err)

	enc := func(typ string, der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}
	chain = []string{strings.TrimSpace(enc("CERTIFICATE", leafDER)), strings.TrimSpace(enc("CERTIFICATE", interDER))}
	caFile = filepath.Join(dir, "ca.pem")
	certFile = filepath.Join(dir, "site-chain.pem")
	keyFile = filepath.Join(dir, "site-key.pem")
	must(os.WriteFile(caFile, []byte(enc("CERTIFICATE", rootDER)), 0o644))
	must(os.WriteFile(certFile, []byte(enc("CERTIFICATE", leafDER)+enc("CERTIFICATE", interDER)), 0o644))
	must(os.WriteFile(keyFile, []byte(enc("PRIVATE KEY", keyDER)), 0o600))
	return caFile, certFile, keyFile, chain
}

// startRealityServer is startGeneratedServer with REALITY imitating
// realityTarget and splicing to the stand-in. With a non-nil edit, the
// server is stopped after generating its data dir, edit is applied to
// server.toml and the server restarted from it.
func startRealityServer(t *testing.T, tp *topology, edit func(m map[string]any)) *mserver {
	t.Helper()
	b := bins(t)
	dir := t.TempDir()
	s := &mserver{tp: tp, dataDir: filepath.Join(dir, "server"), stateDir: filepath.Join(dir, "state")}
	s.p = startProc(t, tp.SRV, "mirage-server", procOpts{}, b.Server, "run",
		"--data-dir", s.dataDir, "--state-dir", s.stateDir,
		"--bind", srvAddr,
		"--port", fmt.Sprint(srvPort),
		"--host", srvAddr,
		"--tunnel-network", tunNet4,
		"--tunnel-network-v6", tunNet6,
		"--nat-interface", srvHostIf,
		"--reality-target", realityTarget,
		"--reality-dest", siteAddr(),
	)
	s.starts++
	s.waitListening(t)
	if !strings.Contains(s.p.Stderr(), "reality enabled") {
		t.Errorf("server generated with --reality-target did not log \"reality enabled\"; stderr:\n%s", tail(s.p.Stderr(), 20))
	}
	if edit != nil {
		s.stop(t)
		m := readTOML(t, s.configPath())
		edit(m)
		writeTOML(t, s.configPath(), m)
		s.restart(t)
	}
	return s
}

// realityClient writes a copy of the generated profile with only the
// listed protocols enabled and edit applied.
func realityClient(t *testing.T, s *mserver, protos []string, edit func(m map[string]any)) string {
	t.Helper()
	return derivedClient(t, s, func(m map[string]any) {
		table(m, "connection")["enabled_protocols"] = protos
		if edit != nil {
			edit(m)
		}
	})
}

// keygen runs "mirage-server keygen" and returns a fresh public key and
// short id.
func keygen(t *testing.T) (pub, shortID string) {
	t.Helper()
	out, e, code := runBin(t, "", "", bins(t).Server, "keygen")
	if code != 0 {
		t.Fatalf("mirage-server keygen: status %d\n%s%s", code, out, e)
	}
	pubRE := regexp.MustCompile(`(?m)^public_key = "([^"]+)"$`)
	sidRE := regexp.MustCompile(`(?m)^short_ids = \["([0-9a-f]+)"\]$`)
	pm, sm := pubRE.FindStringSubmatch(out), sidRE.FindStringSubmatch(out)
	if pm == nil || sm == nil {
		t.Fatalf("mirage-server keygen: no public_key / short_ids lines:\n%s", out)
	}
	return pm[1], sm[1]
}

// curlSite fetches https://www.example.com/ from ns with the name resolved
// to ip and the stand-in's CA as the only trust anchor; it returns the body
// followed by a "status=N" line.
func curlSite(t *testing.T, ns, ip, caFile string) string {
	t.Helper()
	out, e, code, timedOut := runBinTimeout(t, 20*time.Second, ns, "", "curl", "-sS", "--noproxy", "*",
		"--max-time", "10", "--cacert", caFile,
		"--resolve", fmt.Sprintf("%s:%d:%s", realityTarget, realityPort, ip),
		"-w", "\nstatus=%{http_code}\n", "https://"+realityTarget+"/")
	if timedOut || code != 0 {
		t.Fatalf("curl https://%s/ resolved to %s from %s: status %d (timed out: %v)\n%s%s", realityTarget, ip, ns, code, timedOut, out, e)
	}
	return out
}

var pemRE = regexp.MustCompile(`(?s)-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----`)

// sClient runs "openssl s_client -showcerts" against addr from ns, with
// servername as SNI ("" for none), and returns the certificate PEM blocks
// it printed and the whole output.
func sClient(t *testing.T, ns, addr, servername, caFile string) ([]string, string) {
	t.Helper()
	argv := []string{"openssl", "s_client", "-connect", addr, "-showcerts"}
	if servername != "" {
		argv = append(argv, "-servername", servername)
	} else {
		argv = append(argv, "-noservername")
	}
	if caFile != "" {
		argv = append(argv, "-CAfile", caFile)
	}
	out, e, code, timedOut := runBinTimeout(t, 20*time.Second, ns, "", argv...)
	if timedOut || code != 0 {
		t.Fatalf("%s (in %s): status %d (timed out: %v)\n%s%s", strings.Join(argv, " "), ns, code, timedOut, tail(out, 30), e)
	}
	return pemRE.FindAllString(out, -1), out
}

// debugLog sets [log] level = "debug" in server.toml, so the server logs
// why it did not authenticate a hello.
func debugLog(m map[string]any) { table(m, "log")["level"] = "debug" }

// realitySetup builds a topology with the stand-in site and a REALITY
// server (edit as for startRealityServer).
func realitySetup(t *testing.T, edit func(m map[string]any)) (*topology, *standIn, *mserver) {
	t.Helper()
	tp := newTopology(t)
	st := startStandIn(t, tp)
	s := startRealityServer(t, tp, edit)
	return tp, st, s
}

// The generated REALITY profile connects with transport=reality; ping (v4,
// v6, NAT) and a TCP transfer work through it.
func TestE2ERealityTraffic(t *testing.T) {
	tp, _, s := realitySetup(t, nil)

	sc := readTOML(t, s.configPath())
	r := table(sc, "reality")
	if r["target_sni"] != realityTarget || r["dest"] != siteAddr() || r["private_key"] == nil || r["short_ids"] == nil {
		t.Errorf("generated server.toml [reality] = %v; want private_key, target_sni %q, dest %q, short_ids", r, realityTarget, siteAddr())
	}
	cc := readTOML(t, s.clientPath())
	if got := fmt.Sprint(table(cc, "connection")["enabled_protocols"]); got != "[reality tcp-tls]" {
		t.Errorf("generated client.toml enabled_protocols = %s, want [reality tcp-tls]", got)
	}
	cr := table(cc, "reality")
	if cr["public_key"] == nil || cr["target_sni"] != realityTarget || fmt.Sprint(cr["short_ids"]) != fmt.Sprint(r["short_ids"]) {
		t.Errorf("generated client.toml [reality] = %v; want public_key, target_sni %q, short_ids %v", cr, realityTarget, r["short_ids"])
	}
	if raw, _ := os.ReadFile(s.clientPath()); r["private_key"] != nil && strings.Contains(string(raw), fmt.Sprint(r["private_key"])) {
		t.Errorf("the client profile contains the server's REALITY private key")
	}

	_, line := connect(t, tp, s)
	if got := connectedField(line, "transport"); got != "reality" {
		t.Fatalf("generated REALITY profile connected with transport=%q, want reality: %s", got, line)
	}
	for _, c := range []struct{ name, addr string }{
		{"server-tunnel-v4", tunSrv4},
		{"server-tunnel-v6", tunSrv6},
		{"host-via-nat-v4", hostAddr},
	} {
		if err := ping(tp.CLI, c.addr); err != nil {
			t.Errorf("%s: ping %s through the REALITY tunnel: %v", c.name, c.addr, err)
		}
	}
	checkTransfer(t, tp.SRV, tp.CLI, tunSrv4, 16<<20, 60*time.Second)
}

// Probers that are not REALITY clients talk to the real site: curl and
// openssl against the server's address get exactly what they get from the
// site itself.
func TestE2ERealityProbers(t *testing.T) {
	for _, tool := range []string{"curl", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipOrFail(t, "REALITY prober test needs %s in PATH (Debian package %s): %v", tool, tool, err)
		}
	}
	tp, st, s := realitySetup(t, nil)

	before := st.peers(srvHostAddr)
	via := curlSite(t, tp.CLI, srvAddr, st.caFile)
	st.waitPeers(t, srvHostAddr, before+1, "curl via the server")
	direct := curlSite(t, tp.SRV, hostAddr, st.caFile)
	t.Logf("curl via the server:\n%s", via)
	if !strings.Contains(via, "stand-in-site-7c1e") || !strings.HasSuffix(via, "\nstatus=200\n") {
		t.Errorf("curl https://%s/ via the server (%s): not the stand-in's page with status 200:\n%s", realityTarget, srvAddr, via)
	}
	if via != direct {
		t.Errorf("curl via the server and directly differ:\n--- via %s\n%s--- direct %s\n%s", srvAddr, via, hostAddr, direct)
	}

	before = st.peers(srvHostAddr)
	viaCerts, viaOut := sClient(t, tp.CLI, serverEndpoint(), realityTarget, st.caFile)
	st.waitPeers(t, srvHostAddr, before+1, "openssl via the server")
	directCerts, _ := sClient(t, tp.SRV, siteAddr(), realityTarget, st.caFile)
	if !slices.Equal(viaCerts, st.chain) {
		t.Errorf("openssl s_client -servername %s via the server: got %d certificates, want the stand-in's chain (%d):\n%s",
			realityTarget, len(viaCerts), len(st.chain), tail(viaOut, 40))
	}
	if !slices.Equal(viaCerts, directCerts) {
		t.Errorf("certificate chain via the server differs from the site's own")
	}
	if !strings.Contains(viaOut, "Verify return code: 0 (ok)") {
		t.Errorf("the chain seen via the server does not verify against the stand-in's CA:\n%s", tail(viaOut, 40))
	}
	if s.p.exited() {
		t.Errorf("server exited: status %d", s.p.exitStatus)
	}
}

// Bad REALITY clients never connect and keep retrying; the server stays up
// and splices them, garbage and unknown SNIs to the site.
func TestE2ERealityBadClients(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		skipOrFail(t, "needs openssl in PATH (Debian package openssl): %v", err)
	}
	tp, st, s := realitySetup(t, debugLog)
	wrongPub, wrongSID := keygen(t)
	good := readTOML(t, s.clientPath())
	goodSID := fmt.Sprint(table(good, "reality")["short_ids"])
	if strings.Contains(goodSID, wrongSID) {
		t.Fatalf("keygen made the same short id %s as the server's", wrongSID)
	}

	cases := []struct {
		name, key, value, serverReason string
	}{
		{"wrong-public-key", "public_key", wrongPub, "session id does not authenticate"},
		{"wrong-short-id", "short_ids", wrongSID, "unknown short id"},
	}
	before := tp.snapshot(t)
	spliced := st.peers(srvHostAddr)
	var clients []*mclient
	for i, c := range cases {
		conf := realityClient(t, s, []string{"reality"}, func(m map[string]any) {
			if c.key == "short_ids" {
				table(m, "reality")[c.key] = []string{c.value}
			} else {
				table(m, "reality")[c.key] = c.value
			}
			table(m, "network")["interface_name"] = fmt.Sprintf("mbad%d", i)
		})
		cl := startClient(t, tp, conf)
		cl.p.name = "mirage-helper-" + c.name
		clients = append(clients, cl)
	}
	const watch = 5 * time.Second
	time.Sleep(watch)
	for i, c := range cases {
		cl := clients[i]
		t.Run(c.name, func(t *testing.T) {
			if cl.p.exited() {
				t.Errorf("client exited with status %d; a bad REALITY key must be retried, not fatal; stderr:\n%s", cl.p.exitStatus, tail(cl.p.Stderr(), 20))
			}
			if connectedRE.MatchString(cl.p.Stdout()) || strings.Contains(cl.p.Stdout(), "\nconnected") {
				t.Errorf("client connected:\n%s", cl.p.Stdout())
			}
			stderr := cl.p.Stderr()
			if !strings.Contains(stderr, "did not prove the shared key") {
				t.Errorf("client log does not say the server did not prove the key:\n%s", tail(stderr, 20))
			}
			if n := strings.Count(stderr, "connect failed"); n < 2 {
				t.Errorf("client tried %d times in %v, want it to keep retrying:\n%s", n, watch, tail(stderr, 20))
			}
			if !strings.Contains(s.p.Stderr(), c.serverReason) {
				t.Errorf("server debug log does not give the reason %q for refusing the hello", c.serverReason)
			}
		})
	}
	if got := st.peers(srvHostAddr); got < spliced+len(cases) {
		t.Errorf("the stand-in saw %d spliced connections during the bad clients, want at least %d", got-spliced, len(cases))
	}
	if n := strings.Count(s.p.Stderr(), "reality client authenticated"); n != 0 {
		t.Errorf("server authenticated %d REALITY hellos from bad clients", n)
	}
	for _, cl := range clients {
		cl.p.signal(syscall.SIGTERM)
		if code, err := cl.p.wait(stopTimeout); err != nil || code != 0 {
			t.Errorf("%s after SIGTERM: status %d, %v", cl.p.name, code, err)
		}
	}
	for _, d := range before.diff(tp.snapshot(t)) {
		t.Errorf("clients that never connected changed cli's network state: %s", d)
	}

	// Garbage gets the site's answer byte for byte.
	for _, g := range []struct{ name, hex string }{
		{"binary", "00e1f2a3b4"},
		{"http-on-tls-port", hex.EncodeToString([]byte("GET /"))},
		{"tls-not-a-hello", "1603010008" + "6300000401020304"},
	} {
		t.Run("garbage-"+g.name, func(t *testing.T) {
			n := st.peers(srvHostAddr)
			via, err := roleOutput(t, tp.CLI, 20*time.Second, "rawsend", serverEndpoint(), g.hex, "5s")
			if err != nil {
				t.Fatal(err)
			}
			st.waitPeers(t, srvHostAddr, n+1, "garbage "+g.name)
			direct, err := roleOutput(t, tp.SRV, 20*time.Second, "rawsend", siteAddr(), g.hex, "5s")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("via the server: %s  directly: %s", strings.TrimSpace(via), strings.TrimSpace(direct))
			if gotBytes(via) != gotBytes(direct) {
				t.Errorf("garbage %s: the server answered %s, the site answers %s", g.hex, strings.TrimSpace(via), strings.TrimSpace(direct))
			}
		})
	}
	if g := gotBytes(mustRole(t, tp.CLI, "rawsend", serverEndpoint(), hex.EncodeToString([]byte("GET /")), "5s")); !strings.Contains(string(mustHex(t, g)), "400 Bad Request") {
		t.Errorf("plain HTTP on the port: want the site's 400 answer, got %q", mustHex(t, g))
	}

	// An SNI that is neither REALITY's nor tcp-tls's is spliced too.
	t.Run("unknown-sni", func(t *testing.T) {
		n := st.peers(srvHostAddr)
		certs, out := sClient(t, tp.CLI, serverEndpoint(), "other.example.org", "")
		st.waitPeers(t, srvHostAddr, n+1, "unknown SNI")
		if !slices.Equal(certs, st.chain) {
			t.Errorf("openssl s_client -servername other.example.org: not the stand-in's chain:\n%s", tail(out, 40))
		}
	})

	if s.p.exited() {
		t.Fatalf("server died: status %d; stderr:\n%s", s.p.exitStatus, tail(s.p.Stderr(), 30))
	}
	// The server still serves a good client: a user added now, with the
	// profile "mirage-server invite" makes (REALITY first).
	srvBin := bins(t).Server
	const pass = "carol-e2e-Secret-7"
	if o, e, code := runBin(t, "", pass+"\n", srvBin, "users", "add", "-f", s.usersPath(), "carol"); code != 0 {
		t.Fatalf("users add: status %d\n%s%s", code, o, e)
	}
	s.p.signal(syscall.SIGHUP)
	if !waitFor(5*time.Second, func() bool { return strings.Contains(s.p.Stderr(), "users reloaded") }) {
		t.Fatalf("server did not log \"users reloaded\" after SIGHUP")
	}
	inv, e, code := runBin(t, "", pass+"\n", srvBin, "invite", "-c", s.configPath(), "--user", "carol", "--host", serverEndpoint())
	if code != 0 {
		t.Fatalf("invite: status %d\n%s", code, e)
	}
	conf := filepath.Join(t.TempDir(), "carol.toml")
	if err := os.WriteFile(conf, []byte(inv), 0o600); err != nil {
		t.Fatal(err)
	}
	m := readTOML(t, conf)
	if got := fmt.Sprint(table(m, "connection")["enabled_protocols"]); got != "[reality tcp-tls]" {
		t.Errorf("invite of a REALITY server: enabled_protocols = %s, want [reality tcp-tls]", got)
	}
	if got, want := fmt.Sprint(table(m, "reality")), fmt.Sprint(table(good, "reality")); got != want {
		t.Errorf("invite [reality] = %s, want the generated profile's %s", got, want)
	}
	c := startClient(t, tp, conf)
	line := c.waitConnected(t, 1, connectTimeout)
	t.Logf("invited client: %s", line)
	if got := connectedField(line, "transport"); got != "reality" {
		t.Errorf("invited client after the bad ones: transport=%q, want reality", got)
	}
	waitPing(t, tp.CLI, tunSrv4, 5*time.Second)
}

// waitFor polls cond every 50 ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// gotBytes extracts the got=HEX field of a rawsend line.
func gotBytes(line string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "got="); ok {
			return v
		}
	}
	return "(no got= field in " + strings.TrimSpace(line) + ")"
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("hex %q: %v", s, err)
	}
	return b
}

func mustRole(t *testing.T, ns, role string, args ...string) string {
	t.Helper()
	out, err := roleOutput(t, ns, 20*time.Second, role, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// REALITY and tcp-tls share the port: while a REALITY client is connected,
// TLS without SNI or with a [tls] server_names name gets the server's own
// certificate and web site; then a tcp-tls-only profile connects with
// transport=tcp-tls.
func TestE2ERealityAndTCPTLSOnePort(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		skipOrFail(t, "needs openssl in PATH (Debian package openssl): %v", err)
	}
	const tlsName = "vpn.example.net"
	tp, st, s := realitySetup(t, func(m map[string]any) {
		table(m, "tls")["server_names"] = []string{tlsName}
	})
	before := tp.snapshot(t)

	rc, line := connect(t, tp, s)
	if got := connectedField(line, "transport"); got != "reality" {
		t.Fatalf("REALITY profile: transport=%q, want reality", got)
	}

	// tcp-tls answers on the same port meanwhile.
	sc := readTOML(t, s.configPath())
	certFile := fmt.Sprint(table(sc, "tls")["cert_file"])
	if !filepath.IsAbs(certFile) {
		certFile = filepath.Join(s.dataDir, certFile)
	}
	own, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	ownPEM := pemRE.FindString(string(own))
	n := st.peers(srvHostAddr)
	for _, sni := range []string{"", tlsName, strings.ToUpper(tlsName)} {
		certs, out := sClient(t, tp.CLI, serverEndpoint(), sni, "")
		if len(certs) == 0 || certs[0] != ownPEM {
			t.Errorf("TLS with SNI %q on the shared port: want tcp-tls with the server's own certificate %s, got:\n%s", sni, certFile, tail(out, 30))
		}
	}
	page, err := roleOutput(t, tp.CLI, 20*time.Second, "https", "https://"+serverEndpoint()+"/", "10s")
	if err != nil || !strings.HasPrefix(page, "status=200\n") || strings.Contains(page, "stand-in-site-7c1e") {
		t.Errorf("HTTPS without SNI: want the server's own fallback site with status 200, got %v:\n%s", err, tail(page, 15))
	}
	if got := st.peers(srvHostAddr); got != n {
		t.Errorf("%d tcp-tls connections were spliced to the stand-in", got-n)
	}
	if err := ping(tp.CLI, tunSrv4); err != nil {
		t.Errorf("REALITY session after the tcp-tls probes: %v", err)
	}

	rc.p.signal(syscall.SIGTERM)
	if code, err := rc.p.wait(stopTimeout); err != nil || code != 0 {
		t.Fatalf("REALITY client after SIGTERM: status %d, %v", code, err)
	}
	for _, d := range before.diff(tp.snapshot(t)) {
		t.Errorf("REALITY client left state behind: %s", d)
	}

	conf := realityClient(t, s, []string{"tcp-tls"}, nil)
	tc := startClient(t, tp, conf)
	line = tc.waitConnected(t, 1, connectTimeout)
	t.Logf("tcp-tls client: %s", line)
	if got := connectedField(line, "transport"); got != "tcp-tls" {
		t.Errorf("tcp-tls profile: transport=%q, want tcp-tls", got)
	}
	waitPing(t, tp.CLI, tunSrv4, 5*time.Second)
	if err := ping(tp.CLI, tunSrv6); err != nil {
		t.Errorf("ping %s over tcp-tls: %v", tunSrv6, err)
	}
}

// A profile with REALITY first falls back to tcp-tls against a server
// without REALITY.
func TestE2ERealityFallback(t *testing.T) {
	tp := newTopology(t)
	s := startGeneratedServer(t, tp)
	pub, sid := keygen(t)
	conf := realityClient(t, s, []string{"reality", "tcp-tls"}, func(m map[string]any) {
		r := table(m, "reality")
		r["public_key"] = pub
		r["short_ids"] = []string{sid}
		r["target_sni"] = realityTarget
	})
	c := startClient(t, tp, conf)
	line := c.waitConnected(t, 1, connectTimeout)
	t.Logf("client: %s", line)
	if got := connectedField(line, "transport"); got != "tcp-tls" {
		t.Errorf("transport=%q, want tcp-tls after REALITY failed", got)
	}
	waitPing(t, tp.CLI, tunSrv4, 5*time.Second)
	stderr := c.p.Stderr()
	failRE := regexp.MustCompile(`(?m)^.*transport=reality.*did not prove the shared key.*$`)
	if m := failRE.FindString(stderr); m == "" {
		t.Errorf("client log does not report the REALITY attempt failing:\n%s", tail(stderr, 20))
	} else {
		t.Logf("REALITY attempt: %s", m)
	}
}

// A ClientHello recorded on the path and replayed is refused as a replay
// and spliced: the prober gets the site's handshake, not the server's. A
// control shows the comparison means something: a captured hello that
// never reached the server is authenticated when first sent, and the
// server's own handshake has another record structure than the site's.
func TestE2ERealityReplay(t *testing.T) {
	tp, st, s := realitySetup(t, debugLog)
	authRE := regexp.MustCompile(`reality client authenticated`)
	auths := func() int { return len(authRE.FindAllString(s.p.Stderr(), -1)) }
	records := func(s string) string { f := strings.Fields(s); return strings.Join(f[:min(2, len(f))], " ") }
	profile := func(addr string) string {
		return realityClient(t, s, []string{"reality"}, func(m map[string]any) {
			m["connection_string"] = addr
			n := table(m, "network")
			n["routes"] = []string{"198.51.100.0/24", "fd00:6d:1::/64"}
			n["set_dns"] = false
		})
	}
	startRelay := func(name, addr, file string, extra ...string) *proc {
		p := startRole(t, tp.RTR, name, "relay", append([]string{addr, serverEndpoint(), file, "120s"}, extra...)...)
		if _, err := p.waitLines(matchLine("ready"), 1, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// Control: a hello captured by a relay that does not forward it.
	freshFile := filepath.Join(t.TempDir(), "fresh.bin")
	dropAddr := net.JoinHostPort(rtrCliAddr, "8444")
	drop := startRelay("relay-drop", dropAddr, freshFile, "drop")
	dc := startClient(t, tp, profile(dropAddr))
	if _, err := drop.waitLines(regexp.MustCompile(`^captured bytes=\d+$`), 1, 10*time.Second); err != nil {
		t.Fatalf("capturing relay: %v", err)
	}
	dc.p.signal(syscall.SIGTERM)
	if code, err := dc.p.wait(stopTimeout); err != nil || code != 0 {
		t.Fatalf("client of the capturing relay after SIGTERM: status %d, %v", code, err)
	}
	direct := strings.TrimSpace(mustRole(t, tp.SRV, "replay", siteAddr(), freshFile, "10s"))
	n, a := st.peers(srvHostAddr), auths()
	fresh := strings.TrimSpace(mustRole(t, tp.CLI, "replay", serverEndpoint(), freshFile, "10s"))
	t.Logf("control, fresh hello to the server: %s", fresh)
	t.Logf("control, same hello to the site:    %s", direct)
	if auths() != a+1 {
		t.Fatalf("control: the server did not authenticate a fresh captured hello; the replay check below would prove nothing")
	}
	if st.peers(srvHostAddr) != n {
		t.Errorf("control: the fresh hello was spliced to the site")
	}
	if !strings.HasPrefix(fresh, "records=22/") || records(fresh) == records(direct) {
		t.Fatalf("control: the server's own handshake has the same record structure as the site's; the comparison below would prove nothing")
	}

	// Replay of a hello a real client used, recorded on the path.
	relayAddr := net.JoinHostPort(rtrCliAddr, "8443")
	helloFile := filepath.Join(t.TempDir(), "hello.bin")
	relay := startRelay("relay", relayAddr, helloFile)
	c := startClient(t, tp, profile(relayAddr))
	line := c.waitConnected(t, 1, connectTimeout)
	t.Logf("client through the relay: %s", line)
	if got := connectedField(line, "transport"); got != "reality" {
		t.Fatalf("transport=%q, want reality", got)
	}
	waitPing(t, tp.CLI, tunSrv4, 5*time.Second)
	if _, err := relay.waitLines(regexp.MustCompile(`^captured bytes=\d+$`), 1, 2*time.Second); err != nil {
		t.Fatalf("relay: %v", err)
	}
	authBefore := auths()
	if authBefore < 2 {
		t.Fatalf("server did not log \"reality client authenticated\" for the relayed client")
	}

	n = st.peers(srvHostAddr)
	via := strings.TrimSpace(mustRole(t, tp.CLI, "replay", serverEndpoint(), helloFile, "10s"))
	st.waitPeers(t, srvHostAddr, n+1, "replayed hello")
	direct = strings.TrimSpace(mustRole(t, tp.SRV, "replay", siteAddr(), helloFile, "10s"))
	t.Logf("replay via the server: %s", via)
	t.Logf("same hello to the site: %s", direct)
	if !strings.HasPrefix(via, "records=22/") || !strings.Contains(via, " first_msg=2 ") {
		t.Errorf("replayed hello: want a TLS ServerHello first, got %s", via)
	}
	if records(via) != records(direct) {
		t.Errorf("replayed hello: the server's answer has another record structure than the site's:\n via:    %s\n direct: %s", via, direct)
	}
	if got := auths(); got != authBefore {
		t.Errorf("server authenticated the replayed hello (%d authentications, %d before)", got, authBefore)
	}
	if !strings.Contains(s.p.Stderr(), "replayed") {
		t.Errorf("server debug log does not name the replay as the reason")
	}
	if err := ping(tp.CLI, tunSrv4); err != nil {
		t.Errorf("the real client's session after the replay: %v", err)
	}
	if k := len(regexp.MustCompile(`(?m)^connected\b`).FindAllString(c.p.Stdout(), -1)); k != 1 {
		t.Errorf("the real client connected %d times; the replay must not disturb it", k)
	}
}
