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
