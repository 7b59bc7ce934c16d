package osnet

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeOS is a file system root plus recorded commands.
type fakeOS struct {
	root string
	bins map[string]string // command -> path (absent = not installed)
	log  []string
}

func newFakeOS(t *testing.T, resolv string, bins ...string) *fakeOS {
	t.Helper()
	f := &fakeOS{root: t.TempDir(), bins: map[string]string{}}
	if err := os.MkdirAll(filepath.Join(f.root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	binDir := filepath.Join(f.root, "bin")
	os.MkdirAll(binDir, 0o755)
	for _, b := range bins {
		name, target, isLink := strings.Cut(b, "->")
		p := filepath.Join(binDir, name)
		if isLink {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(p, nil, 0o755); err != nil {
			t.Fatal(err)
		}
		f.bins[name] = p
	}
	if strings.HasPrefix(resolv, "->") {
		if err := os.Symlink(strings.TrimPrefix(resolv, "->"), filepath.Join(f.root, "etc/resolv.conf")); err != nil {
			t.Fatal(err)
		}
	} else if resolv != "" {
		if err := os.WriteFile(filepath.Join(f.root, "etc/resolv.conf"), []byte(resolv), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *fakeOS) env() dnsEnv {
	return dnsEnv{
		Root: f.root,
		LookPath: func(name string) (string, error) {
			if p, ok := f.bins[name]; ok {
				return p, nil
			}
			return "", errors.New("not found")
		},
		Run: func(stdin []byte, name string, args ...string) error {
			line := name + " " + strings.Join(args, " ")
			if stdin != nil {
				line += fmt.Sprintf(" <<%q", stdin)
			}
			f.log = append(f.log, line)
			return nil
		},
	}
}

func (f *fakeOS) resolv(t *testing.T) string {
	b, err := os.ReadFile(filepath.Join(f.root, "etc/resolv.conf"))
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

func TestDNSBackendChoice(t *testing.T) {
	for _, c := range []struct {
		name   string
		resolv string
		bins   []string
		want   string
	}{
		{"stub symlink", "->../run/systemd/resolve/stub-resolv.conf", []string{"resolvectl", "resolvconf"}, backendResolved},
		{"stub content", "nameserver 127.0.0.53\noptions edns0 trust-ad\n", []string{"resolvectl"}, backendResolved},
		{"stub without resolvectl", "nameserver 127.0.0.53\n", nil, backendFile},
		{"resolvectl but plain file", "nameserver 198.51.100.1\n", []string{"resolvectl"}, backendFile},
		{"resolvconf", "nameserver 198.51.100.1\n", []string{"resolvconf"}, backendResolvconf},
		{"resolvconf is resolvectl shim", "nameserver 198.51.100.1\n", []string{"resolvectl", "resolvconf->resolvectl"}, backendFile},
		{"nothing", "nameserver 198.51.100.1\n", nil, backendFile},
		{"no resolv.conf", "", nil, backendFile},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeOS(t, c.resolv, c.bins...)
			if got := f.env().chooseBackend(); got != c.want {
				t.Fatalf("backend = %s, want %s", got, c.want)
			}
		})
	}
}

var (
	dns1 = netip.MustParseAddr("192.0.2.53")
	dns2 = netip.MustParseAddr("fd00::53")
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// runDNS sets servers, then a second server list, then reverts, returning
// the recorded commands and the journaled states.
func runDNS(t *testing.T, f *fakeOS) (cmds string, recorded []*dnsState) {
	t.Helper()
	env := f.env()
	record := func(st *dnsState) error { cp := *st; recorded = append(recorded, &cp); return nil }
	st, err := env.setDNS(nil, "mtun0", []netip.Addr{dns1, dns2}, record)
	if err != nil {
		t.Fatal(err)
	}
	f.log = append(f.log, "-- resolv.conf: "+f.resolv(t))
	st, err = env.setDNS(st, "mtun0", []netip.Addr{dns1}, record)
	if err != nil {
		t.Fatal(err)
	}
	f.log = append(f.log, "-- resolv.conf: "+f.resolv(t))
	if err := env.revertDNS(discard(), st); err != nil {
		t.Fatal(err)
	}
	f.log = append(f.log, "-- resolv.conf: "+f.resolv(t))
	return strings.Join(f.log, "\n"), recorded
}

func TestDNSResolved(t *testing.T) {
	f := newFakeOS(t, "->../run/systemd/resolve/stub-resolv.conf", "resolvectl")
	got, rec := runDNS(t, f)
	want := `resolvectl dns mtun0 192.0.2.53 fd00::53
resolvectl domain mtun0 ~.
-- resolv.conf: <open ` + f.root + `/etc/resolv.conf: no such file or directory>
resolvectl dns mtun0 192.0.2.53
resolvectl domain mtun0 ~.
-- resolv.conf: <open ` + f.root + `/etc/resolv.conf: no such file or directory>
resolvectl revert mtun0
-- resolv.conf: <open ` + f.root + `/etc/resolv.conf: no such file or directory>`
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	if len(rec) != 2 || rec[0].Backend != backendResolved || rec[0].Interface != "mtun0" {
		t.Fatalf("journaled %+v", rec)
	}
}

func TestDNSResolvconf(t *testing.T) {
	f := newFakeOS(t, "nameserver 198.51.100.1\n", "resolvconf")
	got, rec := runDNS(t, f)
	want := `resolvconf -a mtun0.mirage <<"nameserver 192.0.2.53\nnameserver fd00::53\n"
-- resolv.conf: nameserver 198.51.100.1

resolvconf -a mtun0.mirage <<"nameserver 192.0.2.53\n"
-- resolv.conf: nameserver 198.51.100.1

resolvconf -d mtun0.mirage
-- resolv.conf: nameserver 198.51.100.1
`
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	if len(rec) != 2 || rec[0].Backend != backendResolvconf {
		t.Fatalf("journaled %+v", rec)
	}
}

func TestDNSFile(t *testing.T) {
	orig := "# from dhcp\nnameserver 198.51.100.1\nsearch example.test\noptions ndots:2\n"
	f := newFakeOS(t, orig)
	got, rec := runDNS(t, f)
	want := `-- resolv.conf: # Written by mirage for mtun0; the original is restored on disconnect.
nameserver 192.0.2.53
nameserver fd00::53
search example.test
options ndots:2

-- resolv.conf: # Written by mirage for mtun0; the original is restored on disconnect.
nameserver 192.0.2.53
search example.test
options ndots:2

-- resolv.conf: ` + orig
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	if len(rec) != 2 || rec[0].Backend != backendFile || string(rec[0].Original) != orig || !rec[0].Existed {
		t.Fatalf("journaled %+v", rec[0])
	}
	fi, _ := os.Stat(filepath.Join(f.root, "etc/resolv.conf"))
	if fi.Mode().Perm() != 0o640 {
		t.Fatalf("restored mode %v, want 0640", fi.Mode())
	}
}

func TestDNSFileSymlinkAndMissing(t *testing.T) {
	f := newFakeOS(t, "->../run/nm/resolv.conf")
	nm := filepath.Join(f.root, "run/nm/resolv.conf")
	os.MkdirAll(filepath.Dir(nm), 0o755)
	os.WriteFile(nm, []byte("nameserver 198.51.100.1\n"), 0o644)
	runDNS(t, f)
	if target, err := os.Readlink(filepath.Join(f.root, "etc/resolv.conf")); err != nil || target != "../run/nm/resolv.conf" {
		t.Fatalf("symlink not restored: %q %v", target, err)
	}
	if b, _ := os.ReadFile(nm); string(b) != "nameserver 198.51.100.1\n" {
		t.Fatalf("symlink target modified: %q", b)
	}

	f = newFakeOS(t, "")
	runDNS(t, f)
	if _, err := os.Lstat(filepath.Join(f.root, "etc/resolv.conf")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("resolv.conf should be gone again, err = %v", err)
	}
}

func TestDNSFileChangedBySomeoneElse(t *testing.T) {
	f := newFakeOS(t, "nameserver 198.51.100.1\n")
	env := f.env()
	st, err := env.setDNS(nil, "mtun0", []netip.Addr{dns1}, func(*dnsState) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	newer := "nameserver 198.51.100.99\n"
	os.WriteFile(filepath.Join(f.root, "etc/resolv.conf"), []byte(newer), 0o644)
	if err := env.revertDNS(discard(), st); err != nil {
		t.Fatal(err)
	}
	if got := f.resolv(t); got != newer {
		t.Fatalf("revert clobbered a newer resolv.conf: %q", got)
	}
}

func TestDNSJournalFailureChangesNothing(t *testing.T) {
	orig := "nameserver 198.51.100.1\n"
	f := newFakeOS(t, orig, "resolvconf")
	_, err := f.env().setDNS(nil, "mtun0", []netip.Addr{dns1}, func(*dnsState) error { return errors.New("disk full") })
	if err == nil || len(f.log) != 0 {
		t.Fatalf("err=%v cmds=%v: nothing may run when journaling fails", err, f.log)
	}
	f = newFakeOS(t, orig)
	f.env().setDNS(nil, "mtun0", []netip.Addr{dns1}, func(*dnsState) error { return errors.New("disk full") })
	if !bytes.Equal([]byte(f.resolv(t)), []byte(orig)) {
		t.Fatalf("resolv.conf changed although journaling failed")
	}
}

func TestCleanupWithoutJournal(t *testing.T) {
	if err := Cleanup(discard(), t.TempDir()); err != nil {
		t.Fatalf("Cleanup with nothing to do: %v", err)
	}
	if err := Cleanup(discard(), filepath.Join(t.TempDir(), "missing")); err != nil {
		t.Fatalf("Cleanup of a missing state dir: %v", err)
	}
}
