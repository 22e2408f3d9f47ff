// Package chatstream holds the domain types of the chatstream service:
// conversations, messages, stream chunks, generation jobs and the error type
// every layer speaks. It imports the standard library only; the adapters
// (store, streaming, llm, server) import it, never each other's internals.
package chatstream

import (
	"encoding/json"
	"time"
)

// Role is who wrote a message.
type Role string

// Roles of a message.
const (
	RoleUser      Role = "user"
	RoleAssistant Role = "assistant"
	RoleSystem    Role = "system"
)

// Status is the life-cycle state of a message.
type Status string

// Statuses of a message. A user message is complete at creation; an assistant
// message is streaming until its generation ends complete, cancelled or failed.
const (
	StatusPending   Status = "pending"
	StatusStreaming Status = "streaming"
	StatusComplete  Status = "complete"
	StatusCancelled Status = "cancelled"
	StatusFailed    Status = "failed"
)

// Final reports whether s is an end state that never changes again.
func (s Status) Final() bool {
	return s == StatusComplete || s == StatusCancelled || s == StatusFailed
}

// Conversation is a user's chat thread: a tree of messages, of which it
// shows one branch, from its first message down to CurrentMessageID.
type Conversation struct {
	ID        string    `json:"id"`
	UserID    string    `json:"-"`
	Title     string    `json:"title"`
	CreatedAt time.Time `json:"created_at"`
	// CurrentMessageID is the leaf of the branch shown; empty while the
	// conversation has no message.
	CurrentMessageID string `json:"current_message_id,omitempty"`
}

// ConversationChange is a change of a conversation; nil fields stay.
type ConversationChange struct {
	Title *string
	// Show is a message of the conversation whose branch is to be shown:
	// the current leaf becomes its newest descendant (the newest child at
	// each step).
	Show *string
}

// ConversationPage is a page of a user's conversations, newest first.
type ConversationPage struct {
	Conversations []*Conversation `json:"conversations"`
	// NextCursor names the following page; empty at the end.
	NextCursor string `json:"-"`
}

// MessagePage is a page of a branch's messages, oldest first.
type MessagePage struct {
	Messages []*Message `json:"messages"`
	// HasMore says older messages precede the page on its branch.
	HasMore bool `json:"has_more"`
}

// Message is one turn of a conversation. An assistant message's ID is the
// stream ID of the generation that writes it.
type Message struct {
	ID             string   `json:"id"`
	ConversationID string   `json:"conversation_id"`
	Role           Role     `json:"role"`
	Content        string   `json:"content"`
	Status         Status   `json:"status"`
	Error          *Failure `json:"error,omitempty"`
	// ParentID is the message before it on its branch; empty for a
	// conversation's first messages. SiblingIDs are the messages with the
	// same parent, itself included, oldest first: its versions.
	ParentID   string   `json:"parent_id"`
	SiblingIDs []string `json:"sibling_ids"`
	// ClientMessageID is the id the client gave a user message, if any.
	ClientMessageID string `json:"client_message_id,omitempty"`
	// Parts is the message as typed parts; Content is its text parts
	// joined. A user message's parts are its content as one text part.
	Parts []Part `json:"parts"`
	// Model, FinishReason (why the model stopped: "stop", "length", …) and
	// Usage are an assistant message's, once it ended; empty or nil for
	// none.
	Model        string    `json:"model,omitempty"`
	FinishReason string    `json:"finish_reason,omitempty"`
	Usage        *Usage    `json:"usage,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	// LastIndex is the index of the last chunk of a finished assistant
	// message's stream (-1: none, or not finished).
	LastIndex int64 `json:"-"`
}

// PartsOrText returns the message's parts; a message stored before parts
// were (or a user message) is its content as one text part.
func (m *Message) PartsOrText() []Part {
	if m.Parts != nil {
		return m.Parts
	}
	if m.Role == RoleUser || m.Content != "" {
		return []Part{{Type: PartText, Text: m.Content}}
	}
	return []Part{}
}

// MarshalJSON writes a message as clients see it: every message with its
// parts, parent_id (null for none) and sibling_ids; an assistant message
// with model, finish_reason and usage (null when there is none); a user
// message with the client_message_id it was sent with, if any.
func (m Message) MarshalJSON() ([]byte, error) {
	type base struct {
		ID             string    `json:"id"`
		ConversationID string    `json:"conversation_id"`
		Role           Role      `json:"role"`
		Content        string    `json:"content"`
		Status         Status    `json:"status"`
		Error          *Failure  `json:"error,omitempty"`
		Parts          []Part    `json:"parts"`
		CreatedAt      time.Time `json:"created_at"`
		ParentID       *string   `json:"parent_id"`
		SiblingIDs     []string  `json:"sibling_ids"`
	}
	var parent *string
	if m.ParentID != "" {
		parent = &m.ParentID
	}
	siblings := m.SiblingIDs
	if len(siblings) == 0 {
		siblings = []string{m.ID}
	}
	b := base{m.ID, m.ConversationID, m.Role, m.Content, m.Status, m.Error, m.PartsOrText(), m.CreatedAt, parent, siblings}
	if m.Role != RoleAssistant {
		if m.ClientMessageID == "" {
			return json.Marshal(b)
		}
		return json.Marshal(struct {
			base
			ClientMessageID string `json:"client_message_id"`
		}{b, m.ClientMessageID})
	}
	var reason, model *string
	if m.FinishReason != "" {
		reason = &m.FinishReason
	}
	if m.Model != "" {
		model = &m.Model
	}
	return json.Marshal(struct {
		base
		Model        *string `json:"model"`
		FinishReason *string `json:"finish_reason"`
		Usage        *Usage  `json:"usage"`
	}{b, model, reason, m.Usage})
}

// Failure says why a generation failed; it is shown to the user.
type Failure struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Usage is the token accounting an LLM server reported for a generation
// (summed over its model calls).
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// Add returns u plus v, with the total recomputed.
func (u Usage) Add(v Usage) Usage {
	u.PromptTokens += v.PromptTokens
	u.CompletionTokens += v.CompletionTokens
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

// Job asks a worker to generate the answer of one assistant message. The
// stream id is the assistant message's id.
type Job struct {
	StreamID       string `json:"stream_id"`
	ConversationID string `json:"conversation_id"`
	UserID         string `json:"user_id"`
	// EnqueuedAt is when the job was queued, in Unix microseconds.
	EnqueuedAt int64 `json:"enqueued_at"`
}

// Final is how a generation ended, as written to Postgres.
type Final struct {
	Content string
	Status  Status
	Failure *Failure
	Usage   *Usage
	// Parts are the answer's parts (their text parts joined are Content).
	Parts []Part
	// Model is the model that answered.
	Model string
	// FinishReason is the model's finish reason; empty for none.
	FinishReason string
	// LastIndex is the index of the stream's last chunk, -1 if none.
	LastIndex int64
}
