package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MarshalTOML writes the config as commented TOML that parses back to the
// same value. A nil list is written as a commented-out line (so it keeps its
// default); an empty list is written as []. The output contains the password:
// write it with mode 0600 (WriteFileAtomic).
func (c *Client) MarshalTOML() ([]byte, error) {
	w := &tomlWriter{}
	w.comment("Mirage client configuration. Reference: README.md, Configuration reference")
	w.blank()
	w.comment(`Server address as "host:port"; IPv6 in brackets: "[2001:db8::1]:443".`)
	w.str("connection_string", c.ConnectionString)

	cc := &c.Connection
	w.table("connection")
	w.comment("TLS SNI sent to the server (domain-fronting style); empty: the host of connection_string.")
	w.str("sni", cc.SNI)
	w.comment(`Transports tried in this order: "reality", "tcp-tls", "quic".`)
	w.strs("enabled_protocols", cc.EnabledProtocols)
	w.comment("Parallel TCP (reality/tcp-tls) and QUIC connections per session, 1-8.")
	w.integer("parallel_connections", cc.ParallelConnections)
	w.integer("quic_parallel_connections", cc.QUICParallelConnections)
	w.comment("Also connect over the server's other address family.")
	w.boolean("dual_stack_enabled", cc.DualStackEnabled)
	w.comment(`Multipath scheduling: "flow", "round_robin" or "active_standby".`)
	w.str("mux_mode", cc.MuxMode)
	w.comment("Tunnel MTU; 0 uses the server's.")
	w.integer("mtu", cc.MTU)
	w.comment("Timeouts in seconds.")
	w.integer("connect_timeout_s", cc.ConnectTimeoutS)
	w.integer("handshake_timeout_s", cc.HandshakeTimeoutS)
	w.comment("Keepalive interval in seconds; 0 uses the server's.")
	w.integer("keepalive_s", cc.KeepaliveS)
	w.comment("Rotate each connection after max_lifetime_s +- max_lifetime_jitter_s seconds; 0 = never.")
	w.integer("max_lifetime_s", cc.MaxLifetimeS)
	w.integer("max_lifetime_jitter_s", cc.MaxLifetimeJitterS)
	w.comment("QUIC port hopping interval in seconds; 0 = off.")
	w.integer("port_hopping_interval_s", cc.PortHoppingIntervalS)
	w.comment("Upper bound of the reconnect backoff in seconds.")
	w.integer("reconnect_max_backoff_s", cc.ReconnectMaxBackoffS)
	w.transportTuning(cc.CongestionControl, cc.FECMode, cc.FECData, cc.FECParity)

	w.table("reality")
	w.comment("Site the reality transport imitates; must match the server's target_sni.")
	w.str("target_sni", c.Reality.TargetSNI)
	w.comment("Short ids (hex, up to 16 digits) and the server's public key, from mirage-server keygen.")
	w.strs("short_ids", c.Reality.ShortIDs)
	w.str("public_key", c.Reality.PublicKey)

	w.table("tls")
	w.comment("Name to verify (default: sni, else the host of connection_string).")
	w.str("server_name", c.TLS.ServerName)
	w.comment("Trust this CA file, and/or pin the server certificate's SHA-256 (64 hex digits).")
	w.str("ca_file", c.TLS.CAFile)
	w.str("pinned_sha256", c.TLS.PinnedSHA256)
	w.comment("Skip certificate verification (unsafe; only for testing).")
	w.boolean("insecure", c.TLS.Insecure)

	w.table("authentication")
	w.str("username", c.Authentication.Username)
	w.str("password", c.Authentication.Password)

	n := &c.Network
	w.table("network")
	w.comment(`Routes sent into the tunnel; absent = everything ("0.0.0.0/0", "::/0"),`,
		"[] = only the routes the server pushes.")
	w.strs("routes", n.Routes)
	w.comment("Destinations that bypass the tunnel.")
	w.strs("excluded_routes", n.ExcludedRoutes)
	w.comment("DNS servers to use while connected (added to those the server pushes).")
	w.strs("dns_servers", n.DNSServers)
	w.comment("Apply DNS settings to the system.")
	w.boolean("set_dns", n.SetDNS)
	w.str("interface_name", n.InterfaceName)
	w.comment("Ask the server for these tunnel addresses (empty: any).")
	w.str("ipv4_address", n.IPv4Address)
	w.str("ipv6_address", n.IPv6Address)
	w.comment("Kill switch: block traffic outside the tunnel while connected or reconnecting.")
	w.boolean("kill_switch", n.KillSwitch)
	w.comment("With the kill switch, keep the local subnets reachable.")
	w.boolean("allow_lan", n.AllowLAN)

	writeObfuscation(w, &c.Obfuscation)
	writeLog(w, &c.Log)
	return w.result()
}

// MarshalTOML writes the config as commented TOML that parses back to the
// same value; see Client.MarshalTOML.
func (s *Server) MarshalTOML() ([]byte, error) {
	w := &tomlWriter{}
	w.comment("Mirage server configuration. Reference: README.md, Configuration reference")
	w.blank()
	w.comment(`Listen address and port (TCP for reality/tcp-tls, UDP for quic). "::" for IPv6.`)
	w.str("bind_address", s.BindAddress)
	w.integer("bind_port", s.BindPort)
	w.comment("The server's public addresses (one IPv4, one IPv6), told to dual-stack clients.")
	w.strs("public_addresses", s.PublicAddresses)
	w.comment("Server tunnel address and client pool; IPv6 optional (\"\" = off), e.g. \"fd00::1/64\".")
	w.str("tunnel_network", s.TunnelNetwork)
	w.str("tunnel_network_v6", s.TunnelNetworkV6)
	w.comment("Drop packets between clients.")
	w.boolean("isolate_clients", s.IsolateClients)
	w.integer("mtu", s.MTU)
	w.str("interface_name", s.InterfaceName)
	w.comment("TUN queues, each read by a goroutine of its own (Linux): 0 = one per core, 1 = single queue.")
	w.integer("tun_queues", s.TUNQueues)
	w.comment("DNS servers and routes pushed to clients.")
	w.strs("dns_servers", s.DNSServers)
	w.strs("routes", s.Routes)
	w.comment("Keepalive interval pushed to clients, seconds.")
	w.integer("keepalive_s", s.KeepaliveS)

	r := &s.Reality
	w.table("reality")
	w.comment("Reality is on when private_key is set (mirage-server keygen).",
		"Unauthenticated connections are spliced to dest (default target_sni:443).")
	w.str("target_sni", r.TargetSNI)
	w.str("dest", r.Dest)
	w.strs("server_names", r.ServerNames)
	w.strs("short_ids", r.ShortIDs)
	w.str("private_key", r.PrivateKey)
	w.comment("Maximum client clock difference in seconds; 0 = no check.")
	w.integer("max_time_diff_s", r.MaxTimeDiffS)

	w.table("tls")
	w.comment("Certificate and key (relative to this file); generated self-signed when missing and auto_generate is true.")
	w.str("cert_file", s.TLS.CertFile)
	w.str("key_file", s.TLS.KeyFile)
	w.boolean("auto_generate", s.TLS.AutoGenerate)
	w.comment("With [reality] on the same port: SNIs that reach tcp-tls (besides none and the certificate's names).")
	w.strs("server_names", s.TLS.ServerNames)

	w.table("quic")
	w.boolean("enabled", s.QUIC.Enabled)
	w.comment(`UDP ports for port hopping: "" (bind_port only), "N" or "N-M".`)
	w.str("port_range", s.QUIC.PortRange)

	c := &s.Connection
	w.table("connection")
	w.boolean("reuse_socket", c.ReuseSocket)
	w.integer("handshake_timeout_s", c.HandshakeTimeoutS)
	w.comment("Handshakes per source IP per minute.")
	w.integer("max_handshakes_per_ip", c.MaxHandshakesPerIP)
	w.comment("Password checks (Argon2id) running at once.")
	w.integer("max_concurrent_auth", c.MaxConcurrentAuth)
	w.comment("Handshakes in progress at once, and from one source prefix (IPv4 /source_prefix_v4, IPv6 /source_prefix_v6);")
	w.comment("when all are taken the oldest of the busiest source is closed.")
	w.integer("max_pending_handshakes", c.MaxPendingHandshakes)
	w.integer("max_pending_per_source", c.MaxPendingPerSource)
	w.integer("source_prefix_v4", c.SourcePrefixV4)
	w.integer("source_prefix_v6", c.SourcePrefixV6)
	w.comment("Per-client send queue, packets.")
	w.integer("send_queue_packets", c.SendQueuePackets)
	w.transportTuning(c.CongestionControl, c.FECMode, c.FECData, c.FECParity)

	w.table("nat")
	w.comment("Outgoing interfaces to masquerade client traffic on; empty = no NAT.")
	w.str("ipv4_interface", s.NAT.IPv4Interface)
	w.str("ipv6_interface", s.NAT.IPv6Interface)
	w.comment(`"auto", "nftables" or "iptables".`)
	w.str("backend", s.NAT.Backend)

	w.table("authentication")
	w.str("type", s.Authentication.Type)
	w.comment("Users file (username:$argon2id$... per line), relative to this file.")
	w.str("users_file", s.Authentication.UsersFile)

	w.table("fallback")
	w.comment(`What unauthenticated HTTPS clients see: "static" site or "proxy" to proxy_url.`)
	w.str("mode", s.Fallback.Mode)
	w.str("proxy_url", s.Fallback.ProxyURL)
	w.str("dir", s.Fallback.Dir)

	w.table("metrics")
	w.boolean("enabled", s.Metrics.Enabled)
	w.str("listen", s.Metrics.Listen)
	w.comment("Per-user byte counters (user names appear in the metrics).")
	w.boolean("per_user", s.Metrics.PerUser)

	writeObfuscation(w, &s.Obfuscation)
	writeLog(w, &s.Log)
	return w.result()
}

// congestionComment documents [connection] congestion_control in generated files.
const congestionComment = `TCP congestion control of the tunnel's connections: "bbr" (keeps speed under loss) or "system" (the OS default).`

func writeObfuscation(w *tomlWriter, o *Obfuscation) {
	w.table("obfuscation")
	w.boolean("enabled", o.Enabled)
	w.comment("Chance (0-1) of a padding frame, timing jitter bound, idle heartbeat (0 = off).")
	w.float("padding_probability", o.PaddingProbability)
	w.comment("Padding sizes: weight:min-max buckets (bytes, 0-1300).")
	w.str("padding_profile", o.PaddingProfile)
	w.integer("jitter_max_ms", o.JitterMaxMS)
	w.integer("heartbeat_s", o.HeartbeatS)
}

func writeLog(w *tomlWriter, l *Log) {
	w.table("log")
	w.comment(`"debug", "info", "warn" or "error"; "text" or "json".`)
	w.str("level", l.Level)
	w.str("format", l.Format)
}

// tomlWriter builds a TOML document line by line.
type tomlWriter struct {
	b       bytes.Buffer
	section string // current table, for error messages
	err     error
}

func (w *tomlWriter) blank() { w.b.WriteByte('\n') }

func (w *tomlWriter) comment(lines ...string) {
	for _, l := range lines {
		w.b.WriteString("# " + l + "\n")
	}
}

func (w *tomlWriter) table(name string) {
	w.section = name
	w.b.WriteString("\n[" + name + "]\n")
}

func (w *tomlWriter) str(key, v string) {
	w.b.WriteString(key + " = " + w.quote(key, v) + "\n")
}

func (w *tomlWriter) integer(key string, v int) {
	w.b.WriteString(key + " = " + strconv.Itoa(v) + "\n")
}

func (w *tomlWriter) boolean(key string, v bool) {
	w.b.WriteString(key + " = " + strconv.FormatBool(v) + "\n")
}

func (w *tomlWriter) float(key string, v float64) {
	var s string
	switch {
	case math.IsNaN(v):
		s = "nan"
	case math.IsInf(v, 1):
		s = "inf"
	case math.IsInf(v, -1):
		s = "-inf"
	default:
		s = strconv.FormatFloat(v, 'g', -1, 64)
		if !strings.ContainsAny(s, ".eE") {
			s += ".0"
		}
	}
	w.b.WriteString(key + " = " + s + "\n")
}

// strs writes a string list; nil is written commented out so that parsing
// the output yields the default again.
func (w *tomlWriter) strs(key string, v []string) {
	if v == nil {
		w.b.WriteString("# " + key + " = []  (not set: default)\n")
		return
	}
	q := make([]string, len(v))
	for i, s := range v {
		q[i] = w.quote(key, s)
	}
	w.b.WriteString(key + " = [" + strings.Join(q, ", ") + "]\n")
}

// quote renders s as a TOML basic string.
func (w *tomlWriter) quote(key, s string) string {
	if !utf8.ValidString(s) {
		if w.err == nil {
			if w.section != "" {
				key = w.section + "." + key
			}
			w.err = fmt.Errorf("marshal config: %s: value is not valid UTF-8", DisplayKey(key))
		}
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

func (w *tomlWriter) result() ([]byte, error) {
	if w.err != nil {
		return nil, w.err
	}
	if w.b.Len() == 0 {
		return nil, errors.New("marshal config: empty output")
	}
	return w.b.Bytes(), nil
}

// transportTuning writes the [connection] keys both ends share: the TCP
// congestion control and forward error correction.
func (w *tomlWriter) transportTuning(congestion, fecMode string, fecData, fecParity int) {
	w.comment(congestionComment)
	w.str("congestion_control", congestion)
	w.comment(fecComment...)
	w.str("fec", fecMode)
	w.integer("fec_data", fecData)
	w.integer("fec_parity", fecParity)
}
