package worker_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/internal/streamtest"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/llm/llmtest"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/worker"
)

// A model that sends U+0000 (which a Postgres text column refuses) gets its
// answer stored without it, chunks and message alike; the conversation
// takes the next send. The final write used to be retried forever: the
// message stayed streaming and the conversation answered 409 for good.
func TestPool_ModelSendsNUL(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.startNode(t, nodeOpts{})
	conv := e.conversation(t)
	e.llm.Enqueue(llmtest.Script{Tokens: []string{"Hel\x00lo", "\x00", " wor\x00ld"}})
	m := e.final(t, n.send(t, conv, "q").ID)
	if m.Status != chatstream.StatusComplete || m.Content != "Hello world" {
		t.Fatalf("message = %+v", m)
	}
	if texts := e.checkStream(t, m); strings.Join(texts, "|") != "Hello| world" {
		t.Fatalf("chunks %q: a delta of NUL alone should make no chunk", texts)
	}
	e.llm.Enqueue(llmtest.Script{Tokens: streamtest.Tokens(2)})
	if m := e.final(t, n.send(t, conv, "again").ID); m.Status != chatstream.StatusComplete {
		t.Fatalf("the next send: %+v", m)
	}
}

// blockingStore is the real store whose FinishMessage for one stream hangs
// on its first call until the caller gives up, as a stuck Postgres would.
type blockingStore struct {
	worker.Store
	stream string
	once   sync.Once
	hung   chan struct{} // closed once the call hangs
}

func (s *blockingStore) FinishMessage(ctx context.Context, id string, f chatstream.Final) (*chatstream.Message, bool, error) {
	if id == s.stream {
		first := false
		s.once.Do(func() { first = true })
		if first {
			close(s.hung)
			<-ctx.Done()
			return nil, false, ctx.Err()
		}
	}
	return s.Store.FinishMessage(ctx, id, f)
}

// The jobs of a dead node are recovered side by side, each within a time
// limit: one whose record Postgres refuses ends failed at once, one whose
// write hangs goes back to the queue after the limit and is finished from
// there, and neither holds up a third.
func TestPool_RecoveriesDoNotWaitForEachOther(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := streamtest.Ctx(t)
	dead := e.startNode(t, nodeOpts{name: "dead", hbTTL: time.Second, cfg: worker.Config{Workers: 1}})
	dead.shutdown(t, time.Second)
	hangs := e.plantDeadJob(t, dead, []string{"stuck ", "write"}, chatstream.StatusComplete)
	refused := e.plantDeadJob(t, dead, []string{"a\x00", "b"}, chatstream.StatusComplete)
	fine := e.plantDeadJob(t, dead, []string{"all ", "fine"}, chatstream.StatusComplete)
	if err := dead.queue.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	st := &blockingStore{Store: e.db, stream: hangs, hung: make(chan struct{})}
	e.startNode(t, nodeOpts{name: "survivor", store: st,
		cfg: worker.Config{ReapInterval: 100 * time.Millisecond, RecoverTimeout: time.Second}})

	<-st.hung
	if m := e.final(t, fine); m.Status != chatstream.StatusComplete || m.Content != "all fine" {
		t.Fatalf("the job behind a hung one: %+v", m)
	}
	m := e.final(t, refused)
	if m.Status != chatstream.StatusFailed || m.Error == nil || m.Error.Code != protocol.CodeStoreRefused || m.Content != "" {
		t.Fatalf("the refused record: %+v (error %+v)", m, m.Error)
	}
	if h := e.final(t, hangs); h.Status != chatstream.StatusComplete || h.Content != "stuck write" {
		t.Fatalf("the hung job, after its time limit: %+v", h)
	}
	streamtest.Eventually(t, 10*time.Second, func() bool {
		n, _ := e.redis.Do(ctx, e.redis.B().Llen().Key(e.keys.Processing("survivor")).Build()).AsInt64()
		return n == 0
	}, "recovered jobs are still in the survivor's processing list")
}

// boomProvider panics on a prompt that says "boom" and is the demo model
// otherwise.
type boomProvider struct{ llm.Provider }

func (p boomProvider) Stream(ctx context.Context, req llm.Request) (llm.Stream, error) {
	if req.Messages[len(req.Messages)-1].Content == "boom" {
		panic("provider bug")
	}
	return p.Provider.Stream(ctx, req)
}

// A panic in a generation ends that generation (after the bounded reruns
// a job that emitted nothing gets), not the node: the next one runs.
func TestPool_PanicInAGenerationIsContained(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.startNode(t, nodeOpts{provider: boomProvider{llm.NewDemo(llm.DemoConfig{TokensPerSec: -1})},
		cfg: worker.Config{MaxRuns: 1}})
	m := e.final(t, n.send(t, e.conversation(t), "boom").ID)
	if m.Status != chatstream.StatusFailed || m.Error == nil {
		t.Fatalf("the generation that panicked: %+v", m)
	}
	if m := e.final(t, n.send(t, e.conversation(t), "fine").ID); m.Status != chatstream.StatusComplete {
		t.Fatalf("the next generation: %+v", m)
	}
}

// An answer stops at MaxAnswerBytes, cut at a character boundary, and ends
// complete with finish reason "length"; the model's request is dropped.
func TestPool_MaxAnswerBytes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.startNode(t, nodeOpts{cfg: worker.Config{MaxAnswerBytes: 21}})
	e.llm.Enqueue(llmtest.Script{Tokens: []string{"0123456789", "abcdefghij", "éé", "never sent"}, Interval: 10 * time.Millisecond})
	m := e.final(t, n.send(t, e.conversation(t), "q").ID)
	if m.Status != chatstream.StatusComplete || m.FinishReason != "length" || m.Content != "0123456789abcdefghij" {
		t.Fatalf("message = %+v", m)
	}
	e.checkStream(t, m) // the done frame says "length" too
	if err := e.llm.WaitActive(streamtest.Ctx(t), 0); err != nil {
		t.Fatalf("the model request goes on: %v", err)
	}
	// An answer that ends by itself says why too.
	e.llm.Enqueue(llmtest.Script{Tokens: []string{"short"}})
	if m := e.final(t, n.send(t, e.conversation(t), "q").ID); m.FinishReason != "stop" {
		t.Fatalf("a whole answer: %+v", m)
	}
}
