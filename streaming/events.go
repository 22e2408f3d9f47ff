package streaming

import (
	"context"
	"log/slog"
	"strings"

	"github.com/redis/rueidis"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
)

// Events publishes the events of conversations: a message created or a
// message whose status changed, and the conversation renamed, switched to
// another branch or deleted. Sockets that watch a conversation receive
// them, so a second tab learns of a generation and follows it.
type Events struct {
	client rueidis.Client
	keys   Keys
	logger *slog.Logger
}

// NewEvents returns the conversation event publisher.
func NewEvents(client rueidis.Client, keys Keys, logger *slog.Logger) *Events {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Events{client: client, keys: keys, logger: logger}
}

// Publish tells the watchers of m's conversation about m. Events are a
// convenience for live views, not a record: a failure is logged, not
// returned, and a watcher that misses one sees the state on its next load.
func (e *Events) Publish(ctx context.Context, m *chatstream.Message) {
	if err := e.publish(ctx, m.ConversationID, protocol.MessageFrame(m)); err != nil {
		e.logger.Warn("publish message event", "message_id", m.ID, "err", err)
	}
}

// PublishConversation tells the watchers of conversation convID that it
// was updated (renamed, or switched branch: c as it is now) or deleted (c
// nil). A failure is logged, as for Publish.
func (e *Events) PublishConversation(ctx context.Context, convID, event string, c *chatstream.Conversation) {
	if err := e.publish(ctx, convID, protocol.ConversationFrame(convID, event, c)); err != nil {
		e.logger.Warn("publish conversation event", "conversation_id", convID, "event", event, "err", err)
	}
}

// PublishDeletion tells every node that streams are gone with their
// conversation: their ids, one a line.
func (e *Events) PublishDeletion(ctx context.Context, streams []string) error {
	if len(streams) == 0 {
		return nil
	}
	return e.publishOn(ctx, e.keys.Deletions(), []byte(strings.Join(streams, "\n")))
}

func (e *Events) publish(ctx context.Context, convID string, frame []byte) error {
	return e.publishOn(ctx, e.keys.ConversationChannel(convID), frame)
}

func (e *Events) publishOn(ctx context.Context, channel string, frame []byte) error {
	msg := rueidis.BinaryString(frame)
	cmd := e.client.B().Publish().Channel(channel).Message(msg).Build()
	if sharded(e.client) {
		cmd = e.client.B().Spublish().Channel(channel).Message(msg).Build()
	}
	return e.client.Do(ctx, cmd).Error()
}
