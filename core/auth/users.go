package auth

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/mirage-vpn/mirage/core/wire"
)

// MaxNameLen is the longest user name, in bytes: the wire's limit.
const MaxNameLen = wire.MaxUsername

// maxUsersFileSize bounds what LoadUsers reads.
const maxUsersFileSize = 16 << 20

// Users is the contents of a users file: one "name:PHC" line per user, plus
// blank lines and '#' comments, which are kept so that a rewrite changes only
// what was edited. A Users is safe for concurrent use.
type Users struct {
	mu    sync.RWMutex
	lines []usersLine
	creds map[string]*phcHash
}

// usersLine is one line of the file. For a user line name is set and text is
// the PHC string as read (or as newly written); otherwise text is the line.
type usersLine struct {
	name string
	text string
}

// NewUsers returns an empty user list.
func NewUsers() *Users {
	return &Users{creds: map[string]*phcHash{}}
}

// ValidateName reports why name cannot be a user name: it must be 1 to 64
// bytes of valid UTF-8 without ':', whitespace or control characters.
func ValidateName(name string) error {
	switch {
	case name == "":
		return errors.New("empty user name")
	case len(name) > MaxNameLen:
		return fmt.Errorf("user name longer than %d bytes", MaxNameLen)
	case !utf8.ValidString(name):
		return errors.New("user name is not valid UTF-8")
	case strings.HasPrefix(name, "#"):
		return errors.New(`user name must not start with "#" (comment marker)`)
	}
	for _, r := range name {
		switch {
		case r == ':':
			return errors.New(`user name must not contain ":"`)
		case unicode.IsSpace(r):
			return errors.New("user name must not contain whitespace")
		case unicode.IsControl(r) || r == utf8.RuneError:
			return errors.New("user name must not contain control characters")
		}
	}
	return nil
}

// LoadUsers reads and parses the users file at path.
func LoadUsers(path string) (*Users, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open users file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxUsersFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read users file %s: %w", path, err)
	}
	if len(data) > maxUsersFileSize {
		return nil, fmt.Errorf("users file %s is larger than %d bytes", path, maxUsersFileSize)
	}
	return ParseUsers(data, path)
}

// ParseUsers parses users-file contents. name (usually the path) prefixes
// error messages, which also give the line number:
// "users: line 3: bad hash: ...". Lines may end in CRLF; surrounding
// whitespace on a line is ignored.
func ParseUsers(data []byte, name string) (*Users, error) {
	u := NewUsers()
	firstLine := map[string]int{}
	if len(data) == 0 {
		return u, nil
	}
	data = bytes.TrimSuffix(data, []byte("\n"))
	for i, raw := range strings.Split(string(data), "\n") {
		n := i + 1
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			u.lines = append(u.lines, usersLine{text: strings.TrimRight(raw, "\r")})
			continue
		}
		user, phc, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf(`%s: line %d: want "name:$argon2id$..."`, name, n)
		}
		if err := ValidateName(user); err != nil {
			return nil, fmt.Errorf("%s: line %d: bad user name: %w", name, n, err)
		}
		if prev, dup := firstLine[user]; dup {
			return nil, fmt.Errorf("%s: line %d: duplicate user %q (first on line %d)", name, n, user, prev)
		}
		h, err := parsePHC(phc)
		if err != nil {
			return nil, fmt.Errorf("%s: line %d: bad hash: %w", name, n, err)
		}
		firstLine[user] = n
		u.creds[user] = h
		u.lines = append(u.lines, usersLine{name: user, text: phc})
	}
	return u, nil
}

// dummy is verified against when the user is unknown, so that a login for a
// missing user costs the same Argon2 work as one for an existing user.
var dummy = sync.OnceValue(func() *phcHash {
	h := &phcHash{
		alg: algArgon2id, memory: DefaultMemoryKiB, time: DefaultTime, par: DefaultThreads,
		salt: make([]byte, defaultSaltLen), hash: make([]byte, defaultHashLen),
	}
	rand.Read(h.salt)
	rand.Read(h.hash) // matches no password (with overwhelming probability)
	return h
})

// Verify reports whether password is name's password. Its cost does not
// depend on whether name exists: unknown users are checked against a dummy
// hash. Empty and over-long passwords never match.
func (u *Users) Verify(name, password string) bool {
	if len(password) > MaxPasswordLen {
		return false
	}
	u.mu.RLock()
	h, ok := u.creds[name]
	u.mu.RUnlock()
	if !ok {
		h = dummy()
	}
	match := h.verify([]byte(password))
	return match && ok && password != ""
}

// Has reports whether name is a user, e.g. to check that the user named in a
// resume ticket still exists.
func (u *Users) Has(name string) bool {
	u.mu.RLock()
	defer u.mu.RUnlock()
	_, ok := u.creds[name]
	return ok
}

// Names returns the user names, sorted.
func (u *Users) Names() []string {
	u.mu.RLock()
	names := make([]string, 0, len(u.creds))
	for n := range u.creds {
		names = append(names, n)
	}
	u.mu.RUnlock()
	slices.Sort(names)
	return names
}

// Len returns the number of users.
func (u *Users) Len() int {
	u.mu.RLock()
	defer u.mu.RUnlock()
	return len(u.creds)
}

// Set adds name with password, or replaces the password of an existing user
// in place. The hash is new Argon2id with a fresh random salt.
func (u *Users) Set(name, password string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	h, err := newHash(password)
	if err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.creds[name]; ok {
		for i := range u.lines {
			if u.lines[i].name == name {
				u.lines[i].text = h.String()
			}
		}
	} else {
		u.lines = append(u.lines, usersLine{name: name, text: h.String()})
	}
	u.creds[name] = h
	return nil
}

// Delete removes name and reports whether it was there.
func (u *Users) Delete(name string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.creds[name]; !ok {
		return false
	}
	delete(u.creds, name)
	u.lines = slices.DeleteFunc(u.lines, func(l usersLine) bool { return l.name == name })
	return true
}

// Marshal returns the file contents: the original lines, in order, with
// edits applied and new users appended, each line ending in "\n".
func (u *Users) Marshal() []byte {
	u.mu.RLock()
	defer u.mu.RUnlock()
	var b bytes.Buffer
	for _, l := range u.lines {
		if l.name != "" {
			b.WriteString(l.name)
			b.WriteByte(':')
		}
		b.WriteString(l.text)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// Save writes the users file to path atomically (temporary file in the same
// directory, fsync, rename) with mode 0600.
func (u *Users) Save(path string) error {
	if err := writeFileAtomic(path, u.Marshal(), 0o600); err != nil {
		return fmt.Errorf("save users file: %w", err)
	}
	return nil
}

// Reload re-reads path and, if it parses, replaces u's contents; on error u
// is unchanged. Verify calls running concurrently see either the old or the
// new list.
func (u *Users) Reload(path string) error {
	n, err := LoadUsers(path)
	if err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.lines, u.creds = n.lines, n.creds
	return nil
}

// writeFileAtomic replaces path with data so that readers see either the old
// or the new contents, never a partial file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	syncDir(dir)
	return nil
}

// syncDir makes a rename durable. Best effort: not every OS lets a
// directory be opened and synced (Windows does not).
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	d.Sync()
	d.Close()
}
