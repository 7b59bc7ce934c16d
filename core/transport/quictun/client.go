package quictun

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/mirage-vpn/mirage/core/engine"
	"github.com/mirage-vpn/mirage/core/transport/tlsx"
)

// ALPN is the only protocol the QUIC transport speaks on the wire.
const ALPN = "h3"

// The tunnel request is an extended CONNECT (RFC 9220) for MASQUE's
// CONNECT-IP (RFC 9484), the request an IP-proxying HTTP/3 client (such as
// a privacy relay) makes; its body is our frame stream and its HTTP
// Datagrams carry the packets. Extended CONNECT has no content length, so
// the stream stays open both ways.
const (
	ConnectProtocol = "connect-ip"
	RequestPath     = "/.well-known/masque/ip/*/*/"
)

// Packet sizing. quic-go sends a burst of packets in one sendmsg (UDP GSO)
// only while each packet is exactly its maximum packet size, and a
// datagram it accepts is always smaller than that unless the connection
// IDs are 20 bytes long (its acceptance check assumes the longest
// header). So both ends use 20-byte connection IDs (as large CDNs do), the
// packet size is fixed (no path MTU discovery, which would move it away
// from the TUN MTU), and the TUN MTU is chosen so that a full-size IP
// packet makes a QUIC packet of exactly InitialPacketSize: bulk traffic
// then leaves in GSO batches instead of one system call per packet.
const (
	// InitialPacketSize is the UDP payload of every packet (quic-go's
	// default is 1280). 1400 fits a 1500-byte link with IPv6 and PPPoE.
	InitialPacketSize = 1400
	// ConnectionIDLength is the length of the connection IDs both ends
	// issue (QUIC's maximum).
	ConnectionIDLength = 20
	// TunnelMTU is the TUN MTU that makes a full-size IP packet a
	// full-size QUIC packet: 1400 − short header (1 + 20 connection ID
	// + 2 packet number) − AEAD tag 16 − DATAGRAM frame type 1 (the last
	// frame: no length) − quarter stream id 1 − Mirage type byte 1.
	TunnelMTU = InitialPacketSize - 1 - ConnectionIDLength - 2 - 16 - 1 - 1 - 1
)

// ClientOptions configure Dial.
type ClientOptions struct {
	// TLS carries the server name and the certificate verification mode
	// (pin, CA file, system roots, insecure), as for tcp-tls.
	TLS tlsx.ClientOptions
	// SessionCache keeps session tickets for resumption and 0-RTT; nil
	// disables both. Keep one per profile for the life of the process.
	SessionCache tls.ClientSessionCache
	// Control, when set, is applied to the UDP socket (interface binding).
	Control func(network, address string, c syscall.RawConn) error
	// LocalPort binds the UDP socket to this port (0: any).
	LocalPort int
	// KeepAlive is the QUIC keep-alive period that holds NAT bindings open
	// (0: 10 s).
	KeepAlive time.Duration
	// PathFEC puts a path FEC wrapper (PathFEC) between quic-go and the
	// socket, started by Conn.EnablePathFEC once the server agreed; until
	// then it passes packets through.
	PathFEC bool
}

// clientQUICConfig is the QUIC configuration of a client connection.
func clientQUICConfig(keepAlive time.Duration) *quic.Config {
	if keepAlive <= 0 {
		keepAlive = 10 * time.Second
	}
	return &quic.Config{
		EnableDatagrams:         true,
		InitialPacketSize:       InitialPacketSize,
		DisablePathMTUDiscovery: true, // see TunnelMTU
		KeepAlivePeriod:         keepAlive,
		MaxIdleTimeout:          60 * time.Second,
	}
}

// Dial opens a QUIC connection to addr (host:port, UDP), resuming with
// 0-RTT when SessionCache holds a ticket, and sends the tunnel request. The
// first Write (the Hello) goes out in the 0-RTT flight when resumed; the
// first Read returns the server's frames once it answered 200, or an error
// wrapping engine.ErrRejected when it answered like a web site.
func Dial(ctx context.Context, addr string, o ClientOptions) (*Conn, error) {
	serverName := o.TLS.ServerName
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("quic dial %q: %w", addr, err)
	}
	if serverName == "" {
		serverName = host
	}
	verify, err := o.TLS.Verifier(serverName, addr)
	if err != nil {
		return nil, err
	}
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("quic dial %s: %w", addr, err)
	}
	network := "udp4"
	if raddr.IP.To4() == nil {
		network = "udp6"
	}
	lc := net.ListenConfig{Control: o.Control}
	pc, err := lc.ListenPacket(ctx, network, fmt.Sprintf(":%d", o.LocalPort))
	if err != nil {
		return nil, fmt.Errorf("quic dial %s: open UDP socket: %w", addr, err)
	}
	gate := NewGate()
	var pf *PathFEC
	tc := WrapUDP(pc, gate)
	if o.PathFEC {
		// The wrapper reads the socket itself: no receive coalescing.
		pf = NewClientPathFEC(pc, gate)
		tc = pf.Conn()
	}
	tr := &quic.Transport{Conn: tc, ConnectionIDLength: ConnectionIDLength}
	var fresh *freshPath
	if o.PathFEC {
		fresh = &freshPath{open: func() (*PathFEC, *quic.Transport, func(), error) {
			pc, err := lc.ListenPacket(context.Background(), network, ":0")
			if err != nil {
				return nil, nil, nil, err
			}
			pf := NewClientPathFEC(pc, gate)
			tr := &quic.Transport{Conn: pf.Conn(), ConnectionIDLength: ConnectionIDLength}
			return pf, tr, func() { tr.Close(); pf.Close(); pc.Close() }, nil
		}}
	}
	release := func() {
		if fresh != nil {
			fresh.close()
		}
		tr.Close()
		if pf != nil {
			pf.Close() // its flush timers too
		}
		pc.Close()
	}
	tlsConf := &tls.Config{
		ServerName: serverName,
		NextProtos: []string{ALPN},
		MinVersion: tls.VersionTLS13,
		// Verification is done by verify, in every mode.
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: verify,
		ClientSessionCache:    o.SessionCache,
	}
	qc, err := tr.DialEarly(ctx, raddr, tlsConf, clientQUICConfig(o.KeepAlive))
	if err != nil {
		release()
		return nil, fmt.Errorf("quic dial %s: %w", addr, err)
	}
	// HTTP/3 datagrams are handled by Conn on qc itself (see the package
	// doc), so the http3 layer has them off.
	cc := (&http3.Transport{}).NewClientConn(qc)
	rs, err := cc.OpenRequestStream(ctx)
	if err != nil {
		qc.CloseWithError(0, "")
		release()
		return nil, fmt.Errorf("quic dial %s: open request stream: %w", addr, err)
	}
	req := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Scheme: "https", Host: serverName, Path: RequestPath},
		Proto:  ConnectProtocol, ProtoMajor: 3,
		Host: serverName,
		Header: http.Header{
			"Capsule-Protocol": {"?1"},
			"User-Agent":       {tlsx.ChromeUserAgent},
		},
	}
	if err := rs.SendRequestHeader(req); err != nil {
		qc.CloseWithError(0, "")
		release()
		return nil, fmt.Errorf("quic dial %s: send request: %w", addr, err)
	}
	readResponse := func() error {
		rsp, err := rs.ReadResponse()
		if err != nil {
			var he *http3.Error
			if errors.As(err, &he) {
				// The stream was refused at the HTTP/3 layer, as a web
				// server does with a request it will not serve.
				return fmt.Errorf("%w (HTTP/3 error %v)", engine.ErrRejected, he.ErrorCode)
			}
			return fmt.Errorf("read response: %w", err)
		}
		if rsp.StatusCode != http.StatusOK {
			rsp.Body.Close()
			return fmt.Errorf("%w (HTTP status %d)", engine.ErrRejected, rsp.StatusCode)
		}
		return nil
	}
	c := newConn(qc, rs, qc, gate, rs.StreamID(), true, readResponse, release)
	if pf != nil {
		c.pf, c.fresh, c.peer = pf, fresh, raddr
	}
	return c, nil
}
