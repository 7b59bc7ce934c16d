package buildinfo

import (
	"regexp"
	"runtime"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	if s := String("mirage", "v1", "abc1234"); s != "mirage v1 (commit abc1234, "+runtime.Version()+")" {
		t.Fatalf("with a link-time commit: %q", s)
	}
	s := String("mirage-server", "v1.2.3", "")
	if !regexp.MustCompile(`^mirage-server v1\.2\.3 \(commit ([0-9a-f]{12}|unknown)(\+dirty)?, go`).MatchString(s) ||
		!strings.HasSuffix(s, runtime.Version()+")") {
		t.Fatalf("String = %q", s)
	}
}
