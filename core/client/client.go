// Package client runs a Mirage client session end to end: resolve the
// server, dial the enabled transports in order, bring up the TUN device and
// the OS network configuration from the Welcome, pump packets, and reconnect
// with exponential backoff (1 s doubling to the configured maximum, reset
// after a successful connection) while keeping the TUN device and routes.
// It is OS-agnostic: the TUN constructor and the network configurator are
// injected by the caller (mirage-helper).
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mirage-vpn/mirage/core/config"
	"github.com/mirage-vpn/mirage/core/engine"
	"github.com/mirage-vpn/mirage/core/netcfg"
	"github.com/mirage-vpn/mirage/core/transport/quictun"
	"github.com/mirage-vpn/mirage/core/transport/reality"
	"github.com/mirage-vpn/mirage/core/transport/tlsx"
	"github.com/mirage-vpn/mirage/core/tundev"
	"github.com/mirage-vpn/mirage/core/wire"
)

// Implemented lists the transports this build can dial.
var Implemented = map[string]bool{config.ProtoTCPTLS: true, config.ProtoReality: true, config.ProtoQUIC: true}

// State of the client.
type State int

const (
	Connecting State = iota
	Connected
	Reconnecting
	Disconnected
)

func (s State) String() string {
	return [...]string{"connecting", "connected", "reconnecting", "disconnected"}[s]
}

// Event reports a state change.
type Event struct {
	State     State
	Welcome   *wire.Welcome // when Connected
	Protocol  string        // when Connected
	ZeroRTT   bool          // when Connected: the QUIC handshake resumed with 0-RTT
	MTU       int           // when Connected: the TUN device's MTU
	Server    string        // the address dialed
	Err       error         // why, when Reconnecting/Disconnected
	NextRetry time.Duration // when Reconnecting
	// Links, when Connected, describes the session's connections live.
	Links func() []engine.LinkInfo
}

// Options are the client's parts.
type Options struct {
	Config *config.Client
	// CreateTUN opens the tunnel device.
	CreateTUN func(name string, mtu int) (tundev.Device, error)
	// SuperTUN says the devices CreateTUN makes are expected to take GSO
	// super-packets whole (Linux); the first session announces it to the
	// server before the device exists, later ones ask the device.
	SuperTUN bool
	// Net applies addresses, routes and DNS.
	Net netcfg.Configurator
	// Resolve looks up the server host; nil uses net.DefaultResolver.
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// Dialers overrides the transports built from Config (tests).
	Dialers []engine.Dialer
	Logger  *slog.Logger
	OnEvent func(Event)
	Version string
	// Stats, when set, accumulates the traffic counters of every session
	// of this run.
	Stats *engine.Stats
	// Firewall is the kill switch, used when [network] kill_switch is on.
	Firewall netcfg.Firewall
	// DialControl, when set, is applied to every transport socket before it
	// connects (the platform binds it to the physical interface).
	DialControl func(network, address string, c syscall.RawConn) error
	// NetChanges receives a value when the OS's default network path
	// changed (Wi-Fi switch): the network configuration and the kill switch
	// are re-applied through the new gateway and the session reconnects
	// over the new path at once, without waiting for keepalives or backoff.
	NetChanges <-chan struct{}
}

// ErrRejected is returned when the server does not accept the credentials.
var ErrRejected = engine.ErrRejected

// Run connects and keeps the tunnel up until ctx is cancelled (returns nil)
// or a non-retryable error happens (bad credentials, TUN or OS config
// failure). Everything it changed in the OS is restored before it returns.
func Run(ctx context.Context, o Options) (err error) {
	cfg := o.Config
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	emit := func(e Event) {
		if o.OnEvent != nil {
			o.OnEvent(e)
		}
	}
	if _, err := cfg.UsableProtocols(Implemented); err != nil && o.Dialers == nil {
		return err
	}
	emit(Event{State: Connecting})

	host, port := cfg.ServerAddr()
	servers, err := resolve(ctx, o.Resolve, host)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", host, err)
	}
	target := netip.AddrPortFrom(servers[0], uint16(port))
	dialers := o.Dialers
	if dialers == nil {
		if dialers, err = dialersWith(cfg, target, log, o.DialControl); err != nil {
			return err
		}
	}

	// The kill switch goes on before the first packet can leave and stays
	// on through reconnects; it is removed when Run returns (a crash leaves
	// it on until cleanup).
	var ks *netcfg.KillSwitch
	if cfg.Network.KillSwitch {
		if o.Firewall == nil {
			return fmt.Errorf("%s: [network] kill_switch: not supported on this OS yet", cfg.Path)
		}
		ks = &netcfg.KillSwitch{TunInterface: cfg.Network.InterfaceName, AllowLAN: cfg.Network.AllowLAN}
		for _, a := range servers {
			ks.Servers = append(ks.Servers, netip.AddrPortFrom(a, uint16(port)))
		}
		ks.DNS, _ = cfg.DNSAddrs()
		if err := o.Firewall.Enable(*ks); err != nil {
			return fmt.Errorf("kill switch: %w", err)
		}
		log.Info("kill switch on")
		defer func() {
			if err != nil && ctx.Err() == nil {
				// Fail closed: only the user's disconnect (ctx) or a
				// cleanup turns the kill switch off, never an error.
				log.Warn("kill switch stays on: traffic stays blocked until you disconnect or run `mirage-helper cleanup`", "err", err)
				return
			}
			if derr := o.Firewall.Disable(); derr != nil {
				log.Error("kill switch off", "err", derr)
				err = errors.Join(err, derr)
			} else {
				log.Info("kill switch off")
			}
		}()
	}

	maxBackoff := time.Duration(cfg.Connection.ReconnectMaxBackoffS) * time.Second
	if maxBackoff <= 0 {
		maxBackoff = 32 * time.Second
	}
	params := engine.SessionParams{
		Dialers:           dialers,
		Username:          cfg.Authentication.Username,
		Password:          cfg.Authentication.Password,
		Parallel:          max(cfg.Connection.ParallelConnections, 1),
		QUICParallel:      max(cfg.Connection.QUICParallelConnections, 1),
		Mux:               muxMode(cfg.Connection.MuxMode),
		MaxLifetime:       time.Duration(cfg.Connection.MaxLifetimeS) * time.Second,
		MaxLifetimeJitter: time.Duration(cfg.Connection.MaxLifetimeJitterS) * time.Second,
		HandshakeTimeout:  time.Duration(cfg.Connection.HandshakeTimeoutS) * time.Second,
		Keepalive:         time.Duration(cfg.Connection.KeepaliveS) * time.Second,
		ClientVersion:     o.Version,
		Logger:            log,
		Stats:             o.Stats,
		Shaping:           cfg.Obfuscation.Shaping(),
		AcceptGSO:         o.SuperTUN,
		FEC:               cfg.Connection.FEC(),
	}

	// Dual stack: a second path over the server's other address family,
	// from DNS or, for a profile with an address, from the Welcome. Such an
	// address joins the bypass routes and the kill switch's allowed servers
	// (pathAddrs) when the network is configured.
	var pathAddrs []netip.Addr
	if cfg.Connection.DualStackEnabled && o.Dialers == nil {
		params.PathDialers = func(proto string, w *wire.Welcome) []engine.Dialer {
			var other netip.Addr
			for _, a := range append(slices.Clone(servers), w.PublicAddrs...) {
				if a.Is4() != target.Addr().Is4() {
					other = a
					break
				}
			}
			if !other.IsValid() {
				log.Warn("dual_stack_enabled, but the server has no address of the other family (DNS or its public_addresses)")
				return nil
			}
			if !slices.Contains(servers, other) && !slices.Contains(pathAddrs, other) {
				pathAddrs = append(pathAddrs, other)
			}
			ds, err := dialersWith(cfg, netip.AddrPortFrom(other, uint16(port)), log, o.DialControl)
			if err != nil {
				log.Warn("dual stack", "err", err)
				return nil
			}
			for _, d := range ds {
				if d.Protocol() == proto {
					log.Info("dual stack: second path", "server", netip.AddrPortFrom(other, uint16(port)))
					return []engine.Dialer{d}
				}
			}
			return nil
		}
	}

	for _, a := range []string{cfg.Network.IPv4Address, cfg.Network.IPv6Address} {
		if ip, err := netip.ParseAddr(a); err == nil {
			params.Request = append(params.Request, ip.Unmap())
		}
	}

	var (
		dev     tundev.Device
		tunnel  *engine.Tunnel
		applied *netcfg.Config
	)
	defer func() {
		if applied != nil {
			if cerr := o.Net.Close(); cerr != nil {
				log.Error("restore network configuration", "err", cerr)
				err = errors.Join(err, cerr)
			}
		}
		if dev != nil {
			dev.Close()
		}
		emit(Event{State: Disconnected, Err: err})
	}()

	// reapply re-installs the applied configuration and kill switch after a
	// network change: bypass and excluded routes follow the new gateway,
	// the kill switch the new LAN subnets. With the uplink down there is no
	// route to follow: that is not an error to stop on. The kill switch
	// stays as it was, and reapply is tried again at the next network
	// change and before every dial until it succeeds.
	reapplyPending := false
	reapply := func() {
		if applied == nil {
			return
		}
		err := o.Net.Set(*applied)
		if err == nil && ks != nil {
			err = o.Firewall.Enable(*ks)
		}
		if err != nil {
			if !reapplyPending {
				log.Warn("network not usable yet; keeping the kill switch (if any) and waiting for a route", "err", err)
			}
			reapplyPending = true
			return
		}
		if reapplyPending {
			log.Info("network usable again; routes re-installed")
		}
		reapplyPending = false
	}

	backoff := time.Second
	for {
		if reapplyPending {
			reapply()
		}
		// Each dial and handshake has its own timeout (connect_timeout_s,
		// handshake_timeout_s).
		sess, derr := engine.DialSession(ctx, params)
		if ctx.Err() != nil {
			if sess != nil {
				sess.Close()
			}
			return nil
		}
		if derr != nil {
			if errors.Is(derr, engine.ErrInvalidHello) {
				return derr // permanent: the profile must change first
			}
			if errors.Is(derr, engine.ErrRejected) {
				if params.Ticket != nil {
					// The ticket may have been refused (server restarted);
					// the password is sent too, so this is final.
					log.Debug("rejected with ticket and password")
				}
				return engine.ErrRejected
			}
			log.Warn("connect failed", "server", target, "err", derr, "retry_in", backoff)
			emit(Event{State: Reconnecting, Err: derr, NextRetry: backoff, Server: target.String()})
			switch waitRetry(ctx, backoff, o.NetChanges) {
			case retryCancelled:
				return nil
			case retryNetChanged:
				log.Info("network changed; reconnecting now")
				reapply()
				backoff = time.Second
				continue
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		w := sess.Welcome
		if dev == nil {
			mtu := cfg.Connection.MTU
			if mtu == 0 {
				mtu = int(w.MTU)
			}
			if mtu == 0 {
				mtu = 1420
			}
			quicMTU := quictun.TunnelMTU
			if muxMode(cfg.Connection.MuxMode) == wire.MuxRoundRobin {
				quicMTU -= wire.SeqLen // numbered packets (SEQDATA)
			}
			if slices.Contains(cfg.Protocols(), config.ProtoQUIC) && mtu > quicMTU {
				// Every packet must fit one QUIC datagram; a bigger one would
				// take the reliable stream (TCP over a reliable stream).
				log.Info("tunnel MTU lowered so packets fit QUIC datagrams", "mtu", quicMTU, "was", mtu)
				mtu = quicMTU
			}
			if dev, err = o.CreateTUN(cfg.Network.InterfaceName, mtu); err != nil {
				sess.Close()
				return fmt.Errorf("create tun %s: %w", cfg.Network.InterfaceName, err)
			}
			tunnel = engine.NewTunnel(dev, log)
			params.AcceptGSO = tundev.Super(dev) != nil
			go func() {
				if err := tunnel.Run(); err != nil {
					log.Error("tun read", "err", err)
				}
			}()
		}
		name, _ := dev.Name()
		mtu, _ := dev.MTU()
		nc, err := netConfig(cfg, w, name, mtu, append(slices.Clone(servers), pathAddrs...))
		if err != nil {
			sess.Close()
			return err
		}
		if applied == nil || !equalConfig(*applied, nc) {
			applied = &nc
			if err := o.Net.Set(nc); err != nil {
				sess.Close()
				return fmt.Errorf("configure network: %w", err)
			}
			if ks != nil {
				// The real device name, the resolvers the server pushed
				// and the addresses of every path.
				ks.TunInterface = name
				ks.DNS = nc.DNS
				ks.Servers = ks.Servers[:0]
				for _, a := range nc.Bypass {
					ks.Servers = append(ks.Servers, netip.AddrPortFrom(a, uint16(port)))
				}
				if err := o.Firewall.Enable(*ks); err != nil {
					sess.Close()
					return fmt.Errorf("kill switch: %w", err)
				}
			}
		}
		sess.Start(dev)
		tunnel.Attach(sess)
		backoff = time.Second
		params.Ticket = w.Ticket
		// Ask for the same addresses on reconnect so connections inside the
		// tunnel survive.
		params.Request = params.Request[:0]
		for _, p := range w.ClientAddrs {
			params.Request = append(params.Request, p.Addr())
		}
		log.Info("connected", "transport", sess.Protocol, "server", target, "addrs", w.ClientAddrs, "zero_rtt", sess.ZeroRTT)
		if hop := time.Duration(cfg.Connection.PortHoppingIntervalS) * time.Second; hop > 0 && sess.Protocol == config.ProtoQUIC && w.QUICPorts[0] != 0 {
			if qo, err := quicOptions(cfg, log, o.DialControl); err == nil {
				go hopPorts(ctx, sess, target.Addr(), int(target.Port()), hop, qo, time.Duration(cfg.Connection.ConnectTimeoutS)*time.Second, log)
			}
		} else if hop > 0 && sess.Protocol == config.ProtoQUIC {
			log.Warn("port hopping is on but the server advertises no QUIC ports; not hopping")
		}
		emit(Event{State: Connected, Welcome: w, Protocol: sess.Protocol, Server: target.String(), ZeroRTT: sess.ZeroRTT, MTU: mtu, Links: sess.Links})

		select {
		case <-ctx.Done():
			tunnel.Attach(nil)
			sess.Close()
			return nil
		case <-sess.Done():
			tunnel.Attach(nil)
			log.Warn("connection lost", "err", sess.Err())
			emit(Event{State: Reconnecting, Err: sess.Err(), NextRetry: 0, Server: target.String()})
		case <-o.NetChanges:
			// The old path may be gone: re-route through the new gateway and
			// move the session (resumed with its ticket, same addresses).
			log.Info("network changed; moving the session to the new path")
			tunnel.Attach(nil)
			sess.Close()
			emit(Event{State: Reconnecting, Err: errNetChanged, NextRetry: 0, Server: target.String()})
			reapply()
		}
	}
}

// muxMode maps [connection] mux_mode to the wire's scheduling mode.
func muxMode(m string) uint8 {
	switch m {
	case "round_robin":
		return wire.MuxRoundRobin
	case "active_standby":
		return wire.MuxActiveStandby
	}
	return wire.MuxFlow
}

// errNetChanged is the reason given when a session moves after a network
// change.
var errNetChanged = errors.New("the network changed")

// Outcomes of waitRetry.
const (
	retryNow = iota
	retryCancelled
	retryNetChanged
)

// waitRetry waits d before the next attempt; a network change cuts the
// wait short.
func waitRetry(ctx context.Context, d time.Duration, changes <-chan struct{}) int {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return retryCancelled
	case <-changes:
		return retryNetChanged
	case <-t.C:
		return retryNow
	}
}

func resolve(ctx context.Context, fn func(context.Context, string) ([]netip.Addr, error), host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	if fn == nil {
		fn = func(ctx context.Context, h string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", h)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	as, err := fn(ctx, host)
	if err != nil {
		return nil, err
	}
	if len(as) == 0 {
		return nil, errors.New("no addresses")
	}
	out := make([]netip.Addr, len(as))
	for i, a := range as {
		out[i] = a.Unmap()
	}
	return out, nil
}

// netConfig turns a Welcome and the profile into the OS configuration.
func netConfig(cfg *config.Client, w *wire.Welcome, name string, mtu int, servers []netip.Addr) (netcfg.Config, error) {
	nc := netcfg.Config{Interface: name, Addrs: w.ClientAddrs, MTU: mtu, Bypass: servers}
	routes, err := cfg.RoutePrefixes()
	if err != nil {
		return nc, err
	}
	have6 := false
	for _, p := range w.ClientAddrs {
		if p.Addr().Is6() {
			have6 = true
		}
	}
	// Server-pushed routes first, then the profile's; IPv6 routes only when
	// the tunnel has an IPv6 address.
	for _, p := range append(slices.Clone(w.Routes), routes...) {
		if p.Addr().Is6() && !have6 {
			continue
		}
		if !slices.Contains(nc.Routes, p) {
			nc.Routes = append(nc.Routes, p)
		}
	}
	if nc.ExcludedRoutes, err = cfg.ExcludedPrefixes(); err != nil {
		return nc, err
	}
	if cfg.Network.SetDNS {
		dns, err := cfg.DNSAddrs()
		if err != nil {
			return nc, err
		}
		// The profile's servers first, then the ones the server pushes.
		for _, a := range append(dns, w.DNS...) {
			if !slices.Contains(nc.DNS, a) {
				nc.DNS = append(nc.DNS, a)
			}
		}
	}
	return nc, nil
}

func equalConfig(a, b netcfg.Config) bool {
	return a.Interface == b.Interface && a.MTU == b.MTU && slices.Equal(a.Addrs, b.Addrs) &&
		slices.Equal(a.Routes, b.Routes) && slices.Equal(a.ExcludedRoutes, b.ExcludedRoutes) &&
		slices.Equal(a.Bypass, b.Bypass) && slices.Equal(a.DNS, b.DNS)
}

// Dialers builds the transports of the profile, in enabled_protocols order,
// skipping the ones this build does not implement.
func Dialers(cfg *config.Client, target netip.AddrPort, log *slog.Logger) ([]engine.Dialer, error) {
	return dialersWith(cfg, target, log, nil)
}

// dialersWith is Dialers with a socket Control hook (nil: none).
func dialersWith(cfg *config.Client, target netip.AddrPort, log *slog.Logger, control func(network, address string, c syscall.RawConn) error) ([]engine.Dialer, error) {
	protos, err := cfg.UsableProtocols(Implemented)
	if err != nil {
		return nil, err
	}
	var tcpDial func(ctx context.Context, network, addr string) (net.Conn, error)
	if control != nil {
		tcpDial = (&net.Dialer{Control: control}).DialContext
	}
	addr := target.String()
	timeout := time.Duration(cfg.Connection.ConnectTimeoutS) * time.Second
	var ds []engine.Dialer
	for _, p := range protos {
		switch p {
		case config.ProtoTCPTLS:
			pin, ok, err := cfg.Pin()
			if err != nil {
				return nil, err
			}
			o := tlsx.ClientOptions{
				ServerName: cfg.TLSServerName(), CAFile: cfg.ResolvePath(cfg.TLS.CAFile),
				Insecure: cfg.TLS.Insecure, Logger: log, Dial: tcpDial,
				Congestion: cfg.Connection.CongestionControl,
			}
			if cfg.TLS.CAFile == "" {
				o.CAFile = ""
			}
			if ok {
				o.PinnedSHA256 = pin[:]
			}
			ds = append(ds, &dialer{proto: p, timeout: timeout, dial: func(ctx context.Context) (engine.Conn, error) {
				return conn(tlsx.Dial(ctx, addr, o))
			}})
		case config.ProtoQUIC:
			o, err := quicOptions(cfg, log, control)
			if err != nil {
				return nil, err
			}
			ds = append(ds, quicDialer(addr, o, timeout))
		case config.ProtoReality:
			pub, err := cfg.RealityPublicKey()
			if err != nil {
				return nil, err
			}
			var sid [8]byte
			if len(cfg.Reality.ShortIDs) > 0 {
				if sid, err = config.DecodeShortID(cfg.Reality.ShortIDs[0]); err != nil {
					return nil, err
				}
			}
			o := reality.ClientOptions{ServerName: cfg.RealitySNI(), PublicKey: pub, ShortID: sid, Logger: log, Dial: tcpDial,
				Congestion: cfg.Connection.CongestionControl}
			ds = append(ds, &dialer{proto: p, timeout: timeout, dial: func(ctx context.Context) (engine.Conn, error) {
				return conn(reality.Dial(ctx, addr, o))
			}})
		}
	}
	for _, p := range cfg.Protocols() {
		if !Implemented[p] {
			log.Warn("transport not available in this build yet, skipped", "transport", p)
		}
	}
	return ds, nil
}

// quicOptions are the profile's QUIC dial options.
func quicOptions(cfg *config.Client, log *slog.Logger, control func(network, address string, c syscall.RawConn) error) (quictun.ClientOptions, error) {
	pin, ok, err := cfg.Pin()
	if err != nil {
		return quictun.ClientOptions{}, err
	}
	o := quictun.ClientOptions{
		TLS: tlsx.ClientOptions{
			ServerName: cfg.TLSServerName(), Insecure: cfg.TLS.Insecure, Logger: log,
		},
		SessionCache: sessionCache(cfg),
		Control:      control,
		PathFEC:      cfg.Connection.FEC() != nil,
	}
	if cfg.TLS.CAFile != "" {
		o.TLS.CAFile = cfg.ResolvePath(cfg.TLS.CAFile)
	}
	if ok {
		o.TLS.PinnedSHA256 = pin[:]
	}
	return o, nil
}

// quicDialer dials the QUIC transport to addr.
func quicDialer(addr string, o quictun.ClientOptions, timeout time.Duration) *dialer {
	return &dialer{proto: config.ProtoQUIC, timeout: timeout, dial: func(ctx context.Context) (engine.Conn, error) {
		c, err := quictun.Dial(ctx, addr, o)
		if err != nil {
			return nil, err
		}
		return c, nil
	}}
}

// hopDrain is how long a connection hopped away from may still deliver.
const hopDrain = 2 * time.Second

// hopPorts moves a QUIC session to a new UDP source port and a new server
// port from the advertised range every interval (±20 %), make-before-break
// (engine.Session.Hop), until the session or ctx ends. A failed hop keeps
// the current connection and tries again at the next interval.
func hopPorts(ctx context.Context, sess *engine.Session, server netip.Addr, port int, interval time.Duration, o quictun.ClientOptions, timeout time.Duration, log *slog.Logger) {
	lo, hi := int(sess.Welcome.QUICPorts[0]), int(sess.Welcome.QUICPorts[1])
	cur := port
	for {
		d := interval + time.Duration(mrand.Int64N(int64(interval)*2/5+1)) - interval/5
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-sess.Done():
			t.Stop()
			return
		case <-t.C:
		}
		next := lo + mrand.IntN(hi-lo+1)
		if hi > lo {
			for next == cur {
				next = lo + mrand.IntN(hi-lo+1)
			}
		}
		addr := netip.AddrPortFrom(server, uint16(next)).String()
		hctx, cancel := context.WithTimeout(ctx, timeout+10*time.Second)
		err := sess.Hop(hctx, quicDialer(addr, o, timeout), hopDrain)
		cancel()
		if err != nil {
			log.Warn("port hop failed; staying on the current connection", "server_port", next, "err", err)
			continue
		}
		cur = next
		log.Info("port hopped", "server", addr, "local", strings.Join(sess.LocalAddrs(), ","))
	}
}

// sessionCaches keep QUIC session tickets per profile for the life of the
// process, so a reconnect (or the next connect) resumes with 0-RTT.
var (
	sessionMu     sync.Mutex
	sessionCaches = map[string]tls.ClientSessionCache{}
)

// sessionCache returns the profile's ticket cache, keyed by server, name,
// user and pin so a changed profile never reuses another's tickets.
func sessionCache(cfg *config.Client) tls.ClientSessionCache {
	key := strings.Join([]string{cfg.ConnectionString, cfg.TLSServerName(), cfg.Authentication.Username, cfg.TLS.PinnedSHA256, cfg.TLS.CAFile}, "\x00")
	sessionMu.Lock()
	defer sessionMu.Unlock()
	c, ok := sessionCaches[key]
	if !ok {
		c = keepTickets{tls.NewLRUClientSessionCache(8)}
		sessionCaches[key] = c
	}
	return c
}

// keepTickets ignores the removal of a ticket (Put with nil), which
// happens when a dial fails — typically while the server is down — so the
// reconnect after the server is back still resumes with 0-RTT. A ticket the
// server no longer accepts costs one full handshake, after which the new
// ticket replaces it.
type keepTickets struct{ tls.ClientSessionCache }

func (k keepTickets) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		k.ClientSessionCache.Put(key, cs)
	}
}

// dialer is one transport of the profile; timeout bounds TCP + TLS.
type dialer struct {
	proto   string
	timeout time.Duration
	dial    func(ctx context.Context) (engine.Conn, error)
}

func (d *dialer) Protocol() string { return d.proto }

// conn converts a dial result without turning a nil *tlsx.Conn into a
// non-nil interface.
func conn(c *tlsx.Conn, err error) (engine.Conn, error) {
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (d *dialer) Dial(ctx context.Context) (engine.Conn, error) {
	if d.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.timeout)
		defer cancel()
	}
	return d.dial(ctx)
}

// FormatConnected renders the one-line summary mirage-helper prints.
func FormatConnected(e Event) string {
	mtu := e.MTU
	if mtu == 0 {
		mtu = int(e.Welcome.MTU)
	}
	s := "connected"
	for _, p := range e.Welcome.ClientAddrs {
		if p.Addr().Is4() {
			s += " ipv4=" + p.String()
		} else {
			s += " ipv6=" + p.String()
		}
	}
	s += " transport=" + e.Protocol + " server=" + e.Server + " mtu=" + strconv.Itoa(mtu)
	return s
}
