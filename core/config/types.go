// Package config holds the schema of client.toml and server.toml, their
// defaults, validation and loading. Every error names the file, the key and
// what is wrong; unknown keys are reported.
package config

import (
	"time"

	"github.com/mirage-vpn/mirage/core/shaping"
)

// Protocol names accepted in [connection] enabled_protocols.
const (
	ProtoReality = "reality"
	ProtoTCPTLS  = "tcp-tls"
	ProtoQUIC    = "quic"
)

// CongestionControls are the values of [connection] congestion_control on
// both ends: "bbr" sets BBR on each tunnel TCP socket (Linux and FreeBSD;
// where the kernel refuses it, or the OS has no per-socket choice, the
// system default stays and one line is logged); "system" leaves the OS
// default. Other algorithms are not offered: the system default covers
// them (set with sysctl), and BBR is the one a lossy long path needs.
var CongestionControls = []string{"bbr", "system"}

// Client is client.toml.
type Client struct {
	// ConnectionString is "host:port" of the server.
	ConnectionString string        `toml:"connection_string"`
	Connection       ClientConn    `toml:"connection"`
	Reality          ClientReality `toml:"reality"`
	TLS              ClientTLS     `toml:"tls"`
	Authentication   ClientAuth    `toml:"authentication"`
	Network          ClientNetwork `toml:"network"`
	Obfuscation      Obfuscation   `toml:"obfuscation"`
	Log              Log           `toml:"log"`

	// Path is the file the config was loaded from ("" if built in memory).
	Path string `toml:"-"`
}

type ClientConn struct {
	SNI                     string   `toml:"sni"`
	EnabledProtocols        []string `toml:"enabled_protocols"`
	ParallelConnections     int      `toml:"parallel_connections"`
	QUICParallelConnections int      `toml:"quic_parallel_connections"`
	DualStackEnabled        bool     `toml:"dual_stack_enabled"`
	MuxMode                 string   `toml:"mux_mode"` // flow | round_robin | active_standby
	MTU                     int      `toml:"mtu"`      // 0: use the server's
	ConnectTimeoutS         int      `toml:"connect_timeout_s"`
	HandshakeTimeoutS       int      `toml:"handshake_timeout_s"`
	KeepaliveS              int      `toml:"keepalive_s"` // 0: use the server's
	MaxLifetimeS            int      `toml:"max_lifetime_s"`
	MaxLifetimeJitterS      int      `toml:"max_lifetime_jitter_s"`
	PortHoppingIntervalS    int      `toml:"port_hopping_interval_s"`
	ReconnectMaxBackoffS    int      `toml:"reconnect_max_backoff_s"`
	CongestionControl       string   `toml:"congestion_control"` // bbr | system
	FECMode                 string   `toml:"fec"`                // auto | off
	FECData                 int      `toml:"fec_data"`           // 0: adapt
	FECParity               int      `toml:"fec_parity"`
}

type ClientReality struct {
	TargetSNI string   `toml:"target_sni"`
	ShortIDs  []string `toml:"short_ids"`
	PublicKey string   `toml:"public_key"`
}

type ClientTLS struct {
	ServerName   string `toml:"server_name"`
	CAFile       string `toml:"ca_file"`
	PinnedSHA256 string `toml:"pinned_sha256"`
	Insecure     bool   `toml:"insecure"`
}

type ClientAuth struct {
	Username string `toml:"username"`
	Password string `toml:"password"`
}

type ClientNetwork struct {
	Routes         []string `toml:"routes"`
	ExcludedRoutes []string `toml:"excluded_routes"`
	DNSServers     []string `toml:"dns_servers"`
	SetDNS         bool     `toml:"set_dns"`
	InterfaceName  string   `toml:"interface_name"`
	// IPv4Address / IPv6Address ask the server for these tunnel addresses
	// (honoured when inside its networks and free).
	IPv4Address string `toml:"ipv4_address"`
	IPv6Address string `toml:"ipv6_address"`
	// KillSwitch blocks traffic outside the tunnel while the profile is
	// active (also while reconnecting and after a crash, until cleanup);
	// AllowLAN keeps the directly connected subnets reachable.
	KillSwitch bool `toml:"kill_switch"`
	AllowLAN   bool `toml:"allow_lan"`
}

type Obfuscation struct {
	Enabled            bool    `toml:"enabled"`
	PaddingProbability float64 `toml:"padding_probability"`
	PaddingProfile     string  `toml:"padding_profile"`
	JitterMaxMS        int     `toml:"jitter_max_ms"`
	HeartbeatS         int     `toml:"heartbeat_s"`
}

type Log struct {
	Level  string `toml:"level"`  // debug | info | warn | error
	Format string `toml:"format"` // text | json
}

// Server is server.toml.
type Server struct {
	BindAddress     string   `toml:"bind_address"`
	BindPort        int      `toml:"bind_port"`
	PublicAddresses []string `toml:"public_addresses"`
	TunnelNetwork   string   `toml:"tunnel_network"`
	TunnelNetworkV6 string   `toml:"tunnel_network_v6"`
	IsolateClients  bool     `toml:"isolate_clients"`
	MTU             int      `toml:"mtu"`
	InterfaceName   string   `toml:"interface_name"`
	TUNQueues       int      `toml:"tun_queues"` // 0: one per core
	DNSServers      []string `toml:"dns_servers"`
	Routes          []string `toml:"routes"`
	KeepaliveS      int      `toml:"keepalive_s"`

	Reality        ServerReality `toml:"reality"`
	TLS            ServerTLS     `toml:"tls"`
	QUIC           ServerQUIC    `toml:"quic"`
	Connection     ServerConn    `toml:"connection"`
	NAT            NAT           `toml:"nat"`
	Authentication ServerAuth    `toml:"authentication"`
	Fallback       Fallback      `toml:"fallback"`
	Metrics        Metrics       `toml:"metrics"`
	Obfuscation    Obfuscation   `toml:"obfuscation"`
	Log            Log           `toml:"log"`

	Path string `toml:"-"`
}

type ServerReality struct {
	TargetSNI    string   `toml:"target_sni"`
	Dest         string   `toml:"dest"`
	ServerNames  []string `toml:"server_names"`
	ShortIDs     []string `toml:"short_ids"`
	PrivateKey   string   `toml:"private_key"`
	MaxTimeDiffS int      `toml:"max_time_diff_s"`
}

type ServerTLS struct {
	CertFile     string `toml:"cert_file"`
	KeyFile      string `toml:"key_file"`
	AutoGenerate bool   `toml:"auto_generate"`
	// ServerNames are the SNIs served by tcp-tls when [reality] shares the
	// port (besides none and the certificate's own names).
	ServerNames []string `toml:"server_names"`
}

type ServerQUIC struct {
	Enabled   bool   `toml:"enabled"`
	PortRange string `toml:"port_range"`
}

type ServerConn struct {
	ReuseSocket        bool `toml:"reuse_socket"`
	HandshakeTimeoutS  int  `toml:"handshake_timeout_s"`
	MaxHandshakesPerIP int  `toml:"max_handshakes_per_ip"` // per minute
	MaxConcurrentAuth  int  `toml:"max_concurrent_auth"`
	// Handshakes in progress: overall, and per source prefix.
	MaxPendingHandshakes int    `toml:"max_pending_handshakes"`
	MaxPendingPerSource  int    `toml:"max_pending_per_source"`
	SourcePrefixV4       int    `toml:"source_prefix_v4"`
	SourcePrefixV6       int    `toml:"source_prefix_v6"`
	SendQueuePackets     int    `toml:"send_queue_packets"`
	CongestionControl    string `toml:"congestion_control"` // bbr | system
	FECMode              string `toml:"fec"`                // auto | off
	FECData              int    `toml:"fec_data"`           // 0: adapt
	FECParity            int    `toml:"fec_parity"`
}

type NAT struct {
	IPv4Interface string `toml:"ipv4_interface"`
	IPv6Interface string `toml:"ipv6_interface"`
	Backend       string `toml:"backend"` // auto | nftables | iptables
}

type ServerAuth struct {
	Type      string `toml:"type"` // file
	UsersFile string `toml:"users_file"`
}

type Fallback struct {
	Mode     string `toml:"mode"`      // static | proxy
	ProxyURL string `toml:"proxy_url"` // for mode = proxy
	Dir      string `toml:"dir"`       // optional directory served in static mode
}

type Metrics struct {
	Enabled bool   `toml:"enabled"`
	Listen  string `toml:"listen"`
	// PerUser adds per-user byte counters (user names become label values).
	PerUser bool `toml:"per_user"`
}

// Shaping returns the traffic-shaping parameters of this section, or nil
// when it is disabled. An empty profile is the default one; one that does
// not parse (Check reports it) also falls back to the default.
func (o *Obfuscation) Shaping() *shaping.Params {
	if !o.Enabled {
		return nil
	}
	prof, err := shaping.ParseProfile(o.PaddingProfile)
	if err != nil {
		prof = nil
	}
	return &shaping.Params{
		Probability: o.PaddingProbability,
		Profile:     prof,
		JitterMax:   time.Duration(o.JitterMaxMS) * time.Millisecond,
		Heartbeat:   time.Duration(o.HeartbeatS) * time.Second,
	}
}
