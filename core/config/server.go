package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Validate checks every field and returns all problems joined; each is a
// *FieldError naming the file and key. Bounds are documented in
// docs/config.md.
func (s *Server) Validate() error {
	el := &errList{file: s.fileName()}

	el.check("bind_address", checkIP(s.BindAddress))
	el.check("bind_port", checkRange(s.BindPort, 1, 65535))
	el.check("public_addresses", checkPublicAddrs(s.PublicAddresses))
	el.check("tunnel_network", checkTunnelV4(s.TunnelNetwork))
	if s.TunnelNetworkV6 != "" {
		el.check("tunnel_network_v6", checkTunnelV6(s.TunnelNetworkV6))
	}
	if s.TunnelNetworkV6 != "" && s.MTU < 1280 {
		el.add("mtu", "must be between 1280 and 65535 when tunnel_network_v6 is set (IPv6 minimum MTU) (got %d)", s.MTU)
	} else {
		el.check("mtu", checkRange(s.MTU, 576, 65535))
	}
	el.check("interface_name", checkInterfaceName(s.InterfaceName))
	el.check("tun_queues", checkRange(s.TUNQueues, 0, 16))
	el.check("dns_servers", checkIPs(s.DNSServers))
	el.check("routes", checkPrefixes(s.Routes))
	el.check("keepalive_s", checkRange(s.KeepaliveS, 1, 600))

	r := &s.Reality
	if r.TargetSNI != "" {
		el.check("reality.target_sni", checkHostname(r.TargetSNI))
	}
	if r.Dest != "" {
		el.check("reality.dest", checkHostPort(r.Dest, false))
	}
	for _, n := range r.ServerNames {
		if msg := checkHostname(n); msg != "" {
			el.add("reality.server_names", "%s", msg)
			break
		}
	}
	el.check("reality.short_ids", checkShortIDs(r.ShortIDs))
	el.check("reality.max_time_diff_s", checkRange(r.MaxTimeDiffS, 0, 86400))
	if r.PrivateKey != "" {
		el.check("reality.private_key", checkKey(r.PrivateKey))
		if r.TargetSNI == "" {
			el.add("reality.target_sni", "required when reality.private_key is set (the site to imitate)")
		}
		if len(r.ShortIDs) == 0 {
			el.add("reality.short_ids", "at least one short id is required when reality.private_key is set")
		}
	}

	if s.TLS.CertFile == "" {
		el.add("tls.cert_file", "must not be empty")
	}
	for _, n := range s.TLS.ServerNames {
		if msg := checkHostname(n); msg != "" {
			el.add("tls.server_names", "%s", msg)
			break
		}
	}
	if s.TLS.KeyFile == "" {
		el.add("tls.key_file", "must not be empty")
	}

	el.check("quic.port_range", checkPortRange(s.QUIC.PortRange))

	c := &s.Connection
	el.check("connection.handshake_timeout_s", checkRange(c.HandshakeTimeoutS, 1, 300))
	el.check("connection.max_handshakes_per_ip", checkRange(c.MaxHandshakesPerIP, 1, 100000))
	el.check("connection.max_concurrent_auth", checkRange(c.MaxConcurrentAuth, 1, 1024))
	el.check("connection.max_pending_handshakes", checkRange(c.MaxPendingHandshakes, 16, 1<<20))
	el.check("connection.max_pending_per_source", checkRange(c.MaxPendingPerSource, 1, max(c.MaxPendingHandshakes, 1)))
	el.check("connection.source_prefix_v4", checkRange(c.SourcePrefixV4, 8, 32))
	el.check("connection.source_prefix_v6", checkRange(c.SourcePrefixV6, 16, 128))
	el.check("connection.send_queue_packets", checkRange(c.SendQueuePackets, 16, 65536))
	el.check("connection.congestion_control", checkEnum(c.CongestionControl, CongestionControls...))
	checkFEC(el, c.FECMode, c.FECData, c.FECParity)

	if s.NAT.IPv4Interface != "" {
		el.check("nat.ipv4_interface", checkInterfaceName(s.NAT.IPv4Interface))
	}
	if s.NAT.IPv6Interface != "" {
		el.check("nat.ipv6_interface", checkInterfaceName(s.NAT.IPv6Interface))
	}
	el.check("nat.backend", checkEnum(s.NAT.Backend, "auto", "nftables", "iptables"))

	el.check("authentication.type", checkEnum(s.Authentication.Type, "file"))
	if s.Authentication.UsersFile == "" {
		el.add("authentication.users_file", "must not be empty")
	}

	el.check("fallback.mode", checkEnum(s.Fallback.Mode, "static", "proxy"))
	if s.Fallback.Mode == "proxy" || s.Fallback.ProxyURL != "" {
		el.check("fallback.proxy_url", checkProxyURL(s.Fallback.ProxyURL))
	}

	el.check("metrics.listen", checkHostPort(s.Metrics.Listen, true))

	checkObfuscation(el, &s.Obfuscation)
	checkLog(el, &s.Log)
	return el.err()
}

// checkTunnelV4 wants the server's own IPv4 tunnel address with the pool's
// prefix length, e.g. "10.66.0.1/24": prefix /8../30, address neither the
// network nor the broadcast address.
func checkTunnelV4(s string) string {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return fmt.Sprintf(`must be an IPv4 address with prefix length, e.g. "10.66.0.1/24" (got %q)`, s)
	}
	if p.Bits() < 8 || p.Bits() > 30 {
		return fmt.Sprintf("prefix length must be between /8 and /30 (got %q)", s)
	}
	if p.Addr() == p.Masked().Addr() {
		return fmt.Sprintf("%s is the network address; use a host address such as %s/%d", p.Addr(), p.Addr().Next(), p.Bits())
	}
	if p.Addr() == lastAddr(p) {
		return fmt.Sprintf("%s is the broadcast address of %s", p.Addr(), p.Masked())
	}
	return ""
}

// checkTunnelV6 wants the server's own IPv6 tunnel address with prefix
// length /64../126, e.g. "fd00::1/64".
func checkTunnelV6(s string) string {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
		return fmt.Sprintf(`must be an IPv6 address with prefix length, e.g. "fd00::1/64" (got %q)`, s)
	}
	if p.Bits() < 64 || p.Bits() > 126 {
		return fmt.Sprintf("prefix length must be between /64 and /126 (got %q)", s)
	}
	if p.Addr() == p.Masked().Addr() {
		return fmt.Sprintf("%s is the subnet-router anycast address; use a host address such as %s/%d", p.Addr(), p.Addr().Next(), p.Bits())
	}
	return ""
}

// lastAddr is the highest address in p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// parsePortRange parses "", "N" or "N-M" (1 <= N <= M <= 65535).
func parsePortRange(s string) (lo, hi int, err error) {
	if s == "" {
		return 0, 0, nil
	}
	a, b, isRange := strings.Cut(s, "-")
	if !isRange {
		b = a
	}
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || strings.HasPrefix(strings.TrimSpace(a), "+") || strings.HasPrefix(strings.TrimSpace(b), "+") {
		return 0, 0, fmt.Errorf(`must be "", "PORT" or "FIRST-LAST" (got %q)`, s)
	}
	if lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("ports must satisfy 1 <= first <= last <= 65535 (got %q)", s)
	}
	return lo, hi, nil
}

func checkPortRange(s string) string {
	if _, _, err := parsePortRange(s); err != nil {
		return err.Error()
	}
	return ""
}

// normalize: see Client.normalize.
func (s *Server) normalize() {
	normPrefixes(s.Routes)
	normAddrs(s.DNSServers)
	normLower(s.Reality.ShortIDs)
	if a, err := netip.ParseAddr(s.BindAddress); err == nil {
		s.BindAddress = a.String()
	}
}

func (s *Server) fileName() string { return fileName(s.Path, defaultServerName) }

// ResolvePath resolves a relative path (users_file, cert_file, key_file,
// fallback.dir) against the directory of the config file; absolute paths
// and "" are returned as is.
func (s *Server) ResolvePath(p string) string { return resolvePath(s.Path, p) }

// ListenAddr is bind_address:bind_port for net.Listen.
func (s *Server) ListenAddr() string {
	return net.JoinHostPort(s.BindAddress, strconv.Itoa(s.BindPort))
}

// TunnelPrefix is tunnel_network with the server's address kept (not
// masked), e.g. 10.66.0.1/24; the zero Prefix if it is invalid.
func (s *Server) TunnelPrefix() netip.Prefix {
	p, err := netip.ParsePrefix(s.TunnelNetwork)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}
	}
	return p
}

// TunnelPrefixV6 is tunnel_network_v6 (address kept); ok is false when IPv6
// is off or the value is invalid.
func (s *Server) TunnelPrefixV6() (netip.Prefix, bool) {
	if s.TunnelNetworkV6 == "" {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(s.TunnelNetworkV6)
	if err != nil || !p.Addr().Is6() {
		return netip.Prefix{}, false
	}
	return p, true
}

// RealityEnabled reports whether the server accepts reality: a private key
// is configured.
func (s *Server) RealityEnabled() bool { return s.Reality.PrivateKey != "" }

// RealityPrivateKey decodes reality.private_key.
func (s *Server) RealityPrivateKey() ([32]byte, error) {
	k, err := DecodeKey(s.Reality.PrivateKey)
	if err != nil {
		return k, &FieldError{File: s.fileName(), Key: "reality.private_key", Msg: err.Error()}
	}
	return k, nil
}

// RealityDest is where unauthenticated reality connections are spliced to:
// reality.dest, else target_sni:443.
func (s *Server) RealityDest() string {
	if s.Reality.Dest != "" {
		return s.Reality.Dest
	}
	if s.Reality.TargetSNI == "" {
		return ""
	}
	return net.JoinHostPort(s.Reality.TargetSNI, "443")
}

// RealityServerNames are the SNIs accepted for reality: server_names, else
// just target_sni.
func (s *Server) RealityServerNames() []string {
	if len(s.Reality.ServerNames) > 0 {
		return append([]string(nil), s.Reality.ServerNames...)
	}
	if s.Reality.TargetSNI == "" {
		return nil
	}
	return []string{s.Reality.TargetSNI}
}

// QUICPorts is the UDP port range QUIC listens on: quic.port_range, else just
// bind_port.
func (s *Server) QUICPorts() (first, last int) {
	lo, hi, err := parsePortRange(s.QUIC.PortRange)
	if err != nil || lo == 0 {
		return s.BindPort, s.BindPort
	}
	return lo, hi
}

// RoutePrefixes returns routes (pushed to clients) as masked prefixes.
func (s *Server) RoutePrefixes() ([]netip.Prefix, error) {
	return parsePrefixes(s.fileName(), "routes", s.Routes)
}

// DNSAddrs returns dns_servers (pushed to clients) as addresses.
func (s *Server) DNSAddrs() ([]netip.Addr, error) {
	return parseAddrs(s.fileName(), "dns_servers", s.DNSServers)
}

// checkPublicAddrs: IP addresses, at most one IPv4 and one IPv6.
func checkPublicAddrs(v []string) string {
	if msg := checkIPs(v); msg != "" {
		return msg
	}
	var v4, v6 int
	for _, a := range v {
		if netip.MustParseAddr(a).Unmap().Is4() {
			v4++
		} else {
			v6++
		}
	}
	if v4 > 1 || v6 > 1 {
		return fmt.Sprintf("at most one IPv4 and one IPv6 address (got %d and %d)", v4, v6)
	}
	return ""
}

// PublicAddrs is public_addresses parsed (Validate checked them).
func (s *Server) PublicAddrs() []netip.Addr {
	var out []netip.Addr
	for _, a := range s.PublicAddresses {
		if ip, err := netip.ParseAddr(a); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}
