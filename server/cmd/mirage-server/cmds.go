package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mirage-vpn/mirage/core/auth"
	"github.com/mirage-vpn/mirage/core/config"
	"github.com/mirage-vpn/mirage/core/transport/reality"
	"github.com/mirage-vpn/mirage/core/transport/tlsx"
	"github.com/mirage-vpn/mirage/server/check"
)

// cmdKeygen prints a REALITY X25519 key pair and a short id as TOML lines.
func cmdKeygen(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		return fail(stderr, "keygen: takes no arguments")
	}
	priv, pub, sid, err := newRealityKeys()
	if err != nil {
		return fail(stderr, "keygen: %v", err)
	}
	fmt.Fprintf(stdout, "# server.toml [reality]\nprivate_key = %q\nshort_ids = [%q]\n\n", config.EncodeKey(priv), sid)
	fmt.Fprintf(stdout, "# client.toml [reality]\npublic_key = %q\nshort_ids = [%q]\n", config.EncodeKey(pub), sid)
	return 0
}

// newRealityKeys makes a REALITY X25519 key pair and a random 8-byte short
// id (hex).
func newRealityKeys() (priv, pub [32]byte, shortID string, err error) {
	if priv, pub, err = reality.GenerateKey(); err != nil {
		return priv, pub, "", err
	}
	sid := make([]byte, 8)
	if _, err := rand.Read(sid); err != nil {
		return priv, pub, "", err
	}
	return priv, pub, hex.EncodeToString(sid), nil
}

// cmdCheck validates a server.toml, the files it names and the host, then
// probes the running server as a censor would (package check). Exit
// status 1 when any check FAILs.
func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", "", "server.toml")
	addr := fs.String("addr", "", "HOST:PORT to probe (default: bind_address:bind_port, loopback for a wildcard bind)")
	noProbe := fs.Bool("no-probe", false, "skip the detectability self-test; connect nowhere (ports are only bound)")
	timeout := fs.Duration("timeout", 5*time.Second, "bound of each network step")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cfgPath == "" {
		return fail(stderr, "check: need -c server.toml")
	}
	if fs.NArg() > 0 {
		return fail(stderr, "check: unexpected argument %q", fs.Arg(0))
	}
	cfg, err := config.LoadServer(*cfgPath)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := check.Run(ctx, cfg, check.Options{Addr: *addr, NoProbe: *noProbe, Timeout: *timeout})
	if *asJSON {
		if err := r.WriteJSON(stdout); err != nil {
			return fail(stderr, "check: %v", err)
		}
	} else {
		r.WriteTable(stdout)
	}
	if r.Failed() {
		for _, x := range r.Results {
			if x.Status == check.Fail {
				fmt.Fprintf(stderr, "mirage-server: check: %s: %s: %s\n", cfg.Path, x.Name, x.Detail)
			}
		}
		return 1
	}
	return 0
}

// cmdInvite prints a client.toml for an existing user. The password comes
// from stdin and is checked against the users file.
func cmdInvite(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("invite", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", "", "server.toml")
	user := fs.String("user", "", "user name")
	host := fs.String("host", "", "address clients connect to: HOST or HOST:PORT (default: bind address)")
	link := fs.Bool("link", false, "print a mirage:// link instead of TOML")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cfgPath == "" || *user == "" {
		return fail(stderr, "invite: need -c server.toml and --user NAME")
	}
	cfg, err := config.LoadServer(*cfgPath)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	users, err := loadUsers(cfg)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	if !users.Has(*user) {
		return fail(stderr, "invite: no user %q in %s", *user, cfg.ResolvePath(cfg.Authentication.UsersFile))
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && line == "" {
		return fail(stderr, "invite: reading the password from stdin: %v", err)
	}
	password := strings.TrimRight(line, "\r\n")
	if !users.Verify(*user, password) {
		return fail(stderr, "invite: the password does not match user %q", *user)
	}
	pin, err := tlsx.CertPin(cfg.ResolvePath(cfg.TLS.CertFile))
	if err != nil {
		return fail(stderr, "invite: %v", err)
	}
	h := *host
	if h == "" {
		h = cfg.BindAddress
	}
	c, err := clientProfile(cfg, hostPort(h, cfg.BindPort), pin, *user, password)
	if err != nil {
		return fail(stderr, "invite: %v", err)
	}
	if !cfg.TLS.AutoGenerate {
		// A certificate from a CA is renewed regularly: verify it by name
		// against the system roots instead of pinning it.
		c.TLS.PinnedSHA256 = ""
	}
	if err := c.Validate(); err != nil {
		return fail(stderr, "invite: %v", err)
	}
	if *link {
		l, err := c.Link()
		if err != nil {
			return fail(stderr, "invite: %v", err)
		}
		fmt.Fprintln(stdout, l)
		return 0
	}
	b, err := c.MarshalTOML()
	if err != nil {
		return fail(stderr, "invite: %v", err)
	}
	stdout.Write(b)
	return 0
}

// loadUsers reads the users file named by the config; errors name the
// config file and the key.
func loadUsers(cfg *config.Server) (*auth.Users, error) {
	u, err := auth.LoadUsers(cfg.ResolvePath(cfg.Authentication.UsersFile))
	if err != nil {
		name := cfg.Path
		if name == "" {
			name = "server.toml"
		}
		return nil, fmt.Errorf("%s: [authentication] users_file: %w", name, err)
	}
	return u, nil
}
