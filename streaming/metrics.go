package streaming

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the Redis adapter's Prometheus metrics.
type Metrics struct {
	HubReconnects prometheus.Counter
	HubDropped    prometheus.Counter
	HubMoved      prometheus.Counter
	HubPanics     prometheus.Counter
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
		HubPanics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatstream_hub_handler_panics_total",
			Help: "Panics recovered in pub/sub handlers (each logged with its stack).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.HubReconnects, m.HubDropped, m.HubMoved, m.HubPanics)
	}
	return m
}
