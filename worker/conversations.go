package worker

import (
	"context"
	"log/slog"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/streaming"
)

// ConversationStore is what the changes of whole conversations need of
// Postgres.
type ConversationStore interface {
	UpdateConversation(ctx context.Context, userID, id string, ch chatstream.ConversationChange) (*chatstream.Conversation, error)
	DeleteConversation(ctx context.Context, userID, id string) (streams []string, err error)
}

// Conversations changes whole conversations — renames them, switches the
// branch they show, deletes them — and tells their watchers on every node.
type Conversations struct {
	store  ConversationStore
	chunks *streaming.ChunkLog
	events *streaming.Events
	owners *owners // the stream owners Generations remembers
	logger *slog.Logger
}

// NewConversations returns the changes of conversations; gens is the
// request side of generations on the same node, whose memory of stream
// owners forgets a deleted conversation's streams.
func NewConversations(store ConversationStore, chunks *streaming.ChunkLog, events *streaming.Events, gens *Generations, logger *slog.Logger) *Conversations {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Conversations{store: store, chunks: chunks, events: events, logger: logger}
	if gens != nil {
		c.owners = gens.owners
	}
	return c
}

// deleteRetryFor bounds the retries of a deletion's Redis half.
const deleteRetryFor = 30 * time.Second

// Update renames conversation id or switches the branch it shows, if
// userID owns it, and tells its watchers.
func (c *Conversations) Update(ctx context.Context, userID, id string, ch chatstream.ConversationChange) (*chatstream.Conversation, error) {
	conv, err := c.store.UpdateConversation(ctx, userID, id, ch)
	if err != nil {
		return nil, err
	}
	c.events.PublishConversation(ctx, conv.ID, protocol.ConversationUpdated, conv)
	return conv, nil
}

// Delete deletes conversation id if userID owns it: its messages go from
// Postgres, then its streams from Redis — a running generation stops, and
// every node that follows one of them ends its followers (and drops its
// copy of the log) — and its watchers are told. Once Postgres has
// committed, every id in it is not_found; the Redis half is retried, and
// what it cannot remove expires with STREAM_TTL.
func (c *Conversations) Delete(ctx context.Context, userID, id string) error {
	streams, err := c.store.DeleteConversation(ctx, userID, id)
	if err != nil {
		return err
	}
	// The rows are gone: the rest is done even if the caller goes away.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deleteRetryFor)
	defer cancel()
	if err := retry(dctx, "publish deletion", c.logger, func(ctx context.Context) error { return c.events.PublishDeletion(ctx, streams) }); err != nil {
		c.logger.Error("tell the nodes of a deleted conversation's streams", "conversation_id", id, "err", err)
	}
	for _, s := range streams {
		if c.owners != nil {
			c.owners.forget(s)
		}
		if err := retry(dctx, "delete stream", c.logger, func(ctx context.Context) error { return c.chunks.Delete(ctx, s) }); err != nil {
			c.logger.Error("delete the stream of a deleted conversation; it expires with STREAM_TTL", "stream_id", s, "err", err)
		}
	}
	c.events.PublishConversation(dctx, id, protocol.ConversationDeleted, nil)
	return nil
}
