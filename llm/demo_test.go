package llm_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/chatstream/chatstream/llm"
)

// fast is a demo config that never waits.
var fast = llm.DemoConfig{TokensPerSec: -1}

// slow is a demo config whose first delta would take over 15 minutes.
var slow = llm.DemoConfig{TokensPerSec: 0.001}

func userAsks(q string) llm.Request {
	return llm.Request{Messages: []llm.Message{{Role: "user", Content: q}}}
}

// demoDeltas streams req to its end and returns the deltas and the stream.
func demoDeltas(t *testing.T, d *llm.Demo, req llm.Request) ([]string, llm.Stream) {
	t.Helper()
	s := openStream(t, testContext(t), d, req)
	deltas, err := drain(s)
	if err != io.EOF {
		t.Fatalf("Recv error = %v, want io.EOF", err)
	}
	return deltas, s
}

func TestDemo_Stream(t *testing.T) {
	d := llm.NewDemo(fast)
	if got := d.Name(); got != "demo" {
		t.Errorf("Name() = %q", got)
	}
	req := userAsks("How do goroutines and channels work?")
	deltas, s := demoDeltas(t, d, req)
	text := strings.Join(deltas, "")

	if want := d.Answer(req); text != want {
		t.Errorf("joined deltas differ from Answer:\n%q\n%q", text, want)
	}
	again, _ := demoDeltas(t, d, req)
	if strings.Join(again, "\x00") != strings.Join(deltas, "\x00") {
		t.Error("the same request streamed different deltas")
	}
	if len(deltas) < 80 || len(deltas) > 200 {
		t.Errorf("%d deltas; want a natural answer of 80 to 200 words", len(deltas))
	}
	for _, want := range []string{"goroutines", "channels", "```", "**"} {
		if !strings.Contains(text, want) {
			t.Errorf("answer lacks %q:\n%s", want, text)
		}
	}
	for i, delta := range deltas {
		if strings.TrimSpace(delta) == "" || (i > 0 && strings.TrimLeft(delta, " \n\t") == delta) {
			t.Fatalf("delta %d = %q; want a word with its leading white space", i, delta)
		}
	}
	if got := s.FinishReason(); got != "stop" {
		t.Errorf("FinishReason() = %q", got)
	}
	if u, ok := s.Usage(); !ok || u.CompletionTokens != len(deltas) || u.PromptTokens <= 0 {
		t.Errorf("Usage() = %+v, %v", u, ok)
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Errorf("Recv after EOF = %v", err)
	}
}

func TestDemo_Answer(t *testing.T) {
	d := llm.NewDemo(fast)
	answers := map[string]bool{}
	for i := range 40 {
		a := d.Answer(userAsks(fmt.Sprintf("question %d", i)))
		answers[a] = true
		if n := len(strings.Fields(a)); n < 80 || n > 200 || strings.Count(a, "```") != 2 || !strings.Contains(a, "**") {
			t.Errorf("answer of %d words, want 80 to 200 with a code block and bold:\n%s", n, a)
		}
	}
	if len(answers) < 4 {
		t.Errorf("40 questions got only %d different answers", len(answers))
	}
	a, b := d.Answer(userAsks("first question")), d.Answer(userAsks("what is Redis?"))
	if !strings.Contains(b, "Redis") {
		t.Errorf("answer does not mention the question:\n%s", b)
	}
	if a == b {
		t.Error("different questions got the same answer")
	}
	// Only the last user message counts.
	req := llm.Request{Messages: []llm.Message{
		{Role: "system", Content: "be nice"},
		{Role: "user", Content: "what is Redis?"},
		{Role: "assistant", Content: "a database"},
	}}
	if got := d.Answer(req); got != b {
		t.Error("the answer depends on more than the last user message")
	}
	if got := d.Answer(llm.Request{}); got == "" {
		t.Error("no answer without messages")
	}
	if got := d.Answer(userAsks("```\n<script>")); strings.Contains(got, "<script>") || strings.Count(got, "```")%2 != 0 {
		t.Errorf("question text broke the Markdown:\n%s", got)
	}
}

func TestDemo_Stream_tokens(t *testing.T) {
	for _, n := range []int{1, 7, 500} {
		d := llm.NewDemo(llm.DemoConfig{TokensPerSec: -1, Tokens: n})
		req := userAsks("tell me about load tests")
		deltas, s := demoDeltas(t, d, req)
		if len(deltas) != n {
			t.Errorf("Tokens=%d: got %d deltas", n, len(deltas))
		}
		answer := d.Answer(req)
		if text := strings.Join(deltas, ""); !strings.HasPrefix(text, answer[:min(len(text), len(answer))]) {
			t.Errorf("Tokens=%d: text does not start like the answer", n)
		}
		if u, _ := s.Usage(); u.CompletionTokens != n || s.FinishReason() != "stop" {
			t.Errorf("Tokens=%d: usage %+v, finish %q", n, u, s.FinishReason())
		}
	}
}

func TestDemo_Stream_maxTokens(t *testing.T) {
	req := userAsks("hello")
	req.MaxTokens = 3
	deltas, s := demoDeltas(t, llm.NewDemo(fast), req)
	if len(deltas) != 3 || s.FinishReason() != "length" {
		t.Errorf("got %d deltas, finish %q; want 3, length", len(deltas), s.FinishReason())
	}
}

func TestDemo_Stream_override(t *testing.T) {
	// At the configured rate this would take hours: only the override ends it.
	d := llm.NewDemo(slow)
	req := userAsks("/demo tokens=5 rate=0\nwhat is Redis?")
	deltas, _ := demoDeltas(t, d, req)
	if len(deltas) != 5 {
		t.Errorf("got %d deltas, want 5", len(deltas))
	}
	if got, want := d.Answer(req), d.Answer(userAsks("what is Redis?")); got != want {
		t.Error("the /demo line changed the answer")
	}

	deltas, _ = demoDeltas(t, d, userAsks("/demo rate=-1\nwhat is Redis?"))
	if got, want := strings.Join(deltas, ""), d.Answer(userAsks("what is Redis?")); got != want {
		t.Errorf("rate only: got %q, want the natural answer", got)
	}
	if got := d.Answer(userAsks("/demonstrate this")); !strings.Contains(got, "demonstrate") {
		t.Error("a message merely starting with /demo was taken as an override")
	}
}

func TestDemo_Stream_cancel(t *testing.T) {
	ctx, cancel := context.WithCancel(testContext(t))
	s := openStream(t, ctx, llm.NewDemo(slow), userAsks("hi"))
	errc := recvAsync(s)
	cancel()
	if err := await(t, errc); !errors.Is(err, context.Canceled) {
		t.Fatalf("Recv error = %v, want context.Canceled", err)
	}
	if _, err := llm.NewDemo(fast).Stream(ctx, userAsks("hi")); !errors.Is(err, context.Canceled) {
		t.Errorf("Stream on a cancelled context = %v", err)
	}

	s = openStream(t, testContext(t), llm.NewDemo(fast), userAsks("hi"))
	s.Close()
	if _, err := s.Recv(); err == nil || err == io.EOF {
		t.Errorf("Recv after Close = %v, want an error", err)
	}
}

func TestDemo_Stream_concurrent(t *testing.T) {
	d := llm.NewDemo(llm.DemoConfig{TokensPerSec: 1e6, Tokens: 50})
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			s, err := d.Stream(t.Context(), userAsks(strings.Repeat("q", i%7)))
			if err != nil {
				t.Error(err)
				return
			}
			defer s.Close()
			if deltas, err := drain(s); err != io.EOF || len(deltas) != 50 {
				t.Errorf("got %d deltas, error %v", len(deltas), err)
			}
		})
	}
	wg.Wait()
}

func BenchmarkDemo_Recv(b *testing.B) {
	d := llm.NewDemo(llm.DemoConfig{TokensPerSec: -1, Tokens: b.N})
	s, err := d.Stream(context.Background(), userAsks("benchmark"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := s.Recv(); err != nil {
			b.Fatal(err)
		}
	}
}

// paragraphs returns the non-empty paragraphs of text, split on blank lines.
func paragraphs(text string) []string {
	var ps []string
	for _, p := range strings.Split(text, "\n\n") {
		if p = strings.TrimSpace(p); p != "" {
			ps = append(ps, p)
		}
	}
	return ps
}

// checkMarkdown fails t unless answer is a natural demo answer: 80 to 200
// words with one code block and bold.
func checkMarkdown(t *testing.T, q, answer string) {
	t.Helper()
	if n := len(strings.Fields(answer)); n < 80 || n > 200 || strings.Count(answer, "```") != 2 || !strings.Contains(answer, "**") {
		t.Errorf("%q: answer of %d words, want 80 to 200 with one code block and bold:\n%s", q, n, answer)
	}
}

// Each topic has its own answer, which quotes the question and uses its words.
func TestDemo_Answer_topics(t *testing.T) {
	d := llm.NewDemo(fast)
	tests := []struct {
		q    string
		want []string
	}{
		{"How does SSE streaming work?", []string{"## Streaming an answer", "```sh", "SSE streaming"}},
		{"What is Redis?", []string{"## Redis for live answers", "```lua", "Redis"}},
		{"How do goroutines and channels work?", []string{"## Goroutines and channels in Go", "```go", "goroutines and channels work"}},
		{"How do I resume a dropped stream?", []string{"## Resuming a dropped stream", "```json", "**Also on streaming:**"}},
		{"Why do my WebSocket tabs disconnect?", []string{"## WebSockets", "```js", "WebSocket tabs disconnect"}},
		{"Which Postgres database should I use?", []string{"## Postgres as the record", "```sql", "Postgres database"}},
		{"How should I test this?", []string{"## Testing a streaming system", "```go", "test this"}},
		{"What is the capital of France?", []string{"## A quick take", "```python", "capital of France"}},
	}
	bodies := map[string]string{}
	for _, tt := range tests {
		a := d.Answer(userAsks(tt.q))
		checkMarkdown(t, tt.q, a)
		for _, want := range append(tt.want, "You asked: “"+tt.q+"”") {
			if !strings.Contains(a, want) {
				t.Errorf("%q: answer lacks %q:\n%s", tt.q, want, a)
			}
		}
		// Without the quoted question and its words, the topics still differ.
		_, body, _ := strings.Cut(a, "\n\n")
		body = strings.ReplaceAll(body, strings.TrimSuffix(tt.q, "?"), "")
		if other, ok := bodies[body]; ok {
			t.Errorf("%q and %q got the same answer", tt.q, other)
		}
		bodies[body] = tt.q
	}
	// Two questions of a topic differ, at least in the quote.
	a, b := d.Answer(userAsks("What is Redis?")), d.Answer(userAsks("Is Redis a cache?"))
	if a == b || !strings.Contains(b, "## Redis for live answers") || !strings.Contains(b, "“Is Redis a cache?”") {
		t.Errorf("two Redis questions:\n%s\n\n%s", a, b)
	}
}

// The topic is the one with the most keywords of the question, matched case
// insensitively on whole words; ties go to the first listed, and a second
// match is mentioned.
func TestDemo_Answer_keywords(t *testing.T) {
	d := llm.NewDemo(fast)
	tests := []struct {
		q, heading, also string
	}{
		{"Where is this going?", "## A quick take", ""},
		{"An ongoing contest of protests", "## A quick take", ""},
		{"Is GOLANG fast?", "## Goroutines and channels in Go", ""},
		{"goroutines, please", "## Goroutines and channels in Go", ""},
		{"Tell me about pub/sub", "## Redis for live answers", ""},
		{"What are server-sent events?", "## Streaming an answer", ""},
		{"Testing, testing", "## Testing a streaming system", ""},
		{"exactly-once delivery", "## Resuming a dropped stream", ""},
		{"Go or Redis?", "## Redis for live answers", "**Also on Go:**"},
		{"stream to redis", "## Streaming an answer", "**Also on Redis:**"},
		{"Resume the stream after I reconnect", "## Resuming a dropped stream", "**Also on streaming:**"},
		{"SQL in tests and in the test suite", "## Testing a streaming system", "**Also on Postgres:**"},
	}
	for _, tt := range tests {
		a := d.Answer(userAsks(tt.q))
		if !strings.Contains(a, tt.heading) || tt.also != "" && !strings.Contains(a, tt.also) ||
			tt.also == "" && strings.Contains(a, "**Also on") {
			t.Errorf("%q: want %q and %q:\n%s", tt.q, tt.heading, tt.also, a)
		}
	}
}

// Every topic, with or without a second one, and a long question keep the
// natural answer between 80 and 200 words.
func TestDemo_Answer_length(t *testing.T) {
	d := llm.NewDemo(fast)
	keywords := []string{"", "stream", "redis", "go", "resume", "websocket", "postgres", "test"}
	for _, first := range keywords {
		for _, second := range keywords {
			q := strings.TrimSpace(first+" "+first+" "+second) + strings.Repeat(" a", 60)
			checkMarkdown(t, q, d.Answer(userAsks(q)))
		}
	}
}

// The quoted question cannot break the Markdown around it, and a long one
// is cut at a word with an ellipsis.
func TestDemo_Answer_quote(t *testing.T) {
	d := llm.NewDemo(fast)
	for _, q := range []string{"```go\nfmt.Println(1)\n```\n**bold** [link](https://x) <b>hi</b> _it_ ~~s~~ \\`", "```", "~~~\n\n\n"} {
		a := d.Answer(userAsks(q))
		checkMarkdown(t, q, a)
		first, _, _ := strings.Cut(a, "\n\n")
		if strings.ContainsAny(first, "`*[]<>_~\\\n") {
			t.Errorf("%q: the quote %q keeps Markdown", q, first)
		}
	}
	q := strings.Repeat("why does this answer stop ", 10)
	a := d.Answer(userAsks(q))
	first, _, _ := strings.Cut(a, "\n\n")
	quoted, ok := strings.CutPrefix(first, "You asked: “")
	quoted, cut := strings.CutSuffix(quoted, "…”")
	if !ok || !cut || len(quoted) > 80 || len(quoted) < 60 || !strings.HasPrefix(q, quoted+" ") {
		t.Errorf("a long question quoted as %q", first)
	}
}

// Past its natural length an answer goes on with further paragraphs, none
// repeated, to exactly the number of deltas asked.
func TestDemo_Stream_long(t *testing.T) {
	tool := []llm.Message{
		{Role: "user", Content: "what is 2+3?"},
		{Role: "assistant", ToolCalls: []llm.ToolCall{{ID: "call_a", Name: "calculator"}}},
		{Role: "tool", ToolCallID: "call_a", Content: "5"},
	}
	for _, tt := range []struct {
		name string
		cfg  int // DemoConfig.Tokens
		req  llm.Request
		n    int
	}{
		{"Redis 3000", 0, userAsks("/demo tokens=3000\nWhat is Redis pub/sub?"), 3000},
		{"fallback 10000", 0, userAsks("/demo tokens=10000\nIs this deployment healthy?"), 10000},
		{"config 10000", 10000, userAsks("How do I resume a dropped stream?"), 10000},
		{"tool 3000", 3000, llm.Request{Messages: tool}, 3000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := llm.NewDemo(llm.DemoConfig{TokensPerSec: -1, Tokens: tt.cfg})
			deltas, s := demoDeltas(t, d, tt.req)
			if len(deltas) != tt.n || s.FinishReason() != "stop" {
				t.Fatalf("%d deltas, finish %q; want %d, stop", len(deltas), s.FinishReason(), tt.n)
			}
			for i, delta := range deltas {
				if strings.TrimSpace(delta) == "" || (i > 0 && strings.TrimLeft(delta, " \n\t") == delta) {
					t.Fatalf("delta %d = %q; want a word with its leading white space", i, delta)
				}
			}
			text := strings.Join(deltas, "")
			start := d.Answer(tt.req)
			if tt.req.Messages[len(tt.req.Messages)-1].Role == "tool" {
				start = "The tool answered: **5**.\n\n" + start
			}
			if !strings.HasPrefix(text, start+"\n\n") {
				t.Errorf("the text does not start with the natural answer")
			}
			seen := map[string]int{}
			for i, p := range paragraphs(text) {
				if j, ok := seen[p]; ok {
					t.Fatalf("paragraph %d repeats paragraph %d: %q", i, j, p)
				}
				seen[p] = i
			}
			for _, want := range []string{"### More on", "**A related point on", "**Note 1 on"} {
				if !strings.Contains(text, want) {
					t.Errorf("the long answer lacks %q", want)
				}
			}
			if strings.Count(text, "```") != 2 {
				t.Errorf("%d code fences, want the natural answer's 2", strings.Count(text, "```"))
			}
			again, _ := demoDeltas(t, d, tt.req)
			if strings.Join(again, "\x00") != strings.Join(deltas, "\x00") {
				t.Error("the same request streamed different deltas")
			}
		})
	}
}

// Reasoning names the topic and, asked for more words than it has, goes on
// repeating; the answer follows it.
func TestDemo_Stream_think(t *testing.T) {
	d := llm.NewDemo(fast)
	req := userAsks("/demo think=500\nWhat is Redis?")
	s := openStream(t, testContext(t), d, req)
	all, err := drainAll(s)
	if err != io.EOF {
		t.Fatal(err)
	}
	var reasoning, text strings.Builder
	thought := 0
	for _, delta := range all {
		if delta.Reasoning != "" {
			if text.Len() > 0 {
				t.Fatal("reasoning after the answer began")
			}
			thought++
			reasoning.WriteString(delta.Reasoning)
		}
		text.WriteString(delta.Text)
	}
	if thought != 500 || !strings.Contains(reasoning.String(), "a question on Redis") {
		t.Errorf("%d reasoning deltas: %s", thought, reasoning.String())
	}
	if got, want := text.String(), d.Answer(req); got != want {
		t.Errorf("the answer after reasoning:\n%q\nwant\n%q", got, want)
	}
}
