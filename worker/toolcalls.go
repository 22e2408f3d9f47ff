package worker

import (
	"context"
	"errors"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/streaming"
	"github.com/chatstream/chatstream/tools"
)

// Tool calls: between two model calls, every call the model made is
// settled, in order — its approval awaited if it needs one, then run — and
// each step appended to the log. A call with a result in the log is never
// made again; a call without one (its worker died while it ran) is made
// again with the same call id, the tool's Idempotency-Key.

// What the model is told of a call that was not made.
const (
	deniedOutput  = "The user denied this call; it was not made."
	expiredOutput = "Nobody approved this call in time; it was not made."
)

// settle makes the tool calls of the answer that have no result yet. It
// returns an error only when the generation must stop (ctx cancelled, for
// the cause that ends it).
func (g *generation) settle(ctx context.Context, cancel context.CancelCauseFunc) error {
	done := map[string]bool{}
	answers := map[string]chatstream.Part{}
	for _, p := range g.parts.Tool() {
		switch p.Type {
		case chatstream.PartToolResult:
			done[p.CallID] = true
		case chatstream.PartToolApproval:
			answers[p.CallID] = p
		}
	}
	for _, c := range g.parts.Tool() {
		if c.Type != chatstream.PartToolCall || done[c.CallID] {
			continue
		}
		if err := g.settleCall(ctx, cancel, c, answers); err != nil {
			return err
		}
	}
	return nil
}

// settleCall awaits the approval of call c if it needs one (unless answers
// has it), then makes it, appending each step.
func (g *generation) settleCall(ctx context.Context, cancel context.CancelCauseFunc, c chatstream.Part,
	answers map[string]chatstream.Part) error {
	p := g.pool
	if c.RequiresApproval {
		a, ok := answers[c.CallID]
		if !ok {
			answer, err := g.awaitApproval(ctx, cancel, c.CallID)
			if err != nil {
				return err
			}
			a = chatstream.Part{Type: chatstream.PartToolApproval, CallID: c.CallID, Approved: answer == streaming.AnswerApproved,
				Reason: chatstream.ApprovalByUser}
			if answer == streaming.AnswerExpired {
				a.Reason = chatstream.ApprovalExpired
			}
			if !g.append(ctx, cancel, a) {
				return context.Cause(ctx)
			}
		}
		if !a.Approved {
			out := deniedOutput
			if a.Reason == chatstream.ApprovalExpired {
				out = expiredOutput
			}
			p.metrics.ToolCalls.WithLabelValues(c.Name, "not_approved").Inc()
			return g.appendResult(ctx, cancel, c, tools.Result{Output: out, IsError: true})
		}
	}
	start := time.Now()
	res := p.cfg.Tools.Run(ctx, tools.Call{CallID: c.CallID, Name: c.Name, Arguments: c.Arguments,
		ConversationID: g.job.ConversationID, MessageID: g.job.StreamID, UserID: g.job.UserID})
	if ctx.Err() != nil {
		// Stopped while it ran: no result is written, and a worker that
		// goes on makes the call again (same Idempotency-Key).
		return context.Cause(ctx)
	}
	outcome := "ok"
	if res.IsError {
		outcome = "error"
		g.logger.Info("tool call failed", "tool", c.Name, "call_id", c.CallID, "output", res.Output)
	}
	p.metrics.ToolCalls.WithLabelValues(c.Name, outcome).Inc()
	p.metrics.ToolDuration.Observe(time.Since(start).Seconds())
	return g.appendResult(ctx, cancel, c, res)
}

func (g *generation) appendResult(ctx context.Context, cancel context.CancelCauseFunc, c chatstream.Part, res tools.Result) error {
	part := chatstream.Part{Type: chatstream.PartToolResult, CallID: c.CallID, Name: c.Name, Output: storable(res.Output), IsError: res.IsError}
	if !g.append(ctx, cancel, part) {
		return context.Cause(ctx)
	}
	return nil
}

// awaitApproval waits for the answer to call callID: the user's, or
// AnswerExpired once ApprovalTimeout has passed since the call was made
// (whichever Redis records first). The wait outlives its worker: the time
// it started and any answer are in the stream's meta.
func (g *generation) awaitApproval(ctx context.Context, cancel context.CancelCauseFunc, callID string) (string, error) {
	p := g.pool
	started := time.Now()
	for {
		var a streaming.Approval
		err := g.retryRedis(ctx, cancel, "read approval", func(ctx context.Context) (err error) {
			a, err = p.chunks.Approval(ctx, g.job.StreamID, callID)
			return err
		})
		if err != nil {
			return "", err
		}
		if a.Answer != "" {
			return a.Answer, nil
		}
		since := started
		if a.Waiting {
			since = a.Since
		}
		left := time.Until(since.Add(p.cfg.ApprovalTimeout))
		if left <= 0 {
			notWaiting := false
			err := g.retryRedis(ctx, cancel, "expire approval", func(ctx context.Context) error {
				err := p.chunks.Answer(ctx, g.job.StreamID, callID, streaming.AnswerExpired)
				switch {
				case errors.Is(err, streaming.ErrAnswered):
					return nil // the user's answer came first: read next
				case errors.Is(err, streaming.ErrNotWaiting):
					notWaiting = true // no answer can come
					return nil
				}
				return err
			})
			if errors.Is(err, streaming.ErrEnded) {
				cancel(errFenced) // ended by someone else
				return "", context.Cause(ctx)
			} else if errors.Is(err, streaming.ErrGone) {
				cancel(errGone)
				return "", context.Cause(ctx)
			} else if err != nil {
				return "", err
			}
			if notWaiting {
				return streaming.AnswerExpired, nil
			}
			continue
		}
		timer := time.NewTimer(left)
		select {
		case <-g.answered:
		case <-g.resync:
			g.recheck(ctx, cancel)
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
		if ctx.Err() != nil {
			return "", context.Cause(ctx)
		}
	}
}

// retryRedis calls fn, retrying Redis errors for AppendRetryFor; when they
// last longer, the generation fails (errRedis). It returns fn's permanent
// error, or the cause that stopped the generation.
func (g *generation) retryRedis(ctx context.Context, cancel context.CancelCauseFunc, what string, fn func(context.Context) error) error {
	rctx, rcancel := context.WithTimeout(ctx, g.pool.cfg.AppendRetryFor)
	defer rcancel()
	err := retry(rctx, what, g.logger, fn)
	switch {
	case err == nil || isPermanent(err):
		return err
	case ctx.Err() == nil:
		g.logger.Error(what, "err", err)
		cancel(errRedis)
	}
	return context.Cause(ctx)
}
