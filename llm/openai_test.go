package llm_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/llm/llmtest"
	"github.com/chatstream/chatstream/protocol"
)

// newOpenAI returns a provider talking to srv with fast retries; edit
// changes the config first.
func newOpenAI(t *testing.T, srv *llmtest.Server, edit func(*llm.OpenAIConfig)) *llm.OpenAI {
	t.Helper()
	cfg := llm.OpenAIConfig{
		BaseURL:      srv.URL(),
		APIKey:       "test-key",
		Model:        "test-model",
		HTTPClient:   srv.Client(),
		IncludeUsage: true,
		RetryBase:    time.Millisecond,
		RetryMax:     2 * time.Millisecond,
	}
	if edit != nil {
		edit(&cfg)
	}
	return llm.NewOpenAI(cfg)
}

// testContext returns a context that ends with the test, or after a
// generous limit so that a bug fails the test instead of hanging it.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func ask(q string) llm.Request {
	return llm.Request{Messages: []llm.Message{
		{Role: "system", Content: "You are terse."},
		{Role: "user", Content: q},
	}}
}

// drain reads s to its first error and returns the text deltas and that
// error; a delta of another kind is an error.
func drain(s llm.Stream) ([]string, error) {
	var deltas []string
	for {
		d, err := s.Recv()
		if err != nil {
			return deltas, err
		}
		if d.Reasoning != "" || d.ToolCall != nil {
			return deltas, fmt.Errorf("a delta that is not text: %+v", d)
		}
		deltas = append(deltas, d.Text)
	}
}

// drainAll reads s to its first error and returns every delta and that error.
func drainAll(s llm.Stream) ([]llm.Delta, error) {
	var deltas []llm.Delta
	for {
		d, err := s.Recv()
		if err != nil {
			return deltas, err
		}
		deltas = append(deltas, d)
	}
}

// openStream starts a stream for req and closes it with the test.
func openStream(t *testing.T, ctx context.Context, p llm.Provider, req llm.Request) llm.Stream {
	t.Helper()
	s, err := p.Stream(ctx, req)
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// recvAsync calls Recv on another goroutine and returns its error channel
// (buffer 1: the goroutine never blocks on it and ends after Recv).
func recvAsync(s llm.Stream) <-chan error {
	errc := make(chan error, 1)
	go func() {
		_, err := s.Recv()
		errc <- err
	}()
	return errc
}

// await returns the error of errc, failing the test if Recv hangs.
func await(t *testing.T, errc <-chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Recv did not return")
		return nil
	}
}

func TestOpenAI_Stream(t *testing.T) {
	srv := llmtest.NewServer(t)
	tokens := []string{"Hello", ",", " world", "!\n\n```go\nfmt.Println()\n```"}
	srv.Enqueue(llmtest.Script{Tokens: tokens})
	p := newOpenAI(t, srv, nil)
	if got := p.Name(); got != "test-model" {
		t.Errorf("Name() = %q", got)
	}
	s := openStream(t, testContext(t), p, ask("Say hello"))

	deltas, err := drain(s)
	if err != io.EOF {
		t.Fatalf("Recv error = %v, want io.EOF", err)
	}
	if got, want := strings.Join(deltas, ""), strings.Join(tokens, ""); got != want {
		t.Errorf("joined deltas = %q, want %q", got, want)
	}
	if len(deltas) != len(tokens) {
		t.Errorf("got %d deltas, want %d", len(deltas), len(tokens))
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Errorf("Recv after EOF = %v, want io.EOF", err)
	}
	if got := s.FinishReason(); got != "stop" {
		t.Errorf("FinishReason() = %q, want stop", got)
	}
	// llmtest counts prompt tokens as words: "You are terse." + "Say hello".
	if u, ok := s.Usage(); !ok || u != (chatstream.Usage{PromptTokens: 5, CompletionTokens: len(tokens), TotalTokens: 5 + len(tokens)}) {
		t.Errorf("Usage() = %+v, %v", u, ok)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Recv(); err == nil || err == io.EOF {
		t.Errorf("Recv after Close = %v, want an error", err)
	}

	reqs := srv.Requests()
	if len(reqs) != 1 {
		t.Fatalf("server got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Model != "test-model" || !r.Stream {
		t.Errorf("model %q stream %v", r.Model, r.Stream)
	}
	if want := ask("Say hello").Messages; !reflect.DeepEqual(r.Messages, want) {
		t.Errorf("messages = %+v, want %+v", r.Messages, want)
	}
	if r.StreamOptions == nil || !r.StreamOptions.IncludeUsage {
		t.Errorf("stream_options = %+v, want include_usage", r.StreamOptions)
	}
	if got := r.Header.Get("Authorization"); got != "Bearer test-key" {
		t.Errorf("Authorization = %q", got)
	}
	if r.MaxTokens != 0 || strings.Contains(string(r.Body), "max_tokens") {
		t.Errorf("max_tokens sent without MaxTokens: %s", r.Body)
	}
}

func TestOpenAI_Stream_options(t *testing.T) {
	t.Run("no usage, no key", func(t *testing.T) {
		srv := llmtest.NewServer(t)
		p := newOpenAI(t, srv, func(c *llm.OpenAIConfig) { c.IncludeUsage, c.APIKey = false, "" })
		s := openStream(t, testContext(t), p, ask("hi"))
		if _, err := drain(s); err != io.EOF {
			t.Fatalf("Recv error = %v, want io.EOF", err)
		}
		if _, ok := s.Usage(); ok {
			t.Error("Usage() reported usage the server did not send")
		}
		r := srv.Requests()[0]
		if strings.Contains(string(r.Body), "stream_options") {
			t.Errorf("body has stream_options: %s", r.Body)
		}
		if h := r.Header.Get("Authorization"); h != "" {
			t.Errorf("Authorization = %q, want none", h)
		}
	})
	t.Run("max tokens", func(t *testing.T) {
		srv := llmtest.NewServer(t)
		p := newOpenAI(t, srv, nil)
		req := ask("hi")
		req.MaxTokens = 42
		openStream(t, testContext(t), p, req)
		if r := srv.Requests()[0]; r.MaxTokens != 42 || r.MaxCompletionTokens != 0 {
			t.Errorf("max_tokens %d, max_completion_tokens %d", r.MaxTokens, r.MaxCompletionTokens)
		}
	})
	t.Run("max tokens of a reasoning model", func(t *testing.T) {
		srv := llmtest.NewServer(t)
		p := newOpenAI(t, srv, func(c *llm.OpenAIConfig) { c.Model = "o3-mini" })
		req := ask("hi")
		req.MaxTokens = 42
		openStream(t, testContext(t), p, req)
		if r := srv.Requests()[0]; r.MaxTokens != 0 || r.MaxCompletionTokens != 42 {
			t.Errorf("max_tokens %d, max_completion_tokens %d", r.MaxTokens, r.MaxCompletionTokens)
		}
	})
	t.Run("finish reason length", func(t *testing.T) {
		srv := llmtest.NewServer(t)
		srv.Enqueue(llmtest.Script{FinishReason: "length"})
		s := openStream(t, testContext(t), newOpenAI(t, srv, nil), ask("hi"))
		if _, err := drain(s); err != io.EOF {
			t.Fatalf("Recv error = %v, want io.EOF", err)
		}
		if got := s.FinishReason(); got != "length" {
			t.Errorf("FinishReason() = %q, want length", got)
		}
	})
	t.Run("many keep-alive lines", func(t *testing.T) {
		srv := llmtest.NewServer(t)
		srv.Enqueue(llmtest.Script{KeepAlives: 1000}) // 2000 lines: go-openai's default limit is 300
		s := openStream(t, testContext(t), newOpenAI(t, srv, nil), ask("hi"))
		deltas, err := drain(s)
		if err != io.EOF || strings.Join(deltas, "") != strings.Join(llmtest.DefaultTokens(), "") {
			t.Fatalf("deltas %q, error %v", deltas, err)
		}
	})
	t.Run("no messages", func(t *testing.T) {
		srv := llmtest.NewServer(t)
		_, err := newOpenAI(t, srv, nil).Stream(testContext(t), llm.Request{})
		if e := (*llm.Error)(nil); !errors.As(err, &e) || e.Kind != llm.KindBadRequest {
			t.Errorf("error = %v, want KindBadRequest", err)
		}
		if n := len(srv.Requests()); n != 0 {
			t.Errorf("server got %d requests", n)
		}
	})
}

// retryRecorder records OnRetry calls.
type retryRecorder struct {
	mu      sync.Mutex
	retries []retryCall
}

type retryCall struct {
	attempt int
	delay   time.Duration
	err     error
}

func (r *retryRecorder) onRetry(attempt int, delay time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.retries = append(r.retries, retryCall{attempt, delay, err})
}

func (r *retryRecorder) calls() []retryCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]retryCall(nil), r.retries...)
}

func TestOpenAI_Stream_retries(t *testing.T) {
	srv := llmtest.NewServer(t)
	srv.Enqueue(llmtest.Script{Status: http.StatusTooManyRequests}, llmtest.Script{Status: http.StatusInternalServerError})
	var rec retryRecorder
	p := newOpenAI(t, srv, func(c *llm.OpenAIConfig) { c.OnRetry = rec.onRetry })
	s := openStream(t, testContext(t), p, ask("hi"))
	if _, err := drain(s); err != io.EOF {
		t.Fatalf("Recv error = %v, want io.EOF", err)
	}
	if n := len(srv.Requests()); n != 3 {
		t.Errorf("server got %d requests, want 3", n)
	}
	calls := rec.calls()
	if len(calls) != 2 {
		t.Fatalf("OnRetry called %d times, want 2", len(calls))
	}
	for i, want := range []llm.Kind{llm.KindRateLimited, llm.KindUnavailable} {
		var e *llm.Error
		if calls[i].attempt != i+1 || !errors.As(calls[i].err, &e) || e.Kind != want {
			t.Errorf("retry %d: attempt %d, error %v; want attempt %d, kind %s", i, calls[i].attempt, calls[i].err, i+1, want)
		}
		if calls[i].delay <= 0 || calls[i].delay > 2*time.Millisecond {
			t.Errorf("retry %d: delay %v outside (0, RetryMax]", i, calls[i].delay)
		}
	}
}

func TestOpenAI_Stream_rateLimitedForever(t *testing.T) {
	srv := llmtest.NewServer(t)
	srv.Default = llmtest.Script{Status: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"2"}}}
	var rec retryRecorder
	p := newOpenAI(t, srv, func(c *llm.OpenAIConfig) {
		c.MaxRetries = 2
		c.RetryMax = 10 * time.Millisecond
		c.OnRetry = rec.onRetry
	})
	s, err := p.Stream(testContext(t), ask("hi"))
	if s != nil {
		t.Error("Stream returned a stream with an error")
	}
	var e *llm.Error
	if !errors.As(err, &e) || e.Kind != llm.KindRateLimited || e.Status != http.StatusTooManyRequests || !e.Retryable() {
		t.Fatalf("error = %#v, want a retryable KindRateLimited with status 429", err)
	}
	if e.RetryAfter != 2*time.Second {
		t.Errorf("RetryAfter = %v, want 2s", e.RetryAfter)
	}
	if e.Message == "" {
		t.Error("the server's message is missing")
	}
	if n := len(srv.Requests()); n != 3 {
		t.Errorf("server got %d requests, want MaxRetries+1 = 3", n)
	}
	for _, c := range rec.calls() {
		if c.delay != 10*time.Millisecond {
			t.Errorf("attempt %d: delay %v, want Retry-After capped at RetryMax", c.attempt, c.delay)
		}
	}
	if got := llm.Failure(err).Code; got != protocol.CodeLLMRateLimited {
		t.Errorf("Failure code = %q", got)
	}
}

func TestOpenAI_Stream_errorStatus(t *testing.T) {
	tests := []struct {
		name      string
		script    llmtest.Script
		kind      llm.Kind
		retryable bool
	}{
		{"400", llmtest.Script{Status: 400}, llm.KindBadRequest, false},
		{"401", llmtest.Script{Status: 401}, llm.KindAuth, false},
		{"403", llmtest.Script{Status: 403}, llm.KindAuth, false},
		{"404", llmtest.Script{Status: 404}, llm.KindBadRequest, false},
		{"408", llmtest.Script{Status: 408}, llm.KindUnavailable, true},
		{"500", llmtest.Script{Status: 500}, llm.KindUnavailable, true},
		{"503", llmtest.Script{Status: 503}, llm.KindUnavailable, true},
		{"502 html", llmtest.Script{Status: 502, ErrorBody: "<html>Bad Gateway</html>"}, llm.KindUnavailable, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := llmtest.NewServer(t)
			srv.Default = tt.script
			p := newOpenAI(t, srv, func(c *llm.OpenAIConfig) { c.MaxRetries = 2 })
			_, err := p.Stream(testContext(t), ask("hi"))
			var e *llm.Error
			if !errors.As(err, &e) {
				t.Fatalf("error = %v, want *llm.Error", err)
			}
			if e.Kind != tt.kind || e.Status != tt.script.Status || e.Retryable() != tt.retryable {
				t.Errorf("got kind %s status %d retryable %v, want %s %d %v", e.Kind, e.Status, e.Retryable(), tt.kind, tt.script.Status, tt.retryable)
			}
			want := 1
			if tt.retryable {
				want = 3
			}
			if n := len(srv.Requests()); n != want {
				t.Errorf("server got %d requests, want %d", n, want)
			}
		})
	}
}

func TestOpenAI_Stream_connectionRefused(t *testing.T) {
	srv := llmtest.NewServer(t)
	srv.Close() // its port now refuses connections
	var rec retryRecorder
	p := newOpenAI(t, srv, func(c *llm.OpenAIConfig) { c.MaxRetries = 2; c.OnRetry = rec.onRetry })
	_, err := p.Stream(testContext(t), ask("hi"))
	var e *llm.Error
	if !errors.As(err, &e) || e.Kind != llm.KindUnavailable {
		t.Fatalf("error = %v, want KindUnavailable", err)
	}
	if n := len(rec.calls()); n != 2 {
		t.Errorf("%d retries, want 2", n)
	}
}

func TestOpenAI_Stream_cancelDuringBackoff(t *testing.T) {
	srv := llmtest.NewServer(t)
	srv.Default = llmtest.Script{Status: http.StatusServiceUnavailable}
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	p := newOpenAI(t, srv, func(c *llm.OpenAIConfig) {
		c.RetryBase, c.RetryMax = time.Hour, time.Hour
		c.OnRetry = func(int, time.Duration, error) { cancel() }
	})
	if _, err := p.Stream(ctx, ask("hi")); !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v, want context.Canceled", err)
	}
	if n := len(srv.Requests()); n != 1 {
		t.Errorf("server got %d requests, want 1", n)
	}
}

func TestOpenAI_Recv_truncated(t *testing.T) {
	tokens := []string{"one", " two", " three", " four"}
	tests := []struct {
		name   string
		script llmtest.Script
		want   int // deltas before the error
	}{
		{"dropped", llmtest.Script{Tokens: tokens, DropAfter: 2}, 2},
		{"dropped after all deltas", llmtest.Script{Tokens: tokens, DropAfter: 4}, 4},
		{"no finish reason", llmtest.Script{Tokens: tokens, NoFinish: true}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := llmtest.NewServer(t)
			srv.Enqueue(tt.script)
			s := openStream(t, testContext(t), newOpenAI(t, srv, nil), ask("hi"))
			deltas, err := drain(s)
			if !errors.Is(err, llm.ErrTruncated) {
				t.Fatalf("Recv error = %v, want ErrTruncated", err)
			}
			if errors.Is(err, io.EOF) {
				t.Error("a truncation error must not match io.EOF")
			}
			if got, want := strings.Join(deltas, ""), strings.Join(tokens[:tt.want], ""); got != want {
				t.Errorf("deltas before the error = %q, want %q", got, want)
			}
			if got := llm.Failure(err).Code; got != protocol.CodeLLMTruncated {
				t.Errorf("Failure code = %q", got)
			}
		})
	}
}

func TestOpenAI_Recv_cancel(t *testing.T) {
	tests := []struct {
		name   string
		script func(block chan struct{}) llmtest.Script
		before int // deltas to read before cancelling
	}{
		{"mid-stream", func(chan struct{}) llmtest.Script {
			return llmtest.Script{Tokens: []string{"a", "b", "c"}, Interval: time.Hour}
		}, 1},
		{"stalled", func(chan struct{}) llmtest.Script {
			return llmtest.Script{Tokens: []string{"a", "b", "c"}, StallAfter: 2}
		}, 2},
		{"before the first token", func(block chan struct{}) llmtest.Script {
			return llmtest.Script{BlockUntil: block}
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := llmtest.NewServer(t)
			block := make(chan struct{}) // never closed: the server waits for the request to end
			srv.Enqueue(tt.script(block))
			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			s := openStream(t, ctx, newOpenAI(t, srv, nil), ask("hi"))
			for i := range tt.before {
				if _, err := s.Recv(); err != nil {
					t.Fatalf("Recv %d: %v", i, err)
				}
			}
			errc := recvAsync(s)
			cancel()
			if err := await(t, errc); !errors.Is(err, context.Canceled) {
				t.Fatalf("Recv error = %v, want context.Canceled", err)
			}
			if err := srv.WaitActive(testContext(t), 0); err != nil {
				t.Errorf("the server did not see the request end: %v", err)
			}
		})
	}
}

func TestOpenAI_Recv_stallTimeout(t *testing.T) {
	srv := llmtest.NewServer(t)
	srv.Enqueue(llmtest.Script{Tokens: []string{"a", "b"}, StallAfter: 1})
	p := newOpenAI(t, srv, func(c *llm.OpenAIConfig) { c.StallTimeout = 50 * time.Millisecond })
	s := openStream(t, testContext(t), p, ask("hi"))
	deltas, err := drain(s)
	if len(deltas) != 1 {
		t.Errorf("got %d deltas before the stall, want 1", len(deltas))
	}
	var e *llm.Error
	if !errors.Is(err, llm.ErrStalled) || !errors.As(err, &e) || e.Kind != llm.KindUnavailable {
		t.Fatalf("Recv error = %v, want KindUnavailable wrapping ErrStalled", err)
	}
	if err := srv.WaitActive(testContext(t), 0); err != nil {
		t.Errorf("the server did not see the request end: %v", err)
	}
}
