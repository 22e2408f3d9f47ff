package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/chatstream/chatstream"
)

// Log entries: how the chunk log stores a chunk. The frame a chunk is
// published and sent as repeats what the log's key and position already
// say (the type, the stream id, the index) and spells its part out as
// JSON; an entry keeps only the rest:
//
//	<kind><ts - t0>:<payload>
//
// kind one byte (t text, r reasoning, c tool call, a tool approval, o tool
// result), ts the chunk's time in Unix microseconds less the stream's t0
// (the first chunk's, kept in its meta), payload the text itself for text
// and reasoning, the sub-object's JSON for the others. FrameOfEntry
// rebuilds the very bytes that were published. An entry that starts with
// '{' is a whole frame (what logs held before entries).

// Entry kinds.
const (
	EntryText     = 't'
	EntryReason   = 'r'
	EntryCall     = 'c'
	EntryApproval = 'a'
	EntryResult   = 'o'
)

// EntryOf returns the kind and payload of part's entry. A text or
// reasoning part's payload is its text itself: nothing is copied for the
// chunks that matter.
func EntryOf(part chatstream.Part) (kind byte, payload string) {
	switch part.Type {
	case chatstream.PartReasoning:
		return EntryReason, part.Text
	case chatstream.PartToolCall:
		b, _ := json.Marshal(ToolCall{CallID: part.CallID, Name: part.Name, Arguments: part.Arguments, RequiresApproval: part.RequiresApproval})
		return EntryCall, string(b)
	case chatstream.PartToolApproval:
		b, _ := json.Marshal(ToolApproval{CallID: part.CallID, Approved: part.Approved, Reason: part.Reason})
		return EntryApproval, string(b)
	case chatstream.PartToolResult:
		b, _ := json.Marshal(ToolResult{CallID: part.CallID, Name: part.Name, Output: part.Output, IsError: part.IsError})
		return EntryResult, string(b)
	}
	return EntryText, part.Text
}

// AppendEntry appends the entry of part at time ts (Unix microseconds) of
// a stream whose t0 is t0.
func AppendEntry(dst []byte, part chatstream.Part, ts, t0 int64) []byte {
	kind, payload := EntryOf(part)
	dst = append(dst, kind)
	dst = strconv.AppendInt(dst, ts-t0, 10)
	dst = append(dst, ':')
	return append(dst, payload...)
}

var errBadEntry = errors.New("not a chunk log entry")

// FrameOfEntry appends the chunk frame of entry, the chunk at index of
// stream streamID whose t0 is t0: the bytes that were published.
func FrameOfEntry(dst []byte, streamID string, index int64, entry []byte, t0 int64) ([]byte, error) {
	if len(entry) > 0 && entry[0] == '{' {
		return append(dst, entry...), nil // a whole frame
	}
	if len(entry) < 3 {
		return dst, errBadEntry
	}
	colon := bytes.IndexByte(entry, ':')
	if colon < 2 {
		return dst, errBadEntry
	}
	dt, err := strconv.ParseInt(string(entry[1:colon]), 10, 64)
	if err != nil {
		return dst, errBadEntry
	}
	payload, ts := entry[colon+1:], t0+dt
	switch entry[0] {
	case EntryText:
		return AppendChunk(dst, streamID, index, string(payload), ts), nil
	case EntryReason:
		return AppendPartChunk(dst, streamID, index, chatstream.Part{Type: chatstream.PartReasoning, Text: string(payload)}, ts), nil
	}
	// The JSON kinds: the payload is the very JSON the frame held, spliced
	// back (decoding and encoding again could differ in its bytes).
	var kind chatstream.PartType
	var field string
	switch entry[0] {
	case EntryCall:
		kind, field = chatstream.PartToolCall, `"tool_call":`
	case EntryApproval:
		kind, field = chatstream.PartToolApproval, `"tool_approval":`
	case EntryResult:
		kind, field = chatstream.PartToolResult, `"tool_result":`
	default:
		return dst, errBadEntry
	}
	if len(payload) == 0 || payload[0] != '{' || !json.Valid(payload) {
		return dst, errBadEntry
	}
	dst = appendChunkHead(dst, streamID, index, kind)
	dst = append(append(dst, field...), payload...)
	return appendChunkTail(dst, ts), nil
}
