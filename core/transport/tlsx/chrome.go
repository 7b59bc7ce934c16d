package tlsx

import (
	"net"

	utls "github.com/refraction-networking/utls"
)

// NewChromeClient returns a uTLS client connection whose ClientHello is our
// Chrome fingerprint. Every Mirage transport that speaks TLS over TCP
// (tcp-tls, reality) builds its hello here, so they look the same.
func NewChromeClient(conn net.Conn, cfg *utls.Config) *utls.UConn {
	return utls.UClient(conn, cfg, utls.HelloChrome_Auto)
}
