package worker_test

import (
	"context"
	"errors"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/internal/streamtest"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/llm/llmtest"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/worker"
)

func TestPool_Complete(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.startNode(t, nodeOpts{})
	conv := e.conversation(t)

	first := []string{"Hel", "lo", ", ", "wörld", "\n\"quoted\""}
	e.llm.Enqueue(llmtest.Script{Tokens: first})
	m1 := e.final(t, n.send(t, conv, "first question").ID)
	if m1.Status != chatstream.StatusComplete || m1.Error != nil {
		t.Fatalf("message = %+v", m1)
	}
	if texts := e.checkStream(t, m1); !slices.Equal(texts, first) {
		t.Fatalf("chunks = %q, want one per token %q", texts, first)
	}
	prompt, completion := e.usage(t, m1.ID)
	if prompt == nil || completion == nil || *prompt != 6 || *completion != len(first) {
		t.Fatalf("usage = %v %v, want 6 prompt tokens (the words sent) and %d completion tokens", streamtest.Deref(prompt), streamtest.Deref(completion), len(first))
	}

	// The second request carries the system prompt and the first exchange.
	m2 := e.final(t, n.send(t, conv, "second question").ID)
	if m2.Status != chatstream.StatusComplete {
		t.Fatalf("second message = %+v", m2)
	}
	e.checkStream(t, m2)
	reqs := e.llm.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	want := []llm.Message{
		{Role: "system", Content: systemPrompt},
		{Role: "user", Content: "first question"},
		{Role: "assistant", Content: strings.Join(first, "")},
		{Role: "user", Content: "second question"},
	}
	if !reflect.DeepEqual(reqs[1].Messages, want) {
		t.Fatalf("second prompt = %+v, want %+v", reqs[1].Messages, want)
	}
	if !reflect.DeepEqual(reqs[0].Messages, want[:2]) {
		t.Fatalf("first prompt = %+v", reqs[0].Messages)
	}
	if reqs[0].Model != "m" || !reqs[0].Stream || reqs[0].StreamOptions == nil || !reqs[0].StreamOptions.IncludeUsage {
		t.Fatalf("request = %+v", reqs[0])
	}
}

func TestPool_Failed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.startNode(t, nodeOpts{cfg: worker.Config{StallTimeout: 300 * time.Millisecond}})
	run := func(t *testing.T, scripts ...llmtest.Script) *chatstream.Message {
		t.Helper()
		e.llm.Enqueue(scripts...)
		before := len(e.llm.Requests())
		m := e.final(t, n.send(t, e.conversation(t), "question").ID)
		if got := len(e.llm.Requests()) - before; got != len(scripts) {
			t.Fatalf("%d requests, want %d", got, len(scripts))
		}
		e.checkStream(t, m)
		return m
	}
	wantFailed := func(t *testing.T, m *chatstream.Message, code string, chunks bool) {
		t.Helper()
		if m.Status != chatstream.StatusFailed || m.Error == nil || m.Error.Code != code {
			t.Fatalf("message = %+v (error %+v), want failed with %s", m, m.Error, code)
		}
		if chunks != (m.Content != "") {
			t.Fatalf("content = %q", m.Content)
		}
	}

	t.Run("rate limited twice then answered", func(t *testing.T) {
		m := run(t, llmtest.Script{Status: 429}, llmtest.Script{Status: 429}, llmtest.Script{Tokens: []string{"ok"}})
		if m.Status != chatstream.StatusComplete || m.Content != "ok" {
			t.Fatalf("message = %+v", m)
		}
	})
	t.Run("server error on every retry", func(t *testing.T) {
		s := llmtest.Script{Status: 500}
		m := run(t, s, s, s, s) // the first try and llm.DefaultMaxRetries retries
		wantFailed(t, m, protocol.CodeLLMUnavailable, false)
	})
	t.Run("connection dropped mid-stream", func(t *testing.T) {
		m := run(t, llmtest.Script{Tokens: streamtest.Tokens(6), DropAfter: 3})
		wantFailed(t, m, protocol.CodeLLMTruncated, true)
		if m.Content != strings.Join(streamtest.Tokens(3), "") {
			t.Fatalf("partial content = %q", m.Content)
		}
	})
	t.Run("done without finish reason", func(t *testing.T) {
		m := run(t, llmtest.Script{Tokens: streamtest.Tokens(2), NoFinish: true})
		wantFailed(t, m, protocol.CodeLLMTruncated, true)
	})
	t.Run("stalled", func(t *testing.T) {
		m := run(t, llmtest.Script{Tokens: streamtest.Tokens(4), StallAfter: 2})
		wantFailed(t, m, protocol.CodeLLMTimeout, true)
		if m.Content != strings.Join(streamtest.Tokens(2), "") {
			t.Fatalf("partial content = %q", m.Content)
		}
	})
	t.Run("bad request is not retried", func(t *testing.T) {
		m := run(t, llmtest.Script{Status: 400})
		wantFailed(t, m, protocol.CodeLLMError, false)
	})
}

func TestPool_FlushInterval(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.startNode(t, nodeOpts{cfg: worker.Config{FlushInterval: 50 * time.Millisecond}})
	toks := streamtest.Tokens(200)
	e.llm.Enqueue(llmtest.Script{Tokens: toks, Interval: time.Millisecond})
	m := e.final(t, n.send(t, e.conversation(t), "q").ID)
	if m.Status != chatstream.StatusComplete || m.Content != strings.Join(toks, "") {
		t.Fatalf("message = %+v", m)
	}
	texts := e.checkStream(t, m)
	if len(texts) >= len(toks) || len(texts) == 0 {
		t.Fatalf("%d chunks for %d tokens: deltas were not coalesced", len(texts), len(toks))
	}
}

// flakyStore is the real store whose FinishMessage fails its first calls,
// as when Postgres is unreachable at the end of a generation.
type flakyStore struct {
	worker.Store
	failures int32
	calls    atomic.Int32
}

func (s *flakyStore) FinishMessage(ctx context.Context, id string, f chatstream.Final) (*chatstream.Message, bool, error) {
	if s.calls.Add(1) <= s.failures {
		return nil, false, errors.New("dial tcp 127.0.0.1:5432: connect: connection refused")
	}
	return s.Store.FinishMessage(ctx, id, f)
}

func TestPool_PostgresDownAtTheEnd(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	st := &flakyStore{Store: e.db, failures: 3}
	n := e.startNode(t, nodeOpts{store: st})
	e.llm.Enqueue(llmtest.Script{Tokens: streamtest.Tokens(5)})
	m := e.final(t, n.send(t, e.conversation(t), "q").ID)
	if m.Status != chatstream.StatusComplete || m.Content != strings.Join(streamtest.Tokens(5), "") {
		t.Fatalf("message = %+v", m)
	}
	e.checkStream(t, m)
	if got := st.calls.Load(); got != 4 {
		t.Fatalf("FinishMessage called %d times, want 3 failures and 1 success", got)
	}
}

func TestPool_LeaseLost(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.startNode(t, nodeOpts{})
	e.llm.Enqueue(llmtest.Script{Tokens: streamtest.Tokens(500), Interval: 20 * time.Millisecond})
	id := n.send(t, e.conversation(t), "q").ID
	streamtest.Eventually(t, 10*time.Second, func() bool { return e.llen(t, id) >= 2 }, "no chunks")

	// Someone else claims the stream: the worker must stop writing.
	claimed, err := n.log.Claim(streamtest.Ctx(t), id, "intruder")
	if err != nil {
		t.Fatal(err)
	}
	// The worker notices at its next append and aborts its model request.
	if err := e.llm.WaitActive(streamtest.Ctx(t), 0); err != nil {
		t.Fatalf("the model request was not aborted: %v", err)
	}
	if got := e.llen(t, id); got != claimed.N {
		t.Fatalf("the fenced worker appended: %d chunks, %d at the claim", got, claimed.N)
	}
	m, err := e.db.FindMessage(streamtest.Ctx(t), "alice", id)
	if err != nil || m.Status != chatstream.StatusStreaming {
		t.Fatalf("the fenced worker ended the message: %+v, %v", m, err)
	}
	meta, err := n.log.Meta(streamtest.Ctx(t), id)
	if err != nil || meta.Epoch != claimed.Epoch || meta.N != claimed.N || meta.Final != "" || meta.Status != chatstream.StatusStreaming {
		t.Fatalf("meta after the fenced worker stopped = %+v, %v", meta, err)
	}
}

func TestPool_Shutdown(t *testing.T) {
	t.Parallel()
	t.Run("before the first chunk the job is handed back", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		a := e.startNode(t, nodeOpts{name: "a", cfg: worker.Config{Workers: 1}})
		never := make(chan struct{})
		e.llm.Enqueue(llmtest.Script{BlockUntil: never}, llmtest.Script{Tokens: streamtest.Tokens(3)})
		id := a.send(t, e.conversation(t), "q").ID
		if err := e.llm.WaitRequests(streamtest.Ctx(t), 1); err != nil {
			t.Fatal(err)
		}
		b := e.startNode(t, nodeOpts{name: "b"})
		a.shutdown(t, 100*time.Millisecond)
		m := e.final(t, id)
		if m.Status != chatstream.StatusComplete || m.Content != strings.Join(streamtest.Tokens(3), "") {
			t.Fatalf("message = %+v", m)
		}
		e.checkStream(t, m)
		if got := len(e.llm.Requests()); got != 2 {
			t.Fatalf("%d model requests, want 2", got)
		}
		_ = b
	})
	t.Run("after chunks the answer ends interrupted", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		a := e.startNode(t, nodeOpts{name: "a", cfg: worker.Config{Workers: 1}})
		e.llm.Enqueue(llmtest.Script{Tokens: streamtest.Tokens(500), Interval: 20 * time.Millisecond})
		id := a.send(t, e.conversation(t), "q").ID
		streamtest.Eventually(t, 10*time.Second, func() bool { return e.llen(t, id) >= 2 }, "no chunks")
		a.shutdown(t, 100*time.Millisecond)
		m := e.final(t, id) // written by the shutdown itself
		if m.Status != chatstream.StatusFailed || m.Error == nil || m.Error.Code != "interrupted" || m.Content == "" {
			t.Fatalf("message = %+v (error %+v)", m, m.Error)
		}
		e.checkStream(t, m)
		if err := e.llm.WaitActive(streamtest.Ctx(t), 0); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a grace period longer than the heartbeat", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		a := e.startNode(t, nodeOpts{name: "a", hbTTL: time.Second, cfg: worker.Config{Workers: 1}})
		e.llm.Enqueue(llmtest.Script{Tokens: streamtest.Tokens(50), Interval: 50 * time.Millisecond})
		id := a.send(t, e.conversation(t), "q").ID
		streamtest.Eventually(t, 10*time.Second, func() bool { return e.llen(t, id) >= 1 }, "no chunks")
		// Another node watches for dead nodes while a drains.
		e.startNode(t, nodeOpts{name: "b", cfg: worker.Config{ReapInterval: 100 * time.Millisecond}})
		a.shutdown(t, 20*time.Second)
		m := e.final(t, id)
		if m.Status != chatstream.StatusComplete || m.Content != strings.Join(streamtest.Tokens(50), "") {
			t.Fatalf("a draining node was taken for dead: message = %+v (error %+v)", m, m.Error)
		}
		e.checkStream(t, m)
	})
	t.Run("within the grace period the answer completes", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		a := e.startNode(t, nodeOpts{name: "a", cfg: worker.Config{Workers: 1}})
		e.llm.Enqueue(llmtest.Script{Tokens: streamtest.Tokens(20), Interval: 10 * time.Millisecond})
		id := a.send(t, e.conversation(t), "q").ID
		streamtest.Eventually(t, 10*time.Second, func() bool { return e.llen(t, id) >= 1 }, "no chunks")
		a.shutdown(t, 20*time.Second)
		m := e.final(t, id)
		if m.Status != chatstream.StatusComplete || m.Content != strings.Join(streamtest.Tokens(20), "") {
			t.Fatalf("message = %+v", m)
		}
		e.checkStream(t, m)
	})
}

// TestPool_Reaper plants the state a node leaves when it dies at each step
// of a job, and checks that another node's reaper ends it properly.
func TestPool_Reaper(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := streamtest.Ctx(t)
	// dead is a node that took jobs and then stopped beating.
	dead := e.startNode(t, nodeOpts{name: "dead", hbTTL: time.Second, cfg: worker.Config{Workers: 1}})
	dead.shutdown(t, time.Second)
	notStarted := e.plantDeadJob(t, dead, nil, "")
	withChunks := e.plantDeadJob(t, dead, []string{"part", "ial"}, "")
	markedComplete := e.plantDeadJob(t, dead, []string{"all ", "of it"}, chatstream.StatusComplete)
	if err := dead.queue.Heartbeat(ctx); err != nil { // the node's last sign of life
		t.Fatal(err)
	}
	e.llm.Enqueue(llmtest.Script{Tokens: streamtest.Tokens(3)})
	e.startNode(t, nodeOpts{name: "survivor", cfg: worker.Config{ReapInterval: 100 * time.Millisecond}})

	t.Run("not started runs again", func(t *testing.T) {
		m := e.final(t, notStarted)
		if m.Status != chatstream.StatusComplete || m.Content != strings.Join(streamtest.Tokens(3), "") {
			t.Fatalf("message = %+v", m)
		}
		e.checkStream(t, m)
	})
	t.Run("with chunks fails with its partial text", func(t *testing.T) {
		m := e.final(t, withChunks)
		if m.Status != chatstream.StatusFailed || m.Error == nil || m.Error.Code != "worker_lost" || m.Content != "partial" {
			t.Fatalf("message = %+v (error %+v)", m, m.Error)
		}
	})
	t.Run("marked final is finished as marked", func(t *testing.T) {
		// The dead node had its answer and was writing Postgres.
		m := e.final(t, markedComplete)
		if m.Status != chatstream.StatusComplete || m.Content != "all of it" || m.Error != nil {
			t.Fatalf("message = %+v (error %+v)", m, m.Error)
		}
	})
	streamtest.Eventually(t, 10*time.Second, func() bool {
		n, _ := e.redis.Do(ctx, e.redis.B().Llen().Key(e.keys.Processing("dead")).Build()).AsInt64()
		return n == 0
	}, "the dead node's jobs are still in its processing list")
}

func TestPool_StallBeforeHeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// A model server that accepts the connection and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	t.Cleanup(conns.Wait)
	t.Cleanup(func() { ln.Close() })
	conns.Go(func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	})
	provider := llm.NewOpenAI(llm.OpenAIConfig{BaseURL: "http://" + ln.Addr().String() + "/v1", Model: "m"})
	n := e.startNode(t, nodeOpts{provider: provider, cfg: worker.Config{StallTimeout: 300 * time.Millisecond}})
	m := e.final(t, n.send(t, e.conversation(t), "q").ID)
	if m.Status != chatstream.StatusFailed || m.Error == nil || m.Error.Code != protocol.CodeLLMTimeout {
		t.Fatalf("message = %+v (error %+v)", m, m.Error)
	}
	e.checkStream(t, m)
}

func TestGenerations_CancelHandedBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.startNode(t, nodeOpts{cfg: worker.Config{Workers: 1}})
	e.llm.Enqueue(llmtest.Script{BlockUntil: make(chan struct{})})
	id := a.send(t, e.conversation(t), "q").ID
	if err := e.llm.WaitActive(streamtest.Ctx(t), 1); err != nil {
		t.Fatal(err)
	}
	a.shutdown(t, 100*time.Millisecond) // hands the job back: it waits for a worker
	if n, err := a.queue.Pending(streamtest.Ctx(t)); err != nil || n != 1 {
		t.Fatalf("pending = %d, %v; want the job handed back", n, err)
	}
	// No worker runs it: the cancel itself must end it.
	if err := a.svc.Cancel(streamtest.Ctx(t), "alice", id); err != nil {
		t.Fatal(err)
	}
	m, err := e.db.FindMessage(streamtest.Ctx(t), "alice", id)
	if err != nil || m.Status != chatstream.StatusCancelled {
		t.Fatalf("message right after the cancel = %+v, %v", m, err)
	}
	e.checkStream(t, m)
}

// TestGenerations_CancelMidStream cancels generations that append as fast as
// they can, so that the cancel lands while an append is in flight: the
// chunk it appends must be in the stored content too.
func TestGenerations_CancelMidStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.startNode(t, nodeOpts{})
	for range 10 {
		e.llm.Enqueue(llmtest.Script{Tokens: streamtest.Tokens(5000)})
		id := n.send(t, e.conversation(t), "q").ID
		streamtest.Eventually(t, 10*time.Second, func() bool { return e.llen(t, id) >= 5 }, "no chunks")
		if err := n.svc.Cancel(streamtest.Ctx(t), "alice", id); err != nil {
			t.Fatal(err)
		}
		m := e.final(t, id)
		if m.Status != chatstream.StatusCancelled || m.Content == "" {
			t.Fatalf("message = %+v", m)
		}
		e.checkStream(t, m)
	}
}
