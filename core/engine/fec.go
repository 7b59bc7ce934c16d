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

// PathFECConn is a connection that can protect the packets of its
// transport itself (quictun.Conn dialed with path FEC), with the key the
// server gave in its Welcome.
type PathFECConn interface {
	EnablePathFEC(cfg fec.Config, key []byte) error
}

// startFEC turns on forward error correction for what c sends when this
// end asked for it and the server's Welcome agreed: path FEC when the
// server offers it, FEC on datagrams otherwise.
func startFEC(p SessionParams, c Conn, w *wire.Welcome, log *slog.Logger) {
	if p.FEC == nil {
		return
	}
	if pc, ok := c.(PathFECConn); ok && w.Caps&wire.CapPathFEC != 0 {
		if err := pc.EnablePathFEC(*p.FEC, w.PathFECKey[:]); err != nil {
			log.Warn("path forward error correction not started", "err", err)
			return
		}
		log.Info("forward error correction on", "protects", "quic packets")
		return
	}
	fc, ok := c.(FECConn)
	if !ok || w.Caps&wire.CapFEC == 0 {
		return
	}
	if err := fc.EnableFEC(*p.FEC); err != nil {
		log.Warn("forward error correction not started", "err", err)
		return
	}
	log.Info("forward error correction on", "protects", "datagrams")
}
