package protocol

import (
	"encoding/json"
	"strconv"

	"github.com/chatstream/chatstream"
)

// The types of the frames the server sends.
const (
	TypeChunk    = "chunk"
	TypeDone     = "done"
	TypeSnapshot = "snapshot"
	TypeMessage  = "message"
	TypeError    = "error"
	TypeAccepted = "accepted"
	// Acknowledgements (an extension of the contract: the type is the
	// operation's past tense).
	TypeSubscribed   = "subscribed"
	TypeUnsubscribed = "unsubscribed"
	TypeWatching     = "watching"
	TypeUnwatched    = "unwatched"
	TypeCancelling   = "cancelling"
)

// AppendChunk appends the frame of one chunk to dst. The worker builds it
// once; Redis stores and publishes these very bytes, and the node hands
// them unchanged to every follower.
func AppendChunk(dst []byte, streamID string, index int64, content string, ts int64) []byte {
	dst = append(dst, `{"type":"chunk","stream_id":"`...)
	dst = append(dst, streamID...)
	dst = append(dst, `","index":`...)
	dst = strconv.AppendInt(dst, index, 10)
	dst = append(dst, `,"content":`...)
	dst = AppendJSONString(dst, content)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	return append(dst, '}')
}

// Chunk is a decoded chunk frame.
type Chunk struct {
	StreamID string `json:"stream_id"`
	Index    int64  `json:"index"`
	Content  string `json:"content"`
	// TS is when the worker published it, in Unix microseconds.
	TS int64 `json:"ts"`
}

// Done is the end of a stream as the done frame tells it.
type Done struct {
	Type         string              `json:"type"`
	StreamID     string              `json:"stream_id"`
	MessageID    string              `json:"message_id"`
	Status       chatstream.Status   `json:"status"`
	LastIndex    int64               `json:"last_index"`
	Error        *chatstream.Failure `json:"error,omitempty"`
	FinishReason string              `json:"finish_reason,omitempty"`
}

// Frame returns d encoded.
func (d Done) Frame() []byte {
	b, _ := json.Marshal(d)
	return b
}

// DoneFrame returns the done frame of a stream that ended without a finish
// reason.
func DoneFrame(streamID string, status chatstream.Status, lastIndex int64, failure *chatstream.Failure) []byte {
	return Done{Type: TypeDone, StreamID: streamID, MessageID: streamID, Status: status, LastIndex: lastIndex, Error: failure}.Frame()
}

// MessageDone is the done frame of a stream as its final message tells it.
func MessageDone(m *chatstream.Message) []byte {
	return Done{Type: TypeDone, StreamID: m.ID, MessageID: m.ID, Status: m.Status, LastIndex: m.LastIndex,
		Error: m.Error, FinishReason: m.FinishReason}.Frame()
}

// Snapshot stands in for the chunks up to LastIndex when history cannot
// continue a client's sequence: Content replaces what the client holds.
type Snapshot struct {
	Type      string `json:"type"`
	StreamID  string `json:"stream_id"`
	Content   string `json:"content"`
	LastIndex int64  `json:"last_index"`
}

// SnapshotFrame returns the snapshot frame of a stream's text up to lastIndex.
func SnapshotFrame(streamID, content string, lastIndex int64) []byte {
	b, _ := json.Marshal(Snapshot{Type: TypeSnapshot, StreamID: streamID, Content: content, LastIndex: lastIndex})
	return b
}

// MessageEvent tells the watchers of a conversation that a message was
// created or changed status.
type MessageEvent struct {
	Type           string              `json:"type"`
	ConversationID string              `json:"conversation_id"`
	Message        *chatstream.Message `json:"message"`
}

// MessageFrame returns the message event of m.
func MessageFrame(m *chatstream.Message) []byte {
	b, _ := json.Marshal(MessageEvent{Type: TypeMessage, ConversationID: m.ConversationID, Message: m})
	return b
}

// Error is the error frame: a frame could not be served (the socket stays
// open), or a follow ended without its stream. RetryAfter (seconds; an
// extension) says when a rate_limited request may be tried again.
type Error struct {
	Type       string    `json:"type"`
	RequestID  RequestID `json:"request_id,omitempty"`
	StreamID   string    `json:"stream_id,omitempty"`
	Code       string    `json:"code"`
	Message    string    `json:"message"`
	RetryAfter int       `json:"retry_after,omitempty"`
}

// ErrorFrame returns the error frame of a stream's follow.
func ErrorFrame(streamID, code, message string) []byte {
	b, _ := json.Marshal(Error{Type: TypeError, StreamID: streamID, Code: code, Message: message})
	return b
}

// Accepted answers a send: the messages stored and the stream of the answer.
type Accepted struct {
	Type             string              `json:"type"`
	RequestID        RequestID           `json:"request_id,omitempty"`
	UserMessage      *chatstream.Message `json:"user_message"`
	AssistantMessage *chatstream.Message `json:"assistant_message"`
	StreamID         string              `json:"stream_id"`
}

// Ack confirms a subscribe, unsubscribe, watch, unwatch or cancel.
type Ack struct {
	Type           string    `json:"type"`
	RequestID      RequestID `json:"request_id,omitempty"`
	StreamID       string    `json:"stream_id,omitempty"`
	ConversationID string    `json:"conversation_id,omitempty"`
}
