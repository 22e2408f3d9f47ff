package protocol_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
)

// Every part travels as a chunk of its kind, with an empty content beside
// it, and comes back from the frame as it went.
func TestAppendPartChunk(t *testing.T) {
	for _, c := range []struct {
		part  chatstream.Part
		frame string
	}{
		{chatstream.Part{Type: chatstream.PartText, Text: "hi"},
			`{"type":"chunk","stream_id":"s","index":3,"content":"hi","ts":9}`},
		{chatstream.Part{Type: chatstream.PartReasoning, Text: `why "so"`},
			`{"type":"chunk","stream_id":"s","index":3,"kind":"reasoning","content":"","reasoning":"why \"so\"","ts":9}`},
		{chatstream.Part{Type: chatstream.PartToolCall, CallID: "c1", Name: "save", Arguments: `{"q":"\"ts\":1,"}`, RequiresApproval: true},
			`{"type":"chunk","stream_id":"s","index":3,"kind":"tool_call","content":"","tool_call":{"call_id":"c1","name":"save","arguments":"{\"q\":\"\\\"ts\\\":1,\"}","requires_approval":true},"ts":9}`},
		{chatstream.Part{Type: chatstream.PartToolCall, CallID: "c2", Name: "clock", Arguments: `{}`},
			`{"type":"chunk","stream_id":"s","index":3,"kind":"tool_call","content":"","tool_call":{"call_id":"c2","name":"clock","arguments":"{}"},"ts":9}`},
		{chatstream.Part{Type: chatstream.PartToolApproval, CallID: "c1", Approved: false, Reason: chatstream.ApprovalExpired},
			`{"type":"chunk","stream_id":"s","index":3,"kind":"tool_approval","content":"","tool_approval":{"call_id":"c1","approved":false,"reason":"expired"},"ts":9}`},
		{chatstream.Part{Type: chatstream.PartToolResult, CallID: "c1", Name: "save", Output: `"index":7`, IsError: true},
			`{"type":"chunk","stream_id":"s","index":3,"kind":"tool_result","content":"","tool_result":{"call_id":"c1","name":"save","output":"\"index\":7","is_error":true},"ts":9}`},
	} {
		b := protocol.AppendPartChunk(nil, "s", 3, c.part, 9)
		if string(b) != c.frame {
			t.Errorf("frame of %+v\n got  %s\n want %s", c.part, b, c.frame)
			continue
		}
		var ch protocol.Chunk
		if err := json.Unmarshal(b, &ch); err != nil {
			t.Fatal(err)
		}
		if got := ch.Part(); !reflect.DeepEqual(got, c.part) {
			t.Errorf("part of %s = %+v", b, got)
		}
		if typ, idx, ok := protocol.Scan(b); !ok || typ != "chunk" || idx != 3 {
			t.Errorf("Scan(%s) = %s %d %v", b, typ, idx, ok)
		}
		if ts, ok := protocol.ChunkTS(b); !ok || ts != 9 {
			t.Errorf("ChunkTS(%s) = %d %v", b, ts, ok)
		}
	}
}

// The parts rebuilt from chunks: consecutive text (and reasoning) chunks
// form one part; their text is the chunks' contents joined.
func TestPartsOf(t *testing.T) {
	text := func(s string) chatstream.Part { return chatstream.Part{Type: chatstream.PartText, Text: s} }
	reason := func(s string) chatstream.Part { return chatstream.Part{Type: chatstream.PartReasoning, Text: s} }
	call := chatstream.Part{Type: chatstream.PartToolCall, CallID: "c", Name: "n", Arguments: "{}"}
	result := chatstream.Part{Type: chatstream.PartToolResult, CallID: "c", Name: "n", Output: "o"}
	chunks := []chatstream.Part{reason("a"), reason("b"), text("c"), text("d"), call, result, reason("e"), text("f"), text("g")}
	var frames [][]byte
	content := ""
	for i, p := range chunks {
		b := protocol.AppendPartChunk(nil, "s", int64(i), p, 1)
		frames = append(frames, b)
		var ch protocol.Chunk
		_ = json.Unmarshal(b, &ch)
		content += ch.Content
	}
	got, err := protocol.PartsOf(frames)
	if err != nil {
		t.Fatal(err)
	}
	want := []chatstream.Part{reason("ab"), text("cd"), call, result, reason("e"), text("fg")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parts\n got  %+v\n want %+v", got, want)
	}
	if content != chatstream.TextOf(got) || content != "cdfg" {
		t.Fatalf("contents joined %q, text of the parts %q", content, chatstream.TextOf(got))
	}
	if got, _ := protocol.PartsOf(nil); got == nil || len(got) != 0 {
		t.Fatalf("parts of no chunk = %#v, want empty", got)
	}
	if _, err := protocol.PartsOf([][]byte{[]byte("{bad")}); err == nil {
		t.Fatal("a frame that is not JSON was taken")
	}
	snap := protocol.SnapshotFrame("s", want, 8)
	if typ, idx, ok := protocol.Scan(snap); !ok || typ != "snapshot" || idx != 8 {
		t.Fatalf("Scan(%s) = %s %d %v", snap, typ, idx, ok)
	}
	var s protocol.Snapshot
	if err := json.Unmarshal(snap, &s); err != nil || s.Content != "cdfg" || !reflect.DeepEqual(s.Parts, want) {
		t.Fatalf("snapshot %s: %+v %v", snap, s, err)
	}
}
