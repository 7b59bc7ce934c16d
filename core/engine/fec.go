package engine

import (
	"log/slog"

	"github.com/mirage-vpn/mirage/core/fec"
	"github.com/mirage-vpn/mirage/core/wire"
)

// FECConn is a connection that can protect its datagrams with forward
// error correction (quictun.Conn).
type FECConn interface {
	EnableFEC(fec.Config) error
}

// startFEC turns on forward error correction for what c sends when this
// end asked for it and the server's Welcome agreed.
func startFEC(p SessionParams, c Conn, w *wire.Welcome, log *slog.Logger) {
	if p.FEC == nil || w.Caps&wire.CapFEC == 0 {
		return
	}
	fc, ok := c.(FECConn)
	if !ok {
		return
	}
	if err := fc.EnableFEC(*p.FEC); err != nil {
		log.Warn("forward error correction not started", "err", err)
	}
}
