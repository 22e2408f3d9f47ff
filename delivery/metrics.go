package delivery

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the delivery's Prometheus metrics.
type Metrics struct {
	HistoryReads  prometheus.Counter
	HistoryCached prometheus.Counter
	// HistoryCompacted counts catch-ups answered from an ended stream's
	// compacted parts (a snapshot) because its chunks were gone.
	HistoryCompacted prometheus.Counter
	Panics           prometheus.Counter
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
		HistoryCompacted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatstream_history_compacted_total",
			Help: "Catch-ups of ended streams answered with a snapshot of their compacted parts (their chunks gone after CHUNKS_COMPACT_AFTER).",
		}),
		Panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatstream_delivery_panics_total",
			Help: "Panics recovered in history readers (each logged with its stack).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.HistoryReads, m.HistoryCached, m.HistoryCompacted, m.Panics)
	}
	return m
}
