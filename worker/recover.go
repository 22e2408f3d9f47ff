package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
)

// The reaper: the jobs of dead nodes (and of this node, at its shutdown)
// are recovered here.

// reap recovers the jobs of the nodes that are dead now; the pool runs it
// every ReapInterval until Shutdown cancels takeCtx.
func (p *Pool) reap(ctx context.Context) error {
	dead, err := p.queue.DeadNodes(ctx)
	if err != nil {
		return fmt.Errorf("look for dead nodes: %w", err)
	}
	for _, node := range dead {
		p.recoverNode(ctx, node)
	}
	return nil
}

// every runs f every interval until Shutdown cancels takeCtx, logging what
// fails.
func (p *Pool) every(interval time.Duration, f func(context.Context) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-p.takeCtx.Done():
			return
		case <-t.C:
			if err := f(p.takeCtx); err != nil && p.takeCtx.Err() == nil {
				p.logger.Warn("background pass failed", "err", err)
			}
		}
	}
}

// recoverNode takes over every job in node's processing list. Jobs are
// recovered side by side, up to recoverConcurrency at once, each within
// RecoverTimeout: one that cannot be finished now (Redis or Postgres down)
// goes back to the queue for a worker to finish, and none waits behind it.
func (p *Pool) recoverNode(ctx context.Context, node string) {
	sem := make(chan struct{}, recoverConcurrency) // a token per recovery running
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		t, ok, err := p.queue.Adopt(ctx, node)
		if err != nil {
			if ctx.Err() == nil {
				p.logger.Warn("adopt job", "node", node, "err", err)
			}
			return
		}
		if !ok {
			return
		}
		p.metrics.Recovered.Inc()
		if node != p.owner {
			p.logger.Warn("recovering job of a dead node", "node", node, "stream_id", t.Job.StreamID)
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			// Adopted but not recovered: it stays in this node's list,
			// which this node's shutdown (or its reaper) goes through.
			return
		}
		// Each recovery ends within RecoverTimeout; recoverNode waits for them.
		wg.Go(func() {
			defer func() { <-sem }()
			p.recoverOne(ctx, t)
		})
	}
}

// recoverOne recovers one adopted job within RecoverTimeout; a job it cannot
// finish in time goes back to the queue.
func (p *Pool) recoverOne(ctx context.Context, t streaming.Taken) {
	rctx, cancel := context.WithTimeout(ctx, p.cfg.RecoverTimeout)
	defer cancel()
	err := p.recover(rctx, t)
	if err == nil {
		return
	}
	p.logger.Error("recover job; handing it to the queue", "stream_id", t.Job.StreamID, "err", err)
	qctx, qcancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.HandBackWait)
	defer qcancel()
	if err := p.queue.Requeue(qctx, t.Raw); err != nil {
		p.logger.Error("requeue unrecovered job; it stays with this node", "stream_id", t.Job.StreamID, "err", err)
	}
}

// recoverConcurrency bounds the jobs of dead nodes recovered at once.
const recoverConcurrency = 8

// recover decides the fate of a job whose worker is gone: run again if it
// emitted nothing, go on if it stands at a tool boundary, else end it with
// the answer it had.
func (p *Pool) recover(ctx context.Context, t streaming.Taken) error {
	id := t.Job.StreamID
	meta, err := p.chunks.Claim(ctx, id, p.owner)
	switch {
	case errors.Is(err, streaming.ErrEnded):
		// Redis has the end; Postgres was written before it.
		return p.queue.Done(ctx, t.Raw)
	case errors.Is(err, streaming.ErrGone):
		// The chunk log is gone: end the message as it stands.
		fail := &chatstream.Failure{Code: protocol.CodeStreamLost, Message: "The answer's stream was lost."}
		if err := p.fin.finish(ctx, t.Job, 0, outcome{status: chatstream.StatusFailed, failure: fail}, 0); err != nil {
			return err
		}
		return p.queue.Done(ctx, t.Raw)
	case err != nil:
		return err
	}
	if meta.N == 0 && meta.Final == "" && !meta.Cancel && meta.Attempts < int64(2*p.cfg.MaxRuns) {
		p.metrics.Requeued.Inc()
		return p.handBack(ctx, t, meta.Epoch)
	}
	// At a tool boundary the answer goes on: a worker takes it from the
	// queue and continues from the log. Every run claims twice (here and
	// in the worker); the bound grows with the rounds made, so that only
	// a job that kills node after node without progress is given up.
	parts, ok, err := p.resumePoint(ctx, id, meta)
	if err != nil {
		return err
	}
	if ok && meta.Attempts < int64(2*p.cfg.MaxRuns+2*roundsIn(parts)) {
		p.metrics.Requeued.Inc()
		return p.handBack(ctx, t, meta.Epoch)
	}
	if err := p.endOrphan(ctx, t.Job, meta); err != nil {
		return err
	}
	return p.queue.Done(ctx, t.Raw)
}

// endOrphan ends a stream whose earlier writer is gone, as the meta it
// claimed says: with the status that writer marked final, cancelled if a
// cancel was asked, else failed (worker_lost) with the text it had.
func (p *Pool) endOrphan(ctx context.Context, job chatstream.Job, meta streaming.Meta) error {
	switch {
	case meta.Final != "":
		return p.fin.finishFromLog(ctx, job, meta.Epoch, meta.Final, meta.Failure)
	case meta.Cancel:
		return p.fin.finishFromLog(ctx, job, meta.Epoch, chatstream.StatusCancelled, nil)
	}
	return p.fin.finishFromLog(ctx, job, meta.Epoch, chatstream.StatusFailed, &chatstream.Failure{
		Code: protocol.CodeWorkerLost, Message: "The server generating this answer stopped; the answer is incomplete."})
}
