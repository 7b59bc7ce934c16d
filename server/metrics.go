package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MetricsHandler serves the server's Prometheus metrics ([metrics]). The
// values are read from the server's counters and session table at scrape
// time, so the packet path carries no metrics code of its own. perUser adds
// per-user counters (user names become label values); extra collectors
// (the NAT's, from the command that set it up) join the same page.
func (s *Server) MetricsHandler(perUser bool, extra ...prometheus.Collector) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&serverCollector{s: s, perUser: perUser},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(extra...)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

var (
	mSessions = prometheus.NewDesc("mirage_sessions",
		"Client sessions (one per connected client, whatever its number of connections).", nil, nil)
	mConnections = prometheus.NewDesc("mirage_connections",
		"Connections of the sessions, by transport.", []string{"transport"}, nil)
	mRxBytes = prometheus.NewDesc("mirage_received_bytes_total",
		"Bytes of IP packets received from clients.", nil, nil)
	mRxPackets = prometheus.NewDesc("mirage_received_packets_total",
		"IP packets received from clients.", nil, nil)
	mTxBytes = prometheus.NewDesc("mirage_sent_bytes_total",
		"Bytes sent to clients (framed, before TLS or QUIC).", nil, nil)
	mHandshakes = prometheus.NewDesc("mirage_handshakes_total",
		"Connection attempts by outcome: ok, bad_credentials, camouflage (handed to the web site or the REALITY target), replay (a replayed REALITY hello, handed to the target), timeout, refused_source_cap (closed at accept: its source had max_pending_per_source handshakes in progress), shed_global_cap (closed to admit a newer one when max_pending_handshakes were in progress).",
		[]string{"outcome"}, nil)
	mLoginRefused = prometheus.NewDesc("mirage_login_refused_total",
		"Password checks refused by the login budget without hashing: address_rate (max_handshakes_per_ip), user_backoff (too many failures for the user name), busy (every Argon2 slot taken and the queue full).",
		[]string{"reason"}, nil)
	mPending = prometheus.NewDesc("mirage_handshakes_pending",
		"Connections accepted that have not authenticated yet.", nil, nil)
	mDrops = prometheus.NewDesc("mirage_dropped_total",
		"Dropped traffic by reason: spoofed source, no session for the destination, isolation between clients (packets), a client's full send queue (batches), batches that waited too long in it (queue_delay, CoDel).",
		[]string{"reason"}, nil)
	mQUICPacing = prometheus.NewDesc("mirage_quic_pacing_timeouts_total",
		"QUIC receive pacing waits that timed out: a tunnel did not take its datagrams for 5 ms, and pacing paused (quictun.Gate). A steady rise means a stuck or overloaded reader.",
		nil, nil)
	mFECSent = prometheus.NewDesc("mirage_fec_sent_total",
		"FEC shards sent to clients on QUIC datagrams, by kind: data (packets) and parity.", []string{"kind"}, nil)
	mFECReceived = prometheus.NewDesc("mirage_fec_received_total",
		"FEC shards received from clients, by event: data and parity seen, packets recovered from parity, packets unrecoverable (more losses in their group than parity), malformed shards dropped.",
		[]string{"event"}, nil)
	mPoolUsed = prometheus.NewDesc("mirage_address_pool_used",
		"Tunnel addresses handed out, by family.", []string{"family"}, nil)
	mPoolSize = prometheus.NewDesc("mirage_address_pool_size",
		"Usable tunnel addresses, by family (IPv6 capped at 65536).", []string{"family"}, nil)
	mUserRx = prometheus.NewDesc("mirage_user_received_bytes_total",
		"Bytes of IP packets received from a user's clients ([metrics] per_user).", []string{"user"}, nil)
	mUserTx = prometheus.NewDesc("mirage_user_sent_bytes_total",
		"Bytes sent to a user's clients ([metrics] per_user).", []string{"user"}, nil)
	mUserSessions = prometheus.NewDesc("mirage_user_sessions",
		"A user's sessions ([metrics] per_user).", []string{"user"}, nil)
)

type serverCollector struct {
	s       *Server
	perUser bool
}

func (c *serverCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mSessions, mConnections, mRxBytes, mRxPackets, mTxBytes,
		mHandshakes, mPending, mLoginRefused, mDrops, mQUICPacing, mFECSent, mFECReceived, mPoolUsed, mPoolSize} {
		ch <- d
	}
	if c.perUser {
		ch <- mUserRx
		ch <- mUserTx
		ch <- mUserSessions
	}
}

// userTraffic is what a user's sessions carried.
type userTraffic struct {
	rx, tx   uint64
	sessions int
}

func (c *serverCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	st := &s.Stats
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}

	conns := map[string]int{"tcp-tls": 0, "reality": 0, "quic": 0}
	s.mu.Lock()
	sessions := len(s.sessions)
	users := make(map[string]*userTraffic, len(s.userTotals))
	if c.perUser {
		for u, t := range s.userTotals {
			users[u] = &userTraffic{rx: t.rx, tx: t.tx}
		}
	}
	for _, ss := range s.sessions {
		for _, l := range ss.linkList() {
			if l.transport != "" {
				conns[l.transport]++
			}
		}
		if c.perUser {
			u := users[ss.user]
			if u == nil {
				u = &userTraffic{}
				users[ss.user] = u
			}
			u.rx += ss.rxBytes.Load()
			u.tx += ss.txBytes.Load()
			u.sessions++
		}
	}
	s.mu.Unlock()

	gauge(mSessions, float64(sessions))
	for t, n := range conns {
		gauge(mConnections, float64(n), t)
	}
	counter(mRxBytes, st.RxBytes.Load())
	counter(mRxPackets, st.RxPackets.Load())
	counter(mTxBytes, st.TxBytes.Load())
	counter(mHandshakes, st.HandshakeOK.Load(), "ok")
	counter(mHandshakes, st.HandshakeBadCredentials.Load(), "bad_credentials")
	counter(mHandshakes, st.HandshakeCamouflage.Load(), "camouflage")
	counter(mHandshakes, st.HandshakeReplay.Load(), "replay")
	counter(mHandshakes, st.HandshakeTimeout.Load(), "timeout")
	counter(mHandshakes, s.pending.refusedSource.Load(), "refused_source_cap")
	counter(mHandshakes, s.pending.shed.Load(), "shed_global_cap")
	gauge(mPending, float64(s.pending.pending()))
	counter(mLoginRefused, s.limiter.RefusedSource.Load(), "address_rate")
	counter(mLoginRefused, s.limiter.RefusedUser.Load(), "user_backoff")
	counter(mLoginRefused, s.limiter.RefusedBusy.Load(), "busy")
	counter(mDrops, st.SpoofDrops.Load(), "spoofed_source")
	counter(mDrops, st.NoRouteDrops.Load(), "no_route")
	counter(mDrops, st.IsolationDrops.Load(), "isolation")
	counter(mDrops, st.BadPacketDrops.Load(), "bad_packet")
	counter(mDrops, st.QueueDrops.Load(), "queue_full")
	counter(mDrops, st.DelayDrops.Load(), "queue_delay")
	if g := s.quicGate.Load(); g != nil {
		counter(mQUICPacing, g.Timeouts.Load())
	}
	f := s.fecTotals()
	counter(mFECSent, f.dataSent, "data")
	counter(mFECSent, f.paritySent, "parity")
	for ev, v := range map[string]uint64{"data": f.data, "parity": f.parity, "recovered": f.recovered,
		"unrecoverable": f.unrecoverable, "malformed": f.malformed} {
		counter(mFECReceived, v, ev)
	}
	for fam, p := range map[string]*Pool{"ipv4": s.pool4, "ipv6": s.pool6} {
		if p == nil {
			continue
		}
		used, size := p.Usage()
		gauge(mPoolUsed, float64(used), fam)
		gauge(mPoolSize, float64(size), fam)
	}
	for u, t := range users {
		counter(mUserRx, t.rx, u)
		counter(mUserTx, t.tx, u)
		gauge(mUserSessions, float64(t.sessions), u)
	}
}
