// Package reality implements the reality transport: TLS over TCP whose
// client authenticates itself inside an ordinary-looking Chrome
// ClientHello, and whose server hands every other connection, byte for
// byte, to the real site it imitates. A prober sees the real site; only a
// client holding the server's public key and a short id gets the tunnel.
// The design follows the public description of XTLS REALITY; the key
// derivation labels and the certificate proof are Mirage's own, so it does
// not interoperate with Xray.
//
// # Client (Dial)
//
//  1. Build the ClientHello with tlsx.NewChromeClient (SNI = target_sni)
//     and call BuildHandshakeState.
//  2. Pick the X25519 share the server will use: the first key share of
//     group X25519 (0x001d), else the last 32 bytes of the first
//     X25519MLKEM768 (0x11ec) share; take its private key from
//     KeyShareKeys (Ecdhe or MlkemEcdhe, whichever matches).
//  3. shared = X25519(client share private key, server static public key).
//  4. salt = ClientHello.random[0:20];
//     aead_key = HKDF-SHA256(shared, salt, "mirage reality v1", 32 bytes);
//     cert_key = HKDF-SHA256(shared, salt, "mirage reality v1 cert", 32).
//  5. plaintext (16 bytes) = version (3 bytes, 1.0.0) | 0 | unix time
//     (uint32, big endian) | short id (8 bytes).
//  6. aad = the ClientHello handshake message (type, 3-byte length, body;
//     no record header) with its 32 session-id bytes (offset 39) zeroed.
//  7. session_id = AES-256-GCM(aead_key, nonce = random[20:32], plaintext,
//     aad): 16 bytes ciphertext + 16 bytes tag = the 32-byte
//     legacy_session_id, written into the hello in place. Then handshake.
//  8. The server's leaf certificate must have an ECDSA P-256 key and a
//     signature value equal to HMAC-SHA512(cert_key, the certificate's
//     SubjectPublicKeyInfo DER). Anything else (the real site's
//     certificate, say) aborts the handshake with ErrNotVerified. No CA and
//     no name check are involved; ALPN is the fingerprint's (h2, http/1.1).
//
// # Server
//
// ReadClientHello reads only the ClientHello records (at most
// MaxHelloBytes) and answers nothing. Authenticate accepts the hello only
// if the SNI is one of ServerNames, the session id opens under the key
// derived from the client's share and the server's private key (so any
// change to the hello breaks it), the version's major number is 1, the
// short id is configured, |server time - client time| <= MaxTimeDiff
// (default 90 s), and the 16-byte GCM tag was not accepted before within
// that window (auth.ReplayWindow, bounded). An authenticated client gets
// TLSConn: crypto/tls, TLS 1.3 only, ALPN h2/http1.1, no session tickets,
// and a per-process ECDSA P-256 certificate whose 64-byte signature value
// is the HMAC above (the DER is built once with a 64-byte placeholder). Its
// CertificateVerify proves the certificate key; the HMAC ties that key to
// this client's X25519 exchange.
//
// Every other connection (wrong key, unknown short id, stale or replayed
// hello, unknown SNI, not TLS at all) goes to Splice: the bytes already
// read are written to Dest (default the first server name, port 443), then
// both directions are copied until both end, half-closes forwarded.
//
// P-256 and not Ed25519: Chrome's signature_algorithms does not list
// ed25519, and crypto/tls will not sign CertificateVerify with a scheme the
// client did not offer.
package reality
