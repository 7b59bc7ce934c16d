package config

import (
	"github.com/mirage-vpn/mirage/core/shaping"
	"github.com/mirage-vpn/mirage/core/wire"

	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Value checks shared by the client and server validators. Each returns ""
// when the value is fine, else the problem in words.

func checkRange(v, lo, hi int) string {
	if v < lo || v > hi {
		return fmt.Sprintf("must be between %d and %d (got %d)", lo, hi, v)
	}
	return ""
}

// checkZeroOrRange allows 0 (meaning off / use the other side's value) or lo..hi.
func checkZeroOrRange(v, lo, hi int) string {
	if v != 0 && (v < lo || v > hi) {
		return fmt.Sprintf("must be 0 or between %d and %d (got %d)", lo, hi, v)
	}
	return ""
}

func checkEnum(v string, allowed ...string) string {
	if slices.Contains(allowed, v) {
		return ""
	}
	return fmt.Sprintf("must be one of %s (got %q)", strings.Join(allowed, ", "), v)
}

// checkHostname accepts a DNS name: 1-253 characters, dot-separated labels of
// 1-63 letters, digits, '-' or '_' not starting or ending with '-'; one
// trailing dot is allowed. IP literals are rejected (they are not names).
func checkHostname(s string) string {
	if s == "" {
		return "must not be empty"
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return fmt.Sprintf("must be a host name, not an IP address (got %q)", s)
	}
	name := strings.TrimSuffix(s, ".")
	if name == "" || len(name) > 253 {
		return fmt.Sprintf("invalid host name %q: must be 1-253 characters", s)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Sprintf("invalid host name %q: each dot-separated label must be 1-63 characters", s)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Sprintf("invalid host name %q: a label must not start or end with '-'", s)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Sprintf("invalid host name %q: character %q not allowed", s, r)
			}
		}
	}
	// A name of only digits and dots looks like a mistyped IPv4 address.
	if strings.Trim(name, "0123456789.") == "" {
		return fmt.Sprintf("invalid host name or IPv4 address %q", s)
	}
	return ""
}

// splitHostPort splits "host:port", "[v6]:port" into host (without brackets)
// and port, checking the port is 1-65535 and the host an IP or a host name.
// allowEmptyHost permits ":port" (listen on all addresses).
func splitHostPort(s string, allowEmptyHost bool) (string, int, string) {
	if s == "" {
		return "", 0, `must be "host:port" (got "")`
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		msg := fmt.Sprintf(`must be "host:port" (got %q)`, s)
		if strings.Count(s, ":") > 1 && !strings.HasPrefix(s, "[") {
			msg += `; write IPv6 addresses in brackets, e.g. "[2001:db8::1]:443"`
		}
		return "", 0, msg
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 || portStr[0] == '+' || portStr[0] == '-' {
		return "", 0, fmt.Sprintf("port must be a number between 1 and 65535 (got %q)", portStr)
	}
	if host == "" {
		if allowEmptyHost {
			return "", port, ""
		}
		return "", 0, fmt.Sprintf("host is missing (got %q)", s)
	}
	bracketed := strings.HasPrefix(s, "[")
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Is6() && !a.Is4In6() && !bracketed {
			return "", 0, fmt.Sprintf("IPv6 address must be in brackets (got %q)", s)
		}
		return host, port, ""
	}
	if bracketed {
		return "", 0, fmt.Sprintf("invalid IPv6 address %q", host)
	}
	if msg := checkHostname(host); msg != "" {
		return "", 0, msg
	}
	return host, port, ""
}

func checkHostPort(s string, allowEmptyHost bool) string {
	_, _, msg := splitHostPort(s, allowEmptyHost)
	return msg
}

func checkIP(s string) string {
	if _, err := netip.ParseAddr(s); err != nil {
		return fmt.Sprintf("invalid IP address %q", s)
	}
	return ""
}

// checkPrefixes validates a list of CIDR prefixes; masked or not.
func checkPrefixes(list []string) string {
	for _, r := range list {
		if _, err := netip.ParsePrefix(r); err != nil {
			return fmt.Sprintf("invalid CIDR prefix %q (want e.g. \"10.0.0.0/8\" or \"2001:db8::/32\")", r)
		}
	}
	return ""
}

// checkIPFamily requires an IPv4 (family 4) or IPv6 (6) address.
func checkIPFamily(s string, family int) string {
	if msg := checkIP(s); msg != "" {
		return msg
	}
	a, _ := netip.ParseAddr(s)
	if family == 4 && !a.Unmap().Is4() || family == 6 && a.Unmap().Is4() {
		return fmt.Sprintf("%q is not an IPv%d address", s, family)
	}
	return ""
}

func checkIPs(list []string) string {
	for _, s := range list {
		if msg := checkIP(s); msg != "" {
			return msg
		}
	}
	return ""
}

// checkInterfaceName allows portable interface names: 1-15 characters
// (Linux IFNAMSIZ), letters, digits, '-', '_', '.'.
func checkInterfaceName(s string) string {
	if s == "" {
		return "must not be empty"
	}
	if len(s) > 15 {
		return fmt.Sprintf("must be at most 15 characters (got %q, %d)", s, len(s))
	}
	if s == "." || s == ".." {
		return fmt.Sprintf("invalid interface name %q", s)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Sprintf("invalid interface name %q: character %q not allowed (letters, digits, '-', '_', '.')", s, r)
		}
	}
	return ""
}

// checkKey validates an X25519 key in the Xray format (base64 raw URL
// encoding of 32 bytes, as printed by `mirage-server keygen`).
func checkKey(s string) string {
	if _, err := DecodeKey(s); err != nil {
		return err.Error()
	}
	return ""
}

// DecodeKey decodes an X25519 key written as base64 raw URL encoding (no
// padding, '-' and '_'), the format Xray's `x25519` command prints.
func DecodeKey(s string) ([32]byte, error) {
	var k [32]byte
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return k, fmt.Errorf("invalid key %q: must be base64 (raw URL encoding, no padding)", truncate(s, 60))
	}
	if len(b) != 32 {
		return k, fmt.Errorf("invalid key %q: must be 32 bytes, got %d", truncate(s, 60), len(b))
	}
	copy(k[:], b)
	return k, nil
}

// EncodeKey is the inverse of DecodeKey.
func EncodeKey(k [32]byte) string { return base64.RawURLEncoding.EncodeToString(k[:]) }

// DecodeShortID decodes a REALITY short id: 0-16 hex digits, even length,
// right-padded with zero bytes to 8 bytes (as Xray does).
func DecodeShortID(s string) ([8]byte, error) {
	var id [8]byte
	if len(s) > 16 || len(s)%2 != 0 {
		return id, fmt.Errorf("invalid short id %q: must be an even number of hex digits, at most 16", s)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("invalid short id %q: must be hex digits", s)
	}
	return id, nil
}

func checkShortIDs(list []string) string {
	for _, s := range list {
		if _, err := DecodeShortID(s); err != nil {
			return err.Error()
		}
	}
	return ""
}

// PinFromHex decodes a SHA-256 certificate pin: 64 hex digits, upper or
// lower case, optionally separated by colons ("AB:CD:...").
func PinFromHex(s string) ([32]byte, error) {
	var pin [32]byte
	h := strings.ReplaceAll(s, ":", "")
	if len(h) != 64 {
		return pin, fmt.Errorf("invalid SHA-256 pin %q: must be 64 hex digits (colons allowed), got %d digits", truncate(s, 100), len(h))
	}
	if _, err := hex.Decode(pin[:], []byte(h)); err != nil {
		return pin, fmt.Errorf("invalid SHA-256 pin %q: must be hex digits", truncate(s, 100))
	}
	return pin, nil
}

func checkProbability(p float64) string {
	if math.IsNaN(p) || p < 0 || p > 1 {
		return fmt.Sprintf("must be between 0 and 1 (got %v)", p)
	}
	return ""
}

func checkProxyURL(s string) string {
	if s == "" {
		return `required when mode = "proxy"`
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Sprintf("must be an http:// or https:// URL with a host (got %q)", s)
	}
	return ""
}

// checkUsername keeps names representable in the users file
// ("name:$argon2id$..." per line).
func checkUsername(s string) string {
	if s == "" {
		return "required"
	}
	if len(s) > wire.MaxUsername {
		return fmt.Sprintf("must be at most %d bytes (got %d)", wire.MaxUsername, len(s))
	}
	for _, r := range s {
		if r == ':' || r <= ' ' || r == 0x7f {
			return fmt.Sprintf("must not contain ':', spaces or control characters (got %q)", s)
		}
	}
	return ""
}

func checkPassword(s string) string {
	if s == "" {
		return "required"
	}
	if len(s) > wire.MaxPassword {
		return fmt.Sprintf("must be at most %d bytes (got %d)", wire.MaxPassword, len(s))
	}
	return ""
}

func checkLog(el *errList, l *Log) {
	el.check("log.level", checkEnum(l.Level, "debug", "info", "warn", "error"))
	el.check("log.format", checkEnum(l.Format, "text", "json"))
}

func checkObfuscation(el *errList, o *Obfuscation) {
	el.check("obfuscation.padding_probability", checkProbability(o.PaddingProbability))
	if _, err := shaping.ParseProfile(o.PaddingProfile); err != nil {
		el.add("obfuscation.padding_profile", "%v (want e.g. %q)", err, shaping.DefaultProfileString)
	}
	el.check("obfuscation.jitter_max_ms", checkRange(o.JitterMaxMS, 0, 1000))
	el.check("obfuscation.heartbeat_s", checkRange(o.HeartbeatS, 0, 3600))
}

// check records msg for key when msg is not empty.
func (l *errList) check(key, msg string) {
	if msg != "" {
		l.add(key, "%s", msg)
	}
}
