// Package chatstream holds the domain types of the chatstream service:
// conversations, messages, stream chunks, generation jobs and the error type
// every layer speaks. It imports the standard library only; the adapters
// (store, streaming, llm, server) import it, never each other's internals.
package chatstream

import "time"

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

// Conversation is a user's chat thread.
type Conversation struct {
	ID        string    `json:"id"`
	UserID    string    `json:"-"`
	Title     string    `json:"title"`
	CreatedAt time.Time `json:"created_at"`
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
	// FinishReason is why the model stopped ("stop", "length", …), on an
	// assistant message that ended; empty for none.
	FinishReason string    `json:"finish_reason,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	// LastIndex is the index of the last chunk of a finished assistant
	// message's stream (-1: none, or not finished).
	LastIndex int64 `json:"-"`
}

// Failure says why a generation failed; it is shown to the user.
type Failure struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Usage is the token accounting an LLM server reported for a generation.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
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
	// FinishReason is the model's finish reason; empty for none.
	FinishReason string
	// LastIndex is the index of the stream's last chunk, -1 if none.
	LastIndex int64
}
