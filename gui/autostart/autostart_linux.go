package autostart

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// fileName is the autostart entry's name in $XDG_CONFIG_HOME/autostart.
const fileName = "mirage.desktop"

// Path returns the autostart file's location.
func Path() (string, error) {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" || !filepath.IsAbs(dir) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("autostart: find home directory: %w", err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "autostart", fileName), nil
}

// Enabled reports whether the autostart file exists.
func Enabled() (bool, error) {
	p, err := Path()
	if err != nil {
		return false, err
	}
	_, err = os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("autostart: %w", err)
	}
	return true, nil
}

// Enable writes the autostart file (atomically).
func Enable(e Entry) error {
	if !filepath.IsAbs(e.Exec) {
		return fmt.Errorf("autostart: executable path %q is not absolute", e.Exec)
	}
	p, err := Path()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("autostart: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".mirage-*.desktop")
	if err != nil {
		return fmt.Errorf("autostart: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(desktopFile(e)); err != nil {
		tmp.Close()
		return fmt.Errorf("autostart: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("autostart: write %s: %w", tmp.Name(), err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("autostart: %w", err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return fmt.Errorf("autostart: %w", err)
	}
	return nil
}

// Disable removes the autostart file; it is not an error if there is none.
func Disable() error {
	p, err := Path()
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("autostart: %w", err)
	}
	return nil
}

// desktopFile renders the XDG desktop entry, quoting Exec arguments as the
// Desktop Entry Specification requires.
func desktopFile(e Entry) string {
	name := e.Name
	if name == "" {
		name = "Mirage"
	}
	args := []string{quoteExec(e.Exec)}
	for _, a := range e.Args {
		args = append(args, quoteExec(a))
	}
	return "[Desktop Entry]\nType=Application\nName=" + strings.ReplaceAll(name, "\n", " ") +
		"\nComment=Mirage VPN tray app\nExec=" + strings.Join(args, " ") +
		"\nTerminal=false\nX-GNOME-Autostart-enabled=true\n"
}

func quoteExec(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n\"'\\><~|&;$*?#()`%=") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\\\`, `"`, `\\"`, "`", "\\\\`", `$`, `\\$`, `%`, `%%`, "\n", " ")
	return `"` + r.Replace(s) + `"`
}
