package config

import "github.com/mirage-vpn/mirage/core/shaping"

// Default values. Keys whose zero value means "use the server's value" or
// "off" (client mtu, client keepalive_s, max_lifetime_s, ...) have no entry.
const (
	DefaultMuxMode              = "flow"
	DefaultParallelConnections  = 1
	DefaultConnectTimeoutS      = 10
	DefaultHandshakeTimeoutS    = 10
	DefaultRealityMaxTimeDiffS  = 90
	DefaultReconnectMaxBackoffS = 32
	DefaultClientInterface      = "mirage0"
	DefaultPaddingProbability   = 0.1
	DefaultLogLevel             = "info"
	DefaultLogFormat            = "text"
	// DefaultCongestionControl is [connection] congestion_control on both
	// ends: BBR for the tunnel's TCP connections (see CongestionControls).
	DefaultCongestionControl = "bbr"
	// DefaultFECMode is [connection] fec on both ends (see FECModes) when
	// neither fec nor fec_data is set: off, until FEC costs nothing on a
	// clean fast link (docs/perf-wan.md, "FEC on the LAN").
	DefaultFECMode = "auto"

	DefaultBindAddress        = "0.0.0.0"
	DefaultBindPort           = 443
	DefaultTunnelNetwork      = "10.66.0.1/24"
	DefaultServerMTU          = 1420
	DefaultServerInterface    = "mirage-srv0"
	DefaultServerKeepaliveS   = 25
	DefaultCertFile           = "cert.pem"
	DefaultKeyFile            = "key.pem"
	DefaultMaxHandshakesPerIP = 60
	DefaultMaxConcurrentAuth  = 4
	// Handshakes in progress overall, and from one source prefix (an IPv4
	// /32, an IPv6 /64).
	DefaultMaxPendingHandshakes = 1024
	DefaultMaxPendingPerSource  = 64
	DefaultSourcePrefixV4       = 32
	DefaultSourcePrefixV6       = 64
	DefaultSendQueuePackets     = 1024
	DefaultNATBackend           = "auto"
	DefaultAuthType             = "file"
	DefaultUsersFile            = "users"
	DefaultFallbackMode         = "static"
	DefaultMetricsListen        = "127.0.0.1:9090"
)

// DefaultEnabledProtocols is used when [connection] enabled_protocols is absent.
func DefaultEnabledProtocols() []string { return []string{ProtoTCPTLS} }

// DefaultRoutes is the full tunnel, used when [network] routes is absent.
func DefaultRoutes() []string { return []string{"0.0.0.0/0", "::/0"} }

// DefaultClient returns a client config with every default set, including
// the booleans whose default is true. It is what a file with no keys parses to.
func DefaultClient() *Client {
	c := &Client{}
	c.ApplyDefaults()
	c.Network.SetDNS = true
	return c
}

// ApplyDefaults fills zero-valued fields of a config built in memory with
// their defaults. A nil Routes becomes the full tunnel; an empty non-nil
// Routes is kept (only routes pushed by the server). Booleans are left alone
// because false cannot be told from unset: start from DefaultClient to get
// set_dns = true. The parsers start from DefaultClient, so explicit zero
// values in a file are kept and then validated.
func (c *Client) ApplyDefaults() {
	cc := &c.Connection
	if cc.EnabledProtocols == nil {
		cc.EnabledProtocols = DefaultEnabledProtocols()
	}
	setInt(&cc.ParallelConnections, DefaultParallelConnections)
	setInt(&cc.QUICParallelConnections, DefaultParallelConnections)
	setStr(&cc.MuxMode, DefaultMuxMode)
	setInt(&cc.ConnectTimeoutS, DefaultConnectTimeoutS)
	setInt(&cc.HandshakeTimeoutS, DefaultHandshakeTimeoutS)
	setInt(&cc.ReconnectMaxBackoffS, DefaultReconnectMaxBackoffS)
	setStr(&cc.CongestionControl, DefaultCongestionControl)
	setStr(&cc.FECMode, DefaultFECMode)
	if c.Network.Routes == nil {
		c.Network.Routes = DefaultRoutes()
	}
	setStr(&c.Network.InterfaceName, DefaultClientInterface)
	c.Obfuscation.applyDefaults()
	c.Log.applyDefaults()
}

// DefaultServer returns a server config with every default set, including
// tls.auto_generate = true. It is what a file with no keys parses to.
func DefaultServer() *Server {
	s := &Server{}
	s.ApplyDefaults()
	s.TLS.AutoGenerate = true
	return s
}

// ApplyDefaults fills zero-valued fields of a config built in memory with
// their defaults. Booleans are left alone (start from DefaultServer to get
// tls.auto_generate = true).
func (s *Server) ApplyDefaults() {
	setStr(&s.BindAddress, DefaultBindAddress)
	setInt(&s.BindPort, DefaultBindPort)
	setStr(&s.TunnelNetwork, DefaultTunnelNetwork)
	setInt(&s.MTU, DefaultServerMTU)
	setStr(&s.InterfaceName, DefaultServerInterface)
	setInt(&s.KeepaliveS, DefaultServerKeepaliveS)
	setStr(&s.TLS.CertFile, DefaultCertFile)
	setStr(&s.TLS.KeyFile, DefaultKeyFile)
	setInt(&s.Reality.MaxTimeDiffS, DefaultRealityMaxTimeDiffS)
	setInt(&s.Connection.HandshakeTimeoutS, DefaultHandshakeTimeoutS)
	setInt(&s.Connection.MaxHandshakesPerIP, DefaultMaxHandshakesPerIP)
	setInt(&s.Connection.MaxConcurrentAuth, DefaultMaxConcurrentAuth)
	setInt(&s.Connection.MaxPendingHandshakes, DefaultMaxPendingHandshakes)
	setInt(&s.Connection.MaxPendingPerSource, DefaultMaxPendingPerSource)
	setInt(&s.Connection.SourcePrefixV4, DefaultSourcePrefixV4)
	setInt(&s.Connection.SourcePrefixV6, DefaultSourcePrefixV6)
	setInt(&s.Connection.SendQueuePackets, DefaultSendQueuePackets)
	setStr(&s.Connection.CongestionControl, DefaultCongestionControl)
	setStr(&s.Connection.FECMode, DefaultFECMode)
	setStr(&s.NAT.Backend, DefaultNATBackend)
	setStr(&s.Authentication.Type, DefaultAuthType)
	setStr(&s.Authentication.UsersFile, DefaultUsersFile)
	setStr(&s.Fallback.Mode, DefaultFallbackMode)
	setStr(&s.Metrics.Listen, DefaultMetricsListen)
	s.Obfuscation.applyDefaults()
	s.Log.applyDefaults()
}

func (o *Obfuscation) applyDefaults() {
	// padding_probability only matters when enabled; a disabled section keeps
	// the default so that switching it on gives the documented behaviour.
	if o.PaddingProbability == 0 {
		o.PaddingProbability = DefaultPaddingProbability
	}
	setStr(&o.PaddingProfile, shaping.DefaultProfileString)
}

func (l *Log) applyDefaults() {
	setStr(&l.Level, DefaultLogLevel)
	setStr(&l.Format, DefaultLogFormat)
}

func setInt(p *int, v int) {
	if *p == 0 {
		*p = v
	}
}

func setStr(p *string, v string) {
	if *p == "" {
		*p = v
	}
}
