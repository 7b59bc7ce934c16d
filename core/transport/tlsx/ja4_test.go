package tlsx

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
)

// ja4 computes the JA4 TLS client fingerprint (FoxIO specification) of a
// parsed ClientHello received over TCP. It lets the tests compare our
// hello with the fingerprint recorded for the real browser.
func ja4(h *ClientHello) string {
	a, b, c := ja4Parts(h)
	return a + "_" + ja4Hash(b) + "_" + ja4Hash(c)
}

// ja4Parts returns JA4's a section and the raw (unhashed) b and c inputs.
func ja4Parts(h *ClientHello) (a, b, c string) {
	version := "00"
	var best uint16
	for _, v := range h.SupportedVersions {
		if !IsGREASE(v) && v > best {
			best = v
		}
	}
	if best == 0 {
		best = h.LegacyVersion
	}
	switch best {
	case 0x0304:
		version = "13"
	case 0x0303:
		version = "12"
	case 0x0302:
		version = "11"
	case 0x0301:
		version = "10"
	}
	sni := "i"
	if h.ServerName != "" {
		sni = "d"
	}
	alpn := "00"
	if len(h.ALPN) > 0 && len(h.ALPN[0]) > 0 {
		p := h.ALPN[0]
		alpn = string(p[0]) + string(p[len(p)-1])
	}
	var ciphers, exts, sigs []string
	for _, v := range h.CipherSuites {
		if !IsGREASE(v) {
			ciphers = append(ciphers, fmt.Sprintf("%04x", v))
		}
	}
	nExt := 0
	for _, v := range h.Extensions {
		if IsGREASE(v) {
			continue
		}
		nExt++
		if v != ExtServerName && v != ExtALPN {
			exts = append(exts, fmt.Sprintf("%04x", v))
		}
	}
	for _, v := range h.SignatureAlgorithms {
		if !IsGREASE(v) {
			sigs = append(sigs, fmt.Sprintf("%04x", v))
		}
	}
	slices.Sort(ciphers)
	slices.Sort(exts)
	a = fmt.Sprintf("t%s%s%02d%02d%s", version, sni, min(len(ciphers), 99), min(nExt, 99), alpn)
	b = strings.Join(ciphers, ",")
	c = strings.Join(exts, ",")
	if len(sigs) > 0 {
		c += "_" + strings.Join(sigs, ",")
	}
	return a, b, c
}

func ja4Hash(s string) string {
	if s == "" {
		return "000000000000"
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:12]
}

// ja3String returns the JA3 input string (Salesforce spec, GREASE values
// dropped): version,ciphers,extensions,groups,point formats. With sortExts
// the extensions are sorted, which gives JA3N (stable under Chrome's
// extension shuffling).
func ja3String(h *ClientHello, pointFormats []byte, sortExts bool) string {
	join := func(vs []uint16) string {
		var parts []string
		for _, v := range vs {
			if !IsGREASE(v) {
				parts = append(parts, fmt.Sprint(v))
			}
		}
		return strings.Join(parts, "-")
	}
	exts := slices.Clone(h.Extensions)
	if sortExts {
		slices.Sort(exts)
	}
	var pf []string
	for _, p := range pointFormats {
		pf = append(pf, fmt.Sprint(p))
	}
	return fmt.Sprintf("%d,%s,%s,%s,%s", h.LegacyVersion, join(h.CipherSuites), join(exts),
		join(h.SupportedGroups), strings.Join(pf, "-"))
}
