package worker

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the generation metrics.
type Metrics struct {
	Enqueued    prometheus.Counter
	Finished    *prometheus.CounterVec
	Active      prometheus.Gauge
	Chunks      prometheus.Counter
	TTFB        prometheus.Histogram
	Requeued    prometheus.Counter
	Recovered   prometheus.Counter
	Lost        prometheus.Counter
	QueueWait   prometheus.Histogram
	AppendRetry prometheus.Counter
	Panics      prometheus.Counter
	// Tokens counts the tokens the model reported, by model and kind
	// (prompt, completion).
	Tokens *prometheus.CounterVec
	// ToolCalls counts the tool calls settled, by tool and outcome (ok,
	// error, not_approved); ToolDuration times the calls made.
	ToolCalls    *prometheus.CounterVec
	ToolDuration prometheus.Histogram
}

// NewMetrics creates the metrics and registers them with reg (if non-nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Enqueued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatstream_generations_enqueued_total", Help: "Generations queued.",
		}),
		Finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatstream_generations_finished_total", Help: "Generations ended, by final status.",
		}, []string{"status"}),
		Active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatstream_generations_active", Help: "Generations running on this node.",
		}),
		Chunks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatstream_chunks_appended_total", Help: "Chunks appended to chunk logs by this node's workers.",
		}),
		TTFB: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "chatstream_generation_first_chunk_seconds",
			Help:    "Time from enqueue to the first chunk appended.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		Requeued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatstream_jobs_requeued_total", Help: "Jobs handed back to the queue for another worker: before their first chunk, or at a tool boundary.",
		}),
		Recovered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatstream_jobs_recovered_total", Help: "Jobs of dead nodes taken over by this node's reaper.",
		}),
		Lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatstream_streams_lost_total", Help: "Answers Postgres held open whose stream Redis no longer had, ended failed (stream_lost) by the sweep.",
		}),
		QueueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "chatstream_job_queue_wait_seconds",
			Help:    "Time a job waited in the queue before a worker took it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		AppendRetry: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatstream_chunk_append_retries_total", Help: "Chunk appends retried after a Redis error.",
		}),
		Panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatstream_generation_panics_total", Help: "Panics recovered while running a generation (each logged with its stack).",
		}),
		Tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatstream_llm_tokens_total", Help: "Tokens the model reported for this node's generations, by model and kind (prompt, completion).",
		}, []string{"model", "kind"}),
		ToolCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatstream_tool_calls_total", Help: "Tool calls settled by this node's workers, by tool and outcome (ok, error, not_approved).",
		}, []string{"tool", "outcome"}),
		ToolDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "chatstream_tool_call_seconds",
			Help:    "Time a tool took to answer a call.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Enqueued, m.Finished, m.Active, m.Chunks, m.TTFB, m.Requeued, m.Recovered, m.Lost, m.QueueWait, m.AppendRetry, m.Panics,
			m.Tokens, m.ToolCalls, m.ToolDuration)
	}
	return m
}
