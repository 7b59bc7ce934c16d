package service

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSystemdUnit(t *testing.T) {
	got := systemdUnit("/usr/local/bin/mirage-helper", []string{"run", "--socket", `/run/a b/"x"%$`})
	want := `[Unit]
Description=Mirage VPN helper
Wants=network-pre.target
After=network-pre.target

[Service]
Type=simple
ExecStart="/usr/local/bin/mirage-helper" "run" "--socket" "/run/a b/\"x\"%%$$"
KillSignal=SIGTERM
TimeoutStopSec=30
Restart=on-failure
RestartSec=5
RuntimeDirectory=mirage
RuntimeDirectoryMode=0755
StateDirectory=mirage-helper
StateDirectoryMode=0700

[Install]
WantedBy=multi-user.target
`
	if got != want {
		t.Fatalf("unit:\n%s\nwant:\n%s", got, want)
	}
	if strings.Contains(got, "{{") {
		t.Fatal("unit contains template actions; kardianos/service would expand them")
	}
	c := config("/usr/local/bin/mirage-helper", []string{"run"})
	if c.Option["SystemdScript"] != systemdUnit("/usr/local/bin/mirage-helper", []string{"run"}) {
		t.Error("config does not pass the rendered unit as SystemdScript")
	}
	if c.Name != "mirage-helper" || c.DisplayName != "Mirage VPN helper" || !reflect.DeepEqual(c.Arguments, []string{"run"}) {
		t.Errorf("config = %+v", c)
	}
}

// fakeSys records the commands ensureGroup runs.
type fakeSys struct {
	groupExists bool
	env         map[string]string
	users       map[string]string
	execErr     error
	ran         []string
}

func (f *fakeSys) manager() *Manager {
	return &Manager{
		Exec: func(name string, args ...string) error {
			f.ran = append(f.ran, strings.Join(append([]string{name}, args...), " "))
			return f.execErr
		},
		LookupGroup: func(name string) (bool, error) {
			if name != Group {
				return false, errors.New("unexpected group " + name)
			}
			return f.groupExists, nil
		},
		LookupUserID: func(uid string) (string, error) {
			if n, ok := f.users[uid]; ok {
				return n, nil
			}
			return "", errors.New("unknown uid " + uid)
		},
		Getenv: func(k string) string { return f.env[k] },
	}
}

func TestEnsureGroup(t *testing.T) {
	cases := []struct {
		name    string
		sys     fakeSys
		want    []string
		wantErr string
	}{
		{"missing group, sudo user", fakeSys{env: map[string]string{"SUDO_USER": "alice"}},
			[]string{"groupadd --system mirage", "usermod -aG mirage alice"}, ""},
		{"existing group, pkexec uid", fakeSys{groupExists: true, env: map[string]string{"PKEXEC_UID": "1001"}, users: map[string]string{"1001": "bob"}},
			[]string{"usermod -aG mirage bob"}, ""},
		{"sudo wins over pkexec", fakeSys{groupExists: true, env: map[string]string{"SUDO_USER": "alice", "PKEXEC_UID": "1001"}, users: map[string]string{"1001": "bob"}},
			[]string{"usermod -aG mirage alice"}, ""},
		{"root login: no usermod", fakeSys{env: map[string]string{"SUDO_USER": "root"}},
			[]string{"groupadd --system mirage"}, ""},
		{"nobody known", fakeSys{groupExists: true}, nil, ""},
		{"unknown pkexec uid", fakeSys{groupExists: true, env: map[string]string{"PKEXEC_UID": "4242"}}, nil, "PKEXEC_UID=4242"},
		{"groupadd fails", fakeSys{execErr: errors.New("boom")}, []string{"groupadd --system mirage"}, `create group "mirage": boom`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := c.sys
			err := f.manager().ensureGroup()
			if c.wantErr == "" && err != nil {
				t.Fatalf("ensureGroup: %v", err)
			}
			if c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("ensureGroup error %v, want it to contain %q", err, c.wantErr)
			}
			if !reflect.DeepEqual(f.ran, c.want) {
				t.Errorf("ran %q, want %q", f.ran, c.want)
			}
		})
	}
}

func TestRemoveRCLinks(t *testing.T) {
	etc := t.TempDir()
	target := filepath.Join(etc, "init.d", Name)
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		t.Fatal(err)
	}
	var dangling []string
	for _, lvl := range []string{"0", "1", "6"} {
		dangling = append(dangling, filepath.Join(etc, "rc"+lvl+".d", "K02"+Name))
	}
	for _, lvl := range []string{"2", "3", "4", "5"} {
		dangling = append(dangling, filepath.Join(etc, "rc"+lvl+".d", "S50"+Name))
	}
	for _, l := range dangling {
		if err := os.MkdirAll(filepath.Dir(l), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, l); err != nil {
			t.Fatal(err)
		}
	}
	// A link that still resolves and an unrelated file stay.
	live := filepath.Join(etc, "rc2.d", "S50"+Name+"-other")
	other := filepath.Join(etc, "init.d", "other")
	if err := os.WriteFile(other, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(other, live); err != nil {
		t.Fatal(err)
	}
	m := &Manager{EtcDir: etc}
	if err := m.removeRCLinks(); err != nil {
		t.Fatal(err)
	}
	for _, l := range dangling {
		if _, err := os.Lstat(l); err == nil {
			t.Errorf("%s still exists", l)
		}
	}
	if _, err := os.Lstat(live); err != nil {
		t.Errorf("unrelated link removed: %v", err)
	}
	// A valid link under our name (script reinstalled) is kept.
	if err := os.WriteFile(target, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(etc, "rc3.d", "S50"+Name)
	if err := os.Symlink(target, keep); err != nil {
		t.Fatal(err)
	}
	if err := m.removeRCLinks(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(keep); err != nil {
		t.Errorf("valid link removed: %v", err)
	}
}

func TestInstallRejectsRelativePath(t *testing.T) {
	f := fakeSys{}
	err := f.manager().Install("mirage-helper", []string{"run"})
	if err == nil || !strings.Contains(err.Error(), "must be absolute") {
		t.Fatalf("Install with a relative path: %v", err)
	}
	if len(f.ran) != 0 {
		t.Errorf("ran %q before validating the path", f.ran)
	}
}

// The unit in the mirage package is the one `service install` writes.
func TestPackagedUnitMatches(t *testing.T) {
	b, err := os.ReadFile("../../packaging/systemd/mirage-helper.service")
	if err != nil {
		t.Fatal(err)
	}
	if want := systemdUnit("/usr/bin/mirage-helper", []string{"run"}); string(b) != want {
		t.Fatalf("packaging/systemd/mirage-helper.service differs from the unit service install writes:\n%s\nwant:\n%s", b, want)
	}
}
