// Package llm streams answers from language models. It defines the Provider
// and Stream interfaces the generation workers consume and two providers:
// OpenAI, for any server that speaks OpenAI's chat completions API (OpenAI,
// Ollama, vLLM, llama.cpp server), and Demo, a built-in offline model used when
// no API key is configured and by load tests.
//
// Errors opening a stream are *Error values with a Kind; a stream that ends
// without a finish reason gives ErrTruncated. Failure turns any of them into
// the code and human message shown to the user.
package llm

import (
	"context"
	"encoding/json"

	"github.com/chatstream/chatstream"
)

// Message is one prompt message. Role is "system", "user", "assistant" or
// "tool".
type Message struct {
	Role    string
	Content string
	// ToolCalls are the calls an assistant message made.
	ToolCalls []ToolCall
	// ToolCallID names the call a tool message answers.
	ToolCallID string
}

// ToolCall is a call a model made: its id, the tool's name and the JSON
// text of the arguments.
type ToolCall struct {
	ID, Name, Arguments string
}

// Tool is a tool offered to the model.
type Tool struct {
	Name, Description string
	// Parameters is the JSON Schema of the arguments.
	Parameters json.RawMessage
}

// Request is one generation.
type Request struct {
	Messages  []Message
	MaxTokens int // 0: provider default
	// Tools are offered to the model; none: it can call none.
	Tools []Tool
}

// Delta is one piece of an answer: text, reasoning, or a complete tool
// call (a call's fragments are put together before it is handed on).
type Delta struct {
	Text      string
	Reasoning string
	ToolCall  *ToolCall
}

// Provider starts streamed generations. Implementations are safe for
// concurrent use.
type Provider interface {
	// Stream starts a generation. Errors opening the stream that are retryable
	// (HTTP 429, 5xx, connection refused/reset) are retried inside with
	// exponential backoff and jitter a bounded number of times before
	// returning. The returned Stream must be closed.
	Stream(ctx context.Context, req Request) (Stream, error)
	// Name is the model name for logs and metrics.
	Name() string
}

// Stream yields the deltas of one generation. A Stream is used by one
// goroutine at a time; to interrupt a blocked Recv, cancel the context given
// to Provider.Stream.
type Stream interface {
	// Recv returns the next non-empty delta. It returns io.EOF (never
	// wrapped) only when the generation finished properly, that is a finish
	// reason such as "stop" or "length" arrived; a server that hangs up
	// without one gives an error wrapping ErrTruncated; a cancelled context
	// gives the context's error; other failures give an *Error.
	Recv() (Delta, error)
	// Usage is the token usage the server reported, if any. It is known
	// after Recv returned io.EOF.
	Usage() (chatstream.Usage, bool)
	// FinishReason is why the generation ended ("stop", "length",
	// "tool_calls", ...), known after Recv returned io.EOF.
	FinishReason() string
	// Close releases the stream; it may be called at any time, more than once.
	Close() error
}

// lastUser returns the content of the last user message of msgs, or "".
func lastUser(msgs []Message) string {
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == string(chatstream.RoleUser) {
			return msgs[i].Content
		}
	}
	return ""
}
