package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
)

// generation is one run of a job by a worker.
type generation struct {
	pool   *Pool
	job    chatstream.Job
	epoch  int64
	logger *slog.Logger

	n       int64           // chunks appended
	content strings.Builder // their text joined
	left    int             // bytes the answer may still take (MaxAnswerBytes)
	frame   []byte          // reused buffer for chunk frames
	// resync asks the pump to re-read the cancel flag; buffered 1, the
	// hub's dispatcher never blocks on it.
	resync chan struct{}
}

// recv is one result of Stream.Recv, handed from the reading goroutine.
type recv struct {
	delta string
	err   error
}

// cancelListener ends the generation when a cancel arrives on its channel.
type cancelListener struct {
	cancel func(error)
	// resync gets a signal when a cancel may have been lost with the
	// pub/sub connection: the flag in the meta hash has it.
	resync chan<- struct{}
}

func (c cancelListener) OnMessage(string, []byte) { c.cancel(errCancelRequested) }

func (c cancelListener) OnResync(string) {
	select {
	case c.resync <- struct{}{}:
	default:
	}
}

// run streams the answer into the chunk log. ok is false when the job is no
// longer this worker's to finish (fenced off, or handed back at shutdown).
func (g *generation) run(cancelled bool) (o outcome, ok bool) {
	p := g.pool
	ctx, cancel := context.WithCancelCause(p.runCtx)
	defer cancel(nil)

	g.resync = make(chan struct{}, 1)
	unsub, err := p.hub.Subscribe(ctx, p.chunks.Keys().CancelChannel(g.job.StreamID), cancelListener{cancel: cancel, resync: g.resync})
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

	var stream llm.Stream
	var recvErr error
	if ctx.Err() == nil {
		stream, recvErr = g.open(ctx, cancel)
	}
	if stream != nil {
		recvErr = g.pump(ctx, cancel, stream)
		stream.Close()
	}

	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errFenced):
		return outcome{}, false
	case errors.Is(cause, errShutdown):
		if g.n == 0 {
			return outcome{}, false
		}
		return g.outcome(chatstream.StatusFailed, &chatstream.Failure{Code: protocol.CodeInterrupted,
			Message: "The server restarted while answering; the answer is incomplete."}), true
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
	case errors.Is(recvErr, io.EOF):
		o := g.outcome(chatstream.StatusComplete, nil)
		if u, ok := stream.Usage(); ok {
			o.usage = &u
		}
		o.finishReason = stream.FinishReason()
		return o, true
	}
	f := llm.Failure(recvErr)
	if code := chatstream.ErrorCode(recvErr); code != chatstream.EINTERNAL {
		f = chatstream.Failure{Code: code, Message: chatstream.ErrorMessage(recvErr)}
	}
	return g.outcome(chatstream.StatusFailed, &f), true
}

// recheck reads the cancel flag from the stream's meta.
func (g *generation) recheck(ctx context.Context, cancel context.CancelCauseFunc) {
	if m, err := g.pool.chunks.Meta(ctx, g.job.StreamID); err == nil && m.Cancel {
		cancel(errCancelRequested)
	}
}

func (g *generation) outcome(status chatstream.Status, failure *chatstream.Failure) outcome {
	return outcome{status: status, failure: failure, content: g.content.String()}
}

// open builds the prompt and opens the model's stream. The stall timeout
// covers the wait for the model's answer too: a server that takes the
// request and never answers fails the generation like one that stops
// mid-stream.
func (g *generation) open(ctx context.Context, cancel context.CancelCauseFunc) (llm.Stream, error) {
	p := g.pool
	var hist []*chatstream.Message
	// The job is queued inside the transaction that writes its message, so
	// a worker can be faster than the commit: a missing message is waited
	// for a moment, then the job ends (its transaction did not commit).
	wait := time.Now().Add(p.cfg.CommitWait)
	for {
		err := retry(ctx, "read history", g.logger, func(ctx context.Context) (err error) {
			hist, err = p.store.History(ctx, g.job.ConversationID, g.job.StreamID, p.cfg.HistoryMessages)
			return err
		})
		if chatstream.ErrorCode(err) == chatstream.ENOTFOUND && time.Now().Before(wait) {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	req := llm.Request{Messages: buildPrompt(p.cfg.SystemPrompt, hist, p.cfg.HistoryBytes), MaxTokens: p.cfg.MaxTokens}
	stall := time.AfterFunc(p.cfg.StallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()
	return p.provider.Stream(ctx, req)
}

// pump moves deltas from the model to the chunk log until the stream ends
// or ctx is cancelled. It returns the error that ended the stream (io.EOF
// for a proper end).
func (g *generation) pump(ctx context.Context, cancel context.CancelCauseFunc, stream llm.Stream) error {
	p := g.pool
	// in carries the reader's results; the reader owns no state of ours and
	// ends after its first error, which it always delivers (buffered 1 past
	// the deltas so it never blocks once ctx is cancelled).
	in := make(chan recv, 64)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer func() {
			if v := recover(); v != nil {
				// A provider's bug fails this generation, not the node.
				g.logger.Error("panic reading the model's stream", "panic", v, "stack", string(debug.Stack()))
				select {
				case in <- recv{err: fmt.Errorf("model stream panicked: %v", v)}:
				case <-ctx.Done():
				}
			}
		}()
		for {
			d, err := stream.Recv()
			if d = storableText(d); d == "" && err == nil {
				continue // nothing left to store
			}
			select {
			case in <- recv{d, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() { cancel(nil); <-readerDone }()

	stall := time.NewTimer(p.cfg.StallTimeout)
	defer stall.Stop()
	var flush <-chan time.Time
	var flushTimer *time.Timer
	var pending strings.Builder
	appendPending := func() bool {
		if pending.Len() == 0 {
			return true
		}
		ok := g.append(ctx, cancel, pending.String())
		pending.Reset()
		return ok
	}
	for {
		select {
		case r := <-in:
			if r.err != nil {
				if errors.Is(r.err, io.EOF) || ctx.Err() == nil {
					// Whatever the model sent is kept, also before an error.
					appendPending()
				}
				return r.err
			}
			stall.Reset(p.cfg.StallTimeout)
			delta, full := g.fit(r.delta)
			if p.cfg.FlushInterval <= 0 {
				if delta != "" && !g.append(ctx, cancel, delta) {
					return context.Cause(ctx)
				}
			} else {
				pending.WriteString(delta)
				if flush == nil {
					flushTimer = time.NewTimer(p.cfg.FlushInterval)
					flush = flushTimer.C
				}
			}
			if full {
				if !appendPending() {
					return context.Cause(ctx)
				}
				cancel(errAnswerFull)
				return errAnswerFull
			}
		case <-flush:
			flush = nil
			if !appendPending() {
				return context.Cause(ctx)
			}
		case <-stall.C:
			cancel(errStalled)
		case <-g.resync:
			g.recheck(ctx, cancel)
		case <-ctx.Done():
			if flushTimer != nil {
				flushTimer.Stop()
			}
			return context.Cause(ctx)
		}
	}
}

// fit returns what of delta the answer still takes, and whether the answer
// is full with it: an answer holds at most MaxAnswerBytes, cut at a
// character boundary.
func (g *generation) fit(delta string) (string, bool) {
	if len(delta) <= g.left {
		g.left -= len(delta)
		return delta, false
	}
	cut := g.left
	for cut > 0 && !utf8.RuneStart(delta[cut]) {
		cut--
	}
	g.left = 0
	return delta[:cut], true
}

// append writes one chunk to the chunk log, retrying Redis errors for a
// while. It returns false, with ctx cancelled for a cause, when the
// generation must stop.
//
// The append is not cut short when ctx is cancelled (a cancel, a stall, the
// grace period over): a script call abandoned in flight may still run in
// Redis, and its chunk would be in the log but not in the stored content.
// It completes (or gives up after AppendRetryFor, or when the pool stops
// finishing work), so that g.n and g.content always match the log.
func (g *generation) append(ctx context.Context, cancel context.CancelCauseFunc, text string) bool {
	p := g.pool
	g.frame = protocol.AppendChunk(g.frame[:0], g.job.StreamID, g.n, text, time.Now().UnixMicro())
	// The first try has no deadline of its own (no timer per chunk); only
	// a Redis error starts the bounded retries.
	cancelled, err := p.chunks.Append(p.finCtx, g.job.StreamID, g.epoch, g.n, g.frame)
	if err != nil && !isPermanent(err) && p.finCtx.Err() == nil {
		rctx, rcancel := context.WithTimeout(p.finCtx, p.cfg.AppendRetryFor)
		err = retry(rctx, "append chunk", g.logger, func(ctx context.Context) (err error) {
			p.metrics.AppendRetry.Inc()
			cancelled, err = p.chunks.Append(ctx, g.job.StreamID, g.epoch, g.n, g.frame)
			return err
		})
		rcancel()
	}
	switch {
	case errors.Is(err, streaming.ErrFenced), errors.Is(err, streaming.ErrEnded), errors.Is(err, streaming.ErrGone):
		g.logger.Warn("lost the job; stopping", "err", err)
		cancel(errFenced)
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
	g.content.WriteString(text)
	p.metrics.Chunks.Inc()
	if cancelled {
		cancel(errCancelRequested)
		return false
	}
	return ctx.Err() == nil
}

// storableText is s as Postgres can store it: valid UTF-8 without U+0000,
// which a text column refuses. A model may send either; stripped here, the
// chunk log and the stored message hold the same text.
func storableText(s string) string {
	if strings.IndexByte(s, 0) < 0 && utf8.ValidString(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

// buildPrompt turns the conversation's earlier messages into the prompt:
// the system prompt, then the newest messages that fit in budget bytes
// (the last one always), oldest first. Empty answers are left out.
func buildPrompt(system string, hist []*chatstream.Message, budget int) []llm.Message {
	var picked []llm.Message
	used := 0
	for i := len(hist) - 1; i >= 0; i-- {
		m := hist[i]
		if m.Content == "" || (m.Role != chatstream.RoleUser && m.Role != chatstream.RoleAssistant) {
			continue
		}
		if used+len(m.Content) > budget && len(picked) > 0 {
			break
		}
		used += len(m.Content)
		picked = append(picked, llm.Message{Role: string(m.Role), Content: m.Content})
	}
	msgs := make([]llm.Message, 0, len(picked)+1)
	if system != "" {
		msgs = append(msgs, llm.Message{Role: string(chatstream.RoleSystem), Content: system})
	}
	for i := len(picked) - 1; i >= 0; i-- {
		msgs = append(msgs, picked[i])
	}
	return msgs
}
