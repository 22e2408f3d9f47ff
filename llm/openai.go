package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/chatstream/chatstream"
)

// DefaultOpenAIBaseURL is OpenAI's own API root, used when
// OpenAIConfig.BaseURL is empty.
const DefaultOpenAIBaseURL = "https://api.openai.com/v1"

// Defaults of OpenAIConfig.
const (
	DefaultMaxRetries = 3
	DefaultRetryBase  = 250 * time.Millisecond
	DefaultRetryMax   = 5 * time.Second
)

// emptyMessagesLimit replaces go-openai's default of 300 non-data lines in a
// row (keep-alive comments, blank lines), which servers that ping while a
// long prompt is processed exceed.
const emptyMessagesLimit = 10000

// OpenAIConfig configures an OpenAI provider. The zero value of every field
// but Model is usable.
type OpenAIConfig struct {
	// BaseURL is the API root, including the version path: "/chat/completions"
	// is appended to it. Examples: "https://api.openai.com/v1" (the default
	// when empty), "http://localhost:11434/v1" (Ollama),
	// "http://localhost:8000/v1" (vLLM, llama.cpp server). A URL without the
	// "/v1" is used as given; most servers answer it with 404.
	BaseURL string
	// APIKey is sent as a Bearer token. Empty: no Authorization header, as
	// local servers expect.
	APIKey string
	// Model is the model name sent with every request.
	Model string
	// HTTPClient sends the requests; nil uses a client on
	// http.DefaultTransport. Its Timeout must be 0: it would cap the whole
	// stream. Use StallTimeout and the context instead.
	HTTPClient *http.Client
	// IncludeUsage asks the server for token usage at the end of the stream
	// (stream_options.include_usage). OpenAI, Ollama and current vLLM and
	// llama.cpp support it; some older servers reject the request, so it is
	// off unless set. The command turns it on by default.
	IncludeUsage bool
	// MaxRetries is how many times a retryable failure to open a stream is
	// retried: 0 means DefaultMaxRetries, negative means never.
	MaxRetries int
	// RetryBase is the first backoff delay, doubled on every retry, with
	// jitter; 0 means DefaultRetryBase.
	RetryBase time.Duration
	// RetryMax caps a backoff delay, including one asked for by the server's
	// Retry-After header; 0 means DefaultRetryMax.
	RetryMax time.Duration
	// StallTimeout, if positive, is the longest the server may stay silent:
	// while an attempt waits for response headers, and between two chunks of
	// a stream. Past it the attempt or stream fails with an *Error of
	// KindUnavailable wrapping ErrStalled (a stalled open is not retried).
	// Keep-alive lines do not count as data. 0 disables it.
	StallTimeout time.Duration
	// OnRetry, if set, is called before each backoff with the number of the
	// attempt that failed (1 for the first), the delay before the next and
	// the error; use it to log or count retries. It must not block.
	OnRetry func(attempt int, delay time.Duration, err error)
}

// OpenAI is a Provider for any server that speaks OpenAI's streaming chat
// completions API. It is safe for concurrent use.
type OpenAI struct {
	cfg    OpenAIConfig
	client *openai.Client
}

var _ Provider = (*OpenAI)(nil)

// NewOpenAI returns a provider for cfg, with defaults filled in.
func NewOpenAI(cfg OpenAIConfig) *OpenAI {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultOpenAIBaseURL
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	switch {
	case cfg.MaxRetries == 0:
		cfg.MaxRetries = DefaultMaxRetries
	case cfg.MaxRetries < 0:
		cfg.MaxRetries = 0
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = DefaultRetryBase
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if cfg.RetryMax < cfg.RetryBase {
		cfg.RetryMax = cfg.RetryBase
	}
	oc := openai.DefaultConfig(cfg.APIKey)
	oc.BaseURL = cfg.BaseURL
	oc.HTTPClient = retryAfterDoer{cfg.HTTPClient}
	oc.EmptyMessagesLimit = emptyMessagesLimit
	return &OpenAI{cfg: cfg, client: openai.NewClientWithConfig(oc)}
}

// Name returns the model name.
func (p *OpenAI) Name() string { return p.cfg.Model }

// Stream opens a streamed chat completion, retrying retryable failures (429,
// 5xx, 408, network errors) up to MaxRetries times with exponential backoff
// and jitter. It returns an *Error, or the context's error once ctx is done.
func (p *OpenAI) Stream(ctx context.Context, req Request) (Stream, error) {
	if len(req.Messages) == 0 {
		return nil, &Error{Kind: KindBadRequest, Message: "no messages"}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancelCause(ctx)
	s := &openaiStream{parent: ctx, ctx: sctx, cancel: cancel, model: p.cfg.Model}
	if p.cfg.StallTimeout > 0 {
		s.stall = &stallTimer{d: p.cfg.StallTimeout, t: time.AfterFunc(p.cfg.StallTimeout, func() { cancel(ErrStalled) })}
	}
	st, err := p.open(s, p.request(req))
	if err != nil {
		s.stall.stop()
		cancel(nil)
		return nil, err
	}
	s.st = st
	s.stall.reset()
	return s, nil
}

// request translates req for go-openai.
func (p *OpenAI) request(req Request) openai.ChatCompletionRequest {
	msgs := make([]openai.ChatCompletionMessage, len(req.Messages))
	for i, m := range req.Messages {
		msgs[i] = openai.ChatCompletionMessage{Role: m.Role, Content: m.Content, ToolCallID: m.ToolCallID}
		for _, c := range m.ToolCalls {
			msgs[i].ToolCalls = append(msgs[i].ToolCalls, openai.ToolCall{ID: c.ID, Type: openai.ToolTypeFunction,
				Function: openai.FunctionCall{Name: c.Name, Arguments: c.Arguments}})
		}
	}
	creq := openai.ChatCompletionRequest{
		Model:     p.cfg.Model,
		Messages:  msgs,
		Stream:    true,
		MaxTokens: req.MaxTokens,
	}
	for _, t := range req.Tools {
		creq.Tools = append(creq.Tools, openai.Tool{Type: openai.ToolTypeFunction, Function: &openai.FunctionDefinition{
			Name: t.Name, Description: t.Description, Parameters: t.Parameters}})
	}
	if p.cfg.IncludeUsage {
		creq.StreamOptions = &openai.StreamOptions{IncludeUsage: true}
	}
	// Reasoning models (o1, gpt-5, ...) refuse max_tokens; go-openai knows which.
	if req.MaxTokens > 0 && errors.Is(openai.NewReasoningValidator().Validate(creq), openai.ErrReasoningModelMaxTokensDeprecated) {
		creq.MaxTokens, creq.MaxCompletionTokens = 0, req.MaxTokens
	}
	return creq
}

// open sends creq until it succeeds, fails for good or runs out of retries.
func (p *OpenAI) open(s *openaiStream, creq openai.ChatCompletionRequest) (*openai.ChatCompletionStream, error) {
	for attempt := 1; ; attempt++ {
		var retryAfter time.Duration
		actx := context.WithValue(s.ctx, retryAfterKey{}, &retryAfter)
		s.stall.reset()
		st, err := p.client.CreateChatCompletionStream(actx, creq)
		s.stall.stop()
		if err == nil {
			return st, nil
		}
		if cerr := s.ctxErr(); cerr != nil {
			return nil, cerr
		}
		e := openaiError(err)
		e.RetryAfter = retryAfter
		if !e.Retryable() || attempt > p.cfg.MaxRetries {
			return nil, e
		}
		delay := backoff(attempt, p.cfg.RetryBase, p.cfg.RetryMax, retryAfter)
		if p.cfg.OnRetry != nil {
			p.cfg.OnRetry(attempt, delay, e)
		}
		t := time.NewTimer(delay)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return nil, s.ctxErr()
		case <-t.C:
		}
	}
}

// backoff returns the delay after the given failed attempt (1-based): base
// doubled per attempt with equal jitter, at least retryAfter, at most limit.
func backoff(attempt int, base, limit, retryAfter time.Duration) time.Duration {
	d := base
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	d = d/2 + rand.N(d/2+1)
	return min(max(d, retryAfter), limit)
}

// retryAfterKey is the context key under which open passes a
// *time.Duration for retryAfterDoer to fill.
type retryAfterKey struct{}

// retryAfterDoer reads the Retry-After of 429 and 503 answers, which
// go-openai's errors do not carry, into the request context's
// *time.Duration. go-openai calls Do synchronously within the attempt.
type retryAfterDoer struct{ c *http.Client }

// Do sends req.
func (d retryAfterDoer) Do(req *http.Request) (*http.Response, error) {
	resp, err := d.c.Do(req)
	if err == nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if p, ok := req.Context().Value(retryAfterKey{}).(*time.Duration); ok {
			*p = retryAfter(resp.Header, time.Now())
		}
	}
	if err == nil && resp.StatusCode == http.StatusOK {
		resp.Body = reasoningKeys(resp.Body)
	}
	return resp, err
}

// retryAfter parses retry-after-ms (OpenAI) or Retry-After (seconds or an
// HTTP date); 0 if absent or invalid.
func retryAfter(h http.Header, now time.Time) time.Duration {
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 && ms < 1e9 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s > 0 && s < 1e6 {
			return time.Duration(s) * time.Second
		}
		return 0
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// openaiError classifies an error of go-openai.
func openaiError(err error) *Error {
	var apiErr *openai.APIError
	var reqErr *openai.RequestError
	var netErr net.Error
	var opErr *net.OpError
	switch {
	case errors.As(err, &apiErr):
		status := apiErr.HTTPStatusCode
		if code, ok := apiErr.Code.(int); ok && status == 0 && code >= 400 && code < 600 {
			status = code // an error event inside a stream, as vLLM sends
		}
		kind := KindStream
		if status != 0 {
			kind = statusKind(status)
		}
		return &Error{Kind: kind, Status: status, Message: apiErr.Message, Err: err}
	case errors.As(err, &reqErr):
		return &Error{Kind: statusKind(reqErr.HTTPStatusCode), Status: reqErr.HTTPStatusCode, Err: err}
	case errors.As(err, &opErr),
		errors.As(err, &netErr) && netErr.Timeout(),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Kind: KindUnavailable, Err: err}
	case errors.Is(err, openai.ErrTooManyEmptyStreamMessages):
		return &Error{Kind: KindStream, Message: "too many non-data lines", Err: err}
	}
	return &Error{Kind: KindOther, Err: err}
}

// statusKind classifies an HTTP status of a failed request.
func statusKind(status int) Kind {
	switch {
	case status == http.StatusTooManyRequests:
		return KindRateLimited
	case status == http.StatusUnauthorized, status == http.StatusForbidden:
		return KindAuth
	case status == http.StatusRequestTimeout, status >= 500:
		return KindUnavailable
	case status >= 400:
		return KindBadRequest
	}
	return KindOther
}

// stallTimer cancels a stream's context after a silence; a nil *stallTimer
// does nothing.
type stallTimer struct {
	t *time.Timer // an AfterFunc timer; it owns no goroutine until it fires
	d time.Duration
}

func (s *stallTimer) reset() {
	if s != nil {
		s.t.Reset(s.d)
	}
}

func (s *stallTimer) stop() {
	if s != nil {
		s.t.Stop()
	}
}

// errStreamClosed is returned by Recv after Close.
var errStreamClosed = errors.New("llm: stream closed")

// openaiStream is the Stream of an OpenAI provider.
type openaiStream struct {
	parent context.Context         // the caller's context
	ctx    context.Context         // parent's child, cancelled by Close or the stall timer
	cancel context.CancelCauseFunc // cancels ctx
	stall  *stallTimer             // nil without StallTimeout
	st     *openai.ChatCompletionStream
	model  string

	deltas int    // non-empty deltas returned
	finish string // finish reason, once one arrived
	// calls are the tool calls being put together from their fragments, by
	// the index the server gives them; ready those complete, to hand on.
	calls    []*ToolCall
	ready    []ToolCall
	usage    chatstream.Usage
	hasUsage bool
	eof      bool
	closed   bool
}

// ctxErr returns the error that ended s.ctx, if it is done: the caller's
// context error, or an *Error wrapping ErrStalled.
func (s *openaiStream) ctxErr() error {
	if err := s.parent.Err(); err != nil {
		return err
	}
	if s.ctx.Err() == nil {
		return nil
	}
	if errors.Is(context.Cause(s.ctx), ErrStalled) {
		return &Error{Kind: KindUnavailable, Message: fmt.Sprintf("no data from the model for %s", s.stall.d), Err: ErrStalled}
	}
	return errStreamClosed
}

// Recv returns the next non-empty delta; see Stream. Reasoning comes as
// reasoning_content (DeepSeek, vLLM) or reasoning (Ollama, OpenRouter; see
// reasoningKeys); a tool call is handed on whole once its finish reason
// came.
func (s *openaiStream) Recv() (Delta, error) {
	if s.closed {
		return Delta{}, errStreamClosed
	}
	for {
		if len(s.ready) > 0 {
			c := s.ready[0]
			s.ready = s.ready[1:]
			s.deltas++
			return Delta{ToolCall: &c}, nil
		}
		if s.eof {
			return Delta{}, io.EOF
		}
		resp, err := s.st.Recv()
		if err != nil {
			if err = s.recvError(err); errors.Is(err, io.EOF) {
				s.flushCalls()
				continue
			}
			return Delta{}, err
		}
		s.stall.reset()
		if resp.Usage != nil {
			s.usage = chatstream.Usage{PromptTokens: resp.Usage.PromptTokens, CompletionTokens: resp.Usage.CompletionTokens,
				TotalTokens: resp.Usage.PromptTokens + resp.Usage.CompletionTokens}
			s.hasUsage = true
		}
		if len(resp.Choices) == 0 { // the usage chunk
			continue
		}
		c := resp.Choices[0]
		for _, tc := range c.Delta.ToolCalls {
			s.addCallFragment(tc)
		}
		if c.FinishReason != "" {
			s.finish = string(c.FinishReason)
			s.flushCalls()
		}
		switch {
		case c.Delta.ReasoningContent != "":
			s.deltas++
			return Delta{Reasoning: c.Delta.ReasoningContent}, nil
		case c.Delta.Content != "":
			s.deltas++
			return Delta{Text: c.Delta.Content}, nil
		}
	}
}

// addCallFragment adds one fragment of a tool call: the first of a call
// brings its id and name, the others pieces of its arguments.
func (s *openaiStream) addCallFragment(tc openai.ToolCall) {
	i := len(s.calls)
	if tc.Index != nil {
		i = *tc.Index
	} else if tc.ID == "" && i > 0 {
		i-- // no index and no id: more of the last call
	}
	for len(s.calls) <= i {
		s.calls = append(s.calls, nil)
	}
	c := s.calls[i]
	if c == nil {
		c = &ToolCall{}
		s.calls[i] = c
	}
	if tc.ID != "" {
		c.ID = tc.ID
	}
	if tc.Function.Name != "" {
		c.Name = tc.Function.Name
	}
	c.Arguments += tc.Function.Arguments
}

// flushCalls hands on the tool calls put together so far, in index order.
func (s *openaiStream) flushCalls() {
	for _, c := range s.calls {
		if c != nil && c.Name != "" {
			s.ready = append(s.ready, *c)
		}
	}
	s.calls = nil
}

// recvError turns an error of go-openai's Recv into ours.
func (s *openaiStream) recvError(err error) error {
	if err := s.parent.Err(); err != nil {
		return err
	}
	if s.finish != "" {
		// The generation is complete: whatever ended the stream after the
		// finish reason ([DONE], a hang-up before it) only costs the usage.
		s.eof = true
		s.stall.stop()
		return io.EOF
	}
	if cerr := s.ctxErr(); cerr != nil {
		return cerr
	}
	var apiErr *openai.APIError
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &apiErr), errors.Is(err, openai.ErrTooManyEmptyStreamMessages):
		return openaiError(err)
	case errors.As(err, &syntaxErr), errors.As(err, &typeErr):
		return &Error{Kind: KindStream, Message: "malformed chunk", Err: err}
	}
	// [DONE] without a finish reason, or a hang-up (EOF, unexpected EOF,
	// reset). The cause is formatted, not wrapped, so that no io.EOF hides
	// in the chain of the error.
	return fmt.Errorf("%w: model %s after %d deltas: %v", ErrTruncated, s.model, s.deltas, err)
}

// Usage returns the usage the server reported, if any.
func (s *openaiStream) Usage() (chatstream.Usage, bool) { return s.usage, s.hasUsage }

// FinishReason returns the finish reason that arrived, if any.
func (s *openaiStream) FinishReason() string { return s.finish }

// Close ends the request and releases the connection.
func (s *openaiStream) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.stall.stop()
	err := s.st.Close()
	s.cancel(errStreamClosed)
	return err
}
