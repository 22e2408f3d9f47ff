package integration

// Generations asked for over HTTP: cancels, on the node that runs the
// generation and on another, and the refusals of bad sends. What a
// generation does once asked (prompts, endings, shutdown, dead nodes) is
// the worker package's to test.

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/app"
	"github.com/chatstream/chatstream/internal/streamtest"
	"github.com/chatstream/chatstream/llm/llmtest"
)

func TestPipeline_Cancel(t *testing.T) {
	t.Parallel()
	t.Run("before the first token", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		n := c.node(t, 2)
		alice := n.devToken(t, "alice")
		conv := n.conversation(t, alice)
		c.llm.Enqueue(llmtest.Script{BlockUntil: make(chan struct{})})
		s := n.send(t, alice, conv, "q")
		if err := c.llm.WaitActive(streamtest.Ctx(t), 1); err != nil {
			t.Fatal(err)
		}
		if code := n.call(t, "POST", "/v1/streams/"+s.StreamID+"/cancel", alice, nil, nil); code != http.StatusAccepted {
			t.Fatalf("cancel: %d", code)
		}
		m := n.final(t, alice, conv, s.StreamID)
		if m.Status != chatstream.StatusCancelled || m.Content != "" || m.Error != nil {
			t.Fatalf("message = %+v", m)
		}
		c.checkStream(t, m)
		if err := c.llm.WaitActive(streamtest.Ctx(t), 0); err != nil {
			t.Fatalf("the model request was not aborted: %v", err)
		}
		// The stream has ended: cancelling it again is still accepted.
		if code := n.call(t, "POST", "/v1/streams/"+s.StreamID+"/cancel", alice, nil, nil); code != http.StatusAccepted {
			t.Fatalf("cancel of an ended stream: %d", code)
		}
	})
	t.Run("on another node", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		api := c.node(t, 0)
		c.node(t, 2)
		alice := api.devToken(t, "alice")
		conv := api.conversation(t, alice)
		c.llm.Enqueue(llmtest.Script{BlockUntil: make(chan struct{})})
		s := api.send(t, alice, conv, "q")
		if err := c.llm.WaitActive(streamtest.Ctx(t), 1); err != nil {
			t.Fatal(err)
		}
		if code := api.call(t, "POST", "/v1/streams/"+s.StreamID+"/cancel", alice, nil, nil); code != http.StatusAccepted {
			t.Fatalf("cancel: %d", code)
		}
		if err := c.llm.WaitActive(streamtest.Ctx(t), 0); err != nil {
			t.Fatalf("the model request on the worker node was not aborted: %v", err)
		}
		m := api.final(t, alice, conv, s.StreamID)
		if m.Status != chatstream.StatusCancelled {
			t.Fatalf("message = %+v", m)
		}
		c.checkStream(t, m)
	})
	t.Run("mid-answer keeps the text", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		api := c.node(t, 0)
		c.node(t, 1)
		alice := api.devToken(t, "alice")
		conv := api.conversation(t, alice)
		c.llm.Enqueue(llmtest.Script{Tokens: streamtest.Tokens(1000), Interval: 10 * time.Millisecond})
		s := api.send(t, alice, conv, "q")
		streamtest.Eventually(t, 10*time.Second, func() bool { return c.llen(t, s.StreamID) >= 2 }, "no chunks")
		if code := api.call(t, "POST", "/v1/streams/"+s.StreamID+"/cancel", alice, nil, nil); code != http.StatusAccepted {
			t.Fatalf("cancel: %d", code)
		}
		m := api.final(t, alice, conv, s.StreamID)
		if m.Status != chatstream.StatusCancelled || m.Content == "" || m.Error != nil {
			t.Fatalf("message = %+v", m)
		}
		c.checkStream(t, m)
		if err := c.llm.WaitActive(streamtest.Ctx(t), 0); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("queued with no worker anywhere", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		api := c.node(t, 0)
		alice := api.devToken(t, "alice")
		conv := api.conversation(t, alice)
		s := api.send(t, alice, conv, "q")
		if code := api.call(t, "POST", "/v1/streams/"+s.StreamID+"/cancel", alice, nil, nil); code != http.StatusAccepted {
			t.Fatalf("cancel: %d", code)
		}
		// Ended by the cancel itself, not by a worker.
		m := api.message(t, alice, conv, s.StreamID)
		if m.Status != chatstream.StatusCancelled || m.Content != "" {
			t.Fatalf("message right after the cancel = %+v", m)
		}
		c.checkStream(t, m)
		// The conversation is free for the next message.
		api.send(t, alice, conv, "again")
		if got := len(c.llm.Requests()); got != 0 {
			t.Fatalf("%d model requests without a worker", got)
		}
	})
	t.Run("not the user's stream", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		api := c.node(t, 0)
		alice, bob := api.devToken(t, "alice"), api.devToken(t, "bob")
		conv := api.conversation(t, alice)
		s := api.send(t, alice, conv, "q")
		for _, id := range []string{s.StreamID, "0b6c1e7e-5a55-4c57-9d51-7a6d3b7c1f00", "not-a-uuid"} {
			var e struct{ Error struct{ Code string } }
			if code := api.call(t, "POST", "/v1/streams/"+id+"/cancel", bob, nil, &e); code != http.StatusNotFound || e.Error.Code != "not_found" {
				t.Fatalf("bob cancels %s: %d %+v", id, code, e)
			}
		}
		if m := api.message(t, alice, conv, s.StreamID); m.Status != chatstream.StatusStreaming {
			t.Fatalf("bob's cancel changed alice's message: %+v", m)
		}
		// A user message is no stream, not even for its author.
		if code := api.call(t, "POST", "/v1/streams/"+s.UserMessage.ID+"/cancel", alice, nil, nil); code != http.StatusNotFound {
			t.Fatalf("alice cancels her user message: %d", code)
		}
	})
}

func TestPipeline_BadInput(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	n := c.node(t, 1, func(cfg *app.Config) { cfg.MaxContentBytes = 100 })
	alice, bob := n.devToken(t, "alice"), n.devToken(t, "bob")
	conv := n.conversation(t, alice)
	post := func(t *testing.T, token string, body any, wantStatus int, wantCode string) {
		t.Helper()
		var e struct {
			Error struct{ Code, Message string }
		}
		if code := n.call(t, "POST", "/v1/conversations/"+conv+"/messages", token, body, &e); code != wantStatus || e.Error.Code != wantCode || e.Error.Message == "" {
			t.Fatalf("POST %v: %d %+v, want %d %s", body, code, e, wantStatus, wantCode)
		}
		if msgs := n.messages(t, alice, conv); len(msgs) != 0 {
			t.Fatalf("a refused message was stored: %+v", msgs)
		}
	}
	t.Run("empty", func(t *testing.T) {
		post(t, alice, map[string]string{"content": ""}, http.StatusBadRequest, "invalid_request")
		post(t, alice, map[string]string{"content": " \n\t"}, http.StatusBadRequest, "invalid_request")
	})
	t.Run("missing", func(t *testing.T) {
		post(t, alice, map[string]string{}, http.StatusBadRequest, "invalid_request")
	})
	t.Run("too large", func(t *testing.T) {
		post(t, alice, map[string]string{"content": strings.Repeat("x", 101)}, http.StatusRequestEntityTooLarge, "too_large")
	})
	t.Run("not the user's conversation", func(t *testing.T) {
		post(t, bob, map[string]string{"content": "hi"}, http.StatusNotFound, "not_found")
	})
	t.Run("while an answer streams", func(t *testing.T) {
		release := make(chan struct{})
		c.llm.Enqueue(llmtest.Script{BlockUntil: release})
		s := n.send(t, alice, conv, strings.Repeat("x", 100))
		var e struct{ Error struct{ Code string } }
		if code := n.call(t, "POST", "/v1/conversations/"+conv+"/messages", alice, map[string]string{"content": "more"}, &e); code != http.StatusConflict || e.Error.Code != "conflict" {
			t.Fatalf("second send: %d %+v", code, e)
		}
		if msgs := n.messages(t, alice, conv); len(msgs) != 2 {
			t.Fatalf("conversation = %+v", msgs)
		}
		close(release)
		if m := n.final(t, alice, conv, s.StreamID); m.Status != chatstream.StatusComplete {
			t.Fatalf("message = %+v", m)
		}
		n.send(t, alice, conv, "now it may")
	})
}
