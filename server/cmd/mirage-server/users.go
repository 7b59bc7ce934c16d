package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/mirage-vpn/mirage/core/auth"
	"golang.org/x/term"
)

const usersUsage = `usage: mirage-server users add  -f USERS NAME   add a user, or change its password
       mirage-server users del  -f USERS NAME   delete a user
       mirage-server users list -f USERS        list the user names
The password is asked twice on the terminal, or read from the first line of
standard input when that is not a terminal. add creates USERS (mode 0600)
if it does not exist.
`

// readTerminalPassword reads a password from the terminal on standard input
// without echo. A variable so tests can replace the terminal.
var readTerminalPassword = func() ([]byte, error) {
	return term.ReadPassword(int(os.Stdin.Fd()))
}

// usageError is a command-line mistake: exit status 2 and the usage text.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// cmdUsers implements "mirage-server users add|del|list -f USERS [NAME]".
// args are the arguments after "users". isTerminal reports whether stdin is
// a terminal (then the password is prompted for without echo). It returns
// the exit status: 0 on success, 1 on failure, 2 on a usage error.
func cmdUsers(args []string, stdin io.Reader, stdout, stderr io.Writer, isTerminal func() bool) int {
	err := runUsers(args, stdin, stdout, stderr, isTerminal)
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stderr, usersUsage)
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "mirage-server users: %v\n%s", err, usersUsage)
		return 2
	default:
		fmt.Fprintf(stderr, "mirage-server users: %v\n", err)
		return 1
	}
}

func runUsers(args []string, stdin io.Reader, stdout, stderr io.Writer, isTerminal func() bool) error {
	if len(args) == 0 {
		return usageError{"missing command (add, del or list)"}
	}
	verb := args[0]
	switch verb {
	case "add", "del", "list":
	case "-h", "-help", "--help", "help":
		return flag.ErrHelp
	default:
		return usageError{fmt.Sprintf("unknown command %q (want add, del or list)", verb)}
	}

	fset := flag.NewFlagSet("mirage-server users "+verb, flag.ContinueOnError)
	// Errors are reported below with the command prefix and our usage
	// text; keep the flag package from printing its own copy.
	fset.SetOutput(io.Discard)
	file := fset.String("f", "", "users file")
	pos, err := parseInterleaved(fset, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if *file == "" {
		return usageError{"missing -f USERS (the users file)"}
	}
	wantPos := 1
	if verb == "list" {
		wantPos = 0
	}
	switch {
	case len(pos) < wantPos:
		return usageError{fmt.Sprintf("%s: missing user NAME", verb)}
	case len(pos) > wantPos:
		return usageError{fmt.Sprintf("%s: unexpected argument %q", verb, pos[wantPos])}
	}

	switch verb {
	case "add":
		return usersAdd(*file, pos[0], stdin, stdout, stderr, isTerminal)
	case "del":
		return usersDel(*file, pos[0], stdout)
	default:
		u, err := auth.LoadUsers(*file)
		if err != nil {
			return err
		}
		for _, n := range u.Names() {
			fmt.Fprintln(stdout, n)
		}
		return nil
	}
}

// parseInterleaved parses flags that may come before or after the
// positional arguments ("add NAME -f FILE" as well as "add -f FILE NAME").
// Everything after "--" is positional.
func parseInterleaved(fset *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fset.Parse(args); err != nil {
			return nil, err
		}
		rest := fset.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func usersAdd(path, name string, stdin io.Reader, stdout, stderr io.Writer, isTerminal func() bool) error {
	if err := auth.ValidateName(name); err != nil {
		return fmt.Errorf("bad user name %q: %w", name, err)
	}
	u, err := auth.LoadUsers(path)
	if errors.Is(err, fs.ErrNotExist) {
		u = auth.NewUsers()
	} else if err != nil {
		return err
	}
	var pw string
	if isTerminal() {
		pw, err = promptPassword(name, stderr)
	} else {
		pw, err = readPasswordLine(stdin)
	}
	if err != nil {
		return err
	}
	existed := u.Has(name)
	if err := u.Set(name, pw); err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	if err := u.Save(path); err != nil {
		return err
	}
	if existed {
		fmt.Fprintf(stdout, "replaced the password of user %s in %s\n", name, path)
	} else {
		fmt.Fprintf(stdout, "added user %s to %s\n", name, path)
	}
	return nil
}

func usersDel(path, name string, stdout io.Writer) error {
	u, err := auth.LoadUsers(path)
	if err != nil {
		return err
	}
	if !u.Delete(name) {
		return fmt.Errorf("no user %q in %s", name, path)
	}
	if err := u.Save(path); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "deleted user %s from %s\n", name, path)
	return nil
}

// promptPassword asks for the password twice on the terminal, without echo.
func promptPassword(name string, stderr io.Writer) (string, error) {
	fmt.Fprintf(stderr, "Password for %s: ", name)
	a, err := readTerminalPassword()
	fmt.Fprintln(stderr)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if len(a) == 0 {
		return "", errors.New("empty password")
	}
	fmt.Fprint(stderr, "Repeat password: ")
	b, err := readTerminalPassword()
	fmt.Fprintln(stderr)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if !bytes.Equal(a, b) {
		return "", errors.New("passwords do not match")
	}
	return string(a), nil
}

// readPasswordLine returns the first line of r without its line ending.
func readPasswordLine(r io.Reader) (string, error) {
	br := bufio.NewReader(io.LimitReader(r, auth.MaxPasswordLen+3))
	line, err := br.ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("read password from standard input: %w", err)
	}
	if err == io.EOF && line == "" {
		return "", errors.New("no password on standard input")
	}
	if err == io.EOF && len(line) > auth.MaxPasswordLen {
		return "", fmt.Errorf("password longer than %d bytes", auth.MaxPasswordLen)
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if line == "" {
		return "", errors.New("empty password")
	}
	return line, nil
}
