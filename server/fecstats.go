package server

import "github.com/mirage-vpn/mirage/core/fec"

// fecCounters sum what the forward error correction of QUIC connections
// did (fec.ConnStats), for the metrics page.
type fecCounters struct {
	dataSent, paritySent                uint64
	data, parity                        uint64
	recovered, unrecoverable, malformed uint64
}

func (f *fecCounters) add(st fec.ConnStats) {
	f.dataSent += st.DataSent
	f.paritySent += st.ParitySent
	f.data += st.Recv.Data
	f.parity += st.Recv.Parity
	f.recovered += st.Recv.Recovered
	f.unrecoverable += st.Recv.Unrecoverable
	f.malformed += st.Recv.Malformed
}

// fecStater is a connection with FEC counters (quictun.Conn).
type fecStater interface{ FEC() fec.ConnStats }

// fecTotals is the sum over ended connections and the live ones. fecMu
// keeps a connection from being counted twice or not at all while it
// moves from the one to the other (removeLink).
func (s *Server) fecTotals() fecCounters {
	s.fecMu.Lock()
	defer s.fecMu.Unlock()
	total := s.fecEnded
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ss := range s.sessions {
		for _, l := range ss.linkList() {
			if f, ok := l.c.(fecStater); ok {
				total.add(f.FEC())
			}
		}
	}
	return total
}
