package delivery

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the delivery's Prometheus metrics.
type Metrics struct {
	HistoryReads  prometheus.Counter
	HistoryCached prometheus.Counter
	Panics        prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (if non-nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		HistoryReads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatstream_history_reads_total",
			Help: "Chunk log reads made to catch followers up (one serves every follower waiting).",
		}),
		HistoryCached: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatstream_history_cached_total",
			Help: "Catch-ups served from the node's copy of a stream's log instead of a read.",
		}),
		Panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatstream_delivery_panics_total",
			Help: "Panics recovered in history readers (each logged with its stack).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.HistoryReads, m.HistoryCached, m.Panics)
	}
	return m
}
