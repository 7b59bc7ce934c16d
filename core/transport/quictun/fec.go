package quictun

import (
	"errors"

	"github.com/mirage-vpn/mirage/core/fec"
)

// Forward error correction is path FEC (pathfec.go): it protects the QUIC
// packets below quic-go. It replaced FEC on datagrams (wire.TypeFEC, shards
// inside QUIC datagrams), which rebuilt the tunnel's packets but left
// quic-go seeing, and backing off for, every lost QUIC packet.

// autoStartLoss is the loss fec = "auto" assumes before the peer has
// reported any: a lossy link is protected from the first packet, a clean
// one drops the parity within about a second.
const autoStartLoss = 0.01

// EnablePathFEC makes this end protect the QUIC packets it sends (path
// FEC, see PathFEC) with key, the server's wire.Welcome.PathFECKey: call
// it once the peer announced wire.CapPathFEC. The connection must have
// been dialed with ClientOptions.PathFEC.
//
// The connection then moves to a fresh path in the background, so that
// quic-go's congestion control restarts with every packet protected
// (fresh.go).
func (c *Conn) EnablePathFEC(cfg fec.Config, key []byte) error {
	c.pfMu.Lock()
	pf, ok := c.pf.(*PathFEC)
	c.pfMu.Unlock()
	if !ok {
		return errors.New("path fec: the connection was not dialed with path FEC")
	}
	if err := pf.Start(cfg, key); err != nil {
		return err
	}
	if c.fresh != nil {
		c.startMove(cfg, key)
	}
	return nil
}

// FEC returns the counters of the path FEC with this connection's peer
// (zero when there is none).
func (c *Conn) FEC() fec.ConnStats {
	c.pfMu.Lock()
	pf := c.pf
	c.pfMu.Unlock()
	if pf == nil || c.qc == nil {
		return fec.ConnStats{}
	}
	peer := c.peer
	if peer == nil {
		peer = c.qc.RemoteAddr()
	}
	st, _ := pf.Stats(peer)
	return st
}
