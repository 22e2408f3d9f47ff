package worker

import (
	"context"
	"errors"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
)

// append writes one part as the next chunk of the log, retrying Redis
// errors for a while. It returns false, with ctx cancelled for a cause,
// when the generation must stop.
//
// The append is not cut short when ctx is cancelled (a cancel, a stall, the
// grace period over): a script call abandoned in flight may still run in
// Redis, and its chunk would be in the log but not in the stored answer.
// It completes (or gives up after AppendRetryFor, or when the pool stops
// finishing work), so that g.n and g.parts always match the log.
func (g *generation) append(ctx context.Context, cancel context.CancelCauseFunc, part chatstream.Part) bool {
	p := g.pool
	ts := time.Now()
	g.frame = protocol.AppendPartChunk(g.frame[:0], g.job.StreamID, g.n, part, ts.UnixMicro())
	write := func(ctx context.Context) (bool, error) {
		// The log stores the part's compact entry; a call that requires
		// approval waits for it from the moment it can be seen.
		return p.chunks.AppendPart(ctx, g.job.StreamID, g.epoch, g.n, g.frame, part, ts)
	}
	// The first try has no deadline of its own (no timer per chunk); only
	// a Redis error starts the bounded retries.
	cancelled, err := write(p.finCtx)
	if err != nil && !isPermanent(err) && p.finCtx.Err() == nil {
		rctx, rcancel := context.WithTimeout(p.finCtx, p.cfg.AppendRetryFor)
		err = retry(rctx, "append chunk", g.logger, func(ctx context.Context) (err error) {
			p.metrics.AppendRetry.Inc()
			cancelled, err = write(ctx)
			return err
		})
		rcancel()
	}
	switch {
	case errors.Is(err, streaming.ErrFenced), errors.Is(err, streaming.ErrEnded):
		g.logger.Warn("lost the job; stopping", "err", err)
		cancel(errFenced)
		return false
	case errors.Is(err, streaming.ErrGone):
		// Deleted with its conversation (or expired): nothing can be
		// written; the end is recorded for whatever is left.
		g.logger.Info("the stream is gone; stopping")
		cancel(errGone)
		return false
	case err != nil:
		// Whether the last try reached Redis is unknown: the end is
		// written from what the log holds (outcome.fromLog).
		g.logger.Error("append chunk", "err", err)
		cancel(errRedis)
		return false
	}
	if g.n == 0 && g.job.EnqueuedAt > 0 {
		p.metrics.TTFB.Observe(time.Since(time.UnixMicro(g.job.EnqueuedAt)).Seconds())
	}
	g.n++
	g.parts.Add(part)
	p.metrics.Chunks.Inc()
	if cancelled {
		cancel(errCancelRequested)
		return false
	}
	return ctx.Err() == nil
}
