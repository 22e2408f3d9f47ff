package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/limits"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/loadgen"
)

// The load generator's own correctness: small runs whose counts must be
// exact. No timing is asserted.
func TestLoadgen_Scenarios(t *testing.T) {
	// The load generator's users each run many generations and sockets.
	n := demoNode(t, app.Config{Workers: 32, Provider: llm.NewDemo(llm.DemoConfig{}), Limits: limits.Off()})
	ctx := context.Background()
	t.Run("Steady", func(t *testing.T) {
		rep, err := loadgen.Run(ctx, loadgen.Config{BaseURL: n.url, Scenario: loadgen.Steady,
			Streams: 6, Followers: 3, Tokens: 25, Rate: 500, Duration: 60 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Lost != 0 || rep.Duplicated != 0 || rep.SocketErrors != 0 {
			t.Fatalf("lost %d, duplicated %d, socket errors %d (%v)", rep.Lost, rep.Duplicated, rep.SocketErrors, rep.ErrorSample)
		}
		if rep.Done != 18 || rep.Chunks != 18*25 || rep.Generations != 6 || rep.TTFB.N != 6 {
			t.Fatalf("done %d, chunks %d, generations %d, ttfb samples %d; want 18, 450, 6, 6", rep.Done, rep.Chunks, rep.Generations, rep.TTFB.N)
		}
		var svg strings.Builder
		if err := rep.WriteSVG(&svg); err != nil || !strings.Contains(svg.String(), "<polyline") {
			t.Fatalf("svg: %v", err)
		}
	})
	t.Run("FanOutOverSSE", func(t *testing.T) {
		rep, err := loadgen.Run(ctx, loadgen.Config{BaseURL: n.url, Scenario: loadgen.FanOut,
			Streams: 3, Followers: 5, Tokens: 25, Rate: 500, Duration: 60 * time.Second, SSE: true})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Lost != 0 || rep.Duplicated != 0 || rep.SocketErrors != 0 || rep.Done != 15 || rep.Chunks != 15*25 {
			t.Fatalf("lost %d, duplicated %d, socket errors %d (%v), done %d, chunks %d", rep.Lost, rep.Duplicated, rep.SocketErrors, rep.ErrorSample, rep.Done, rep.Chunks)
		}
	})
	t.Run("Tools", func(t *testing.T) {
		rep, err := loadgen.Run(ctx, loadgen.Config{BaseURL: n.url, Scenario: loadgen.Tools,
			Streams: 4, Followers: 2, Tokens: 20, Think: 5, Rate: 500, Duration: 60 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Lost != 0 || rep.Duplicated != 0 || rep.SocketErrors != 0 {
			t.Fatalf("lost %d, duplicated %d, socket errors %d (%v)", rep.Lost, rep.Duplicated, rep.SocketErrors, rep.ErrorSample)
		}
		// Per answer: 5 reasoning chunks, the call, its result, 20 of text.
		if rep.Done != 8 || rep.Chunks != 8*(5+1+1+20) || rep.Generations != 4 {
			t.Fatalf("done %d, chunks %d, generations %d; want 8, %d, 4", rep.Done, rep.Chunks, rep.Generations, 8*27)
		}
	})
	t.Run("Storm", func(t *testing.T) {
		rep, err := loadgen.Run(ctx, loadgen.Config{BaseURL: n.url, Scenario: loadgen.Storm,
			Sockets: 30, Tokens: 400, Rate: 100, Duration: 60 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Lost != 0 || rep.Duplicated != 0 || rep.SocketErrors != 0 {
			t.Fatalf("lost %d, duplicated %d, socket errors %d (%v)", rep.Lost, rep.Duplicated, rep.SocketErrors, rep.ErrorSample)
		}
		if rep.CatchUp.N != 30 {
			t.Fatalf("%d sockets caught up, want 30", rep.CatchUp.N)
		}
		// The node's copy of the stream's log serves the resumes.
		if rep.ResumeReads == nil || *rep.ResumeReads > 1 {
			t.Fatalf("history reads while resuming: %v, want at most 1", rep.ResumeReads)
		}
	})
	t.Run("Churn", func(t *testing.T) {
		rep, err := loadgen.Run(ctx, loadgen.Config{BaseURL: n.url, Scenario: loadgen.Churn,
			Streams: 2, Sockets: 8, Tokens: 2000, Rate: 200, Duration: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Lost != 0 || rep.Duplicated != 0 || rep.Sockets <= 8 {
			t.Fatalf("lost %d, duplicated %d, sockets %d", rep.Lost, rep.Duplicated, rep.Sockets)
		}
	})
	t.Run("Idle", func(t *testing.T) {
		rep, err := loadgen.Run(ctx, loadgen.Config{BaseURL: n.url, Scenario: loadgen.Idle, Sockets: 50, Duration: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Sockets != 50 || rep.SocketErrors != 0 {
			t.Fatalf("opened %d sockets with %d errors", rep.Sockets, rep.SocketErrors)
		}
	})
}

func TestAsk(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 2, Provider: llm.NewDemo(llm.DemoConfig{TokensPerSec: -1})})
	var answer strings.Builder
	res, err := loadgen.Ask(context.Background(), loadgen.AskConfig{BaseURL: n.url, Question: "Is this deployment healthy?", Answer: &answer})
	if err != nil {
		t.Fatal(err)
	}
	want := llm.NewDemo(llm.DemoConfig{}).Answer(llm.Request{Messages: []llm.Message{{Role: "user", Content: "Is this deployment healthy?"}}})
	if res.Status != "complete" || answer.String() != want+"\n" || res.Chunks == 0 || res.Characters != len([]rune(want)) {
		t.Fatalf("status %s, %d chunks, %d chars; answer %q", res.Status, res.Chunks, res.Characters, answer.String())
	}
	for _, dep := range []string{"server", "redis", "postgres"} {
		if res.Ready[dep] != "ok" {
			t.Fatalf("ready = %v", res.Ready)
		}
	}
	// Reasoning, a tool call that asks for approval, its answer and result,
	// and the usage.
	answer.Reset()
	res, err = loadgen.Ask(context.Background(), loadgen.AskConfig{BaseURL: n.url, Question: "/demo think=4 tool=save_note\nRemember milk",
		Answer: &answer, Approve: func(name, args string) bool { return name == "save_note" && strings.Contains(args, "milk") }})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"thinking: ", "[tool call] save_note {\"text\":", "(asks for approval)", "[approval] approved", "[result] Saved the note", "The tool answered"} {
		if !strings.Contains(answer.String(), want) {
			t.Fatalf("answer %q lacks %q", answer.String(), want)
		}
	}
	if res.ToolCalls != 1 || res.Reasoning == 0 || res.Usage == nil || res.Usage.TotalTokens == 0 || res.FinishReason != "stop" {
		t.Fatalf("result = %+v", res)
	}
	var summary strings.Builder
	res.Print(&summary)
	if !strings.Contains(summary.String(), "tool calls 1") || !strings.Contains(summary.String(), "usage") {
		t.Fatalf("summary = %s", summary.String())
	}
	_, err = loadgen.Ask(context.Background(), loadgen.AskConfig{BaseURL: "http://127.0.0.1:1", Question: "anyone?", Timeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("ask against a closed port: %v", err)
	}
}

// A short soak: steady load with cancels, resumes and bad frames loses and
// repeats nothing, every bad frame gets its error frame, and the server's
// resources are sampled four times.
func TestLoadgen_Soak(t *testing.T) {
	n := demoNode(t, app.Config{Workers: 16, Provider: llm.NewDemo(llm.DemoConfig{}), Limits: limits.Off()})
	rep, err := loadgen.Run(context.Background(), loadgen.Config{BaseURL: n.url, Scenario: loadgen.Soak,
		Streams: 6, Tokens: 40, Rate: 400, Duration: 8 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Lost != 0 || rep.Duplicated != 0 || rep.SocketErrors != 0 {
		t.Fatalf("lost %d, duplicated %d, socket errors %d (%v)", rep.Lost, rep.Duplicated, rep.SocketErrors, rep.ErrorSample)
	}
	s := rep.Soak
	if s == nil || len(s.Samples) != 4 || s.BadFrames == 0 || s.BadAnswered != s.BadFrames || s.Cancels == 0 || s.Resumes == 0 {
		t.Fatalf("soak report %+v", s)
	}
	if after := s.Samples[3]; after.At != "after" || after.Sockets != 0 || after.Goroutines <= 0 {
		t.Fatalf("after the drain: %+v", after)
	}
}
