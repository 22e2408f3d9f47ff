package llm_test

import (
	"encoding/json"
	"io"
	"reflect"
	"testing"

	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/llm/llmtest"
)

// Reasoning arrives as reasoning_content (DeepSeek, vLLM) or reasoning
// (Ollama, OpenRouter); tool calls arrive in fragments (the id and name,
// then pieces of the arguments) and are handed on whole, in order, with
// finish reason tool_calls; usage comes with a total.
func TestOpenAI_ReasoningToolCallsUsage(t *testing.T) {
	for _, key := range []string{"reasoning_content", "reasoning"} {
		t.Run(key, func(t *testing.T) {
			srv := llmtest.NewServer(t)
			calls := []llm.ToolCall{
				{ID: "call_a", Name: "clock", Arguments: `{"timezone":"UTC"}`},
				{ID: "call_b", Name: "calculator", Arguments: `{"expression":"6 * 7"}`},
			}
			srv.Enqueue(llmtest.Script{Reasoning: []string{"Let me", " think."}, ReasoningKey: key,
				Tokens: []string{"Checking."}, ToolCalls: calls, ArgumentsSplit: 3})
			p := newOpenAI(t, srv, nil)
			tools := []llm.Tool{{Name: "clock", Parameters: json.RawMessage(`{"type":"object"}`)}, {Name: "calculator"}}
			req := ask("What time is it, and 6*7?")
			req.Tools = tools
			s := openStream(t, testContext(t), p, req)
			deltas, err := drainAll(s)
			if err != io.EOF {
				t.Fatalf("Recv error = %v", err)
			}
			want := []llm.Delta{{Reasoning: "Let me"}, {Reasoning: " think."}, {Text: "Checking."},
				{ToolCall: &calls[0]}, {ToolCall: &calls[1]}}
			if !reflect.DeepEqual(deltas, want) {
				t.Fatalf("deltas %+v, want %+v", deltas, want)
			}
			if s.FinishReason() != "tool_calls" {
				t.Fatalf("finish reason %q", s.FinishReason())
			}
			if u, ok := s.Usage(); !ok || u.TotalTokens != u.PromptTokens+u.CompletionTokens || u.TotalTokens == 0 {
				t.Fatalf("usage %+v %v", u, ok)
			}
			if got := srv.Requests()[0].Tools; !reflect.DeepEqual(got, []string{"clock", "calculator"}) {
				t.Fatalf("tools offered %v", got)
			}
		})
	}
}

// The messages of a later round carry the assistant's calls and the tools'
// results, as OpenAI wants them.
func TestOpenAI_SendsToolCallsAndResults(t *testing.T) {
	srv := llmtest.NewServer(t)
	srv.Enqueue(llmtest.Script{Tokens: []string{"It is noon."}})
	p := newOpenAI(t, srv, nil)
	msgs := []llm.Message{
		{Role: "user", Content: "What time is it?"},
		{Role: "assistant", ToolCalls: []llm.ToolCall{{ID: "call_a", Name: "clock", Arguments: `{}`}}},
		{Role: "tool", ToolCallID: "call_a", Content: "12:00"},
	}
	s := openStream(t, testContext(t), p, llm.Request{Messages: msgs})
	if _, err := drain(s); err != io.EOF {
		t.Fatal(err)
	}
	if got := srv.Requests()[0].Messages; !reflect.DeepEqual(got, msgs) {
		t.Fatalf("sent %+v, want %+v", got, msgs)
	}
}

// The demo model thinks when asked (think=N), calls an offered tool when
// asked (tool=NAME) and, once given the result, answers with it.
func TestDemo_ReasoningAndTools(t *testing.T) {
	d := llm.NewDemo(fast)
	req := llm.Request{Messages: []llm.Message{{Role: "user", Content: "/demo think=5 tool=calculator\nwhat is 2+3?"}},
		Tools: []llm.Tool{{Name: "calculator"}}}
	s := openStream(t, testContext(t), d, req)
	deltas, err := drainAll(s)
	if err != io.EOF {
		t.Fatal(err)
	}
	if len(deltas) != 6 || deltas[5].ToolCall == nil || deltas[5].ToolCall.Name != "calculator" ||
		deltas[5].ToolCall.Arguments != `{"expression":"2+3"}` || s.FinishReason() != "tool_calls" {
		t.Fatalf("deltas %+v, finish %q", deltas, s.FinishReason())
	}
	for _, d := range deltas[:5] {
		if d.Reasoning == "" || d.Text != "" {
			t.Fatalf("a reasoning delta %+v", d)
		}
	}
	req.Messages = append(req.Messages, llm.Message{Role: "assistant", ToolCalls: []llm.ToolCall{*deltas[5].ToolCall}},
		llm.Message{Role: "tool", ToolCallID: deltas[5].ToolCall.ID, Content: "5"})
	s = openStream(t, testContext(t), d, req)
	text, err := drain(s)
	if err != io.EOF || len(text) == 0 || s.FinishReason() != "stop" {
		t.Fatalf("the answer after the call: %q %v %q", text, err, s.FinishReason())
	}
	// A tool not offered is not called.
	req.Messages, req.Tools = req.Messages[:1], nil
	s = openStream(t, testContext(t), d, req)
	if all, _ := drainAll(s); all[len(all)-1].ToolCall != nil {
		t.Fatal("called a tool not offered")
	}
}
