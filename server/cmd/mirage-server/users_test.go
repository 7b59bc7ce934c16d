package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/mirage-vpn/mirage/core/auth"
)

type usersRun struct {
	code           int
	stdout, stderr string
}

// runUsersCmd runs cmdUsers with stdin as a pipe (not a terminal).
func runUsersCmd(t *testing.T, stdin string, args ...string) usersRun {
	t.Helper()
	var out, errb bytes.Buffer
	code := cmdUsers(args, strings.NewReader(stdin), &out, &errb, func() bool { return false })
	return usersRun{code, out.String(), errb.String()}
}

func mustLoad(t *testing.T, path string) *auth.Users {
	t.Helper()
	u, err := auth.LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestUsersAddListDel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")

	r := runUsersCmd(t, "s3cret pass\n", "add", "-f", path, "carol")
	if r.code != 0 || !strings.Contains(r.stdout, "added user carol") {
		t.Fatalf("add carol: %+v", r)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm() != 0o600 {
		t.Errorf("new users file mode %v, want 0600", st.Mode().Perm())
	}
	// -f after the name; CRLF line ending; rest of stdin ignored.
	if r := runUsersCmd(t, "alice-pw\r\nignored\n", "add", "alice", "-f", path); r.code != 0 {
		t.Fatalf("add alice: %+v", r)
	}
	// No trailing newline at all.
	if r := runUsersCmd(t, "bob-pw", "add", "-f="+path, "bob"); r.code != 0 {
		t.Fatalf("add bob: %+v", r)
	}

	u := mustLoad(t, path)
	for name, pw := range map[string]string{"carol": "s3cret pass", "alice": "alice-pw", "bob": "bob-pw"} {
		if !u.Verify(name, pw) {
			t.Errorf("%s: password %q does not verify", name, pw)
		}
	}
	if u.Verify("alice", "alice-pw\r") || u.Verify("carol", "s3cret pass\n") {
		t.Error("line ending kept in the password")
	}

	r = runUsersCmd(t, "", "list", "-f", path)
	if r.code != 0 || r.stdout != "alice\nbob\ncarol\n" {
		t.Fatalf("list: %+v", r)
	}

	r = runUsersCmd(t, "", "del", "bob", "-f", path)
	if r.code != 0 || !strings.Contains(r.stdout, "deleted user bob") {
		t.Fatalf("del bob: %+v", r)
	}
	if r := runUsersCmd(t, "", "list", "-f", path); r.stdout != "alice\ncarol\n" {
		t.Fatalf("list after del: %+v", r)
	}

	r = runUsersCmd(t, "", "del", "-f", path, "bob")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "mirage-server users: ") || !strings.Contains(r.stderr, `no user "bob"`) {
		t.Fatalf("del absent user: %+v", r)
	}
}

func TestUsersReplace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	// An existing file with a comment and loose permissions.
	if err := os.WriteFile(path, []byte("# managed by hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runUsersCmd(t, "old\n", "add", "-f", path, "alice"); r.code != 0 {
		t.Fatalf("add: %+v", r)
	}
	r := runUsersCmd(t, "new\n", "add", "-f", path, "alice")
	if r.code != 0 || !strings.Contains(r.stdout, "replaced the password of user alice") {
		t.Fatalf("replace: %+v", r)
	}
	u := mustLoad(t, path)
	if u.Verify("alice", "old") || !u.Verify("alice", "new") || len(u.Names()) != 1 {
		t.Fatal("password not replaced")
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "# managed by hand\nalice:$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("unexpected file:\n%s", data)
	}
	if st, _ := os.Stat(path); runtime.GOOS != "windows" && st.Mode().Perm() != 0o600 {
		t.Errorf("mode after add %v, want 0600", st.Mode().Perm())
	}
}

func TestUsersErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users")
	missing := filepath.Join(dir, "missing")
	cases := []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"no verb", "", nil, 2, "missing command"},
		{"bad verb", "", []string{"frob", "-f", path}, 2, `unknown command "frob"`},
		{"missing -f", "pw\n", []string{"add", "alice"}, 2, "missing -f"},
		{"missing name", "pw\n", []string{"add", "-f", path}, 2, "missing user NAME"},
		{"extra arg", "pw\n", []string{"add", "-f", path, "a", "b"}, 2, `unexpected argument "b"`},
		{"list extra arg", "", []string{"list", "-f", path, "a"}, 2, `unexpected argument "a"`},
		{"unknown flag", "", []string{"list", "-x", "-f", path}, 2, "flag provided but not defined: -x"},
		{"bad name space", "pw\n", []string{"add", "-f", path, "al ice"}, 1, "bad user name"},
		{"bad name colon", "pw\n", []string{"add", "-f", path, "a:b"}, 1, "bad user name"},
		{"bad name long", "pw\n", []string{"add", "-f", path, strings.Repeat("n", 65)}, 1, "bad user name"},
		{"empty password", "\n", []string{"add", "-f", path, "alice"}, 1, "empty password"},
		{"empty password CRLF", "\r\n", []string{"add", "-f", path, "alice"}, 1, "empty password"},
		{"no stdin", "", []string{"add", "-f", path, "alice"}, 1, "no password on standard input"},
		{"long password", strings.Repeat("p", auth.MaxPasswordLen+5), []string{"add", "-f", path, "alice"}, 1, "password longer than"},
		{"del missing file", "", []string{"del", "-f", missing, "alice"}, 1, "open users file"},
		{"list missing file", "", []string{"list", "-f", missing}, 1, "open users file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runUsersCmd(t, tc.stdin, tc.args...)
			if r.code != tc.code || !strings.HasPrefix(r.stderr, "mirage-server users: ") || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("got %+v, want code %d and stderr containing %q", r, tc.code, tc.want)
			}
			if tc.code == 1 && strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Errorf("error is not one line: %q", r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout on error: %q", r.stdout)
			}
		})
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed command created the users file (%v)", err)
	}
}

func TestUsersBadFileUntouched(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	bad := "# x\nalice:$argon2d$v=19$m=19456,t=2,p=1$bWlyYWdlLXRlc3Qtc2FsdA$ccQucFnXCYEmjiGl7t/hOoLWY5Ffs3u9reb/EXj7NOQ\n"
	os.WriteFile(path, []byte(bad), 0o600)
	r := runUsersCmd(t, "pw\n", "add", "-f", path, "bob")
	if r.code != 1 || !strings.Contains(r.stderr, path+": line 2: bad hash: argon2d") {
		t.Fatalf("add to a malformed file: %+v", r)
	}
	if data, _ := os.ReadFile(path); string(data) != bad {
		t.Fatal("malformed file was rewritten")
	}
}

func TestUsersHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"help"}, {"add", "-h"}} {
		r := runUsersCmd(t, "", args...)
		if r.code != 0 || !strings.Contains(r.stderr, "usage: mirage-server users add") {
			t.Errorf("%q: %+v", args, r)
		}
	}
}

func TestUsersTerminal(t *testing.T) {
	orig := readTerminalPassword
	t.Cleanup(func() { readTerminalPassword = orig })
	path := filepath.Join(t.TempDir(), "users")
	terminal := func(answers ...string) {
		readTerminalPassword = func() ([]byte, error) {
			if len(answers) == 0 {
				return nil, errors.New("no more input")
			}
			a := answers[0]
			answers = answers[1:]
			return []byte(a), nil
		}
	}
	run := func() usersRun {
		var out, errb bytes.Buffer
		// stdin must not be read when it is a terminal.
		code := cmdUsers([]string{"add", "-f", path, "alice"}, strings.NewReader("from-stdin\n"), &out, &errb, func() bool { return true })
		return usersRun{code, out.String(), errb.String()}
	}

	terminal("typed pw", "typed pw")
	r := run()
	if r.code != 0 || !strings.Contains(r.stderr, "Password for alice: ") || !strings.Contains(r.stderr, "Repeat password: ") {
		t.Fatalf("terminal add: %+v", r)
	}
	if u := mustLoad(t, path); !u.Verify("alice", "typed pw") || u.Verify("alice", "from-stdin") {
		t.Fatal("terminal password not stored")
	}

	terminal("one", "two")
	if r := run(); r.code != 1 || !strings.Contains(r.stderr, "passwords do not match") {
		t.Fatalf("mismatch: %+v", r)
	}
	terminal("", "")
	if r := run(); r.code != 1 || !strings.Contains(r.stderr, "empty password") {
		t.Fatalf("empty: %+v", r)
	}
	terminal()
	if r := run(); r.code != 1 || !strings.Contains(r.stderr, "read password") {
		t.Fatalf("read error: %+v", r)
	}
	if u := mustLoad(t, path); !u.Verify("alice", "typed pw") {
		t.Fatal("failed attempts changed the password")
	}
}

func TestParseInterleaved(t *testing.T) {
	cases := []struct {
		args []string
		file string
		pos  []string
	}{
		{[]string{"-f", "F", "n"}, "F", []string{"n"}},
		{[]string{"n", "-f", "F"}, "F", []string{"n"}},
		{[]string{"n", "--f=F", "m"}, "F", []string{"n", "m"}},
		{[]string{"-f", "F", "--", "-n"}, "F", []string{"-n"}},
		{[]string{"x", "--", "-f", "y"}, "", []string{"x", "-f", "y"}},
	}
	for _, tc := range cases {
		fset := flag.NewFlagSet("test", flag.ContinueOnError)
		fset.SetOutput(io.Discard)
		f := fset.String("f", "", "")
		pos, err := parseInterleaved(fset, tc.args)
		if err != nil || *f != tc.file || strings.Join(pos, "|") != strings.Join(tc.pos, "|") {
			t.Errorf("parseInterleaved(%q) = %q, -f %q, %v; want %q, -f %q", tc.args, pos, *f, err, tc.pos, tc.file)
		}
	}
}
