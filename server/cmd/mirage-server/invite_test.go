package main

import (
	"bytes"
	"io"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/mirage-vpn/mirage/core/config"
)

// inviteSetup generates a data directory (server.toml, users file with user
// "mirage", self-signed certificate, client.toml) and returns the
// server.toml path and the user's password.
func inviteSetup(t *testing.T, realityTarget string) (cfgPath, password string) {
	t.Helper()
	dir := t.TempDir()
	g := &genOpts{bind: "0.0.0.0", port: 8443, host: "vpn.example.com", tun4: "10.66.0.1/24", realityTarget: realityTarget}
	cfgPath, err := ensureDataDir(dir, g, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.LoadClient(filepath.Join(dir, "client.toml"))
	if err != nil {
		t.Fatal(err)
	}
	return cfgPath, c.Authentication.Password
}

func runInvite(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cmdInvite(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// invite --link prints one mirage:// line that imports to exactly the
// profile the TOML form of invite prints.
func TestInviteLink(t *testing.T) {
	for _, reality := range []string{"", "www.example.com"} {
		t.Run("reality="+reality, func(t *testing.T) {
			cfgPath, pw := inviteSetup(t, reality)
			args := []string{"-c", cfgPath, "--user", firstUser, "--host", "2001:db8::7"}

			code, out, errs := runInvite(t, pw+"\n", append(args, "--link")...)
			if code != 0 {
				t.Fatalf("invite --link: code %d, stderr %s", code, errs)
			}
			if !strings.HasPrefix(out, "mirage://mirage:"+pw+"@[2001:db8::7]:8443?v=1&") ||
				!strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
				t.Fatalf("invite --link printed %q", out)
			}
			fromLink, err := config.ParseLink(out)
			if err != nil {
				t.Fatalf("ParseLink(%s): %v", out, err)
			}

			code, toml, errs := runInvite(t, pw+"\n", args...)
			if code != 0 {
				t.Fatalf("invite: code %d, stderr %s", code, errs)
			}
			fromTOML, err := config.ParseClient([]byte(toml), "")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(fromLink, fromTOML) {
				t.Fatalf("link and TOML profiles differ:\nlink %+v\ntoml %+v", fromLink, fromTOML)
			}
			if fromLink.TLS.PinnedSHA256 == "" || !strings.Contains(out, "&pin=") {
				t.Error("profile lacks the certificate pin")
			}
			if reality != "" && (fromLink.Reality.PublicKey == "" || fromLink.Connection.EnabledProtocols[0] != config.ProtoReality) {
				t.Errorf("REALITY missing from the profile: %+v", fromLink.Reality)
			}
		})
	}
}

func TestInviteLinkWrongPassword(t *testing.T) {
	cfgPath, pw := inviteSetup(t, "")
	code, out, errs := runInvite(t, pw+"x\n", "-c", cfgPath, "--user", firstUser, "--link")
	if code == 0 || out != "" || !strings.Contains(errs, "the password does not match") {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errs)
	}
}

func TestHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"vpn.example.com": "vpn.example.com:443", "192.0.2.7": "192.0.2.7:443", "192.0.2.7:8443": "192.0.2.7:8443",
		"2001:db8::7": "[2001:db8::7]:443", "[2001:db8::7]": "[2001:db8::7]:443", "[2001:db8::7]:8443": "[2001:db8::7]:8443",
	} {
		if got := hostPort(in, 443); got != want {
			t.Errorf("hostPort(%q) = %q, want %q", in, got, want)
		}
	}
}
