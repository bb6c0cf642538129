package controlplane

import "github.com/prometheus/client_golang/prometheus"

var (
	fedStaleDesc = prometheus.NewDesc("strait_federation_peer_stale",
		"1 while a peer domain cannot be reached: its catalog is kept (calls keep flowing) but may be out of date.", []string{"peer"}, nil)
	fedServicesDesc = prometheus.NewDesc("strait_federation_imported_services",
		"Services imported from a peer domain.", []string{"peer"}, nil)
	fedWithdrawnDesc = prometheus.NewDesc("strait_federation_withdrawn_total",
		"Services a peer domain withdrew (removed from this domain's imports).", []string{"peer"}, nil)
	fedRefusedDesc = prometheus.NewDesc("strait_federation_refused",
		"What a peer's quota keeps out of this domain, in its catalog as last heard: services (beyond the quota of services or metadata bytes) and ingress instances.", []string{"peer", "kind"}, nil)
	fedCoalescedDesc = prometheus.NewDesc("strait_federation_updates_coalesced_total",
		"Catalog updates of a peer passed on later, together, over its quota of updates a second.", []string{"peer"}, nil)
)

// federationCollector reports each peer's import state at scrape time.
type federationCollector struct{ c *Server }

func (f federationCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- fedStaleDesc
	ch <- fedServicesDesc
	ch <- fedWithdrawnDesc
	ch <- fedRefusedDesc
	ch <- fedCoalescedDesc
}

func (f federationCollector) Collect(ch chan<- prometheus.Metric) {
	for p, im := range f.c.Imports() {
		stale := 0.0
		if im.Stale {
			stale = 1
		}
		ch <- prometheus.MustNewConstMetric(fedStaleDesc, prometheus.GaugeValue, stale, p)
		ch <- prometheus.MustNewConstMetric(fedServicesDesc, prometheus.GaugeValue, float64(len(im.Services)), p)
		ch <- prometheus.MustNewConstMetric(fedWithdrawnDesc, prometheus.CounterValue, float64(im.Withdrawn), p)
		ch <- prometheus.MustNewConstMetric(fedRefusedDesc, prometheus.GaugeValue, float64(im.Refused.Services), p, "services")
		ch <- prometheus.MustNewConstMetric(fedRefusedDesc, prometheus.GaugeValue, float64(im.Refused.Ingress), p, "ingress")
		ch <- prometheus.MustNewConstMetric(fedCoalescedDesc, prometheus.CounterValue, float64(im.Refused.Updates), p)
	}
}
