package streaming

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the streaming package's Prometheus metrics.
type Metrics struct {
	HubReconnects prometheus.Counter
	HubDropped    prometheus.Counter
	HubMoved      prometheus.Counter
	HistoryReads  prometheus.Counter
	HistoryCached prometheus.Counter
	Panics        prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (if non-nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		HubReconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatstream_hub_reconnects_total",
			Help: "Times the node's Redis pub/sub connection was re-established.",
		}),
		HubDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatstream_hub_dropped_messages_total",
			Help: "Pub/sub messages dropped because a dispatch queue was full (followers resync from history).",
		}),
		HubMoved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatstream_hub_moved_channels_total",
			Help: "Channels moved to another master's pub/sub connection because a Redis Cluster moved their slot.",
		}),
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
			Help: "Panics recovered in history readers and pub/sub dispatch (each logged with its stack).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.HubReconnects, m.HubDropped, m.HubMoved, m.HistoryReads, m.HistoryCached, m.Panics)
	}
	return m
}
