package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
)

// The sweep: an answer Postgres holds open whose stream Redis no longer has
// would stay streaming for ever — and hold its conversation (one answer
// streams at a time) — when Redis loses data: a restart without
// persistence, a failover that drops the last writes. The reaper cannot see
// such an answer (its job went with the data). Once a SweepInterval, one
// node of the cluster looks at the open answers older than SweepGrace and
// ends those whose stream meta is gone failed, stream_lost, with no text
// (the chunks went with it). The meta is written before the message
// commits and outlives its end, so a missing meta means lost.

// sweepBatch bounds the answers one sweep looks at.
const sweepBatch = 500

// sweep runs one sweep if no other node has this period's; the pool runs
// it every SweepInterval.
func (p *Pool) sweep(ctx context.Context) error {
	mine, err := p.chunks.TrySweep(ctx, p.owner, p.cfg.SweepInterval)
	if err != nil || !mine {
		return err
	}
	jobs, err := p.store.OpenMessages(ctx, time.Now().Add(-p.cfg.SweepGrace), sweepBatch)
	if err != nil {
		return fmt.Errorf("sweep for lost streams: %w", err)
	}
	if len(jobs) == 0 {
		return nil
	}
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.StreamID
	}
	missing, err := p.chunks.Missing(ctx, ids)
	if err != nil {
		return err
	}
	for i, job := range jobs {
		if !missing[i] {
			continue
		}
		p.logger.Error("answer open in Postgres but its stream is gone from Redis; ending it failed", "stream_id", job.StreamID)
		fail := &chatstream.Failure{Code: protocol.CodeStreamLost, Message: "The answer's stream was lost."}
		if err := p.fin.finish(ctx, job, 0, outcome{status: chatstream.StatusFailed, failure: fail}, 0); err != nil {
			return err
		}
		p.metrics.Lost.Inc()
	}
	return nil
}
