package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// A mirage:// link carries a whole client profile on one line, so that it
// can be shared by clipboard or QR code:
//
//	mirage://USERNAME:PASSWORD@HOST:PORT?v=1&proto=reality,tcp-tls&sni=...#NAME
//
// The format is specified in README.md, "mirage:// links". In short: the
// user info holds the credentials, the host and port are connection_string,
// v=1 is required, a few frequent keys have short parameter names and every
// other key that differs from its default is written under its dotted key
// name. Lists are comma-separated; "key=" is an empty list and an empty
// element is written ''. The fragment is an optional display name.

// LinkScheme is the URL scheme of profile links.
const LinkScheme = "mirage"

// LinkVersion is the format version written as v= and the only one read.
const LinkVersion = "1"

// MaxLinkLen bounds the links ParseLink accepts.
const MaxLinkLen = 64 << 10

// linkFile is the file name that errors about a link carry.
const linkFile = "link"

// linkField maps one client.toml key to its query parameter.
type linkField struct {
	key   string              // dotted TOML key
	param string              // query parameter name (the key itself unless aliased)
	ptr   func(c *Client) any // pointer to the field: *string, *int, *bool, *float64 or *[]string
}

// linkFields lists every key a link carries in the query, in the order Link
// writes them. connection_string and [authentication] travel in the URL's
// host and user info; tls.ca_file names a file and cannot travel at all.
var linkFields = []linkField{
	{"connection.enabled_protocols", "proto", func(c *Client) any { return &c.Connection.EnabledProtocols }},
	{"connection.sni", "sni", func(c *Client) any { return &c.Connection.SNI }},
	{"reality.target_sni", "tsni", func(c *Client) any { return &c.Reality.TargetSNI }},
	{"reality.public_key", "pbk", func(c *Client) any { return &c.Reality.PublicKey }},
	{"reality.short_ids", "sid", func(c *Client) any { return &c.Reality.ShortIDs }},
	{"tls.pinned_sha256", "pin", func(c *Client) any { return &c.TLS.PinnedSHA256 }},

	{"connection.parallel_connections", "", func(c *Client) any { return &c.Connection.ParallelConnections }},
	{"connection.quic_parallel_connections", "", func(c *Client) any { return &c.Connection.QUICParallelConnections }},
	{"connection.dual_stack_enabled", "", func(c *Client) any { return &c.Connection.DualStackEnabled }},
	{"connection.mux_mode", "", func(c *Client) any { return &c.Connection.MuxMode }},
	{"connection.mtu", "", func(c *Client) any { return &c.Connection.MTU }},
	{"connection.connect_timeout_s", "", func(c *Client) any { return &c.Connection.ConnectTimeoutS }},
	{"connection.handshake_timeout_s", "", func(c *Client) any { return &c.Connection.HandshakeTimeoutS }},
	{"connection.keepalive_s", "", func(c *Client) any { return &c.Connection.KeepaliveS }},
	{"connection.max_lifetime_s", "", func(c *Client) any { return &c.Connection.MaxLifetimeS }},
	{"connection.max_lifetime_jitter_s", "", func(c *Client) any { return &c.Connection.MaxLifetimeJitterS }},
	{"connection.port_hopping_interval_s", "", func(c *Client) any { return &c.Connection.PortHoppingIntervalS }},
	{"connection.reconnect_max_backoff_s", "", func(c *Client) any { return &c.Connection.ReconnectMaxBackoffS }},
	{"connection.congestion_control", "", func(c *Client) any { return &c.Connection.CongestionControl }},
	{"connection.fec", "", func(c *Client) any { return &c.Connection.FECMode }},
	{"connection.fec_data", "", func(c *Client) any { return &c.Connection.FECData }},
	{"connection.fec_parity", "", func(c *Client) any { return &c.Connection.FECParity }},
	{"tls.server_name", "", func(c *Client) any { return &c.TLS.ServerName }},
	{"tls.insecure", "", func(c *Client) any { return &c.TLS.Insecure }},
	{"network.routes", "", func(c *Client) any { return &c.Network.Routes }},
	{"network.excluded_routes", "", func(c *Client) any { return &c.Network.ExcludedRoutes }},
	{"network.dns_servers", "", func(c *Client) any { return &c.Network.DNSServers }},
	{"network.set_dns", "", func(c *Client) any { return &c.Network.SetDNS }},
	{"network.interface_name", "", func(c *Client) any { return &c.Network.InterfaceName }},
	{"network.ipv4_address", "", func(c *Client) any { return &c.Network.IPv4Address }},
	{"network.ipv6_address", "", func(c *Client) any { return &c.Network.IPv6Address }},
	{"network.kill_switch", "", func(c *Client) any { return &c.Network.KillSwitch }},
	{"network.allow_lan", "", func(c *Client) any { return &c.Network.AllowLAN }},
	{"obfuscation.enabled", "", func(c *Client) any { return &c.Obfuscation.Enabled }},
	{"obfuscation.padding_probability", "", func(c *Client) any { return &c.Obfuscation.PaddingProbability }},
	{"obfuscation.padding_profile", "", func(c *Client) any { return &c.Obfuscation.PaddingProfile }},
	{"obfuscation.jitter_max_ms", "", func(c *Client) any { return &c.Obfuscation.JitterMaxMS }},
	{"obfuscation.heartbeat_s", "", func(c *Client) any { return &c.Obfuscation.HeartbeatS }},
	{"log.level", "", func(c *Client) any { return &c.Log.Level }},
	{"log.format", "", func(c *Client) any { return &c.Log.Format }},
}

func (f *linkField) name() string {
	if f.param != "" {
		return f.param
	}
	return f.key
}

// linkParams indexes linkFields by parameter name.
var linkParams = func() map[string]*linkField {
	m := make(map[string]*linkField, len(linkFields))
	for i := range linkFields {
		m[linkFields[i].name()] = &linkFields[i]
	}
	return m
}()

// Link encodes the whole profile as a mirage:// link without a display name;
// see LinkNamed.
func (c *Client) Link() (string, error) { return c.LinkNamed("") }

// LinkNamed encodes the whole profile as a mirage:// link with name as the
// display name (the fragment; "" for none). The profile must be valid and
// must not use tls.ca_file (a file cannot travel in a link). Values are
// normalised first (as after parsing), so ParseLink of the result equals the
// normalised profile. The link contains the password: treat it as a secret.
func (c *Client) LinkNamed(name string) (string, error) {
	if c.TLS.CAFile != "" {
		return "", &FieldError{File: c.fileName(), Key: "tls.ca_file",
			Msg: "cannot be put in a mirage:// link (a link cannot carry a file); clear it and use pinned_sha256, or share the client.toml and the CA file instead"}
	}
	n := c.cloneForLink()
	n.normalize()
	if err := n.Validate(); err != nil {
		return "", err
	}

	host := linkHost(n.ConnectionString)
	def := DefaultClient()
	var q strings.Builder
	q.WriteString("v=" + LinkVersion)
	for i := range linkFields {
		f := &linkFields[i]
		v, ok := encodeLinkValue(f.ptr(n), f.ptr(def))
		if !ok {
			continue
		}
		q.WriteString("&" + f.name() + "=" + v)
	}

	u := &url.URL{
		Scheme:   LinkScheme,
		User:     url.UserPassword(n.Authentication.Username, n.Authentication.Password),
		Host:     host,
		RawQuery: q.String(),
		Fragment: name,
	}
	s := u.String()
	// Go's URL parser is stricter about hosts than connection_string
	// validation is: make sure the host comes back as written.
	back, err := url.Parse(s)
	if err != nil || back.Host != host {
		return "", &FieldError{File: c.fileName(), Key: "connection_string",
			Msg: fmt.Sprintf("%q cannot be written as the host of a mirage:// link", n.ConnectionString)}
	}
	return s, nil
}

// cloneForLink copies c deeply enough for normalize (which edits lists in
// place) not to touch the caller's config.
func (c *Client) cloneForLink() *Client {
	n := *c
	n.Connection.EnabledProtocols = slices.Clone(c.Connection.EnabledProtocols)
	n.Reality.ShortIDs = slices.Clone(c.Reality.ShortIDs)
	n.Network.Routes = slices.Clone(c.Network.Routes)
	n.Network.ExcludedRoutes = slices.Clone(c.Network.ExcludedRoutes)
	n.Network.DNSServers = slices.Clone(c.Network.DNSServers)
	return &n
}

// linkHost returns connection_string as the link's host. An IPv4 address in
// brackets ("[192.0.2.1]:443", accepted in client.toml) is not a valid URL
// host; it is written without them.
func linkHost(cs string) string {
	h, p, err := net.SplitHostPort(cs)
	if err == nil && strings.HasPrefix(cs, "[") {
		if a, err := netip.ParseAddr(h); err == nil && a.Is4() {
			return net.JoinHostPort(h, p)
		}
	}
	return cs
}

// encodeLinkValue renders the field behind ptr as a query value; ok is false
// when it equals the default behind def and can be left out. A nil list is
// left out (it means the default, as in ApplyDefaults).
func encodeLinkValue(ptr, def any) (string, bool) {
	switch p := ptr.(type) {
	case *string:
		return linkEscape(*p), *p != *def.(*string)
	case *int:
		return strconv.Itoa(*p), *p != *def.(*int)
	case *bool:
		return strconv.FormatBool(*p), *p != *def.(*bool)
	case *float64:
		return strconv.FormatFloat(*p, 'g', -1, 64), *p != *def.(*float64)
	case *[]string:
		d := *def.(*[]string)
		if *p == nil || d != nil && slices.Equal(*p, d) {
			return "", false
		}
		return encodeLinkList(*p), true
	}
	panic(fmt.Sprintf("config: link field of unsupported type %T", ptr))
}

// encodeLinkList joins percent-encoded elements with ','; a comma inside an
// element is therefore %2C. An empty element is written as two apostrophes,
// so that a list of one empty string differs from the empty list (an empty
// value).
func encodeLinkList(list []string) string {
	parts := make([]string, len(list))
	for i, s := range list {
		if s == "" {
			parts[i] = "''"
		} else {
			parts[i] = linkEscape(s)
		}
	}
	return strings.Join(parts, ",")
}

// linkUnescaped re-allows ':' and '/' (legal in a URL query) after
// url.QueryEscape, so that addresses and prefixes stay readable. Every '%'
// in QueryEscape's output starts an escape, so this cannot misfire.
var linkUnescaped = strings.NewReplacer("%3A", ":", "%2F", "/")

// linkEscape percent-encodes a value or list element: everything except
// letters, digits, "-_.~:/" is %XX, and a space is '+'.
func linkEscape(s string) string { return linkUnescaped.Replace(url.QueryEscape(s)) }

// ParseLink decodes and validates a mirage:// link (surrounding white space
// is ignored). Absent parameters get their defaults; every problem (unknown
// or repeated parameter, bad value, invalid config) is reported, joined, as
// *FieldError values whose file is "link" — the same errors a client.toml
// with these values gives. The result has Path "".
func ParseLink(s string) (*Client, error) {
	s = strings.TrimSpace(s)
	if len(s) > MaxLinkLen {
		return nil, &FieldError{File: linkFile, Msg: fmt.Sprintf("too long (%d bytes, limit %d)", len(s), MaxLinkLen)}
	}
	u, err := parseLinkURL(s)
	if err != nil {
		return nil, err
	}

	c := DefaultClient()
	c.Path = linkFile
	c.ConnectionString = u.Host
	if u.User != nil {
		c.Authentication.Username = u.User.Username()
		c.Authentication.Password, _ = u.User.Password()
	}

	bad := &errList{file: linkFile}      // unknown and repeated parameters
	typeErrs := &errList{file: linkFile} // values that do not parse
	seen := map[string]bool{}
	version := ""
	for _, part := range strings.Split(u.RawQuery, "&") {
		if part == "" {
			continue
		}
		if len(bad.errs)+len(typeErrs.errs) >= maxSchemaErrors {
			break
		}
		rawKey, rawVal, hasEq := strings.Cut(part, "=")
		key, err := url.QueryUnescape(rawKey)
		if err != nil {
			bad.add("", "parameter %q: invalid percent-encoding in its name", truncate(rawKey, 60))
			continue
		}
		if seen[key] {
			bad.add("", "parameter %q is given more than once", truncate(key, 60))
			continue
		}
		seen[key] = true
		if key == "v" {
			version = rawVal
			continue
		}
		f := linkParams[key]
		if f == nil {
			bad.add("", "%s", unknownLinkParam(key))
			continue
		}
		if !hasEq {
			typeErrs.add(f.key, "parameter %q has no value (write %s=VALUE)", key, key)
			continue
		}
		if msg := decodeLinkValue(f.ptr(c), rawVal); msg != "" {
			typeErrs.add(f.key, "parameter %q: %s", key, msg)
		}
	}
	switch {
	case !seen["v"]:
		bad.errs = append([]error{&FieldError{File: linkFile, Msg: "missing v=" + LinkVersion + " (the link format version)"}}, bad.errs...)
	case version != LinkVersion:
		bad.errs = append([]error{&FieldError{File: linkFile, Msg: fmt.Sprintf("unsupported link version v=%s (this build reads v=%s)", truncate(version, 20), LinkVersion)}}, bad.errs...)
	}
	if len(typeErrs.errs) > 0 {
		return nil, errors.Join(append(bad.errs, typeErrs.errs...)...)
	}
	c.normalize()
	if err := joinAll(bad.errs, c.Validate()); err != nil {
		return nil, err
	}
	c.Path = ""
	return c, nil
}

// parseLinkURL parses s as a mirage:// URL without a path. Errors never
// repeat the link itself: it holds the password.
func parseLinkURL(s string) (*url.URL, error) {
	scheme, _, ok := strings.Cut(s, ":")
	if !ok || !strings.EqualFold(scheme, LinkScheme) {
		return nil, &FieldError{File: linkFile, Msg: `not a mirage:// link (must start with "mirage://")`}
	}
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, &FieldError{File: linkFile, Msg: fmt.Sprintf("not a valid URL: %v", err)}
	}
	if u.Opaque != "" || !strings.HasPrefix(s[len(scheme)+1:], "//") {
		return nil, &FieldError{File: linkFile, Msg: `not a mirage:// link (must start with "mirage://")`}
	}
	if u.Path != "" && u.Path != "/" {
		return nil, &FieldError{File: linkFile, Msg: fmt.Sprintf("unexpected path %q after the host (expected ?v=%s...)", truncate(u.Path, 60), LinkVersion)}
	}
	return u, nil
}

// unknownLinkParam explains an unknown parameter, with a hint when it is a
// key that travels elsewhere or has a short name.
func unknownLinkParam(key string) string {
	k := truncate(key, 60)
	switch key {
	case "tls.ca_file":
		return fmt.Sprintf("unknown parameter %q: a link cannot carry a CA file (use pin=, or import a client.toml)", k)
	case "connection_string":
		return fmt.Sprintf("unknown parameter %q: the server goes in the link's host, mirage://USER:PASSWORD@HOST:PORT", k)
	case "authentication.username", "authentication.password":
		return fmt.Sprintf("unknown parameter %q: the credentials go in the link's user info, mirage://USER:PASSWORD@HOST:PORT", k)
	}
	for i := range linkFields {
		if f := &linkFields[i]; f.param != "" && f.key == key {
			return fmt.Sprintf("unknown parameter %q (this key is written %q in a link)", k, f.param)
		}
	}
	// Small typos only (as for unknown TOML keys), first in link order.
	best, bestD := "", 3
	for i := range linkFields {
		name := linkFields[i].name()
		if d := editDistance(strings.ToLower(name), strings.ToLower(key)); d < bestD && d*3 <= len(key) {
			best, bestD = name, d
		}
	}
	if best != "" {
		return fmt.Sprintf("unknown parameter %q (did you mean %q?)", k, best)
	}
	return fmt.Sprintf("unknown parameter %q", k)
}

// decodeLinkValue parses the raw (still percent-encoded) value into the
// field behind ptr; it returns the problem in words, or "".
func decodeLinkValue(ptr any, raw string) string {
	if _, ok := ptr.(*[]string); !ok {
		v, err := url.QueryUnescape(raw)
		if err != nil {
			return "invalid percent-encoding"
		}
		raw = v
	}
	switch p := ptr.(type) {
	case *string:
		*p = raw
	case *int:
		n, err := strconv.Atoi(raw)
		if err != nil {
			return fmt.Sprintf("must be an integer (got %q)", truncate(raw, 40))
		}
		*p = n
	case *bool:
		switch raw {
		case "true":
			*p = true
		case "false":
			*p = false
		default:
			return fmt.Sprintf("must be true or false (got %q)", truncate(raw, 40))
		}
	case *float64:
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return fmt.Sprintf("must be a number (got %q)", truncate(raw, 40))
		}
		*p = f
	case *[]string:
		list, msg := decodeLinkList(raw)
		if msg != "" {
			return msg
		}
		*p = list
	default:
		panic(fmt.Sprintf("config: link field of unsupported type %T", ptr))
	}
	return ""
}

// decodeLinkList is the inverse of encodeLinkList: "" is the empty list,
// otherwise the value is split on ',' before percent-decoding.
func decodeLinkList(raw string) ([]string, string) {
	if raw == "" {
		return []string{}, ""
	}
	parts := strings.Split(raw, ",")
	list := make([]string, len(parts))
	for i, p := range parts {
		if p == "''" {
			continue
		}
		v, err := url.QueryUnescape(p)
		if err != nil {
			return nil, fmt.Sprintf("element %d: invalid percent-encoding", i+1)
		}
		list[i] = v
	}
	return list, ""
}

// LinkName returns the display name (the fragment) of a mirage:// link, or
// "" when it has none or s is not a mirage:// link.
func LinkName(s string) string {
	u, err := parseLinkURL(strings.TrimSpace(s))
	if err != nil {
		return ""
	}
	return u.Fragment
}
