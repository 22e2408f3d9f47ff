package worker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/internal/streamtest"
	"github.com/chatstream/chatstream/internal/testenv"
	"github.com/chatstream/chatstream/llm"
	"github.com/chatstream/chatstream/llm/llmtest"
	"github.com/chatstream/chatstream/protocol"
	"github.com/chatstream/chatstream/store"
	"github.com/chatstream/chatstream/streaming"
	"github.com/chatstream/chatstream/worker"
)

const systemPrompt = "You are a test."

// env is the shared part of the pipelines of one test: Postgres, Redis
// under a key prefix of the test's own, and the fake model server.
type env struct {
	dbURL  string
	db     *store.DB
	redis  rueidis.Client
	keys   streaming.Keys
	llm    *llmtest.Server
	frames *streamtest.Recorder
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{dbURL: testenv.NewDatabase(t), llm: llmtest.NewServer(t)}
	ctx := streamtest.Ctx(t)
	var err error
	if e.db, err = store.Open(ctx, e.dbURL, store.Config{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.db.Close)
	if err := e.db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if e.redis, err = streaming.NewClient(testenv.RedisURL(t), streaming.ClientConfig{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.redis.Close)
	e.keys = streaming.Keys{Prefix: testenv.Namespace(t)}
	e.frames = streamtest.Record(t, e.redis, e.keys.Prefix+"stream:{*}")
	return e
}

// nodeOpts are what a test changes of a node.
type nodeOpts struct {
	name   string
	cfg    worker.Config
	hbTTL  time.Duration
	store  worker.Store          // nil: the real store
	client func() rueidis.Client // nil: a client of the node's own
	// provider is the model; nil: OpenAI's client on the fake server.
	provider llm.Provider
}

// node is one worker node: its own Redis client, hub, queue and pool, with
// the request side (Generations) on top.
type node struct {
	*env
	name  string
	log   *streaming.ChunkLog
	queue *streaming.Queue
	svc   *worker.Generations
	pool  *worker.Pool
	once  sync.Once
}

func (e *env) startNode(t *testing.T, o nodeOpts) *node {
	t.Helper()
	if o.name == "" {
		o.name = testenv.Name("node-")
	}
	var client rueidis.Client
	if o.client != nil {
		client = o.client()
	} else {
		var err error
		if client, err = streaming.NewClient(testenv.RedisURL(t), streaming.ClientConfig{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(client.Close)
	}
	var st worker.Store = e.db
	if o.store != nil {
		st = o.store
	}
	if o.cfg.Workers == 0 {
		o.cfg.Workers = 2
	}
	if o.cfg.SystemPrompt == "" {
		o.cfg.SystemPrompt = systemPrompt
	}
	n := &node{env: e, name: o.name}
	n.log = streaming.NewChunkLog(client, e.keys, time.Minute)
	n.queue = streaming.NewQueue(client, e.keys, o.name, streaming.QueueConfig{HeartbeatTTL: o.hbTTL, BlockTimeout: 100 * time.Millisecond})
	events := streaming.NewEvents(client, e.keys, nil)
	hub := streaming.NewHub(client, streaming.HubConfig{})
	t.Cleanup(hub.Close)
	provider := o.provider
	if provider == nil {
		provider = llm.NewOpenAI(llm.OpenAIConfig{BaseURL: e.llm.URL(), APIKey: "test", Model: "m", IncludeUsage: true, RetryBase: time.Millisecond})
	}
	n.svc = worker.NewGenerations(st, n.log, n.queue, events, nil, nil, nil)
	n.pool = worker.NewPool(o.cfg, st, n.log, n.queue, hub, events, nil, provider)
	if err := n.pool.Start(streamtest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.shutdown(t, 10*time.Second) })
	return n
}

// shutdown stops the node's pool once, with grace for running generations.
func (n *node) shutdown(t *testing.T, grace time.Duration) {
	t.Helper()
	n.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		if err := n.pool.Shutdown(ctx); err != nil {
			t.Errorf("shutdown %s: %v", n.name, err)
		}
	})
}

// conversation creates a conversation of alice.
func (e *env) conversation(t *testing.T) string {
	t.Helper()
	c, err := e.db.CreateConversation(streamtest.Ctx(t), "alice", "test")
	if err != nil {
		t.Fatal(err)
	}
	return c.ID
}

// send posts content and returns the assistant message (the stream).
func (n *node) send(t *testing.T, conv, content string) *chatstream.Message {
	t.Helper()
	st, err := n.svc.Start(streamtest.Ctx(t), chatstream.Turn{Kind: chatstream.TurnSend, UserID: "alice", ConversationID: conv, Content: content})
	if err != nil {
		t.Fatal(err)
	}
	return st.Assistant
}

// final waits until message id has a final status and returns it.
func (e *env) final(t *testing.T, id string) *chatstream.Message {
	t.Helper()
	var m *chatstream.Message
	streamtest.Eventually(t, 30*time.Second, func() bool {
		var err error
		if m, err = e.db.FindMessage(streamtest.Ctx(t), "alice", id); err != nil {
			t.Fatal(err)
		}
		return m.Status.Final()
	}, "message %s never ended", id)
	return m
}

// llen returns the number of chunks in the log of stream id.
func (e *env) llen(t *testing.T, id string) int64 {
	t.Helper()
	n, err := e.redis.Do(streamtest.Ctx(t), e.redis.B().Llen().Key(e.keys.Chunks(id)).Build()).AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkStream checks the contract's guarantees on an ended stream (see
// streamtest.CheckStream) and the last index stored with the message.
func (e *env) checkStream(t *testing.T, m *chatstream.Message) []string {
	t.Helper()
	texts := streamtest.CheckStream(t, e.redis, e.keys, e.frames, m)
	if m.LastIndex != int64(len(texts))-1 {
		t.Fatalf("stored last index %d, %d chunks", m.LastIndex, len(texts))
	}
	return texts
}

// usage reads the token counts stored with message id.
func (e *env) usage(t *testing.T, id string) (prompt, completion *int) {
	t.Helper()
	return streamtest.Usage(t, e.dbURL, id)
}

// plantDeadJob leaves in Redis and Postgres what node dead leaves when it
// dies at some step of a job: it took the job, claimed the stream, appended
// texts (as they are: past the worker's own cleaning, as an older version
// or another writer might have), and, if final is set, marked that end. It
// returns the stream id.
func (e *env) plantDeadJob(t *testing.T, dead *node, texts []string, final chatstream.Status) string {
	t.Helper()
	parts := make([]chatstream.Part, len(texts))
	for i, text := range texts {
		parts[i] = chatstream.Part{Type: chatstream.PartText, Text: text}
	}
	return e.plantDeadAnswer(t, dead, "q", parts, final)
}

// plantDeadAnswer is plantDeadJob with the answer's parts, a chunk each, to
// a user message of content; a tool call that requires approval is marked
// waiting as the worker marks it.
func (e *env) plantDeadAnswer(t *testing.T, dead *node, content string, parts []chatstream.Part, final chatstream.Status) string {
	t.Helper()
	ctx := streamtest.Ctx(t)
	_, asst, err := e.db.CreateExchange(ctx, "alice", e.conversation(t), content)
	if err != nil {
		t.Fatal(err)
	}
	id := asst.ID
	if err := dead.log.Create(ctx, id, "alice", asst.ConversationID); err != nil {
		t.Fatal(err)
	}
	if err := dead.queue.Enqueue(ctx, chatstream.Job{StreamID: id, ConversationID: asst.ConversationID, UserID: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := dead.queue.Take(ctx); err != nil || !ok {
		t.Fatalf("take: %v %v", ok, err)
	}
	m, err := dead.log.Claim(ctx, id, dead.name)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range parts {
		now := time.Now()
		frame := protocol.AppendPartChunk(nil, id, int64(i), p, now.UnixMicro())
		_, err = dead.log.AppendPart(ctx, id, m.Epoch, int64(i), frame, p, now)
		if err != nil {
			t.Fatal(err)
		}
	}
	if final != "" {
		if err := dead.log.MarkFinal(ctx, id, m.Epoch, final, nil); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

// An answer Postgres holds open whose stream Redis lost (its meta and its
// job gone, as after a Redis restart without persistence) is ended failed,
// stream_lost, by the sweep — and its conversation takes a new message
// again. An open answer whose stream Redis still has (a job waiting in the
// queue) is left alone.
func TestPool_SweepEndsAnswersWhoseStreamRedisLost(t *testing.T) {
	e := newEnv(t)
	ctx := streamtest.Ctx(t)
	lostConv := e.conversation(t)
	_, lost, err := e.db.CreateExchange(ctx, "alice", lostConv, "q")
	if err != nil {
		t.Fatal(err)
	}
	_, waiting, err := e.db.CreateExchange(ctx, "alice", e.conversation(t), "q")
	if err != nil {
		t.Fatal(err)
	}
	log := streaming.NewChunkLog(e.redis, e.keys, time.Minute)
	if err := log.Create(ctx, waiting.ID, "alice", waiting.ConversationID); err != nil {
		t.Fatal(err)
	}
	e.llm.Enqueue(llmtest.Script{Tokens: []string{"again"}})
	n := e.startNode(t, nodeOpts{cfg: worker.Config{SweepInterval: 50 * time.Millisecond, SweepGrace: time.Nanosecond}})

	m := e.final(t, lost.ID)
	if m.Status != chatstream.StatusFailed || m.Error == nil || m.Error.Code != "stream_lost" {
		t.Fatalf("the lost answer ended %s (%+v)", m.Status, m.Error)
	}
	// The sweep that ended it saw the waiting one too (both in one batch).
	if w, err := e.db.FindMessage(ctx, "alice", waiting.ID); err != nil || w.Status.Final() {
		t.Fatalf("the answer whose stream Redis has was ended: %+v, %v", w, err)
	}
	// The conversation is free again.
	again := n.send(t, lostConv, "again?")
	if m := e.final(t, again.ID); m.Status != chatstream.StatusComplete {
		t.Fatalf("a new answer in the swept conversation ended %s", m.Status)
	}
}
