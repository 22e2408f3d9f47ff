package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/llm"
)

// recv is one result of Stream.Recv, handed from the reading goroutine.
type recv struct {
	delta llm.Delta
	err   error
}

// round makes one model call and streams its answer into the chunk log.
// called reports that the model called tools; err is nil when the call
// ended properly. The last call a generation may make (MaxToolRounds) is
// made with tools off, so that the answer ends in text.
func (g *generation) round(ctx context.Context, cancel context.CancelCauseFunc) (called bool, err error) {
	p := g.pool
	toolsOn := p.cfg.Tools.Len() > 0 && g.rounds < p.cfg.MaxToolRounds-1
	msgs, err := g.prompt(ctx)
	if err != nil {
		return false, err
	}
	req := llm.Request{Messages: msgs, MaxTokens: p.cfg.MaxTokens}
	if toolsOn {
		req.Tools = p.cfg.Tools.Offer()
	}
	// rctx ends the call (and its reading goroutine) when the round is over.
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	// The stall timeout covers the wait for the model's answer too: a
	// server that takes the request and never answers fails the generation
	// like one that stops mid-stream.
	stall := time.AfterFunc(p.cfg.StallTimeout, func() { cancel(errStalled) })
	stream, err := p.provider.Stream(rctx, req)
	stall.Stop()
	if err != nil {
		return false, err
	}
	defer stream.Close()
	g.rounds++
	asm := &assembler{left: g.left, coalesce: p.cfg.FlushInterval > 0, toolsOn: toolsOn,
		approval: p.cfg.Tools.RequiresApproval, seen: g.callIDs(),
		callID: func() string { return generatedCallID(g.job.StreamID, g.n) }}
	called, err = g.pump(ctx, cancel, stop, stream, asm)
	g.left = asm.left
	if !errors.Is(err, io.EOF) {
		return called, err
	}
	g.finishReason = stream.FinishReason()
	if u, ok := stream.Usage(); ok {
		g.countUsage(ctx, u, called)
	}
	return called, nil
}

// countUsage adds the usage of one model call to the answer's; when more
// calls follow, it is saved with the stream for a worker that takes over.
func (g *generation) countUsage(ctx context.Context, u chatstream.Usage, more bool) {
	p := g.pool
	p.metrics.Tokens.WithLabelValues(p.provider.Name(), "prompt").Add(float64(u.PromptTokens))
	p.metrics.Tokens.WithLabelValues(p.provider.Name(), "completion").Add(float64(u.CompletionTokens))
	sum := u.Add(chatstream.Usage{})
	if g.usage != nil {
		sum = g.usage.Add(u)
	}
	g.usage = &sum
	if !more {
		return
	}
	if err := retry(ctx, "save usage", g.logger, func(ctx context.Context) error {
		return p.chunks.SaveUsage(ctx, g.job.StreamID, g.epoch, sum)
	}); err != nil {
		g.logger.Warn("save usage; a worker taking over would count less", "err", err)
	}
}

// callIDs returns the ids of the tool calls of the answer so far.
func (g *generation) callIDs() map[string]bool {
	ids := map[string]bool{}
	for _, p := range g.parts.Tool() {
		if p.Type == chatstream.PartToolCall {
			ids[p.CallID] = true
		}
	}
	return ids
}

// pump moves deltas from the model to the chunk log until the stream ends
// or ctx is cancelled; stop ends the stream. It returns whether the model
// called tools and the error that ended the stream (io.EOF for a proper
// end).
func (g *generation) pump(ctx context.Context, cancel context.CancelCauseFunc, stop func(), stream llm.Stream,
	asm *assembler) (called bool, err error) {
	p := g.pool
	// in carries the reader's results; the reader owns no state of ours and
	// ends after its first error, which it delivers unless pump returned
	// (quit).
	in := make(chan recv, 64)
	quit, readerDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(readerDone)
		defer func() {
			if v := recover(); v != nil {
				// A provider's bug fails this generation, not the node.
				g.logger.Error("panic reading the model's stream", "panic", v, "stack", string(debug.Stack()))
				select {
				case in <- recv{err: fmt.Errorf("model stream panicked: %v", v)}:
				case <-quit:
				}
			}
		}()
		for {
			d, err := stream.Recv()
			if d.Text == "" && d.Reasoning == "" && d.ToolCall == nil && err == nil {
				continue
			}
			select {
			case in <- recv{d, err}:
			case <-quit:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	// The reader blocks in Recv until the stream is stopped.
	defer func() { stop(); close(quit); <-readerDone }()

	appendAll := func(parts []chatstream.Part) bool {
		for _, part := range parts {
			if !g.append(ctx, cancel, part) {
				return false
			}
			if part.Type == chatstream.PartToolCall {
				called = true
			}
		}
		return true
	}
	stall := time.NewTimer(p.cfg.StallTimeout)
	defer stall.Stop()
	var flush <-chan time.Time
	var flushTimer *time.Timer
	defer func() {
		if flushTimer != nil {
			flushTimer.Stop()
		}
	}()
	for {
		select {
		case r := <-in:
			if r.err != nil {
				if errors.Is(r.err, io.EOF) || ctx.Err() == nil {
					// Whatever the model sent is kept, also before an error.
					appendAll(asm.flush())
				}
				return called, r.err
			}
			stall.Reset(p.cfg.StallTimeout)
			parts, full := asm.add(r.delta)
			if !appendAll(parts) {
				return called, context.Cause(ctx)
			}
			if full {
				cancel(errAnswerFull)
				return called, errAnswerFull
			}
			if asm.coalesce && flush == nil && asm.pending.Type != "" {
				flushTimer = time.NewTimer(p.cfg.FlushInterval)
				flush = flushTimer.C
			}
		case <-flush:
			flush, flushTimer = nil, nil
			if !appendAll(asm.flush()) {
				return called, context.Cause(ctx)
			}
		case <-stall.C:
			cancel(errStalled)
		case <-g.resync:
			g.recheck(ctx, cancel)
		case <-ctx.Done():
			return called, context.Cause(ctx)
		}
	}
}
