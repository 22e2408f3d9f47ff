package worker_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/llm/llmtest"
	"github.com/chatstream/chatstream/tools"
	"github.com/chatstream/chatstream/worker"
)

// toolServer is the HTTP endpoint of the tools of a test: "lookup" answers
// at once, "save" requires approval. It records the calls it gets.
type toolServer struct {
	*httptest.Server
	set *tools.Set

	mu    sync.Mutex
	calls []toolRequest
}

type toolRequest struct {
	Key  string // Idempotency-Key
	Body struct {
		CallID         string         `json:"call_id"`
		Name           string         `json:"name"`
		Arguments      map[string]any `json:"arguments"`
		ConversationID string         `json:"conversation_id"`
		MessageID      string         `json:"message_id"`
		UserID         string         `json:"user_id"`
	}
}

func newToolServer(t *testing.T) *toolServer {
	t.Helper()
	ts := &toolServer{}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req toolRequest
		req.Key = r.Header.Get("Idempotency-Key")
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &req.Body); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		ts.mu.Lock()
		ts.calls = append(ts.calls, req)
		ts.mu.Unlock()
		if req.Body.Arguments["q"] == "fail" {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"output": req.Body.Name + ": " + toString(req.Body.Arguments["q"])})
	}))
	t.Cleanup(ts.Close)
	schema := `{"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}`
	set, err := tools.Parse([]byte(`{"tools": [
		{"name": "lookup", "description": "Looks up q.", "url": "`+ts.URL+`/lookup", "parameters": `+schema+`},
		{"name": "save", "description": "Saves q.", "url": "`+ts.URL+`/save", "parameters": `+schema+`, "requires_approval": true}
	]}`), ts.Client())
	if err != nil {
		t.Fatal(err)
	}
	ts.set = set
	return ts
}

func toString(v any) string { s, _ := v.(string); return s }

// called returns the calls the tools got.
func (ts *toolServer) called() []toolRequest {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]toolRequest(nil), ts.calls...)
}

func lookup(id, q string) llm.ToolCall {
	return llm.ToolCall{ID: id, Name: "lookup", Arguments: `{"q":"` + q + `"}`}
}

func part(typ chatstream.PartType, f func(*chatstream.Part)) chatstream.Part {
	p := chatstream.Part{Type: typ}
	f(&p)
	return p
}

func textPart(s string) chatstream.Part { return chatstream.Part{Type: chatstream.PartText, Text: s} }
func callPart(c llm.ToolCall, approval bool) chatstream.Part {
	return chatstream.Part{Type: chatstream.PartToolCall, CallID: c.ID, Name: c.Name, Arguments: c.Arguments, RequiresApproval: approval}
}
func resultPart(id, name, out string, isErr bool) chatstream.Part {
	return chatstream.Part{Type: chatstream.PartToolResult, CallID: id, Name: name, Output: out, IsError: isErr}
}
func approvalPart(id string, ok bool, reason string) chatstream.Part {
	return chatstream.Part{Type: chatstream.PartToolApproval, CallID: id, Approved: ok, Reason: reason}
}

func wantParts(t *testing.T, m *chatstream.Message, want []chatstream.Part) {
	t.Helper()
	if !reflect.DeepEqual(m.Parts, want) {
		t.Fatalf("parts\n got  %+v\n want %+v", m.Parts, want)
	}
}

// A round of tool calls: reasoning and text stream, both calls are made
// over HTTP with their ids as Idempotency-Key, the model is asked again
// with the results, and the answer ends in text. Stored parts equal those
// of the log; usage is summed over both model calls; tokens are counted by
// model.
func TestPool_ToolRound(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ts := newToolServer(t)
	metrics := worker.NewMetrics(nil)
	n := e.startNode(t, nodeOpts{cfg: worker.Config{Tools: ts.set, Metrics: metrics}})
	conv := e.conversation(t)

	e.llm.Enqueue(
		llmtest.Script{Reasoning: []string{"The user", " wants facts."}, Tokens: []string{"Let me", " look."},
			ToolCalls: []llm.ToolCall{lookup("call_a", "go"), lookup("call_b", "fail")}, ArgumentsSplit: 3},
		llmtest.Script{Reasoning: []string{"Got them."}, Tokens: []string{"Go is", " a language."}},
	)
	m := e.final(t, n.send(t, conv, "tell me about go").ID)
	if m.Status != chatstream.StatusComplete || m.Content != "Let me look.Go is a language." || m.FinishReason != "stop" || m.Model != "m" {
		t.Fatalf("message = %+v", m)
	}
	wantParts(t, m, []chatstream.Part{
		{Type: chatstream.PartReasoning, Text: "The user wants facts."}, textPart("Let me look."),
		callPart(lookup("call_a", "go"), false), callPart(lookup("call_b", "fail"), false),
		resultPart("call_a", "lookup", "lookup: go", false), resultPart("call_b", "lookup", "The tool answered 500 Internal Server Error.", true),
		{Type: chatstream.PartReasoning, Text: "Got them."}, textPart("Go is a language."),
	})
	e.checkStream(t, m)

	calls := ts.called()
	if len(calls) != 2 || calls[0].Key != "call_a" || calls[1].Key != "call_b" || calls[0].Body.CallID != "call_a" ||
		calls[0].Body.MessageID != m.ID || calls[0].Body.ConversationID != conv || calls[0].Body.UserID != "alice" {
		t.Fatalf("tool calls = %+v", calls)
	}
	reqs := e.llm.Requests()
	if len(reqs) != 2 || !reflect.DeepEqual(reqs[0].Tools, []string{"lookup", "save"}) || !reflect.DeepEqual(reqs[1].Tools, reqs[0].Tools) {
		t.Fatalf("%d requests, tools %v", len(reqs), reqs)
	}
	// The second call carries the first's text and calls, and the results.
	wantTail := []llm.Message{
		{Role: "user", Content: "tell me about go"},
		{Role: "assistant", Content: "Let me look.", ToolCalls: []llm.ToolCall{lookup("call_a", "go"), lookup("call_b", "fail")}},
		{Role: "tool", ToolCallID: "call_a", Content: "lookup: go"},
		{Role: "tool", ToolCallID: "call_b", Content: "The tool answered 500 Internal Server Error."},
	}
	if got := reqs[1].Messages[1:]; !reflect.DeepEqual(got, wantTail) {
		t.Fatalf("second prompt\n got  %+v\n want %+v", got, wantTail)
	}
	// Usage: the fake counts prompt words and content deltas per call.
	// First: the system prompt (4 words) and the question (4); second: those,
	// the text (3) and the results (2 and 7).
	first, second := 4+4, 4+4+3+2+7
	want := chatstream.Usage{PromptTokens: first + second, CompletionTokens: 2 + 2}
	want.TotalTokens = want.PromptTokens + want.CompletionTokens
	if m.Usage == nil || *m.Usage != want {
		t.Fatalf("usage = %+v, want %+v", m.Usage, want)
	}
	if got := testutil.ToFloat64(metrics.Tokens.WithLabelValues("m", "completion")); got != 4 {
		t.Fatalf("completion tokens counted = %v, want 4", got)
	}
	if got := testutil.ToFloat64(metrics.ToolCalls.WithLabelValues("lookup", "error")); got != 1 {
		t.Fatalf("failed tool calls counted = %v, want 1", got)
	}

	// The next turn's prompt carries the calls and results in the
	// provider's format; reasoning is not sent back.
	e.llm.Enqueue(llmtest.Script{Tokens: []string{"Sure."}})
	m2 := e.final(t, n.send(t, conv, "and rust?").ID)
	e.checkStream(t, m2)
	reqs = e.llm.Requests()
	wantHist := append(append([]llm.Message{{Role: "system", Content: systemPrompt}}, wantTail...),
		llm.Message{Role: "assistant", Content: "Go is a language."}, llm.Message{Role: "user", Content: "and rust?"})
	if got := reqs[2].Messages; !reflect.DeepEqual(got, wantHist) {
		t.Fatalf("next turn's prompt\n got  %+v\n want %+v", got, wantHist)
	}
}

// MAX_TOOL_ROUNDS bounds the model calls; the last is made with tools off,
// and calls a model makes anyway are dropped: the answer ends in text.
func TestPool_MaxToolRounds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ts := newToolServer(t)
	n := e.startNode(t, nodeOpts{cfg: worker.Config{Tools: ts.set, MaxToolRounds: 3}})
	e.llm.Enqueue(
		llmtest.Script{NoTokens: true, ToolCalls: []llm.ToolCall{lookup("c1", "a")}},
		llmtest.Script{NoTokens: true, ToolCalls: []llm.ToolCall{lookup("c2", "b")}},
		llmtest.Script{Tokens: []string{"Done."}, ToolCalls: []llm.ToolCall{lookup("c3", "c")}},
	)
	m := e.final(t, n.send(t, e.conversation(t), "loop").ID)
	reqs := e.llm.Requests()
	if len(reqs) != 3 || len(reqs[0].Tools) != 2 || len(reqs[1].Tools) != 2 || len(reqs[2].Tools) != 0 {
		t.Fatalf("%d requests: %+v", len(reqs), reqs)
	}
	if m.Status != chatstream.StatusComplete || m.Content != "Done." || len(ts.called()) != 2 {
		t.Fatalf("message = %+v, %d tool calls", m, len(ts.called()))
	}
	wantParts(t, m, []chatstream.Part{
		callPart(lookup("c1", "a"), false), resultPart("c1", "lookup", "lookup: a", false),
		callPart(lookup("c2", "b"), false), resultPart("c2", "lookup", "lookup: b", false),
		textPart("Done."),
	})
	e.checkStream(t, m)
}
