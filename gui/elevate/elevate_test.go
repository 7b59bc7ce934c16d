package elevate

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

func TestCommands(t *testing.T) {
	got, err := pkexecCommand("/usr/bin/mirage-helper", InstallArgs)
	if err != nil || !reflect.DeepEqual(got, []string{"pkexec", "/usr/bin/mirage-helper", "service", "install"}) {
		t.Errorf("pkexec: %q %v", got, err)
	}
	if _, err := pkexecCommand("mirage-helper", nil); err == nil {
		t.Error("pkexec accepted a relative path")
	}
	got = osascriptCommand(`/Applications/Mirage.app/Contents/MacOS/it's "helper"`, InstallArgs)
	want := []string{"osascript", "-e", `do shell script "'/Applications/Mirage.app/Contents/MacOS/it'\\''s \"helper\"' 'service' 'install'" with administrator privileges`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("osascript:\n got %q\nwant %q", got, want)
	}
	got = runasCommand(`C:\Program Files\Mirage\O'Brien\mirage-helper.exe`, InstallArgs)
	want = []string{"powershell.exe", "-NoProfile", "-NonInteractive", "-Command",
		`$p = Start-Process -FilePath 'C:\Program Files\Mirage\O''Brien\mirage-helper.exe' -ArgumentList 'service','install' -Verb RunAs -Wait -PassThru; exit $p.ExitCode`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("runas:\n got %q\nwant %q", got, want)
	}
}

// TestRunReportsFailure runs the real Linux path with a fake pkexec in PATH.
func TestRunReportsFailure(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	dir := t.TempDir()
	log := filepath.Join(dir, "argv")
	script := "#!/bin/sh\necho \"$@\" > " + log + "\necho 'Request dismissed' >&2\nexit 126\n"
	if err := os.WriteFile(filepath.Join(dir, "pkexec"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	err := Run(context.Background(), "/usr/bin/mirage-helper", InstallArgs...)
	if err == nil || !strings.Contains(err.Error(), "Request dismissed") {
		t.Fatalf("Run error = %v", err)
	}
	b, _ := os.ReadFile(log)
	if strings.TrimSpace(string(b)) != "/usr/bin/mirage-helper service install" {
		t.Fatalf("pkexec got %q", b)
	}
}
