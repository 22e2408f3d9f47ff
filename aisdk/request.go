package aisdk

import (
	"encoding/json"
	"strings"
	"unicode/utf8"

	"github.com/chatstream/chatstream"
)

// Triggers of a chat request.
const (
	TriggerSubmit     = "submit-message"
	TriggerRegenerate = "regenerate-message"
)

// MaxChatID is the longest chat id taken.
const MaxChatID = 128

// Request is the body DefaultChatTransport posts: the chat's id, its whole
// history as the client holds it, what to do, and (for a regenerate) the
// message concerned.
type Request struct {
	ID        string      `json:"id"`
	Messages  []UIMessage `json:"messages"`
	Trigger   string      `json:"trigger"`
	MessageID string      `json:"messageId"`
}

// UIMessage is a message as the client holds it. Only the parts' type and
// text are read: the server keeps the conversation, the client's copy of
// it is not trusted.
type UIMessage struct {
	ID    string   `json:"id"`
	Role  string   `json:"role"`
	Parts []UIPart `json:"parts"`
}

// UIPart is a part of a UIMessage; fields of other part types are ignored.
type UIPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// ParseRequest reads and checks a chat request body.
func ParseRequest(body []byte) (*Request, error) {
	var r Request
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, chatstream.Errorf(chatstream.EINVALID, "The body is not a chat request: %v.", err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// Validate checks a decoded request.
func (r *Request) Validate() error {
	if err := ValidChatID(r.ID); err != nil {
		return err
	}
	switch r.Trigger {
	case TriggerSubmit, TriggerRegenerate:
		return nil
	case "":
		return chatstream.Errorf(chatstream.EINVALID, "Field \"trigger\" is required.")
	}
	return chatstream.Errorf(chatstream.EINVALID, "Field \"trigger\" must be %q or %q.", TriggerSubmit, TriggerRegenerate)
}

// ValidChatID checks a chat id: 1 to MaxChatID characters, none a control
// character.
func ValidChatID(id string) error {
	n := utf8.RuneCountInString(id)
	if n == 0 || n > MaxChatID || !utf8.ValidString(id) || strings.ContainsFunc(id, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return chatstream.Errorf(chatstream.EINVALID, "The chat id must be 1 to %d characters, none a control character.", MaxChatID)
	}
	return nil
}

// LastUserMessage returns the last user message of the request, and its
// text (its text parts joined); nil if there is none.
func (r *Request) LastUserMessage() (*UIMessage, string) {
	for i := len(r.Messages) - 1; i >= 0; i-- {
		m := &r.Messages[i]
		if m.Role != "user" {
			continue
		}
		var b strings.Builder
		for _, p := range m.Parts {
			if p.Type == "text" {
				b.WriteString(p.Text)
			}
		}
		return m, b.String()
	}
	return nil, ""
}
