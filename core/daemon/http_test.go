package daemon

import (
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/mirage-vpn/mirage/core/api"
	"github.com/mirage-vpn/mirage/core/config"
)

// send does a request with a raw body and decodes the answer into out.
func send(t *testing.T, hc *http.Client, method, path string, body []byte, code int, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, _ := http.NewRequest(method, "http://h"+path, rd)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != code {
		t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, b, code)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// expectErr sends a request that must fail with code and an api.Error
// whose message contains want.
func expectErr(t *testing.T, hc *http.Client, method, path string, body []byte, status int, code, want string) {
	t.Helper()
	var e api.Error
	send(t, hc, method, path, body, status, &e)
	if e.Code != code || !strings.Contains(e.Message, want) {
		t.Errorf("%s %s: error %+v, want code %s containing %q", method, path, e, code, want)
	}
}

// snapshot returns every file in dir with its mode and content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		v := fi.Mode().String()
		if !e.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += " " + string(b)
		}
		out[p] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestProfilesCRUD(t *testing.T) {
	f := newFakeRun()
	d := newDaemon(t, f)
	hc := serve(t, d)
	dir := d.opts.ProfilesDir

	if runtime.GOOS != "windows" {
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("profiles dir: %v %v", fi.Mode(), err)
		}
	}
	var ps []api.Profile
	send(t, hc, "GET", "/v1/profiles", nil, 200, &ps)
	if ps == nil || len(ps) != 0 {
		t.Fatalf("empty store lists %#v", ps)
	}

	// Import with a name.
	var p api.Profile
	send(t, hc, "POST", "/v1/profiles/import", mustJSON(api.ImportRequest{Name: "Home VPN", TOML: profileTOML}), 201, &p)
	want := api.Profile{Name: "Home VPN", Server: "vpn.example.com:443", Protocols: []string{"tcp-tls"}, Username: "alice"}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("import answered %+v, want %+v", p, want)
	}
	fi, err := os.Stat(filepath.Join(dir, "Home VPN.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("profile file mode %v", fi.Mode())
	}

	// The stored TOML parses to the same config as the import.
	send(t, hc, "GET", "/v1/profiles/Home%20VPN", nil, 200, &p)
	if p.Name != "Home VPN" || p.Server != want.Server || p.TOML == "" {
		t.Fatalf("get %+v", p)
	}
	orig, err := config.ParseClient([]byte(profileTOML), "x.toml")
	if err != nil {
		t.Fatal(err)
	}
	back, err := config.ParseClient([]byte(p.TOML), "x.toml")
	if err != nil {
		t.Fatalf("stored TOML does not parse: %v\n%s", err, p.TOML)
	}
	if !reflect.DeepEqual(orig, back) {
		t.Fatalf("round trip changed the config:\n got %+v\nwant %+v", back, orig)
	}

	// Import without a name: the server host.
	send(t, hc, "POST", "/v1/profiles/import", mustJSON(api.ImportRequest{TOML: profileFor("de1.example.net")}), 201, &p)
	if p.Name != "de1.example.net" {
		t.Fatalf("default name %q", p.Name)
	}
	send(t, hc, "POST", "/v1/profiles/import", mustJSON(api.ImportRequest{TOML: profileFor("[2001:db8::1]")}), 201, &p)
	if p.Name != "2001-db8--1" {
		t.Fatalf("default name for an IPv6 host %q", p.Name)
	}

	send(t, hc, "GET", "/v1/profiles", nil, 200, &ps)
	var names []string
	for _, p := range ps {
		names = append(names, p.Name)
		if p.TOML != "" {
			t.Errorf("list carries TOML for %s", p.Name)
		}
	}
	if strings.Join(names, ",") != "2001-db8--1,Home VPN,de1.example.net" {
		t.Fatalf("list %v", names)
	}

	// Import from a link: named by its fragment, stored as TOML.
	link, err := orig.LinkNamed("Office")
	if err != nil {
		t.Fatal(err)
	}
	send(t, hc, "POST", "/v1/profiles/import", mustJSON(api.ImportRequest{Link: link}), 201, &p)
	if p.Name != "Office" || p.Username != "alice" {
		t.Fatalf("link import %+v", p)
	}
	send(t, hc, "GET", "/v1/profiles/Office", nil, 200, &p)
	if back, err = config.ParseClient([]byte(p.TOML), "x.toml"); err != nil || !reflect.DeepEqual(orig, back) {
		t.Fatalf("link import stored %v:\n%s", err, p.TOML)
	}
	unnamed, _ := orig.Link()
	send(t, hc, "POST", "/v1/profiles/import", mustJSON(api.ImportRequest{Name: "linked", Link: unnamed}), 201, &p)
	send(t, hc, "DELETE", "/v1/profiles/linked", nil, 204, nil)
	send(t, hc, "DELETE", "/v1/profiles/Office", nil, 204, nil)

	before := snapshot(t, dir)
	// Import errors; none of them touches the store.
	for _, tc := range []struct {
		req          api.ImportRequest
		status       int
		code, substr string
	}{
		{api.ImportRequest{Name: "Home VPN", TOML: profileTOML}, 409, api.CodeConflict, "already exists"},
		{api.ImportRequest{Name: "home vpn", TOML: profileTOML}, 409, api.CodeConflict, `"Home VPN"`},
		{api.ImportRequest{TOML: profileFor("de1.example.net")}, 409, api.CodeConflict, "de1.example.net"},
		{api.ImportRequest{Name: "../evil", TOML: profileTOML}, 400, api.CodeBadRequest, "invalid profile name"},
		{api.ImportRequest{Name: "a/b", TOML: profileTOML}, 400, api.CodeBadRequest, "invalid profile name"},
		{api.ImportRequest{Name: `a\b`, TOML: profileTOML}, 400, api.CodeBadRequest, "invalid profile name"},
		{api.ImportRequest{Name: ".hidden", TOML: profileTOML}, 400, api.CodeBadRequest, "must not start"},
		{api.ImportRequest{Name: "trailing.", TOML: profileTOML}, 400, api.CodeBadRequest, "must not end"},
		{api.ImportRequest{Name: "NUL", TOML: profileTOML}, 400, api.CodeBadRequest, "reserved"},
		{api.ImportRequest{Name: strings.Repeat("x", 65), TOML: profileTOML}, 400, api.CodeBadRequest, "longer than 64"},
		{api.ImportRequest{Name: "héllo", TOML: profileTOML}, 400, api.CodeBadRequest, "only letters"},
		{api.ImportRequest{Name: "x"}, 400, api.CodeBadRequest, "exactly one of toml and link"},
		{api.ImportRequest{Name: "x", TOML: profileTOML, Link: "mirage://x"}, 400, api.CodeBadRequest, "exactly one"},
		{api.ImportRequest{Name: "bad", TOML: "connection_string = 5\n"}, 400, api.CodeInvalidConfig, "bad.toml"},
		{api.ImportRequest{Name: "bad", TOML: strings.Replace(profileTOML, "alice", "", 1)}, 400, api.CodeInvalidConfig, "username"},
		{api.ImportRequest{Name: "bad", TOML: profileTOML + "\n[tls2]\nx = 1\n"}, 400, api.CodeInvalidConfig, "tls2"},
		{api.ImportRequest{Name: "ca", TOML: strings.Replace(profileTOML, "[tls]", "[tls]\nca_file = \"/etc/shadow\"", 1)}, 400, api.CodeInvalidConfig, "ca_file"},
		{api.ImportRequest{Name: "link", Link: "mirage://nonsense"}, 400, api.CodeInvalidConfig, "link"},
		{api.ImportRequest{Name: "link", Link: "https://example.com/"}, 400, api.CodeInvalidConfig, "link"},
		{api.ImportRequest{Link: unnamed + "#de1.example.net"}, 409, api.CodeConflict, "de1.example.net"},
		{api.ImportRequest{Link: strings.Replace(unnamed, "alice", "", 1)}, 400, api.CodeInvalidConfig, "username"},
	} {
		expectErr(t, hc, "POST", "/v1/profiles/import", mustJSON(tc.req), tc.status, tc.code, tc.substr)
	}
	if after := snapshot(t, dir); !maps.Equal(before, after) {
		t.Fatalf("failed imports changed the store:\n%v\n%v", before, after)
	}

	// GET errors.
	expectErr(t, hc, "GET", "/v1/profiles/nope", nil, 404, api.CodeNotFound, `"nope"`)
	expectErr(t, hc, "GET", "/v1/profiles/home%20vpn", nil, 404, api.CodeNotFound, "") // exact name only
	expectErr(t, hc, "GET", "/v1/profiles/..%2Fprofiles%2FHome%20VPN", nil, 400, api.CodeBadRequest, "invalid profile name")
	expectErr(t, hc, "GET", "/v1/profiles/.hidden", nil, 400, api.CodeBadRequest, "")

	// PUT errors; none touches the store.
	for _, tc := range []struct {
		name         string
		req          api.UpdateRequest
		status       int
		code, substr string
	}{
		{"nope", api.UpdateRequest{Name: "x"}, 404, api.CodeNotFound, "nope"},
		{"Home VPN", api.UpdateRequest{}, 400, api.CodeBadRequest, "nothing to change"},
		{"Home VPN", api.UpdateRequest{Name: "de1.example.net"}, 409, api.CodeConflict, "already exists"},
		{"Home VPN", api.UpdateRequest{Name: "DE1.example.net", TOML: profileTOML}, 409, api.CodeConflict, "already exists"},
		{"Home VPN", api.UpdateRequest{Name: "a/../b"}, 400, api.CodeBadRequest, "invalid profile name"},
		{"Home VPN", api.UpdateRequest{TOML: "connection_string = \"x\"\n"}, 400, api.CodeInvalidConfig, "Home VPN.toml"},
		{"Home VPN", api.UpdateRequest{Name: "new", TOML: "[connection]\nmtu = 1\n"}, 400, api.CodeInvalidConfig, "new.toml"},
		{"Home VPN", api.UpdateRequest{TOML: strings.Replace(profileTOML, "[tls]", "[tls]\nca_file = \"ca.pem\"", 1)}, 400, api.CodeInvalidConfig, "ca_file"},
	} {
		expectErr(t, hc, "PUT", "/v1/profiles/"+strings.ReplaceAll(tc.name, " ", "%20"), mustJSON(tc.req), tc.status, tc.code, tc.substr)
	}
	if after := snapshot(t, dir); !maps.Equal(before, after) {
		t.Fatalf("failed updates changed the store:\n%v\n%v", before, after)
	}

	// Replace the TOML.
	send(t, hc, "PUT", "/v1/profiles/Home%20VPN", mustJSON(api.UpdateRequest{TOML: strings.Replace(profileTOML, "alice", "bob", 1)}), 200, &p)
	if p.Name != "Home VPN" || p.Username != "bob" {
		t.Fatalf("update %+v", p)
	}
	// Rename only: the content moves along.
	send(t, hc, "PUT", "/v1/profiles/Home%20VPN", mustJSON(api.UpdateRequest{Name: "work"}), 200, &p)
	if p.Name != "work" || p.Username != "bob" {
		t.Fatalf("rename %+v", p)
	}
	expectErr(t, hc, "GET", "/v1/profiles/Home%20VPN", nil, 404, api.CodeNotFound, "")
	// Rename and replace together, and a case-only rename.
	send(t, hc, "PUT", "/v1/profiles/work", mustJSON(api.UpdateRequest{Name: "Work", TOML: profileTOML}), 200, &p)
	if p.Name != "Work" || p.Username != "alice" {
		t.Fatalf("rename+replace %+v", p)
	}
	// Kill switch toggles (the GUI's switches): only those keys change.
	on, off := true, false
	send(t, hc, "PUT", "/v1/profiles/Work", mustJSON(api.UpdateRequest{KillSwitch: &on}), 200, &p)
	if !p.KillSwitch || p.AllowLAN || p.Username != "alice" {
		t.Fatalf("kill switch on: %+v", p)
	}
	send(t, hc, "PUT", "/v1/profiles/Work", mustJSON(api.UpdateRequest{AllowLAN: &on}), 200, &p)
	if !p.KillSwitch || !p.AllowLAN {
		t.Fatalf("allow lan on: %+v", p)
	}
	send(t, hc, "GET", "/v1/profiles/Work", nil, 200, &p)
	if !strings.Contains(p.TOML, "kill_switch = true") || !strings.Contains(p.TOML, "allow_lan = true") || !p.KillSwitch {
		t.Fatalf("stored profile lacks the switches:\n%s", p.TOML)
	}
	send(t, hc, "PUT", "/v1/profiles/Work", mustJSON(api.UpdateRequest{KillSwitch: &off, AllowLAN: &off}), 200, &p)
	if p.KillSwitch || p.AllowLAN {
		t.Fatalf("switches off: %+v", p)
	}
	expectErr(t, hc, "PUT", "/v1/profiles/nope", mustJSON(api.UpdateRequest{KillSwitch: &on}), 404, api.CodeNotFound, "nope")

	send(t, hc, "GET", "/v1/profiles", nil, 200, &ps)
	names = names[:0]
	for _, p := range ps {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != "2001-db8--1,Work,de1.example.net" {
		t.Fatalf("list after renames %v", names)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 3 {
		t.Fatalf("store holds %d files, want 3 (no temporary files left)", len(ents))
	}

	// Delete; the connected profile cannot be deleted but can be renamed.
	if err := d.Connect("Work"); err != nil {
		t.Fatal(err)
	}
	<-f.running
	expectErr(t, hc, "DELETE", "/v1/profiles/Work", nil, 409, api.CodeConflict, "in use")
	send(t, hc, "PUT", "/v1/profiles/Work", mustJSON(api.UpdateRequest{Name: "Office"}), 200, &p)
	if s := d.Status(); s.Profile != "Office" {
		t.Fatalf("status after renaming the connected profile: %+v", s)
	}
	expectErr(t, hc, "DELETE", "/v1/profiles/Office", nil, 409, api.CodeConflict, "in use")
	d.Disconnect()
	send(t, hc, "DELETE", "/v1/profiles/Office", nil, 204, nil)
	expectErr(t, hc, "DELETE", "/v1/profiles/Office", nil, 404, api.CodeNotFound, "")
	expectErr(t, hc, "DELETE", "/v1/profiles/.x", nil, 400, api.CodeBadRequest, "")
	send(t, hc, "GET", "/v1/profiles", nil, 200, &ps)
	if len(ps) != 2 {
		t.Fatalf("after delete %+v", ps)
	}
}

func TestBrokenStoredProfile(t *testing.T) {
	d := newDaemon(t, newFakeRun())
	hc := serve(t, d)
	// A file edited by hand into something invalid: listed by name, its
	// text still readable, connecting it is an invalid_config error.
	os.WriteFile(filepath.Join(d.opts.ProfilesDir, "hand.toml"), []byte("connection_string = 1\n"), 0o600)
	os.WriteFile(filepath.Join(d.opts.ProfilesDir, ".hand.toml.tmp-123"), []byte("x"), 0o600)
	var ps []api.Profile
	send(t, hc, "GET", "/v1/profiles", nil, 200, &ps)
	if len(ps) != 1 || ps[0].Name != "hand" || ps[0].Server != "" {
		t.Fatalf("list %+v", ps)
	}
	var p api.Profile
	send(t, hc, "GET", "/v1/profiles/hand", nil, 200, &p)
	if p.TOML != "connection_string = 1\n" {
		t.Fatalf("get %+v", p)
	}
	expectErr(t, hc, "POST", "/v1/connect", mustJSON(api.ConnectRequest{Profile: "hand"}), 400, api.CodeInvalidConfig, "connection_string")
}

func TestRequestBodies(t *testing.T) {
	d := newDaemon(t, newFakeRun())
	hc := serve(t, d)
	importProfile(t, d, "home", profileTOML)
	before := snapshot(t, d.opts.ProfilesDir)

	huge := mustJSON(api.ImportRequest{Name: "big", TOML: profileTOML + "#" + strings.Repeat("x", api.MaxRequestBody) + "\n"})
	for _, tc := range []struct {
		method, path string
		body         []byte
		status       int
		substr       string
	}{
		{"POST", "/v1/profiles/import", huge, 413, "larger than"},
		{"PUT", "/v1/profiles/home", huge, 413, "larger than"},
		{"POST", "/v1/connect", huge, 413, "larger than"},
		{"POST", "/v1/disconnect", huge, 413, "larger than"},
		{"POST", "/v1/profiles/import", []byte(`{"name": "x", "toml": `), 400, "malformed"},
		{"POST", "/v1/profiles/import", []byte(`not json`), 400, "malformed"},
		{"POST", "/v1/profiles/import", []byte(`["array"]`), 400, "malformed"},
		{"POST", "/v1/profiles/import", []byte(`{"name": 5}`), 400, "malformed"},
		{"POST", "/v1/profiles/import", []byte(``), 400, "empty request body"},
		{"POST", "/v1/profiles/import", mustJSON(map[string]string{"name": "x", "toml": profileTOML, "path": "/etc/passwd"}), 400, `unknown field "path"`},
		{"POST", "/v1/profiles/import", append(mustJSON(api.ImportRequest{Name: "x", TOML: profileTOML}), []byte(`{}`)...), 400, "after the JSON object"},
		{"PUT", "/v1/profiles/home", []byte(`{"toml": "x", "file": "y"}`), 400, `unknown field "file"`},
		{"POST", "/v1/connect", []byte(`{"profile": "home", "force": true}`), 400, `unknown field "force"`},
		{"POST", "/v1/connect", []byte(`{`), 400, "malformed"},
		{"POST", "/v1/disconnect", []byte(`{"x": 1}`), 400, `unknown field "x"`},
	} {
		expectErr(t, hc, tc.method, tc.path, tc.body, tc.status, api.CodeBadRequest, tc.substr)
	}
	if after := snapshot(t, d.opts.ProfilesDir); !maps.Equal(before, after) {
		t.Fatalf("bad requests changed the store")
	}
	if s := d.Status(); s.State != api.Disconnected {
		t.Fatalf("bad requests changed the state: %+v", s)
	}

	// Unknown endpoints and methods.
	expectErr(t, hc, "GET", "/v1/nope", nil, 404, api.CodeNotFound, "/v1/nope")
	expectErr(t, hc, "GET", "/", nil, 404, api.CodeNotFound, "")
	expectErr(t, hc, "DELETE", "/v1/status", nil, 404, api.CodeNotFound, "DELETE /v1/status")
}

func TestConnectDisconnectHTTP(t *testing.T) {
	f := newFakeRun()
	d := newDaemon(t, f)
	hc := serve(t, d)
	importProfile(t, d, "home", profileTOML)
	var s api.Status
	send(t, hc, "POST", "/v1/connect", mustJSON(api.ConnectRequest{Profile: "home"}), 200, &s)
	if s.Profile != "home" || (s.State != api.Connecting && s.State != api.Connected) {
		t.Fatalf("connect answered %+v", s)
	}
	waitFor(t, d, "connected", inState(api.Connected))
	send(t, hc, "GET", "/v1/status", nil, 200, &s)
	if s.State != api.Connected || s.Profile != "home" || s.HelperVersion != "test-1" {
		t.Fatalf("status %+v", s)
	}
	send(t, hc, "POST", "/v1/disconnect", nil, 200, &s)
	if s.State != api.Disconnected {
		t.Fatalf("disconnect answered %+v", s)
	}
	send(t, hc, "POST", "/v1/disconnect", []byte("{}"), 200, &s)
	expectErr(t, hc, "POST", "/v1/connect", mustJSON(api.ConnectRequest{Profile: "nope"}), 404, api.CodeNotFound, "nope")
	expectErr(t, hc, "POST", "/v1/connect", []byte(`{}`), 400, api.CodeBadRequest, "invalid profile name")
}

func TestNameRules(t *testing.T) {
	for _, ok := range []string{"a", "Home VPN", "de1.example.net", "x_y-z.1", strings.Repeat("a", 64), "console", "com10", "a.b c"} {
		if err := checkName(ok); err != nil {
			t.Errorf("checkName(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", ".x", " x", "x ", "x.", "a/b", `a\b`, "a:b", "a\x00b", "con", "Con.toml", "LPT1", "aux.x", strings.Repeat("a", 65), "ü"} {
		if err := checkName(bad); err == nil {
			t.Errorf("checkName(%q) accepted", bad)
		}
	}
	for host, want := range map[string]string{"vpn.example.com": "vpn.example.com", "2001:db8::1": "2001-db8--1", "": "profile", "...": "profile"} {
		if got := defaultName(host); got != want {
			t.Errorf("defaultName(%q) = %q, want %q", host, got, want)
		}
	}
}

// metrics fetches /v1/metrics and returns its samples by name and labels.
func metrics(t *testing.T, hc *http.Client) map[string]float64 {
	t.Helper()
	resp, err := hc.Get("http://h/v1/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /v1/metrics: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	out := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		name, val, ok := strings.Cut(l, " ")
		if !ok || !strings.HasPrefix(name, "mirage_client_") {
			continue
		}
		f, err := strconv.ParseFloat(val, 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", l, err)
		}
		out[name] = f
	}
	return out
}

// /v1/metrics: state one-hot, connections, and traffic counters that keep
// growing across a disconnect and a new connection (helper lifetime).
func TestMetricsEndpoint(t *testing.T) {
	f := newFakeRun()
	d := newDaemon(t, f)
	hc := serve(t, d)
	importProfile(t, d, "home", profileTOML)
	m := metrics(t, hc)
	if m[`mirage_client_state{state="disconnected"}`] != 1 || m[`mirage_client_state{state="connected"}`] != 0 {
		t.Fatalf("initial state metrics %v", m)
	}
	if err := d.Connect("home"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, d, "traffic", func(s api.Status) bool { return s.State == api.Connected && s.Stats.TxBytes >= 3000 })
	m = metrics(t, hc)
	if m[`mirage_client_state{state="connected"}`] != 1 || m[`mirage_client_connections{transport="tcp-tls"}`] != 1 ||
		m[`mirage_client_sent_bytes_total`] < 3000 || m[`mirage_client_received_packets_total`] < 6 ||
		m[`mirage_client_connects_total`] != 1 || m[`mirage_client_rtt_seconds`] < 0 {
		t.Fatalf("connected metrics %v", m)
	}
	if err := d.Disconnect(); err != nil {
		t.Fatal(err)
	}
	after := metrics(t, hc)
	if after[`mirage_client_sent_bytes_total`] < m[`mirage_client_sent_bytes_total`] ||
		after[`mirage_client_state{state="disconnected"}`] != 1 || after[`mirage_client_connections{transport="tcp-tls"}`] != 0 {
		t.Fatalf("after disconnect %v (before %v)", after, m)
	}
	if err := d.Connect("home"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, d, "connected again", inState(api.Connected))
	again := metrics(t, hc)
	if again[`mirage_client_sent_bytes_total`] < after[`mirage_client_sent_bytes_total`] || again[`mirage_client_connects_total`] != 2 {
		t.Fatalf("second connection: %v (after the first %v)", again, after)
	}
}
