package worker

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/llm"
)

// assembler turns the deltas of one model call into the parts of chunks:
// text and reasoning deltas as they come (or, coalescing, joined while they
// are of one type), each tool call as one part. It keeps the answer within
// its byte budget and makes every string storable.
type assembler struct {
	// left is the bytes of text and reasoning the answer may still take.
	left int
	// coalesce holds text and reasoning back until flush (or a delta of
	// another type); false hands each delta on at once.
	coalesce bool
	pending  chatstream.Part // held back while coalescing; Type "" for none
	// toolsOn says the model may call tools in this call; when it is off,
	// calls are dropped (a model was not offered any).
	toolsOn bool
	// approval tells whether the tool named name needs the user's approval.
	approval func(name string) bool
	// callID returns a fresh id for a call whose id is missing or taken.
	callID func() string
	// seen holds the call ids of the answer so far.
	seen map[string]bool
}

// add takes one delta. It returns the parts ready for chunks, and full when
// the answer reached its budget with them (the rest is dropped).
func (a *assembler) add(d llm.Delta) (out []chatstream.Part, full bool) {
	if d.ToolCall != nil {
		if !a.toolsOn || d.ToolCall.Name == "" {
			return nil, false
		}
		out = a.flushInto(out)
		return append(out, a.call(*d.ToolCall)), false
	}
	for _, p := range [...]chatstream.Part{{Type: chatstream.PartReasoning, Text: d.Reasoning}, {Type: chatstream.PartText, Text: d.Text}} {
		if p.Text = storable(p.Text); p.Text == "" || full {
			continue
		}
		p.Text, full = a.fit(p.Text)
		if p.Text == "" {
			continue
		}
		if !a.coalesce {
			out = append(out, p)
			continue
		}
		if a.pending.Type != "" && a.pending.Type != p.Type {
			out = a.flushInto(out)
		}
		if a.pending.Type == "" {
			a.pending = p
		} else {
			a.pending.Text += p.Text
		}
	}
	if full {
		out = a.flushInto(out)
	}
	return out, full
}

// flush returns the part held back, if any.
func (a *assembler) flush() []chatstream.Part { return a.flushInto(nil) }

func (a *assembler) flushInto(out []chatstream.Part) []chatstream.Part {
	if a.pending.Type == "" {
		return out
	}
	out = append(out, a.pending)
	a.pending = chatstream.Part{}
	return out
}

// call is the part of a complete tool call.
func (a *assembler) call(c llm.ToolCall) chatstream.Part {
	id := storable(c.ID)
	if id == "" || a.seen[id] || len(id) > maxCallID {
		// Some servers send no id, or the same one in every answer; a
		// call id names one call of the stream (and is its tool's
		// Idempotency-Key).
		id = a.callID()
	}
	if a.seen == nil {
		a.seen = map[string]bool{}
	}
	a.seen[id] = true
	name := storable(c.Name)
	return chatstream.Part{Type: chatstream.PartToolCall, CallID: id, Name: name, Arguments: storable(c.Arguments),
		RequiresApproval: a.approval != nil && a.approval(name)}
}

// maxCallID bounds a call id taken from the model.
const maxCallID = 128

// fit returns what of s the answer still takes, and whether the answer is
// full with it: an answer holds at most MaxAnswerBytes of text and
// reasoning, cut at a character boundary.
func (a *assembler) fit(s string) (string, bool) {
	if len(s) <= a.left {
		a.left -= len(s)
		return s, false
	}
	cut := a.left
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	a.left = 0
	return s[:cut], true
}

// storable is s as Postgres can store it: valid UTF-8 without U+0000, which
// text columns and jsonb refuse. A model may send either; stripped here,
// the chunk log and the stored message hold the same text.
func storable(s string) string {
	if strings.IndexByte(s, 0) < 0 && utf8.ValidString(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

// generatedCallID is the id of the call at chunk index in stream streamID,
// for a call that came without a usable one.
func generatedCallID(streamID string, index int64) string {
	return "call_" + streamID + "_" + strconv.FormatInt(index, 10)
}
