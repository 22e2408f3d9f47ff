package chatstream_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream"
)

// Each part has the fields of its type, as the contract writes them.
func TestPart_JSON(t *testing.T) {
	for _, c := range []struct {
		part chatstream.Part
		json string
	}{
		{chatstream.Part{Type: chatstream.PartText, Text: "a"}, `{"type":"text","text":"a"}`},
		{chatstream.Part{Type: chatstream.PartReasoning, Text: "r"}, `{"type":"reasoning","text":"r"}`},
		{chatstream.Part{Type: chatstream.PartToolCall, CallID: "c", Name: "n", Arguments: "{}"}, `{"type":"tool_call","call_id":"c","name":"n","arguments":"{}"}`},
		{chatstream.Part{Type: chatstream.PartToolCall, CallID: "c", Name: "n", Arguments: "{}", RequiresApproval: true},
			`{"type":"tool_call","call_id":"c","name":"n","arguments":"{}","requires_approval":true}`},
		{chatstream.Part{Type: chatstream.PartToolApproval, CallID: "c", Approved: false, Reason: "user"}, `{"type":"tool_approval","call_id":"c","approved":false,"reason":"user"}`},
		{chatstream.Part{Type: chatstream.PartToolResult, CallID: "c", Name: "n", Output: "o"}, `{"type":"tool_result","call_id":"c","name":"n","output":"o"}`},
		{chatstream.Part{Type: chatstream.PartToolResult, CallID: "c", Name: "n", Output: "o", IsError: true}, `{"type":"tool_result","call_id":"c","name":"n","output":"o","is_error":true}`},
	} {
		b, err := json.Marshal(c.part)
		if err != nil || string(b) != c.json {
			t.Errorf("%+v = %s, %v; want %s", c.part, b, err, c.json)
		}
		var back chatstream.Part
		if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, c.part) {
			t.Errorf("%s read back as %+v, %v", b, back, err)
		}
		if err := c.part.Validate(); err != nil {
			t.Errorf("%s: %v", b, err)
		}
	}
	for _, bad := range []chatstream.Part{{Type: "image"}, {Type: chatstream.PartToolCall, Name: "n"}, {Type: chatstream.PartToolResult, CallID: "c"},
		{Type: chatstream.PartToolApproval, CallID: "c", Reason: "maybe"}} {
		if bad.Validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
	if _, err := json.Marshal(chatstream.Part{Type: "image"}); err == nil {
		t.Error("a part of unknown type was written")
	}
}

// PartsBuilder joins consecutive deltas of one type in linear time.
func TestPartsBuilder(t *testing.T) {
	var b chatstream.PartsBuilder
	if b.LastType() != "" || b.Len() != 0 || len(b.Parts()) != 0 || b.Parts() == nil {
		t.Fatal("zero builder is not empty")
	}
	call := chatstream.Part{Type: chatstream.PartToolCall, CallID: "c", Name: "n"}
	for _, p := range []chatstream.Part{{Type: chatstream.PartReasoning, Text: "a"}, {Type: chatstream.PartReasoning, Text: "b"},
		{Type: chatstream.PartText, Text: "c"}, call, {Type: chatstream.PartText, Text: "d"}} {
		b.Add(p)
	}
	mid := b.Parts()
	b.Add(chatstream.Part{Type: chatstream.PartText, Text: "e"})
	want := []chatstream.Part{{Type: chatstream.PartReasoning, Text: "ab"}, {Type: chatstream.PartText, Text: "c"}, call, {Type: chatstream.PartText, Text: "de"}}
	if got := b.Parts(); !reflect.DeepEqual(got, want) || b.LastType() != chatstream.PartText || b.Len() != 4 {
		t.Fatalf("parts = %+v", got)
	}
	if mid[3].Text != "d" {
		t.Fatalf("parts taken earlier changed: %+v", mid)
	}
	if tool := b.Tool(); len(tool) != 1 || tool[0] != call {
		t.Fatalf("tool parts = %+v", tool)
	}
	// A million one-byte deltas: linear, not quadratic.
	var big chatstream.PartsBuilder
	for range 1 << 20 {
		big.Add(chatstream.Part{Type: chatstream.PartText, Text: "x"})
	}
	if p := big.Parts(); len(p) != 1 || len(p[0].Text) != 1<<20 {
		t.Fatalf("%d parts", len(p))
	}
}

// Every message carries parts; an assistant message carries model,
// finish_reason and usage, null when there are none.
func TestMessage_JSON(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	user := chatstream.Message{ID: "u", ConversationID: "c", Role: chatstream.RoleUser, Content: "hi", Status: chatstream.StatusComplete, CreatedAt: at}
	b, _ := json.Marshal(user)
	if want := `{"id":"u","conversation_id":"c","role":"user","content":"hi","status":"complete","parts":[{"type":"text","text":"hi"}],"created_at":"2026-01-02T03:04:05Z","parent_id":null,"sibling_ids":["u"]}`; string(b) != want {
		t.Fatalf("user message = %s\nwant %s", b, want)
	}
	asst := chatstream.Message{ID: "a", ConversationID: "c", Role: chatstream.RoleAssistant, Status: chatstream.StatusStreaming, CreatedAt: at}
	b, _ = json.Marshal(asst)
	if !strings.Contains(string(b), `"parts":[],"created_at":"2026-01-02T03:04:05Z","parent_id":null,"sibling_ids":["a"],"model":null,"finish_reason":null,"usage":null}`) {
		t.Fatalf("streaming assistant message = %s", b)
	}
	asst.Status, asst.Content, asst.Model, asst.FinishReason = chatstream.StatusComplete, "yes", "m", "stop"
	asst.Usage = &chatstream.Usage{PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3}
	b, _ = json.Marshal(asst)
	if !strings.Contains(string(b), `"parts":[{"type":"text","text":"yes"}],"created_at":"2026-01-02T03:04:05Z","parent_id":null,"sibling_ids":["a"],"model":"m","finish_reason":"stop","usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`) {
		t.Fatalf("assistant message = %s", b)
	}
	// A message on a branch, and a user message sent with a client id.
	edited := chatstream.Message{ID: "u2", ConversationID: "c", Role: chatstream.RoleUser, Content: "hi!", Status: chatstream.StatusComplete,
		CreatedAt: at, ParentID: "a0", SiblingIDs: []string{"u1", "u2"}, ClientMessageID: "k-1"}
	b2, _ := json.Marshal(edited)
	if !strings.HasSuffix(string(b2), `"parent_id":"a0","sibling_ids":["u1","u2"],"client_message_id":"k-1"}`) {
		t.Fatalf("edited user message = %s", b2)
	}
	var back chatstream.Message
	if err := json.Unmarshal(b, &back); err != nil || back.Model != "m" || back.Usage == nil || back.Usage.TotalTokens != 3 || len(back.Parts) != 1 {
		t.Fatalf("read back %+v, %v", back, err)
	}
}
