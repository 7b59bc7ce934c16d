package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

const validClientTOML = `
connection_string = "vpn.example.com:443"
[authentication]
username = "alice"
password = "secret"
`

const testPubKey = "8xny_KtpsbkX6urYMqrcknboXXpXDq6XabJSeNDBhDA"

func mustParseClient(t *testing.T, s string) *Client {
	t.Helper()
	c, err := ParseClient([]byte(s), "client.toml")
	if err != nil {
		t.Fatalf("ParseClient: %v", err)
	}
	return c
}

func mustParseServer(t *testing.T, s string) *Server {
	t.Helper()
	c, err := ParseServer([]byte(s), "server.toml")
	if err != nil {
		t.Fatalf("ParseServer: %v", err)
	}
	return c
}

func TestClientDefaults(t *testing.T) {
	c := mustParseClient(t, validClientTOML)
	want := DefaultClient()
	want.ConnectionString = "vpn.example.com:443"
	want.Authentication = ClientAuth{Username: "alice", Password: "secret"}
	want.Path = "client.toml"
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("parsed minimal config != defaults:\n got %+v\nwant %+v", c, want)
	}
	checks := []struct {
		name     string
		got, exp any
	}{
		{"enabled_protocols", c.Connection.EnabledProtocols, []string{"tcp-tls"}},
		{"parallel_connections", c.Connection.ParallelConnections, 1},
		{"quic_parallel_connections", c.Connection.QUICParallelConnections, 1},
		{"mux_mode", c.Connection.MuxMode, "flow"},
		{"mtu", c.Connection.MTU, 0},
		{"connect_timeout_s", c.Connection.ConnectTimeoutS, 10},
		{"handshake_timeout_s", c.Connection.HandshakeTimeoutS, 10},
		{"keepalive_s", c.Connection.KeepaliveS, 0},
		{"reconnect_max_backoff_s", c.Connection.ReconnectMaxBackoffS, 32},
		{"congestion_control", c.Connection.CongestionControl, "bbr"},
		{"routes", c.Network.Routes, []string{"0.0.0.0/0", "::/0"}},
		{"set_dns", c.Network.SetDNS, true},
		{"interface_name", c.Network.InterfaceName, "mirage0"},
		{"obfuscation.enabled", c.Obfuscation.Enabled, false},
		{"padding_probability", c.Obfuscation.PaddingProbability, 0.1},
		{"padding_profile", c.Obfuscation.PaddingProfile, "60:40-100,30:250-600,10:800-1200"},
		{"jitter_max_ms", c.Obfuscation.JitterMaxMS, 0},
		{"heartbeat_s", c.Obfuscation.HeartbeatS, 0},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "text"},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.exp) {
			t.Errorf("%s = %#v, want %#v", ck.name, ck.got, ck.exp)
		}
	}
}

func TestClientExplicitValuesBeatDefaults(t *testing.T) {
	c := mustParseClient(t, validClientTOML+`
[network]
routes = []
set_dns = false
[connection]
enabled_protocols = ["quic"]
`)
	if c.Network.Routes == nil || len(c.Network.Routes) != 0 {
		t.Errorf("routes = [] gave %#v, want empty non-nil", c.Network.Routes)
	}
	if c.Network.SetDNS {
		t.Error("set_dns = false was overridden by the default")
	}
	if !slices.Equal(c.Connection.EnabledProtocols, []string{"quic"}) {
		t.Errorf("enabled_protocols = %v", c.Connection.EnabledProtocols)
	}
	// A second parse must not see the first one's values (no shared slices).
	d := mustParseClient(t, validClientTOML)
	if !slices.Equal(d.Connection.EnabledProtocols, []string{"tcp-tls"}) || len(d.Network.Routes) != 2 {
		t.Errorf("defaults were mutated: %v %v", d.Connection.EnabledProtocols, d.Network.Routes)
	}
}

func TestApplyDefaultsInMemory(t *testing.T) {
	c := &Client{ConnectionString: "192.0.2.1:443", Authentication: ClientAuth{"a", "b"}}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("in-memory client with defaults: %v", err)
	}
	if len(c.Network.Routes) != 2 || c.Network.SetDNS {
		t.Errorf("routes %v, set_dns %v (ApplyDefaults leaves bools alone)", c.Network.Routes, c.Network.SetDNS)
	}
	c2 := &Client{Network: ClientNetwork{Routes: []string{}}}
	c2.ApplyDefaults()
	if len(c2.Network.Routes) != 0 {
		t.Errorf("ApplyDefaults replaced an explicitly empty routes list: %v", c2.Network.Routes)
	}
	s := &Server{}
	s.ApplyDefaults()
	if err := s.Validate(); err != nil {
		t.Fatalf("in-memory server with defaults: %v", err)
	}
}

func TestServerDefaults(t *testing.T) {
	s := mustParseServer(t, "")
	want := DefaultServer()
	want.Path = "server.toml"
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("empty server.toml != defaults:\n got %+v\nwant %+v", s, want)
	}
	checks := []struct {
		name     string
		got, exp any
	}{
		{"bind_address", s.BindAddress, "0.0.0.0"},
		{"bind_port", s.BindPort, 443},
		{"tunnel_network", s.TunnelNetwork, "10.66.0.1/24"},
		{"tunnel_network_v6", s.TunnelNetworkV6, ""},
		{"mtu", s.MTU, 1420},
		{"interface_name", s.InterfaceName, "mirage-srv0"},
		{"keepalive_s", s.KeepaliveS, 25},
		{"tls.cert_file", s.TLS.CertFile, "cert.pem"},
		{"tls.key_file", s.TLS.KeyFile, "key.pem"},
		{"tls.auto_generate", s.TLS.AutoGenerate, true},
		{"quic.port_range", s.QUIC.PortRange, ""},
		{"handshake_timeout_s", s.Connection.HandshakeTimeoutS, 10},
		{"max_handshakes_per_ip", s.Connection.MaxHandshakesPerIP, 60},
		{"max_concurrent_auth", s.Connection.MaxConcurrentAuth, 4},
		{"send_queue_packets", s.Connection.SendQueuePackets, 1024},
		{"congestion_control", s.Connection.CongestionControl, "bbr"},
		{"nat.backend", s.NAT.Backend, "auto"},
		{"authentication.type", s.Authentication.Type, "file"},
		{"users_file", s.Authentication.UsersFile, "users"},
		{"fallback.mode", s.Fallback.Mode, "static"},
		{"metrics.listen", s.Metrics.Listen, "127.0.0.1:9090"},
		{"log.level", s.Log.Level, "info"},
		{"log.format", s.Log.Format, "text"},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.exp) {
			t.Errorf("%s = %#v, want %#v", ck.name, ck.got, ck.exp)
		}
	}
	s2 := mustParseServer(t, "[tls]\nauto_generate = false\n")
	if s2.TLS.AutoGenerate {
		t.Error("auto_generate = false was overridden by the default")
	}
}

func TestNormalize(t *testing.T) {
	c := mustParseClient(t, validClientTOML+`
[tls]
pinned_sha256 = "3F:2A:9C:41:0B:77:E5:D2:18:6C:A0:5F:93:E4:7B:C1:0D:28:66:F9:4E:B3:72:15:A8:C6:39:D0:5B:E7:81:4A"
[reality]
short_ids = ["ABCD", ""]
[network]
routes = ["10.1.2.3/8", "2001:db8::1/32"]
excluded_routes = ["192.168.1.7/24"]
dns_servers = ["2001:DB8::0001"]
`)
	if got := c.TLS.PinnedSHA256; got != "3f2a9c410b77e5d2186ca05f93e47bc10d2866f94eb37215a8c639d05be7814a" {
		t.Errorf("pin not normalised: %q", got)
	}
	if !slices.Equal(c.Network.Routes, []string{"10.0.0.0/8", "2001:db8::/32"}) {
		t.Errorf("routes = %v", c.Network.Routes)
	}
	if !slices.Equal(c.Network.ExcludedRoutes, []string{"192.168.1.0/24"}) {
		t.Errorf("excluded_routes = %v", c.Network.ExcludedRoutes)
	}
	if !slices.Equal(c.Network.DNSServers, []string{"2001:db8::1"}) {
		t.Errorf("dns_servers = %v", c.Network.DNSServers)
	}
	if !slices.Equal(c.Reality.ShortIDs, []string{"abcd", ""}) {
		t.Errorf("short_ids = %v", c.Reality.ShortIDs)
	}
	pin, ok, err := c.Pin()
	if err != nil || !ok || pin[0] != 0x3f || pin[31] != 0x4a {
		t.Errorf("Pin() = %x %v %v", pin, ok, err)
	}
	p, err := c.RoutePrefixes()
	if err != nil || len(p) != 2 || p[0] != netip.MustParsePrefix("10.0.0.0/8") {
		t.Errorf("RoutePrefixes = %v %v", p, err)
	}
}

// errorsOf parses and returns the rendered errors, one per line.
func errorsOf(err error) []string {
	var out []string
	for _, fe := range FieldErrors(err) {
		out = append(out, fe.Error())
	}
	return out
}

func TestClientValidation(t *testing.T) {
	base := func() *Client {
		c := DefaultClient()
		c.ConnectionString = "vpn.example.com:443"
		c.Authentication = ClientAuth{Username: "alice", Password: "secret"}
		return c
	}
	withReality := func(c *Client) {
		c.Connection.EnabledProtocols = []string{"reality", "tcp-tls"}
		c.Reality = ClientReality{TargetSNI: "www.example.com", ShortIDs: []string{"ab"}, PublicKey: testPubKey}
	}
	cases := []struct {
		name   string
		mutate func(*Client)
		key    string // display form
		msg    string // substring of the problem
	}{
		{"connection_string missing", func(c *Client) { c.ConnectionString = "" }, "connection_string", "required"},
		{"connection_string no port", func(c *Client) { c.ConnectionString = "192.0.2.1" }, "connection_string", `must be "host:port"`},
		{"connection_string port 0", func(c *Client) { c.ConnectionString = "192.0.2.1:0" }, "connection_string", "port must be a number between 1 and 65535"},
		{"connection_string port big", func(c *Client) { c.ConnectionString = "192.0.2.1:65536" }, "connection_string", "port must be"},
		{"connection_string port word", func(c *Client) { c.ConnectionString = "192.0.2.1:https" }, "connection_string", "port must be"},
		{"connection_string bare v6", func(c *Client) { c.ConnectionString = "2001:db8::1:443" }, "connection_string", "brackets"},
		{"connection_string bad host", func(c *Client) { c.ConnectionString = "bad_host!:443" }, "connection_string", "not allowed"},
		{"connection_string bad v4", func(c *Client) { c.ConnectionString = "300.1.1.1:443" }, "connection_string", "invalid host name or IPv4"},
		{"connection_string empty host", func(c *Client) { c.ConnectionString = ":443" }, "connection_string", "host is missing"},
		{"sni is ip", func(c *Client) { c.Connection.SNI = "192.0.2.1" }, "[connection] sni", "not an IP"},
		{"protocols empty", func(c *Client) { c.Connection.EnabledProtocols = []string{} }, "[connection] enabled_protocols", "at least one"},
		{"protocols unknown", func(c *Client) { c.Connection.EnabledProtocols = []string{"wireguard"} }, "[connection] enabled_protocols", `unknown protocol "wireguard"`},
		{"protocols dup", func(c *Client) { c.Connection.EnabledProtocols = []string{"quic", "quic"} }, "[connection] enabled_protocols", "listed twice"},
		{"parallel 0", func(c *Client) { c.Connection.ParallelConnections = 0 }, "[connection] parallel_connections", "must be between 1 and 8 (got 0)"},
		{"parallel 17", func(c *Client) { c.Connection.ParallelConnections = 17 }, "[connection] parallel_connections", "(got 17)"},
		{"quic parallel", func(c *Client) { c.Connection.QUICParallelConnections = 9 }, "[connection] quic_parallel_connections", "between 1 and 8"},
		{"mux mode", func(c *Client) { c.Connection.MuxMode = "random" }, "[connection] mux_mode", "must be one of flow, round_robin, active_standby"},
		{"congestion", func(c *Client) { c.Connection.CongestionControl = "cubic" }, "[connection] congestion_control", `must be one of bbr, system (got "cubic")`},
		{"mtu small", func(c *Client) { c.Connection.MTU = 500 }, "[connection] mtu", "must be 0 or between 576 and 65535"},
		{"connect timeout", func(c *Client) { c.Connection.ConnectTimeoutS = 0 }, "[connection] connect_timeout_s", "between 1 and 300"},
		{"handshake timeout", func(c *Client) { c.Connection.HandshakeTimeoutS = 301 }, "[connection] handshake_timeout_s", "between 1 and 300"},
		{"keepalive", func(c *Client) { c.Connection.KeepaliveS = 601 }, "[connection] keepalive_s", "between 0 and 600"},
		{"max lifetime", func(c *Client) { c.Connection.MaxLifetimeS = 1 }, "[connection] max_lifetime_s", "0 or between 2"},
		{"jitter without lifetime", func(c *Client) { c.Connection.MaxLifetimeJitterS = 5 }, "[connection] max_lifetime_jitter_s", "needs max_lifetime_s"},
		{"jitter too big", func(c *Client) { c.Connection.MaxLifetimeS = 60; c.Connection.MaxLifetimeJitterS = 60 }, "[connection] max_lifetime_jitter_s", "less than max_lifetime_s"},
		{"jitter negative", func(c *Client) { c.Connection.MaxLifetimeJitterS = -1 }, "[connection] max_lifetime_jitter_s", "negative"},
		{"port hopping", func(c *Client) { c.Connection.PortHoppingIntervalS = -1 }, "[connection] port_hopping_interval_s", "0 or between 1"},
		{"backoff", func(c *Client) { c.Connection.ReconnectMaxBackoffS = 0 }, "[connection] reconnect_max_backoff_s", "between 1 and 3600"},
		{"reality no key", func(c *Client) { withReality(c); c.Reality.PublicKey = "" }, "[reality] public_key", "required"},
		{"reality bad key b64", func(c *Client) { withReality(c); c.Reality.PublicKey = "not base64!" }, "[reality] public_key", "base64"},
		{"reality key std b64", func(c *Client) { withReality(c); c.Reality.PublicKey = "8xny/KtpsbkX6urYMqrcknboXXpXDq6XabJSeNDBhDA=" }, "[reality] public_key", "base64"},
		{"reality key short", func(c *Client) { withReality(c); c.Reality.PublicKey = "AAAA" }, "[reality] public_key", "32 bytes, got 3"},
		{"reality no short ids", func(c *Client) { withReality(c); c.Reality.ShortIDs = nil }, "[reality] short_ids", "at least one"},
		{"reality no sni", func(c *Client) { withReality(c); c.Reality.TargetSNI = "" }, "[reality] target_sni", "required"},
		{"short id odd", func(c *Client) { c.Reality.ShortIDs = []string{"abc"} }, "[reality] short_ids", "even number"},
		{"short id long", func(c *Client) { c.Reality.ShortIDs = []string{"00112233445566778899"} }, "[reality] short_ids", "at most 16"},
		{"short id not hex", func(c *Client) { c.Reality.ShortIDs = []string{"zz"} }, "[reality] short_ids", "hex"},
		{"target sni bad", func(c *Client) { c.Reality.TargetSNI = "-bad.example" }, "[reality] target_sni", "must not start or end"},
		{"public key set but bad", func(c *Client) { c.Reality.PublicKey = "xx" }, "[reality] public_key", "32 bytes"},
		{"tls server name", func(c *Client) { c.TLS.ServerName = "a..b" }, "[tls] server_name", "1-63"},
		{"pin short", func(c *Client) { c.TLS.PinnedSHA256 = "abcd" }, "[tls] pinned_sha256", "64 hex digits"},
		{"pin not hex", func(c *Client) { c.TLS.PinnedSHA256 = strings.Repeat("g", 64) }, "[tls] pinned_sha256", "hex digits"},
		{"username empty", func(c *Client) { c.Authentication.Username = "" }, "[authentication] username", "required"},
		{"username colon", func(c *Client) { c.Authentication.Username = "a:b" }, "[authentication] username", "':'"},
		{"password empty", func(c *Client) { c.Authentication.Password = "" }, "[authentication] password", "required"},
		{"route bad", func(c *Client) { c.Network.Routes = []string{"10.0.0.0/33"} }, "[network] routes", `invalid CIDR prefix "10.0.0.0/33"`},
		{"route no prefix", func(c *Client) { c.Network.Routes = []string{"10.0.0.1"} }, "[network] routes", "invalid CIDR"},
		{"excluded bad", func(c *Client) { c.Network.ExcludedRoutes = []string{"nope"} }, "[network] excluded_routes", "invalid CIDR"},
		{"dns bad", func(c *Client) { c.Network.DNSServers = []string{"1.1.1"} }, "[network] dns_servers", `invalid IP address "1.1.1"`},
		{"ifname empty", func(c *Client) { c.Network.InterfaceName = "" }, "[network] interface_name", "must not be empty"},
		{"ifname long", func(c *Client) { c.Network.InterfaceName = "a-very-long-interface" }, "[network] interface_name", "at most 15"},
		{"ifname chars", func(c *Client) { c.Network.InterfaceName = "tun 0" }, "[network] interface_name", "not allowed"},
		{"ipv4 address family", func(c *Client) { c.Network.IPv4Address = "fd00::2" }, "[network] ipv4_address", "not an IPv4 address"},
		{"ipv6 address family", func(c *Client) { c.Network.IPv6Address = "198.51.100.9" }, "[network] ipv6_address", "not an IPv6 address"},
		{"ipv4 address junk", func(c *Client) { c.Network.IPv4Address = "10.1.2" }, "[network] ipv4_address", ""},
		{"padding >1", func(c *Client) { c.Obfuscation.PaddingProbability = 1.5 }, "[obfuscation] padding_probability", "between 0 and 1"},
		{"padding <0", func(c *Client) { c.Obfuscation.PaddingProbability = -0.1 }, "[obfuscation] padding_probability", "between 0 and 1"},
		{"jitter", func(c *Client) { c.Obfuscation.JitterMaxMS = 5000 }, "[obfuscation] jitter_max_ms", "between 0 and 1000"},
		{"heartbeat", func(c *Client) { c.Obfuscation.HeartbeatS = -1 }, "[obfuscation] heartbeat_s", "between 0 and 3600"},
		{"padding profile", func(c *Client) { c.Obfuscation.PaddingProfile = "60:40-100,30:600-250" }, "[obfuscation] padding_profile", "min 600 is above max 250"},
		{"log level", func(c *Client) { c.Log.Level = "verbose" }, "[log] level", "must be one of debug, info, warn, error"},
		{"log format", func(c *Client) { c.Log.Format = "xml" }, "[log] format", "must be one of text, json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(c)
			data, err := c.MarshalTOML()
			if err != nil {
				t.Fatal(err)
			}
			_, err = ParseClient(data, "client.toml")
			if err == nil {
				t.Fatalf("no error; want %s: ...%s", tc.key, tc.msg)
			}
			errs := errorsOf(err)
			if len(errs) != 1 {
				t.Fatalf("want exactly one error, got %d:\n%s", len(errs), err)
			}
			prefix := "client.toml: " + tc.key + ": "
			if !strings.HasPrefix(errs[0], prefix) || !strings.Contains(errs[0], tc.msg) {
				t.Fatalf("error %q\nwant prefix %q and substring %q", errs[0], prefix, tc.msg)
			}
			// Validate on the struct gives the same (file defaults to client.toml).
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Validate() = %v", err)
			}
		})
	}
}

func TestClientValidInputs(t *testing.T) {
	for _, cs := range []string{"192.0.2.1:443", "[2001:db8::1]:8443", "vpn.example.com:1", "vpn.example.com.:65535", "localhost:443", "xn--bcher-kva.example:443"} {
		c := DefaultClient()
		c.ConnectionString = cs
		c.Authentication = ClientAuth{"a", "b"}
		c.Connection.EnabledProtocols = []string{"reality", "tcp-tls", "quic"}
		c.Connection.SNI = "www.example.com"
		c.Reality.ShortIDs = []string{"", "ab", "0123456789abcdef"}
		c.Reality.PublicKey = testPubKey
		c.TLS.PinnedSHA256 = strings.Repeat("AB:", 31) + "AB"
		c.TLS.Insecure = true
		c.TLS.CAFile = "ca.pem"
		c.Connection.MaxLifetimeS = 600
		c.Connection.MaxLifetimeJitterS = 599
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", cs, err)
		}
	}
}

func TestServerValidation(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Server)
		key    string
		msg    string
	}{
		{"bind address", func(s *Server) { s.BindAddress = "localhost" }, "bind_address", `invalid IP address "localhost"`},
		{"bind port 0", func(s *Server) { s.BindPort = 0 }, "bind_port", "must be between 1 and 65535 (got 0)"},
		{"bind port big", func(s *Server) { s.BindPort = 70000 }, "bind_port", "(got 70000)"},
		{"tunnel not cidr", func(s *Server) { s.TunnelNetwork = "10.66.0.1" }, "tunnel_network", "IPv4 address with prefix"},
		{"tunnel v6", func(s *Server) { s.TunnelNetwork = "fd00::1/64" }, "tunnel_network", "IPv4 address with prefix"},
		{"tunnel /31", func(s *Server) { s.TunnelNetwork = "10.66.0.1/31" }, "tunnel_network", "between /8 and /30"},
		{"tunnel /7", func(s *Server) { s.TunnelNetwork = "10.66.0.1/7" }, "tunnel_network", "between /8 and /30"},
		{"tunnel network addr", func(s *Server) { s.TunnelNetwork = "10.66.0.0/24" }, "tunnel_network", "network address"},
		{"tunnel broadcast", func(s *Server) { s.TunnelNetwork = "10.66.0.255/24" }, "tunnel_network", "broadcast address"},
		{"tunnel6 v4", func(s *Server) { s.TunnelNetworkV6 = "10.0.0.1/24" }, "tunnel_network_v6", "IPv6 address with prefix"},
		{"tunnel6 /48", func(s *Server) { s.TunnelNetworkV6 = "fd00::1/48" }, "tunnel_network_v6", "between /64 and /126"},
		{"tunnel6 /127", func(s *Server) { s.TunnelNetworkV6 = "fd00::1/127" }, "tunnel_network_v6", "between /64 and /126"},
		{"tunnel6 anycast", func(s *Server) { s.TunnelNetworkV6 = "fd00::/64" }, "tunnel_network_v6", "anycast"},
		{"mtu v4", func(s *Server) { s.MTU = 575 }, "mtu", "between 576 and 65535"},
		{"mtu v6", func(s *Server) { s.TunnelNetworkV6 = "fd00::1/64"; s.MTU = 1279 }, "mtu", "between 1280 and 65535 when tunnel_network_v6"},
		{"ifname", func(s *Server) { s.InterfaceName = "a/b" }, "interface_name", "not allowed"},
		{"dns", func(s *Server) { s.DNSServers = []string{"x"} }, "dns_servers", "invalid IP"},
		{"routes", func(s *Server) { s.Routes = []string{"x/1"} }, "routes", "invalid CIDR"},
		{"keepalive", func(s *Server) { s.KeepaliveS = 0 }, "keepalive_s", "between 1 and 600"},
		{"reality key", func(s *Server) {
			s.Reality = ServerReality{TargetSNI: "www.example.com", ShortIDs: []string{"ab"}, PrivateKey: "AAAA"}
		}, "[reality] private_key", "32 bytes"},
		{"reality key no sni", func(s *Server) {
			s.Reality = ServerReality{ShortIDs: []string{"ab"}, PrivateKey: testPubKey}
		}, "[reality] target_sni", "required when reality.private_key"},
		{"reality key no ids", func(s *Server) {
			s.Reality = ServerReality{TargetSNI: "www.example.com", PrivateKey: testPubKey}
		}, "[reality] short_ids", "at least one"},
		{"reality sni", func(s *Server) { s.Reality.TargetSNI = "a b" }, "[reality] target_sni", "not allowed"},
		{"reality dest", func(s *Server) { s.Reality.Dest = "www.example.com" }, "[reality] dest", `must be "host:port"`},
		{"reality server names", func(s *Server) { s.Reality.ServerNames = []string{"ok.example", "bad!"} }, "[reality] server_names", "not allowed"},
		{"reality short id", func(s *Server) { s.Reality.ShortIDs = []string{"xyz1"} }, "[reality] short_ids", "hex"},
		{"reality time diff", func(s *Server) { s.Reality.MaxTimeDiffS = -5 }, "[reality] max_time_diff_s", "between 0 and 86400"},
		{"cert file", func(s *Server) { s.TLS.CertFile = "" }, "[tls] cert_file", "must not be empty"},
		{"key file", func(s *Server) { s.TLS.KeyFile = "" }, "[tls] key_file", "must not be empty"},
		{"port range text", func(s *Server) { s.QUIC.PortRange = "a-b" }, "[quic] port_range", `"FIRST-LAST"`},
		{"port range reversed", func(s *Server) { s.QUIC.PortRange = "2000-1000" }, "[quic] port_range", "first <= last"},
		{"port range zero", func(s *Server) { s.QUIC.PortRange = "0" }, "[quic] port_range", "1 <= first"},
		{"port range big", func(s *Server) { s.QUIC.PortRange = "1000-70000" }, "[quic] port_range", "<= 65535"},
		{"port range open", func(s *Server) { s.QUIC.PortRange = "1000-" }, "[quic] port_range", `"FIRST-LAST"`},
		{"handshake timeout", func(s *Server) { s.Connection.HandshakeTimeoutS = 0 }, "[connection] handshake_timeout_s", "between 1 and 300"},
		{"handshakes per ip", func(s *Server) { s.Connection.MaxHandshakesPerIP = 0 }, "[connection] max_handshakes_per_ip", "between 1 and 100000"},
		{"concurrent auth", func(s *Server) { s.Connection.MaxConcurrentAuth = 2000 }, "[connection] max_concurrent_auth", "between 1 and 1024"},
		{"send queue", func(s *Server) { s.Connection.SendQueuePackets = 8 }, "[connection] send_queue_packets", "between 16 and 65536"},
		{"congestion", func(s *Server) { s.Connection.CongestionControl = "" }, "[connection] congestion_control", "must be one of bbr, system"},
		{"nat v4", func(s *Server) { s.NAT.IPv4Interface = "eth0; rm -rf" }, "[nat] ipv4_interface", "not allowed"},
		{"nat v6 long", func(s *Server) { s.NAT.IPv6Interface = "abcdefghijklmnop" }, "[nat] ipv6_interface", "at most 15"},
		{"nat backend", func(s *Server) { s.NAT.Backend = "pf" }, "[nat] backend", "must be one of auto, nftables, iptables"},
		{"auth type", func(s *Server) { s.Authentication.Type = "ldap" }, "[authentication] type", `must be one of file (got "ldap")`},
		{"users file", func(s *Server) { s.Authentication.UsersFile = "" }, "[authentication] users_file", "must not be empty"},
		{"fallback mode", func(s *Server) { s.Fallback.Mode = "redirect" }, "[fallback] mode", "must be one of static, proxy"},
		{"fallback proxy no url", func(s *Server) { s.Fallback.Mode = "proxy" }, "[fallback] proxy_url", `required when mode = "proxy"`},
		{"fallback proxy bad url", func(s *Server) { s.Fallback.Mode = "proxy"; s.Fallback.ProxyURL = "ftp://x" }, "[fallback] proxy_url", "http:// or https://"},
		{"metrics listen", func(s *Server) { s.Metrics.Listen = "9090" }, "[metrics] listen", `must be "host:port"`},
		{"obfuscation", func(s *Server) { s.Obfuscation.PaddingProbability = 2 }, "[obfuscation] padding_probability", "between 0 and 1"},
		{"public address", func(s *Server) { s.PublicAddresses = []string{"example.com"} }, "public_addresses", "example.com"},
		{"two public v4", func(s *Server) { s.PublicAddresses = []string{"192.0.2.1", "192.0.2.2"} }, "public_addresses", "at most one IPv4 and one IPv6 address (got 2 and 0)"},
		{"log", func(s *Server) { s.Log.Level = "trace" }, "[log] level", "must be one of"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := DefaultServer()
			tc.mutate(s)
			data, err := s.MarshalTOML()
			if err != nil {
				t.Fatal(err)
			}
			_, err = ParseServer(data, "server.toml")
			if err == nil {
				t.Fatalf("no error; want %s: ...%s", tc.key, tc.msg)
			}
			errs := errorsOf(err)
			if len(errs) != 1 {
				t.Fatalf("want exactly one error, got %d:\n%s", len(errs), err)
			}
			prefix := "server.toml: " + tc.key + ": "
			if !strings.HasPrefix(errs[0], prefix) || !strings.Contains(errs[0], tc.msg) {
				t.Fatalf("error %q\nwant prefix %q and substring %q", errs[0], prefix, tc.msg)
			}
		})
	}
}

func TestServerValidInputs(t *testing.T) {
	s := DefaultServer()
	s.BindAddress = "::"
	s.TunnelNetwork = "172.16.0.1/12"
	s.TunnelNetworkV6 = "fd00::1/126"
	s.MTU = 1280
	s.Reality = ServerReality{TargetSNI: "www.example.com", Dest: "[2001:db8::1]:443", ShortIDs: []string{""}, PrivateKey: testPubKey}
	s.QUIC.PortRange = "443"
	s.Fallback = Fallback{Mode: "proxy", ProxyURL: "https://127.0.0.1:8443/"}
	s.Metrics.Listen = ":9090"
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	s.TunnelNetwork = "10.0.0.254/24"
	s.QUIC.PortRange = "20000-20100"
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestErrorPathNamesFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "my-client.toml")
	if err := os.WriteFile(p, []byte(validClientTOML+"[connection]\nmtu = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadClient(p)
	want := p + ": [connection] mtu: must be 0 or between 576 and 65535 (got 1)"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
	if _, err := LoadClient(filepath.Join(dir, "missing.toml")); err == nil || !strings.Contains(err.Error(), "missing.toml") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestUnknownKeys(t *testing.T) {
	in := validClientTOML + `
[connection]
paralel_connections = 2
MTU = 1400
[bogus]
x = 1
[network.extra]
y = 2
`
	_, err := ParseClient([]byte(in), "client.toml")
	got := errorsOf(err)
	want := []string{
		`client.toml:8: [connection] paralel_connections: unknown key (did you mean "parallel_connections"?)`,
		`client.toml:9: [connection] MTU: unknown key (did you mean "mtu"?)`,
		`client.toml:10: bogus: unknown key`,
		`client.toml:12: [network] extra: unknown key`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Unknown keys are reported together with validation errors.
	_, err = ParseServer([]byte("bind_port = 0\nfoo = true\n"), "server.toml")
	got = errorsOf(err)
	want = []string{
		"server.toml:2: foo: unknown key",
		"server.toml: bind_port: must be between 1 and 65535 (got 0)",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestTypeMismatch(t *testing.T) {
	cases := []struct {
		in, want string
	}{
		{"bind_port = \"443\"", `server.toml:1: bind_port: expected an integer, got a string ("443")`},
		{"\n\n[tls]\nauto_generate = \"yes\"", `server.toml:4: [tls] auto_generate: expected true or false, got a string ("yes")`},
		{"mtu = 1420.5", `server.toml:1: mtu: expected an integer, got a float (1420.5)`},
		{"routes = \"0.0.0.0/0\"", `server.toml:1: routes: expected an array, got a string ("0.0.0.0/0")`},
		{"routes = [\"0.0.0.0/0\", 5]", `server.toml:1: routes: element 1: expected a string, got an integer (5)`},
		{"tls = 5", `server.toml:1: tls: expected a table, got an integer (5)`},
		{"[[nat]]\nbackend = \"auto\"", `server.toml:1: nat: expected a table, got an array of tables`},
		{"[obfuscation]\npadding_probability = \"x\"", `server.toml:2: [obfuscation] padding_probability: expected a number, got a string ("x")`},
		{"bind_address = 1979-05-27", `server.toml:1: bind_address: expected a string, got a date/time`},
	}
	for _, tc := range cases {
		_, err := ParseServer([]byte(tc.in), "server.toml")
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q:\n got %v\nwant %s", tc.in, err, tc.want)
		}
	}
	// Several type errors at once, plus an unknown key.
	_, err := ParseServer([]byte("bind_port = \"x\"\nmtu = \"y\"\nzzz = 1\n"), "server.toml")
	if n := len(FieldErrors(err)); n != 3 {
		t.Fatalf("want 3 errors, got %d: %v", n, err)
	}
	// Integer for a float field is fine.
	s := mustParseServer(t, "[obfuscation]\npadding_probability = 1\n")
	if s.Obfuscation.PaddingProbability != 1 {
		t.Fatal(s.Obfuscation.PaddingProbability)
	}
}

// TestTypeMismatchHidesSecrets: a wrong-typed password or private key is
// reported without its value (messages reach logs and the GUI).
func TestTypeMismatchHidesSecrets(t *testing.T) {
	for _, tc := range []struct{ in, secret string }{
		{"connection_string = \"a:1\"\n[authentication]\npassword = 8675309", "8675309"},
		{"connection_string = \"a:1\"\n[authentication]\npassword = [\"hunter2-secret\"]", "hunter2"},
		{"connection_string = \"a:1\"\n[authentication]\npassword = 3.14159", "3.14159"},
	} {
		_, err := ParseClient([]byte(tc.in), "client.toml")
		if err == nil || strings.Contains(err.Error(), tc.secret) || !strings.Contains(err.Error(), "[authentication] password: expected a string") {
			t.Errorf("%q: err = %v; want a type error naming the key, without the value", tc.in, err)
		}
	}
	_, err := ParseServer([]byte("[reality]\nprivate_key = 123456789"), "server.toml")
	if err == nil || strings.Contains(err.Error(), "123456789") || !strings.Contains(err.Error(), "private_key") {
		t.Errorf("server private_key: err = %v", err)
	}
}

func TestSyntaxError(t *testing.T) {
	_, err := ParseClient([]byte("connection_string = \"a:1\"\n[connection\n"), "client.toml")
	fe := FieldErrors(err)
	if len(fe) != 1 || fe[0].Line < 2 || !strings.HasPrefix(err.Error(), "client.toml:") || !strings.Contains(err.Error(), ": syntax error") {
		t.Fatalf("err = %v", err)
	}
	_, err = ParseClient([]byte("a = 1\na = 2\n"), "")
	if err == nil || !strings.HasPrefix(err.Error(), "client.toml:2:") {
		t.Fatalf("duplicate key: %v", err)
	}
	big := make([]byte, MaxFileSize+1)
	if _, err := ParseClient(big, "big.toml"); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("big: %v", err)
	}
}

func TestManyErrorsAtOnce(t *testing.T) {
	_, err := ParseClient([]byte(`connection_string = "x"
[connection]
parallel_connections = 0
mux_mode = "?"
[log]
level = "loud"
`), "client.toml")
	got := errorsOf(err)
	want := []string{
		`client.toml: connection_string: must be "host:port" (got "x")`,
		`client.toml: [connection] parallel_connections: must be between 1 and 8 (got 0)`,
		`client.toml: [connection] mux_mode: must be one of flow, round_robin, active_standby (got "?")`,
		`client.toml: [authentication] username: required`,
		`client.toml: [authentication] password: required`,
		`client.toml: [log] level: must be one of debug, info, warn, error (got "loud")`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(err.Error(), "\n") {
		t.Fatal("joined error should list one problem per line")
	}
}

func TestUsableProtocols(t *testing.T) {
	c := mustParseClient(t, validClientTOML+"[connection]\nenabled_protocols = [\"quic\", \"tcp-tls\", \"reality\"]\n[reality]\nshort_ids=[\"\"]\npublic_key=\""+testPubKey+"\"\ntarget_sni=\"www.example.com\"\n")
	got, err := c.UsableProtocols(map[string]bool{"tcp-tls": true, "reality": true})
	if err != nil || !slices.Equal(got, []string{"tcp-tls", "reality"}) {
		t.Fatalf("got %v %v", got, err)
	}
	c2 := mustParseClient(t, validClientTOML+"[connection]\nenabled_protocols = [\"quic\"]\n")
	_, err = c2.UsableProtocols(map[string]bool{"tcp-tls": true, "quic": false})
	want := `client.toml: [connection] enabled_protocols: none of ["quic"] is available in this build (available: tcp-tls)`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Key != "connection.enabled_protocols" {
		t.Fatalf("not a FieldError: %#v", err)
	}
	_, err = c2.UsableProtocols(nil)
	if err == nil || !strings.HasSuffix(err.Error(), "(available: none)") {
		t.Fatalf("err = %v", err)
	}
}

func TestClientHelpers(t *testing.T) {
	cases := []struct {
		cs, host string
		port     int
		hp, tlsn string
	}{
		{"192.0.2.1:443", "192.0.2.1", 443, "192.0.2.1:443", ""},
		{"[2001:db8::1]:8443", "2001:db8::1", 8443, "[2001:db8::1]:8443", ""},
		{"vpn.example.com:9", "vpn.example.com", 9, "vpn.example.com:9", "vpn.example.com"},
		{"bad", "", 0, "", ""},
	}
	for _, tc := range cases {
		c := &Client{ConnectionString: tc.cs}
		h, p := c.ServerAddr()
		if h != tc.host || p != tc.port || c.ServerHostPort() != tc.hp || c.TLSServerName() != tc.tlsn {
			t.Errorf("%s: %q %d %q %q", tc.cs, h, p, c.ServerHostPort(), c.TLSServerName())
		}
	}
	c := &Client{ConnectionString: "192.0.2.1:443", Connection: ClientConn{SNI: "front.example", EnabledProtocols: []string{"quic"}}}
	if c.TLSServerName() != "front.example" || c.RealitySNI() != "front.example" {
		t.Error("sni fallback")
	}
	c.TLS.ServerName = "real.example"
	c.Reality.TargetSNI = "target.example"
	if c.TLSServerName() != "real.example" || c.RealitySNI() != "target.example" {
		t.Error("explicit names")
	}
	ps := c.Protocols()
	ps[0] = "changed"
	if c.Connection.EnabledProtocols[0] != "quic" {
		t.Error("Protocols must return a copy")
	}
	c.Reality.PublicKey = testPubKey
	k, err := c.RealityPublicKey()
	if err != nil || EncodeKey(k) != testPubKey {
		t.Errorf("RealityPublicKey: %v", err)
	}
	c.Path = filepath.Join("etc", "mirage", "client.toml")
	if got := c.ResolvePath("ca.pem"); got != filepath.Join("etc", "mirage", "ca.pem") {
		t.Errorf("ResolvePath = %q", got)
	}
	c.Network.DNSServers = []string{"192.0.2.53"}
	c.Network.ExcludedRoutes = []string{"bad"}
	if a, err := c.DNSAddrs(); err != nil || a[0] != netip.MustParseAddr("192.0.2.53") {
		t.Errorf("DNSAddrs %v %v", a, err)
	}
	if _, err := c.ExcludedPrefixes(); err == nil || !strings.Contains(err.Error(), "[network] excluded_routes") {
		t.Errorf("ExcludedPrefixes err = %v", err)
	}
}

func TestServerHelpers(t *testing.T) {
	s := DefaultServer()
	s.Path = filepath.Join("srv", "server.toml")
	abs, _ := filepath.Abs("users")
	for _, tc := range []struct{ in, want string }{
		{"users", filepath.Join("srv", "users")},
		{"sub/key.pem", filepath.Join("srv", "sub", "key.pem")},
		{abs, abs},
		{"", ""},
	} {
		if got := s.ResolvePath(tc.in); got != tc.want {
			t.Errorf("ResolvePath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	s.Path = ""
	if s.ResolvePath("users") != "users" {
		t.Error("no Path: unchanged")
	}
	if p := s.TunnelPrefix(); p != netip.MustParsePrefix("10.66.0.1/24") {
		t.Errorf("TunnelPrefix = %v", p)
	}
	if _, ok := s.TunnelPrefixV6(); ok {
		t.Error("v6 should be off by default")
	}
	s.TunnelNetworkV6 = "fd00::1/64"
	if p, ok := s.TunnelPrefixV6(); !ok || p != netip.MustParsePrefix("fd00::1/64") {
		t.Errorf("TunnelPrefixV6 = %v %v", p, ok)
	}
	if lo, hi := s.QUICPorts(); lo != 443 || hi != 443 {
		t.Errorf("QUICPorts = %d-%d", lo, hi)
	}
	s.QUIC.PortRange = "1000-2000"
	if lo, hi := s.QUICPorts(); lo != 1000 || hi != 2000 {
		t.Errorf("QUICPorts = %d-%d", lo, hi)
	}
	if s.ListenAddr() != "0.0.0.0:443" {
		t.Error(s.ListenAddr())
	}
	if s.RealityEnabled() || s.RealityDest() != "" {
		t.Error("reality off by default")
	}
	s.Reality.TargetSNI = "www.example.com"
	s.Reality.PrivateKey = testPubKey
	if !s.RealityEnabled() || s.RealityDest() != "www.example.com:443" || !slices.Equal(s.RealityServerNames(), []string{"www.example.com"}) {
		t.Error("reality derived values")
	}
	s.Reality.Dest = "192.0.2.8:8443"
	if s.RealityDest() != "192.0.2.8:8443" {
		t.Error("explicit dest")
	}
	if _, err := s.RealityPrivateKey(); err != nil {
		t.Error(err)
	}
}

func TestPinFromHex(t *testing.T) {
	want := [32]byte{0xab, 0xcd}
	ok := []string{
		"abcd" + strings.Repeat("0", 60),
		"ABCD" + strings.Repeat("0", 60),
		"AB:CD:" + strings.Repeat("00:", 29) + "00",
	}
	for _, s := range ok {
		got, err := PinFromHex(s)
		if err != nil || got != want {
			t.Errorf("PinFromHex(%q) = %x, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "abcd", strings.Repeat("0", 63), strings.Repeat("0", 65), strings.Repeat("x", 64)} {
		if _, err := PinFromHex(s); err == nil {
			t.Errorf("PinFromHex(%q) accepted", s)
		}
	}
}

func TestDecodeShortID(t *testing.T) {
	id, err := DecodeShortID("abcd")
	if err != nil || id != [8]byte{0xab, 0xcd} {
		t.Fatalf("%x %v", id, err)
	}
	if _, err := DecodeShortID(""); err != nil {
		t.Fatal(err)
	}
}

func TestDisplayKey(t *testing.T) {
	for in, want := range map[string]string{
		"connection_string": "connection_string",
		"connection.mtu":    "[connection] mtu",
		`network."a.b"`:     `[network] "a.b"`,
		"a.b.c":             "[a.b] c",
	} {
		if got := DisplayKey(in); got != want {
			t.Errorf("DisplayKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHugeGarbageIsBounded(t *testing.T) {
	var b strings.Builder
	for i := 0; b.Len() < MaxFileSize-64; i++ {
		fmt.Fprintf(&b, "k%d = %d\n", i, i)
	}
	start := time.Now()
	_, err := ParseClient([]byte(b.String()), "client.toml")
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("parsing took %v", d)
	}
	n := len(FieldErrors(err))
	if n == 0 || n > maxSchemaErrors+1 {
		t.Fatalf("got %d errors, want 1..%d", n, maxSchemaErrors+1)
	}
	if !strings.Contains(err.Error(), "too many problems") {
		t.Errorf("no truncation notice: %.200s", err)
	}
}

// TestCongestionControl: [connection] congestion_control on both ends:
// bbr by default, "system" kept, anything else an error naming the key,
// and generated files write it.
func TestCongestionControl(t *testing.T) {
	keyErr := func(t *testing.T, err error) {
		t.Helper()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Key != "connection.congestion_control" {
			t.Fatalf("err = %v, want a FieldError for connection.congestion_control", err)
		}
		if !strings.Contains(err.Error(), `[connection] congestion_control: must be one of bbr, system (got "fast")`) {
			t.Fatalf("err = %v", err)
		}
	}
	_, err := ParseClient([]byte(validClientTOML+"[connection]\ncongestion_control = \"fast\"\n"), "client.toml")
	keyErr(t, err)
	_, err = ParseServer([]byte("[connection]\ncongestion_control = \"fast\"\n"), "server.toml")
	keyErr(t, err)

	if c := DefaultClient(); c.Connection.CongestionControl != "bbr" {
		t.Errorf("client default = %q, want bbr", c.Connection.CongestionControl)
	}
	if s := DefaultServer(); s.Connection.CongestionControl != "bbr" {
		t.Errorf("server default = %q, want bbr", s.Connection.CongestionControl)
	}

	c := mustParseClient(t, validClientTOML+"[connection]\ncongestion_control = \"system\"\n")
	out, err := c.MarshalTOML()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "congestion_control = \"system\"") {
		t.Fatalf("client.toml written without congestion_control:\n%s", out)
	}
	if back := mustParseClient(t, string(out)); back.Connection.CongestionControl != "system" {
		t.Errorf("client round trip: %q", back.Connection.CongestionControl)
	}
	s := mustParseServer(t, "[connection]\ncongestion_control = \"system\"\n")
	out, err = s.MarshalTOML()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "congestion_control = \"system\"") {
		t.Fatalf("server.toml written without congestion_control:\n%s", out)
	}
	if back := mustParseServer(t, string(out)); back.Connection.CongestionControl != "system" {
		t.Errorf("server round trip: %q", back.Connection.CongestionControl)
	}
	for _, out := range [][]byte{mustMarshal(t, DefaultClient()), mustMarshal(t, DefaultServer())} {
		if !strings.Contains(string(out), "congestion_control = \"bbr\"") {
			t.Errorf("default config written without congestion_control = \"bbr\":\n%s", out)
		}
	}
}

func mustMarshal(t *testing.T, c interface{ MarshalTOML() ([]byte, error) }) []byte {
	t.Helper()
	out, err := c.MarshalTOML()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFECKeys: [connection] fec, fec_data and fec_parity on both ends:
// auto by default (adapting shape), a fixed shape, off, and every bad
// combination an error naming its key.
func TestFECKeys(t *testing.T) {
	if c := DefaultClient(); c.Connection.FECMode != "auto" || c.Connection.FEC() == nil || !c.Connection.FEC().Auto() {
		t.Errorf("client default fec %q -> %+v, want auto", c.Connection.FECMode, c.Connection.FEC())
	}
	if s := DefaultServer(); s.Connection.FECMode != "auto" || s.Connection.FEC() == nil || !s.Connection.FEC().Auto() {
		t.Errorf("server default fec %q, want auto", s.Connection.FECMode)
	}
	if c := mustParseClient(t, validClientTOML+"[connection]\nfec = \"auto\"\n"); c.Connection.FEC() == nil || !c.Connection.FEC().Auto() {
		t.Errorf("fec = auto: %+v, want an adapting shape", c.Connection.FEC())
	}
	if f := mustParseClient(t, validClientTOML+"[connection]\nfec_data = 10\nfec_parity = 3\n").Connection.FEC(); f == nil || f.K != 10 || f.M != 3 {
		t.Errorf("fixed shape under the default fec: %+v, want 10+3", f)
	}
	c := mustParseClient(t, validClientTOML+"[connection]\nfec = \"auto\"\nfec_data = 10\nfec_parity = 3\n")
	if f := c.Connection.FEC(); f == nil || f.K != 10 || f.M != 3 {
		t.Errorf("fixed shape: %+v, want 10+3", f)
	}
	if c := mustParseClient(t, validClientTOML+"[connection]\nfec = \"off\"\n"); c.Connection.FEC() != nil {
		t.Error("fec = off still gives an FEC config")
	}
	out := mustMarshal(t, c)
	if back := mustParseClient(t, string(out)); back.Connection.FECData != 10 || back.Connection.FECParity != 3 || back.Connection.FECMode != "auto" {
		t.Errorf("round trip: %+v", back.Connection)
	}
	for _, tc := range []struct{ body, key, msg string }{
		{"fec = \"sometimes\"", "connection.fec", `must be one of auto, off (got "sometimes")`},
		{"fec = \"auto\"\nfec_data = 65", "connection.fec_data", "must be 0 or between 1 and 64 (got 65)"},
		{"fec = \"auto\"\nfec_data = 10\nfec_parity = 33", "connection.fec_parity", "must be between 0 and 32 (got 33)"},
		{"fec = \"auto\"\nfec_parity = 3", "connection.fec_parity", "needs fec_data"},
		{"fec = \"off\"\nfec_data = 10", "connection.fec_data", `has no effect with fec = "off"`},
	} {
		for _, side := range []string{"client", "server"} {
			var err error
			if side == "client" {
				_, err = ParseClient([]byte(validClientTOML+"[connection]\n"+tc.body+"\n"), "client.toml")
			} else {
				_, err = ParseServer([]byte("[connection]\n"+tc.body+"\n"), "server.toml")
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Key != tc.key || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%s %q: err = %v, want %s: %s", side, tc.body, err, tc.key, tc.msg)
			}
		}
	}
}
