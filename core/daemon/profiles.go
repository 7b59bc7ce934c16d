package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/mirage-vpn/mirage/core/api"
	"github.com/mirage-vpn/mirage/core/config"
)

const maxNameLen = 64

// store keeps profiles as <name>.toml files in one directory. Names are
// checked against a strict alphabet and files are only ever addressed by
// a checked name, so a request can never reach another path.
type store struct {
	dir string
	mu  sync.Mutex
}

func openStore(dir string) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("profile store: %w", err)
	}
	if runtime.GOOS != "windows" {
		// The profiles hold passwords; tighten a directory made earlier.
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("profile store: %w", err)
		}
	}
	return &store{dir: dir}, nil
}

// windowsReserved are device names Windows refuses as file names, with or
// without an extension.
var windowsReserved = []string{"con", "prn", "aux", "nul",
	"com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8", "com9",
	"lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9"}

// checkName validates a profile name: 1-64 characters from A-Z a-z 0-9,
// space, '.', '_' and '-', not starting with '.' or a space, not ending
// with '.' or a space (Windows drops those), not a Windows device name.
func checkName(name string) error {
	bad := func(why string) error {
		return &api.Error{Code: api.CodeBadRequest, Message: fmt.Sprintf("invalid profile name %q: %s", name, why)}
	}
	if name == "" {
		return bad("empty")
	}
	if len(name) > maxNameLen {
		return bad(fmt.Sprintf("longer than %d characters", maxNameLen))
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(" ._-", r)
		if !ok {
			return bad("only letters, digits, space, '.', '_' and '-' are allowed")
		}
	}
	switch {
	case name[0] == '.' || name[0] == ' ':
		return bad("must not start with '.' or a space")
	case strings.HasSuffix(name, ".") || strings.HasSuffix(name, " "):
		return bad("must not end with '.' or a space")
	}
	base, _, _ := strings.Cut(strings.ToLower(name), ".")
	if slices.Contains(windowsReserved, strings.TrimRight(base, " ")) {
		return bad("reserved device name")
	}
	return nil
}

// defaultName derives a profile name from a server host: characters outside
// the name alphabet become '-'.
func defaultName(host string) string {
	b := []byte(host)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			b[i] = '-'
		}
	}
	s := strings.Trim(string(b), ".- ")
	if len(s) > maxNameLen {
		s = strings.TrimRight(s[:maxNameLen], ". ")
	}
	if s == "" {
		s = "profile"
	}
	return s
}

func (s *store) path(name string) string { return filepath.Join(s.dir, name+".toml") }

// names lists the stored profile names (under s.mu).
func (s *store) names() ([]string, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("profile store: %w", err)
	}
	var out []string
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), ".toml")
		if !ok || !e.Type().IsRegular() || checkName(n) != nil {
			continue // temporary files, strays
		}
		out = append(out, n)
	}
	return out, nil
}

// exists reports whether a profile with exactly this name is stored
// (looked up in the listing so that case-insensitive file systems behave
// like the others).
func (s *store) exists(name string) (bool, error) {
	ns, err := s.names()
	if err != nil {
		return false, err
	}
	return slices.Contains(ns, name), nil
}

// clash returns the stored name that equals name ignoring case (except
// skip), so that "Home" and "home" never coexist.
func (s *store) clash(name, skip string) (string, error) {
	ns, err := s.names()
	if err != nil {
		return "", err
	}
	for _, n := range ns {
		if n != skip && strings.EqualFold(n, name) {
			return n, nil
		}
	}
	return "", nil
}

func notFound(name string) error {
	return &api.Error{Code: api.CodeNotFound, Message: fmt.Sprintf("no profile named %q", name)}
}

// load reads and validates a stored profile (under s.mu).
func (s *store) load(name string) (*config.Client, []byte, error) {
	if err := checkName(name); err != nil {
		return nil, nil, err
	}
	ok, err := s.exists(name)
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		return nil, nil, notFound(name)
	}
	data, err := os.ReadFile(s.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, notFound(name)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read profile %q: %w", name, err)
	}
	if len(data) > config.MaxFileSize {
		return nil, data, &api.Error{Code: api.CodeInvalidConfig, Message: fmt.Sprintf("profile %q is larger than %d bytes", name, config.MaxFileSize)}
	}
	cfg, err := config.ParseClient(data, s.path(name))
	if err != nil {
		return nil, data, &api.Error{Code: api.CodeInvalidConfig, Message: err.Error()}
	}
	return cfg, data, nil
}

// loadFor loads a profile to connect it; mark runs under the store lock so
// that the profile cannot be deleted in between.
func (s *store) loadFor(name string, mark func()) (*config.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg, _, err := s.load(name)
	if err == nil {
		mark()
	}
	return cfg, err
}

func summary(name string, cfg *config.Client) api.Profile {
	p := api.Profile{Name: name, Protocols: []string{}}
	if cfg != nil {
		p.Server = cfg.ConnectionString
		p.Protocols = cfg.Protocols()
		p.Username = cfg.Authentication.Username
		p.KillSwitch = cfg.Network.KillSwitch
		p.AllowLAN = cfg.Network.AllowLAN
	}
	return p
}

// List returns every profile, sorted by name, without TOML. A file that no
// longer parses is listed by name only.
func (s *store) list() ([]api.Profile, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ns, err := s.names()
	if err != nil {
		return nil, err
	}
	slices.Sort(ns)
	out := make([]api.Profile, 0, len(ns))
	for _, n := range ns {
		cfg, _, _ := s.load(n)
		out = append(out, summary(n, cfg))
	}
	return out, nil
}

// get returns one profile with its TOML.
func (s *store) get(name string) (api.Profile, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg, data, err := s.load(name)
	if err != nil {
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.CodeInvalidConfig && data != nil {
			// Still hand out the text so the user can fix it.
			p := summary(name, nil)
			p.TOML = string(data)
			return p, nil
		}
		return api.Profile{}, err
	}
	p := summary(name, cfg)
	p.TOML = string(data)
	return p, nil
}

// parse validates profile text for storage under name (named in errors)
// and returns what to write.
func parseProfile(text []byte, file string) (*config.Client, []byte, error) {
	if len(text) > config.MaxFileSize {
		return nil, nil, &api.Error{Code: api.CodeInvalidConfig, Message: fmt.Sprintf("%s: larger than %d bytes", file, config.MaxFileSize)}
	}
	cfg, err := config.ParseClient(text, file)
	if err != nil {
		return nil, nil, &api.Error{Code: api.CodeInvalidConfig, Message: err.Error()}
	}
	return checkStorable(cfg, file)
}

// checkStorable refuses what the privileged helper must not take from an
// unprivileged caller and renders the stored form.
func checkStorable(cfg *config.Client, file string) (*config.Client, []byte, error) {
	if cfg.TLS.CAFile != "" {
		// The helper runs as root: a path from the caller would let it read
		// any file (or block on a device). Pins need no file.
		return nil, nil, &api.Error{Code: api.CodeInvalidConfig, Message: file + ": [tls] ca_file: not supported in profiles managed by the helper; use pinned_sha256"}
	}
	out, err := cfg.MarshalTOML()
	if err != nil {
		return nil, nil, &api.Error{Code: api.CodeInvalidConfig, Message: err.Error()}
	}
	return cfg, out, nil
}

// add stores a new profile from client.toml text or a mirage:// link. The
// name defaults to the link's display name, else the server host.
func (s *store) add(req api.ImportRequest) (api.Profile, error) {
	if (req.TOML == "") == (req.Link == "") {
		return api.Profile{}, &api.Error{Code: api.CodeBadRequest, Message: "give exactly one of toml and link"}
	}
	if req.Name != "" {
		if err := checkName(req.Name); err != nil {
			return api.Profile{}, err
		}
	}
	var (
		cfg  *config.Client
		data []byte
		err  error
	)
	file := "client.toml"
	if req.Name != "" {
		file = req.Name + ".toml"
	}
	if req.TOML != "" {
		cfg, data, err = parseProfile([]byte(req.TOML), file)
	} else {
		cfg, err = config.ParseLink(req.Link)
		if err != nil {
			err = &api.Error{Code: api.CodeInvalidConfig, Message: err.Error()}
		} else {
			cfg, data, err = checkStorable(cfg, file)
		}
	}
	if err != nil {
		return api.Profile{}, err
	}
	name := req.Name
	if name == "" && req.Link != "" {
		// The link's display name, when it makes a valid profile name.
		if n := config.LinkName(req.Link); checkName(n) == nil {
			name = n
		}
	}
	if name == "" {
		host, _ := cfg.ServerAddr()
		name = defaultName(host)
		if err := checkName(name); err != nil {
			return api.Profile{}, &api.Error{Code: api.CodeBadRequest, Message: fmt.Sprintf("cannot derive a profile name from %q; give a name", host)}
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	other, err := s.clash(name, "")
	if err != nil {
		return api.Profile{}, err
	}
	if other != "" {
		return api.Profile{}, &api.Error{Code: api.CodeConflict, Message: fmt.Sprintf("a profile named %q already exists", other)}
	}
	if err := config.WriteFileAtomic(s.path(name), data, 0o600); err != nil {
		return api.Profile{}, fmt.Errorf("store profile %q: %w", name, err)
	}
	return summary(name, cfg), nil
}

// update renames a profile and/or replaces its TOML. Everything is checked
// before the disk is touched. renamed is called (under the store lock) after
// a successful rename.
func (s *store) update(name string, req api.UpdateRequest, renamed func(from, to string)) (api.Profile, error) {
	if err := checkName(name); err != nil {
		return api.Profile{}, err
	}
	switches := req.KillSwitch != nil || req.AllowLAN != nil
	if req.Name == "" && req.TOML == "" && !switches {
		return api.Profile{}, &api.Error{Code: api.CodeBadRequest, Message: "nothing to change: give name, toml, kill_switch and/or allow_lan"}
	}
	to := name
	if req.Name != "" {
		if err := checkName(req.Name); err != nil {
			return api.Profile{}, err
		}
		to = req.Name
	}
	var (
		cfg  *config.Client
		data []byte
		err  error
	)
	if req.TOML != "" {
		if cfg, data, err = parseProfile([]byte(req.TOML), to+".toml"); err != nil {
			return api.Profile{}, err
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	ok, err := s.exists(name)
	if err != nil {
		return api.Profile{}, err
	}
	if !ok {
		return api.Profile{}, notFound(name)
	}
	if switches {
		if cfg == nil {
			if cfg, _, err = s.load(name); err != nil {
				return api.Profile{}, err
			}
		}
		if req.KillSwitch != nil {
			cfg.Network.KillSwitch = *req.KillSwitch
		}
		if req.AllowLAN != nil {
			cfg.Network.AllowLAN = *req.AllowLAN
		}
		if cfg, data, err = checkStorable(cfg, to+".toml"); err != nil {
			return api.Profile{}, err
		}
	}
	if to != name {
		other, err := s.clash(to, name)
		if err != nil {
			return api.Profile{}, err
		}
		if other != "" {
			return api.Profile{}, &api.Error{Code: api.CodeConflict, Message: fmt.Sprintf("a profile named %q already exists", other)}
		}
	}
	if to != name {
		if err := os.Rename(s.path(name), s.path(to)); err != nil {
			return api.Profile{}, fmt.Errorf("rename profile %q: %w", name, err)
		}
	}
	if data != nil {
		if err := config.WriteFileAtomic(s.path(to), data, 0o600); err != nil {
			if to != name {
				os.Rename(s.path(to), s.path(name))
			}
			return api.Profile{}, fmt.Errorf("store profile %q: %w", to, err)
		}
	}
	if to != name {
		renamed(name, to)
	}
	if cfg == nil {
		cfg, _, _ = s.load(to)
	}
	return summary(to, cfg), nil
}

// remove deletes a profile unless inUse says it is connected.
func (s *store) remove(name string, inUse func() string) error {
	if err := checkName(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ok, err := s.exists(name)
	if err != nil {
		return err
	}
	if !ok {
		return notFound(name)
	}
	if inUse() == name {
		return &api.Error{Code: api.CodeConflict, Message: fmt.Sprintf("profile %q is in use; disconnect first", name)}
	}
	if err := os.Remove(s.path(name)); err != nil {
		return fmt.Errorf("delete profile %q: %w", name, err)
	}
	return nil
}
