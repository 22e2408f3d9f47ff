// Package worker runs generations: it takes jobs from the Redis queue,
// streams the answer from the LLM provider into the chunk log, and writes the
// final message to Postgres. It also holds the request side of a generation
// (Generations: send and cancel) and the reaper that finishes the jobs of dead
// nodes.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
)

// Store is what generations need of Postgres.
type Store interface {
	StartTurn(ctx context.Context, t chatstream.Turn, then func(user, assistant *chatstream.Message) error) (*chatstream.Started, error)
	ClientMessage(ctx context.Context, userID, id string) (*chatstream.Started, string, error)
	FindMessage(ctx context.Context, userID, id string) (*chatstream.Message, error)
	History(ctx context.Context, convID, beforeID string, limit int) ([]*chatstream.Message, error)
	FinishMessage(ctx context.Context, id string, f chatstream.Final) (*chatstream.Message, bool, error)
	OpenMessages(ctx context.Context, before time.Time, limit int) ([]chatstream.Job, error)
}

// Limits are the per-user limits generations are held to.
type Limits interface {
	// AllowSend counts a send of user, or refuses it (rate_limited).
	AllowSend(ctx context.Context, user string) error
	// AcquireGeneration counts a generation of user, or refuses it
	// (rate_limited) when the user has too many.
	AcquireGeneration(ctx context.Context, user, streamID string) error
	// ReleaseGeneration stops counting it.
	ReleaseGeneration(ctx context.Context, user, streamID string)
}

// noLimits holds nothing back.
type noLimits struct{}

func (noLimits) AllowSend(context.Context, string) error                 { return nil }
func (noLimits) AcquireGeneration(context.Context, string, string) error { return nil }
func (noLimits) ReleaseGeneration(context.Context, string, string)       {}

func orNoLimits(l Limits) Limits {
	if l == nil {
		return noLimits{}
	}
	return l
}

// Generations is the request side of generations, used by the API: it
// creates them, cancels them and answers their tool calls' approvals.
type Generations struct {
	store   Store
	chunks  *streaming.ChunkLog
	queue   *streaming.Queue
	events  *streaming.Events
	limits  Limits
	fin     *finisher
	logger  *slog.Logger
	metrics *Metrics
	owners  *owners
}

// NewService returns the request side of generations; limits may be nil
// for none.
func NewGenerations(store Store, chunks *streaming.ChunkLog, queue *streaming.Queue, events *streaming.Events, limits Limits, metrics *Metrics, logger *slog.Logger) *Generations {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	limits = orNoLimits(limits)
	return &Generations{store: store, chunks: chunks, queue: queue, events: events, limits: limits, logger: logger, metrics: metrics,
		fin:    &finisher{store: store, chunks: chunks, events: events, limits: limits, logger: logger, metrics: metrics},
		owners: newOwners(ownersSize)}
}

// Subscriber is the hub as FollowDeletions uses it.
type Subscriber interface {
	Subscribe(ctx context.Context, channel string, handler streaming.Handler) (unsubscribe func(), err error)
}

// FollowDeletions subscribes to channel (Keys.Deletions), on which every
// node's Conversations.Delete names the streams of a deleted conversation,
// so that this node stops remembering their owners: on every node, a
// deleted stream answers not_found.
func (s *Generations) FollowDeletions(ctx context.Context, hub Subscriber, channel string) (unsubscribe func(), err error) {
	return hub.Subscribe(ctx, channel, deletions{s.owners})
}

// Start stores the messages of a send, edit or regenerate and queues the
// generation of the answer, whose message id is the stream id. The user's
// limits are checked first: a refused turn stores nothing. A repeat of a
// client message id gets what the first answered, before any limit counts
// it, and starts nothing.
func (s *Generations) Start(ctx context.Context, t chatstream.Turn) (*chatstream.Started, error) {
	if t.ClientMessageID != "" {
		if st, err := s.repeat(ctx, t); st != nil || err != nil {
			return st, err
		}
	}
	if err := s.limits.AllowSend(ctx, t.UserID); err != nil {
		if chatstream.ErrorCode(err) != chatstream.EINTERNAL {
			return nil, err
		}
		s.logger.Error("count a send against its limit", "err", err)
		return nil, chatstream.Errorf(chatstream.EUNAVAILABLE, "The answer could not be started; please retry.")
	}
	// The job is queued inside the messages' transaction: if Redis fails,
	// nothing is stored; if the commit fails after, the job finds no
	// message and ends (see generation.readHistory). The generation is
	// counted against the user's limit there too: a refusal rolls
	// everything back.
	var redisErr error
	held := ""
	st, err := s.store.StartTurn(ctx, t, func(_, a *chatstream.Message) error {
		if err := s.limits.AcquireGeneration(ctx, t.UserID, a.ID); err != nil {
			if chatstream.ErrorCode(err) != chatstream.ERATELIMIT {
				redisErr = err
			}
			return err
		}
		held = a.ID
		job := chatstream.Job{StreamID: a.ID, ConversationID: a.ConversationID, UserID: t.UserID, EnqueuedAt: time.Now().UnixMicro()}
		redisErr = s.enqueue(ctx, job)
		return redisErr
	})
	if err != nil && held != "" {
		s.limits.ReleaseGeneration(context.WithoutCancel(ctx), t.UserID, held)
	}
	if redisErr != nil {
		s.logger.Error("enqueue generation", "err", redisErr)
		return nil, chatstream.Errorf(chatstream.EUNAVAILABLE, "The answer could not be started; please retry.")
	} else if err != nil {
		return nil, err
	}
	if st.Repeat {
		return st, nil // a repeat that raced its first
	}
	s.metrics.Enqueued.Inc()
	if st.User != nil {
		s.events.Publish(ctx, st.User)
	}
	s.events.Publish(ctx, st.Assistant)
	if t.Kind != chatstream.TurnSend {
		// The conversation shows another branch now.
		s.events.PublishConversation(ctx, st.Conversation.ID, protocol.ConversationUpdated, st.Conversation)
	}
	return st, nil
}

// repeat returns what an earlier turn with t's client message id answered,
// if it was in t's conversation; nil if there was none. The same id in
// another conversation is a conflict.
func (s *Generations) repeat(ctx context.Context, t chatstream.Turn) (*chatstream.Started, error) {
	st, conv, err := s.store.ClientMessage(ctx, t.UserID, t.ClientMessageID)
	if err != nil || st == nil {
		return nil, err
	}
	want := t.ConversationID
	if t.Kind != chatstream.TurnSend {
		m, err := s.store.FindMessage(ctx, t.UserID, t.MessageID)
		if err != nil {
			return nil, err
		}
		want = m.ConversationID
	}
	if conv != want {
		return nil, chatstream.Errorf(chatstream.ECONFLICT, "That client_message_id was used in another conversation.")
	}
	return st, nil
}

func (s *Generations) enqueue(ctx context.Context, job chatstream.Job) error {
	if err := s.chunks.Create(ctx, job.StreamID, job.UserID, job.ConversationID); err != nil {
		return err
	}
	return s.queue.Enqueue(ctx, job)
}

// Cancel stops the generation of stream streamID if userID owns it. Ending
// an already ended stream is not an error.
func (s *Generations) Cancel(ctx context.Context, userID, streamID string) error {
	meta, err := s.ownStream(ctx, userID, streamID)
	if err != nil || !meta.Exists {
		return err // another's, or ended: nothing left to stop
	}
	held, err := s.chunks.Cancel(ctx, streamID)
	if errors.Is(err, streaming.ErrEnded) || errors.Is(err, streaming.ErrGone) {
		return nil
	} else if err != nil {
		return err
	}
	if held {
		return nil // its worker hears the cancel and ends the stream
	}
	// No worker holds the job (not taken yet, or handed back to the queue):
	// end it here, so a cancel never waits for a free worker. A worker
	// taking it later finds it ended.
	// If a worker took it meanwhile, this claim fences it off; it saw the
	// cancel flag anyway, and what it wrote stays in the answer.
	claimed, err := s.chunks.Claim(ctx, streamID, "cancel")
	if errors.Is(err, streaming.ErrEnded) || errors.Is(err, streaming.ErrGone) {
		return nil
	} else if err != nil {
		return err
	}
	return s.fin.finishFromLog(ctx, chatstream.Job{StreamID: streamID, UserID: userID}, claimed.Epoch, chatstream.StatusCancelled, nil)
}

// Approve records the user's answer to tool call callID of stream
// streamID, which waits for it: approved, the call is made; denied, it is
// not. The stream must be userID's (else not_found); a call that is not
// waiting for approval, or has its answer already, is a conflict.
func (s *Generations) Approve(ctx context.Context, userID, streamID, callID string, approved bool) error {
	meta, err := s.ownStream(ctx, userID, streamID)
	if err != nil {
		return err
	}
	if !meta.Exists {
		return errNotWaiting // ended: no call of it waits
	}
	answer := streaming.AnswerDenied
	if approved {
		answer = streaming.AnswerApproved
	}
	err = s.chunks.Answer(ctx, streamID, callID, answer)
	switch {
	case errors.Is(err, streaming.ErrAnswered):
		return chatstream.Errorf(chatstream.ECONFLICT, "That tool call was answered already.")
	case errors.Is(err, streaming.ErrNotWaiting), errors.Is(err, streaming.ErrEnded), errors.Is(err, streaming.ErrGone):
		return errNotWaiting
	}
	return err
}

// ownStream reads the meta of stream streamID if it is userID's, else
// returns protocol.ErrStreamNotFound. A meta that does not exist (expired
// from Redis, or never there) is returned when Postgres says the stream is
// userID's: it has ended.
func (s *Generations) ownStream(ctx context.Context, userID, streamID string) (streaming.Meta, error) {
	meta, err := s.chunks.Meta(ctx, streamID)
	if err != nil {
		return meta, err
	}
	if !meta.Exists {
		_, err := s.streamMessage(ctx, userID, streamID)
		return meta, err
	}
	if meta.User != userID {
		return meta, protocol.ErrStreamNotFound
	}
	return meta, nil
}

var errNotWaiting = chatstream.Errorf(chatstream.ECONFLICT, "That tool call is not waiting for approval.")

// retry calls fn until it succeeds, fn says stop, or ctx ends, with
// exponential backoff between attempts.
func retry(ctx context.Context, what string, logger *slog.Logger, fn func(context.Context) error) error {
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil || isPermanent(err) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w (gave up: %v)", what, err, ctx.Err())
		}
		logger.Warn("retrying", "what", what, "attempt", attempt, "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (gave up: %v)", what, err, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// isPermanent reports errors that a retry cannot mend.
func isPermanent(err error) bool {
	return errors.Is(err, streaming.ErrFenced) || errors.Is(err, streaming.ErrEnded) ||
		errors.Is(err, streaming.ErrGone) || chatstream.ErrorCode(err) != chatstream.EINTERNAL
}

// Authorize returns nil if userID may follow stream streamID: the owner in
// the stream's meta, or in Postgres once the meta expired. An owner once
// read is remembered (it never changes), so the sockets of a resume storm
// are authorised without a read each.
func (s *Generations) Authorize(ctx context.Context, userID, streamID string) error {
	if owner, ok := s.owners.get(streamID); ok {
		if owner != userID {
			return protocol.ErrStreamNotFound
		}
		return nil
	}
	meta, err := s.chunks.Meta(ctx, streamID)
	if err != nil {
		return err
	}
	if meta.Exists {
		s.owners.put(streamID, meta.User)
		if meta.User != userID {
			return protocol.ErrStreamNotFound
		}
		return nil
	}
	if _, err := s.streamMessage(ctx, userID, streamID); err != nil {
		return err
	}
	s.owners.put(streamID, userID)
	return nil
}

// streamMessage returns the assistant message of stream streamID from
// Postgres if userID owns it, else protocol.ErrStreamNotFound.
func (s *Generations) streamMessage(ctx context.Context, userID, streamID string) (*chatstream.Message, error) {
	m, err := s.store.FindMessage(ctx, userID, streamID)
	if chatstream.ErrorCode(err) == chatstream.ENOTFOUND || (err == nil && m.Role != chatstream.RoleAssistant) {
		return nil, protocol.ErrStreamNotFound
	}
	return m, err
}
