// Command mirage-server is the Mirage VPN server.
//
//	mirage-server run -c server.toml            (also: mirage-server -c server.toml)
//	mirage-server run --data-dir DIR [...]      generate a default config on first start
//	mirage-server users add|del|list -f USERS [NAME]
//	mirage-server keygen
//	mirage-server invite -c server.toml --user NAME [--host HOST[:PORT]]
//	mirage-server check -c server.toml [--addr HOST:PORT] [--no-probe] [--json]
//	mirage-server status [--state-dir DIR] [--json]
package main

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/term"

	"github.com/mirage-vpn/mirage/core/buildinfo"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// commit is set at build time with -ldflags "-X main.commit=...".
var commit = ""

const usage = `usage:
  mirage-server run -c server.toml [--state-dir DIR]
  mirage-server run --data-dir DIR [--bind IP] [--port N] [--host HOST] [--tunnel-network CIDR]
                    [--tunnel-network-v6 CIDR] [--nat-interface IF]
  mirage-server users add|del|list -f USERS [NAME]
  mirage-server keygen
  mirage-server invite -c server.toml --user NAME [--host HOST[:PORT]] [--link]   (password on stdin)
  mirage-server check -c server.toml [--addr HOST:PORT] [--no-probe] [--json]
                    (config, host and a detectability self-test of the running server; exit 1 on FAIL)
  mirage-server status [--state-dir DIR] [--json]   (sessions of the running server; root)
  mirage-server version
`

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func dispatch(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	isTerm := func() bool { return term.IsTerminal(int(os.Stdin.Fd())) }
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "-c", "--c", "-config", "--config":
		return cmdRun(args, stdout, stderr)
	case "users":
		return cmdUsers(args[1:], stdin, stdout, stderr, isTerm)
	case "keygen":
		return cmdKeygen(args[1:], stdout, stderr)
	case "invite":
		return cmdInvite(args[1:], stdin, stdout, stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "status":
		return cmdStatus(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, buildinfo.String("mirage-server", version, commit))
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "mirage-server: unknown command %q\n%s", args[0], usage)
	return 2
}

// fail prints a one-line reason and returns exit status 1.
func fail(stderr io.Writer, format string, a ...any) int {
	fmt.Fprintf(stderr, "mirage-server: "+format+"\n", a...)
	return 1
}
