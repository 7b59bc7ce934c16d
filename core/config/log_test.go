package config

import (
	"bytes"
	"strings"
	"testing"
)

func TestLogger(t *testing.T) {
	var b bytes.Buffer
	Log{Level: "warn", Format: "json"}.Logger(&b).Info("hidden")
	Log{Level: "warn", Format: "json"}.Logger(&b).Warn("shown")
	if out := b.String(); strings.Contains(out, "hidden") || !strings.Contains(out, `"msg":"shown"`) {
		t.Fatalf("json/warn logger wrote %q", out)
	}
	b.Reset()
	Log{Level: "debug", Format: "text"}.Logger(&b).Debug("dbg")
	if !strings.Contains(b.String(), "msg=dbg") {
		t.Fatalf("text/debug logger wrote %q", b.String())
	}
}
