package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mirage-vpn/mirage/core/auth"
	"github.com/mirage-vpn/mirage/core/config"
	"github.com/mirage-vpn/mirage/core/netcfg"
	"github.com/mirage-vpn/mirage/core/transport/reality"
	"github.com/mirage-vpn/mirage/core/transport/tlsx"
	"github.com/mirage-vpn/mirage/platform/nat"
	"github.com/mirage-vpn/mirage/platform/osnet"
	"github.com/mirage-vpn/mirage/platform/tun"
	"github.com/mirage-vpn/mirage/server"
	"github.com/mirage-vpn/mirage/server/fallback"
	"github.com/prometheus/client_golang/prometheus"
)

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", "", "server.toml")
	fs.StringVar(cfgPath, "config", "", "server.toml")
	dataDir := fs.String("data-dir", "", "directory for a generated default configuration")
	stateDir := fs.String("state-dir", defaultStateDir, "where OS changes are journaled, and the admin socket")
	insecure := fs.Bool("insecure-permissions", false, "serve even when the config, users or key file is writable by other users (logged as INSECURE)")
	g := genFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		return fail(stderr, "run: unexpected argument %q", fs.Arg(0))
	}
	switch {
	case *cfgPath == "" && *dataDir == "":
		return fail(stderr, "run: need -c server.toml or --data-dir DIR")
	case *cfgPath != "" && *dataDir != "":
		return fail(stderr, "run: -c and --data-dir are exclusive")
	}
	if *dataDir != "" {
		p, err := ensureDataDir(*dataDir, g, stdout)
		if err != nil {
			return fail(stderr, "run: %v", err)
		}
		*cfgPath = p
	}
	cfg, err := config.LoadServer(*cfgPath)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	log := cfg.Log.Logger(stderr)
	if err := checkFiles(cfg, log, *insecure); err != nil {
		return fail(stderr, "%v", err)
	}
	if err := run(cfg, *stateDir, log); err != nil {
		return fail(stderr, "%v", err)
	}
	return 0
}

// run composes the server: users, certificate, TUN, addresses, NAT, listener.
func run(cfg *config.Server, stateDir string, log *slog.Logger) error {
	if err := checkNATInterfaces(cfg); err != nil {
		return err
	}
	users, err := loadUsers(cfg)
	if err != nil {
		return err
	}
	if len(users.Names()) == 0 {
		log.Warn("the users file has no users: nobody can connect", "file", cfg.ResolvePath(cfg.Authentication.UsersFile))
	}
	certFile, keyFile := cfg.ResolvePath(cfg.TLS.CertFile), cfg.ResolvePath(cfg.TLS.KeyFile)
	if cfg.TLS.AutoGenerate {
		pin, generated, err := tlsx.EnsureCert(certFile, keyFile, []string{cfg.BindAddress})
		if err != nil {
			return fmt.Errorf("certificate: %w", err)
		}
		if generated {
			log.Info("generated a self-signed certificate", "file", certFile)
		}
		log.Info("certificate pin (tls.pinned_sha256 for clients)", "sha256", pin)
	}
	cert, err := tlsx.LoadReloadableCert(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	tlsConf := cert.ServerConfig()
	siteDir := ""
	if cfg.Fallback.Dir != "" {
		siteDir = cfg.ResolvePath(cfg.Fallback.Dir)
	}
	site, err := fallback.New(fallback.Config{Mode: cfg.Fallback.Mode, ProxyURL: cfg.Fallback.ProxyURL, Dir: siteDir}, log)
	if err != nil {
		return fmt.Errorf("fallback site: %w", err)
	}
	defer site.Close()

	// Undo leftovers of a crashed run before changing anything.
	if err := nat.CleanupLeftovers(log, stateDir); err != nil {
		log.Warn("removing leftover NAT rules", "err", err)
	}
	if err := osnet.Cleanup(log, stateDir); err != nil {
		log.Warn("removing leftover network state", "err", err)
	}

	queues := cfg.TUNQueues
	if queues == 0 {
		queues = tun.DefaultQueues()
	}
	dev, err := tun.CreateMultiQueueTUN(cfg.InterfaceName, cfg.MTU, queues)
	if err != nil {
		return fmt.Errorf("create tun %s: %w", cfg.InterfaceName, err)
	}
	defer dev.Close()
	name, _ := dev.Name()
	v4 := cfg.TunnelPrefix()
	addrs := []netip.Prefix{v4}
	v6, has6 := cfg.TunnelPrefixV6()
	if has6 {
		addrs = append(addrs, v6)
	}
	netc, err := osnet.New(log, stateDir)
	if err != nil {
		return err
	}
	if err := netc.Set(netcfg.Config{Interface: name, Addrs: addrs, MTU: cfg.MTU}); err != nil {
		netc.Close()
		return fmt.Errorf("configure %s: %w", name, err)
	}
	defer netc.Close()

	var natRules *nat.Rules
	if cfg.NAT.IPv4Interface != "" || cfg.NAT.IPv6Interface != "" {
		nc := nat.Config{TunInterface: name, TunnelV4: v4.Masked(), IPv4Interface: cfg.NAT.IPv4Interface,
			IPv6Interface: cfg.NAT.IPv6Interface, Backend: cfg.NAT.Backend, StateDir: stateDir}
		if has6 {
			nc.TunnelV6 = v6.Masked()
		}
		rules, err := nat.Setup(log, nc)
		if err != nil {
			return fmt.Errorf("nat: %w", err)
		}
		natRules = rules
		defer func() {
			if err := rules.Close(); err != nil {
				log.Error("removing NAT rules", "err", err)
			}
		}()
		log.Info("NAT enabled", "ipv4_interface", cfg.NAT.IPv4Interface, "ipv6_interface", cfg.NAT.IPv6Interface)
	}

	opts := server.Options{Config: cfg, Logger: log, TUN: dev, Users: users, TLS: tlsConf, Fallback: site}
	if cfg.RealityEnabled() {
		rs, err := realityServer(cfg, log)
		if err != nil {
			return err
		}
		opts.Reality = rs
		opts.TLSNames = append(certNames(cert.Current()), cfg.TLS.ServerNames...)
		log.Info("reality enabled", "server_names", cfg.RealityServerNames(), "dest", rs.Dest(), "tcp_tls_names", opts.TLSNames)
	}
	srv, err := server.New(opts)
	if err != nil {
		return err
	}
	lc := net.ListenConfig{}
	if cfg.Connection.ReuseSocket {
		lc.Control = reusePort
	}
	ln, err := lc.Listen(context.Background(), "tcp", cfg.ListenAddr())
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	log.Info("listening", "addr", ln.Addr().String(), "tun", name, "tunnel", addrs, "version", version)

	var udp []net.PacketConn
	if cfg.QUIC.Enabled {
		if udp, err = listenQUIC(cfg, lc); err != nil {
			ln.Close()
			return err
		}
		defer func() {
			for _, pc := range udp {
				pc.Close()
			}
		}()
	}

	if cfg.Metrics.Enabled {
		mln, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("metrics: listen %s: %w", cfg.Metrics.Listen, err)
		}
		mux := http.NewServeMux()
		var extra []prometheus.Collector
		if natRules != nil {
			extra = append(extra, natCollector{natRules})
		}
		mux.Handle("/metrics", srv.MetricsHandler(cfg.Metrics.PerUser, extra...))
		ms := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
		go ms.Serve(mln)
		defer ms.Close()
		log.Info("metrics listening", "addr", mln.Addr().String(), "per_user", cfg.Metrics.PerUser)
	}

	stopAdmin, err := serveAdmin(adminSocket(stateDir), srv, log)
	if err != nil {
		log.Warn("no admin socket: `mirage-server status` will not answer", "err", err)
	} else {
		defer stopAdmin()
	}

	tunDone := make(chan error, 1)
	go func() { tunDone <- srv.RunTUN() }()
	serveDone := make(chan error, 2)
	go func() { serveDone <- srv.Serve(ln) }()
	if len(udp) > 0 {
		go func() {
			if err := srv.ServeQUIC(udp); err != nil {
				serveDone <- err
			}
		}()
	}

	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	var runErr error
loop:
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGHUP {
				// Sessions are untouched: they keep their connections.
				if err := users.Reload(cfg.ResolvePath(cfg.Authentication.UsersFile)); err != nil {
					log.Error("reload users", "err", err)
				} else {
					log.Info("users reloaded", "count", len(users.Names()))
				}
				if err := cert.Reload(); err != nil {
					log.Error("reload certificate (the old one is still served)", "err", err)
				} else {
					log.Info("certificate reloaded", "file", certFile)
				}
				continue
			}
			log.Info("shutting down", "signal", s.String())
			break loop
		case err := <-serveDone:
			runErr = err
			break loop
		case err := <-tunDone:
			runErr = fmt.Errorf("tun: %v", err)
			break loop
		}
	}
	srv.Close()
	ln.Close()
	return runErr
}

// realityServer builds the REALITY side of the shared port from [reality].
func realityServer(cfg *config.Server, log *slog.Logger) (*reality.Server, error) {
	priv, err := cfg.RealityPrivateKey()
	if err != nil {
		return nil, err
	}
	rc := reality.ServerConfig{
		PrivateKey: priv, ServerNames: cfg.RealityServerNames(), Dest: cfg.RealityDest(),
		MaxTimeDiff: time.Duration(cfg.Reality.MaxTimeDiffS) * time.Second, Logger: log,
	}
	for _, s := range cfg.Reality.ShortIDs {
		id, err := config.DecodeShortID(s)
		if err != nil {
			return nil, fmt.Errorf("%s: [reality] short_ids: %w", cfg.Path, err)
		}
		rc.ShortIDs = append(rc.ShortIDs, id)
	}
	rs, err := reality.NewServer(rc)
	if err != nil {
		return nil, fmt.Errorf("%s: [reality]: %w", cfg.Path, err)
	}
	return rs, nil
}

// certNames are the DNS names of the tcp-tls certificate: SNIs that reach
// tcp-tls when REALITY shares the port.
func certNames(c *tls.Certificate) []string {
	if c == nil || len(c.Certificate) == 0 {
		return nil
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil
	}
	return leaf.DNSNames
}

// genOpts are the flags used when --data-dir generates a configuration.
type genOpts struct {
	bind, host, tun4, tun6, natIf string
	realityTarget, realityDest    string
	port                          int
}

func genFlags(fs *flag.FlagSet) *genOpts {
	g := &genOpts{}
	fs.StringVar(&g.bind, "bind", "0.0.0.0", "bind address (generation only)")
	fs.IntVar(&g.port, "port", 443, "port (generation only)")
	fs.StringVar(&g.host, "host", "", "address clients connect to, written into the profile (default: the bind address)")
	fs.StringVar(&g.tun4, "tunnel-network", "", "tunnel network, the server's address with prefix (generation only)")
	fs.StringVar(&g.tun6, "tunnel-network-v6", "", "IPv6 tunnel network (generation only)")
	fs.StringVar(&g.natIf, "nat-interface", "", "egress interface to masquerade through (generation only)")
	fs.StringVar(&g.realityTarget, "reality-target", "", "enable REALITY imitating this site (its SNI); generates the keys (generation only)")
	fs.StringVar(&g.realityDest, "reality-dest", "", "where unauthenticated REALITY connections are spliced (default: target:443; generation only)")
	return g
}

const firstUser = "mirage"

// ensureDataDir writes a default server.toml, users file, certificate and
// client.toml into dir unless server.toml exists; it prints the client
// profile to stdout when it generates one. It returns the server.toml path.
func ensureDataDir(dir string, g *genOpts, stdout io.Writer) (string, error) {
	path := filepath.Join(dir, "server.toml")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	cfg := config.DefaultServer()
	cfg.BindAddress = g.bind
	cfg.BindPort = g.port
	// QUIC on the same port number over UDP; clients opt in with "quic" in
	// enabled_protocols.
	cfg.QUIC.Enabled = true
	if g.tun4 != "" {
		cfg.TunnelNetwork = g.tun4
	}
	cfg.TunnelNetworkV6 = g.tun6
	cfg.NAT.IPv4Interface = g.natIf
	if g.tun6 != "" {
		cfg.NAT.IPv6Interface = g.natIf
	}
	if g.realityTarget != "" {
		priv, _, sid, err := newRealityKeys()
		if err != nil {
			return "", err
		}
		cfg.Reality.PrivateKey = config.EncodeKey(priv)
		cfg.Reality.TargetSNI = g.realityTarget
		cfg.Reality.Dest = g.realityDest
		cfg.Reality.ShortIDs = []string{sid}
	}
	cfg.Path = path
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	host := g.host
	if host == "" {
		host = g.bind
	}
	hosts := []string{host}
	pin, _, err := tlsx.EnsureCert(filepath.Join(dir, cfg.TLS.CertFile), filepath.Join(dir, cfg.TLS.KeyFile), hosts)
	if err != nil {
		return "", fmt.Errorf("certificate: %w", err)
	}
	password, err := randomPassword(20)
	if err != nil {
		return "", err
	}
	users := auth.NewUsers()
	if err := users.Set(firstUser, password); err != nil {
		return "", err
	}
	if err := users.Save(filepath.Join(dir, cfg.Authentication.UsersFile)); err != nil {
		return "", err
	}
	client, err := clientProfile(cfg, hostPort(host, cfg.BindPort), pin, firstUser, password)
	if err != nil {
		return "", err
	}
	ct, err := client.MarshalTOML()
	if err != nil {
		return "", err
	}
	if err := config.WriteFileAtomic(filepath.Join(dir, "client.toml"), ct, 0o600); err != nil {
		return "", err
	}
	st, err := cfg.MarshalTOML()
	if err != nil {
		return "", err
	}
	if err := config.WriteFileAtomic(path, st, 0o600); err != nil {
		return "", err
	}
	fmt.Fprintf(stdout, "# Generated %s, a users file with user %q and a self-signed certificate in %s.\n", path, firstUser, dir)
	// The profile holds the password: it goes to a 0600 file only, never
	// to stdout (journald, docker logs keep what a service prints).
	fmt.Fprintf(stdout, "# The first client profile, with its password, is in %s (mode 0600): copy it to the client, or run `mirage-server invite` for a link.\n", filepath.Join(dir, "client.toml"))
	return path, nil
}

// maxQUICPorts bounds the UDP sockets of a port-hopping range.
const maxQUICPorts = 1024

// listenQUIC opens the UDP sockets QUIC serves: bind_port and every port of
// quic.port_range.
func listenQUIC(cfg *config.Server, lc net.ListenConfig) ([]net.PacketConn, error) {
	ports := []int{cfg.BindPort}
	lo, hi := cfg.QUICPorts()
	if hi-lo+1 > maxQUICPorts {
		return nil, fmt.Errorf("%s: [quic] port_range: %d ports; at most %d", cfg.Path, hi-lo+1, maxQUICPorts)
	}
	for p := lo; p <= hi; p++ {
		if p != cfg.BindPort {
			ports = append(ports, p)
		}
	}
	var pcs []net.PacketConn
	for _, p := range ports {
		pc, err := lc.ListenPacket(context.Background(), "udp", net.JoinHostPort(cfg.BindAddress, strconv.Itoa(p)))
		if err != nil {
			for _, c := range pcs {
				c.Close()
			}
			return nil, fmt.Errorf("quic: listen on UDP port %d: %w", p, err)
		}
		pcs = append(pcs, pc)
	}
	return pcs, nil
}

// hostPort adds port to host unless it has one; "[v6]" is unbracketed first.
func hostPort(host string, port int) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// clientProfile is the client.toml for a user of srv: tcp-tls with the
// certificate pin, and REALITY first when the server has it.
func clientProfile(srv *config.Server, addr, pin, user, password string) (*config.Client, error) {
	c := config.DefaultClient()
	c.ConnectionString = addr
	c.Connection.EnabledProtocols = []string{config.ProtoTCPTLS}
	c.TLS.PinnedSHA256 = pin
	c.Authentication.Username = user
	c.Authentication.Password = password
	if srv.RealityEnabled() {
		priv, err := srv.RealityPrivateKey()
		if err != nil {
			return nil, err
		}
		pub, err := reality.PublicKey(priv)
		if err != nil {
			return nil, fmt.Errorf("[reality] private_key: %w", err)
		}
		c.Connection.EnabledProtocols = []string{config.ProtoReality, config.ProtoTCPTLS}
		c.Reality.PublicKey = config.EncodeKey(pub)
		c.Reality.TargetSNI = srv.RealityServerNames()[0]
		if len(srv.Reality.ShortIDs) > 0 {
			c.Reality.ShortIDs = []string{srv.Reality.ShortIDs[0]}
		}
	}
	return c, nil
}

func randomPassword(n int) (string, error) {
	const alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, n)
	for i := range b {
		k, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			return "", err
		}
		b[i] = alphabet[k.Int64()]
	}
	return string(b), nil
}

// checkNATInterfaces makes a [nat] interface that does not exist a config
// error: masquerading out of a missing interface would log "NAT enabled"
// and forward nothing.
func checkNATInterfaces(cfg *config.Server) error {
	for _, f := range []struct{ key, name string }{
		{"ipv4_interface", cfg.NAT.IPv4Interface}, {"ipv6_interface", cfg.NAT.IPv6Interface},
	} {
		if f.name == "" {
			continue
		}
		if _, err := net.InterfaceByName(f.name); err != nil {
			var have []string
			if ifs, err := net.Interfaces(); err == nil {
				for _, i := range ifs {
					have = append(have, i.Name)
				}
			}
			return fmt.Errorf("%s: [nat] %s: no interface %q on this host (have: %s)", cfg.Path, f.key, f.name, strings.Join(have, ", "))
		}
	}
	return nil
}
