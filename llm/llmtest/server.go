// Package llmtest provides a fake OpenAI-compatible chat completions server
// for tests: it streams scripted answers in OpenAI's exact SSE format, so the
// real go-openai client path runs, and it records what it was asked.
package llmtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatstream/chatstream/llm"
)

// Script says how the server answers one request. The zero Script streams
// DefaultTokens and finishes with "stop".
type Script struct {
	// Tokens are the content deltas to send; empty means DefaultTokens().
	Tokens []string
	// Interval is the pause between two deltas.
	Interval time.Duration
	// Status, if non-zero, is answered with an OpenAI-style JSON error body
	// (or ErrorBody) instead of a stream, e.g. 429 or 500.
	Status int
	// ErrorBody, if set with Status, is sent verbatim as the error body
	// (e.g. an HTML page of a proxy) instead of the JSON error.
	ErrorBody string
	// Header holds extra response headers, e.g. Retry-After with Status 429.
	Header http.Header
	// DropAfter, if positive, hangs up the connection (hijack and close: no
	// finish reason, no [DONE], no end of the chunked body) after this many
	// deltas; at most len(Tokens).
	DropAfter int
	// StallAfter, if positive, stops sending after this many deltas and
	// blocks until the request's context ends or the server is closed, then
	// ends the body without finish reason or [DONE]; at most len(Tokens).
	StallAfter int
	// NoFinish sends [DONE] without any finish reason.
	NoFinish bool
	// FinishReason is the finish reason sent; empty means "stop".
	FinishReason string
	// KeepAlives is the number of SSE comment lines (": keep-alive") sent
	// before the first chunk, as servers do while they process a long prompt.
	KeepAlives int
	// BlockUntil, if non-nil, is waited for after the response headers went
	// out and before the first chunk: the client's Stream call has returned
	// and its first Recv blocks.
	BlockUntil <-chan struct{}
	// Reasoning are reasoning deltas sent before the tokens, under the key
	// ReasoningKey: "reasoning_content" (DeepSeek, vLLM; the default) or
	// "reasoning" (Ollama, OpenRouter).
	Reasoning    []string
	ReasoningKey string
	// ToolCalls are calls sent after the tokens, each split over deltas as
	// OpenAI and vLLM send them (the id and name first, then the arguments
	// in pieces of ArgumentsSplit bytes, default 4); with calls, the finish
	// reason defaults to "tool_calls". A call without ID gets call_<n>.
	ToolCalls      []llm.ToolCall
	ArgumentsSplit int
	// NoTokens sends no content deltas (DefaultTokens is not used).
	NoTokens bool
}

// DefaultTokens returns the deltas of a Script without Tokens.
func DefaultTokens() []string {
	return []string{"Hello", " from", " the", " fake", " model."}
}

// StreamOptions are the stream options of a request.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// RecordedRequest is a request the server received.
type RecordedRequest struct {
	Model    string
	Messages []llm.Message
	// Tools are the names of the tools offered.
	Tools               []string
	Stream              bool
	StreamOptions       *StreamOptions // nil when the request had none
	MaxTokens           int
	MaxCompletionTokens int
	Header              http.Header
	Body                []byte // the raw JSON body
}

// wireRequest is the part of a chat completions request the server reads.
type wireRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role       string `json:"role"`
		Content    string `json:"content"`
		ToolCallID string `json:"tool_call_id"`
		ToolCalls  []struct {
			ID       string `json:"id"`
			Function struct {
				Name      string `json:"name"`
				Arguments string `json:"arguments"`
			} `json:"function"`
		} `json:"tool_calls"`
	} `json:"messages"`
	Tools []struct {
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	} `json:"tools"`
	Stream              bool           `json:"stream"`
	StreamOptions       *StreamOptions `json:"stream_options"`
	MaxTokens           int            `json:"max_tokens"`
	MaxCompletionTokens int            `json:"max_completion_tokens"`
}

// Server is a fake OpenAI-compatible server. It serves
// POST /v1/chat/completions: each request takes the next Script of the
// queue, or Default when the queue is empty. A request without
// "stream": true, or whose body is not JSON, gets 400 (after taking its
// Script, unless the Script has a Status); other paths get 404. Prompt
// tokens in the usage chunk are the words of the messages, completion
// tokens the number of Tokens. It is safe for concurrent use.
type Server struct {
	// Default is the script of requests that find the queue empty. Set it
	// before the first request.
	Default Script

	srv       *httptest.Server
	done      chan struct{}  // closed by Close: releases blocked handlers
	handlers  sync.WaitGroup // running handlers, hijacked ones included
	closeOnce sync.Once

	mu       sync.Mutex
	closed   bool
	queue    []Script
	requests []RecordedRequest
	active   int
	changed  chan struct{} // closed and replaced when requests or active change
}

// NewServer starts a server that tb's Cleanup closes.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{done: make(chan struct{}), changed: make(chan struct{})}
	s.srv = httptest.NewServer(http.HandlerFunc(s.handle))
	tb.Cleanup(s.Close)
	return s
}

// URL returns the base URL for clients, including "/v1".
func (s *Server) URL() string { return s.srv.URL + "/v1" }

// Client returns an HTTP client whose idle connections Close closes.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// Enqueue appends scripts to the queue; each is used by one request, in order.
func (s *Server) Enqueue(scripts ...Script) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, scripts...)
}

// Requests returns the requests received so far, in order of arrival.
func (s *Server) Requests() []RecordedRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]RecordedRequest(nil), s.requests...)
}

// Active returns the number of streams being served.
func (s *Server) Active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active
}

// WaitRequests waits until at least n requests arrived, or ctx is done.
func (s *Server) WaitRequests(ctx context.Context, n int) error {
	return s.waitFor(ctx, func() bool { return len(s.requests) >= n })
}

// WaitActive waits until exactly n streams are being served, or ctx is
// done. WaitActive(ctx, 0) waits until the server saw every stream end.
func (s *Server) WaitActive(ctx context.Context, n int) error {
	return s.waitFor(ctx, func() bool { return s.active == n })
}

// waitFor waits until cond, called with s.mu held, is true.
func (s *Server) waitFor(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		ok, changed := cond(), s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// broadcast wakes the waiters of waitFor; s.mu must be held.
func (s *Server) broadcast() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Close releases blocked handlers, closes every connection and waits for
// the handlers to return. It is called by the test's Cleanup; calling it
// earlier simulates a server that went away.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.done)
		s.mu.Unlock()
		s.srv.Close()
		s.handlers.Wait()
	})
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, "")
		return
	}
	s.handlers.Add(1)
	s.mu.Unlock()
	defer s.handlers.Done()

	if r.Method != http.MethodPost || r.URL.Path != "/v1/chat/completions" {
		writeError(w, http.StatusNotFound, "")
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	var wr wireRequest
	decodeErr := json.Unmarshal(body, &wr)
	rec := RecordedRequest{
		Model:               wr.Model,
		Stream:              wr.Stream,
		StreamOptions:       wr.StreamOptions,
		MaxTokens:           wr.MaxTokens,
		MaxCompletionTokens: wr.MaxCompletionTokens,
		Header:              r.Header.Clone(),
		Body:                body,
	}
	for _, m := range wr.Messages {
		lm := llm.Message{Role: m.Role, Content: m.Content, ToolCallID: m.ToolCallID}
		for _, c := range m.ToolCalls {
			lm.ToolCalls = append(lm.ToolCalls, llm.ToolCall{ID: c.ID, Name: c.Function.Name, Arguments: c.Function.Arguments})
		}
		rec.Messages = append(rec.Messages, lm)
	}
	for _, t := range wr.Tools {
		rec.Tools = append(rec.Tools, t.Function.Name)
	}

	s.mu.Lock()
	sc := s.Default
	if len(s.queue) > 0 {
		sc = s.queue[0]
		s.queue = s.queue[1:]
	}
	s.requests = append(s.requests, rec)
	s.broadcast()
	s.mu.Unlock()

	for k, v := range sc.Header {
		w.Header()[k] = v
	}
	switch {
	case sc.Status != 0:
		writeError(w, sc.Status, sc.ErrorBody)
		return
	case decodeErr != nil || !wr.Stream:
		writeError(w, http.StatusBadRequest, "")
		return
	}

	s.mu.Lock()
	s.active++
	s.broadcast()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.active--
		s.broadcast()
		s.mu.Unlock()
	}()
	s.stream(w, r, sc, &rec)
}

// stream sends the SSE answer of sc to rec.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, sc Script, rec *RecordedRequest) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if rc.Flush() != nil {
		return
	}
	if sc.BlockUntil != nil {
		select {
		case <-sc.BlockUntil:
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		}
	}

	for range sc.KeepAlives {
		if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil {
			return
		}
	}
	tokens := sc.Tokens
	if len(tokens) == 0 && !sc.NoTokens {
		tokens = DefaultTokens()
	}
	usage := rec.StreamOptions != nil && rec.StreamOptions.IncludeUsage
	c := chunk{
		ID:                "chatcmpl-llmtest",
		Object:            "chat.completion.chunk",
		Created:           time.Now().Unix(),
		Model:             rec.Model,
		SystemFingerprint: "fp_llmtest",
	}
	if usage {
		c.Usage = json.RawMessage("null")
	}
	send := func(ch []choice) bool {
		c.Choices = ch
		b, err := json.Marshal(c)
		if err != nil {
			panic(err) // static types: cannot happen
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}

	empty := ""
	if !send([]choice{{Delta: delta{Role: "assistant", Content: &empty}}}) {
		return
	}
	for i := range sc.Reasoning {
		d := delta{ReasoningContent: &sc.Reasoning[i]}
		if sc.ReasoningKey == "reasoning" {
			d = delta{Reasoning: &sc.Reasoning[i]}
		}
		if !send([]choice{{Delta: d}}) {
			return
		}
	}
	for n := 0; ; n++ {
		if sc.DropAfter > 0 && n == sc.DropAfter {
			if conn, _, err := rc.Hijack(); err == nil {
				conn.Close()
			}
			return
		}
		if sc.StallAfter > 0 && n == sc.StallAfter {
			select {
			case <-r.Context().Done():
			case <-s.done:
			}
			return
		}
		if n == len(tokens) {
			break
		}
		if n > 0 && sc.Interval > 0 && !s.pause(r, sc.Interval) {
			return
		}
		if !send([]choice{{Delta: delta{Content: &tokens[n]}}}) {
			return
		}
	}
	split := sc.ArgumentsSplit
	if split <= 0 {
		split = 4
	}
	for i, call := range sc.ToolCalls {
		id := call.ID
		if id == "" {
			id = fmt.Sprintf("call_%d", i)
		}
		first := toolCallDelta{Index: i, ID: id, Type: "function"}
		first.Function.Name = call.Name
		if !send([]choice{{Delta: delta{ToolCalls: []toolCallDelta{first}}}}) {
			return
		}
		for a := call.Arguments; a != ""; {
			n := min(split, len(a))
			piece := toolCallDelta{Index: i}
			piece.Function.Arguments = a[:n]
			a = a[n:]
			if !send([]choice{{Delta: delta{ToolCalls: []toolCallDelta{piece}}}}) {
				return
			}
		}
	}
	if !sc.NoFinish {
		reason := sc.FinishReason
		if reason == "" {
			reason = "stop"
			if len(sc.ToolCalls) > 0 {
				reason = "tool_calls"
			}
		}
		if !send([]choice{{FinishReason: &reason}}) {
			return
		}
	}
	if usage {
		prompt := 0
		for _, m := range rec.Messages {
			prompt += len(strings.Fields(m.Content))
		}
		u, _ := json.Marshal(map[string]int{
			"prompt_tokens":     prompt,
			"completion_tokens": len(tokens),
			"total_tokens":      prompt + len(tokens),
		})
		c.Usage = u
		if !send([]choice{}) {
			return
		}
	}
	if _, err := io.WriteString(w, "data: [DONE]\n\n"); err == nil {
		_ = rc.Flush()
	}
}

// pause waits for d; false if the request or the server ended first.
func (s *Server) pause(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
	case <-s.done:
	}
	return false
}

// chunk is one chat.completion.chunk event.
type chunk struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	SystemFingerprint string          `json:"system_fingerprint"`
	Choices           []choice        `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"` // null on every chunk but the last with include_usage
}

type choice struct {
	Index        int       `json:"index"`
	Delta        delta     `json:"delta"`
	Logprobs     *struct{} `json:"logprobs"` // always null
	FinishReason *string   `json:"finish_reason"`
}

type delta struct {
	Role             string          `json:"role,omitempty"`
	Content          *string         `json:"content,omitempty"`
	ReasoningContent *string         `json:"reasoning_content,omitempty"`
	Reasoning        *string         `json:"reasoning,omitempty"`
	ToolCalls        []toolCallDelta `json:"tool_calls,omitempty"`
}

// toolCallDelta is one fragment of a tool call.
type toolCallDelta struct {
	Index    int    `json:"index"`
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Function struct {
		Name      string `json:"name,omitempty"`
		Arguments string `json:"arguments,omitempty"`
	} `json:"function"`
}

// writeError answers status with body, or with an OpenAI-style JSON error.
func writeError(w http.ResponseWriter, status int, body string) {
	if body != "" {
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
		return
	}
	typ, code := "invalid_request_error", any(nil)
	switch {
	case status == http.StatusTooManyRequests:
		typ, code = "requests", "rate_limit_exceeded"
	case status == http.StatusUnauthorized:
		code = "invalid_api_key"
	case status >= 500:
		typ = "server_error"
	}
	b, _ := json.Marshal(map[string]any{"error": map[string]any{
		"message": "llmtest: " + http.StatusText(status),
		"type":    typ,
		"param":   nil,
		"code":    code,
	}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
