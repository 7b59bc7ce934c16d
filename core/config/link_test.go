package config

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/mirage-vpn/mirage/core/wire"
)

// linkNorm is what ParseLink(c.Link()) must equal: c normalised, without
// Path, with a nil routes list replaced by its default.
func linkNorm(c *Client) *Client {
	n := c.cloneForLink()
	n.normalize()
	n.Path = ""
	if n.Network.Routes == nil {
		n.Network.Routes = DefaultRoutes()
	}
	return n
}

// roundTrip checks ParseLink(c.Link()) against c and returns the link.
func roundTrip(t *testing.T, c *Client) string {
	t.Helper()
	l, err := c.Link()
	if err != nil {
		t.Fatalf("Link: %v\nconfig: %+v", err, c)
	}
	got, err := ParseLink(l)
	if err != nil {
		t.Fatalf("ParseLink(%s): %v", l, err)
	}
	if want := linkNorm(c); !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip of %s:\n got %+v\nwant %+v", l, got, want)
	}
	return l
}

func TestLinkExamples(t *testing.T) {
	for _, f := range exampleFiles(t, "client") {
		c, err := LoadClient(f)
		if err != nil {
			t.Fatal(err)
		}
		c.TLS.CAFile = ""
		l := roundTrip(t, c)
		t.Logf("%s: %s", f, l)
		if !strings.HasPrefix(l, "mirage://myuser:mypassword@") {
			t.Errorf("%s: unexpected link %s", f, l)
		}
	}
}

// The common case is short and readable, and the exact format is stable.
func TestLinkFormat(t *testing.T) {
	c := DefaultClient()
	c.ConnectionString = "203.0.113.7:443"
	c.Authentication.Username = "alice"
	c.Authentication.Password = "pa ss:w/rd@#?&=%+é"
	c.TLS.PinnedSHA256 = strings.Repeat("AB:", 31) + "AB"
	l, err := c.Link()
	if err != nil {
		t.Fatal(err)
	}
	want := "mirage://alice:pa%20ss%3Aw%2Frd%40%23%3F&=%25+%C3%A9@203.0.113.7:443?v=1&pin=" + strings.Repeat("ab", 32)
	if l != want {
		t.Fatalf("Link:\n got %s\nwant %s", l, want)
	}
	if c.TLS.PinnedSHA256 != strings.Repeat("AB:", 31)+"AB" {
		t.Error("Link modified the config")
	}
	roundTrip(t, c)

	c.Connection.EnabledProtocols = []string{ProtoReality, ProtoTCPTLS}
	c.Connection.SNI = "www.example.com"
	c.Reality.PublicKey = EncodeKey([32]byte{1, 2, 3})
	c.Reality.ShortIDs = []string{"ABCD", ""}
	c.Connection.ParallelConnections = 2
	c.Network.Routes = []string{}
	c.Network.SetDNS = false
	c.Obfuscation.PaddingProbability = 0
	l, err = c.LinkNamed("Work VPN #1")
	if err != nil {
		t.Fatal(err)
	}
	want = "mirage://alice:pa%20ss%3Aw%2Frd%40%23%3F&=%25+%C3%A9@203.0.113.7:443?v=1" +
		"&proto=reality,tcp-tls&sni=www.example.com&pbk=" + EncodeKey([32]byte{1, 2, 3}) +
		"&sid=abcd,''&pin=" + strings.Repeat("ab", 32) +
		"&connection.parallel_connections=2&network.routes=&network.set_dns=false" +
		"&obfuscation.padding_probability=0#Work%20VPN%20%231"
	if l != want {
		t.Fatalf("Link:\n got %s\nwant %s", l, want)
	}
	if LinkName(l) != "Work VPN #1" {
		t.Errorf("LinkName = %q", LinkName(l))
	}
	roundTrip(t, c)
}

// The example in README.md parses to what the README says.
func TestLinkReadmeExample(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	start := strings.Index(doc, "### mirage:// links")
	end := strings.Index(doc, "## Configuration reference")
	if start < 0 || end < start {
		t.Fatal(`README.md lacks "### mirage:// links" before "## Configuration reference"`)
	}
	section := doc[start:end]
	var links []string
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "mirage://") && !strings.Contains(line, "USERNAME") {
			links = append(links, line)
		}
	}
	if len(links) == 0 {
		t.Fatal("no example link (a line starting with mirage://) in the README section")
	}
	for _, l := range links {
		c, err := ParseLink(l)
		if err != nil {
			t.Fatalf("README example %s: %v", l, err)
		}
		roundTrip(t, c)
	}
	c, _ := ParseLink(links[0])
	if c.ConnectionString != "203.0.113.7:443" || c.Authentication.Username != "alice" ||
		c.Authentication.Password != "p@ss w:rd" || LinkName(links[0]) != "Home server" ||
		!slices.Equal(c.Connection.EnabledProtocols, []string{"reality", "tcp-tls"}) ||
		!slices.Equal(c.Network.Routes, []string{}) || c.Connection.ParallelConnections != 2 {
		t.Errorf("README example parses to %+v", c)
	}
}

// Every key of client.toml travels in the link (or is named as an
// exception), and each table entry points at the field of its key.
func TestLinkCoversEveryKey(t *testing.T) {
	elsewhere := map[string]bool{
		"connection_string": true, "authentication.username": true,
		"authentication.password": true, "tls.ca_file": true,
	}
	byKey := map[string]*linkField{}
	for i := range linkFields {
		f := &linkFields[i]
		if byKey[f.key] != nil {
			t.Errorf("key %s listed twice", f.key)
		}
		byKey[f.key] = f
	}
	c := &Client{}
	for _, k := range schemaKeys(reflect.TypeOf(Client{}), "") {
		f := byKey[k]
		if f == nil {
			if !elsewhere[k] {
				t.Errorf("key %s is not carried by links", k)
			}
			continue
		}
		delete(byKey, k)
		v := reflect.ValueOf(c).Elem()
		for _, part := range strings.Split(k, ".") {
			for i := 0; i < v.NumField(); i++ {
				if v.Type().Field(i).Tag.Get("toml") == part {
					v = v.Field(i)
					break
				}
			}
		}
		if got := reflect.ValueOf(f.ptr(c)).Pointer(); got != v.Addr().Pointer() {
			t.Errorf("link field %s points at the wrong field", k)
		}
	}
	for k := range byKey {
		t.Errorf("link field %s is not a client.toml key", k)
	}
}

func TestLinkLists(t *testing.T) {
	base := "mirage://u:p@192.0.2.1:443?v=1"
	for _, tc := range []struct {
		query string
		get   func(*Client) []string
		want  []string
	}{
		{"", func(c *Client) []string { return c.Network.Routes }, DefaultRoutes()},
		{"&network.routes=", func(c *Client) []string { return c.Network.Routes }, []string{}},
		{"&network.routes=10.1.2.3/8,2001:db8::1/32", func(c *Client) []string { return c.Network.Routes }, []string{"10.0.0.0/8", "2001:db8::/32"}},
		{"&network.routes=10.0.0.0%2F8", func(c *Client) []string { return c.Network.Routes }, []string{"10.0.0.0/8"}},
		{"", func(c *Client) []string { return c.Network.DNSServers }, nil},
		{"&network.dns_servers=", func(c *Client) []string { return c.Network.DNSServers }, []string{}},
		{"&network.excluded_routes=", func(c *Client) []string { return c.Network.ExcludedRoutes }, []string{}},
		{"&proto=reality,tcp-tls&tsni=a.example&pbk=" + EncodeKey([32]byte{9}) + "&sid=''",
			func(c *Client) []string { return c.Reality.ShortIDs }, []string{""}},
		{"&sid=", func(c *Client) []string { return c.Reality.ShortIDs }, []string{}},
		{"&sid=AB,'',cd", func(c *Client) []string { return c.Reality.ShortIDs }, []string{"ab", "", "cd"}},
	} {
		c, err := ParseLink(base + tc.query)
		if err != nil {
			t.Errorf("%s: %v", tc.query, err)
			continue
		}
		if got := tc.get(c); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %#v, want %#v", tc.query, got, tc.want)
		}
		roundTrip(t, c)
	}

	// A comma inside a value is %2C and does not split the list; here it
	// makes an invalid prefix, reported as such.
	_, err := ParseLink(base + "&network.routes=10.0.0.0%2C8")
	if err == nil || !strings.Contains(err.Error(), `invalid CIDR prefix "10.0.0.0,8"`) {
		t.Errorf("comma escape: %v", err)
	}
	if got := encodeLinkList([]string{"a,b", "", "c d", "2001:db8::/32", "%3A'&=+"}); got != "a%2Cb,'',c+d,2001:db8::/32,%253A%27%26%3D%2B" {
		t.Errorf("encodeLinkList = %s", got)
	}
	if l, msg := decodeLinkList("a%2Cb,'',c+d,2001:db8::/32,%253A%27%26%3D%2B"); msg != "" || !slices.Equal(l, []string{"a,b", "", "c d", "2001:db8::/32", "%3A'&=+"}) {
		t.Errorf("decodeLinkList = %q %s", l, msg)
	}
}

func TestLinkHosts(t *testing.T) {
	for _, tc := range []struct{ cs, host, want string }{
		{"[2001:db8::1]:443", "[2001:db8::1]:443", "[2001:db8::1]:443"},
		{"[fe80::1%eth0]:8443", "[fe80::1%25eth0]:8443", "[fe80::1%eth0]:8443"},
		{"[::ffff:192.0.2.1]:443", "[::ffff:192.0.2.1]:443", "[::ffff:192.0.2.1]:443"},
		{"[192.0.2.1]:443", "192.0.2.1:443", "192.0.2.1:443"},
		{"VPN.example.com.:1", "VPN.example.com.:1", "VPN.example.com.:1"},
	} {
		c := DefaultClient()
		c.ConnectionString = tc.cs
		c.Authentication = ClientAuth{Username: "u", Password: "p"}
		l, err := c.Link()
		if err != nil {
			t.Errorf("%s: %v", tc.cs, err)
			continue
		}
		if !strings.Contains(l, "@"+tc.host+"?v=1") {
			t.Errorf("%s: link %s", tc.cs, l)
		}
		got, err := ParseLink(l)
		if err != nil {
			t.Errorf("%s: %v", l, err)
			continue
		}
		if got.ConnectionString != tc.want {
			t.Errorf("%s: connection_string %q, want %q", l, got.ConnectionString, tc.want)
		}
	}
}

func TestLinkErrors(t *testing.T) {
	pbk := EncodeKey([32]byte{7})
	for _, tc := range []struct{ link, want string }{
		{"", `link: not a mirage:// link`},
		{"vless://u:p@192.0.2.1:443?v=1", `link: not a mirage:// link`},
		{"mirage:u:p@192.0.2.1:443?v=1", `link: not a mirage:// link`},
		{"mirage://u:p@192.0.2.1:443", `link: missing v=1`},
		{"mirage://u:p@192.0.2.1:443?v=2", `link: unsupported link version v=2`},
		{"mirage://u:p@192.0.2.1:443/x?v=1", `link: unexpected path "/x"`},
		{"mirage://u:p@192.0.2.1:443?v=1&foo=1&bar", `link: unknown parameter "foo"`},
		{"mirage://u:p@192.0.2.1:443?v=1&foo=1&bar", `link: unknown parameter "bar"`},
		{"mirage://u:p@192.0.2.1:443?v=1&connection.sni=a.example", `link: unknown parameter "connection.sni" (this key is written "sni" in a link)`},
		{"mirage://u:p@192.0.2.1:443?v=1&tls.ca_file=ca.pem", `link: unknown parameter "tls.ca_file": a link cannot carry a CA file`},
		{"mirage://u:p@192.0.2.1:443?v=1&connection.paralel_connections=2", `(did you mean "connection.parallel_connections"?)`},
		{"mirage://u:p@192.0.2.1:443?v=1&sni=a.example&sni=b.example", `link: parameter "sni" is given more than once`},
		{"mirage://u:p@192.0.2.1:443?v=1&connection.mtu=big", `link: [connection] mtu: parameter "connection.mtu": must be an integer (got "big")`},
		{"mirage://u:p@192.0.2.1:443?v=1&tls.insecure=yes", `link: [tls] insecure: parameter "tls.insecure": must be true or false (got "yes")`},
		{"mirage://u:p@192.0.2.1:443?v=1&obfuscation.padding_probability=x", `must be a number`},
		{"mirage://u:p@192.0.2.1:443?v=1&sni=%zz", `link: [connection] sni: parameter "sni": invalid percent-encoding`},
		{"mirage://u:p@192.0.2.1:443?v=1&network.mtu", `unknown parameter "network.mtu"`},
		{"mirage://u:p@192.0.2.1:443?v=1&connection.mtu", `parameter "connection.mtu" has no value`},
		// Validation: the same errors as client.toml, file "link".
		{"mirage://u:p@192.0.2.1:443?v=1&connection.parallel_connections=0", `link: [connection] parallel_connections: must be between 1 and 8 (got 0)`},
		{"mirage://192.0.2.1:443?v=1", `link: [authentication] username: required`},
		{"mirage://u@192.0.2.1:443?v=1", `link: [authentication] password: required`},
		{"mirage://u:p@192.0.2.1?v=1", `link: connection_string: must be "host:port"`},
		{"mirage://u:p@?v=1", `link: connection_string: required`},
		{"mirage://u:p@192.0.2.1:443?v=1&proto=reality", `link: [reality] public_key: required when "reality" is enabled`},
		{"mirage://u:p@192.0.2.1:443?v=1&proto=", `link: [connection] enabled_protocols: must list at least one`},
		{"mirage://u:p@192.0.2.1:443?v=1&proto=tcp-tls,udp", `unknown protocol "udp"`},
		{"mirage://u:p@192.0.2.1:443?v=1&pin=12", `link: [tls] pinned_sha256: invalid SHA-256 pin "12"`},
		{"mirage://u:p@192.0.2.1:443?v=1&proto=reality&tsni=a.example&pbk=" + pbk + "&sid=xyz", `link: [reality] short_ids: invalid short id "xyz"`},
		{"mirage://u:p@192.0.2.1:443?v=1&log.level=loud", `link: [log] level: must be one of`},
		{"mirage://u:p@[192.0.2.1:443?v=1", `link: not a valid URL`},
		{"mirage://u:p@192.0.2.1:443?v=1&" + strings.Repeat("x", MaxLinkLen), `link: too long`},
	} {
		_, err := ParseLink(tc.link)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseLink(%.80s):\n got %v\nwant %s", tc.link, err, tc.want)
			continue
		}
		for _, fe := range FieldErrors(err) {
			if fe.File != "link" {
				t.Errorf("%s: error names file %q", tc.link, fe.File)
			}
		}
	}

	// Errors never repeat the password.
	_, err := ParseLink("mirage://u:SECRETpw@[192.0.2.1:443?v=1")
	if err == nil || strings.Contains(err.Error(), "SECRETpw") {
		t.Errorf("error leaks the password: %v", err)
	}

	// White space around a pasted link is ignored; the scheme is
	// case-insensitive and a trailing slash is allowed.
	if _, err := ParseLink("  MIRAGE://u:p@192.0.2.1:443/?v=1\n"); err != nil {
		t.Errorf("lenient forms: %v", err)
	}
}

func TestLinkRejects(t *testing.T) {
	c := DefaultClient()
	c.ConnectionString = "192.0.2.1:443"
	c.Authentication = ClientAuth{Username: "u", Password: "p"}
	c.TLS.CAFile = "ca.pem"
	if _, err := c.Link(); err == nil || !strings.Contains(err.Error(), "client.toml: [tls] ca_file: cannot be put in a mirage:// link") {
		t.Errorf("ca_file: %v", err)
	}
	c.TLS.CAFile = ""
	c.Connection.MTU = 5
	if _, err := c.Link(); err == nil || !strings.Contains(err.Error(), "client.toml: [connection] mtu: must be 0 or between 576 and 65535") {
		t.Errorf("invalid config: %v", err)
	}
}

func TestLinkName(t *testing.T) {
	for s, want := range map[string]string{
		"mirage://u:p@192.0.2.1:443?v=1#Home":                 "Home",
		"mirage://u:p@192.0.2.1:443?v=1#My%20VPN%20%E2%9C%93": "My VPN ✓",
		"mirage://u:p@192.0.2.1:443?v=1":                      "",
		"https://example.com/#x":                              "",
		"mirage://u:p@192.0.2.1:443?v=1#%zz":                  "",
		"":                                                    "",
	} {
		if got := LinkName(s); got != want {
			t.Errorf("LinkName(%s) = %q, want %q", s, got, want)
		}
	}
}

// randomClient fills every field with a random valid value (or its default).
func randomClient(r *rand.Rand) *Client {
	pick := func(list ...string) string { return list[r.IntN(len(list))] }
	maybe := func() bool { return r.IntN(2) == 0 }
	hexStr := func(n int) string {
		const digits = "0123456789abcdefABCDEF"
		b := make([]byte, n)
		for i := range b {
			b[i] = digits[r.IntN(len(digits))]
		}
		return string(b)
	}
	name := func() string {
		labels := make([]string, 1+r.IntN(3))
		for i := range labels {
			labels[i] = pick("vpn", "a", "x-1", "www", "my_host", "Example", "cdn7")
		}
		return strings.Join(labels, ".") + pick("", ".com", ".net.")
	}
	v4 := func() string { return netip.AddrFrom4([4]byte{192, 0, 2, byte(r.IntN(256))}).String() }
	v6 := func() string {
		var b [16]byte
		b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
		for i := 4; i < 16; i++ {
			if maybe() {
				b[i] = byte(r.IntN(256))
			}
		}
		return netip.AddrFrom16(b).String()
	}
	anyString := func(min, max int) string {
		n := min + r.IntN(max-min+1)
		var b strings.Builder
		for b.Len() < n {
			switch r.IntN(4) {
			case 0:
				b.WriteByte(byte(r.IntN(256))) // any byte, also invalid UTF-8
			case 1:
				b.WriteString(pick("%", "@", ":", "/", "?", "#", "&", "=", "+", ",", "'", " ", "[", "]", "%25", "é", "\x00", "\n"))
			default:
				b.WriteByte(byte('a' + r.IntN(26)))
			}
		}
		return b.String()[:n]
	}
	userName := func() string {
		var b strings.Builder
		n := 1 + r.IntN(30)
		for i := 0; i < n; i++ {
			b.WriteString(pick("a", "Z", "9", "-", ".", "_", "@", "%", "+", "é", "#", "?", "/", "&", "="))
		}
		return b.String()
	}
	port := func() string { return fmt.Sprint(1 + r.IntN(65535)) }
	list := func(gen func() string) []string {
		switch r.IntN(4) {
		case 0:
			return nil
		case 1:
			return []string{}
		}
		out := make([]string, 1+r.IntN(4))
		for i := range out {
			out[i] = gen()
		}
		return out
	}
	prefix := func() string {
		if maybe() {
			return v4() + "/" + fmt.Sprint(r.IntN(33))
		}
		return v6() + "/" + fmt.Sprint(r.IntN(129))
	}

	c := DefaultClient()
	switch r.IntN(4) {
	case 0:
		c.ConnectionString = v4() + ":" + port()
	case 1:
		c.ConnectionString = "[" + v6() + "]:" + port()
	case 2:
		c.ConnectionString = "[fe80::" + fmt.Sprintf("%x", r.IntN(65536)) + "%" + pick("eth0", "en1", "wl-p") + "]:" + port()
	default:
		c.ConnectionString = name() + ":" + port()
	}

	cc := &c.Connection
	if maybe() {
		cc.SNI = name()
	}
	protos := slices.Clone(knownProtocols)
	r.Shuffle(len(protos), func(i, j int) { protos[i], protos[j] = protos[j], protos[i] })
	cc.EnabledProtocols = protos[:1+r.IntN(len(protos))]
	cc.ParallelConnections = 1 + r.IntN(8)
	cc.QUICParallelConnections = 1 + r.IntN(8)
	cc.DualStackEnabled = maybe()
	cc.MuxMode = pick("flow", "round_robin", "active_standby")
	cc.CongestionControl = pick("bbr", "system")
	if maybe() {
		cc.MTU = 576 + r.IntN(65535-576+1)
	}
	cc.ConnectTimeoutS = 1 + r.IntN(300)
	cc.HandshakeTimeoutS = 1 + r.IntN(300)
	cc.KeepaliveS = r.IntN(601)
	if maybe() {
		cc.MaxLifetimeS = 2 + r.IntN(604800-2+1)
		cc.MaxLifetimeJitterS = r.IntN(cc.MaxLifetimeS)
	}
	if maybe() {
		cc.PortHoppingIntervalS = 5 + r.IntN(86400-5+1)
	}
	cc.ReconnectMaxBackoffS = 1 + r.IntN(3600)

	if maybe() || cc.SNI == "" {
		c.Reality.TargetSNI = name()
	}
	c.Reality.ShortIDs = list(func() string { return hexStr(2 * r.IntN(9)) })
	if slices.Contains(cc.EnabledProtocols, ProtoReality) && len(c.Reality.ShortIDs) == 0 {
		c.Reality.ShortIDs = []string{hexStr(16)}
	}
	var key [32]byte
	for i := range key {
		key[i] = byte(r.IntN(256))
	}
	c.Reality.PublicKey = EncodeKey(key)

	if maybe() {
		c.TLS.ServerName = name()
	}
	if maybe() {
		p := hexStr(64)
		if maybe() {
			var parts []string
			for i := 0; i < 64; i += 2 {
				parts = append(parts, p[i:i+2])
			}
			p = strings.Join(parts, ":")
		}
		c.TLS.PinnedSHA256 = p
	}
	c.TLS.Insecure = maybe()

	c.Authentication.Username = userName()
	c.Authentication.Password = anyString(1, wire.MaxPassword)
	if maybe() {
		c.Authentication.Password = anyString(1, 20)
	}

	n := &c.Network
	n.Routes = list(prefix)
	n.ExcludedRoutes = list(prefix)
	n.DNSServers = list(func() string {
		if maybe() {
			return v4()
		}
		return v6()
	})
	n.SetDNS = maybe()
	n.InterfaceName = pick("mirage0", "tun7", "wg-x.1", "a_b")
	if maybe() {
		n.IPv4Address = v4()
	}
	if maybe() {
		n.IPv6Address = v6()
	}

	o := &c.Obfuscation
	o.Enabled = maybe()
	o.PaddingProbability = pick2(r, r.Float64(), 0, 1, DefaultPaddingProbability)
	o.JitterMaxMS = r.IntN(1001)
	o.HeartbeatS = r.IntN(3601)
	c.Log.Level = pick("debug", "info", "warn", "error")
	c.Log.Format = pick("text", "json")
	if maybe() {
		c.Path = "/etc/mirage/client.toml"
	}
	return c
}

func pick2(r *rand.Rand, vals ...float64) float64 { return vals[r.IntN(len(vals))] }

// Property: every valid random config survives the link round trip.
func TestLinkRandomRoundTrip(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 42))
	n := 2000
	if testing.Short() {
		n = 200
	}
	for i := 0; i < n; i++ {
		c := randomClient(r)
		if err := c.Validate(); err != nil {
			t.Fatalf("generator made an invalid config (seed %d, #%d): %v", seed, i, err)
		}
		orig := c.cloneForLink()
		roundTrip(t, c)
		if !reflect.DeepEqual(c, orig) {
			t.Fatalf("Link modified its receiver:\n%+v\n%+v", c, orig)
		}
	}
}

func FuzzParseLink(f *testing.F) {
	f.Add("mirage://alice:p%40ss@203.0.113.7:443?v=1&pin=" + strings.Repeat("ab", 32) + "#Home")
	f.Add("mirage://u:p@[2001:db8::1]:443?v=1&proto=reality,tcp-tls&sni=www.example.com&pbk=" + EncodeKey([32]byte{1}) + "&sid=abcd,''")
	f.Add("mirage://u:p@vpn.example.com:443?v=1&network.routes=&network.dns_servers=192.0.2.53&obfuscation.padding_probability=0.25")
	f.Add("mirage://u:p@192.0.2.1:443?v=1&connection.max_lifetime_s=60&connection.max_lifetime_jitter_s=5&tls.insecure=true")
	f.Add("mirage://u:p@[fe80::1%25eth0]:443/?v=1&network.routes=10.0.0.0/8#x")
	f.Add("mirage://u@h?v=1&&sid=,")
	f.Fuzz(func(t *testing.T, s string) {
		LinkName(s)
		c, err := ParseLink(s)
		if err != nil {
			return
		}
		l, err := c.Link()
		if err != nil {
			t.Fatalf("accepted %q but Link fails: %v", s, err)
		}
		c2, err := ParseLink(l)
		if err != nil {
			t.Fatalf("re-encoded %q as %q, which fails: %v", s, l, err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("%q -> %q changes the config:\n%+v\n%+v", s, l, c, c2)
		}
	})
}
