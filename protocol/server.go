package protocol

import (
	"encoding/json"
	"fmt"
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
	TypeAnswered     = "answered" // an approve was recorded
	// TypeConversation tells watchers a conversation was renamed, switched
	// branch, or deleted.
	TypeConversation = "conversation"
)

// Conversation events.
const (
	ConversationUpdated = "updated"
	ConversationDeleted = "deleted"
)

// ConversationEvent is a conversation frame.
type ConversationEvent struct {
	Type           string                   `json:"type"`
	ConversationID string                   `json:"conversation_id"`
	Event          string                   `json:"event"`
	Conversation   *chatstream.Conversation `json:"conversation,omitempty"`
}

// ConversationFrame returns the frame of a conversation event; c is nil
// for a deletion.
func ConversationFrame(convID, event string, c *chatstream.Conversation) []byte {
	b, _ := json.Marshal(ConversationEvent{Type: TypeConversation, ConversationID: convID, Event: event, Conversation: c})
	return b
}

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

// Chunk kinds: what a chunk carries. A chunk without a kind is text.
const (
	KindText         = "text"
	KindReasoning    = "reasoning"
	KindToolCall     = "tool_call"
	KindToolApproval = "tool_approval"
	KindToolResult   = "tool_result"
)

// AppendPartChunk appends the frame of a chunk that carries part: a text
// chunk as AppendChunk builds it, any other kind with an empty content (so
// that the contents of a stream's chunks joined are still its text) and the
// part beside it.
func AppendPartChunk(dst []byte, streamID string, index int64, part chatstream.Part, ts int64) []byte {
	if part.Type == chatstream.PartText {
		return AppendChunk(dst, streamID, index, part.Text, ts)
	}
	dst = appendChunkHead(dst, streamID, index, part.Type)
	switch part.Type {
	case chatstream.PartReasoning:
		dst = append(dst, `"reasoning":`...)
		dst = AppendJSONString(dst, part.Text)
	case chatstream.PartToolCall:
		b, _ := json.Marshal(ToolCall{CallID: part.CallID, Name: part.Name, Arguments: part.Arguments, RequiresApproval: part.RequiresApproval})
		dst = append(append(dst, `"tool_call":`...), b...)
	case chatstream.PartToolApproval:
		b, _ := json.Marshal(ToolApproval{CallID: part.CallID, Approved: part.Approved, Reason: part.Reason})
		dst = append(append(dst, `"tool_approval":`...), b...)
	case chatstream.PartToolResult:
		b, _ := json.Marshal(ToolResult{CallID: part.CallID, Name: part.Name, Output: part.Output, IsError: part.IsError})
		dst = append(append(dst, `"tool_result":`...), b...)
	}
	return appendChunkTail(dst, ts)
}

// appendChunkHead appends the start of a chunk frame of a kind other than
// text, up to its kind's field.
func appendChunkHead(dst []byte, streamID string, index int64, kind chatstream.PartType) []byte {
	dst = append(dst, `{"type":"chunk","stream_id":"`...)
	dst = append(dst, streamID...)
	dst = append(dst, `","index":`...)
	dst = strconv.AppendInt(dst, index, 10)
	dst = append(dst, `,"kind":"`...)
	dst = append(dst, kind...)
	return append(dst, `","content":"",`...)
}

// appendChunkTail appends the end of a chunk frame of a kind other than
// text: its time.
func appendChunkTail(dst []byte, ts int64) []byte {
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	return append(dst, '}')
}

// ToolCall is a tool_call chunk's call.
type ToolCall struct {
	CallID           string `json:"call_id"`
	Name             string `json:"name"`
	Arguments        string `json:"arguments"`
	RequiresApproval bool   `json:"requires_approval,omitempty"`
}

// ToolApproval is a tool_approval chunk's answer.
type ToolApproval struct {
	CallID   string `json:"call_id"`
	Approved bool   `json:"approved"`
	Reason   string `json:"reason"`
}

// ToolResult is a tool_result chunk's result.
type ToolResult struct {
	CallID  string `json:"call_id"`
	Name    string `json:"name"`
	Output  string `json:"output"`
	IsError bool   `json:"is_error,omitempty"`
}

// Chunk is a decoded chunk frame.
type Chunk struct {
	StreamID string `json:"stream_id"`
	Index    int64  `json:"index"`
	// Kind is empty for text.
	Kind         string        `json:"kind,omitempty"`
	Content      string        `json:"content"`
	Reasoning    string        `json:"reasoning,omitempty"`
	ToolCall     *ToolCall     `json:"tool_call,omitempty"`
	ToolApproval *ToolApproval `json:"tool_approval,omitempty"`
	ToolResult   *ToolResult   `json:"tool_result,omitempty"`
	// TS is when the worker published it, in Unix microseconds.
	TS int64 `json:"ts"`
}

// Part returns what the chunk carries as a part.
func (c Chunk) Part() chatstream.Part {
	switch {
	case c.Kind == KindReasoning:
		return chatstream.Part{Type: chatstream.PartReasoning, Text: c.Reasoning}
	case c.Kind == KindToolCall && c.ToolCall != nil:
		t := c.ToolCall
		return chatstream.Part{Type: chatstream.PartToolCall, CallID: t.CallID, Name: t.Name, Arguments: t.Arguments, RequiresApproval: t.RequiresApproval}
	case c.Kind == KindToolApproval && c.ToolApproval != nil:
		t := c.ToolApproval
		return chatstream.Part{Type: chatstream.PartToolApproval, CallID: t.CallID, Approved: t.Approved, Reason: t.Reason}
	case c.Kind == KindToolResult && c.ToolResult != nil:
		t := c.ToolResult
		return chatstream.Part{Type: chatstream.PartToolResult, CallID: t.CallID, Name: t.Name, Output: t.Output, IsError: t.IsError}
	}
	return chatstream.Part{Type: chatstream.PartText, Text: c.Content}
}

// PartsOf rebuilds the parts of a stream from its chunk frames, in index
// order: consecutive text (and reasoning) chunks form one part. The text of
// the parts joined is the contents of the chunks joined.
func PartsOf(frames [][]byte) ([]chatstream.Part, error) {
	var b chatstream.PartsBuilder
	for i, fr := range frames {
		var c Chunk
		if err := json.Unmarshal(fr, &c); err != nil {
			return nil, fmt.Errorf("chunk %d: %w", i, err)
		}
		b.Add(c.Part())
	}
	return b.Parts(), nil
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
	Usage        *chatstream.Usage   `json:"usage,omitempty"`
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
		Error: m.Error, FinishReason: m.FinishReason, Usage: m.Usage}.Frame()
}

// Snapshot stands in for the chunks up to LastIndex when history cannot
// continue a client's sequence: Content (the text) and Parts (everything)
// replace what the client holds.
type Snapshot struct {
	Type      string            `json:"type"`
	StreamID  string            `json:"stream_id"`
	Content   string            `json:"content"`
	Parts     []chatstream.Part `json:"parts"`
	LastIndex int64             `json:"last_index"`
}

// SnapshotFrame returns the snapshot frame of a stream's parts up to
// lastIndex; its content is their text.
func SnapshotFrame(streamID string, parts []chatstream.Part, lastIndex int64) []byte {
	if parts == nil {
		parts = []chatstream.Part{}
	}
	b, _ := json.Marshal(Snapshot{Type: TypeSnapshot, StreamID: streamID, Content: chatstream.TextOf(parts), Parts: parts, LastIndex: lastIndex})
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
	UserMessage      *chatstream.Message `json:"user_message,omitempty"` // none for a regenerate
	AssistantMessage *chatstream.Message `json:"assistant_message"`
	StreamID         string              `json:"stream_id"`
}

// Ack confirms a subscribe, unsubscribe, watch, unwatch, cancel or approve.
type Ack struct {
	Type           string    `json:"type"`
	RequestID      RequestID `json:"request_id,omitempty"`
	StreamID       string    `json:"stream_id,omitempty"`
	ConversationID string    `json:"conversation_id,omitempty"`
	CallID         string    `json:"call_id,omitempty"`
}
