package config

import "github.com/mirage-vpn/mirage/core/fec"

// FECModes are the values of [connection] fec on both ends: "auto" (the
// default) protects the QUIC packets with Reed-Solomon parity sized from
// the loss the peer reports on them (none on a clean link: a 12-byte
// trailer per packet), "off" sends none and asks the peer for none. fec_data / fec_parity (both ends)
// fix the group shape instead of adapting it (with fec = "auto").
// TCP transports never use FEC: TCP already retransmits.
var FECModes = []string{"auto", "off"}

// FEC is the forward error correction of [connection] (nil: off).
func (c ClientConn) FEC() *fec.Config { return fecConfig(c.FECMode, c.FECData, c.FECParity) }

// FEC is the forward error correction of [connection] (nil: off).
func (c ServerConn) FEC() *fec.Config { return fecConfig(c.FECMode, c.FECData, c.FECParity) }

func fecConfig(mode string, data, parity int) *fec.Config {
	if mode == "off" {
		return nil
	}
	return &fec.Config{K: data, M: parity}
}

// checkFEC validates the three FEC keys of a [connection] table.
func checkFEC(el *errList, mode string, data, parity int) {
	el.check("connection.fec", checkEnum(mode, FECModes...))
	el.check("connection.fec_data", checkZeroOrRange(data, 1, fec.MaxK))
	el.check("connection.fec_parity", checkRange(parity, 0, fec.MaxM))
	switch {
	case data == 0 && parity != 0:
		el.add("connection.fec_parity", "needs fec_data: set both for a fixed group shape, neither for auto (got fec_parity = %d)", parity)
	case mode == "off" && data != 0:
		el.add("connection.fec_data", "has no effect with fec = \"off\": set fec = \"auto\" for a fixed shape (got %d)", data)
	}
}

// fecComment documents the FEC keys in generated files.
var fecComment = []string{
	`Forward error correction of the QUIC packets (both ends must allow it): "auto" (the default: parity adapted to the`,
	`measured loss, none on a clean link) or "off"; fec_data / fec_parity fix the group shape instead (e.g. 10 and 3); 0 and 0 = adapt.`,
}
