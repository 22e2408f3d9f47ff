package llmtest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chatstream/chatstream/llm/llmtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// post sends a chat completions request with the given JSON body.
func post(t *testing.T, ctx context.Context, srv *llmtest.Server, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL()+"/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

const body = `{"model":"m","messages":[{"role":"user","content":"two words"}],"stream":true,"stream_options":{"include_usage":true}}`

func TestServer_format(t *testing.T) {
	srv := llmtest.NewServer(t)
	srv.Enqueue(llmtest.Script{Tokens: []string{"Hi", " there"}})
	resp := post(t, testContext(t), srv, body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	events := strings.Split(strings.TrimSuffix(string(raw), "\n\n"), "\n\n")
	if len(events) != 6 || events[5] != "data: [DONE]" {
		t.Fatalf("got %d events, want role, 2 deltas, finish, usage, [DONE]:\n%s", len(events), raw)
	}
	type chunk struct {
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Delta        map[string]string `json:"delta"`
			FinishReason *string           `json:"finish_reason"`
		} `json:"choices"`
		Usage *struct {
			Prompt     int `json:"prompt_tokens"`
			Completion int `json:"completion_tokens"`
		} `json:"usage"`
	}
	var chunks []chunk
	for _, e := range events[:5] {
		data, ok := strings.CutPrefix(e, "data: ")
		var c chunk
		if !ok || json.Unmarshal([]byte(data), &c) != nil || c.Object != "chat.completion.chunk" || c.Model != "m" {
			t.Fatalf("bad event %q", e)
		}
		if !strings.Contains(data, `"usage":`) {
			t.Errorf("event without a usage field: %s", data)
		}
		chunks = append(chunks, c)
	}
	if d := chunks[0].Choices[0].Delta; d["role"] != "assistant" || d["content"] != "" {
		t.Errorf("first delta = %v", d)
	}
	for i, want := range []string{"Hi", " there"} {
		if c := chunks[1+i].Choices[0]; c.Delta["content"] != want || c.FinishReason != nil {
			t.Errorf("delta %d = %+v", i, c)
		}
	}
	if c := chunks[3].Choices[0]; len(c.Delta) != 0 || c.FinishReason == nil || *c.FinishReason != "stop" {
		t.Errorf("finish chunk = %+v", c)
	}
	if c := chunks[4]; len(c.Choices) != 0 || c.Usage == nil || c.Usage.Prompt != 2 || c.Usage.Completion != 2 {
		t.Errorf("usage chunk = %+v", c)
	}
	if reqs := srv.Requests(); len(reqs) != 1 || reqs[0].Model != "m" || reqs[0].Messages[0].Content != "two words" ||
		reqs[0].StreamOptions == nil || !reqs[0].StreamOptions.IncludeUsage || string(reqs[0].Body) != body {
		t.Errorf("recorded %+v", reqs)
	}
}

func TestServer_status(t *testing.T) {
	srv := llmtest.NewServer(t)
	srv.Enqueue(llmtest.Script{Status: 429, Header: http.Header{"Retry-After": {"1"}}})
	resp := post(t, testContext(t), srv, body)
	var e struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != 429 || e.Error.Message == "" {
		t.Errorf("status %d, body %+v, %v", resp.StatusCode, e, err)
	}
	if got := resp.Header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After = %q", got)
	}
	// The queue is empty again: the default script streams.
	if resp := post(t, testContext(t), srv, body); resp.StatusCode != http.StatusOK {
		t.Errorf("second request: status %d", resp.StatusCode)
	}
}

func TestServer_waits(t *testing.T) {
	srv := llmtest.NewServer(t)
	block := make(chan struct{})
	srv.Enqueue(llmtest.Script{BlockUntil: block})
	ctx := testContext(t)
	resp := post(t, ctx, srv, body) // returns once the headers are out
	if err := srv.WaitRequests(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitActive(ctx, 1); err != nil {
		t.Fatal(err)
	}
	close(block)
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitActive(ctx, 0); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithCancel(ctx)
	cancel()
	if err := srv.WaitRequests(short, 2); err != context.Canceled {
		t.Errorf("WaitRequests on a cancelled context = %v", err)
	}
}

func TestServer_Close(t *testing.T) {
	// Close must release handlers blocked in every way and return.
	srv := llmtest.NewServer(t)
	srv.Enqueue(
		llmtest.Script{StallAfter: 1},
		llmtest.Script{BlockUntil: make(chan struct{})},
		llmtest.Script{Tokens: []string{"a", "b"}, Interval: time.Hour},
	)
	ctx := testContext(t)
	var bodies []*bufio.Reader
	for range 3 {
		bodies = append(bodies, bufio.NewReader(post(t, ctx, srv, body).Body))
	}
	if err := srv.WaitActive(ctx, 3); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	for i, b := range bodies {
		raw, _ := io.ReadAll(b)
		if strings.Contains(string(raw), "[DONE]") {
			t.Errorf("body %d finished properly after Close: %s", i, raw)
		}
	}
	if n := srv.Active(); n != 0 {
		t.Errorf("Active() = %d after Close", n)
	}
}

func TestServer_DropAfter(t *testing.T) {
	srv := llmtest.NewServer(t)
	srv.Enqueue(llmtest.Script{Tokens: []string{"a", "b", "c"}, DropAfter: 1})
	resp := post(t, testContext(t), srv, body)
	raw, err := io.ReadAll(resp.Body)
	if err != io.ErrUnexpectedEOF {
		t.Errorf("read error = %v, want unexpected EOF", err)
	}
	if strings.Count(string(raw), "data: ") != 2 { // the role chunk and one delta
		t.Errorf("body before the hang-up:\n%s", raw)
	}
}
