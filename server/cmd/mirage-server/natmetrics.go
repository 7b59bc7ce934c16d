package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mirage-vpn/mirage/platform/nat"
)

var (
	mNATFlows = prometheus.NewDesc("mirage_nat_flows",
		"Connection-tracking entries of traffic from the tunnel networks (the flows the NAT masquerades), by family.",
		[]string{"family"}, nil)
	mConntrackEntries = prometheus.NewDesc("mirage_conntrack_entries",
		"Entries in the host's connection-tracking table (every flow, not only the tunnel's).", nil, nil)
	mConntrackMax = prometheus.NewDesc("mirage_conntrack_max",
		"Size of the connection-tracking table; when full, new NATed connections are dropped.", nil, nil)
)

// natCollector exports the NAT's usage at scrape time.
type natCollector struct{ rules *nat.Rules }

func (natCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- mNATFlows
	ch <- mConntrackEntries
	ch <- mConntrackMax
}

func (c natCollector) Collect(ch chan<- prometheus.Metric) {
	u, err := c.rules.Usage()
	if err != nil {
		// No conntrack table to read (module not loaded): leave the
		// metrics out rather than fail the whole scrape.
		return
	}
	ch <- prometheus.MustNewConstMetric(mNATFlows, prometheus.GaugeValue, float64(u.Flows4), "ipv4")
	ch <- prometheus.MustNewConstMetric(mNATFlows, prometheus.GaugeValue, float64(u.Flows6), "ipv6")
	ch <- prometheus.MustNewConstMetric(mConntrackEntries, prometheus.GaugeValue, float64(u.Entries))
	ch <- prometheus.MustNewConstMetric(mConntrackMax, prometheus.GaugeValue, float64(u.Max))
}
