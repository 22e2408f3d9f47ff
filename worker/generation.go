package worker

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
)

// generation is one run of a job by a worker: model calls (rounds) and the
// tool calls between them, every piece appended to the chunk log. A
// generation is a function of its log at tool boundaries: a worker that
// takes a job over there starts from what the log holds (resume).
type generation struct {
	pool   *Pool
	job    chatstream.Job
	epoch  int64
	logger *slog.Logger

	n     int64                   // chunks appended
	parts chatstream.PartsBuilder // the answer so far, as the log holds it
	left  int                     // bytes of text and reasoning the answer may still take (MaxAnswerBytes)
	usage *chatstream.Usage       // summed over the model calls; nil while none reported
	// finishReason is the last model call's.
	finishReason string
	// rounds counts the model calls of the answer, those of earlier runs
	// included.
	rounds int
	// history is the prompt before this answer; read once.
	history     []llm.Message
	historyRead bool
	frame       []byte // reused buffer for chunk frames
	// resync asks for the cancel flag (and any awaited approval) to be read
	// again; answered says an approval was recorded. Both are buffered 1:
	// the hub's dispatcher never blocks on them.
	resync, answered chan struct{}
}

// newGeneration starts the generation of job, held with epoch.
func (p *Pool) newGeneration(job chatstream.Job, epoch int64) *generation {
	return &generation{pool: p, job: job, epoch: epoch, logger: p.logger.With("stream_id", job.StreamID),
		left: p.cfg.MaxAnswerBytes, resync: make(chan struct{}, 1), answered: make(chan struct{}, 1)}
}

// resume makes g go on from what the log holds: n chunks of parts, with
// usage reported by the model calls so far.
func (g *generation) resume(n int64, parts []chatstream.Part, usage *chatstream.Usage) {
	g.n, g.usage = n, usage
	for _, p := range parts {
		g.parts.Add(p)
		if p.Type == chatstream.PartText || p.Type == chatstream.PartReasoning {
			g.left -= len(p.Text)
		}
	}
	g.left = max(g.left, 0)
	g.rounds = roundsIn(parts)
}

// resumable reports whether another worker can go on from where g stands:
// nothing was appended yet, or the log ends at a tool boundary.
func (g *generation) resumable() bool { return g.n == 0 || atToolBoundary(g.parts.LastType()) }

// controlListener hears the requests on the stream's control channel: a
// cancel ends the generation; an approval wakes the wait for it.
type controlListener struct {
	cancel func(error)
	// resync gets a signal when a message may have been lost with the
	// pub/sub connection: the meta hash has what it said.
	resync, answered chan<- struct{}
}

func (c controlListener) OnMessage(_ string, msg []byte) {
	if _, ok := streaming.ApprovalOf(msg); ok {
		signal(c.answered)
		return
	}
	c.cancel(errCancelRequested)
}

func (c controlListener) OnResync(string) { signal(c.resync) }

// signal sends on a buffered 1 channel unless a signal waits there already.
func signal(c chan<- struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// run streams the answer into the chunk log. ok is false when the job is no
// longer this worker's to finish (fenced off, or handed back at shutdown).
func (g *generation) run(cancelled bool) (o outcome, ok bool) {
	p := g.pool
	ctx, cancel := context.WithCancelCause(p.runCtx)
	defer cancel(nil)

	unsub, err := p.hub.Subscribe(ctx, p.chunks.Keys().ControlChannel(g.job.StreamID),
		controlListener{cancel: cancel, resync: g.resync, answered: g.answered})
	if err == nil {
		defer unsub()
	}
	if cancelled {
		cancel(errCancelRequested)
	} else {
		// A cancel sent between the claim and the subscription was missed
		// on the channel; the flag has it.
		g.recheck(ctx, cancel)
	}
	var endErr error
	if ctx.Err() == nil {
		endErr = g.converse(ctx, cancel)
	}

	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errFenced):
		return outcome{}, false
	case errors.Is(cause, errShutdown):
		if g.resumable() {
			return outcome{}, false // handed back: another worker goes on
		}
		return g.outcome(chatstream.StatusFailed, &chatstream.Failure{Code: protocol.CodeInterrupted,
			Message: "The server restarted while answering; the answer is incomplete."}), true
	case errors.Is(cause, errGone):
		return g.outcome(chatstream.StatusFailed, &chatstream.Failure{Code: protocol.CodeStreamLost,
			Message: "The answer's stream was lost."}), true
	case errors.Is(cause, errCancelRequested):
		return g.outcome(chatstream.StatusCancelled, nil), true
	case errors.Is(cause, errStalled):
		return g.outcome(chatstream.StatusFailed, &chatstream.Failure{Code: protocol.CodeLLMTimeout,
			Message: "The model stopped answering."}), true
	case errors.Is(cause, errRedis):
		o := g.outcome(chatstream.StatusFailed, &chatstream.Failure{Code: chatstream.EUNAVAILABLE,
			Message: "The answer could not be stored; please retry."})
		o.fromLog = true
		return o, true
	case errors.Is(cause, errAnswerFull):
		// As if the model had stopped for its token limit.
		o := g.outcome(chatstream.StatusComplete, nil)
		o.finishReason = "length"
		return o, true
	case errors.Is(endErr, io.EOF):
		return g.outcome(chatstream.StatusComplete, nil), true
	}
	f := llm.Failure(endErr)
	if code := chatstream.ErrorCode(endErr); code != chatstream.EINTERNAL {
		f = chatstream.Failure{Code: code, Message: chatstream.ErrorMessage(endErr)}
	}
	return g.outcome(chatstream.StatusFailed, &f), true
}

// converse makes the model calls of the answer, settling the tool calls of
// each before the next, until a call ends without tool calls. It returns
// the error that ended it: io.EOF for a proper end.
func (g *generation) converse(ctx context.Context, cancel context.CancelCauseFunc) error {
	for {
		if err := g.settle(ctx, cancel); err != nil {
			return err
		}
		called, err := g.round(ctx, cancel)
		if err != nil {
			return err
		}
		if !called {
			return io.EOF
		}
	}
}

// recheck reads the cancel flag from the stream's meta.
func (g *generation) recheck(ctx context.Context, cancel context.CancelCauseFunc) {
	if m, err := g.pool.chunks.Meta(ctx, g.job.StreamID); err == nil && m.Cancel {
		cancel(errCancelRequested)
	}
}

func (g *generation) outcome(status chatstream.Status, failure *chatstream.Failure) outcome {
	return outcome{status: status, failure: failure, parts: g.parts.Parts(), usage: g.usage,
		model: g.pool.provider.Name(), finishReason: g.finishReason}
}

// atToolBoundary reports whether an answer whose last part is of type last
// stands between tool calls: a call made, answered or returned.
func atToolBoundary(last chatstream.PartType) bool {
	return last == chatstream.PartToolCall || last == chatstream.PartToolApproval || last == chatstream.PartToolResult
}

// roundsIn counts the model calls that made the tool calls of parts: each
// ended with a run of tool_call parts.
func roundsIn(parts []chatstream.Part) int {
	n := 0
	for i, p := range parts {
		if p.Type == chatstream.PartToolCall && (i == 0 || parts[i-1].Type != chatstream.PartToolCall) {
			n++
		}
	}
	return n
}
