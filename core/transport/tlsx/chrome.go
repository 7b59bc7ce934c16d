package tlsx

import (
	"crypto/rand"
	"fmt"
	"net"

	utls "github.com/refraction-networking/utls"
)

// NewChromeClient returns a uTLS client connection whose ClientHello is our
// Chrome fingerprint, modelled on a capture of Chromium 156
// (testdata/chromium-156-clienthello.json; docs/fingerprint.md lists what
// matches and what does not). Every Mirage transport that speaks TLS over
// TCP (tcp-tls, reality) builds its hello here, so they look the same.
//
// The hello is built from a fresh spec on every call: GREASE values and the
// extension order are random per connection, like Chrome's. The spec
// generates a separate X25519 key share, so after BuildHandshakeState
// HandshakeState.State13.KeyShareKeys.Ecdhe holds its private key.
//
// Like uTLS's Chrome parrots, the hello's renegotiation_info sets
// cfg.Renegotiation to RenegotiateOnceAsClient; callers that export keying
// material reset it to RenegotiateNever after the handshake (see Dial).
// When cfg has a ClientSessionCache, cfg.PreferSkipResumptionOnNilExtension
// is set, since Chrome's hello carries no pre_shared_key extension (the
// parrots behave the same way). cfg must not be shared between connections.
//
// Should the hello fail to build (only with an invalid cfg, e.g. neither
// ServerName nor InsecureSkipVerify, or a failing cfg.Rand), the returned
// connection fails its handshake with that error before sending anything.
func NewChromeClient(conn net.Conn, cfg *utls.Config) *utls.UConn {
	if cfg == nil {
		cfg = &utls.Config{}
	}
	if cfg.ClientSessionCache != nil && !cfg.PreferSkipResumptionOnNilExtension {
		cfg.PreferSkipResumptionOnNilExtension = true
	}
	u := utls.UClient(conn, cfg, utls.HelloCustom)
	if err := u.ApplyPreset(newChromeSpec()); err != nil {
		err = fmt.Errorf("tls: build Chrome ClientHello: %w", err)
		return utls.UClient(failedConn{Conn: conn, err: err}, cfg, utls.HelloChrome_Auto)
	}
	return u
}

// Signature schemes uTLS has no names for (draft-ietf-tls-mldsa).
const (
	sigMLDSA44 utls.SignatureScheme = 0x0904
	sigMLDSA65 utls.SignatureScheme = 0x0905
	sigMLDSA87 utls.SignatureScheme = 0x0906
)

// extTrustAnchors is the trust_anchors extension
// (draft-ietf-tls-trust-anchor-ids), which uTLS does not know.
const extTrustAnchors uint16 = 0xca34

// newChromeSpec returns a new ClientHelloSpec for Chromium 156. It must be
// built per connection: its extension objects hold per-connection state
// (key shares, GREASE values, session).
func newChromeSpec() *utls.ClientHelloSpec {
	return &utls.ClientHelloSpec{
		CipherSuites: []uint16{
			utls.GREASE_PLACEHOLDER,
			utls.TLS_AES_128_GCM_SHA256,
			utls.TLS_AES_256_GCM_SHA384,
			utls.TLS_CHACHA20_POLY1305_SHA256,
			utls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			utls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			utls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			utls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			utls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305,
			utls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305,
			utls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
			utls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
			utls.TLS_RSA_WITH_AES_128_GCM_SHA256,
			utls.TLS_RSA_WITH_AES_256_GCM_SHA384,
			utls.TLS_RSA_WITH_AES_128_CBC_SHA,
			utls.TLS_RSA_WITH_AES_256_CBC_SHA,
		},
		CompressionMethods: []byte{0}, // null
		// GREASE stays first and last; everything else is shuffled, as
		// Chrome does since version 110.
		Extensions: utls.ShuffleChromeTLSExtensions([]utls.TLSExtension{
			&utls.UtlsGREASEExtension{},
			&utls.SNIExtension{},
			&utls.ExtendedMasterSecretExtension{},
			&utls.RenegotiationInfoExtension{Renegotiation: utls.RenegotiateOnceAsClient},
			&utls.SupportedCurvesExtension{Curves: []utls.CurveID{
				utls.GREASE_PLACEHOLDER,
				utls.X25519MLKEM768,
				utls.X25519,
				utls.CurveP256,
				utls.CurveP384,
			}},
			&utls.SupportedPointsExtension{SupportedPoints: []byte{0}}, // uncompressed
			&utls.SessionTicketExtension{},
			&utls.ALPNExtension{AlpnProtocols: []string{"h2", "http/1.1"}},
			&utls.StatusRequestExtension{},
			&utls.SignatureAlgorithmsExtension{SupportedSignatureAlgorithms: []utls.SignatureScheme{
				// uTLS does not GREASE this list; Chrome 156 does.
				utls.SignatureScheme(greaseValue()),
				// Offered like Chrome; a server picks them only with an
				// ML-DSA certificate, which uTLS cannot verify (the
				// handshake then fails). docs/fingerprint.md: accepted risk.
				sigMLDSA44,
				sigMLDSA65,
				sigMLDSA87,
				utls.ECDSAWithP256AndSHA256,
				utls.PSSWithSHA256,
				utls.PKCS1WithSHA256,
				utls.ECDSAWithP384AndSHA384,
				utls.PSSWithSHA384,
				utls.PKCS1WithSHA384,
				utls.PSSWithSHA512,
				utls.PKCS1WithSHA512,
			}},
			&utls.SCTExtension{},
			&utls.KeyShareExtension{KeyShares: []utls.KeyShare{
				{Group: utls.CurveID(utls.GREASE_PLACEHOLDER), Data: []byte{0}},
				{Group: utls.X25519MLKEM768},
				{Group: utls.X25519}, // its own key: KeyShareKeys.Ecdhe
			}},
			&utls.PSKKeyExchangeModesExtension{Modes: []uint8{utls.PskModeDHE}},
			&utls.SupportedVersionsExtension{Versions: []uint16{
				utls.GREASE_PLACEHOLDER,
				utls.VersionTLS13,
				utls.VersionTLS12,
			}},
			&utls.UtlsCompressCertExtension{Algorithms: []utls.CertCompressionAlgo{
				utls.CertCompressionBrotli,
			}},
			&utls.ApplicationSettingsExtensionNew{SupportedProtocols: []string{"h2"}}, // 0x44cd
			&utls.GenericExtension{Id: extTrustAnchors, Data: append([]byte(nil), chromeTrustAnchors...)},
			utls.BoringGREASEECH(),
			&utls.UtlsGREASEExtension{},
		}),
	}
}

// greaseValue returns a random GREASE value (RFC 8701), derived the way
// BoringSSL does: 0x?a?a with both bytes equal.
func greaseValue() uint16 {
	var b [1]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail (Go >= 1.24)
	v := uint16(b[0]&0xf0 | 0x0a)
	return v<<8 | v
}

// chromeTrustAnchorArcs are the trust anchor IDs (relative OIDs) Chromium
// 156 offers in its trust_anchors extension, in its order: the IDs of
// roots in the Chrome Root Store. Not server-specific: the capture was
// made against a local openssl server, with no DNS hints.
var chromeTrustAnchorArcs = [][]uint32{
	{44947, 2, 1}, {44947, 2, 6}, {44947, 2, 13}, {44947, 2, 14},
	{44947, 2, 15}, {44947, 2, 18}, {44947, 2, 19}, {44947, 2, 20},
	{52580, 200109, 1, 7}, {52580, 200109, 1, 8}, {52580, 200109, 1, 9},
	{52580, 200109, 1, 10}, {52580, 200109, 1, 11}, {52580, 200109, 1, 12},
	{52580, 200109, 1, 13}, {52580, 200109, 1, 18}, {52580, 200109, 1, 19},
	{11129, 9, 1}, {11129, 9, 4}, {11129, 9, 5}, {11129, 9, 6},
	{11129, 9, 7}, {11129, 9, 8}, {11129, 9, 10}, {11129, 9, 11},
	{11129, 9, 12}, {11129, 9, 13}, {11129, 9, 15},
}

// chromeTrustAnchors is the trust_anchors extension body: a uint16-length
// list of uint8-length binary relative OIDs.
var chromeTrustAnchors = encodeTrustAnchors(chromeTrustAnchorArcs)

func encodeTrustAnchors(ids [][]uint32) []byte {
	var list []byte
	for _, arcs := range ids {
		var id []byte
		for _, a := range arcs {
			id = appendBase128(id, a)
		}
		list = append(list, byte(len(id)))
		list = append(list, id...)
	}
	return append([]byte{byte(len(list) >> 8), byte(len(list))}, list...)
}

// appendBase128 appends v as an OID arc: big-endian base 128, high bit set
// on all but the last byte.
func appendBase128(b []byte, v uint32) []byte {
	n := 1
	for x := v >> 7; x != 0; x >>= 7 {
		n++
	}
	for i := n - 1; i >= 0; i-- {
		c := byte(v>>(7*uint(i))) & 0x7f
		if i > 0 {
			c |= 0x80
		}
		b = append(b, c)
	}
	return b
}

// failedConn stands in for the network connection when the hello could
// not be built: every read and write fails with err, so nothing is sent.
type failedConn struct {
	net.Conn
	err error
}

func (c failedConn) Read([]byte) (int, error)  { return 0, c.err }
func (c failedConn) Write([]byte) (int, error) { return 0, c.err }

// ChromeUserAgent is the User-Agent of the Chrome version the fingerprint
// models, for HTTP requests the transports make.
const ChromeUserAgent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
