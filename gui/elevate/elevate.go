// Package elevate runs the helper's "service install" (or repair) with the
// OS's administrator prompt: pkexec on Linux, osascript on macOS and a
// RunAs ShellExecute (through PowerShell) on Windows.
package elevate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// ErrUnsupported means this OS has no elevation support yet.
var ErrUnsupported = errors.New("installing the helper from the app is not supported on this system")

// InstallArgs are the helper arguments that install (or repair) the service.
var InstallArgs = []string{"service", "install"}

// Run runs helper with args as administrator, after the OS's prompt.
func Run(ctx context.Context, helper string, args ...string) error {
	argv, err := command(helper, args)
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if msg == "" {
			return fmt.Errorf("run %s as administrator: %w", filepath.Base(helper), err)
		}
		return fmt.Errorf("run %s as administrator: %w: %s", filepath.Base(helper), err, msg)
	}
	return nil
}

// HelperPath finds mirage-helper: next to this executable first, then in PATH.
func HelperPath() (string, error) {
	name := "mirage-helper"
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("find %s: not next to the app and not in PATH", name)
	}
	return filepath.Abs(p)
}

// shQuote quotes s for a POSIX shell.
func shQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// osascriptCommand builds the macOS command: AppleScript's "do shell script
// … with administrator privileges" shows the system password prompt.
func osascriptCommand(helper string, args []string) []string {
	parts := []string{shQuote(helper)}
	for _, a := range args {
		parts = append(parts, shQuote(a))
	}
	script := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(strings.Join(parts, " "))
	return []string{"osascript", "-e", `do shell script "` + script + `" with administrator privileges`}
}

// psQuote quotes s as a PowerShell single-quoted string.
func psQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// runasCommand builds the Windows command: Start-Process -Verb RunAs is
// ShellExecute with the "runas" verb, which shows the UAC prompt.
func runasCommand(helper string, args []string) []string {
	ps := "$p = Start-Process -FilePath " + psQuote(helper)
	if len(args) > 0 {
		q := make([]string, len(args))
		for i, a := range args {
			q[i] = psQuote(a)
		}
		ps += " -ArgumentList " + strings.Join(q, ",")
	}
	ps += " -Verb RunAs -Wait -PassThru; exit $p.ExitCode"
	return []string{"powershell.exe", "-NoProfile", "-NonInteractive", "-Command", ps}
}

// pkexecCommand builds the Linux command; pkexec needs an absolute path.
func pkexecCommand(helper string, args []string) ([]string, error) {
	if !filepath.IsAbs(helper) {
		return nil, fmt.Errorf("helper path %q is not absolute", helper)
	}
	return append([]string{"pkexec", helper}, args...), nil
}
