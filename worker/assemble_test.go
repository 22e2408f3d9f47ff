package worker

import (
	"reflect"
	"strings"
	"testing"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/llm"
)

func text(s string) chatstream.Part { return chatstream.Part{Type: chatstream.PartText, Text: s} }
func reasoning(s string) chatstream.Part {
	return chatstream.Part{Type: chatstream.PartReasoning, Text: s}
}
func call(id, name, args string, approval bool) chatstream.Part {
	return chatstream.Part{Type: chatstream.PartToolCall, CallID: id, Name: name, Arguments: args, RequiresApproval: approval}
}

// The worker's mapping of the model's deltas to the parts of chunks.
func TestAssembler_DeltasToChunks(t *testing.T) {
	tc := func(id, name, args string) llm.Delta {
		return llm.Delta{ToolCall: &llm.ToolCall{ID: id, Name: name, Arguments: args}}
	}
	for _, c := range []struct {
		name     string
		coalesce bool
		toolsOff bool
		budget   int
		deltas   []llm.Delta
		// chunks are the parts appended, one per chunk, flush included.
		chunks []chatstream.Part
		full   bool
	}{
		{name: "text deltas are a chunk each",
			deltas: []llm.Delta{{Text: "Hel"}, {Text: "lo"}},
			chunks: []chatstream.Part{text("Hel"), text("lo")}},
		{name: "reasoning then text",
			deltas: []llm.Delta{{Reasoning: "think"}, {Reasoning: "ing"}, {Text: "answer"}},
			chunks: []chatstream.Part{reasoning("think"), reasoning("ing"), text("answer")}},
		{name: "a delta with both: reasoning first",
			deltas: []llm.Delta{{Reasoning: "r", Text: "t"}},
			chunks: []chatstream.Part{reasoning("r"), text("t")}},
		{name: "a tool call is one chunk, approval from its tool",
			deltas: []llm.Delta{{Text: "Let me look."}, tc("c1", "clock", "{}"), tc("c2", "save_note", `{"text":"x"}`)},
			chunks: []chatstream.Part{text("Let me look."), call("c1", "clock", "{}", false), call("c2", "save_note", `{"text":"x"}`, true)}},
		{name: "calls are dropped with tools off",
			toolsOff: true,
			deltas:   []llm.Delta{{Text: "a"}, tc("c1", "clock", "{}")},
			chunks:   []chatstream.Part{text("a")}},
		{name: "a call without a name is dropped",
			deltas: []llm.Delta{tc("c1", "", "{}")},
			chunks: nil},
		{name: "missing and repeated call ids are replaced",
			deltas: []llm.Delta{tc("", "clock", "{}"), tc("dup", "clock", "{}"), tc("dup", "clock", "{}"), tc("taken", "clock", "{}")},
			chunks: []chatstream.Part{call("gen1", "clock", "{}", false), call("dup", "clock", "{}", false),
				call("gen2", "clock", "{}", false), call("gen3", "clock", "{}", false)}},
		{name: "NUL and invalid UTF-8 are made storable everywhere",
			deltas: []llm.Delta{{Text: "a\x00b"}, {Reasoning: "\xffr"}, {Text: "\x00"}, tc("c\x00", "clo\x00ck", "{\x00}")},
			chunks: []chatstream.Part{text("ab"), reasoning("\uFFFDr"), call("c", "clock", "{}", false)}},
		{name: "coalesced while of one type",
			coalesce: true,
			deltas:   []llm.Delta{{Reasoning: "a"}, {Reasoning: "b"}, {Text: "c"}, {Text: "d"}, tc("c1", "clock", "{}"), {Text: "e"}},
			chunks:   []chatstream.Part{reasoning("ab"), text("cd"), call("c1", "clock", "{}", false), text("e")}},
		{name: "the budget cuts at a character boundary and counts reasoning",
			budget: 5,
			deltas: []llm.Delta{{Reasoning: "ab"}, {Text: "cdé"}},
			chunks: []chatstream.Part{reasoning("ab"), text("cd")}, full: true},
		{name: "the budget reached mid-delta while coalescing flushes",
			coalesce: true, budget: 3,
			deltas: []llm.Delta{{Text: "ab"}, {Text: "cd"}},
			chunks: []chatstream.Part{text("abc")}, full: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			budget := c.budget
			if budget == 0 {
				budget = 1 << 20
			}
			gen := 0
			a := &assembler{left: budget, coalesce: c.coalesce, toolsOn: !c.toolsOff,
				approval: func(name string) bool { return name == "save_note" },
				callID:   func() string { gen++; return "gen" + string(rune('0'+gen)) },
				seen:     map[string]bool{"taken": true}}
			var got []chatstream.Part
			full := false
			for _, d := range c.deltas {
				if full {
					t.Fatalf("delta %+v after the answer was full", d)
				}
				var out []chatstream.Part
				out, full = a.add(d)
				got = append(got, out...)
			}
			got = append(got, a.flush()...)
			if !reflect.DeepEqual(got, c.chunks) {
				t.Fatalf("chunks\n got  %+v\n want %+v", got, c.chunks)
			}
			if full != c.full {
				t.Fatalf("full = %v, want %v", full, c.full)
			}
		})
	}
}

// partsToMessages gives the provider its format: assistant text and calls,
// a tool message per result; no reasoning, no call without a result.
func TestPartsToMessages(t *testing.T) {
	result := func(id, out string) chatstream.Part {
		return chatstream.Part{Type: chatstream.PartToolResult, CallID: id, Name: "clock", Output: out}
	}
	parts := []chatstream.Part{
		reasoning("hmm"), text("Let me check."), call("a", "clock", "{}", false), call("b", "save_note", `{"text":"x"}`, true),
		{Type: chatstream.PartToolApproval, CallID: "b", Approved: false, Reason: "user"},
		result("a", "noon"), result("b", deniedOutput),
		reasoning("so"), text("It is noon."), call("c", "clock", "{}", false), // c has no result: the answer ended
	}
	want := []llm.Message{
		{Role: "assistant", Content: "Let me check.", ToolCalls: []llm.ToolCall{{ID: "a", Name: "clock", Arguments: "{}"}, {ID: "b", Name: "save_note", Arguments: `{"text":"x"}`}}},
		{Role: "tool", ToolCallID: "a", Content: "noon"},
		{Role: "tool", ToolCallID: "b", Content: deniedOutput},
		{Role: "assistant", Content: "It is noon."},
	}
	if got := partsToMessages(parts); !reflect.DeepEqual(got, want) {
		t.Fatalf("messages\n got  %+v\n want %+v", got, want)
	}
	if got := partsToMessages([]chatstream.Part{reasoning("only thoughts")}); len(got) != 0 {
		t.Fatalf("reasoning alone gave %+v", got)
	}
}

// The history budget counts tool arguments and outputs; a message is taken
// whole or not at all, and the last always.
func TestBuildPrompt_ToolHistoryWithinBudget(t *testing.T) {
	big := strings.Repeat("x", 100)
	old := &chatstream.Message{Role: chatstream.RoleAssistant, Parts: []chatstream.Part{
		call("a", "clock", "{}", false), {Type: chatstream.PartToolResult, CallID: "a", Name: "clock", Output: big}, text("old answer")}}
	hist := []*chatstream.Message{
		{Role: chatstream.RoleUser, Content: "q1"}, old,
		{Role: chatstream.RoleUser, Content: "q2"},
	}
	all := buildPrompt("sys", hist, 1000)
	if len(all) != 6 || all[2].ToolCalls[0].ID != "a" || all[3].Role != "tool" || all[3].Content != big || all[4].Content != "old answer" {
		t.Fatalf("prompt = %+v", all)
	}
	// 100 bytes of output do not fit in 50: the old exchange is left out.
	if got := buildPrompt("sys", hist, 50); len(got) != 2 || got[1].Content != "q2" {
		t.Fatalf("prompt = %+v", got)
	}
}

// The rounds of a log: each ended with a run of tool calls.
func TestRoundsIn(t *testing.T) {
	r := chatstream.Part{Type: chatstream.PartToolResult, CallID: "a", Name: "clock"}
	for _, c := range []struct {
		parts []chatstream.Part
		want  int
	}{
		{nil, 0},
		{[]chatstream.Part{text("a")}, 0},
		{[]chatstream.Part{call("a", "clock", "", false)}, 1},
		{[]chatstream.Part{call("a", "clock", "", false), call("b", "clock", "", false), r, r, text("x"), call("c", "clock", "", false), r}, 2},
	} {
		if got := roundsIn(c.parts); got != c.want {
			t.Errorf("roundsIn(%+v) = %d, want %d", c.parts, got, c.want)
		}
	}
}
