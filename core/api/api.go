// Package api holds the types of the helper's local API (HTTP + JSON over a
// unix socket or a Windows named pipe), shared by the helper (core/daemon),
// its typed client (core/apiclient) and the GUI.
//
// Endpoints (all under /v1):
//
//	GET    /v1/status                 Status
//	GET    /v1/watch                  newline-delimited Status objects: one at once, then on every change and about once a second
//	GET    /v1/profiles               []Profile (without TOML)
//	GET    /v1/profiles/{name}        Profile (with TOML)
//	POST   /v1/profiles/import        ImportRequest -> Profile
//	PUT    /v1/profiles/{name}        UpdateRequest -> Profile (rename and/or replace the TOML)
//	DELETE /v1/profiles/{name}        204
//	POST   /v1/connect                ConnectRequest -> Status
//	POST   /v1/disconnect             Status
//	GET    /v1/logs?since=SEQ         []LogEntry (at most the last 1000)
//
// Errors are an HTTP status with an Error body.
package api

import "time"

// State of the helper's tunnel.
type State string

const (
	Disconnected  State = "disconnected"
	Connecting    State = "connecting"
	Connected     State = "connected"
	Reconnecting  State = "reconnecting"
	Disconnecting State = "disconnecting"
	Failed        State = "error"
)

// Error codes.
const (
	CodeBadRequest    = "bad_request"    // malformed or oversized request
	CodeInvalidConfig = "invalid_config" // the profile does not validate; Message names the key
	CodeNotFound      = "not_found"
	CodeConflict      = "conflict" // e.g. a profile of that name exists, or deleting the connected one
	CodeForbidden     = "forbidden"
	CodeRejected      = "auth_rejected" // the server did not accept the credentials
	CodeNetwork       = "network"       // cannot reach the server
	CodeSystem        = "system"        // TUN, routes or DNS could not be set up
	CodeInternal      = "internal"
)

// Error is the body of every non-2xx answer, and Status.Error.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Stats are the live counters of the current connection.
type Stats struct {
	TxBytes   uint64  `json:"tx_bytes"`
	RxBytes   uint64  `json:"rx_bytes"`
	TxPackets uint64  `json:"tx_packets"`
	RxPackets uint64  `json:"rx_packets"`
	TxRate    float64 `json:"tx_rate"` // bytes per second, over the last second
	RxRate    float64 `json:"rx_rate"`
	RTTMillis float64 `json:"rtt_ms,omitempty"`
}

// Status is the helper's whole visible state.
type Status struct {
	State         State     `json:"state"`
	Profile       string    `json:"profile,omitempty"`
	Error         *Error    `json:"error,omitempty"`
	Transport     string    `json:"transport,omitempty"` // reality | tcp-tls | quic
	Server        string    `json:"server,omitempty"`    // address dialed
	Addresses     []string  `json:"addresses,omitempty"` // tunnel addresses with prefix
	ConnectedAt   time.Time `json:"connected_at,omitzero"`
	LastHandshake time.Time `json:"last_handshake,omitzero"`
	NextRetry     time.Time `json:"next_retry,omitzero"` // when Reconnecting
	Stats         Stats     `json:"stats"`
	// Connections are the session's transport connections (multipath),
	// primary first; only while connected.
	Connections   []Connection `json:"connections,omitempty"`
	HelperVersion string       `json:"helper_version,omitempty"`
}

// Connection is one transport connection of the session.
type Connection struct {
	Transport string  `json:"transport"`
	Local     string  `json:"local"`
	Remote    string  `json:"remote"`
	Family    string  `json:"family"` // ipv4 | ipv6
	RTTMillis float64 `json:"rtt_ms,omitempty"`
	TxBytes   uint64  `json:"tx_bytes"`
	RxBytes   uint64  `json:"rx_bytes"`
	AgeSecs   float64 `json:"age_s"`
	// Congestion is the TCP congestion control in use, e.g. "bbr" (absent
	// for QUIC and where the OS does not tell).
	Congestion string `json:"congestion,omitempty"`
	// FEC is what forward error correction did on the connection (QUIC
	// only; absent elsewhere).
	FEC *FEC `json:"fec,omitempty"`
}

// FEC counts a QUIC connection's forward error correction, both ways.
type FEC struct {
	Sending    bool    `json:"sending"`   // this end protects what it sends
	Data       int     `json:"data"`      // group shape in use: data packets
	Parity     int     `json:"parity"`    // and parity packets per group
	SendLoss   float64 `json:"send_loss"` // loss measured on what this end sends (auto), 0-1
	DataSent   uint64  `json:"data_sent"`
	ParitySent uint64  `json:"parity_sent"`
	// What arrived from the server: packets seen, rebuilt from parity,
	// lost for good (more losses in their group than parity), and
	// malformed shards dropped; RecvLoss is the loss the decoder measured.
	Seen          uint64  `json:"seen"`
	Recovered     uint64  `json:"recovered"`
	Unrecoverable uint64  `json:"unrecoverable"`
	Malformed     uint64  `json:"malformed"`
	RecvLoss      float64 `json:"recv_loss"`
}

// Profile is a stored client profile.
type Profile struct {
	Name      string   `json:"name"`
	Server    string   `json:"server"` // connection_string
	Protocols []string `json:"protocols"`
	Username  string   `json:"username"`
	// KillSwitch and AllowLAN are the profile's [network] kill_switch and
	// allow_lan.
	KillSwitch bool   `json:"kill_switch"`
	AllowLAN   bool   `json:"allow_lan"`
	TOML       string `json:"toml,omitempty"` // only from GET /v1/profiles/{name}
}

// ImportRequest imports a profile from client.toml text or a mirage:// link.
// Name defaults to the server host.
type ImportRequest struct {
	Name string `json:"name,omitempty"`
	TOML string `json:"toml,omitempty"`
	Link string `json:"link,omitempty"`
}

// UpdateRequest renames a profile, replaces its TOML and/or switches its
// kill switch settings (applied after the TOML, when both are given).
type UpdateRequest struct {
	Name       string `json:"name,omitempty"`
	TOML       string `json:"toml,omitempty"`
	KillSwitch *bool  `json:"kill_switch,omitempty"`
	AllowLAN   *bool  `json:"allow_lan,omitempty"`
}

// ConnectRequest connects a stored profile.
type ConnectRequest struct {
	Profile string `json:"profile"`
}

// LogEntry is one helper log line.
type LogEntry struct {
	Seq     int64             `json:"seq"`
	Time    time.Time         `json:"time"`
	Level   string            `json:"level"`
	Message string            `json:"message"`
	Attrs   map[string]string `json:"attrs,omitempty"`
}

// MaxRequestBody bounds every request body.
const MaxRequestBody = 256 << 10
