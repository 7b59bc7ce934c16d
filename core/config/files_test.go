package config

import (
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

const examplesDir = "../../packaging/examples"

func exampleFiles(t testing.TB, prefix string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(examplesDir, prefix+"*.toml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no %s examples in %s: %v", prefix, examplesDir, err)
	}
	return files
}

func TestExamplesParse(t *testing.T) {
	for _, f := range exampleFiles(t, "client") {
		c, err := LoadClient(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if c.Path != f {
			t.Errorf("%s: Path = %q", f, c.Path)
		}
	}
	for _, f := range exampleFiles(t, "server") {
		if _, err := LoadServer(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// schemaKeys lists every leaf key path of a config struct.
func schemaKeys(t reflect.Type, prefix string) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("toml")
		if tag == "" || tag == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			out = append(out, schemaKeys(f.Type, prefix+tag+".")...)
			continue
		}
		out = append(out, prefix+tag)
	}
	return out
}

// The full examples show every key; commented-out keys are allowed only
// where an example value would be harmful (a private key).
func TestExamplesShowEveryKey(t *testing.T) {
	for _, tc := range []struct {
		file      string
		typ       reflect.Type
		commented map[string]bool
	}{
		{"client.toml", reflect.TypeOf(Client{}), nil},
		{"server.toml", reflect.TypeOf(Server{}), map[string]bool{"reality.private_key": true}},
	} {
		path := filepath.Join(examplesDir, tc.file)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		md, err := toml.Decode(string(data), &m)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range schemaKeys(tc.typ, "") {
			parts := strings.Split(k, ".")
			if md.IsDefined(parts...) {
				continue
			}
			if tc.commented[k] && strings.Contains(string(data), "# "+parts[len(parts)-1]+" = ") {
				continue
			}
			t.Errorf("%s does not show key %s", tc.file, k)
		}
	}
}

// The README's configuration reference has a row for every key.
func TestDocsListEveryKey(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, part := range []struct {
		heading string
		typ     reflect.Type
	}{
		{"### client.toml", reflect.TypeOf(Client{})},
		{"### server.toml", reflect.TypeOf(Server{})},
	} {
		start := strings.Index(doc, part.heading)
		if start < 0 {
			t.Fatalf("README.md lacks %q", part.heading)
		}
		section := doc[start+len(part.heading):]
		if end := strings.Index(section, "\n##"); end >= 0 {
			section = section[:end]
		}
		for _, k := range schemaKeys(part.typ, "") {
			if !strings.Contains(section, "| `"+k+"` |") {
				t.Errorf("README.md %s: no table row for `%s`", part.heading, k)
			}
		}
	}
}

func TestRoundTrip(t *testing.T) {
	check := func(t *testing.T, name string, parse func([]byte) (any, error), marshal func(any) ([]byte, error), v any) {
		t.Helper()
		out, err := marshal(v)
		if err != nil {
			t.Fatalf("%s: marshal: %v", name, err)
		}
		back, err := parse(out)
		if err != nil {
			t.Fatalf("%s: reparse: %v\n%s", name, err, out)
		}
		if !reflect.DeepEqual(back, v) {
			t.Fatalf("%s: round trip differs:\n got %+v\nwant %+v\n%s", name, back, v, out)
		}
	}
	pc := func(b []byte) (any, error) { return ParseClient(b, "client.toml") }
	mc := func(v any) ([]byte, error) { return v.(*Client).MarshalTOML() }
	ps := func(b []byte) (any, error) { return ParseServer(b, "server.toml") }
	ms := func(v any) ([]byte, error) { return v.(*Server).MarshalTOML() }

	for _, f := range exampleFiles(t, "client") {
		c, err := LoadClient(f)
		if err != nil {
			t.Fatal(err)
		}
		c.Path = "client.toml"
		check(t, f, pc, mc, c)
	}
	for _, f := range exampleFiles(t, "server") {
		s, err := LoadServer(f)
		if err != nil {
			t.Fatal(err)
		}
		s.Path = "server.toml"
		check(t, f, ps, ms, s)
	}

	// Awkward strings, empty vs absent lists, non-default values.
	c := DefaultClient()
	c.Path = "client.toml"
	c.ConnectionString = "[2001:db8::1]:443"
	c.Authentication = ClientAuth{Username: "üser", Password: "p\"a\\s\ts\n#'''\x01\u2028end"}
	c.Network.Routes = []string{}
	c.Network.ExcludedRoutes = nil
	c.Network.SetDNS = false
	c.Obfuscation = Obfuscation{Enabled: true, PaddingProbability: 1, PaddingProfile: "1:5-9,2:100-200", JitterMaxMS: 5, HeartbeatS: 30}
	c.TLS = ClientTLS{ServerName: "x.example", CAFile: `C:\ca.pem`, Insecure: true}
	check(t, "client", pc, mc, c)
	c.Network.Routes = nil
	out, err := c.MarshalTOML()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseClient(out, "client.toml")
	if err != nil || len(back.Network.Routes) != 2 {
		t.Fatalf("nil routes must come back as the default full tunnel: %v %v", back, err)
	}

	s := DefaultServer()
	s.Path = "server.toml"
	s.TLS.AutoGenerate = false
	s.IsolateClients = true
	s.Routes = []string{"192.0.2.0/24"}
	check(t, "server", ps, ms, s)
}

func TestMarshalRejectsInvalidUTF8(t *testing.T) {
	c := DefaultClient()
	c.Authentication.Password = "\xff"
	if _, err := c.MarshalTOML(); err == nil || !strings.Contains(err.Error(), "[authentication] password") {
		t.Fatalf("err = %v", err)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "client.toml")
	if err := WriteFileAtomic(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p+".keep", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || string(got) != "two" {
		t.Fatalf("content %q %v", got, err)
	}
	if runtime.GOOS != "windows" {
		fi, _ := os.Stat(p)
		if fi.Mode().Perm() != 0o644 {
			t.Errorf("mode %v, want 0644", fi.Mode().Perm())
		}
		if err := WriteFileAtomic(p, []byte("three"), 0); err != nil {
			t.Fatal(err)
		}
		fi, _ = os.Stat(p)
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("perm 0 gave mode %v, want 0600", fi.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
	if err := WriteFileAtomic(filepath.Join(dir, "nope", "x"), []byte("x"), 0o600); err == nil {
		t.Error("writing into a missing directory should fail")
	}
	// Rename fails (target is a non-empty directory): no temp file left.
	sub := filepath.Join(dir, "sub")
	if err := os.MkdirAll(filepath.Join(sub, "inner"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(sub, []byte("x"), 0o600); err == nil {
		t.Error("renaming over a directory should fail")
	}
	entries, _ = os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left after failure: %s", e.Name())
		}
	}
}

func FuzzParseClient(f *testing.F) {
	for _, p := range exampleFiles(f, "client") {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(validClientTOML))
	f.Add([]byte("[connection]\nparallel_connections = \"x\"\n[[network]]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseClient(data, "fuzz.toml")
		if err != nil {
			if len(FieldErrors(err)) == 0 {
				t.Fatalf("error without FieldError: %v", err)
			}
			return
		}
		// A valid config must marshal and parse back to the same value.
		out, err := c.MarshalTOML()
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		back, err := ParseClient(out, "fuzz.toml")
		if err != nil {
			t.Fatalf("reparse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("round trip differs:\n%+v\n%+v", back, c)
		}
	})
}

func FuzzParseServer(f *testing.F) {
	for _, p := range exampleFiles(f, "server") {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(""))
	f.Add([]byte("tunnel_network = \"10.0.0.0/24\"\n[quic]\nport_range = \"1-2\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseServer(data, "fuzz.toml")
		if err != nil {
			if len(FieldErrors(err)) == 0 {
				t.Fatalf("error without FieldError: %v", err)
			}
			return
		}
		out, err := s.MarshalTOML()
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		back, err := ParseServer(out, "fuzz.toml")
		if err != nil {
			t.Fatalf("reparse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(back, s) {
			t.Fatalf("round trip differs:\n%+v\n%+v", back, s)
		}
	})
}
