package tools

import (
	"context"
	"math"
	"strings"
	"testing"
)

func TestDemo_Tools(t *testing.T) {
	s := Demo()
	if !s.RequiresApproval("save_note") || s.RequiresApproval("clock") || s.RequiresApproval("calculator") {
		t.Fatal("only save_note asks for approval")
	}
	run := func(name, args string) Result {
		return s.Run(context.Background(), Call{CallID: "c", Name: name, Arguments: args})
	}
	for _, c := range []struct{ expr, want string }{
		{"1+2*3", "7"}, {"(1+2)*3", "9"}, {"-4/8", "-0.5"}, {"2 * (3 + 4) - 1", "13"},
	} {
		if r := run("calculator", `{"expression":"`+c.expr+`"}`); r.IsError || r.Output != c.want {
			t.Errorf("%s = %+v, want %s", c.expr, r, c.want)
		}
	}
	for _, bad := range []string{"1+", "1/0", "(1", "2x", strings.Repeat("(", 200) + "1" + strings.Repeat(")", 200)} {
		if r := run("calculator", `{"expression":"`+bad+`"}`); !r.IsError {
			t.Errorf("%s = %+v, want an error", bad, r)
		}
	}
	if r := run("calculator", `{}`); !r.IsError || !strings.Contains(r.Output, "parameters") {
		t.Errorf("no expression = %+v", r)
	}
	if r := run("clock", `{"timezone":"UTC"}`); r.IsError || !strings.HasSuffix(r.Output, "UTC") {
		t.Errorf("clock = %+v", r)
	}
	if r := run("save_note", `{"text":"milk"}`); r.IsError || r.Output != `Saved the note "milk".` {
		t.Errorf("save_note = %+v", r)
	}
}

// The calculator takes arguments a model wrote: whatever they hold, it
// answers a number or an error, never panics, and nests only so deep.
func FuzzCalculator(f *testing.F) {
	for _, seed := range []string{"1+2*3", "(1+2)*3", "-(-4)/8", "1/0", "((((1))))", "1e9999", "", "..", "9" + strings.Repeat("*9", 100)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		v, err := evaluate(expr)
		if err == nil && (math.IsNaN(v) || math.IsInf(v, 0)) {
			t.Fatalf("evaluate(%q) = %v without an error", expr, v)
		}
	})
}

// A tool call's arguments come from the model: Run answers every one with
// a result, an error result for what is not valid.
func FuzzRunArguments(f *testing.F) {
	for _, seed := range []string{`{"expression":"1+1"}`, `{}`, `[]`, `null`, `{"expression":5}`, `{"expression":"1"} x`, `{`, ""} {
		f.Add(seed)
	}
	s := Demo()
	f.Fuzz(func(t *testing.T, args string) {
		r := s.Run(context.Background(), Call{CallID: "c", Name: "calculator", Arguments: args})
		if r.Output == "" {
			t.Fatalf("Run(%q) = %+v: no output", args, r)
		}
	})
}
