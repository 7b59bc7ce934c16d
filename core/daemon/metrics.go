package daemon

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mirage-vpn/mirage/core/api"
)

// metricsHandler serves GET /v1/metrics: the client's counters in the
// Prometheus text format, read from the status at scrape time. Byte and
// packet counters cover the helper's lifetime (every connection, ended or
// not), so they only go up.
func (d *Daemon) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&clientCollector{d: d}, collectors.NewGoCollector())
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

var (
	cState = prometheus.NewDesc("mirage_client_state",
		"1 for the helper's current state (disconnected, connecting, connected, reconnecting, disconnecting, error), 0 for the others.",
		[]string{"state"}, nil)
	cConnections = prometheus.NewDesc("mirage_client_connections",
		"Transport connections of the session, by transport.", []string{"transport"}, nil)
	cTxBytes = prometheus.NewDesc("mirage_client_sent_bytes_total",
		"Bytes of IP packets sent into the tunnel.", nil, nil)
	cRxBytes = prometheus.NewDesc("mirage_client_received_bytes_total",
		"Bytes of IP packets received from the tunnel.", nil, nil)
	cTxPackets = prometheus.NewDesc("mirage_client_sent_packets_total",
		"IP packets sent into the tunnel.", nil, nil)
	cRxPackets = prometheus.NewDesc("mirage_client_received_packets_total",
		"IP packets received from the tunnel.", nil, nil)
	cConnects = prometheus.NewDesc("mirage_client_connects_total",
		"Times a connection came up (first connect or reconnect).", nil, nil)
	cRTT = prometheus.NewDesc("mirage_client_rtt_seconds",
		"Last keepalive round-trip time (0 before the first).", nil, nil)
)

var allStates = []api.State{api.Disconnected, api.Connecting, api.Connected, api.Reconnecting, api.Disconnecting, api.Failed}

type clientCollector struct{ d *Daemon }

func (c *clientCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{cState, cConnections, cTxBytes, cRxBytes, cTxPackets, cRxPackets, cConnects, cRTT} {
		ch <- d
	}
}

func (c *clientCollector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	d.mu.Lock()
	st := d.statusLocked()
	ended, connects := d.ended, d.connects
	d.mu.Unlock()
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(desc *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v))
	}
	for _, s := range allStates {
		v := 0.0
		if st.State == s {
			v = 1
		}
		gauge(cState, v, string(s))
	}
	conns := map[string]int{"tcp-tls": 0, "reality": 0, "quic": 0}
	for _, l := range st.Connections {
		conns[l.Transport]++
	}
	for t, n := range conns {
		gauge(cConnections, float64(n), t)
	}
	counter(cTxBytes, ended.TxBytes+st.Stats.TxBytes)
	counter(cRxBytes, ended.RxBytes+st.Stats.RxBytes)
	counter(cTxPackets, ended.TxPackets+st.Stats.TxPackets)
	counter(cRxPackets, ended.RxPackets+st.Stats.RxPackets)
	counter(cConnects, connects)
	gauge(cRTT, st.Stats.RTTMillis/1000)
}
