//go:build linux

package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proc is a long-running process inside a namespace whose stdout and stderr
// go to files in the test's temp dir.
type proc struct {
	name       string
	cmd        *exec.Cmd
	outPath    string
	errPath    string
	done       chan struct{}
	waitErr    error
	exitStatus int
}

// procOpts are optional settings for startProc.
type procOpts struct {
	Env   []string // added to the environment
	Stdin string   // fed on stdin
}

// startProc starts argv inside ns ("" for the root namespace). The process
// is stopped (SIGTERM, then SIGKILL) when the test ends, and its output is
// logged if the test failed.
func startProc(t *testing.T, ns, name string, opts procOpts, argv ...string) *proc {
	t.Helper()
	dir := t.TempDir()
	p := &proc{
		name:    name,
		outPath: filepath.Join(dir, name+".stdout"),
		errPath: filepath.Join(dir, name+".stderr"),
		done:    make(chan struct{}),
	}
	stdout, err := os.Create(p.outPath)
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := os.Create(p.errPath)
	if err != nil {
		t.Fatal(err)
	}
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout = stdout
	p.cmd.Stderr = stderr
	p.cmd.Env = append(os.Environ(), opts.Env...)
	// If the test binary dies without running its cleanups (a go test
	// timeout), take the process down with it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if opts.Stdin != "" {
		p.cmd.Stdin = strings.NewReader(opts.Stdin)
	}
	if err := p.cmd.Start(); err != nil {
		stdout.Close()
		stderr.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	stdout.Close()
	stderr.Close()
	go func() {
		p.waitErr = p.cmd.Wait()
		p.exitStatus = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(10 * time.Second)
		if t.Failed() {
			t.Logf("%s (%s) stdout:\n%s", name, strings.Join(argv, " "), tail(p.Stdout(), 60))
			t.Logf("%s stderr:\n%s", name, tail(p.Stderr(), 60))
		}
	})
	return p
}

// tail keeps the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines omitted]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

func (p *proc) Stdout() string { b, _ := os.ReadFile(p.outPath); return string(b) }
func (p *proc) Stderr() string { b, _ := os.ReadFile(p.errPath); return string(b) }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process if it is still running.
func (p *proc) signal(sig syscall.Signal) {
	if !p.exited() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// wait waits up to timeout for the process to exit and returns its exit
// status.
func (p *proc) wait(timeout time.Duration) (int, error) {
	select {
	case <-p.done:
		return p.exitStatus, nil
	case <-time.After(timeout):
		return -1, fmt.Errorf("%s still running after %v", p.name, timeout)
	}
}

// stop asks the process to end with SIGTERM and kills it after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	p.signal(syscall.SIGTERM)
	if _, err := p.wait(grace); err == nil {
		return
	}
	p.signal(syscall.SIGKILL)
	_, _ = p.wait(5 * time.Second)
}

// errExited means the process ended while we waited for its output.
var errExited = errors.New("process exited")

// waitLines waits until stdout has at least n lines matching re and returns
// them.
func (p *proc) waitLines(re *regexp.Regexp, n int, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		// Checked before reading: once the process is gone its output is
		// complete, so the read below sees everything it wrote.
		exited := p.exited()
		var got []string
		for _, l := range strings.Split(p.Stdout(), "\n") {
			if re.MatchString(l) {
				got = append(got, l)
			}
		}
		if len(got) >= n {
			return got, nil
		}
		if exited {
			return got, fmt.Errorf("%s: %w with status %d after %d of %d lines matching %q; stderr:\n%s",
				p.name, errExited, p.exitStatus, len(got), n, re, tail(p.Stderr(), 30))
		}
		if time.Now().After(deadline) {
			return got, fmt.Errorf("%s: %d of %d lines matching %q within %v; stderr:\n%s",
				p.name, len(got), n, re, timeout, tail(p.Stderr(), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
