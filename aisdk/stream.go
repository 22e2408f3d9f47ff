// Package aisdk speaks the AI SDK's chat protocol (npm "ai", v7: the UI
// message stream v1 that DefaultChatTransport and useChat read): it turns
// the frames of one of our streams into UI message chunks, and reads the
// requests the transport sends. It knows nothing of HTTP or storage; the
// server maps chats onto conversations and streams.
//
// The chunk schema is the one of ai@7.0.173 (uiMessageChunkSchema in its
// dist/index.js): optional fields are left out, never null.
package aisdk

import (
	"encoding/json"
	"strconv"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
)

// Headers are the response headers of a UI message stream.
var Headers = map[string]string{
	"Content-Type":                  "text/event-stream",
	"Cache-Control":                 "no-cache",
	"Connection":                    "keep-alive",
	"X-Vercel-AI-UI-Message-Stream": "v1",
	"X-Accel-Buffering":             "no",
}

// chunk is one UI message chunk; each type uses some of the fields.
type chunk struct {
	Type            string          `json:"type"`
	ID              string          `json:"id,omitempty"`
	Delta           *string         `json:"delta,omitempty"`
	MessageID       string          `json:"messageId,omitempty"`
	MessageMetadata any             `json:"messageMetadata,omitempty"`
	FinishReason    string          `json:"finishReason,omitempty"`
	ErrorText       *string         `json:"errorText,omitempty"`
	Reason          string          `json:"reason,omitempty"`
	ToolCallID      string          `json:"toolCallId,omitempty"`
	ToolName        string          `json:"toolName,omitempty"`
	Input           json.RawMessage `json:"input,omitempty"`
	Output          json.RawMessage `json:"output,omitempty"`
	Dynamic         bool            `json:"dynamic,omitempty"`
	ApprovalID      string          `json:"approvalId,omitempty"`
	Approved        *bool           `json:"approved,omitempty"`
}

// Translator turns the frames of one stream, in order, into the UI message
// stream of its answer: start (with the answer's message id), a step,
// text, reasoning and tool parts as they come, then finish (or abort, or
// error) and [DONE].
type Translator struct {
	messageID string
	started   bool
	// open is the text or reasoning part being written ("" none), with its
	// kind; n numbers the parts.
	open, openKind string
	n              int
	// afterTool says the last part was a tool result: the model's next
	// call is a new step.
	afterTool bool
	ended     bool
}

// NewTranslator returns the translator of the stream of assistant message
// messageID.
func NewTranslator(messageID string) *Translator {
	return &Translator{messageID: messageID}
}

// Start appends the stream's opening chunks (start, start-step): what is
// sent before anything of the answer arrives.
func (t *Translator) Start(out []byte) []byte {
	if t.started {
		return out
	}
	t.started = true
	out = appendChunk(out, chunk{Type: "start", MessageID: t.messageID})
	return appendChunk(out, chunk{Type: "start-step"})
}

// Frame appends the chunks that frame f — a chunk, snapshot, done or error
// frame of the stream — makes, and reports whether the stream ended (the
// chunks then end with [DONE]). Other frames add nothing.
func (t *Translator) Frame(out, f []byte) ([]byte, bool) {
	if t.ended {
		return out, true
	}
	out = t.Start(out)
	typ, _, ok := protocol.Scan(f)
	if !ok {
		return out, false
	}
	switch typ {
	case protocol.TypeChunk:
		var c protocol.Chunk
		if json.Unmarshal(f, &c) != nil {
			return out, false
		}
		return t.part(out, c.Part()), false
	case protocol.TypeSnapshot:
		// The log expired before this reader came: the parts up to the
		// snapshot's index stand in for their chunks.
		var s protocol.Snapshot
		if json.Unmarshal(f, &s) != nil {
			return out, false
		}
		for _, p := range s.Parts {
			out = t.part(out, p)
		}
		return out, false
	case protocol.TypeDone:
		var d protocol.Done
		if json.Unmarshal(f, &d) != nil {
			return out, false
		}
		return t.done(out, d), true
	case protocol.TypeError:
		var e protocol.Error
		_ = json.Unmarshal(f, &e)
		out = t.closeOpen(out)
		msg := e.Message
		if msg == "" {
			msg = "The stream ended with an error."
		}
		out = appendChunk(out, chunk{Type: "error", ErrorText: &msg})
		t.ended = true
		return append(out, "data: [DONE]\n\n"...), true
	}
	return out, false
}

// part appends the chunks of one part of the answer.
func (t *Translator) part(out []byte, p chatstream.Part) []byte {
	if t.afterTool && p.Type != chatstream.PartToolResult && p.Type != chatstream.PartToolApproval {
		// The model's next call after tool results: a new step.
		out = t.closeOpen(out)
		out = appendChunk(out, chunk{Type: "finish-step"})
		out = appendChunk(out, chunk{Type: "start-step"})
		t.afterTool = false
	}
	switch p.Type {
	case chatstream.PartText, chatstream.PartReasoning:
		kind := "text"
		if p.Type == chatstream.PartReasoning {
			kind = "reasoning"
		}
		if p.Text == "" {
			return out
		}
		if t.openKind != kind {
			out = t.closeOpen(out)
			t.n++
			t.open, t.openKind = kind+"-"+strconv.Itoa(t.n), kind
			out = appendChunk(out, chunk{Type: kind + "-start", ID: t.open})
		}
		text := p.Text
		return appendChunk(out, chunk{Type: kind + "-delta", ID: t.open, Delta: &text})
	case chatstream.PartToolCall:
		out = t.closeOpen(out)
		out = appendChunk(out, chunk{Type: "tool-input-available", ToolCallID: p.CallID, ToolName: p.Name, Input: jsonValue(p.Arguments), Dynamic: true})
		if p.RequiresApproval {
			out = appendChunk(out, chunk{Type: "tool-approval-request", ApprovalID: p.CallID, ToolCallID: p.CallID})
		}
		return out
	case chatstream.PartToolApproval:
		out = t.closeOpen(out)
		approved := p.Approved
		return appendChunk(out, chunk{Type: "tool-approval-response", ApprovalID: p.CallID, Approved: &approved, Reason: p.Reason})
	case chatstream.PartToolResult:
		out = t.closeOpen(out)
		t.afterTool = true
		if p.IsError {
			text := p.Output
			return appendChunk(out, chunk{Type: "tool-output-error", ToolCallID: p.CallID, ErrorText: &text, Dynamic: true})
		}
		return appendChunk(out, chunk{Type: "tool-output-available", ToolCallID: p.CallID, Output: jsonValue(p.Output), Dynamic: true})
	}
	return out
}

// closeOpen ends the text or reasoning part being written.
func (t *Translator) closeOpen(out []byte) []byte {
	if t.open == "" {
		return out
	}
	out = appendChunk(out, chunk{Type: t.openKind + "-end", ID: t.open})
	t.open, t.openKind = "", ""
	return out
}

// metadata is what the finish chunk tells of the answer.
type metadata struct {
	Model string            `json:"model,omitempty"`
	Usage *chatstream.Usage `json:"usage,omitempty"`
}

// done appends the end of the stream.
func (t *Translator) done(out []byte, d protocol.Done) []byte {
	out = t.closeOpen(out)
	out = appendChunk(out, chunk{Type: "finish-step"})
	switch d.Status {
	case chatstream.StatusComplete:
		c := chunk{Type: "finish", FinishReason: finishReason(d.FinishReason)}
		if d.Usage != nil {
			c.MessageMetadata = metadata{Usage: d.Usage}
		}
		out = appendChunk(out, c)
	case chatstream.StatusCancelled:
		out = appendChunk(out, chunk{Type: "abort", Reason: "cancelled"})
	default:
		msg := "The answer failed."
		if d.Error != nil && d.Error.Message != "" {
			msg = d.Error.Message
		}
		out = appendChunk(out, chunk{Type: "error", ErrorText: &msg})
	}
	t.ended = true
	return append(out, "data: [DONE]\n\n"...)
}

// finishReason is ours as the AI SDK names it ("" leaves it out).
func finishReason(r string) string {
	switch r {
	case "stop", "length":
		return r
	case "tool_calls":
		return "tool-calls"
	case "content_filter":
		return "content-filter"
	case "":
		return "stop"
	}
	return "other"
}

// jsonValue is s as a JSON value: itself when it is JSON (tool arguments
// and outputs usually are), else a JSON string of it.
func jsonValue(s string) json.RawMessage {
	if s != "" && json.Valid([]byte(s)) {
		return json.RawMessage(s)
	}
	b, _ := json.Marshal(s)
	return b
}

func appendChunk(out []byte, c chunk) []byte {
	b, _ := json.Marshal(c)
	out = append(out, "data: "...)
	out = append(out, b...)
	return append(out, "\n\n"...)
}
