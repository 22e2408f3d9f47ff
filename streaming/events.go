package streaming

import (
	"context"
	"encoding/json"
	"log/slog"

	"github.com/redis/rueidis"

	"github.com/chatstream/chatstream"
)

// Events publishes the message events of conversations: a message created
// or a message whose status changed. Sockets that watch a conversation
// receive them, so a second tab learns of a generation and follows it.
type Events struct {
	client rueidis.Client
	keys   Keys
	log    *slog.Logger
}

// NewEvents returns the conversation event publisher.
func NewEvents(client rueidis.Client, keys Keys, logger *slog.Logger) *Events {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Events{client: client, keys: keys, log: logger}
}

// MessageEvent is the frame of a message event.
type MessageEvent struct {
	Type           string              `json:"type"`
	ConversationID string              `json:"conversation_id"`
	Message        *chatstream.Message `json:"message"`
}

// MessageFrame returns the frame that tells watchers about m.
func MessageFrame(m *chatstream.Message) []byte {
	b, _ := json.Marshal(MessageEvent{Type: FrameMessage, ConversationID: m.ConversationID, Message: m})
	return b
}

// Publish tells the watchers of m's conversation about m. Events are a
// convenience for live views, not a record: a failure is logged, not
// returned, and a watcher that misses one sees the state on its next load.
func (e *Events) Publish(ctx context.Context, m *chatstream.Message) {
	channel, frame := e.keys.ConversationChannel(m.ConversationID), rueidis.BinaryString(MessageFrame(m))
	cmd := e.client.B().Publish().Channel(channel).Message(frame).Build()
	if sharded(e.client) {
		cmd = e.client.B().Spublish().Channel(channel).Message(frame).Build()
	}
	err := e.client.Do(ctx, cmd).Error()
	if err != nil {
		e.log.Warn("publish message event", "message_id", m.ID, "err", err)
	}
}
