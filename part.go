package chatstream

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// PartType is the kind of a part of a message.
type PartType string

// Part types.
const (
	PartText         PartType = "text"
	PartReasoning    PartType = "reasoning"
	PartToolCall     PartType = "tool_call"
	PartToolApproval PartType = "tool_approval"
	PartToolResult   PartType = "tool_result"
)

// Part is one typed piece of a message, in order: answer text, the model's
// reasoning, a tool call, the user's answer to a call that needed approval,
// or a tool's result. Which fields a part has depends on its type; see the
// contract's "Parts".
type Part struct {
	Type PartType
	// Text is the text of a text or reasoning part.
	Text string
	// CallID names the tool call of a tool_call, tool_approval or
	// tool_result part; Name is the tool's.
	CallID string
	Name   string
	// Arguments is the JSON text the model wrote for a tool_call.
	Arguments string
	// RequiresApproval says a tool_call waits for the user's approval.
	RequiresApproval bool
	// Approved and Reason ("user" or "expired") are a tool_approval's.
	Approved bool
	Reason   string
	// Output and IsError are a tool_result's.
	Output  string
	IsError bool
}

// Approval reasons.
const (
	ApprovalByUser  = "user"
	ApprovalExpired = "expired"
)

// MarshalJSON writes the fields of the part's type, as the contract shows
// them.
func (p Part) MarshalJSON() ([]byte, error) {
	switch p.Type {
	case PartText, PartReasoning:
		return json.Marshal(struct {
			Type PartType `json:"type"`
			Text string   `json:"text"`
		}{p.Type, p.Text})
	case PartToolCall:
		return json.Marshal(struct {
			Type             PartType `json:"type"`
			CallID           string   `json:"call_id"`
			Name             string   `json:"name"`
			Arguments        string   `json:"arguments"`
			RequiresApproval bool     `json:"requires_approval,omitempty"`
		}{p.Type, p.CallID, p.Name, p.Arguments, p.RequiresApproval})
	case PartToolApproval:
		return json.Marshal(struct {
			Type     PartType `json:"type"`
			CallID   string   `json:"call_id"`
			Approved bool     `json:"approved"`
			Reason   string   `json:"reason"`
		}{p.Type, p.CallID, p.Approved, p.Reason})
	case PartToolResult:
		return json.Marshal(struct {
			Type    PartType `json:"type"`
			CallID  string   `json:"call_id"`
			Name    string   `json:"name"`
			Output  string   `json:"output"`
			IsError bool     `json:"is_error,omitempty"`
		}{p.Type, p.CallID, p.Name, p.Output, p.IsError})
	}
	return nil, fmt.Errorf("part of unknown type %q", p.Type)
}

// UnmarshalJSON reads a part of any type.
func (p *Part) UnmarshalJSON(b []byte) error {
	var w struct {
		Type             PartType `json:"type"`
		Text             string   `json:"text"`
		CallID           string   `json:"call_id"`
		Name             string   `json:"name"`
		Arguments        string   `json:"arguments"`
		RequiresApproval bool     `json:"requires_approval"`
		Approved         bool     `json:"approved"`
		Reason           string   `json:"reason"`
		Output           string   `json:"output"`
		IsError          bool     `json:"is_error"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*p = Part{Type: w.Type, Text: w.Text, CallID: w.CallID, Name: w.Name, Arguments: w.Arguments,
		RequiresApproval: w.RequiresApproval, Approved: w.Approved, Reason: w.Reason, Output: w.Output, IsError: w.IsError}
	return nil
}

// Validate reports a part that breaks the schema: an unknown type, or a
// tool part without its call id and (for calls and results) tool name.
func (p Part) Validate() error {
	switch p.Type {
	case PartText, PartReasoning:
		return nil
	case PartToolCall, PartToolResult:
		if p.CallID == "" || p.Name == "" {
			return fmt.Errorf("%s part without call_id or name", p.Type)
		}
		return nil
	case PartToolApproval:
		if p.CallID == "" || (p.Reason != ApprovalByUser && p.Reason != ApprovalExpired) {
			return errors.New("tool_approval part without call_id or with an unknown reason")
		}
		return nil
	}
	return fmt.Errorf("part of unknown type %q", p.Type)
}

// PartsBuilder builds the parts of a message from its deltas, in order:
// consecutive text (or reasoning) deltas form one part, every other part
// stands alone. Its cost is linear in the deltas' length; the zero value is
// empty.
type PartsBuilder struct {
	closed []Part
	open   PartType // the type of the text or reasoning part being built; "" for none
	text   strings.Builder
}

// Add adds one delta or part.
func (b *PartsBuilder) Add(p Part) {
	if p.Type == PartText || p.Type == PartReasoning {
		if b.open != p.Type {
			b.close()
			b.open = p.Type
		}
		b.text.WriteString(p.Text)
		return
	}
	b.close()
	b.closed = append(b.closed, p)
}

func (b *PartsBuilder) close() {
	if b.open == "" {
		return
	}
	b.closed = append(b.closed, Part{Type: b.open, Text: b.text.String()})
	b.open = ""
	b.text = strings.Builder{}
}

// Parts returns the parts so far; never nil. The builder may go on.
func (b *PartsBuilder) Parts() []Part {
	out := make([]Part, len(b.closed), len(b.closed)+1)
	copy(out, b.closed)
	if b.open != "" {
		out = append(out, Part{Type: b.open, Text: b.text.String()})
	}
	return out
}

// Len returns the number of parts so far.
func (b *PartsBuilder) Len() int {
	if b.open != "" {
		return len(b.closed) + 1
	}
	return len(b.closed)
}

// LastType is the type of the last part so far; "" for none.
func (b *PartsBuilder) LastType() PartType {
	if b.open != "" {
		return b.open
	}
	if len(b.closed) == 0 {
		return ""
	}
	return b.closed[len(b.closed)-1].Type
}

// Tool returns the tool parts (calls, approvals and results) so far.
func (b *PartsBuilder) Tool() []Part {
	var out []Part
	for _, p := range b.closed {
		if p.Type != PartText && p.Type != PartReasoning {
			out = append(out, p)
		}
	}
	return out
}

// TextOf joins the text parts: a message's content.
func TextOf(parts []Part) string {
	n := 0
	for _, p := range parts {
		if p.Type == PartText {
			n += len(p.Text)
		}
	}
	b := make([]byte, 0, n)
	for _, p := range parts {
		if p.Type == PartText {
			b = append(b, p.Text...)
		}
	}
	return string(b)
}
