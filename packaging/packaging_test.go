// Package packaging holds the packaging files (nfpm, systemd, macOS,
// FreeBSD, container); this test checks the ones no other test reads.
package packaging

import (
	"encoding/xml"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// plistStrings returns the <key> and <string> texts of a well-formed plist.
func plistStrings(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := xml.NewDecoder(f)
	d.Strict = true
	d.Entity = xml.HTMLEntity
	var out []string
	var in string
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("%s: not well-formed XML: %v", path, err)
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			in = tk.Name.Local
		case xml.CharData:
			if s := strings.TrimSpace(string(tk)); s != "" && (in == "key" || in == "string") {
				out = append(out, s)
			}
		}
	}
}

func TestMacOSPlists(t *testing.T) {
	info := strings.Join(plistStrings(t, "macos/Info.plist"), "\n")
	for _, want := range []string{"CFBundleURLSchemes\nmirage", "CFBundleIdentifier\nnet.mirage-vpn.mirage",
		"CFBundleExecutable\nmirage", "CFBundleIconFile\nmirage.png"} {
		if !strings.Contains(info, want) {
			t.Errorf("Info.plist lacks %q", want)
		}
	}
	ld := strings.Join(plistStrings(t, "macos/net.mirage-vpn.helper.plist"), "\n")
	for _, want := range []string{"Label\nmirage-helper", "ProgramArguments\n/Applications/Mirage.app/Contents/MacOS/mirage-helper\nrun",
		"RunAtLoad", "KeepAlive"} {
		if !strings.Contains(ld, want) {
			t.Errorf("launchd plist lacks %q", want)
		}
	}
}

func TestFreeBSDRcScripts(t *testing.T) {
	for _, name := range []string{"mirage_server", "mirage_helper"} {
		p := "freebsd/rc.d/" + name
		if out, err := exec.Command("sh", "-n", p).CombinedOutput(); err != nil {
			t.Errorf("%s: sh -n: %v\n%s", p, err, out)
		}
		b, _ := os.ReadFile(p)
		s := string(b)
		for _, want := range []string{"# PROVIDE: " + name, "name=" + name, "rcvar=" + name + "_enable", "run_rc_command", ". /etc/rc.subr"} {
			if !strings.Contains(s, want) {
				t.Errorf("%s lacks %q", p, want)
			}
		}
		if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
			t.Errorf("%s is not executable", p)
		}
	}
}
