package streaming

import (
	"context"
	"log/slog"

	"github.com/redis/rueidis"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
)

// Events publishes the message events of conversations: a message created
// or a message whose status changed. Sockets that watch a conversation
// receive them, so a second tab learns of a generation and follows it.
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
	channel, frame := e.keys.ConversationChannel(m.ConversationID), rueidis.BinaryString(protocol.MessageFrame(m))
	cmd := e.client.B().Publish().Channel(channel).Message(frame).Build()
	if sharded(e.client) {
		cmd = e.client.B().Spublish().Channel(channel).Message(frame).Build()
	}
	err := e.client.Do(ctx, cmd).Error()
	if err != nil {
		e.logger.Warn("publish message event", "message_id", m.ID, "err", err)
	}
}
