package engine

import (
	"log/slog"

	"github.com/mirage-vpn/mirage/core/fec"
	"github.com/mirage-vpn/mirage/core/wire"
)

// PathFECConn is a connection that can protect the packets of its
// transport itself (quictun.Conn dialed with path FEC), with the key the
// server gave in its Welcome.
type PathFECConn interface {
	EnablePathFEC(cfg fec.Config, key []byte) error
}

// startFEC turns on forward error correction (path FEC) for what c sends
// when this end asked for it and the server's Welcome agreed.
func startFEC(p SessionParams, c Conn, w *wire.Welcome, log *slog.Logger) {
	pc, ok := c.(PathFECConn)
	if p.FEC == nil || !ok || w.Caps&wire.CapPathFEC == 0 {
		return
	}
	if err := pc.EnablePathFEC(*p.FEC, w.PathFECKey[:]); err != nil {
		log.Warn("forward error correction not started", "err", err)
		return
	}
	log.Info("forward error correction on", "protects", "quic packets")
}
