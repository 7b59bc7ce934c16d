package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
)

// knownProtocols in their canonical order.
var knownProtocols = []string{ProtoReality, ProtoTCPTLS, ProtoQUIC}

// Validate checks every field and returns all problems joined; each is a
// *FieldError naming the file and key. Bounds (documented in README.md "Configuration reference"):
// parallel_connections and quic_parallel_connections 1-8, mtu 0 or
// 576-65535, connect/handshake timeouts 1-300 s, keepalive_s 0-600,
// max_lifetime_s 0 or 2-604800, max_lifetime_jitter_s below max_lifetime_s,
// port_hopping_interval_s 0 or 1-86400, reconnect_max_backoff_s 1-3600.
func (c *Client) Validate() error {
	el := &errList{file: c.fileName()}

	if c.ConnectionString == "" {
		el.add("connection_string", `required: the server as "host:port"`)
	} else {
		el.check("connection_string", checkHostPort(c.ConnectionString, false))
	}

	cc := &c.Connection
	if cc.SNI != "" {
		el.check("connection.sni", checkHostname(cc.SNI))
	}
	el.check("connection.enabled_protocols", checkProtocols(cc.EnabledProtocols))
	el.check("connection.parallel_connections", checkRange(cc.ParallelConnections, 1, 8))
	el.check("connection.quic_parallel_connections", checkRange(cc.QUICParallelConnections, 1, 8))
	el.check("connection.mux_mode", checkEnum(cc.MuxMode, "flow", "round_robin", "active_standby"))
	el.check("connection.mtu", checkZeroOrRange(cc.MTU, 576, 65535))
	el.check("connection.connect_timeout_s", checkRange(cc.ConnectTimeoutS, 1, 300))
	el.check("connection.handshake_timeout_s", checkRange(cc.HandshakeTimeoutS, 1, 300))
	el.check("connection.keepalive_s", checkRange(cc.KeepaliveS, 0, 600))
	el.check("connection.max_lifetime_s", checkZeroOrRange(cc.MaxLifetimeS, 2, 604800))
	switch {
	case cc.MaxLifetimeJitterS < 0:
		el.add("connection.max_lifetime_jitter_s", "must not be negative (got %d)", cc.MaxLifetimeJitterS)
	case cc.MaxLifetimeS == 0 && cc.MaxLifetimeJitterS != 0:
		el.add("connection.max_lifetime_jitter_s", "needs max_lifetime_s to be set (got %d with max_lifetime_s = 0)", cc.MaxLifetimeJitterS)
	case cc.MaxLifetimeS > 0 && cc.MaxLifetimeJitterS >= cc.MaxLifetimeS:
		el.add("connection.max_lifetime_jitter_s", "must be less than max_lifetime_s (%d) (got %d)", cc.MaxLifetimeS, cc.MaxLifetimeJitterS)
	}
	el.check("connection.port_hopping_interval_s", checkZeroOrRange(cc.PortHoppingIntervalS, 1, 86400))
	el.check("connection.reconnect_max_backoff_s", checkRange(cc.ReconnectMaxBackoffS, 1, 3600))
	el.check("connection.congestion_control", checkEnum(cc.CongestionControl, CongestionControls...))
	checkFEC(el, cc.FECMode, cc.FECData, cc.FECParity)

	reality := slices.Contains(cc.EnabledProtocols, ProtoReality)
	r := &c.Reality
	if r.TargetSNI != "" {
		el.check("reality.target_sni", checkHostname(r.TargetSNI))
	} else if reality && cc.SNI == "" {
		el.add("reality.target_sni", `required when "reality" is enabled (or set [connection] sni)`)
	}
	el.check("reality.short_ids", checkShortIDs(r.ShortIDs))
	if reality && len(r.ShortIDs) == 0 {
		el.add("reality.short_ids", `at least one short id is required when "reality" is enabled`)
	}
	if r.PublicKey != "" {
		el.check("reality.public_key", checkKey(r.PublicKey))
	} else if reality {
		el.add("reality.public_key", `required when "reality" is enabled (from mirage-server keygen)`)
	}

	t := &c.TLS
	if t.ServerName != "" {
		el.check("tls.server_name", checkHostname(t.ServerName))
	}
	if t.PinnedSHA256 != "" {
		if _, err := PinFromHex(t.PinnedSHA256); err != nil {
			el.add("tls.pinned_sha256", "%v", err)
		}
	}

	el.check("authentication.username", checkUsername(c.Authentication.Username))
	el.check("authentication.password", checkPassword(c.Authentication.Password))

	n := &c.Network
	el.check("network.routes", checkPrefixes(n.Routes))
	el.check("network.excluded_routes", checkPrefixes(n.ExcludedRoutes))
	el.check("network.dns_servers", checkIPs(n.DNSServers))
	el.check("network.interface_name", checkInterfaceName(n.InterfaceName))
	if n.IPv4Address != "" {
		el.check("network.ipv4_address", checkIPFamily(n.IPv4Address, 4))
	}
	if n.IPv6Address != "" {
		el.check("network.ipv6_address", checkIPFamily(n.IPv6Address, 6))
	}

	checkObfuscation(el, &c.Obfuscation)
	checkLog(el, &c.Log)
	return el.err()
}

func checkProtocols(list []string) string {
	if len(list) == 0 {
		return fmt.Sprintf("must list at least one of %s", strings.Join(knownProtocols, ", "))
	}
	for i, p := range list {
		if !slices.Contains(knownProtocols, p) {
			return fmt.Sprintf("unknown protocol %q (known: %s)", p, strings.Join(knownProtocols, ", "))
		}
		if slices.Contains(list[:i], p) {
			return fmt.Sprintf("%q is listed twice", p)
		}
	}
	return ""
}

// normalize rewrites values that parse into their canonical form: masked
// route prefixes, canonical IP addresses, lower-case short ids and pin (hex,
// no colons). Invalid values are left for Validate to report.
func (c *Client) normalize() {
	normPrefixes(c.Network.Routes)
	normPrefixes(c.Network.ExcludedRoutes)
	normAddrs(c.Network.DNSServers)
	normLower(c.Reality.ShortIDs)
	if pin, err := PinFromHex(c.TLS.PinnedSHA256); err == nil {
		c.TLS.PinnedSHA256 = fmt.Sprintf("%x", pin[:])
	}
}

func normPrefixes(list []string) {
	for i, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			list[i] = p.Masked().String()
		}
	}
}

func normAddrs(list []string) {
	for i, s := range list {
		if a, err := netip.ParseAddr(s); err == nil {
			list[i] = a.String()
		}
	}
}

func normLower(list []string) {
	for i, s := range list {
		list[i] = strings.ToLower(s)
	}
}

func (c *Client) fileName() string { return fileName(c.Path, defaultClientName) }

// ServerAddr returns the host (without IPv6 brackets) and port of
// connection_string, or ("", 0) if it is not valid.
func (c *Client) ServerAddr() (host string, port int) {
	h, p, msg := splitHostPort(c.ConnectionString, false)
	if msg != "" {
		return "", 0
	}
	return h, p
}

// ServerHostPort returns connection_string in a form net.Dial accepts.
func (c *Client) ServerHostPort() string {
	h, p := c.ServerAddr()
	if h == "" {
		return ""
	}
	return net.JoinHostPort(h, fmt.Sprint(p))
}

// Protocols returns a copy of enabled_protocols, in the user's order.
func (c *Client) Protocols() []string {
	return slices.Clone(c.Connection.EnabledProtocols)
}

// UsableProtocols returns the enabled protocols that this build implements,
// in the configured order. If none is, the error names the key and what is
// available, e.g. `client.toml: [connection] enabled_protocols: none of
// ["quic"] is available in this build (available: tcp-tls)`.
func (c *Client) UsableProtocols(implemented map[string]bool) ([]string, error) {
	var out []string
	for _, p := range c.Connection.EnabledProtocols {
		if implemented[p] {
			out = append(out, p)
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	var avail []string
	for _, p := range knownProtocols {
		if implemented[p] {
			avail = append(avail, p)
		}
	}
	var extra []string
	for p, ok := range implemented {
		if ok && !slices.Contains(knownProtocols, p) {
			extra = append(extra, p)
		}
	}
	slices.Sort(extra)
	avail = append(avail, extra...)
	have := "none"
	if len(avail) > 0 {
		have = strings.Join(avail, ", ")
	}
	quoted := make([]string, len(c.Connection.EnabledProtocols))
	for i, p := range c.Connection.EnabledProtocols {
		quoted[i] = fmt.Sprintf("%q", p)
	}
	return nil, &FieldError{
		File: c.fileName(),
		Key:  "connection.enabled_protocols",
		Msg:  fmt.Sprintf("none of [%s] is available in this build (available: %s)", strings.Join(quoted, ", "), have),
	}
}

// RoutePrefixes returns [network] routes as masked prefixes.
func (c *Client) RoutePrefixes() ([]netip.Prefix, error) {
	return c.prefixes("network.routes", c.Network.Routes)
}

// ExcludedPrefixes returns [network] excluded_routes as masked prefixes.
func (c *Client) ExcludedPrefixes() ([]netip.Prefix, error) {
	return c.prefixes("network.excluded_routes", c.Network.ExcludedRoutes)
}

func (c *Client) prefixes(key string, list []string) ([]netip.Prefix, error) {
	return parsePrefixes(c.fileName(), key, list)
}

// DNSAddrs returns [network] dns_servers as addresses.
func (c *Client) DNSAddrs() ([]netip.Addr, error) {
	return parseAddrs(c.fileName(), "network.dns_servers", c.Network.DNSServers)
}

// Pin returns the decoded tls.pinned_sha256; ok is false when none is set.
func (c *Client) Pin() (pin [32]byte, ok bool, err error) {
	if c.TLS.PinnedSHA256 == "" {
		return pin, false, nil
	}
	pin, err = PinFromHex(c.TLS.PinnedSHA256)
	if err != nil {
		return pin, false, &FieldError{File: c.fileName(), Key: "tls.pinned_sha256", Msg: err.Error()}
	}
	return pin, true, nil
}

// TLSServerName is the name the tcp-tls and quic transports verify and send:
// tls.server_name, else connection.sni, else the host of connection_string
// when it is a name (empty for an IP).
func (c *Client) TLSServerName() string {
	if c.TLS.ServerName != "" {
		return c.TLS.ServerName
	}
	if c.Connection.SNI != "" {
		return c.Connection.SNI
	}
	h, _ := c.ServerAddr()
	if _, err := netip.ParseAddr(h); err == nil {
		return ""
	}
	return h
}

// RealitySNI is the SNI the reality transport sends: reality.target_sni,
// else connection.sni.
func (c *Client) RealitySNI() string {
	if c.Reality.TargetSNI != "" {
		return c.Reality.TargetSNI
	}
	return c.Connection.SNI
}

// RealityPublicKey decodes reality.public_key.
func (c *Client) RealityPublicKey() ([32]byte, error) {
	k, err := DecodeKey(c.Reality.PublicKey)
	if err != nil {
		return k, &FieldError{File: c.fileName(), Key: "reality.public_key", Msg: err.Error()}
	}
	return k, nil
}

// ResolvePath resolves a relative path (e.g. tls.ca_file) against the
// directory of the config file; absolute paths and "" are returned as is.
func (c *Client) ResolvePath(p string) string { return resolvePath(c.Path, p) }

func resolvePath(cfgPath, p string) string {
	if p == "" || filepath.IsAbs(p) || cfgPath == "" {
		return p
	}
	return filepath.Join(filepath.Dir(cfgPath), p)
}

func parsePrefixes(file, key string, list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, &FieldError{File: file, Key: key, Msg: fmt.Sprintf("invalid CIDR prefix %q", s)}
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func parseAddrs(file, key string, list []string) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, len(list))
	for _, s := range list {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, &FieldError{File: file, Key: key, Msg: fmt.Sprintf("invalid IP address %q", s)}
		}
		out = append(out, a)
	}
	return out, nil
}
