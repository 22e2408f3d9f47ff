package loadgen

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Dist summarises a latency distribution, in milliseconds.
type Dist struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

// DistOf summarises latencies given in microseconds.
func DistOf(us []int32) Dist {
	if len(us) == 0 {
		return Dist{}
	}
	s := slices.Clone(us)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(s)))) - 1
		return float64(s[max(i, 0)]) / 1000
	}
	var sum float64
	for _, v := range s {
		sum += float64(v)
	}
	return Dist{N: len(s), P50: at(.50), P90: at(.90), P99: at(.99), P999: at(.999),
		Max: float64(s[len(s)-1]) / 1000, Mean: sum / float64(len(s)) / 1000}
}

// Report is the outcome of a run.
type Report struct {
	Scenario         string       `json:"scenario"`
	Streams          int          `json:"streams"`
	Followers        int          `json:"followers_per_stream"`
	Tokens           int          `json:"tokens_per_stream"`
	Rate             float64      `json:"tokens_per_second"`
	Sockets          int64        `json:"sockets_opened"`
	Seconds          float64      `json:"seconds"`
	Generations      int64        `json:"generations_started"`
	Chunks           int64        `json:"chunks_received"`
	Done             int64        `json:"done_received"`
	Lost             int64        `json:"chunks_lost"`
	Duplicated       int64        `json:"chunks_duplicated"`
	Snapshots        int64        `json:"snapshots"`
	SocketErrors     int64        `json:"socket_errors"`
	ErrorSample      []string     `json:"error_sample,omitempty"`
	DeliveriesPerS   float64      `json:"deliveries_per_second"`
	TTFB             Dist         `json:"ttfb"`
	Delivery         Dist         `json:"delivery_latency"`
	CatchUp          Dist         `json:"catch_up,omitempty"`
	Probe            *ProbeResult `json:"server,omitempty"`
	DeliveriesPerCPU float64      `json:"deliveries_per_cpu_second,omitempty"`
	IdleBytesPerSock float64      `json:"idle_bytes_per_socket,omitempty"`
	HistoryReads     int64        `json:"history_reads,omitempty"`
	// ResumeReads are the history reads from the moment a storm's sockets
	// resume until all caught up (the target: one per stream per node).
	ResumeReads *int64 `json:"resume_history_reads,omitempty"`
	// Soak is what a soak run did and how the server's resources went.
	Soak *SoakReport `json:"soak,omitempty"`

	latencies []int32
}

// Print writes the report as a table for people.
func (r *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "scenario\t%s\n", r.Scenario)
	switch {
	case r.Soak != nil:
		fmt.Fprintf(tw, "generations at once\t%d (%d tokens at %g/s)\n", r.Streams, r.Tokens, r.Rate)
	case r.Streams > 0:
		fmt.Fprintf(tw, "streams × followers\t%d × %d (%d tokens at %g/s)\n", r.Streams, r.Followers, r.Tokens, r.Rate)
	}
	fmt.Fprintf(tw, "sockets opened\t%d\n", r.Sockets)
	fmt.Fprintf(tw, "duration\t%.1fs\n", r.Seconds)
	fmt.Fprintf(tw, "generations\t%d\n", r.Generations)
	fmt.Fprintf(tw, "chunks received\t%d (%.0f/s)\n", r.Chunks, r.DeliveriesPerS)
	fmt.Fprintf(tw, "done received\t%d\n", r.Done)
	fmt.Fprintf(tw, "lost / duplicated\t%d / %d\n", r.Lost, r.Duplicated)
	fmt.Fprintf(tw, "snapshots\t%d\n", r.Snapshots)
	fmt.Fprintf(tw, "socket errors\t%d\n", r.SocketErrors)
	for _, e := range r.ErrorSample {
		fmt.Fprintf(tw, "  error\t%.120s\n", e)
	}
	row := func(name string, d Dist) {
		if d.N > 0 {
			fmt.Fprintf(tw, "%s (ms)\tp50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  (n=%d)\n", name, d.P50, d.P90, d.P99, d.P999, d.Max, d.N)
		}
	}
	row("TTFB send→first chunk", r.TTFB)
	row("delivery publish→receipt", r.Delivery)
	row("resume catch-up", r.CatchUp)
	if p := r.Probe; p != nil {
		fmt.Fprintf(tw, "server CPU\t%.2fs (%.0f%% of one core)\n", p.ServerCPUSeconds, 100*p.ServerCPUSeconds/r.Seconds)
		fmt.Fprintf(tw, "redis CPU\t%.2fs\n", p.RedisCPUSeconds)
		fmt.Fprintf(tw, "loadgen CPU\t%.2fs\n", p.LoadgenCPUSeconds)
		fmt.Fprintf(tw, "server RSS start / peak / end\t%s / %s / %s\n", mib(p.ServerRSSStart), mib(p.ServerRSSPeak), mib(p.ServerRSSEnd))
		if r.DeliveriesPerCPU > 0 {
			fmt.Fprintf(tw, "deliveries per CPU-second (server+redis)\t%.0f\n", r.DeliveriesPerCPU)
		}
		if p.RedisScriptCalls > 0 && r.Generations > 0 {
			fmt.Fprintf(tw, "redis commands / scripts\t%d / %d\n", p.RedisCommands, p.RedisScriptCalls)
		}
		if p.PostgresXacts > 0 && r.Generations > 0 {
			fmt.Fprintf(tw, "postgres transactions\t%d (%.2f per generation, incl. the run's own reads)\n", p.PostgresXacts, float64(p.PostgresXacts)/float64(r.Generations))
		}
	}
	if r.IdleBytesPerSock > 0 {
		fmt.Fprintf(tw, "server RSS per idle socket\t%.1f KiB\n", r.IdleBytesPerSock/1024)
	}
	if r.HistoryReads > 0 {
		fmt.Fprintf(tw, "history reads\t%d\n", r.HistoryReads)
	}
	if r.ResumeReads != nil {
		fmt.Fprintf(tw, "history reads while resuming\t%d\n", *r.ResumeReads)
	}
	tw.Flush()
	if r.Soak != nil {
		r.Soak.print(w)
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// WriteSVG draws the delivery latency CDF (log scale) as an SVG picture.
func (r *Report) WriteSVG(w io.Writer) error {
	const W, H, L, B, T, R = 720, 420, 70, 50, 30, 20
	s := slices.Clone(r.latencies)
	slices.Sort(s)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`, W, H)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14">chatstream %s: delivery latency CDF (%d chunks)</text>`, L, r.Scenario, len(s))
	pw, ph := float64(W-L-R), float64(H-T-B)
	// x: log10 of ms from 0.01 ms to 10 s.
	lo, hi := -2.0, 4.0
	x := func(ms float64) float64 {
		v := math.Log10(max(ms, 0.01))
		return L + (min(v, hi)-lo)/(hi-lo)*pw
	}
	y := func(q float64) float64 { return T + (1-q)*ph }
	for e := lo; e <= hi; e++ {
		ms := math.Pow(10, e)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`, x(ms), T, x(ms), H-B)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, x(ms), H-B+16, fmtMs(ms))
	}
	for _, q := range []float64{0, .5, .9, .99, 1} {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`, L, y(q), W-R, y(q))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%g</text>`, L-6, y(q)+4, q)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">latency, worker publish → client receipt (log scale)</text>`, L+int(pw/2), H-12)
	if len(s) > 0 {
		b.WriteString(`<polyline fill="none" stroke="#2563eb" stroke-width="2" points="`)
		steps := 400
		for i := 0; i <= steps; i++ {
			q := float64(i) / float64(steps)
			idx := min(int(q*float64(len(s)-1)), len(s)-1)
			fmt.Fprintf(&b, "%.1f,%.1f ", x(float64(s[idx])/1000), y(q))
		}
		b.WriteString(`"/>`)
	}
	b.WriteString(`</svg>`)
	_, err := io.WriteString(w, b.String())
	return err
}

func fmtMs(ms float64) string {
	if ms < 1 {
		return fmt.Sprintf("%gms", ms)
	}
	if ms >= 1000 {
		return fmt.Sprintf("%gs", ms/1000)
	}
	return fmt.Sprintf("%gms", ms)
}

// progress prints a line per second until stop is closed.
func (r *run) progress(w io.Writer, start time.Time, stop <-chan struct{}) {
	if w == nil {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastChunks int64
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			c := r.chunks.Load()
			fmt.Fprintf(w, "%5.0fs  sockets %6d  generations %5d  chunks/s %8d  done %6d  lost %d  dup %d  errors %d\n",
				time.Since(start).Seconds(), r.sockets.Load(), r.started.Load(), c-lastChunks, r.dones.Load(),
				r.lost.Load(), r.dups.Load(), r.sockErrs.Load())
			lastChunks = c
		}
	}
}
