package aisdk

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
)

// chunks splits a UI message stream into its events' data.
func chunks(t *testing.T, stream []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for ev := range strings.SplitSeq(strings.TrimSuffix(string(stream), "\n\n"), "\n\n") {
		data, ok := strings.CutPrefix(ev, "data: ")
		if !ok || strings.Contains(data, "\n") {
			t.Fatalf("event %q is not one data line", ev)
		}
		if data == "[DONE]" {
			out = append(out, map[string]any{"type": "[DONE]"})
			continue
		}
		var c map[string]any
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("event %q: %v", ev, err)
		}
		for k, v := range c {
			if v == nil {
				t.Fatalf("event %q has %s null: optional fields must be left out", ev, k)
			}
		}
		out = append(out, c)
	}
	return out
}

func types(cs []map[string]any) string {
	var ts []string
	for _, c := range cs {
		ts = append(ts, c["type"].(string))
	}
	return strings.Join(ts, " ")
}

func TestTranslator_Parts(t *testing.T) {
	const id = "00000000-0000-4000-8000-000000000001"
	tr := NewTranslator(id)
	var out []byte
	idx := int64(0)
	add := func(p chatstream.Part) {
		var end bool
		out, end = tr.Frame(out, protocol.AppendPartChunk(nil, id, idx, p, 1))
		idx++
		if end {
			t.Fatal("a chunk ended the stream")
		}
	}
	add(chatstream.Part{Type: chatstream.PartReasoning, Text: "let me "})
	add(chatstream.Part{Type: chatstream.PartReasoning, Text: "think"})
	add(chatstream.Part{Type: chatstream.PartText, Text: "Sure: "})
	add(chatstream.Part{Type: chatstream.PartToolCall, CallID: "c1", Name: "calculator", Arguments: `{"expression":"6*7"}`, RequiresApproval: true})
	add(chatstream.Part{Type: chatstream.PartToolApproval, CallID: "c1", Approved: true, Reason: "user"})
	add(chatstream.Part{Type: chatstream.PartToolResult, CallID: "c1", Name: "calculator", Output: "42"})
	add(chatstream.Part{Type: chatstream.PartToolCall, CallID: "c2", Name: "clock", Arguments: `not json`})
	add(chatstream.Part{Type: chatstream.PartToolResult, CallID: "c2", Name: "clock", Output: "boom", IsError: true})
	add(chatstream.Part{Type: chatstream.PartText, Text: "It is 42."})
	usage := &chatstream.Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7}
	out, end := tr.Frame(out, protocol.Done{Type: protocol.TypeDone, StreamID: id, MessageID: id, Status: chatstream.StatusComplete,
		LastIndex: idx - 1, FinishReason: "stop", Usage: usage}.Frame())
	if !end {
		t.Fatal("done did not end the stream")
	}
	cs := chunks(t, out)
	want := "start start-step reasoning-start reasoning-delta reasoning-delta reasoning-end text-start text-delta text-end " +
		"tool-input-available tool-approval-request tool-approval-response tool-output-available " +
		"finish-step start-step tool-input-available tool-output-error " +
		"finish-step start-step text-start text-delta text-end finish-step finish [DONE]"
	if got := types(cs); got != want {
		t.Fatalf("chunks\n%s\nwant\n%s", got, want)
	}
	if cs[0]["messageId"] != id {
		t.Fatalf("start = %v", cs[0])
	}
	if cs[3]["id"] != cs[2]["id"] || cs[5]["id"] != cs[2]["id"] || cs[3]["delta"] != "let me " {
		t.Fatalf("reasoning chunks %v %v %v", cs[2], cs[3], cs[5])
	}
	in, _ := json.Marshal(cs[9]["input"])
	if string(in) != `{"expression":"6*7"}` || cs[9]["dynamic"] != true || cs[9]["toolName"] != "calculator" || cs[10]["approvalId"] != "c1" {
		t.Fatalf("tool call %v, approval %v", cs[9], cs[10])
	}
	if cs[12]["output"] != float64(42) || cs[15]["input"] != "not json" || cs[16]["errorText"] != "boom" {
		t.Fatalf("results %v %v %v", cs[12], cs[15], cs[16])
	}
	fin := cs[len(cs)-2]
	if fin["finishReason"] != "stop" || fin["messageMetadata"].(map[string]any)["usage"].(map[string]any)["total_tokens"] != float64(7) {
		t.Fatalf("finish = %v", fin)
	}
	// Nothing after the end.
	if more, _ := tr.Frame(nil, protocol.AppendPartChunk(nil, id, idx, chatstream.Part{Type: chatstream.PartText, Text: "x"}, 1)); len(more) != 0 {
		t.Fatalf("after the end: %q", more)
	}
}

func TestTranslator_Ends(t *testing.T) {
	const id = "00000000-0000-4000-8000-000000000001"
	for _, c := range []struct {
		name  string
		frame []byte
		want  string
	}{
		{"Cancelled", protocol.Done{Type: protocol.TypeDone, StreamID: id, Status: chatstream.StatusCancelled, LastIndex: 0}.Frame(),
			"start start-step text-start text-delta text-end finish-step abort [DONE]"},
		{"Failed", protocol.Done{Type: protocol.TypeDone, StreamID: id, Status: chatstream.StatusFailed, LastIndex: 0,
			Error: &chatstream.Failure{Code: "llm_error", Message: "the model failed"}}.Frame(),
			"start start-step text-start text-delta text-end finish-step error [DONE]"},
		{"Deleted", protocol.ErrorFrame(id, "not_found", "Stream not found."),
			"start start-step text-start text-delta text-end error [DONE]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := NewTranslator(id)
			out, _ := tr.Frame(nil, protocol.AppendPartChunk(nil, id, 0, chatstream.Part{Type: chatstream.PartText, Text: "hi"}, 1))
			out, end := tr.Frame(out, c.frame)
			if got := types(chunks(t, out)); !end || got != c.want {
				t.Fatalf("chunks %s (end %v), want %s", got, end, c.want)
			}
		})
	}
	t.Run("Snapshot", func(t *testing.T) {
		tr := NewTranslator(id)
		out, _ := tr.Frame(nil, protocol.SnapshotFrame(id, []chatstream.Part{{Type: chatstream.PartReasoning, Text: "r"}, {Type: chatstream.PartText, Text: "all of it"}}, 9))
		cs := chunks(t, out)
		if got := types(cs); got != "start start-step reasoning-start reasoning-delta reasoning-end text-start text-delta" || cs[6]["delta"] != "all of it" {
			t.Fatalf("snapshot chunks %s: %v", got, cs)
		}
	})
}

func TestParseRequest(t *testing.T) {
	r, err := ParseRequest([]byte(`{"id":"chat_1","messages":[{"id":"u1","role":"user","parts":[{"type":"file","url":"data:,"},{"type":"text","text":"hel"},{"type":"text","text":"lo"}]},
		{"id":"a1","role":"assistant","parts":[{"type":"step-start"},{"type":"dynamic-tool","toolCallId":"c","state":"output-available","input":{},"output":1}]}],"trigger":"submit-message"}`))
	if err != nil {
		t.Fatal(err)
	}
	if m, text := r.LastUserMessage(); m == nil || m.ID != "u1" || text != "hello" {
		t.Fatalf("last user message %v %q", m, text)
	}
	for _, bad := range []string{`[]`, `{"id":"","trigger":"submit-message"}`, `{"id":"` + strings.Repeat("x", 129) + `","trigger":"submit-message"}`,
		`{"id":"a\u0000b","trigger":"submit-message"}`, `{"id":"c"}`, `{"id":"c","trigger":"resume-stream"}`} {
		if _, err := ParseRequest([]byte(bad)); chatstream.ErrorCode(err) != chatstream.EINVALID {
			t.Errorf("%s: %v", bad, err)
		}
	}
	if _, err := ParseRequest([]byte(`{"id":"` + strings.Repeat("é", 128) + `","trigger":"regenerate-message"}`)); err != nil {
		t.Errorf("128 characters: %v", err)
	}
}
