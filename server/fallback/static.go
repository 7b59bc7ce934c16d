package fallback

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"time"
)

//go:embed site
var builtinFiles embed.FS

// defaultModTime is the Last-Modified date of the built-in site when the
// executable's own modification time is unavailable.
var defaultModTime = time.Date(2024, time.March, 11, 9, 42, 17, 0, time.UTC)

// newBuiltinSite serves the embedded site. Embedded files carry no
// modification time; the executable's is used, which looks like an
// ordinary deployment date and differs between installs.
func newBuiltinSite() *fileSite {
	sub, err := fs.Sub(builtinFiles, "site")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory exists
	}
	mod := defaultModTime
	if exe, err := os.Executable(); err == nil {
		if st, err := os.Stat(exe); err == nil {
			mod = st.ModTime().UTC().Truncate(time.Second)
		}
	}
	return &fileSite{fsys: sub, modTime: mod}
}

// fileSite serves files from fsys the way a default nginx "location /"
// does: index.html for directories, no listings, 301 to add a slash, GET
// and HEAD only.
type fileSite struct {
	fsys    fs.FS
	modTime time.Time // for files without one
}

// contentTypes follows nginx's stock mime.types for the common extensions.
var contentTypes = map[string]string{
	".html":  "text/html",
	".htm":   "text/html",
	".css":   "text/css",
	".js":    "application/javascript",
	".json":  "application/json",
	".xml":   "text/xml",
	".txt":   "text/plain",
	".ico":   "image/x-icon",
	".png":   "image/png",
	".jpg":   "image/jpeg",
	".jpeg":  "image/jpeg",
	".gif":   "image/gif",
	".svg":   "image/svg+xml",
	".webp":  "image/webp",
	".woff":  "font/woff",
	".woff2": "font/woff2",
	".pdf":   "application/pdf",
	".mp4":   "video/mp4",
}

func (s *fileSite) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeStatusPage(w, http.StatusMethodNotAllowed)
		return
	}
	urlPath := r.URL.Path
	if !strings.HasPrefix(urlPath, "/") || strings.ContainsAny(urlPath, "\x00\\") {
		writeStatusPage(w, http.StatusBadRequest)
		return
	}
	clean := path.Clean(urlPath) // resolves "..": never above "/"
	name := strings.TrimPrefix(clean, "/")
	if name == "" {
		name = "."
	}
	for _, seg := range strings.Split(name, "/") {
		if seg != "." && strings.HasPrefix(seg, ".") {
			writeStatusPage(w, http.StatusNotFound) // .git, .env, ...
			return
		}
	}
	if !fs.ValidPath(name) {
		writeStatusPage(w, http.StatusNotFound)
		return
	}

	st, err := fs.Stat(s.fsys, name)
	if err != nil {
		writeStatusPage(w, statusFor(err))
		return
	}
	wantDir := strings.HasSuffix(urlPath, "/")
	if st.IsDir() {
		if !wantDir {
			loc := clean + "/"
			if r.URL.RawQuery != "" {
				loc += "?" + r.URL.RawQuery
			}
			w.Header().Set("Location", loc)
			writeStatusPage(w, http.StatusMovedPermanently)
			return
		}
		name = path.Join(name, "index.html")
		st, err = fs.Stat(s.fsys, name)
		if err != nil || st.IsDir() {
			writeStatusPage(w, http.StatusForbidden) // directory without index, no listing
			return
		}
	} else if wantDir {
		writeStatusPage(w, http.StatusNotFound)
		return
	}
	if !st.Mode().IsRegular() {
		writeStatusPage(w, http.StatusNotFound)
		return
	}
	s.serveFile(w, r, name, st)
}

func (s *fileSite) serveFile(w http.ResponseWriter, r *http.Request, name string, st fs.FileInfo) {
	f, err := s.fsys.Open(name)
	if err != nil {
		writeStatusPage(w, statusFor(err))
		return
	}
	defer f.Close()
	content, ok := f.(io.ReadSeeker)
	if !ok {
		data, err := io.ReadAll(io.LimitReader(f, st.Size()+1))
		if err != nil {
			writeStatusPage(w, http.StatusInternalServerError)
			return
		}
		content = bytes.NewReader(data)
	}
	mod := st.ModTime()
	if mod.IsZero() {
		mod = s.modTime
	}
	ct, ok := contentTypes[strings.ToLower(path.Ext(name))]
	if !ok {
		ct = "application/octet-stream" // nginx default_type
	}
	h := w.Header()
	h.Set("Content-Type", ct)
	// nginx's ETag: hex mtime, hex size.
	h.Set("ETag", `"`+strconv.FormatInt(mod.Unix(), 16)+"-"+strconv.FormatInt(st.Size(), 16)+`"`)
	http.ServeContent(w, r, name, mod, content)
}

func statusFor(err error) int {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return http.StatusForbidden
	default:
		// Missing files, escapes outside the root (os.Root), bad names.
		return http.StatusNotFound
	}
}

// nginxHeaders stamps every response with nginx's Server header.
func nginxHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "nginx")
		next.ServeHTTP(w, r)
	})
}

// statusTexts are nginx's reason phrases where they differ from Go's.
var statusTexts = map[int]string{
	http.StatusMovedPermanently:   "Moved Permanently",
	http.StatusMethodNotAllowed:   "Not Allowed",
	http.StatusBadGateway:         "Bad Gateway",
	http.StatusGatewayTimeout:     "Gateway Time-out",
	http.StatusServiceUnavailable: "Service Temporarily Unavailable",
}

// writeStatusPage writes nginx's default error page for code.
func writeStatusPage(w http.ResponseWriter, code int) {
	text, ok := statusTexts[code]
	if !ok {
		text = http.StatusText(code)
	}
	title := fmt.Sprintf("%d %s", code, text)
	body := "<html>\r\n<head><title>" + title + "</title></head>\r\n<body>\r\n<center><h1>" + title +
		"</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
	h := w.Header()
	h.Del("ETag")
	h.Del("Last-Modified")
	h.Set("Content-Type", "text/html")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}
