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
func (c *Conn) EnablePathFEC(cfg fec.Config, key []byte) error {
	pf, ok := c.pf.(*PathFEC)
	if !ok {
		return errors.New("path fec: the connection was not dialed with path FEC")
	}
	return pf.Start(cfg, key)
}

// FEC returns the counters of the path FEC with this connection's peer
// (zero when there is none).
func (c *Conn) FEC() fec.ConnStats {
	if c.pf == nil || c.qc == nil {
		return fec.ConnStats{}
	}
	st, _ := c.pf.Stats(c.qc.RemoteAddr())
	return st
}
