package worker

import (
	"context"
	"errors"
	"log/slog"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
)

// outcome is how a generation ended, before it is written.
type outcome struct {
	status  chatstream.Status
	failure *chatstream.Failure
	// parts are the answer's, as the chunk log holds them; their text is
	// the content.
	parts []chatstream.Part
	usage *chatstream.Usage
	model string
	// finishReason is the model's ("stop", "length", …), or "length" when
	// the answer reached MaxAnswerBytes; empty for none.
	finishReason string
	// fromLog says the writer does not know for sure what the chunk log
	// holds (an append gave up): the end is written from the log.
	fromLog bool
}

// finisher writes the end of a stream: the intended status in Redis, the
// final message in Postgres, then the done frame. Each step is retried while
// ctx lives; if the process dies in between, the reaper of another node
// finishes from what Redis holds.
type finisher struct {
	store   Store
	chunks  *streaming.ChunkLog
	events  *streaming.Events
	limits  Limits
	logger  *slog.Logger
	metrics *Metrics
}

// finish ends the stream of job, held with epoch, after n chunks. Once the
// end is written the generation no longer counts against its user's limit.
func (f *finisher) finish(ctx context.Context, job chatstream.Job, epoch int64, o outcome, n int64) error {
	streamID := job.StreamID
	err := retry(ctx, "mark final", f.logger, func(ctx context.Context) error {
		return f.chunks.MarkFinal(ctx, streamID, epoch, o.status, o.failure)
	})
	if errors.Is(err, streaming.ErrFenced) || errors.Is(err, streaming.ErrEnded) {
		return nil // someone else owns the end of this stream
	} else if err != nil && !errors.Is(err, streaming.ErrGone) {
		return err
	}
	// The chunk log may be gone (expired, lost by Redis); Postgres is
	// written all the same, so that the message never stays streaming.
	var stored *chatstream.Message
	write := func(final chatstream.Final) error {
		return retry(ctx, "write final message", f.logger, func(ctx context.Context) error {
			m, _, err := f.store.FinishMessage(ctx, streamID, final)
			stored = m
			return err
		})
	}
	err = write(chatstream.Final{Content: chatstream.TextOf(o.parts), Parts: o.parts, Status: o.status, Failure: o.failure,
		Usage: o.usage, Model: o.model, FinishReason: o.finishReason, LastIndex: n - 1})
	if chatstream.ErrorCode(err) == chatstream.EINVALID {
		// Postgres refuses the record itself: no retry can ever store it.
		// The message ends failed without its text rather than streaming
		// forever (and holding its conversation, a worker and the reaper).
		f.logger.Error("final message refused; ending it failed", "stream_id", streamID, "err", err)
		err = write(chatstream.Final{Status: chatstream.StatusFailed, Usage: o.usage, Model: o.model, LastIndex: n - 1,
			Failure: &chatstream.Failure{Code: protocol.CodeStoreRefused, Message: "The answer could not be stored."}})
	}
	if chatstream.ErrorCode(err) == chatstream.ENOTFOUND {
		// The message is gone (its conversation deleted): end the stream as failed.
		stored = &chatstream.Message{ID: streamID, Status: chatstream.StatusFailed, LastIndex: n - 1,
			Error: &chatstream.Failure{Code: chatstream.ENOTFOUND, Message: "The message no longer exists."}}
	} else if err != nil {
		return err
	}
	// The generation is over as far as its user's limit goes: released
	// before done is sent, so that a client that sees done may send again.
	f.limits.ReleaseGeneration(ctx, job.UserID, streamID)
	// Postgres is the record: if the message was ended before (a duplicate
	// finish), the done frame tells what it says.
	err = retry(ctx, "finish stream", f.logger, func(ctx context.Context) error {
		end := streaming.End{Status: stored.Status, Failure: stored.Error, FinishReason: stored.FinishReason, Usage: stored.Usage}
		if stored.LastIndex == n-1 && stored.ConversationID != "" {
			// The record is these n chunks: it may stand in for them.
			end.Parts = stored.PartsOrText()
		}
		return f.chunks.Finish(ctx, streamID, epoch, n, end)
	})
	if err != nil && !errors.Is(err, streaming.ErrFenced) && !errors.Is(err, streaming.ErrEnded) && !errors.Is(err, streaming.ErrGone) {
		return err
	}
	f.metrics.Finished.WithLabelValues(string(stored.Status)).Inc()
	if stored.ConversationID != "" {
		f.events.Publish(ctx, stored)
	}
	return nil
}

// finishFromLog ends the stream of a job whose writer is gone, with the
// answer the chunk log holds.
func (f *finisher) finishFromLog(ctx context.Context, job chatstream.Job, epoch int64, status chatstream.Status, failure *chatstream.Failure) error {
	var parts []chatstream.Part
	var n int64
	err := retry(ctx, "read chunk log", f.logger, func(ctx context.Context) (err error) {
		parts, n, err = f.chunks.Parts(ctx, job.StreamID)
		return err
	})
	if err != nil {
		return err
	}
	return f.finish(ctx, job, epoch, outcome{status: status, failure: failure, parts: parts}, n)
}
